"""The lab topology (RFC 4487 §5 model, reference/protocol.md §5.3), built with iproute2 and nft.

```
 mn ──lan── fw ──wan/core── core ──── ha   (home prefix 2001:db8:1::/64 routed to the HA)
                              └────── cn   (plain IPv6 host, no mipnode)
```

The firewall router ``fw`` carries the scenario's nftables ruleset in its own table.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipnode.lab.netns import CHILDREN, LabError, RunRecord, run

HOME_PREFIX = "2001:db8:1::/64"
HA_ADDRESS = "2001:db8:1::1"
HOA = "2001:db8:1::100"
HOME_HOST = "2001:db8:1::2"  # a host on the home link (home_lan)
CN_ADDRESS = "2001:db8:c::2"
CN_ADDRESS4 = "198.18.0.2"  # benchmarking range (RFC 2544): never routed beyond the lab
MN_LAN6 = "2001:db8:a::2"
FW_LAN6 = "2001:db8:a::1"
MN_LAN6_B = "2001:db8:b::2"  # the second access network, to move to
HOA2 = "2001:db8:1::200"  # a second mobile node, on its own access network behind fw3
MN2_LAN6 = "2001:db8:d::2"
SPI2 = 1001
FW_LAN6_B = "2001:db8:b::1"
MN_LAN4 = "10.0.4.2"
MN_LAN_NAT66 = "fd00:6::2"  # unique local, translated by the NAT66 firewall
FW_LAN4 = "10.0.4.1"
HA_CORE4 = "203.0.113.2"
SPI = 1000
# A mobile router's network (RFC 3963): the MN routes it, a host `dev` behind it runs nothing
# of ours.
MOBILE_NETWORK = "2001:db8:aaaa::/48"
MR_LAN6 = "2001:db8:aaaa:1::1"
DEVICE = "2001:db8:aaaa:1::2"
# ... and its IPv4 network, with IPv4 home addresses too (RFC 5555 carries IPv4 in its tunnel).
MOBILE_NETWORK4 = "10.77.0.0/24"
MR_LAN4 = "10.77.0.1"
DEVICE4 = "10.77.0.2"
# IPv4 home addresses (RFC 5555): the HA gives them from this prefix, the lowest first.
IPV4_HOME_PREFIX = "192.0.2.0/24"
IPV4_HOA = "192.0.2.1"
# Every daemon serves Prometheus metrics on its own namespace's loopback (docs/metrics.md).
METRICS_LISTEN = "127.0.0.1:9464"
# The HA's UDP ports when a scenario names none: the daemons' default (docs/configuration.md),
# written as the legacy one-port keys so that form keeps being exercised.
DEFAULT_HA_UDP_PORTS = (4191,)

NODES = ("mn", "fw", "core", "ha", "cn")
HOME_LINK = "2001:db8:f2::"  # the HA's link to the core; a cluster's home link
HOME_LINK4 = "203.0.113."


def ha_node_names(count: int) -> list[str]:
    """The home agents' nodes: ``ha``, then ``ha2``, ``ha3``... in a cluster."""
    return ["ha", *(f"ha{i}" for i in range(2, count + 1))]


