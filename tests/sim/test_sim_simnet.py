"""The simulator's own models, checked before any scenario relies on them: conntrack timeouts
(UDP, protocol 41 and the Mobility Header, ICMPv6), outbound-only filtering, RFC 4487 §5.1
(HAO/RH2 packets are conntrack-invalid at a stateful middlebox), NAT mapping and filtering
behaviours, link faults and seeding, the HA's STUN answers and the signalling through it."""

from __future__ import annotations

import itertools
import random
from functools import partial
from ipaddress import IPv6Address

from simnet import (
    GENERIC_TIMEOUT_S,
    HA_IP4,
    HA_IP6,
    HA_PORT,
    Address,
    Endpoint,
    HomeAgentHost,
    LinkProfile,
    Middlebox,
    Packet,
    SimNet,
    Site,
    build_world,
    nat44,
    native_facts,
    stateful_firewall,
    udp_only_to,
)

from ice import stun
from mipnode.wire.ipv6 import NH_MH, NH_UDP
from mipnode.wire.packets import echo_request, ipv6_packet, udp_in_ipv6
from tunnels.ro import add_home_address_option, add_type2_routing_header

IN = ("10.0.0.2", 5000)
OUT = ("192.0.2.9", 6000)
OTHER = ("192.0.2.10", 6000)


def rng() -> random.Random:
    return random.Random(1)


def out(box: Middlebox, now: float, src: Address = IN, dst: Address = OUT) -> Packet | None:
    return box.outbound(now, Packet(src, dst, b"x", "t"))


def back(box: Middlebox, now: float, src: Address = OUT, dst: Address = IN) -> Packet | None:
    return box.inbound(now, Packet(src, dst, b"x", "t"))


# -- stateful firewall (Linux conntrack, UDP) -----------------------------------------------------


def test_firewall_drops_unsolicited_inbound_and_admits_replies() -> None:
    fw = stateful_firewall(rng())
    assert back(fw, 0.0) is None
    assert out(fw, 1.0) is not None
    assert back(fw, 1.1) is not None
    assert back(fw, 1.2, src=OTHER) is None  # another remote port/address: no entry
    assert fw.drops["no_state"] == 2


def test_unreplied_entry_expires_after_30_s() -> None:
    fw = stateful_firewall(rng())
    out(fw, 0.0)
    out(fw, 10.0)  # refreshes: 30 s from the last packet
    assert back(fw, 39.9) is not None
    fw2 = stateful_firewall(rng())
    out(fw2, 0.0)
    assert back(fw2, 30.0) is None


def test_replied_entry_is_assured_after_2_s_and_then_lasts_120_s() -> None:
    fw = stateful_firewall(rng())
    out(fw, 0.0)
    back(fw, 0.1)  # reply seen, but the entry is young: still 30 s
    [conn] = fw.connections(0.1)
    assert not conn.assured and conn.expires == 30.1
    out(fw, 2.5)  # older than 2 s with a reply: stream, assured, 120 s
    [conn] = fw.connections(2.5)
    assert conn.assured and conn.expires == 122.5
    assert back(fw, 122.4) is not None
    assert back(fw, 242.5) is None


def test_egress_rule_blocks_udp_except_to_the_ha() -> None:
    fw = stateful_firewall(rng(), egress_rules=[udp_only_to([HA_IP6])])
    assert out(fw, 0.0, dst=(HA_IP6, HA_PORT)) is not None
    assert out(fw, 0.0) is None
    assert fw.connections(0.0)[0].remote == (HA_IP6, HA_PORT)
    mh = ipv6_packet(IPv6Address(MN6), IPv6Address(CN6), NH_MH, bytes(8))
    assert fw.outbound(0.0, Packet((MN6, 0), (CN6, 0), mh, "t", "ip6")) is not None  # not UDP


# -- protocol 41 and plain IPv6 (generic conntrack, RFC 4487 §5.1) --------------------------------

MN6 = "2001:db8:1::10"
CN6 = "2001:db8:2::10"
HOA = "2001:db8:aaaa::1"


def p41(src: str, dst: str) -> Packet:
    inner = ipv6_packet(IPv6Address(HOA), IPv6Address(HA_IP6), 59, b"")
    return Packet((src, 0), (dst, 0), inner, "t", "41")


