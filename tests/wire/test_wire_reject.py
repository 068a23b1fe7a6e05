"""Decoding rules, one case per rule: the exact BadPacket reason, or the lenient outcome the RFCs
ask for; and the encoders' refusals (ValueError)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
import wire_goldens as g
from encap import build_udp_ipv4, decapsulate_untrusted, encapsulate
from wire_goldens import h

from mipnode.wire.auth4285 import encode_mh_authenticated, verify_mh_authenticated
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    UnknownDestinationOption,
    build_hao_header,
    build_rh2_header,
    parse_destination_options_untrusted,
    parse_rh2_untrusted,
    pseudo_header_addresses_untrusted,
)
from mipnode.wire.icmpv6 import build_echo, parse_echo_untrusted
from mipnode.wire.ipv6 import (
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_UDP,
    IPv6Header,
    build_ipv6_packet,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
)
from mipnode.wire.mh import (
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    ExperimentalMessage,
    ExperimentalOption,
    HomeTest,
    HomeTestInit,
    MnHaAuth,
    MobilityMessage,
    NonceIndices,
    PadN,
    UnknownMobilityMessage,
    UnknownOption,
    decode_mh_untrusted,
    encode_mh,
    fill_mh_checksum,
)
from mipnode.wire.mice import (
    AnswerTo,
    Candidate,
    Credentials,
    EndOfCandidates,
    MiceItem,
    decode_mice_untrusted,
    encode_mice,
)
from mipnode.wire.packets import udp_in_ipv6 as build_udp_ipv6
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted


def reason(parse: Callable[[], object]) -> str:
    with pytest.raises(BadPacket) as info:
        parse()
    return info.value.reason


def decode(body: bytes) -> MobilityMessage:
    """Decode an MH given without checksum: fill it in for HoA -> HA first."""
    return decode_mh_untrusted(fill_mh_checksum(body, g.HOA, g.HA), g.HOA, g.HA)


def mh(mh_type: int, rest: bytes, *, proto: int = 59) -> bytes:
    """Common header (Header Len from the length) + ``rest``; checksum left zero."""
    total = 6 + len(rest)
    return bytes((proto, total // 8 - 1, mh_type, 0, 0, 0)) + rest


BU_FIXED = h("0001 0000 0001")  # sequence 1, no flags, lifetime 1


# --- Mobility Header decoding rules ---------------------------------------------------------


def test_payload_proto_must_be_59() -> None:
    assert reason(lambda: decode(mh(5, BU_FIXED + h("01020000"), proto=6))) == "payload_proto"


def test_checksum_is_checked_before_payload_proto() -> None:
    assert (
        reason(lambda: decode_mh_untrusted(mh(5, BU_FIXED + h("01020000"), proto=6), g.HOA, g.HA))
        == "bad_checksum"
    )


def test_header_len_must_match_buffer_exactly() -> None:
    good = g.BU_MINIMAL
    assert reason(lambda: decode_mh_untrusted(good + bytes(8), g.HOA, g.HA)) == "bad_length"
    assert reason(lambda: decode_mh_untrusted(good[:8], g.HOA, g.HA)) == "bad_length"
    assert reason(lambda: decode_mh_untrusted(good[:7], g.HOA, g.HA)) == "truncated"
    assert reason(lambda: decode_mh_untrusted(b"", g.HOA, g.HA)) == "truncated"


@pytest.mark.parametrize(
    ("mh_type", "rest", "needed"),
    [
        (5, 2, 12),
        (6, 2, 12),
        (7, 2, 24),
        (7, 10, 24),
        (1, 2, 16),  # HoTI: Reserved + 8-octet cookie
        (2, 2, 16),  # CoTI
        (3, 2, 24),  # HoT: nonce index + cookie + token
        (3, 10, 24),
        (4, 10, 24),  # CoT
    ],
)
def test_fixed_part_must_fit(mh_type: int, rest: int, needed: int) -> None:
    data = mh(mh_type, bytes(rest))  # 8 or 16 octets in all
    assert len(data) < needed
    assert reason(lambda: decode(data)) == "bad_length"


@pytest.mark.parametrize(
    "option",
    [
        h("02 01 00"),  # BRA with length 1
        h("02 03 000000"),  # BRA with length 3
        h("03 0f") + bytes(15),  # Alt-CoA with length 15
        h("03 11") + bytes(17),  # Alt-CoA with length 17
        h("0a 07") + bytes(7),  # Mesg-ID with length 7
        h("0a 09") + bytes(9),  # Mesg-ID with length 9
        h("09 04 01 000001"),  # auth option without a full SPI
        h("04 03 000000"),  # Nonce Indices with length 3
        h("04 05 0000000000"),  # Nonce Indices with length 5
    ],
)
def test_known_option_with_wrong_length(option: bytes) -> None:
    body = BU_FIXED + option
    body += bytes(-(6 + len(body)) % 8)  # Pad1s to an 8-octet multiple
    assert reason(lambda: decode(mh(5, body))) == "bad_option"


@pytest.mark.parametrize(
    "tail",
    [
        h("2a"),  # type octet with no length octet, last octet of the MH
        h("2a 05 0000"),  # length runs past the end
        h("01 05 0000"),  # PadN running past the end
    ],
)
def test_options_must_not_overrun(tail: bytes) -> None:
    body = BU_FIXED + bytes(16 - 12 - len(tail)) + tail
    assert reason(lambda: decode(mh(5, body))) == "bad_option"


def test_unknown_option_is_kept_and_padding_dropped() -> None:
    body = BU_FIXED + h("00 2a 01 ff")
    assert decode(mh(5, body)) == BindingUpdate(1, 1, options=(UnknownOption(42, b"\xff"),))


def test_unknown_mh_type_is_not_an_error() -> None:
    # RFC 6275 §9.2: the receiver answers Binding Error status 2, so the message must decode.
    for mh_type in (8, 12, 22, 255):
        msg = decode(mh(mh_type, bytes(10)))
        assert msg == UnknownMobilityMessage(mh_type, bytes(10))
        assert msg.options == ()


def test_rr_messages_decode_and_reserved_is_ignored() -> None:
    cookie, token = bytes(range(8)), bytes(range(8, 16))
    assert decode(mh(1, h("ffff") + cookie)) == HomeTestInit(cookie)
    assert decode(mh(2, h("0000") + cookie)) == CareOfTestInit(cookie)
    assert decode(mh(3, h("0007") + cookie + token)) == HomeTest(7, cookie, token)
    with_option = mh(4, h("0007") + cookie + token + h("2a 00 01 04 00000000"))
    assert decode(with_option) == CareOfTest(7, cookie, token, (UnknownOption(42, b""),))


def test_bad_option_length_is_not_checked_by_the_codec() -> None:
    # §6.2.7: the length is the authenticator's, set by the authorization procedure; only
    # verify_bad insists on the 12 octets of return routability.
    for authenticator in (b"", bytes(20)):
        body = BU_FIXED + h("05") + bytes((len(authenticator),)) + authenticator
        body += bytes(-(6 + len(body)) % 8)
        msg = decode(mh(5, body))
        assert msg == BindingUpdate(1, 1, options=(BindingAuthorizationData(authenticator),))
        assert not verify_bad(mh(5, body), kbm=g.KBM, coa=g.COA, cn=g.CN)


def test_experimental_message_data_must_be_options() -> None:
    assert decode(mh(11, h("01 00"))) == ExperimentalMessage()
    assert decode(mh(11, h("12 00"))) == ExperimentalMessage((ExperimentalOption(b""),))
    assert decode(mh(11, h("00 2a 00 12 01 ff 01 02 0000"))) == ExperimentalMessage(
        (UnknownOption(42, b""), ExperimentalOption(b"\xff"))
    )
    assert reason(lambda: decode(mh(11, h("12 01")))) == "bad_option"  # runs past the end
    assert reason(lambda: decode(mh(11, h("ffff ffff ffff ffff ffff")))) == "bad_option"


def test_reserved_bits_are_ignored() -> None:
    msg = decode(mh(5, h("0001 0aff 0001 01020000")))  # M, P and low reserved bits set
    assert msg == BindingUpdate(1, 1)
    # R (RFC 3963) is decoded, not reserved any more.
    assert decode(mh(5, h("0001 0eff 0001 01020000"))) == BindingUpdate(1, 1, mobile_router=True)


def test_bytes_like_input_and_packed_addresses() -> None:
    data = bytearray(g.BU_HOME)
    assert decode_mh_untrusted(memoryview(data), g.HOA.packed, g.HA.packed) == decode_mh_untrusted(
        g.BU_HOME, g.HOA, g.HA
    )


def test_verify_bad_is_false_for_odd_inputs() -> None:
    kwargs = {"kbm": g.KBM, "coa": g.COA, "cn": g.CN}
    assert not verify_bad(b"", **kwargs)  # type: ignore[arg-type]
    assert not verify_bad(g.BRR, **kwargs)  # type: ignore[arg-type]
    assert not verify_bad(g.BU_AUTH, **kwargs)  # type: ignore[arg-type]
    # A BAD followed by PadN(8): the structure decodes, but nothing may follow the BAD.
    body = g.BU_RR[6:] + h("01 06 000000000000")
    trailing = fill_mh_checksum(bytes((59, 4, 5, 0, 0, 0)) + body, g.HOA, g.CN)
    assert isinstance(decode_mh_untrusted(trailing, g.HOA, g.CN), BindingUpdate)
    assert not verify_bad(trailing, **kwargs)  # type: ignore[arg-type]
    # A BAD that is not the last option.
    not_last = (
        h("3b 04 05 00 0000")  # 40 octets, checksum zero (not checked by verify_bad)
        + g.BU_RR[6:]  # the fixed part, Nonce Indices and the BAD with its authenticator
        + h("04 04 0000 0000 01 00")  # then a second Nonce Indices and PadN(2)
    )
    assert isinstance(
        decode_mh_untrusted(not_last, g.HOA, g.CN, verify_checksum=False), BindingUpdate
    )
    assert not verify_bad(not_last, **kwargs)  # type: ignore[arg-type]
    # Another 8n+4-octet authenticator length is well-formed but not return routability's.
    long_bad = encode_mh(
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(20)),)), g.HOA, g.CN
    )
    assert not verify_bad(long_bad, **kwargs)  # type: ignore[arg-type]
    # Nonsense from the caller does not raise either.
    assert not verify_bad(g.BU_RR, kbm=g.KBM, coa=b"short", cn=g.CN)


def test_verify_auth_is_false_for_odd_inputs() -> None:
    assert not verify_mh_authenticated(b"", key=g.KEY, coa=g.COA, hoa=g.HOA)
    assert not verify_mh_authenticated(g.BRR, key=g.KEY, coa=g.COA, hoa=g.HOA)
    unknown_type = g.BU_AUTH[:2] + b"\x0c" + g.BU_AUTH[3:]
    assert not verify_mh_authenticated(unknown_type, key=g.KEY, coa=g.COA, hoa=g.HOA)
    # MN-AAA subtype (2) is not the MN-HA option.
    mn_aaa = bytearray(g.BU_AUTH)
    mn_aaa[-17] = 2
    assert not verify_mh_authenticated(bytes(mn_aaa), key=g.KEY, coa=g.COA, hoa=g.HOA)


# --- Mobility Header encoding refusals -------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        BindingUpdate(sequence=0x10000, lifetime=0),
        BindingUpdate(sequence=0, lifetime=-1),
        BindingAck(status=256, sequence=0, lifetime=0),
        BindingUpdate(1, 1, options=(PadN(1),)),
        BindingUpdate(1, 1, options=(PadN(258),)),
        BindingUpdate(1, 1, options=(UnknownOption(0, b""),)),
        BindingUpdate(1, 1, options=(UnknownOption(42, bytes(256)),)),
        BindingUpdate(1, 1, options=(MnHaAuth(1, bytes(251)),)),
        BindingUpdate(1, 1, options=(MnHaAuth(1, bytes(12)), UnknownOption(42, b""))),
        BindingUpdate(1, 1, options=(MnHaAuth(1, bytes(10)),)),
        BindingUpdate(1, 1, options=tuple(UnknownOption(42, bytes(255)) for _ in range(9))),
        BindingUpdate(1, 1, options=("not an option",)),  # type: ignore[arg-type]
        HomeTestInit(bytes(7)),
        HomeTestInit(bytes(9)),
        HomeTestInit("12345678"),  # type: ignore[arg-type]
        CareOfTestInit(b""),
        HomeTest(0x10000, bytes(8), bytes(8)),
        HomeTest(0, bytes(8), bytes(9)),
        CareOfTest(-1, bytes(8), bytes(8)),
        CareOfTest(0, bytes(7), bytes(8)),
        BindingUpdate(1, 1, options=(NonceIndices(0x10000, 0),)),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(12)), NonceIndices(1, 2))),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(13)),)),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(16)),)),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(260)),)),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(12)), MnHaAuth(1, bytes(12)))),
        ExperimentalMessage((ExperimentalOption(bytes(256)),)),
        ExperimentalMessage(tuple(ExperimentalOption(bytes(255)) for _ in range(8))),
    ],
)
def test_encoder_refuses(msg: MobilityMessage) -> None:
    with pytest.raises(ValueError):
        encode_mh(msg, g.HOA, g.HA)


def test_encoder_refuses_non_messages_and_bad_addresses() -> None:
    with pytest.raises(ValueError):
        encode_mh("BU", g.HOA, g.HA)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_mh(BindingRefreshRequest(), b"short", g.HA)


def test_authenticated_encoder_refuses() -> None:
    kwargs = {"spi": 1, "key": g.KEY, "coa": g.COA, "hoa": g.HOA}
    with pytest.raises(ValueError):
        encode_mh_authenticated(UnknownMobilityMessage(12, b""), g.HOA, g.HA, **kwargs)  # type: ignore[arg-type]
    already = BindingUpdate(1, 1, options=(MnHaAuth(1, bytes(12)),))
    with pytest.raises(ValueError):
        encode_mh_authenticated(already, g.HOA, g.HA, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "msg",
    [
        HomeTestInit(bytes(8)),
        BindingError(1, g.HOA),
        BindingUpdate(1, 1, options=(BindingAuthorizationData(bytes(12)),)),
        BindingAck(0, 1, 1, options=(MnHaAuth(1, bytes(12)),)),
        BindingUpdate(0x10000, 1),
    ],
    ids=lambda m: type(m).__name__,
)
def test_bad_encoder_refuses(msg: MobilityMessage) -> None:
    with pytest.raises(ValueError):
        encode_mh_with_bad(msg, g.HOA, g.CN, kbm=g.KBM, coa=g.COA, cn=g.CN)


def test_unknown_message_encoding_pads_with_zeros() -> None:
    data = encode_mh(UnknownMobilityMessage(12, b"\x01\x02\x03"), g.HOA, g.HA)
    assert len(data) == 16
    assert decode_mh_untrusted(data, g.HOA, g.HA) == UnknownMobilityMessage(
        12, b"\x01\x02\x03" + bytes(7)
    )


# --- IPv6 and extension headers ---------------------------------------------------------------


def test_ipv6_header_rules() -> None:
    packet = g.ECHO_REQUEST
    assert reason(lambda: parse_ipv6_header_untrusted(packet[:39])) == "truncated"
    assert reason(lambda: parse_ipv6_header_untrusted(b"\x40" + packet[1:])) == "bad_version"
    assert reason(lambda: parse_ipv6_header_untrusted(packet[:-1])) == "bad_length"
    # Octets beyond Payload Length (link-layer padding) are ignored.
    assert parse_ipv6_packet_untrusted(packet + b"\x00" * 6).payload == packet[40:]


def chain(*headers: tuple[int, bytes], last: int = NH_UDP) -> bytes:
    """Extension headers given as (their own type, 6 octets of content), 8 octets each."""
    out = b""
    for index, (_, content) in enumerate(headers):
        next_header = headers[index + 1][0] if index + 1 < len(headers) else last
        out += bytes((next_header, 0)) + content
    return out


def test_extension_header_walk_limits() -> None:
    eight = chain(*[(NH_DSTOPTS, h("01 04 00000000"))] * 8)
    packet = build_ipv6_packet(g.COA, g.HA, NH_DSTOPTS, eight + b"udp!")
    parsed = parse_ipv6_packet_untrusted(packet)
    assert len(parsed.extension_headers) == 8
    assert (parsed.upper_protocol, parsed.payload) == (NH_UDP, b"udp!")
    nine = chain(*[(NH_DSTOPTS, h("01 04 00000000"))] * 9)
    packet = build_ipv6_packet(g.COA, g.HA, NH_DSTOPTS, nine)
    assert reason(lambda: parse_ipv6_packet_untrusted(packet)) == "bad_exthdr"


def test_hop_by_hop_must_come_first() -> None:
    ext = chain((NH_DSTOPTS, h("01 04 00000000")), (NH_HOPOPTS, h("01 04 00000000")))
    packet = build_ipv6_packet(g.COA, g.HA, NH_DSTOPTS, ext)
    assert reason(lambda: parse_ipv6_packet_untrusted(packet)) == "bad_exthdr"
    first = build_ipv6_packet(g.COA, g.HA, NH_HOPOPTS, chain((NH_HOPOPTS, h("01 04 00000000"))))
    assert parse_ipv6_packet_untrusted(first).extension_headers[0].header_type == NH_HOPOPTS


def test_fragments() -> None:
    first = build_ipv6_packet(
        g.COA, g.HA, NH_FRAGMENT, bytes((NH_UDP, 0)) + h("0001 00000001") + b"data"
    )
    parsed = parse_ipv6_packet_untrusted(first)
    assert (parsed.upper_protocol, parsed.payload) == (NH_UDP, b"data")
    later = build_ipv6_packet(
        g.COA, g.HA, NH_FRAGMENT, bytes((NH_UDP, 0)) + h("0008 00000001") + b"data"
    )
    parsed = parse_ipv6_packet_untrusted(later)
    assert (parsed.upper_protocol, parsed.upper_offset) == (NH_FRAGMENT, 40)
    assert parsed.extension_headers == ()


def test_destination_options_rules() -> None:
    assert reason(lambda: parse_destination_options_untrusted(g.HAO_HEADER[:7])) == "truncated"
    assert reason(lambda: parse_destination_options_untrusted(g.HAO_HEADER[:16])) == "bad_length"
    bad_hao = g.HAO_HEADER[:7] + b"\x0f" + g.HAO_HEADER[8:]
    assert reason(lambda: parse_destination_options_untrusted(bad_hao)) == "bad_option"
    overrun = g.HAO_HEADER[:7] + b"\x11" + g.HAO_HEADER[8:]
    assert reason(lambda: parse_destination_options_untrusted(overrun)) == "bad_option"
    other = h("3b 00 00 1e 02 abcd 00")  # Pad1, unknown option 0x1e, Pad1
    parsed = parse_destination_options_untrusted(other)
    assert parsed.options == (UnknownDestinationOption(0x1E, h("abcd")),)
    assert parsed.home_address is None


def test_rh2_rules() -> None:
    rh2 = g.RH2_HEADER
    assert reason(lambda: parse_rh2_untrusted(rh2[:7])) == "truncated"
    assert reason(lambda: parse_rh2_untrusted(rh2[:2] + b"\x00" + rh2[3:])) == "bad_routing_type"
    assert (
        reason(lambda: parse_rh2_untrusted(rh2[:1] + b"\x04" + rh2[2:] + bytes(16))) == "bad_length"
    )
    assert reason(lambda: parse_rh2_untrusted(rh2[:3] + b"\x02" + rh2[4:])) == "bad_segments_left"
    processed = rh2[:3] + b"\x00" + rh2[4:]
    assert parse_rh2_untrusted(processed).segments_left == 0
    # RFC 8200 §8.1: with no segments left the Destination Address is the final destination.
    packet = parse_ipv6_packet_untrusted(build_ipv6_packet(g.HA, g.HOA, 43, processed + g.BA_PLAIN))
    assert pseudo_header_addresses_untrusted(packet) == (g.HA, g.HOA)


def test_builders_refuse() -> None:
    with pytest.raises(ValueError):
        build_ipv6_packet(g.COA, g.HA, NH_UDP, bytes(65536))
    with pytest.raises(ValueError):
        build_ipv6_packet(g.COA, g.HA, 256, b"")
    with pytest.raises(ValueError):
        build_hao_header(256, g.HOA)
    with pytest.raises(ValueError):
        build_rh2_header(-1, g.HOA)
    for bad in (
        IPv6Header(g.COA, g.HA, NH_UDP, 0, flow_label=1 << 20),
        IPv6Header(g.COA, g.HA, NH_UDP, 0, traffic_class=256),
        IPv6Header(g.COA, g.HA, NH_UDP, 65536),
        IPv6Header(g.COA, g.HA, NH_UDP, 0, hop_limit=256),
    ):
        with pytest.raises(ValueError):
            bad.to_bytes()
    with pytest.raises(ValueError):
        build_echo(g.HOA, g.CN, 0x10000, 0, b"")
    with pytest.raises(ValueError):
        build_udp_ipv6(g.COA, g.HA, 70000, 1, b"")
    with pytest.raises(ValueError):
        build_udp_ipv6(g.COA, g.HA, 1, 1, bytes(65528))
    with pytest.raises(ValueError):
        build_udp_ipv4(g.V4_SRC, b"\x01\x02\x03", 1, 1, b"")
    with pytest.raises(ValueError):
        build_udp_ipv4(g.V4_SRC, g.V4_DST, 1, 1, bytes(65508))
    with pytest.raises(ValueError):
        build_udp_ipv4(g.V4_SRC, g.V4_DST, 1, 1, b"", ttl=256)
    # Packed addresses are accepted everywhere.
    assert (
        build_udp_ipv4(g.V4_SRC.packed, IPv4Address(g.V4_DST).packed, 4191, 4191, g.ECHO_REQUEST)
        == g.UDP4_ENCAP
    )


def test_udp_zero_checksum_is_sent_as_ffff() -> None:
    # Find a payload whose UDP checksum computes to 0 by fixing its last two octets.
    base = build_udp_ipv6(g.COA, g.HA, 1, 2, b"\x00\x00")
    checksum = int.from_bytes(base[46:48], "big")
    # Adding the old checksum value to the data drives the one's complement sum to all ones.
    packet = build_udp_ipv6(g.COA, g.HA, 1, 2, checksum.to_bytes(2, "big"))
    assert packet[46:48] == b"\xff\xff"
    assert g.ref_upper_ok(g.COA, g.HA, NH_UDP, packet[40:])


# --- ICMPv6, tunnels, demux --------------------------------------------------------------------


def test_echo_rules() -> None:
    echo = g.ECHO_REQUEST
    not_icmp = build_ipv6_packet(g.HOA, g.CN, NH_UDP, echo[40:])
    assert reason(lambda: parse_echo_untrusted(not_icmp)) == "not_icmpv6"
    short = build_ipv6_packet(g.HOA, g.CN, NH_ICMPV6, echo[40:47])
    assert reason(lambda: parse_echo_untrusted(short)) == "truncated"
    other_type = build_ipv6_packet(g.HOA, g.CN, NH_ICMPV6, b"\x87" + echo[41:])
    assert reason(lambda: parse_echo_untrusted(other_type)) == "not_echo"
    other_code = build_ipv6_packet(g.HOA, g.CN, NH_ICMPV6, b"\x80\x01" + echo[42:])
    assert reason(lambda: parse_echo_untrusted(other_code)) == "not_echo"
    corrupt = echo[:-1] + b"\x00"
    assert reason(lambda: parse_echo_untrusted(corrupt)) == "bad_checksum"


def test_ip6ip6_rules() -> None:
    assert reason(lambda: decapsulate_untrusted(g.ECHO_REQUEST)) == "not_ip6ip6"
    assert (
        reason(lambda: decapsulate_untrusted(encapsulate(g.COA, g.HA, b"\x45" + bytes(39))))
        == "bad_version"
    )
    assert (
        reason(lambda: decapsulate_untrusted(encapsulate(g.COA, g.HA, g.ECHO_REQUEST[:30])))
        == "truncated"
    )
    padded = encapsulate(g.COA, g.HA, g.ECHO_REQUEST + b"\x00")
    assert reason(lambda: decapsulate_untrusted(padded)) == "bad_length"
    # Outer extension headers (here an HAO) are walked past.
    with_hao = build_ipv6_packet(
        g.COA, g.HA, NH_DSTOPTS, build_hao_header(41, g.HOA) + g.ECHO_REQUEST
    )
    assert decapsulate_untrusted(with_hao)[1] == g.ECHO_REQUEST


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x60", UdpPayloadKind.IPV6),
        (b"\x6f" + bytes(100), UdpPayloadKind.IPV6),
        (g.STUN_BINDING_REQUEST, UdpPayloadKind.STUN),
        (h("0101 0004 2112a442") + bytes(12) + h("00000000"), UdpPayloadKind.STUN),
    ],
)
def test_demux_accepts(payload: bytes, expected: UdpPayloadKind) -> None:
    assert classify_udp_payload_untrusted(payload) is expected


@pytest.mark.parametrize(
    "payload",
    [
        b"\x45" + bytes(39),  # IPv4: not a payload of ours
        b"\x40" + g.STUN_BINDING_REQUEST[1:],  # top bits 01
        g.STUN_BINDING_REQUEST[:4] + b"\x21\x12\xa4\x43" + g.STUN_BINDING_REQUEST[8:],  # cookie
        g.STUN_BINDING_REQUEST + bytes(4),  # length field says 0, 4 octets follow
        h("0001 0002 2112a442") + bytes(14),  # length not a multiple of 4
        g.STUN_BINDING_REQUEST[:19],  # shorter than a STUN header
        b"\x00",
    ],
)
def test_demux_rejects(payload: bytes) -> None:
    assert reason(lambda: classify_udp_payload_untrusted(payload)) == "unknown_udp_payload"


def test_demux_empty() -> None:
    assert reason(lambda: classify_udp_payload_untrusted(b"")) == "truncated"


# --- M-ICE TLVs --------------------------------------------------------------------------------

CANDIDATE_FIXED = h("7effffff 105f 01 04")  # priority, port 4191, host, IPv4


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (h("01"), "truncated"),  # a type octet with no length
        (h("01 05 616263"), "truncated"),  # value runs past the end
        (h("03 00 03 01"), "truncated"),  # second TLV's value missing
        (h("2a ff") + bytes(10), "truncated"),  # even an unknown type must fit
        (h("01 00"), "bad_mice"),  # credentials without even the ufrag length
        (h("01 02 09 61"), "bad_mice"),  # ufrag length past the value
        (h("01 1a 03") + b"abc" + b"a" * 22, "bad_mice"),  # ufrag of 3
        (h("01 38 21") + b"a" * 33 + b"a" * 22, "bad_mice"),  # ufrag of 33
        (h("01 1b 04") + b"ab-d" + b"a" * 22, "bad_mice"),  # ufrag not ice-chars
        (h("01 1a 04") + b"abcd" + b"a" * 21, "bad_mice"),  # password of 21
        (h("01 1b 04") + b"abcd" + b"a" * 21 + b" ", "bad_mice"),  # password with a space
        (h("01 1b 04") + b"abcd" + b"a" * 21 + b"\xc3", "bad_mice"),  # non-ASCII
        (h("02 07 7effffff 105f 01"), "bad_mice"),  # candidate shorter than its fixed part
        (h("02 0d 00000000 105f 01 04 c000020a 31"), "bad_mice"),  # priority 0
        (h("02 0d 80000000 105f 01 04 c000020a 31"), "bad_mice"),  # priority 2**31
        (h("02 0d 7effffff 0000 01 04 c000020a 31"), "bad_mice"),  # port 0
        (h("02 0d 7effffff 105f 00 04 c000020a 31"), "bad_mice"),  # kind 0
        (h("02 0d 7effffff 105f 05 04 c000020a 31"), "bad_mice"),  # kind 5
        (h("02 0d 7effffff 105f 01 05 c000020a 31"), "bad_mice"),  # family 5
        (h("02 0b 7effffff 105f 01 04 c00002"), "bad_mice"),  # 3 address octets
        (h("02 0d 7effffff 105f 01 06 c000020a 31"), "bad_mice"),  # family 6, 5 octets
        (h("02 0c") + CANDIDATE_FIXED + h("c000020a"), "bad_mice"),  # no foundation
        (h("02 2d") + CANDIDATE_FIXED + h("c000020a") + b"f" * 33, "bad_mice"),  # 33
        (h("02 0d") + CANDIDATE_FIXED + h("c000020a") + b"-", "bad_mice"),  # not ice-char
        (h("03 01 00"), "bad_mice"),  # end-of-candidates with a value
    ],
)
def test_mice_decoding_rules(data: bytes, expected: str) -> None:
    assert reason(lambda: decode_mice_untrusted(data)) == expected


def test_mice_limits_are_inclusive_and_unknown_types_skipped() -> None:
    items: tuple[MiceItem, ...] = (
        Credentials("a" * 4, "b" * 22),
        Credentials("a" * 32, "+/" * 111),  # 1 + 32 + 222 = 255 octets: the largest value
        Candidate("f" * 32, 2**31 - 1, "relay", IPv6Address(2**128 - 1), 65535),
        Candidate("0", 1, "prflx", IPv4Address(0), 1),
    )
    assert decode_mice_untrusted(encode_mice(items)) == items
    assert decode_mice_untrusted(h("7f 02 abcd 03 00 80 00")) == (EndOfCandidates(),)
    assert decode_mice_untrusted(b"") == ()
    assert decode_mice_untrusted(bytearray(h("03 00"))) == (EndOfCandidates(),)
    # AnswerTo (type 4) carries the offer's ufrag, 4-32 ice-chars like any ufrag.
    assert decode_mice_untrusted(h("04 04 6d6e3031")) == (AnswerTo("mn01"),)
    assert reason(lambda: decode_mice_untrusted(h("04 03 6d6e30"))) == "bad_mice"
    assert reason(lambda: decode_mice_untrusted(h("04 04 6d6e30ff"))) == "bad_mice"


PASSWORD = "p" * 22


@pytest.mark.parametrize(
    "item",
    [
        Credentials("abc", PASSWORD),
        Credentials("a" * 33, PASSWORD),
        Credentials("ab d", PASSWORD),
        Credentials("abc\u00e9", PASSWORD),  # non-ASCII
        Credentials("abcd", "p" * 21),
        Credentials("abcd", "p" * 257),
        Credentials("abcd", "p" * 21 + "="),
        Credentials("a" * 32, "p" * 223),  # 256 octets of value: does not fit the TLV
        Credentials(b"abcd", PASSWORD),  # type: ignore[arg-type]
        Candidate("1", 0, "host", IPv4Address("192.0.2.1"), 1),
        Candidate("1", 2**31, "host", IPv4Address("192.0.2.1"), 1),
        Candidate("1", 1, "host", IPv4Address("192.0.2.1"), 0),
        Candidate("1", 1, "host", IPv4Address("192.0.2.1"), 65536),
        Candidate("1", 1, "bogus", IPv4Address("192.0.2.1"), 1),
        Candidate("1", 1, "host", "192.0.2.1", 1),  # type: ignore[arg-type]
        Candidate("", 1, "host", IPv4Address("192.0.2.1"), 1),
        Candidate("f" * 33, 1, "host", IPv4Address("192.0.2.1"), 1),
        Candidate("f-1", 1, "host", IPv4Address("192.0.2.1"), 1),
        "not an item",
    ],
    ids=repr,
)
def test_mice_encoder_refuses(item: MiceItem) -> None:
    with pytest.raises(ValueError):
        encode_mice([item])
