"""Our codecs against hand-written golden bytes (tests/wire/wire_goldens.py), both directions."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
import wire_goldens as g

from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    mn_ha_authenticator,
    ntp_from_unix,
    unix_from_ntp,
    verify_mh_authenticated,
)
from mipnode.wire.exthdr import (
    DestinationOptions,
    HomeAddressOption,
    RoutingHeaderType2,
    build_hao_header,
    build_packet_with_hao,
    build_packet_with_rh2,
    build_rh2_header,
    parse_destination_options_untrusted,
    parse_rh2_untrusted,
    pseudo_header_addresses_untrusted,
)
from mipnode.wire.icmpv6 import EchoMessage, build_echo, parse_echo_untrusted
from mipnode.wire.ipv6 import (
    NH_DSTOPTS,
    NH_ICMPV6,
    NH_MH,
    NH_ROUTING,
    IPv6Header,
    build_ipv6_packet,
    internet_checksum,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
    upper_layer_checksum,
)
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BeStatus,
    BindingAck,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    MesgId,
    MnHaAuth,
    MobilityMessage,
    Pad1,
    PadN,
    decode_mh_untrusted,
    encode_mh,
)
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted
from tunnels.ip6ip6 import decapsulate_untrusted, encapsulate
from tunnels.udp import build_udp_ipv4, build_udp_ipv6

ALT_COA = AlternateCareOfAddress(g.COA)
NTP_EPOCH_PLUS_HALF = 0x83AA7E80_80000000

# (golden, message, pseudo-header src, dst)
MH_CASES: list[tuple[str, bytes, MobilityMessage, IPv6Address, IPv6Address]] = [
    ("brr", g.BRR, BindingRefreshRequest(), g.HA, g.HOA),
    (
        "bu_home",
        g.BU_HOME,
        BindingUpdate(sequence=4242, lifetime=100, ack=True, home=True, options=(ALT_COA,)),
        g.HOA,
        g.HA,
    ),
    ("bu_minimal", g.BU_MINIMAL, BindingUpdate(sequence=1, lifetime=150), g.HOA, g.HA),
    (
        "bu_all_flags",
        g.BU_ALL_FLAGS,
        BindingUpdate(
            sequence=0xFFFF,
            lifetime=0xFFFF,
            ack=True,
            home=True,
            link_local=True,
            key_mgmt=True,
            force_udp=True,
        ),
        g.HOA,
        g.HA,
    ),
    (
        "ba_bra",
        g.BA_WITH_BRA,
        BindingAck(
            status=BaStatus.ACCEPTED,
            sequence=4242,
            lifetime=100,
            key_mgmt=True,
            options=(BindingRefreshAdvice(50),),
        ),
        g.HA,
        g.HOA,
    ),
    (
        "ba_plain",
        g.BA_PLAIN,
        BindingAck(status=0, sequence=4242, lifetime=100, key_mgmt=True),
        g.HA,
        g.HOA,
    ),
    (
        "be",
        g.BE,
        BindingError(status=BeStatus.UNKNOWN_BINDING_FOR_HOME_ADDRESS_OPTION, home_address=g.HOA),
        g.CN,
        g.HOA,
    ),
]


@pytest.mark.parametrize(
    ("golden", "msg", "src", "dst"), [c[1:] for c in MH_CASES], ids=[c[0] for c in MH_CASES]
)
def test_mh_golden_both_ways(
    golden: bytes, msg: MobilityMessage, src: IPv6Address, dst: IPv6Address
) -> None:
    assert g.ref_upper_ok(src, dst, NH_MH, golden)
    assert decode_mh_untrusted(golden, src, dst) == msg
    assert encode_mh(msg, src, dst) == golden


def test_mh_golden_with_explicit_padding() -> None:
    expected = BindingAck(
        status=BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW,
        sequence=7,
        lifetime=0,
        options=(BindingRefreshAdvice(10),),
    )
    assert g.ref_upper_ok(g.HA, g.HOA, NH_MH, g.BA_PADDED)
    assert decode_mh_untrusted(g.BA_PADDED, g.HA, g.HOA) == expected
    with_padding = BindingAck(
        status=135, sequence=7, lifetime=0, options=(Pad1(), PadN(3), BindingRefreshAdvice(10))
    )
    assert encode_mh(with_padding, g.HA, g.HOA) == g.BA_PADDED


def test_authenticated_bu_golden() -> None:
    assert g.ref_mn_ha_auth(g.KEY, g.COA, g.HOA, g.BU_AUTH_MH_DATA) == g.BU_AUTH_AUTHENTICATOR
    assert g.ref_upper_ok(g.HOA, g.HA, NH_MH, g.BU_AUTH)
    assert mn_ha_authenticator(g.KEY, g.COA, g.HOA, g.BU_AUTH_MH_DATA) == g.BU_AUTH_AUTHENTICATOR
    bu = BindingUpdate(
        sequence=5,
        lifetime=150,
        ack=True,
        home=True,
        options=(ALT_COA, MesgId(NTP_EPOCH_PLUS_HALF)),
    )
    encoded = encode_mh_authenticated(bu, g.HOA, g.HA, spi=g.SPI, key=g.KEY, coa=g.COA, hoa=g.HOA)
    assert encoded == g.BU_AUTH
    decoded = decode_mh_untrusted(g.BU_AUTH, g.HOA, g.HA)
    assert decoded == BindingUpdate(
        sequence=5,
        lifetime=150,
        ack=True,
        home=True,
        options=(
            ALT_COA,
            MesgId(NTP_EPOCH_PLUS_HALF),
            MnHaAuth(spi=g.SPI, authenticator=g.BU_AUTH_AUTHENTICATOR, subtype=1),
        ),
    )
    assert verify_mh_authenticated(g.BU_AUTH, key=g.KEY, coa=g.COA, hoa=g.HOA)
    # Encoding the decoded message (auth option included) reproduces the golden too.
    assert encode_mh(decoded, g.HOA, g.HA) == g.BU_AUTH


def test_authenticated_bu_rejects_any_flipped_bit() -> None:
    for index in range(len(g.BU_AUTH)):
        if index in (4, 5):  # the checksum is not covered by the authenticator
            continue
        mutated = bytearray(g.BU_AUTH)
        mutated[index] ^= 0x01
        assert not verify_mh_authenticated(bytes(mutated), key=g.KEY, coa=g.COA, hoa=g.HOA)


def test_ntp_golden() -> None:
    assert ntp_from_unix(0.5) == NTP_EPOCH_PLUS_HALF
    assert unix_from_ntp(NTP_EPOCH_PLUS_HALF) == 0.5
    # 2036-02-07T06:28:16Z is NTP second 2**32, i.e. era 1 second 0 (RFC 4330 §3).
    assert ntp_from_unix(2085978496.0) == 0
    assert unix_from_ntp(0) == 2085978496.0


def test_hao_and_rh2_headers_golden() -> None:
    assert build_hao_header(NH_MH, g.HOA) == g.HAO_HEADER
    assert parse_destination_options_untrusted(g.HAO_HEADER) == DestinationOptions(
        NH_MH, (HomeAddressOption(g.HOA),)
    )
    assert build_rh2_header(NH_MH, g.HOA) == g.RH2_HEADER
    assert RoutingHeaderType2(NH_MH, g.HOA).to_bytes() == g.RH2_HEADER
    assert parse_rh2_untrusted(g.RH2_HEADER) == RoutingHeaderType2(NH_MH, g.HOA, 1)


def test_bu_with_hao_packet_golden() -> None:
    bu = decode_mh_untrusted(g.BU_HOME, g.HOA, g.HA)
    assert (
        build_packet_with_hao(g.COA, g.HA, g.HOA, NH_MH, encode_mh(bu, g.HOA, g.HA))
        == g.PACKET_BU_HAO
    )
    packet = parse_ipv6_packet_untrusted(g.PACKET_BU_HAO)
    assert packet.header == IPv6Header(g.COA, g.HA, NH_DSTOPTS, 56)
    assert [e.header_type for e in packet.extension_headers] == [NH_DSTOPTS]
    assert packet.upper_protocol == NH_MH
    assert packet.upper_offset == 64
    assert packet.payload == g.BU_HOME
    assert pseudo_header_addresses_untrusted(packet) == (g.HOA, g.HA)


def test_ba_with_rh2_packet_golden() -> None:
    ba = BindingAck(status=0, sequence=4242, lifetime=100, key_mgmt=True)
    assert (
        build_packet_with_rh2(g.HA, g.COA, g.HOA, NH_MH, encode_mh(ba, g.HA, g.HOA))
        == g.PACKET_BA_RH2
    )
    packet = parse_ipv6_packet_untrusted(g.PACKET_BA_RH2)
    assert packet.header == IPv6Header(g.HA, g.COA, NH_ROUTING, 40)
    assert packet.payload == g.BA_PLAIN
    assert pseudo_header_addresses_untrusted(packet) == (g.HA, g.HOA)
    # With the on-wire addresses the checksum would be 0x4fca (reference/linux.md §6).
    zeroed = g.BA_PLAIN[:4] + b"\x00\x00" + g.BA_PLAIN[6:]
    assert upper_layer_checksum(g.HA, g.COA, NH_MH, zeroed) == 0x4FCA
    assert upper_layer_checksum(g.HA, g.HOA, NH_MH, zeroed) == 0x4F2A


def test_echo_golden() -> None:
    assert build_echo(g.HOA, g.CN, 0x1234, 1, b"ping") == g.ECHO_REQUEST
    assert parse_echo_untrusted(g.ECHO_REQUEST) == EchoMessage(
        g.HOA, g.CN, 0x1234, 1, b"ping", reply=False
    )
    reply = build_echo(g.CN, g.HOA, 0x1234, 1, b"ping", reply=True)
    assert reply == build_ipv6_packet(g.CN, g.HOA, NH_ICMPV6, g.ECHO_REPLY_ICMP)
    assert parse_echo_untrusted(reply).reply


def test_ip6ip6_golden() -> None:
    assert encapsulate(g.COA, g.HA, g.ECHO_REQUEST) == g.IP6IP6
    outer, inner = decapsulate_untrusted(g.IP6IP6)
    assert outer == IPv6Header(g.COA, g.HA, 41, 52)
    assert inner == g.ECHO_REQUEST


def test_udp_encapsulation_golden() -> None:
    assert build_udp_ipv6(g.COA, g.HA, 4191, 4191, g.ECHO_REQUEST) == g.UDP6_ENCAP
    assert build_udp_ipv4(g.V4_SRC, g.V4_DST, 4191, 4191, g.ECHO_REQUEST) == g.UDP4_ENCAP
    assert g.ref_checksum(g.UDP4_ENCAP[:20]) == 0
    assert g.ref_upper_ok(g.COA, g.HA, 17, g.UDP6_ENCAP[40:])


def test_demux_golden() -> None:
    assert classify_udp_payload_untrusted(g.UDP6_ENCAP[48:]) is UdpPayloadKind.IPV6
    assert classify_udp_payload_untrusted(g.STUN_BINDING_REQUEST) is UdpPayloadKind.STUN


def test_ipv6_header_golden() -> None:
    header = parse_ipv6_header_untrusted(g.ECHO_REQUEST)
    assert header == IPv6Header(g.HOA, g.CN, NH_ICMPV6, 12, hop_limit=64)
    assert header.to_bytes() == g.ECHO_REQUEST[:40]
    assert internet_checksum(g.UDP4_ENCAP[:20]) == 0