def test_protocol_41_has_generic_state_for_600_s() -> None:
    """Outbound creates it, inbound passes only on it; Linux's generic timeout is 600 s."""
    fw = stateful_firewall(rng())
    assert fw.inbound(0.0, p41(HA_IP6, MN6)) is None  # no state yet
    assert fw.outbound(1.0, p41(MN6, HA_IP6)) is not None
    assert fw.inbound(1.1, p41(HA_IP6, MN6)) is not None
    assert fw.inbound(1.2, p41("2001:db8:9::1", MN6)) is None  # another remote
    [conn] = fw.connections(1.2, proto=41)
    assert conn.expires == 1.1 + GENERIC_TIMEOUT_S
    assert fw.inbound(1.1 + GENERIC_TIMEOUT_S - 0.1, p41(HA_IP6, MN6)) is not None
    assert fw.inbound(1.0 + 2 * GENERIC_TIMEOUT_S, p41(HA_IP6, MN6)) is None
    assert fw.connections(0.0, proto=NH_UDP) == []  # protocol 41 state is no UDP state


def test_plain_ipv6_is_tracked_by_upper_protocol_and_ports() -> None:
    """A Mobility Header has generic state; a UDP datagram inside plain IPv6 its ports."""
    fw = stateful_firewall(rng())
    mn, cn = IPv6Address(MN6), IPv6Address(CN6)
    coti = ipv6_packet(mn, cn, NH_MH, bytes(16))
    cot = ipv6_packet(cn, mn, NH_MH, bytes(24))
    assert fw.inbound(0.0, Packet((CN6, 0), (MN6, 0), cot, "t", "ip6")) is None
    assert fw.outbound(0.1, Packet((MN6, 0), (CN6, 0), coti, "t", "ip6")) is not None
    assert fw.inbound(0.2, Packet((CN6, 0), (MN6, 0), cot, "t", "ip6")) is not None
    data = udp_in_ipv6(IPv6Address(CN6), IPv6Address(MN6), 7, 9, b"x")
    assert fw.inbound(0.3, Packet((CN6, 0), (MN6, 0), data, "t", "ip6")) is None  # no UDP state
    assert native_facts(data) == (NH_UDP, 7, 9, False)


def test_hao_and_rh2_packets_are_conntrack_invalid_at_a_stateful_middlebox() -> None:
    """RFC 4487 §5.1: the checksum of an echo with a Home Address option (out) or a type 2
    routing header (back) is over the home address, not the header's address: invalid at a
    stateful firewall, both ways. A Mobility Header with an HAO (a BU) is not checksummed by
    conntrack and passes; without a middlebox everything passes."""
    fw = stateful_firewall(rng())
    hoa, mn, cn = IPv6Address(HOA), IPv6Address(MN6), IPv6Address(CN6)
    probe = echo_request(hoa, cn, 1, 1, b"nonce")
    with_hao = add_home_address_option(probe, mn.packed)
    assert native_facts(with_hao)[3]
    assert fw.outbound(0.0, Packet((MN6, 0), (CN6, 0), with_hao, "t", "ip6")) is None
    reply = add_type2_routing_header(echo_request(cn, hoa, 1, 1, b"x"), mn.packed)
    assert fw.inbound(0.1, Packet((CN6, 0), (MN6, 0), reply, "t", "ip6")) is None
    assert fw.drops["invalid"] == 2
    bu = add_home_address_option(ipv6_packet(hoa, cn, NH_MH, bytes(16)), mn.packed)
    assert fw.outbound(0.2, Packet((MN6, 0), (CN6, 0), bu, "t", "ip6")) is not None


# -- NAT44 ----------------------------------------------------------------------------------------


def test_endpoint_independent_mapping_keeps_the_port_for_every_destination() -> None:
    nat = nat44(rng(), "203.0.113.1")  # masquerade: EIM, address-and-port-dependent filtering
    a = out(nat, 0.0)
    b = out(nat, 0.0, dst=OTHER)
    assert a is not None and b is not None
    assert a.src == b.src == ("203.0.113.1", 5000)
    inbound = back(nat, 0.1, dst=a.src)
    assert inbound is not None and inbound.dst == IN
    assert back(nat, 0.1, src=("192.0.2.99", 1), dst=a.src) is None  # filtered


def test_endpoint_independent_filtering_admits_anyone_on_a_live_mapping() -> None:
    nat = nat44(rng(), "203.0.113.1", filtering="endpoint-independent")
    a = out(nat, 0.0)
    assert a is not None
    stranger = ("192.0.2.99", 1)
    pkt = back(nat, 0.1, src=stranger, dst=a.src)
    assert pkt is not None and pkt.dst == IN
    reply = out(nat, 0.2, dst=stranger)
    assert reply is not None and reply.src == a.src  # the same mapping answers
    assert back(nat, 0.1, src=stranger, dst=("203.0.113.1", 5001)) is None  # no mapping


