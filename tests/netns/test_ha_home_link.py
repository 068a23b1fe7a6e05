"""The home agent on a home link it shares with other hosts (``[ha] home_link``), RFC 6275
§10.3.1, §10.3.2 and §10.4.1, against a real ``mipnode ha``.

The lab's home prefix is also a link here, ``ha --home0-- host``, with a host on it. The mobile
node is played from the ``mn`` namespace with the conformance suite's scapy-built packets
(``test_ha_conformance.py``), the host's side is watched with probers on its link, and every
packet is read with scapy's layers: Duplicate Address Detection before the first BA, status 134
when another host holds the address, the proxy's Neighbor Advertisements and data from the
host reaching the mobile node through the tunnel, and a mobile node back home whose answers go
to its link-layer address.
"""

from __future__ import annotations

import json
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

import pytest

from mipnode.lab import netns, runner, topology
from mipnode.lab.topology import HOME_PREFIX

from .conftest import needs_root
from .mh_prober import Prober
from .test_ha_conformance import (
    HA,
    NH_MH,
    Home,
    Mn,
    Reply,
    _new_nodes,
    ha_config,
    parse,
    start_ha,
    verify_signed,
    with_checksum,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scapy's import-time deprecation warnings
    from scapy.layers.inet6 import (
        MIP6MH_BA,
        ICMPv6EchoRequest,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6NDOptDstLLAddr,
        IPv6,
    )
    from scapy.packet import Raw

pytestmark = [needs_root, pytest.mark.netns, pytest.mark.oracle]

WAIT_S = 3.0  # longest wait for something the home agent must do
NODES = ("away", "duplicate", "racing", "back")


@dataclass
class HomeLan:
    home: Home  # the home agent and the mobile node's prober
    dad: Prober  # on the host's link: packets from the unspecified address (DAD)
    link_local: Prober  # ... from the home agent's link-local address (its NAs)
    ha: Prober  # ... from the home agent's address (BAs to a mobile node back home)
    ha_mac: str

    def proxied(self) -> set[IPv6Address]:
        out = self.home.t.sh("ha", "ip", "-6", "neigh", "show", "proxy", "dev", "home0")
        return {IPv6Address(line.split()[0]) for line in out.splitlines() if line.strip()}


def _link(t: topology.Topology) -> tuple[str, str]:
    """The home agent's link-local address and link-layer address on its home link."""
    out = t.sh("ha", "ip", "-j", "addr", "show", "dev", "home0")
    (link,) = json.loads(out)
    local = next(a["local"] for a in link["addr_info"] if a["local"].startswith("fe80"))
    return local, link["address"]


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeLan]:
    base = tmp_path_factory.mktemp("home-link")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(netns, "STATE_DIR", base / "lab-state")  # our run records, nobody else's
        record = netns.RunRecord.new("run")
        probers: list[Prober] = []
        try:
            t = topology.build(
                record, base, access="ipv6", firewall="open", protection="none", home_lan=True
            )
            nodes = _new_nodes(NODES, 0xC)
            config = ha_config(
                base / "ha.toml",
                list(nodes.values()),
                protection="none",
                state_dir=None,
                extra='home_link = "home0"\n',
            )
            start_ha(t, config, "ha.log")
            local, mac = _link(t)
            for ns, source in (("mn", HA), ("host", "::"), ("host", local), ("host", HA)):
                probers.append(Prober(t.ns(ns), source))
            yield HomeLan(Home(t, probers[0], nodes), *probers[1:], ha_mac=mac)
        finally:
            for prober in probers:
                prober.close()
            record.teardown()


