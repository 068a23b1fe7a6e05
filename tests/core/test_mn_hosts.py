"""Direct paths a mobile router checks for the hosts behind it (core/mn_hosts.py, issue 15).

A real MobileNode (the router), a real HomeAgentNode and a real CorrespondentNode on virtual
time (tests/core/nodenet.py): the home agent routes the router's prefix into its tunnel and
forwards what the router's hosts send to the correspondent; UDP between router and
correspondent goes straight. Nothing in the correspondent knows about mobile networks."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from nodenet import CN, HA6, HOA, KEY, SPI, NodeNet, Wire

from mipnode.core.cn import CnCoreConfig
from mipnode.core.correspondent_node import CnForwardingChanged, CorrespondentNode
from mipnode.core.direct_paths import OFFER_TRIES, DirectPaths
from mipnode.core.home_agent import SendVia
from mipnode.core.mn_hosts import HostPaths, flow_key
from mipnode.core.mn_status import status
from mipnode.core.mobile_node import MobileNodeConfig
from mipnode.core.transmit import Deliver, EspKeyed, SendNative, SendUdp
from mipnode.core.types import Via
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH
from mipnode.wire.mh import ExperimentalMessage, decode_mh_untrusted
from mipnode.wire.packets import ipv6_packet

NET = IPv6Network("2001:db8:ee00::/48")
HOST = IPv6Address("2001:db8:ee00:1::2")
HOST2 = IPv6Address("2001:db8:ee00:1::3")
CN_PORT = 7000


class RouterNet(NodeNet):
    """NodeNet with a mobile router (prefix NET) and a mipnode correspondent at CN."""

    def __post_init__(self) -> None:
        self.mn_prefixes = (NET,)
        self.mn_config = MobileNodeConfig(
            home_address=HOA,
            home_agent=HA6,
            spi=SPI,
            key=KEY,
            route_optimization=True,
            mobile_network_prefixes=(NET,),
            suite=1 if self.protected else None,
        )
        self.ipv4 = False
        self.cn = CorrespondentNode(
            CnCoreConfig(addresses=(CN,)), kcn=b"c" * 20, random_bytes=self._cn_random
        )
        self.cn_routes: dict[IPv6Address, CnForwardingChanged] = {}
        self.via_ha: list[bytes] = []  # packets the home agent forwarded from hosts to CN
        self.cn_rx: list[bytes] = []  # hosts' data that reached the correspondent
        self.direct_keys: list[bytes] = []  # owners of the D-udp SAs the router was given
        self.cn_speaks_mh = True  # False: a plain correspondent (its kernel refuses MH)
        super().__post_init__()
        self.others.append(self.cn)
        self.cn.set_sockets(self.now, [(str(CN), CN_PORT)])

    def _cn_random(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # the home agent's side: what its daemon does for a router's prefix (drivers/ha_daemon.py)
    def _ha_esp(self, data: bytes, via: Via) -> None:
        opened = self.ha_esp.open(data, self.now, self.ha_drops)
        if opened is None:
            return
        inner, owner = opened
        if inner[24:40] == HA6.packed and inner[6] in (NH_MH, 17):
            self.ha.receive_tunnelled(self.now, inner, via, IPv6Address(owner))
        elif inner[8:24] == owner or IPv6Address(inner[8:24]) in NET:
            self._ha_tunnel(inner, via, sealed=True)

    def _ha_tunnel(self, inner: bytes, via: Via, sealed: bool = False) -> None:
        from_host = IPv6Address(inner[8:24]) in NET and self.ha_routes.get(HOA.packed) == via
        if from_host and (sealed or not self.protected) and inner[24:40] == CN.packed:
            self.via_ha.append(inner)
            self.at(self.now + self.latency_s, lambda: self._cn_packet(inner))
            return
        super()._ha_tunnel(inner, via, sealed)

    def _cn_packet(self, pkt: bytes) -> None:
        if pkt[6] == NH_MH and not self.cn_speaks_mh:
            self.cn_rx.append(pkt)
        elif pkt[6] == NH_MH:
            self.cn.receive_mh(self.now, pkt[40:], IPv6Address(pkt[8:24]), IPv6Address(pkt[24:40]))
        else:
            self.cn_rx.append(pkt)
        self._drain()

    def _to_host(self, packet: bytes) -> None:
        """The correspondent's packet to a host: the home agent routes NET to the router."""
        via = self.ha_routes.get(HOA.packed)
        if via is not None:
            self._ha_send(SendVia(via, packet, HOA if self.protected else None))

    def _mn_send(self, out: object) -> None:
        if isinstance(out, EspKeyed) and out.peer:  # a D-udp pair's SAs (NodeNet: the HA's)
            self.direct_keys.append(out.peer)
            return
        super()._mn_send(out)

    # UDP between router and correspondent goes straight
    def _transmit(self, sender: str, wire: Wire) -> None:
        if sender == "cn" or wire.dst[0] == str(CN):
            self.log.append((self.now, sender, wire))
            if any(rule(self.now, wire) for rule in self.rules):
                return
            target = self._mn_receive if sender == "cn" else self._cn_receive
            self.at(self.now + self.latency_s, lambda: target(wire))
            return
        super()._transmit(sender, wire)

    def _cn_receive(self, wire: Wire) -> None:
        self.cn.receive_udp(self.now, wire.payload, wire.dst, wire.src)
        self._drain()

    def _drain(self) -> None:
        super()._drain()
        if not hasattr(self, "cn"):
            return  # NodeNet's own start, before the correspondent exists
        for out in self.cn.datagrams_to_send(self.now):
            if isinstance(out, SendUdp):
                self._transmit("cn", Wire("udp", out.local, out.remote, out.payload))
            elif isinstance(out, SendNative):
                self.at(self.now + self.latency_s, lambda p=out.packet: self._to_host(p))
        while (event := self.cn.next_event()) is not None:
            self.cn_routes[event.home_address] = event