def plan(
    cn_firewall: str | None,
    second_access: str | None,
    second_mn: str | None = None,
    ha_firewall: str | None = None,
    attacker: bool = False,
    ha_nodes: int = 1,
    mobile_network: bool = False,
    home_lan: bool = False,
) -> tuple[tuple[str, ...], tuple[tuple[str, str, str, str], ...]]:
    """Namespaces and veth links (node a, ifname in a, node b, ifname in b) of a topology.

    Optional parts: a second access network ``mn --eth1-- fw2 -- core`` to move to, a
    firewall in front of the CN (RFC 4487 §5.2) ``core -- fwc -- cn`` and one in front of the
    home agent (§5.3) ``core -- fwh -- ha``. With ``ha_nodes`` > 1 the home agents ``ha``,
    ``ha2``, ... of a cluster share one home link: the core's ends of their links are ports
    of a bridge ``home`` in the core. With ``mobile_network`` the MN is a mobile router for
    ``MOBILE_NETWORK``, and a host ``dev`` on its link ``mn --net0-- dev`` uses it. With
    ``home_lan`` the home prefix is also a link ``ha --home0-- host`` with a host on it (the
    home agent's ``[ha] home_link``, RFC 6275 §10.4.1).
    """
    nodes = ["mn", "fw", "core", *ha_node_names(ha_nodes)]
    links = [
        ("mn", "eth0", "fw", "lan"),
        ("fw", "wan", "core", "to-fw"),
    ]
    if ha_nodes > 1:
        links += [("core", f"to-{n}", n, "eth0") for n in ha_node_names(ha_nodes)]
    elif ha_firewall:
        nodes.insert(3, "fwh")
        links += [("core", "to-fwh", "fwh", "wan"), ("fwh", "lan", "ha", "eth0")]
    else:
        links.append(("core", "to-ha", "ha", "eth0"))
    if second_access:
        nodes.append("fw2")
        links += [("mn", "eth1", "fw2", "lan"), ("fw2", "wan", "core", "to-fw2")]
    if second_mn:
        nodes += ["fw3", "mn2"]
        links += [("mn2", "eth0", "fw3", "lan"), ("fw3", "wan", "core", "to-fw3")]
    if cn_firewall:
        nodes.append("fwc")
        links += [("core", "to-fwc", "fwc", "wan"), ("fwc", "lan", "cn", "eth0")]
    else:
        links.append(("core", "to-cn", "cn", "eth0"))
    nodes.append("cn")
    if mobile_network:
        nodes.append("dev")
        links.append(("mn", "net0", "dev", "eth0"))
    if home_lan:
        nodes.append("host")
        links.append(("ha", "home0", "host", "eth0"))
    if attacker:
        # An off-path host on the core (issue 12): it can send anything from any address, and
        # sees only what is routed to it (its address and the REFLECT prefix of lab.attack).
        nodes.append("atk")
        links.append(("core", "to-atk", "atk", "eth0"))
    return tuple(nodes), tuple(links)


def _stateful(
    before: str = "",
    after_established: str = "",
    outbound: str = "iifname $LAN accept",
    family: str = "inet",
    extra_chains: str = "",
) -> str:
    """P1 (protocol.md §5.4): forward policy drop, established/related back in, ICMPv6 errors
    (RFC 4890) and everything from the protected side out; the other profiles add to it."""
    icmp = (
        "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, "
        "parameter-problem } accept"
    )
    rules = [
        before,
        "ct state established,related accept",
        after_established,
        icmp if family != "ip" else "",
        outbound,
    ]
    body = "\n".join(f"    {r}" for r in rules if r)
    return f"""
table {family} mipnode_lab {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
{body}
  }}{extra_chains}
}}
"""


def _masquerade(options: str = "") -> str:
    return f"""
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname $WAN masquerade{options}
  }}"""


FIREWALLS = {
    "open": "",
    # P1: generic stateful firewall, outbound allowed, established back in.
    "stateful": _stateful(),
    # P2: P1 that also drops conntrack-invalid packets (common best practice). An RH2 reply to
    # a HAO packet is invalid to conntrack (reference/protocol.md §4, E4/E6): no D-native.
    "stateful-strict": _stateful(after_established="ct state invalid counter drop"),
    # P3, strict variant: only TCP, UDP and ICMP pass (RFC 4487's UDP/TCP filters); the
    # Mobility Header, ESP, AH and protocol 41 are dropped both ways (TC-03).
    "tcp-udp-icmp-only": _stateful(
        before="meta l4proto { mobility-header, esp, ah, ipv6 } counter drop",
        outbound="iifname $LAN meta l4proto { tcp, udp, ipv6-icmp, icmp } accept",
    ),
    # P5: P1 that drops ESP (RFC 4487 §5.1 I1/I3 literally): IPsec-protected signalling would
    # fail, mipnode's RFC 4285 authentication does not need ESP (TC-11).
    "no-esp": _stateful(before="meta l4proto esp counter drop"),
    # P1 that also drops the native tunnel both ways, in both its forms: IPv6-in-IPv6
    # (protocol 41: the checks and the BU before the first BA) and ESP (protocol 50: the
    # protected tunnel after it). T-native cannot work. (Dropping 41 alone leaves a protected
    # mobile node T-native after a T-udp start: see `ha-pinholes`.)
    "stateful-no41": _stateful(before="meta l4proto { ipv6, esp } counter drop"),
    # P1, and UDP only to the home agent (RFC 4487 §5.1 style UDP filtering, TC-03-like): no
    # direct UDP path can exist; T and D-native are what is left to try.
    "stateful-udp-ha-only": _stateful(
        before="meta l4proto udp ip6 daddr != $HA ip6 saddr != $HA counter drop"
    ),
    # P1 that lets only web traffic leave `lan` (hotels, guest Wi-Fi): TCP 80 and 443, UDP 53
    # (DNS) and 443 (QUIC); replies come back as established. No protocol 41, no UDP 4191:
    # only a home agent that also listens on UDP 443 is reachable (T-udp).
    "web-only": _stateful(
        outbound="iifname $LAN meta l4proto . th dport "
        "{ tcp . 80, tcp . 443, udp . 53, udp . 443 } accept"
    ),
    # IPv6 access network with unique local addresses behind NAT66 masquerade (TC-14).
    "nat66": _stateful(family="ip6", extra_chains=_masquerade()),
    # IPv4-only access network behind NAT44 masquerade (DSMIPv6 scenario 2, TC-12), and the
    # same with destination-dependent mappings (a new port per destination, TC-13).
    "nat44": _stateful(family="ip", extra_chains=_masquerade()),
    "nat44-random": _stateful(family="ip", extra_chains=_masquerade(" fully-random")),
}
# The profiles that translate IPv4 (masquerade in an `ip` table). The MN's IPv4 access network
# 10.0.4.0/24 is private: the core has no route back to it, so IPv4 access needs one of them
# (nat66 masquerades IPv6 only).
NAT44_PROFILES = ("nat44", "nat44-random")


