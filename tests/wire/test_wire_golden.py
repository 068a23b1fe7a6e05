"""Our codecs against hand-written golden bytes (tests/wire/wire_goldens.py), both directions."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from ipaddress import IPv4Address, IPv6Address

import pytest
import wire_goldens as g
from encap import build_udp_ipv4, decapsulate_untrusted, encapsulate

from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    mn_ha_authenticator,
    ntp_from_unix,
    unix_from_ntp,
    verify_mh_authenticated,
)
from mipnode.wire.bad import binding_authenticator, encode_mh_with_bad, verify_bad
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
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    ExperimentalMessage,
    ExperimentalOption,
    HomeTest,
    HomeTestInit,
    MesgId,
    MnHaAuth,
    MobilityMessage,
    NonceIndices,
    Pad1,
    PadN,
    decode_mh_untrusted,
    encode_mh,
)
from mipnode.wire.mice import (
    Candidate,
    Credentials,
    EndOfCandidates,
    MiceItem,
    decode_mice_untrusted,
    encode_mice,
    mice_from_options_untrusted,
    mice_options,
)
from mipnode.wire.packets import udp_in_ipv6 as build_udp_ipv6
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted

ALT_COA = AlternateCareOfAddress(g.COA)
NTP_EPOCH_PLUS_HALF = 0x83AA7E80_80000000
HOME_COOKIE = bytes.fromhex(g.HOME_COOKIE_HEX)
CARE_OF_COOKIE = bytes.fromhex(g.CARE_OF_COOKIE_HEX)
HOME_TOKEN = bytes.fromhex(g.HOME_TOKEN_HEX)
CARE_OF_TOKEN = bytes.fromhex(g.CARE_OF_TOKEN_HEX)
BU_RR = BindingUpdate(sequence=6, lifetime=105, ack=True, options=(NonceIndices(258, 259),))
BA_RR = BindingAck(status=BaStatus.ACCEPTED, sequence=6, lifetime=105)
MICE_ITEMS: tuple[MiceItem, ...] = (
    Credentials("mn01", "abcdefghijklmnopqrstuv+/"),
    Candidate("1", 2130706431, "host", IPv4Address("192.0.2.10"), 4191),
    Candidate("s6", 0x64FFFFFF, "srflx", g.COA, 40000),
    EndOfCandidates(),
)

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
    ("hoti", g.HOTI, HomeTestInit(HOME_COOKIE), g.HOA, g.CN),
    ("coti", g.COTI, CareOfTestInit(CARE_OF_COOKIE), g.COA, g.CN),
    ("hot", g.HOT, HomeTest(258, HOME_COOKIE, HOME_TOKEN), g.CN, g.HOA),
    ("cot", g.COT, CareOfTest(259, CARE_OF_COOKIE, CARE_OF_TOKEN), g.CN, g.COA),
    ("experimental_empty", g.EXPERIMENTAL_EMPTY, ExperimentalMessage(), g.HOA, g.CN),
    (
        "experimental_mice",
        g.EXPERIMENTAL_MICE,
        ExperimentalMessage(options=(ExperimentalOption(g.MICE),)),
        g.HOA,
        g.CN,
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


def mobility_data_by_hand(mh: bytes) -> bytes:
    """RFC 6275 §6.2.7 "care-of address | correspondent | MH Data", assembled without mipnode:
    the whole MH, checksum octets zeroed, the final 12 (the Authenticator field) left out."""
    return g.COA.packed + g.CN.packed + mh[:4] + b"\x00\x00" + mh[6:-12]


@pytest.mark.parametrize(
    ("golden", "mh_data", "msg", "src", "dst"),
    [
        (g.BU_RR, g.BU_RR_MH_DATA, BU_RR, g.HOA, g.CN),
        (g.BA_RR, g.BA_RR_MH_DATA, BA_RR, g.CN, g.HOA),
    ],
    ids=["bu", "ba"],
)
def test_binding_authorization_golden(
    golden: bytes,
    mh_data: bytes,
    msg: BindingUpdate | BindingAck,
    src: IPv6Address,
    dst: IPv6Address,
) -> None:
    expected = hmac.new(g.KBM, mobility_data_by_hand(golden), hashlib.sha1).digest()[:12]
    assert golden[-12:] == expected
    assert mh_data == golden[:4] + b"\x00\x00" + golden[6:-12]
    assert golden[-14:-12] == bytes((5, 12))  # BAD type and length, the option ends the MH
    assert g.ref_upper_ok(src, dst, NH_MH, golden)
    assert binding_authenticator(g.KBM, g.COA, g.CN, mh_data) == expected
    assert binding_authenticator(g.KBM, g.COA.packed, g.CN.packed, mh_data) == expected
    assert encode_mh_with_bad(msg, src, dst, kbm=g.KBM, coa=g.COA, cn=g.CN) == golden
    decoded = decode_mh_untrusted(golden, src, dst)
    options = (*msg.options, BindingAuthorizationData(expected))
    assert decoded == dataclasses.replace(msg, options=options)
    assert verify_bad(golden, kbm=g.KBM, coa=g.COA, cn=g.CN)
    # Encoding the decoded message (BAD included) reproduces the golden too.
    assert encode_mh(decoded, src, dst) == golden


def test_binding_authorization_rejects_any_flipped_bit() -> None:
    for golden in (g.BU_RR, g.BA_RR):
        for index in range(len(golden)):
            if index in (4, 5):  # the checksum is not covered by the authenticator
                continue
            for bit in (0x01, 0x80):
                mutated = bytearray(golden)
                mutated[index] ^= bit
                assert not verify_bad(bytes(mutated), kbm=g.KBM, coa=g.COA, cn=g.CN)


def test_bu_to_cn_with_hao_packet_golden() -> None:
    mh = encode_mh_with_bad(BU_RR, g.HOA, g.CN, kbm=g.KBM, coa=g.COA, cn=g.CN)
    assert build_packet_with_hao(g.COA, g.CN, g.HOA, NH_MH, mh) == g.PACKET_BU_RR_HAO
    packet = parse_ipv6_packet_untrusted(g.PACKET_BU_RR_HAO)
    assert packet.payload == g.BU_RR
    assert pseudo_header_addresses_untrusted(packet) == (g.HOA, g.CN)


def test_mice_golden() -> None:
    singles = (g.MICE_CREDENTIALS, g.MICE_CANDIDATE_V4, g.MICE_CANDIDATE_V6, g.MICE_END)
    for item, golden in zip(MICE_ITEMS, singles, strict=True):
        assert encode_mice([item]) == golden
        assert decode_mice_untrusted(golden) == (item,)
    assert encode_mice(MICE_ITEMS) == g.MICE
    assert decode_mice_untrusted(g.MICE) == MICE_ITEMS
    assert mice_options(MICE_ITEMS) == (ExperimentalOption(g.MICE),)
    msg = decode_mh_untrusted(g.EXPERIMENTAL_MICE, g.HOA, g.CN)
    assert mice_from_options_untrusted(msg.options) == MICE_ITEMS
    assert encode_mh(ExperimentalMessage(mice_options(MICE_ITEMS)), g.HOA, g.CN) == (
        g.EXPERIMENTAL_MICE
    )


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