def registered_router(protected: bool) -> RouterNet:
    net = RouterNet(protected=protected)
    net.run_for(3.0)
    assert net.mn.state == "registered"
    return net


def host_sends(net: RouterNet, host: IPv6Address = HOST) -> bytes:
    """The router's data plane misses on a host's flow to CN: it tells the core."""
    key = flow_key(host.packed, CN.packed)
    net.mn.new_destination(net.now, key)
    net._drain()
    return key


@pytest.mark.parametrize("protected", [False, True])
def test_a_router_checks_a_direct_path_for_a_host_and_the_cn_sees_a_plain_peer(
    protected: bool,
) -> None:
    net = registered_router(protected)
    key = host_sends(net)
    net.run_for(5.0)

    routes = net.mn_routes.get(key)
    assert routes and routes[0].kind == "D-udp"
    assert routes[0].sealed is protected  # ESP keyed by the descriptions under protection
    assert routes[0].remote == (str(CN), CN_PORT)
    # The offer left through the home agent with the host's address as its source ...
    offers = [p for p in net.via_ha if p[6] == NH_MH]
    assert offers and all(p[8:24] == HOST.packed for p in offers)
    # ... and the correspondent holds the host's address as a peer like any home address.
    cn_view = net.cn_routes[HOST]
    assert cn_view.direct is not None and cn_view.direct[1][0] == str(net.access.ipv6)
    assert cn_view.sealed is protected
    # The router's own traffic is untouched: no correspondent of its own, no entry for CN.
    assert net.mn.correspondents() == []
    assert CN.packed not in net.mn_routes
    flows = status(net.mn, net.now).mobile_network_flows
    assert [(f.host, f.cn, f.path) for f in flows] == [(str(HOST), str(CN), "D-udp")]


def test_each_host_gets_its_own_agent_and_keys() -> None:
    net = registered_router(True)
    k1, k2 = host_sends(net, HOST), host_sends(net, HOST2)
    net.run_for(5.0)
    assert net.mn_routes[k1][0].kind == net.mn_routes[k2][0].kind == "D-udp"
    assert net.cn.selected(HOST) is not None and net.cn.selected(HOST2) is not None
    assert sorted(net.direct_keys) == sorted([k1, k2])  # one SA per flow, named by its key