def placeholders(access: str) -> dict[str, str]:
    """nft variables every ruleset may use (``$HA``, ``iifname $LAN``), passed with ``nft -D``:
    nft substitutes and type-checks them itself, so a scenario's rules stay plain nft text."""
    visited = {"ipv6": "2001:db8:a::/64", "ipv6-nat66": "fd00:6::/64", "ipv4": "10.0.4.0/24"}
    mn = {"ipv6": MN_LAN6, "ipv6-nat66": MN_LAN_NAT66, "ipv4": MN_LAN4}
    return {
        "LAN": '"lan"',  # every firewall's protected side
        "WAN": '"wan"',  # ... and its side towards the core
        "HA": HA_ADDRESS,
        "HA4": HA_CORE4,
        "HOME": HOME_PREFIX,
        "HOA": HOA,
        "HOA2": HOA2,
        "CN": CN_ADDRESS,
        "CN4": CN_ADDRESS4,
        "MN": mn[access],
        "MN_B": MN_LAN6_B,
        "MN2": MN2_LAN6,
        "VISITED": visited[access],
        "VISITED_B": "2001:db8:b::/64",
        "MOBILE_NET": MOBILE_NETWORK,  # a mobile router's network (RFC 3963)
        "DEVICE": DEVICE,  # ... and the host on it
        "HOME4": IPV4_HOME_PREFIX,  # IPv4 home addresses (RFC 5555)
        "HOA4": IPV4_HOA,  # ... the MN's
        "MOBILE_NET4": MOBILE_NETWORK4,  # a mobile router's IPv4 network
        "DEVICE4": DEVICE4,  # ... and the host's IPv4 address on it
    }


def nft_command(access: str, *args: str) -> list[str]:
    cmd = ["nft"]
    for name, value in placeholders(access).items():
        cmd += ["-D", f"{name}={value}"]
    return [*cmd, *args]


def check_ruleset(access: str, rules: str) -> str | None:
    """nft's own verdict on a ruleset (``nft -c``, in a throwaway network namespace so nothing
    is ever loaded): None when it is valid, else nft's first error with its caret line."""
    proc = run(
        ["unshare", "--net", *nft_command(access, "-c", "-f", "-")], input=rules, check=False
    )
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return " / ".join(ln.strip() for ln in lines[:3]) or f"nft exited with {proc.returncode}"