def _until(what: Callable[[], Any], seconds: float = WAIT_S) -> Any:
    """``what()`` once it is truthy, polled until ``seconds`` pass (then its last value)."""
    deadline = time.monotonic() + seconds
    while not (value := what()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def _caught(
    prober: Prober,
    *matches: Callable[[Any], bool],
    seconds: float = WAIT_S,
    host_only: bool = False,
) -> list[list[Any]]:
    """What ``prober`` caught since its last flush (and within ``seconds`` more), dissected by
    scapy, sorted by the first of ``matches`` each packet meets; reads until every one of them
    has a packet, or the time is up."""
    found: list[list[Any]] = [[] for _ in matches]
    deadline = time.monotonic() + seconds
    while not all(found) and (left := deadline - time.monotonic()) > 0:
        for packet in prober.request(wait_s=left, count=1, flush=False, host_only=host_only):
            scapy = IPv6(packet)
            for i, match in enumerate(matches):
                if match(scapy):
                    found[i].append(scapy)
                    break
    return found


def _solicitation_for(address: str) -> Callable[[Any], bool]:
    def match(p: Any) -> bool:
        return p.haslayer(ICMPv6ND_NS) and IPv6Address(p[ICMPv6ND_NS].tgt) == IPv6Address(address)

    return match


def _advertisement_for(address: str) -> Callable[[Any], bool]:
    def match(p: Any) -> bool:
        return p.haslayer(ICMPv6ND_NA) and IPv6Address(p[ICMPv6ND_NA].tgt) == IPv6Address(address)

    return match


def _ba_status(home: Home, mn: Mn, sequence: int, **bu: Any) -> Reply:
    return home.ba(mn, mn.tunnelled(mn.bu(sequence, **bu)))


def test_s10_3_1_dad_before_the_first_ba_then_proxy_neighbor_discovery(lan: HomeLan) -> None:
    """§10.3.1: before the first BA for a home address the home agent MUST run Duplicate
    Address Detection on the home link -- with the L flag for the derived link-local address
    too -- and §10.4.1: it then MUST multicast a Neighbor Advertisement for each (Target the
    address, its own link-layer address, R and S clear, O set) and answer solicitations for
    them, so that a host on the home link reaches the mobile node through the tunnel. A
    de-registration stops the interception."""
    home, mn = lan.home, lan.home.nodes["away"]
    passed = home.core_counter("dad_passed")
    link_local = str(
        IPv6Address(int(IPv6Address("fe80::")) | int(IPv6Address(mn.hoa)) & (2**64 - 1))
    )
    for prober in (lan.dad, lan.link_local):
        prober.request(wait_s=0)  # start from nothing
    reply = _ba_status(home, mn, 1, flags="AHL")
    assert reply.message.status == 0
    solicitations = _caught(lan.dad, _solicitation_for(mn.hoa), _solicitation_for(link_local))
    for target, (ns, *more) in zip((mn.hoa, link_local), solicitations, strict=True):
        assert not more, f"more than one solicitation for {target}"
        assert ns.src == "::" and ns.hlim == 255, ns.summary()
        tail = IPv6Address(target).packed[13:]
        assert IPv6Address(ns.dst).packed == bytes.fromhex("ff0200000000000000000001ff") + tail
        assert not ns[ICMPv6ND_NS].payload, "a DAD solicitation has no source link-layer option"
    assert home.core_counter("dad_passed") == passed + 1
    advertisements = _caught(
        lan.link_local, _advertisement_for(mn.hoa), _advertisement_for(link_local)
    )
    for na in (found[0] for found in advertisements):
        assert na.dst == "ff02::1" and na.hlim == 255
        flags = na[ICMPv6ND_NA]
        assert (flags.R, flags.S, flags.O) == (0, 0, 1), na.summary()
        assert na[ICMPv6NDOptDstLLAddr].lladdr == lan.ha_mac
    assert _until(lambda: {IPv6Address(mn.hoa), IPv6Address(link_local)} <= lan.proxied())

    # A host on the home link resolves the home address to the home agent, whose TUN route
    # sends the packet through the tunnel to the care-of address.
    home.prober.request(wait_s=0)  # drop what came before, then ping
    ping = ["ping", "-6", "-n", "-c", "1", "-W", "1", mn.hoa]
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", home.t.ns("host"), *ping],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        replies = home.ask(
            until=lambda r: r.inner is not None and r.inner.haslayer(ICMPv6EchoRequest),
            flush=False,
        )
    finally:
        pinger.wait(timeout=5)
    echoes = [r for r in replies if r.inner is not None and r.inner.haslayer(ICMPv6EchoRequest)]
    assert echoes, "the host's ping never reached the tunnel"
    assert IPv6Address(echoes[0].inner.src) == IPv6Address(topology.HOME_HOST)
    # The host's kernel took our link-layer address for it, from a proxy answer without the
    # Router flag (§10.4.1); `ip neigh` would say "router" otherwise.
    neighbor = home.t.sh("host", "ip", "-6", "neigh", "show", mn.hoa, "dev", "eth0")
    assert f"lladdr {lan.ha_mac}" in neighbor and "router" not in neighbor, neighbor
    # And the address is defended: the host's own Duplicate Address Detection for it fails
    # (the lab turns DAD off in its namespaces; the host turns it on for this).
    home.t.sh("host", "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=1")
    home.t.sh("host", "ip", "addr", "add", f"{mn.hoa}/64", "dev", "eth0")
    try:
        shown = lambda: home.t.sh("host", "ip", "-6", "addr", "show", "eth0")  # noqa: E731
        assert _until(lambda: "dadfailed" in shown()), shown()
    finally:
        home.t.sh("host", "ip", "addr", "del", f"{mn.hoa}/64", "dev", "eth0")
        home.t.sh("host", "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")

    assert _ba_status(home, mn, 2, lifetime=0).message.status == 0
    assert _until(lambda: not {IPv6Address(mn.hoa), IPv6Address(link_local)} & lan.proxied())