def test_a_correspondent_that_refuses_the_mobility_header_ends_the_hosts_offers() -> None:
    """RFC 6275 §11.3.5: a plain correspondent answers our offer (sent from the host's
    address) with a Parameter Problem code 1; the router stops offering for that host."""
    net = registered_router(False)
    net.cn_speaks_mh = False
    key = host_sends(net)
    net.run_for(0.1)
    offer = next(p for p in net.cn_rx if p[6] == NH_MH)
    assert net.mn.host_flows() == [(HOST, CN)]
    net.mn.receive_tunnelled(net.now, refusal(offer), (str(net.access.ipv6), 0), (str(HA6), 0))
    assert net.mn.host_flows() == []
    assert net.mn.statistics()["correspondent_refused_mh_for_host"] == 1
    assert not [o for o in net.mn.datagrams_to_send(net.now) if isinstance(o, Deliver)]
    # And it stays refused: the host's flow keeps its home-path entry, no offer for minutes.
    assert net.mn_routes[key] == ()
    offers = len(net.cn_rx)
    net.run_for(300.0)
    host_sends(net)
    net.run_for(5.0)
    assert len(net.cn_rx) == offers and net.mn.host_flows() == []


def refusal(offer: bytes) -> bytes:
    """What a host without the Mobility Header answers an offer with (RFC 4443 §3.4: a
    Parameter Problem code 1 pointing at the Next Header field, offset 6)."""
    icmp = bytes([4, 1, 0, 0]) + (6).to_bytes(4, "big") + offer[:1232]
    return ipv6_packet(IPv6Address(offer[24:40]), IPv6Address(offer[8:24]), NH_ICMPV6, icmp)


def test_a_refusal_does_not_end_a_flow_with_a_working_pair() -> None:
    """A Parameter Problem is not authenticated (anyone can send one to the host's address,
    and the home agent tunnels it): a flow whose checks selected a pair keeps it, and the
    message goes on to the host."""
    net = registered_router(False)
    key = host_sends(net)
    net.run_for(5.0)
    offer = next(p for p in net.via_ha if p[6] == NH_MH)
    forged = refusal(offer)
    net.mn.receive_tunnelled(net.now, forged, (str(net.access.ipv6), 0), (str(HA6), 0))
    assert net.mn.host_flows() == [(HOST, CN)] and net.mn_routes[key][0].kind == "D-udp"
    assert [o.packet for o in net.mn.datagrams_to_send(net.now) if isinstance(o, Deliver)] == [
        forged
    ]


def test_a_correspondent_that_never_answers_ends_the_flow_and_is_not_offered_again_soon() -> None:
    """A correspondent that drops the Mobility Header silently: the flow ends when no pair
    was selected 45 s after its start, and the host's traffic stays on the home path without
    new offers (each is 1,100 octets) until the back-off is over."""
    net = registered_router(False)
    net.cn_speaks_mh = False
    key = host_sends(net)
    net.run_for(50.0)
    assert net.mn.host_flows() == []
    assert net.mn.statistics()["host_flows_unanswered"] == 1
    assert net.mn_routes[key] == ()
    offers = len(net.cn_rx)
    assert 0 < offers <= 2 * OFFER_TRIES  # at most two rounds before it gave up
    net.run_for(500.0)
    host_sends(net)
    net.run_for(5.0)
    assert len(net.cn_rx) == offers


def test_under_protection_clear_packets_from_the_home_agent_never_reach_a_host() -> None:
    """The attack: an off-path sender forges the home agent's outer and inner source and
    sends clear packets (a Mobility Header, UDP from the STUN port) to a host's address
    through the router's tunnel. Under protection only what the SA opened goes to hosts."""
    net = registered_router(True)
    coa = (str(net.access.ipv6), 0)
    for packet in (
        ipv6_packet(HA6, HOST, NH_MH, bytes([59, 1, 11, 0]) + bytes(12)),
        ipv6_packet(HA6, HOST, 17, (3478).to_bytes(2, "big") + (80).to_bytes(2, "big") + bytes(12)),
    ):
        net.mn.receive_tunnelled(net.now, packet, coa, (str(HA6), 0), protected=False)
    assert not [o for o in net.mn.datagrams_to_send(net.now) if isinstance(o, Deliver)]
    assert net.mn.statistics()["drop_clear_from_home_agent"] == 2


def test_other_packets_for_a_host_from_the_home_agent_go_to_the_host() -> None:
    """An ICMPv6 error for a host (here Packet Too Big) is the host's: delivered, so the
    kernel forwards it, not dropped as a wrong destination."""
    net = registered_router(False)
    ptb = ipv6_packet(CN, HOST, NH_ICMPV6, bytes([2, 0, 0, 0]) + (1280).to_bytes(4, "big"))
    net.mn.receive_tunnelled(net.now, ptb, (str(net.access.ipv6), 0), (str(HA6), 0))
    out = net.mn.datagrams_to_send(net.now)
    assert [o.packet for o in out if isinstance(o, Deliver)] == [ptb]
    assert "drop_tunnel_wrong_destination" not in net.mn.statistics()