@dataclass
class Topology:
    record: RunRecord
    workdir: Path
    access: str  # "ipv6", "ipv6-nat66" or "ipv4"
    firewall: str
    cn_firewall: str | None = None
    second_access: str | None = None  # firewall profile of fw2, the network to move to
    second_mn: str | None = None  # firewall profile of fw3, in front of a second MN
    ha_firewall: str | None = None  # firewall profile of fwh, in front of the home agent
    nft: dict[str, str] = field(default_factory=dict)  # firewall node -> inline ruleset
    ha_udp_ports: tuple[int, ...] | None = None  # the HA's udp_ports (None: the default 4191)
    pids: dict[str, int] = field(default_factory=dict)  # daemon name (log stem) -> pid
    esp_keylog: Path | None = None  # MIPNODE_ESP_KEYLOG for the daemons (lab --pcap)
    protection: str = "esp"  # [ha] and [mn] protection in the generated configs
    attacker: bool = False  # an `atk` node on the core (lab.attack)
    ha_nodes: int = 1  # home agents: more than one is a cluster on etcd (in the core)
    mobile_network: bool = False  # the MN routes MOBILE_NETWORK for a host `dev` behind it
    ipv4_home: bool = False  # the MN asks for an IPv4 home address; traffic runs over IPv4
    home_lan: bool = False  # the home prefix is a link ha --home0-- host as well
    etcd_endpoints: tuple[str, ...] = ()  # the cluster's etcd, once started
    # What a cluster's timeline steps hold between them (lab/cluster.py): its etcd
    # (EtcdCluster), a BU capture (capture-bu), the node whose link is cut (cut-ha-holder).
    etcd: Any = None
    bu_capture: Any = None
    cut_node: str | None = None

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._plan()[0]

    @property
    def links(self) -> tuple[tuple[str, str, str, str], ...]:
        return self._plan()[1]

    def _plan(self) -> tuple[tuple[str, ...], tuple[tuple[str, str, str, str], ...]]:
        return plan(
            self.cn_firewall,
            self.second_access,
            self.second_mn,
            self.ha_firewall,
            self.attacker,
            self.ha_nodes,
            self.mobile_network,
            self.home_lan,
        )

    def mn_host(self) -> tuple[str, str]:
        """The node and address traffic to and from the mobile node uses: its home address
        (its IPv4 one with ``ipv4_home``), or with a mobile network the host behind it."""
        if self.mobile_network:
            return "dev", DEVICE4 if self.ipv4_home else DEVICE
        return "mn", IPV4_HOA if self.ipv4_home else HOA

    def cn_address(self) -> str:
        """The correspondent's address traffic uses (IPv4 with ``ipv4_home``)."""
        return CN_ADDRESS4 if self.ipv4_home else CN_ADDRESS

    def firewalls(self) -> dict[str, str]:
        """Firewall node -> profile name ("custom" for an inline ruleset) of this topology."""
        out = {"fw": self.firewall}
        for node, profile in (
            ("fw2", self.second_access),
            ("fw3", self.second_mn),
            ("fwc", self.cn_firewall),
            ("fwh", self.ha_firewall),
        ):
            if profile:
                out[node] = profile
        return out

    def mn_address(self) -> str:
        """The mobile node's address on its first access network."""
        return {"ipv6": MN_LAN6, "ipv6-nat66": MN_LAN_NAT66, "ipv4": MN_LAN4}[self.access]

    def ns(self, node: str) -> str:
        return self.record.ns(node)

    def sh(
        self,
        node: str,
        *cmd: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> str:
        return run(
            ["ip", "netns", "exec", self.ns(node), *cmd], check=check, timeout=timeout, input=input
        ).stdout

    def spawn(self, node: str, args: list[str], log_name: str) -> int:
        """Start ``python -m mipnode.cli ARGS`` in ``node``; record its pid for teardown."""
        import subprocess

        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - handed to the child
        env = None
        if self.esp_keylog is not None:
            env = {**os.environ, "MIPNODE_ESP_KEYLOG": str(self.esp_keylog)}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), sys.executable, "-m", "mipnode.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        log.close()
        CHILDREN[proc.pid] = proc
        self.pids[log_name.removesuffix(".log")] = proc.pid
        self.record.daemons.append(proc.pid)
        self.record.save()
        return proc.pid


def _sysctls(t: Topology, node: str, router: bool) -> None:
    values = {
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
        "net.ipv6.conf.all.accept_ra": "0",
        "net.ipv6.conf.default.accept_ra": "0",
        "net.ipv6.conf.all.forwarding": "1" if router else "0",
        "net.ipv4.ip_forward": "1" if router else "0",
    }
    args = []
    for k, v in values.items():
        args += ["-w", f"{k}={v}"]
    t.sh(node, "sysctl", "-q", *args)