def test_s10_3_1_another_host_holding_the_address_gets_134(lan: HomeLan) -> None:
    """§10.3.1: if Duplicate Address Detection fails, the home agent MUST reject the BU with
    status 134 -- here the host on the home link already holds the home address, and its
    kernel answers the home agent's solicitation. No binding, nothing proxied."""
    home, mn = lan.home, lan.home.nodes["duplicate"]
    failed = home.core_counter("dad_failed")
    home.t.sh("host", "ip", "addr", "add", f"{mn.hoa}/64", "dev", "eth0", "nodad")
    try:
        reply = _ba_status(home, mn, 1)
        assert reply.message.status == 134
        assert home.binding(mn.hoa) is None
        assert IPv6Address(mn.hoa) not in lan.proxied()
        assert home.core_counter("dad_failed") == failed + 1
    finally:
        home.t.sh("host", "ip", "addr", "del", f"{mn.hoa}/64", "dev", "eth0")


def test_s10_3_1_another_hosts_dad_for_the_address_gets_134(lan: HomeLan) -> None:
    """RFC 4862 §5.4.3, through §10.3.1: a Neighbor Solicitation from the unspecified address
    for the address under test means another node is trying to take it at the same time: the
    DAD fails, and the BU gets 134."""
    home, mn = lan.home, lan.home.nodes["racing"]
    home.prober.request([mn.tunnelled(mn.bu(1))], wait_s=0)
    solicited_node = bytes.fromhex("ff0200000000000000000001ff") + IPv6Address(mn.hoa).packed[13:]
    group = str(IPv6Address(solicited_node))
    theirs = IPv6(src="::", dst=group, hlim=255) / ICMPv6ND_NS(tgt=mn.hoa)
    lan.dad.request([bytes(theirs)], wait_s=0)
    replies = home.ask(until=lambda r: isinstance(r.message, MIP6MH_BA), flush=False)
    (reply,) = [r for r in replies if isinstance(r.message, MIP6MH_BA)]
    verify_signed(reply, mn)
    assert reply.message.status == 134
    assert home.binding(mn.hoa) is None