def answer_from(cn: IPv6Address, host: IPv6Address) -> ExperimentalMessage:
    """A genuine-looking description from a correspondent's own engine."""
    dp = DirectPaths(controlling=True, random_bytes=bytes)
    dp.set_local_candidates(0.0, [(str(cn), CN_PORT)])
    dp.start(0.0, host)
    sig = dp.signalling_to_send()[0]
    from mipnode.wire.mh import encode_mh

    msg = decode_mh_untrusted(encode_mh(sig.message, cn, host), cn, host)
    assert isinstance(msg, ExperimentalMessage)
    return msg


def test_descriptions_for_a_host_count_only_from_a_correspondent_offered_to() -> None:
    """Nothing but the host's own traffic starts an agent for it: a description from anyone
    else (an offer a stranger makes to the host's address) is dropped and counted."""
    hp = HostPaths((NET,), random_bytes=bytes, suite=None)
    hp.set_local_candidates(0.0, [("2001:db8:1::10", 5000)], gathering=False)
    stranger = IPv6Address("2001:db8:dddd::9")
    hp.receive_signalling(0.0, HOST, stranger, answer_from(stranger, HOST))
    assert hp.flows() == [] and hp.statistics()["drop_mice_not_offered"] == 1
    assert hp.start(0.0, HOST, CN)
    hp.receive_signalling(0.0, HOST, stranger, answer_from(stranger, HOST))
    assert hp.flows() == [(HOST, CN)]
    assert hp.statistics()["drop_mice_not_offered"] == 2
    # Even the correspondent offered to cannot offer to the host (nor replace our agent):
    dp = hp.paths(HOST)
    assert dp is not None
    ufrag = dp.offer_ufrag(CN)
    hp.receive_signalling(0.0, HOST, CN, answer_from(CN, HOST))
    assert hp.statistics()["drop_mice_offer_to_host"] == 1
    assert dp.offer_ufrag(CN) == ufrag and not hp.signalling_to_send()[1:]


def test_only_hosts_of_the_routers_networks_and_only_within_bounds() -> None:
    hp = HostPaths((NET,), random_bytes=bytes, suite=None, max_hosts=2, max_flows=1)
    hp.set_local_candidates(0.0, [("2001:db8:1::10", 5000)], gathering=False)
    outsider = IPv6Address("2001:db8:dddd::9")
    assert not hp.start(0.0, outsider, CN)  # not behind this router
    assert not hp.start(0.0, HOST, IPv6Address("2001:db8:ee00:2::1"))  # inside the network
    assert hp.start(0.0, HOST, CN) and hp.start(0.0, HOST2, CN)
    assert not hp.start(0.0, IPv6Address("2001:db8:ee00:1::4"), CN)  # a third host
    assert not hp.start(0.0, HOST, IPv6Address("2001:db8:cccc::2"))  # a second flow
    stats = hp.statistics()
    assert stats["start_not_a_host_flow"] == 2
    assert stats["start_refused_hosts"] == 1 and stats["start_refused_flows"] == 1
    assert sorted(hp.flows()) == [(HOST, CN), (HOST2, CN)]
    hp.stop(0.0, HOST, CN)
    assert hp.flows() == [(HOST2, CN)] and hp.statistics()["hosts"] == 1


def test_a_host_joining_after_gathering_offers_the_server_reflexive_address_too() -> None:
    hp = HostPaths((NET,), random_bytes=bytes, suite=None)
    hp.set_local_candidates(0.0, [("10.1.0.10", 5000)], gathering=True)
    hp.add_server_reflexive(("10.1.0.10", 5000), ("203.0.113.1", 15000), "198.51.100.1")
    hp.gathering_done(0.0)
    assert hp.start(1.0, HOST, CN)
    sent = hp.signalling_to_send()
    assert len(sent) == 1 and sent[0][0] == HOST  # offered at once: gathering was over
    from mipnode.wire import mice

    items = mice.mice_from_options_untrusted(sent[0][1].message.options)
    addresses = {(str(i.address), i.port) for i in items if isinstance(i, mice.Candidate)}
    assert ("203.0.113.1", 15000) in addresses