def build(
    record: RunRecord,
    workdir: Path,
    *,
    access: str,
    firewall: str,
    cn_firewall: str | None = None,
    second_access: str | None = None,
    second_mn: str | None = None,
    ha_firewall: str | None = None,
    nft: dict[str, str] | None = None,
    sysctls: dict[str, dict[str, str]] | None = None,
    access_mtu: int | None = None,
    ha_udp_ports: tuple[int, ...] | None = None,
    protection: str = "esp",
    attacker: bool = False,
    ha_nodes: int = 1,
    mobile_network: bool = False,
    ipv4_home: bool = False,
    home_lan: bool = False,
) -> Topology:
    """Build the namespaces, links, addresses, routes and firewall rules of one topology.

    ``nft`` replaces a firewall's profile with inline rules (profile name "custom");
    ``sysctls`` are set per namespace after the rules (conntrack's knobs exist once it is
    loaded); ``access_mtu`` sets the MTU of the MN's first access link (TC-16);
    ``ha_udp_ports`` are the UDP ports the HA listens on (and the MNs check), and
    ``protection`` the HA's and the MNs' setting, for :func:`write_configs`.
    """
    t = Topology(
        record,
        workdir,
        access,
        firewall,
        cn_firewall,
        second_access,
        second_mn,
        ha_firewall,
        dict(nft or {}),
        ha_udp_ports,
        protection=protection,
        attacker=attacker,
        ha_nodes=ha_nodes,
        mobile_network=mobile_network,
        ipv4_home=ipv4_home,
        home_lan=home_lan,
    )
    if ha_nodes > 1 and ha_firewall:
        raise LabError("a firewall in front of a cluster of home agents is not built yet")
    for node, profile in t.firewalls().items():
        if node not in t.nft and profile not in FIREWALLS:
            raise LabError(f"unknown firewall profile {profile!r} for {node}")
    nodes, links = t.nodes, t.links
    routers = ("fw", "fw2", "fw3", "core", "fwc", "fwh")
    for node in nodes:
        name = record.ns(node)
        record.namespaces.append(name)
        record.save()  # recorded before it exists, so a crash right after leaves no orphan
        run(["ip", "netns", "add", name])
        t.sh(node, "ip", "link", "set", "lo", "up")
        _sysctls(t, node, router=node in routers)
    for a, ia, b, ib in links:
        run(
            [
                "ip",
                "-n",
                record.ns(a),
                "link",
                "add",
                ia,
                "type",
                "veth",
                "peer",
                "name",
                ib,
                "netns",
                record.ns(b),
            ]
        )
        for node, dev in ((a, ia), (b, ib)):
            # Software checksums on veths: captures then show the real on-wire checksums
            # instead of offload placeholders (reference/linux.md §6).
            if shutil.which("ethtool"):
                t.sh(node, "ethtool", "-K", dev, "tx", "off", check=False)
            t.sh(node, "ip", "link", "set", dev, "up")

    def addr(node: str, dev: str, cidr: str) -> None:
        extra = ["nodad"] if ":" in cidr else []
        t.sh(node, "ip", "addr", "add", cidr, "dev", dev, *extra)

    def route(node: str, *spec: str) -> None:
        family = "-6" if any(":" in s for s in spec) else "-4"
        t.sh(node, "ip", family, "route", "add", *spec)

    # Access network: IPv6 (scenarios a-c) or IPv4-only behind NAT44 (scenario d).
    if access == "ipv6":
        addr("mn", "eth0", f"{MN_LAN6}/64")
        addr("fw", "lan", f"{FW_LAN6}/64")
        route("mn", "default", "via", FW_LAN6, "dev", "eth0")
    elif access == "ipv6-nat66":
        # Unique local addresses, translated by fw (never routed beyond it).
        addr("mn", "eth0", f"{MN_LAN_NAT66}/64")
        addr("fw", "lan", "fd00:6::1/64")
        route("mn", "default", "via", "fd00:6::1", "dev", "eth0")
    else:
        # An IPv4-only access network: the MN also loses its IPv6 link-local address.
        t.sh("mn", "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1")
        addr("mn", "eth0", f"{MN_LAN4}/24")
        addr("fw", "lan", f"{FW_LAN4}/24")
        route("mn", "default", "via", FW_LAN4, "dev", "eth0")
    addr("fw", "wan", "2001:db8:f1::2/64")
    addr("fw", "wan", "198.51.100.2/24")
    addr("core", "to-fw", "2001:db8:f1::1/64")
    addr("core", "to-fw", "198.51.100.1/24")
    if ha_firewall:
        # fwh takes the core's place on the HA's link, so the HA keeps its addresses.
        addr("fwh", "lan", "2001:db8:f2::1/64")
        addr("fwh", "lan", "203.0.113.1/24")
        addr("fwh", "wan", "2001:db8:f6::2/64")
        addr("fwh", "wan", "192.0.2.2/24")
        addr("core", "to-fwh", "2001:db8:f6::1/64")
        addr("core", "to-fwh", "192.0.2.1/24")
        route("core", "2001:db8:f2::/64", "via", "2001:db8:f6::2")
        route("core", "203.0.113.0/24", "via", "192.0.2.2")
        route("fwh", "default", "via", "2001:db8:f6::1")
        route("fwh", "default", "via", "192.0.2.1")
    elif ha_nodes > 1:
        # The home link: a bridge whose ports are the core's ends of the HAs' links.
        t.sh("core", "ip", "link", "add", "home", "type", "bridge", "mcast_snooping", "0")
        for n in ha_node_names(ha_nodes):
            t.sh("core", "ip", "link", "set", f"to-{n}", "master", "home")
        t.sh("core", "ip", "link", "set", "home", "up")
        addr("core", "home", f"{HOME_LINK}1/64")
        addr("core", "home", f"{HOME_LINK4}1/24")
    else:
        addr("core", "to-ha", f"{HOME_LINK}1/64")
        addr("core", "to-ha", f"{HOME_LINK4}1/24")
    if second_access:
        # The network to move to: up, addressed, but without the MN's default route.
        addr("mn", "eth1", f"{MN_LAN6_B}/64")
        addr("fw2", "lan", f"{FW_LAN6_B}/64")
        addr("fw2", "wan", "2001:db8:f4::2/64")
        addr("core", "to-fw2", "2001:db8:f4::1/64")
        route("core", "2001:db8:b::/64", "via", "2001:db8:f4::2")
        route("fw2", "default", "via", "2001:db8:f4::1")
    if second_mn:
        addr("mn2", "eth0", f"{MN2_LAN6}/64")
        addr("fw3", "lan", "2001:db8:d::1/64")
        addr("fw3", "wan", "2001:db8:f5::2/64")
        addr("core", "to-fw3", "2001:db8:f5::1/64")
        route("mn2", "default", "via", "2001:db8:d::1", "dev", "eth0")
        route("core", "2001:db8:d::/64", "via", "2001:db8:f5::2")
        route("fw3", "default", "via", "2001:db8:f5::1")
    if cn_firewall:
        addr("core", "to-fwc", "2001:db8:f3::1/64")
        addr("fwc", "wan", "2001:db8:f3::2/64")
        addr("fwc", "lan", "2001:db8:c::1/64")
        route("core", "2001:db8:c::/64", "via", "2001:db8:f3::2")
        route("fwc", "default", "via", "2001:db8:f3::1")
    else:
        addr("core", "to-cn", "2001:db8:c::1/64")
        # A public IPv4 address too (a dual-stack CN): direct UDP from IPv4-only access.
        addr("core", "to-cn", "198.18.0.1/24")
        addr("cn", "eth0", f"{CN_ADDRESS4}/24")
        route("cn", "default", "via", "198.18.0.1")
    if mobile_network:
        addr("mn", "net0", f"{MR_LAN6}/64")
        addr("dev", "eth0", f"{DEVICE}/64")
        route("dev", "default", "via", MR_LAN6, "dev", "eth0")
        if ipv4_home:  # the router's IPv4 network as well
            addr("mn", "net0", f"{MR_LAN4}/24")
            addr("dev", "eth0", f"{DEVICE4}/24")
            route("dev", "default", "via", MR_LAN4, "dev", "eth0")
    if home_lan:
        if ha_nodes > 1 or ha_firewall:
            raise LabError("a home LAN is built with one home agent and no fwh yet")
        addr("ha", "home0", f"{HA_ADDRESS}/64")
        addr("host", "eth0", f"{HOME_HOST}/64")
        route("host", "default", "via", HA_ADDRESS, "dev", "eth0")
    if attacker:
        addr("core", "to-atk", "2001:db8:e::1/64")
        addr("atk", "eth0", "2001:db8:e::2/64")
        route("atk", "default", "via", "2001:db8:e::1")
        route("core", "2001:db8:e:1::/64", "via", "2001:db8:e::2")  # lab.attack REFLECT
    for i, n in enumerate(ha_node_names(ha_nodes)):
        addr(n, "eth0", f"{HOME_LINK}{2 + i}/64")
        if ha_nodes > 1:
            # Each node its own IPv4 address; HA_CORE4 is the cluster's, held by the holder.
            addr(n, "eth0", f"{HOME_LINK4}{10 + i}/24")
            route(n, "default", "via", f"{HOME_LINK}1")
            if n != "ha":
                route(n, "default", "via", f"{HOME_LINK4}1")
    if ha_nodes == 1:
        addr("ha", "eth0", f"{HA_CORE4}/24")
    addr("cn", "eth0", f"{CN_ADDRESS}/64")
    route("fw", "default", "via", "2001:db8:f1::1")
    route("fw", "default", "via", "198.51.100.1")
    route("core", "2001:db8:a::/64", "via", "2001:db8:f1::2")
    if ha_firewall:
        route("core", HOME_PREFIX, "via", "2001:db8:f6::2")
        route("fwh", HOME_PREFIX, "via", "2001:db8:f2::2")
    elif ha_nodes > 1:
        # The home prefix goes to the home-agent address, on the home link: whichever node
        # holds it answers for it (and tells the core with an unsolicited NA when it moves).
        route("core", f"{HA_ADDRESS}/128", "dev", "home")
        route("core", HOME_PREFIX, "via", HA_ADDRESS, "dev", "home")
    else:
        route("core", HOME_PREFIX, "via", "2001:db8:f2::2")
    if mobile_network:  # the home agent routes it into the router's tunnel (RFC 3963)
        if ha_nodes > 1 or ha_firewall:
            raise LabError("a mobile network is built with one home agent and no fwh yet")
        route("core", MOBILE_NETWORK, "via", "2001:db8:f2::2")
    if ipv4_home:  # the HA gives IPv4 home addresses from it (RFC 5555)
        if ha_nodes > 1 or ha_firewall:
            raise LabError("IPv4 home addresses are built with one home agent and no fwh yet")
        route("core", IPV4_HOME_PREFIX, "via", HA_CORE4)
        if mobile_network:
            route("core", MOBILE_NETWORK4, "via", HA_CORE4)
    if ha_nodes == 1:
        route("ha", "default", "via", "2001:db8:f2::1")
    route("ha", "default", "via", "203.0.113.1")
    route("cn", "default", "via", "2001:db8:c::1")
    if access_mtu is not None:
        t.sh("mn", "ip", "link", "set", "eth0", "mtu", str(access_mtu))
        t.sh("fw", "ip", "link", "set", "lan", "mtu", str(access_mtu))
    for node, profile in t.firewalls().items():
        rules = t.nft.get(node, FIREWALLS.get(profile, ""))
        if rules.strip():
            try:
                t.sh(node, *nft_command(access, "-f", "-"), input=rules)
            except LabError as exc:
                raise LabError(f"{node}: the {profile} ruleset does not load: {exc}") from None
    for node, values in (sysctls or {}).items():
        for key, value in values.items():
            proc = run(
                ["ip", "netns", "exec", t.ns(node), "sysctl", "-q", "-w", f"{key}={value}"],
                check=False,
            )
            if proc.returncode != 0:
                raise LabError(f"sysctl {node}: {key}={value}: {proc.stderr.strip()}")
    return t


