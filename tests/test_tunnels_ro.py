"""HAO / RH2 rewrites: inverse of each other, checksums untouched, and judged by scapy."""

from __future__ import annotations

import contextlib
import warnings
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import build_packet_with_hao, build_packet_with_rh2
from mipnode.wire.icmpv6 import build_echo
from tunnels.ro import (
    add_home_address_option,
    add_type2_routing_header,
    can_route_optimise,
    remove_home_address_option_untrusted,
    remove_type2_routing_header_untrusted,
)

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:a::2")
CN = IPv6Address("2001:db8:c::2")


def test_hao_insertion_matches_the_reference_builder_and_round_trips() -> None:
    echo = build_echo(HOA, CN, 7, 1, b"payload")
    with_hao = add_home_address_option(echo, COA.packed)
    # Same bytes as building the packet with the HAO from scratch (exthdr, hand goldens).
    assert with_hao == build_packet_with_hao(COA, CN, HOA, 58, echo[40:])
    coa, hoa, back = remove_home_address_option_untrusted(with_hao)
    assert (coa, hoa, back) == (COA.packed, HOA.packed, echo)


def test_rh2_insertion_matches_the_reference_builder_and_round_trips() -> None:
    echo = build_echo(CN, HOA, 7, 1, b"payload", reply=True)
    with_rh2 = add_type2_routing_header(echo, COA.packed)
    assert with_rh2 == build_packet_with_rh2(CN, COA, HOA, 58, echo[40:])
    hoa, back = remove_type2_routing_header_untrusted(with_rh2)
    assert (hoa, back) == (HOA.packed, echo)


def test_scapy_sees_a_valid_icmpv6_checksum_under_the_mipv6_rules() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.layers.inet6 import IPv6

    echo = build_echo(HOA, CN, 7, 1, b"x" * 10)
    # scapy 2.8 ignores an HAO that follows PadN in its checksum (see tests/wire), so the
    # check is that the ICMPv6 octets, checksum included, are exactly the original ones.
    pkt = IPv6(add_home_address_option(echo, COA.packed))
    assert pkt.src == str(COA) and pkt.dst == str(CN)
    assert bytes(pkt.payload.payload) == echo[40:]  # ICMPv6 bytes (and checksum) unchanged


@pytest.mark.parametrize("first", [0, 43, 44, 60])
def test_packets_with_extension_headers_keep_the_tunnel(first: int) -> None:
    echo = bytearray(build_echo(HOA, CN, 1, 1, b""))
    echo[6] = first
    assert not can_route_optimise(bytes(echo))
    assert can_route_optimise(build_echo(HOA, CN, 1, 1, b""))


def test_rh2_with_segments_left_zero_or_other_type_is_refused() -> None:
    pkt = bytearray(add_type2_routing_header(build_echo(CN, HOA, 1, 1, b""), COA.packed))
    pkt[43] = 0
    with pytest.raises(BadPacket) as info:
        remove_type2_routing_header_untrusted(bytes(pkt))
    assert info.value.reason == "bad_segments_left"
    pkt[43], pkt[42] = 1, 0
    with pytest.raises(BadPacket) as info:
        remove_type2_routing_header_untrusted(bytes(pkt))
    assert info.value.reason == "bad_routing_type"


def test_a_destination_option_besides_the_hao_is_refused() -> None:
    pkt = bytearray(add_home_address_option(build_echo(HOA, CN, 1, 1, b""), COA.packed))
    pkt[42] = 0x1E  # PadN's type octet becomes an unknown option
    with pytest.raises(BadPacket) as info:
        remove_home_address_option_untrusted(bytes(pkt))
    assert info.value.reason == "unexpected_destination_option"


@given(st.binary(max_size=120))
def test_arbitrary_bytes_give_a_packet_or_bad_packet(data: bytes) -> None:
    for parse in (remove_home_address_option_untrusted, remove_type2_routing_header_untrusted):
        with contextlib.suppress(BadPacket):
            parse(data)


@given(st.integers(min_value=0, max_value=79))
def test_every_prefix_is_rejected(cut: int) -> None:
    hao = add_home_address_option(build_echo(HOA, CN, 1, 1, b"abcdefgh"), COA.packed)
    rh2 = add_type2_routing_header(build_echo(CN, HOA, 1, 1, b"abcdefgh"), COA.packed)
    assert len(hao) == len(rh2) == 80
    with pytest.raises(BadPacket):
        remove_home_address_option_untrusted(hao[:cut])
    with pytest.raises(BadPacket):
        remove_type2_routing_header_untrusted(rh2[:cut])
