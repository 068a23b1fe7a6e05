"""Per-flow D-native admission (mipnode/core/flows.py): flow keys in both directions, in the
plain and the route-optimised wire forms, rejection of bad bytes, and the bounded table on
virtual time."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.core.flows import (
    FLOW_IDLE_S,
    MAX_FLOWS,
    NO_ID,
    CnOpenedFlows,
    FlowKey,
    FlowTable,
    flow_key_untrusted,
    opened_by_cn_untrusted,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_FRAGMENT, NH_HOPOPTS, build_ipv6_packet
from tunnels.ro import add_home_address_option, add_type2_routing_header

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:a::2")
CN = IPv6Address("2001:db8:c::2")
OTHER_HOA = IPv6Address("2001:db8:1::200")
TCP, UDP, ICMPV6 = 6, 17, 58
SYN, ACK = 0x02, 0x10
FUZZ = settings(max_examples=400, deadline=None, derandomize=True)


def tcp(src: IPv6Address, dst: IPv6Address, sport: int, dport: int, flags: int = ACK) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    return build_ipv6_packet(src, dst, TCP, header + b"data")


def udp(src: IPv6Address, dst: IPv6Address, sport: int, dport: int) -> bytes:
    return build_ipv6_packet(src, dst, UDP, struct.pack("!HHHH", sport, dport, 12, 0) + b"abcd")


def echo(src: IPv6Address, dst: IPv6Address, icmp_type: int, ident: int, seq: int = 1) -> bytes:
    body = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + b"ping"
    return build_ipv6_packet(src, dst, ICMPV6, body)


def from_mn(packet: bytes) -> FlowKey:
    return flow_key_untrusted(packet, from_mn=True)


def to_mn(packet: bytes) -> FlowKey:
    return flow_key_untrusted(packet, from_mn=False)


# -- flow keys -------------------------------------------------------------------------------


def test_a_tcp_flow_has_the_same_key_in_both_directions() -> None:
    out = from_mn(tcp(HOA, CN, 40000, 443))
    back = to_mn(tcp(CN, HOA, 443, 40000))
    assert out == back == FlowKey(HOA.packed, TCP, 443, 40000)


def test_udp_flows_are_keyed_by_protocol_and_both_ports() -> None:
    key = from_mn(udp(HOA, CN, 5353, 7000))
    assert key == to_mn(udp(CN, HOA, 7000, 5353)) == FlowKey(HOA.packed, UDP, 7000, 5353)
    assert key != from_mn(tcp(HOA, CN, 5353, 7000))  # same ports, other protocol
    assert key != to_mn(udp(CN, HOA, 7000, 5354))  # another MN port
    assert key != to_mn(udp(CN, OTHER_HOA, 7000, 5353))  # another home address


def test_an_echo_the_mn_requested_matches_its_reply_in_either_direction() -> None:
    request = from_mn(echo(HOA, CN, 128, 0x1234))
    reply = to_mn(echo(CN, HOA, 129, 0x1234, seq=7))
    assert request == reply == FlowKey(HOA.packed, ICMPV6, NO_ID, 0x1234)


def test_an_echo_the_cn_requested_is_another_flow_even_with_the_same_identifier() -> None:
    cn_request = to_mn(echo(CN, HOA, 128, 0x1234))
    mn_reply = from_mn(echo(HOA, CN, 129, 0x1234))
    assert cn_request == mn_reply == FlowKey(HOA.packed, ICMPV6, 0x1234, NO_ID)
    assert cn_request != from_mn(echo(HOA, CN, 128, 0x1234))


def test_the_route_optimised_forms_have_the_keys_of_the_plain_packets() -> None:
    # From the MN: CoA -> CN with a Home Address option naming the HoA (RFC 6275 §6.3).
    plain_out = tcp(HOA, CN, 40000, 443)
    with_hao = add_home_address_option(plain_out, COA.packed)
    assert with_hao[6] == NH_DSTOPTS and with_hao[8:24] == COA.packed
    assert from_mn(with_hao) == from_mn(plain_out)
    # To the MN: CN -> CoA with a type 2 routing header naming the HoA (§6.4).
    plain_back = echo(CN, HOA, 129, 0x42)
    with_rh2 = add_type2_routing_header(plain_back, COA.packed)
    assert with_rh2[24:40] == COA.packed
    assert to_mn(with_rh2) == to_mn(plain_back) == FlowKey(HOA.packed, ICMPV6, NO_ID, 0x42)


def test_other_headers_in_front_are_walked() -> None:
    hop_by_hop = bytes((UDP, 0, 1, 4, 0, 0, 0, 0))  # PadN
    packet = build_ipv6_packet(HOA, CN, NH_HOPOPTS, hop_by_hop + struct.pack("!HHHH", 1, 2, 8, 0))
    assert from_mn(packet) == FlowKey(HOA.packed, UDP, 2, 1)


def test_other_protocols_are_keyed_by_the_protocol_alone() -> None:
    gre = build_ipv6_packet(HOA, CN, 47, b"\x00" * 8)
    assert from_mn(gre) == FlowKey(HOA.packed, 47, NO_ID, NO_ID)
    unreachable = build_ipv6_packet(CN, HOA, ICMPV6, bytes((1, 4, 0, 0)) + b"\x00" * 44)
    assert to_mn(unreachable) == FlowKey(HOA.packed, ICMPV6, NO_ID, NO_ID)
    assert from_mn(build_ipv6_packet(HOA, CN, 59, b"")) == FlowKey(HOA.packed, 59, NO_ID, NO_ID)


def test_a_first_fragment_has_its_ports_a_later_one_only_its_protocol() -> None:
    ports = struct.pack("!HHHH", 5000, 6000, 100, 0)
    first = build_ipv6_packet(HOA, CN, NH_FRAGMENT, struct.pack("!BBHI", UDP, 0, 1, 9) + ports)
    later = build_ipv6_packet(
        HOA, CN, NH_FRAGMENT, struct.pack("!BBHI", UDP, 0, 185 << 3, 9) + b"x" * 8
    )
    assert from_mn(first) == FlowKey(HOA.packed, UDP, 6000, 5000)
    assert from_mn(later) == FlowKey(HOA.packed, UDP, NO_ID, NO_ID)


def test_link_layer_padding_after_the_payload_is_ignored() -> None:
    assert from_mn(udp(HOA, CN, 1, 2) + b"\x00" * 6) == from_mn(udp(HOA, CN, 1, 2))


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "truncated"),
        (b"\x60" + b"\x00" * 38, "truncated"),
        (b"\x40" + b"\x00" * 39, "bad_version"),
        (udp(HOA, CN, 1, 2)[:-1], "bad_length"),
        (build_ipv6_packet(HOA, CN, TCP, b"\x00\x50"), "truncated"),
        (build_ipv6_packet(HOA, CN, UDP, b"\x00\x50\x00"), "truncated"),
        (build_ipv6_packet(HOA, CN, ICMPV6, bytes((128, 0, 0, 0, 0x12))), "truncated"),
        (build_ipv6_packet(HOA, CN, NH_DSTOPTS, bytes((UDP, 0, 1, 4))), "truncated"),
        (build_ipv6_packet(HOA, CN, NH_DSTOPTS, bytes((UDP, 1, 1, 4, 0, 0, 0, 0))), "truncated"),
        # A Home Address option of the wrong length (RFC 6275 §6.3: 16).
        (
            build_ipv6_packet(COA, CN, NH_DSTOPTS, bytes((UDP, 0, 0xC9, 4, 0, 0, 0, 0)) + b"x" * 8),
            "bad_option",
        ),
        # Nine destination options headers in a row.
        (
            build_ipv6_packet(
                HOA, CN, NH_DSTOPTS, bytes((NH_DSTOPTS, 0, 1, 4, 0, 0, 0, 0)) * 9 + b"\x00" * 8
            ),
            "bad_exthdr",
        ),
    ],
)
def test_bad_bytes_raise_bad_packet_with_a_reason(packet: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as exc:
        from_mn(packet)
    assert exc.value.reason == reason


def test_a_malformed_type_2_routing_header_raises_bad_packet() -> None:
    rh2 = bytearray(add_type2_routing_header(echo(CN, HOA, 129, 1), COA.packed))
    rh2[40 + 3] = 5  # Segments Left 5 (RFC 6275 §6.4.1: 1)
    with pytest.raises(BadPacket) as exc:
        to_mn(bytes(rh2))
    assert exc.value.reason == "bad_segments_left"


GOLDENS = [
    tcp(HOA, CN, 40000, 443),
    add_home_address_option(udp(HOA, CN, 1, 2), COA.packed),
    add_type2_routing_header(echo(CN, HOA, 128, 9), COA.packed),
]


def every_parser(data: bytes) -> None:
    """Each parser returns its result or raises BadPacket, nothing else."""
    for direction in (True, False):
        with contextlib.suppress(BadPacket):
            assert isinstance(flow_key_untrusted(data, from_mn=direction), FlowKey)
    with contextlib.suppress(BadPacket):
        assert opened_by_cn_untrusted(data) in (None, flow_key_untrusted(data, from_mn=False))


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_give_a_key_or_bad_packet(data: bytes) -> None:
    every_parser(data)


@FUZZ
@given(
    st.sampled_from(GOLDENS),
    st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), max_size=4),
    st.integers(0, 200),
)
def test_mutated_packets_give_a_key_or_bad_packet(
    golden: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(golden)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    every_parser(bytes(data[: len(data) - cut % 8]))


# -- flows the correspondent opens (the MN side) ---------------------------------------------


def test_a_syn_from_the_cn_opens_a_flow_keyed_like_the_mns_answers() -> None:
    opened = opened_by_cn_untrusted(tcp(CN, HOA, 50000, 22, SYN))
    assert opened == from_mn(tcp(HOA, CN, 22, 50000, SYN | ACK))


def test_an_echo_request_from_the_cn_opens_the_flow_of_the_mns_replies() -> None:
    opened = opened_by_cn_untrusted(echo(CN, HOA, 128, 0x77))
    assert opened == from_mn(echo(HOA, CN, 129, 0x77))


@pytest.mark.parametrize(
    "packet",
    [
        tcp(CN, HOA, 443, 40000, SYN | ACK),  # the answer to the MN's own SYN
        tcp(CN, HOA, 443, 40000, ACK),
        echo(CN, HOA, 129, 0x77),  # the reply to the MN's own echo
        udp(CN, HOA, 53, 5353),  # any first UDP packet creates firewall state
        build_ipv6_packet(CN, HOA, ICMPV6, b""),
    ],
)
def test_other_packets_from_the_cn_open_nothing(packet: bytes) -> None:
    assert opened_by_cn_untrusted(packet) is None


def test_a_truncated_tcp_header_from_the_cn_raises_bad_packet() -> None:
    short = build_ipv6_packet(CN, HOA, TCP, struct.pack("!HHII", 1, 2, 0, 0))
    with pytest.raises(BadPacket):
        opened_by_cn_untrusted(short)


def _opens(packet: bytes) -> FlowKey | None:
    with contextlib.suppress(BadPacket):
        return opened_by_cn_untrusted(packet)
    return None


@FUZZ
@given(
    st.sampled_from(
        [
            *GOLDENS,
            tcp(CN, HOA, 50000, 22, SYN),
            tcp(CN, HOA, 443, 40000, SYN | ACK),
            echo(CN, HOA, 128, 0x77),
            udp(CN, HOA, 53, 5353),
        ]
    ),
    st.lists(st.tuples(st.sampled_from([6, 40, 53, 54, 60, 93]), st.integers(0, 255)), max_size=3),
    st.integers(0, 60),
)
def test_the_mns_quick_look_records_exactly_what_the_walk_finds(
    golden: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    """CnOpenedFlows.note_untrusted decides most packets from octet 6 and the TCP flags before
    any walk: it must record exactly the flows the full parse says they open."""
    data = bytearray(golden)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    packet = bytes(data[: max(0, len(data) - cut)])
    flows = CnOpenedFlows()
    flows.note_untrusted(0.0, packet)
    key = _opens(packet)
    assert flows.table.recorded == (key is not None)
    if key is not None:
        assert flows.table.is_live(0.0, key)


# -- the table, on virtual time --------------------------------------------------------------

A = FlowKey(HOA.packed, TCP, 443, 40000)
B = FlowKey(HOA.packed, UDP, 53, 5353)
C = FlowKey(OTHER_HOA.packed, ICMPV6, NO_ID, 1)
D = FlowKey(HOA.packed, ICMPV6, 9, NO_ID)


def test_a_recorded_flow_is_live_until_idle_for_the_idle_time() -> None:
    table = FlowTable()
    assert not table.is_live(0.0, A)
    table.record(100.0, A)
    assert table.is_live(100.0 + FLOW_IDLE_S, A)
    assert not table.is_live(100.0 + FLOW_IDLE_S + 0.001, A)
    assert len(table) == 0 and table.expired == 1
    assert not table.is_live(100.0 + FLOW_IDLE_S, A)  # gone for good until recorded again


def test_each_packet_of_the_flow_extends_its_life() -> None:
    table = FlowTable(idle_s=10.0)
    for now in (0.0, 8.0, 16.0, 24.0):
        table.record(now, A)
    assert table.is_live(34.0, A)
    assert not table.is_live(34.5, A)


def test_expired_flows_are_swept_when_others_are_recorded() -> None:
    table = FlowTable(idle_s=10.0)
    table.record(0.0, A)
    table.record(5.0, B)
    table.record(12.0, C)  # A is past its time, B not yet
    assert len(table) == 2 and table.expired == 1
    assert table.statistics(16.0) == {
        "flows": 1,
        "max_flows": MAX_FLOWS,
        "recorded": 3,
        "evicted": 0,
        "expired": 2,
    }


def test_the_table_is_bounded_and_evicts_the_least_recently_refreshed() -> None:
    table = FlowTable(max_flows=3)
    table.record(1.0, A)
    table.record(2.0, B)
    table.record(3.0, C)
    table.record(4.0, A)  # refreshed: B is the oldest now
    table.record(5.0, D)
    assert len(table) == 3 and table.evicted == 1
    assert [table.is_live(5.0, k) for k in (A, B, C, D)] == [True, False, True, True]


def test_the_default_bound_holds_under_many_flows() -> None:
    table = FlowTable()
    for port in range(MAX_FLOWS + 100):
        table.record(1.0, FlowKey(HOA.packed, UDP, 53, port))
    assert len(table) == MAX_FLOWS and table.evicted == 100
    assert not table.is_live(1.0, FlowKey(HOA.packed, UDP, 53, 0))
    assert table.is_live(1.0, FlowKey(HOA.packed, UDP, 53, MAX_FLOWS + 99))


def test_forgetting_a_home_address_drops_only_its_flows() -> None:
    table = FlowTable()
    for key in (A, B, C):
        table.record(1.0, key)
    assert table.live_flows(1.0, HOA.packed) == 2
    assert table.forget(HOA.packed) == 2
    assert table.live_flows(1.0, HOA.packed) == 0
    assert table.is_live(1.0, C)


def test_live_flows_does_not_count_expired_ones() -> None:
    table = FlowTable(idle_s=10.0)
    table.record(0.0, A)
    table.record(8.0, B)
    assert table.live_flows(9.0, HOA.packed) == 2
    assert table.live_flows(15.0, HOA.packed) == 1


@pytest.mark.parametrize(("max_flows", "idle_s"), [(0, 30.0), (10, 0.0), (10, float("nan"))])
def test_a_table_needs_room_and_a_positive_idle_time(max_flows: int, idle_s: float) -> None:
    with pytest.raises(ValueError, match="flow table"):
        FlowTable(max_flows=max_flows, idle_s=idle_s)