def write_configs(t: Topology) -> tuple[Path, Path]:
    """Generate the HA and MN configuration files for this run (a fresh key every run)."""
    key, key2 = secrets.token_hex(20), secrets.token_hex(20)
    ha_cfg = t.workdir / "ha.toml"
    mn_cfg = t.workdir / "mn.toml"
    cluster_key = secrets.token_hex(32)
    for node in ha_node_names(t.ha_nodes):
        # One node keeps its bindings in a state file; a cluster keeps them in etcd.
        keeps = f'state_dir = "{t.workdir}"' if t.ha_nodes == 1 else ""
        (t.workdir / f"{node}.toml").write_text(
            f"""[ha]
address = "{HA_ADDRESS}"
home_prefix = "{HOME_PREFIX}"
{_ports_line(t, "udp_port", "udp_ports")}
max_lifetime_s = 600
{keeps}
metrics_listen = "{METRICS_LISTEN}"
protection = "{t.protection}"
{f'ipv4_home_prefix = "{IPV4_HOME_PREFIX}"' if t.ipv4_home else ""}
{'home_link = "home0"' if t.home_lan else ""}
{_cluster_table(t, node, cluster_key) if t.ha_nodes > 1 else ""}
[[mobile_node]]
home_address = "{HOA}"
spi = {SPI}
key = "{key}"
{_mobile_network_line(t)}
{_second_mn_entry(key2) if t.second_mn else ""}"""
        )
    if t.second_mn:
        (t.workdir / "mn2.toml").write_text(
            f"""[mn]
home_address = "{HOA2}"
home_agent = "{HA_ADDRESS}"
{_ports_line(t, "home_agent_udp_port", "home_agent_udp_ports")}
spi = {SPI2}
key = "{key2}"
lifetime_s = 600
interface = "eth0"
keepalive_interval_s = 5
protection = "{t.protection}"
"""
        )
    mn_cfg.write_text(
        f"""[mn]
home_address = "{HOA}"
home_agent = "{HA_ADDRESS}"
home_agent_ipv4 = "{HA_CORE4}"
{_ports_line(t, "home_agent_udp_port", "home_agent_udp_ports")}
spi = {SPI}
key = "{key}"
lifetime_s = 600
{"" if t.second_access else 'interface = "eth0"'}
keepalive_interval_s = 5
protection = "{t.protection}"
metrics_listen = "{METRICS_LISTEN}"
{_mobile_network_line(t)}
{'ipv4_home_address = "auto"' if t.ipv4_home else ""}
"""
    )
    ha_files = [t.workdir / f"{n}.toml" for n in ha_node_names(t.ha_nodes)]
    for p in (*ha_files, mn_cfg, t.workdir / "mn2.toml"):
        if p.exists():
            os.chmod(p, 0o600)  # they hold keys: the daemons refuse them open to others
    return ha_cfg, mn_cfg