def _from_home(mn: Mn, sequence: int, lifetime: int) -> bytes:
    """§11.5.5: a BU sent on the home link from the home address, care-of address the home
    address itself (no Alternate Care-of Address, no Home Address option)."""
    mh = mn.bu(sequence, lifetime=lifetime, alt_coa=None, mac_coa=mn.hoa)
    return bytes(IPv6(src=mn.hoa, dst=HA, nh=NH_MH) / Raw(with_checksum(mh, mn.hoa)))


def _ba_on_link(lan: HomeLan, mn: Mn, packet: bytes) -> Any:
    # Sent and waited for in one request: the answer may come before a second one would
    # start. Only what came to the host's own link-layer address (PACKET_HOST) counts.
    got = [IPv6(p) for p in lan.ha.request([packet], wait_s=WAIT_S, count=1, host_only=True)]
    got += [IPv6(p) for p in lan.ha.request(wait_s=0.2, flush=False, host_only=True)]
    bas = [p for p in got if p.haslayer(MIP6MH_BA)]
    assert len(bas) == 1, [p.summary() for p in got]
    (ba,) = bas
    assert IPv6Address(ba.dst) == IPv6Address(mn.hoa)
    reply = parse(bytes(ba))
    verify_signed(reply, mn, coa=mn.hoa)
    return reply.message


def test_s10_3_2_a_mobile_node_back_home_is_answered_at_its_link_layer_address(
    lan: HomeLan,
) -> None:
    """§10.3.2: a refusal (status >= 128) to a BU from a mobile node on the home link MUST go to
    its link-layer address: the home agent still defends the home address, whose route leads
    into the tunnel. A BU with an old sequence number gets 135 on the link, not in the tunnel;
    the de-registration (§11.5.5: from the home address, care-of address = home address) is
    then accepted there too, and the home agent stops answering for the address."""
    home, mn = lan.home, lan.home.nodes["back"]
    assert _ba_status(home, mn, 10).message.status == 0
    assert _until(lambda: IPv6Address(mn.hoa) in lan.proxied())

    refused = _ba_on_link(lan, mn, _from_home(mn, 5, 0))
    assert refused.status == 135 and refused.seq == 10
    assert home.silence(mn.hoa, window=0.3, flush=False) == [], "an answer went into the tunnel"

    accepted = _ba_on_link(lan, mn, _from_home(mn, 11, 0))
    assert accepted.status == 0 and accepted.mhtime == 0
    assert home.binding(mn.hoa) is None
    assert _until(lambda: IPv6Address(mn.hoa) not in lan.proxied())


def test_home_prefix_is_the_links_not_the_tuns(lan: HomeLan) -> None:
    """With a home link the home agent routes only bound home addresses into its TUN: the rest
    of the prefix stays on the link, where the host lives."""
    routes = lan.home.t.sh("ha", "ip", "-6", "route", "show", HOME_PREFIX)
    assert "home0" in routes and "mip-ha0" not in routes, routes
    status = runner.daemon_status(lan.home.t, "ha")
    assert status is not None and status["home_link"]["interface"] == "home0"


def test_a_host_on_the_home_link_reaches_a_real_mobile_node(make_lab: Any) -> None:
    """End to end, with mipnode's own mobile node (protection on) and its home agent on a home
    link: the first registration waits out the DAD (the mobile node's first-registration timer
    leaves it time), and a host on the home link that knows nothing of Mobile IPv6 pings the
    home address, answered by the mobile node through the home agent's proxy and tunnel."""
    lab = make_lab(home_lan=True)
    ha = lab.status("ha")
    assert ha["core"].get("dad_passed") == 1 and ha["home_link"]["defended"] == [topology.HOA]
    mn = lab.status("mn")
    # One BU, answered after the DAD's second: no retransmission was needed.
    assert mn["registration_ms"] >= 1000 and mn["core"].get("registration_bu_sent") == 1, mn
    answer = runner.ping(lab.t, "host", topology.HOA, count=3)
    assert answer["received"] == 3, answer