def test_address_and_port_dependent_mapping_uses_a_new_port_per_destination() -> None:
    nat = nat44(rng(), "203.0.113.1", mapping="address-and-port-dependent")
    a, b = out(nat, 0.0), out(nat, 0.0, dst=OTHER)
    assert a is not None and b is not None
    assert a.src != b.src and a.src[0] == b.src[0] == "203.0.113.1"
    again = out(nat, 1.0)
    assert again is not None and again.src == a.src
    assert back(nat, 1.0, src=OTHER, dst=a.src) is None  # only the 5-tuple it was made for
    assert back(nat, 1.0, src=OUT, dst=a.src) is not None


def test_nat_mapping_expires_like_conntrack() -> None:
    nat = nat44(rng(), "203.0.113.1")
    a = out(nat, 0.0)
    assert a is not None
    assert back(nat, 30.0, dst=a.src) is None


# -- links and seeding ----------------------------------------------------------------------------


class Sink(Endpoint):
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[tuple[float, bytes]] = []

    def receive(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self.got.append((now, data))


A_ADDR = ("2001:db8:1::1", 1)
B_ADDR = ("2001:db8:2::1", 2)


def two_hosts(seed: int, link: LinkProfile) -> tuple[SimNet, Sink, Sink]:
    net = SimNet(seed, core=LinkProfile(latency_s=0.010))
    a, b = Sink("a"), Sink("b")
    net.attach(net.add_site(Site("a", link=link)), "2001:db8:1::1", a)
    net.attach(net.add_site(Site("b", link=LinkProfile())), "2001:db8:2::1", b)
    return net, a, b


def blast(seed: int, link: LinkProfile) -> list[tuple[float, bytes]]:
    net, a, b = two_hosts(seed, link)
    for i in range(2000):
        payload = bytes([i % 256, i // 256])
        net.at(i * 0.001, partial(net.send, a, A_ADDR, B_ADDR, payload))
    net.run_until(10)
    return b.got


def test_latency_is_the_sum_of_the_crossed_links() -> None:
    got = blast(1, LinkProfile(latency_s=0.020))
    assert len(got) == 2000
    assert abs(got[0][0] - (0.020 + 0.010 + 0.005)) < 1e-9


def test_loss_duplication_and_reordering_happen_at_the_configured_rates() -> None:
    link = LinkProfile(loss=0.1, duplicate=0.05, reorder=0.2, reorder_extra_s=0.05)
    got = blast(7, link)
    payloads = [d for _, d in got]
    unique = set(payloads)
    assert 1700 < len(unique) < 1900  # about 10 % lost
    assert 60 < len(payloads) - len(unique) < 140  # about 5 % of the rest duplicated
    order = [p[0] + 256 * p[1] for p in payloads]
    assert sum(x > y for x, y in itertools.pairwise(order)) > 100  # reordered


def test_a_seed_replays_exactly() -> None:
    link = LinkProfile(loss=0.1, duplicate=0.05, reorder=0.2, jitter_s=0.01)
    assert blast(3, link) == blast(3, link)
    assert blast(3, link) != blast(4, link)


def test_a_world_of_node_cores_replays_exactly() -> None:
    """Same seed, same wire, whether run in one go or in pieces; another seed differs."""

    def wire(seed: int, stops: list[float]) -> list[tuple[float, str, object, object, str]]:
        world = build_world(seed, mn="nat-easy", peer="fw", peer_role="mn", families="46")
        seen: list[tuple[float, str, object, object, str]] = []
        send = world.net.send

        def record(origin: Endpoint, src: Address, dst: Address, data: bytes, proto="udp"):  # type: ignore[no-untyped-def]
            seen.append((world.net.now, origin.name, src, dst, proto))
            send(origin, src, dst, data, proto)

        world.net.send = record  # type: ignore[method-assign]
        for t in stops:
            world.net.run_until(t)
        return seen

    once = wire(5, [20.0])
    assert len(once) > 200
    assert wire(5, [3.0, 7.5, 20.0]) == once
    assert wire(6, [20.0]) != once


def test_core_rules_drop_between_the_middleboxes() -> None:
    net, a, b = two_hosts(1, LinkProfile())
    net.rules.append(lambda now, pkt: pkt.dst[1] == 2)
    net.send(a, ("2001:db8:1::1", 1), ("2001:db8:2::1", 2), b"x")
    net.send(a, ("2001:db8:1::1", 1), ("2001:db8:2::1", 3), b"y")
    net.run_until(1)
    assert [d for _, d in b.got] == [b"y"] and net.stats["dropped_rule"] == 1


def test_sending_from_an_address_one_does_not_hold_is_a_violation() -> None:
    net, a, _ = two_hosts(1, LinkProfile())
    net.send(a, ("2001:db8:2::1", 1), ("2001:db8:2::1", 2), b"x")
    assert len(net.violations) == 1


# -- the HA: STUN answers and the signalling relay ------------------------------------------------


def test_ha_answers_stun_with_the_source_it_saw_and_only_large_enough_requests() -> None:
    net = SimNet(1)
    home = net.add_site(Site("home"))
    ha = HomeAgentHost(net, home, ip6=HA_IP6, ip4=HA_IP4, hoas=[])
    client = Sink("client")
    site = net.add_site(Site("nat", v4=nat44(net.rng, "203.0.113.7")))
    net.attach(site, "10.9.0.1", client)
    tid = bytes(12)
    net.send(client, ("10.9.0.1", 5000), (HA_IP4, HA_PORT), stun.binding_request(tid))
    short = stun.binding_request(b"\x01" * 12)[:20]  # a bare header: smaller than the answer
    net.send(client, ("10.9.0.1", 5000), (HA_IP4, HA_PORT), short[:2] + b"\x00\x00" + short[4:])
    net.run_until(1)
    [(_, answer)] = client.got
    msg = stun.parse_stun_untrusted(answer)
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == ("203.0.113.7", 5000)
    assert ha.node.statistics()["checks_answered"] == 1
    refused = ha.node.drops.get("stun_request_smaller_than_answer", 0)
    refused += ha.node.statistics().get("drop_stun_request_smaller_than_answer", 0)
    assert refused == 1


def test_offer_reaches_a_firewalled_mobile_node_but_not_a_firewalled_cn() -> None:
    """The offer is a Mobility Header HoA -> peer through the HA: into the second MN's tunnel
    (its firewall has state for it), plain IPv6 to the CN (its firewall has none)."""
    via_tunnel = build_world(1, mn="open", peer="fw", peer_role="mn")
    via_tunnel.net.run_until(5)
    assert via_tunnel.peer_session() is not None
    plain = build_world(1, mn="open", peer="fw", peer_role="cn")
    plain.net.run_until(5)
    assert plain.peer_session() is None
    assert plain.ha.stats["forwarded_offers"] >= 2  # sent, repeated, dropped at the CN's edge
    assert plain.peer_site.v6 is not None and plain.peer_site.v6.drops["no_state"] >= 2
    session = plain.mn_session()
    assert session is not None and session.offers_sent >= 2


def test_home_agent_forwards_only_what_its_ingress_filter_admits() -> None:
    """Data from the home address on the bound via goes out natively; the same inner packet on
    another via is the core's (a Binding Refresh Request comes back, nothing is forwarded)."""
    world = build_world(1, mn="fw", peer="fw", peer_role="cn", families="46")
    world.net.run_until(5)
    via = world.ha.via(world.mn.hoa)
    assert via is not None and via.kind == "T-native"
    world.mn.flows.clear()
    world.peer.flows.clear()
    world.net.run_until(6)
    forwarded = world.ha.stats["forwarded"]
    unbound_before = world.ha.node.statistics().get("brr_sent_other_via", 0)
    hoa, cn = IPv6Address(world.mn.hoa), IPv6Address(world.peer.identity)
    data = udp_in_ipv6(hoa, cn, 1, 2, bytes(200))
    v4 = next(h for h in world.mn.hosts if ":" not in h[0])
    world.net.send(world.mn, v4, (HA_IP4, HA_PORT), data)  # T-udp: not its via
    world.net.run_until(6.1)
    assert world.net.violations == []
    assert world.ha.stats["forwarded"] == forwarded
    assert world.ha.node.statistics().get("brr_sent_other_via", 0) == unbound_before + 1
    world.net.send(world.mn, (world.mn.hosts[0][0], 0), (HA_IP6, 0), data, "41")  # its via
    world.net.run_until(6.2)
    assert world.ha.stats["forwarded"] == forwarded + 1