def _mobile_network_line(t: Topology) -> str:
    if not t.mobile_network:
        return ""
    line = f'mobile_network_prefixes = ["{MOBILE_NETWORK}"]'
    if t.ipv4_home:
        line += f'\nipv4_mobile_network_prefixes = ["{MOBILE_NETWORK4}"]'
    return line


def _ports_line(t: Topology, one: str, many: str) -> str:
    """The HA's UDP ports as a configuration line: ``one = 4191`` (the legacy key) by default,
    ``many = [4191, 443]`` when the scenario names them; the same list for the HA and MNs."""
    if t.ha_udp_ports is None:
        return f"{one} = {DEFAULT_HA_UDP_PORTS[0]}"
    return f"{many} = [{', '.join(map(str, t.ha_udp_ports))}]"


def _cluster_table(t: Topology, node: str, key: str) -> str:
    endpoints = ", ".join(f'"{e}"' for e in t.etcd_endpoints)
    return f"""
[ha.cluster]
name = "lab"
node_id = "{node}"
etcd_endpoints = [{endpoints}]
key = "{key}"
home_link = "eth0"
ipv4_address = "{HA_CORE4}"
"""


def _second_mn_entry(key: str) -> str:
    return f"""
[[mobile_node]]
home_address = "{HOA2}"
spi = {SPI2}
key = "{key}"
"""


def write_cn_config(t: Topology) -> Path:
    cn_cfg = t.workdir / "cn.toml"
    cn_cfg.write_text(
        f'[cn]\naddresses = ["{CN_ADDRESS}"]\ninterface = "eth0"\n'
        f'metrics_listen = "{METRICS_LISTEN}"\n'
    )
    return cn_cfg


def move_mn(t: Topology) -> None:
    """Move the MN to the second access network: its default route now goes through fw2. The
    old link stays up (make-before-break is possible); the daemon notices the new care-of
    address on its own."""
    t.sh("mn", "ip", "-6", "route", "replace", "default", "via", FW_LAN6_B, "dev", "eth1")
