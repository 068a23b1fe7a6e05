"""Robustness of the ``*_untrusted`` parsers test_wire_fuzz.py leaves out: a result or BadPacket.

Covered here: the STUN front door (ice/stun.py), the route-optimisation rewrites (tunnels/ro.py),
flow keys (core/flows.py), the HAO / RH2 lookups of a parsed packet (wire/exthdr.py), MH decoding
with option offsets (wire/mh.py), the ESP key share (wire/keyshare.py) and ESP itself
(tunnels/esp.py). Seeds are golden packets (wire_goldens.py) and messages built with the
project's own encoders; mutations are structure-blind, as in test_wire_fuzz.py. Signed inputs
(STUN checks with MESSAGE-INTEGRITY and FINGERPRINT, ESP packets) are also checked for the
promise that matters more than not crashing: a changed message is never accepted.

``tools/fuzz.py`` runs the same properties randomized and longer (tests/fuzzkit.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv6Address
from itertools import pairwise
from typing import TypeVar

import pytest
import wire_goldens as g
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from fuzzkit import fuzz_settings, mutations
from hypothesis import example, given
from hypothesis import strategies as st

from ice.stun import (
    CheckRequest,
    CheckResponse,
    binding_request,
    binding_response,
    build_check,
    build_check_error,
    build_check_success,
    parse_check_untrusted,
    parse_lite_answer_untrusted,
    parse_stun_untrusted,
)
from mipnode.core.flows import NO_ID, FlowKey, flow_key_untrusted, opened_by_cn_untrusted
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    build_hao_header,
    build_rh2_header,
    home_address_of_untrusted,
    rh2_of_untrusted,
)
from mipnode.wire.icmpv6 import build_echo
from mipnode.wire.ipv6 import parse_ipv6_packet_untrusted
from mipnode.wire.keyshare import (
    TLV_KEY_SHARE,
    KeyShare,
    key_share_from_options_untrusted,
    key_share_option,
)
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAuthorizationData,
    BindingRefreshAdvice,
    BindingUpdate,
    ExperimentalOption,
    MesgId,
    MnHaAuth,
    MobilityOption,
    NonceIndices,
    OptionType,
    UnknownOption,
    decode_mh_untrusted,
    decode_mh_with_offsets_untrusted,
    encode_mh,
)
from mipnode.wire.mice import Credentials, mice_options
from mipnode.wire.packets import ipv6_packet, udp_in_ipv6
from tunnels.esp import (
    MIN_REPLAY_WINDOW,
    SUITE_AES_GCM,
    SUITE_CHACHA20_POLY1305,
    EspInbound,
    EspOutbound,
    key_length,
)
from tunnels.ro import (
    add_home_address_option,
    add_type2_routing_header,
    remove_home_address_option_untrusted,
    remove_type2_routing_header_untrusted,
)

ZERO = IPv6Address(0)
In = TypeVar("In")
Out = TypeVar("Out")


def accepts(parser: Callable[[In], Out], data: In) -> Out | None:
    """``parser(data)``, or None on BadPacket (whose reason must be a drop-counter key);
    any other exception propagates and fails the test."""
    try:
        return parser(data)
    except BadPacket as exc:
        assert exc.reason and exc.reason == exc.reason.strip().lower(), exc.reason
        return None


# -- STUN (ice/stun.py) -----------------------------------------------------------------------

TID = bytes(range(1, 13))
LOCAL_PASSWORD = "localpasswordlocalpass"  # 22 ice-chars: the key of requests to us
REMOTE_PASSWORD = "remotepasswordremotepa"  # the key of the answers to our checks
COOKIE = 0x2112A442
ATTR_MI, ATTR_FP = 0x0008, 0x8028

CHECK_CONTROLLING = build_check(
    TID,
    username="rcv1:snd1",
    password=LOCAL_PASSWORD,
    priority=0x6E7F00FF,
    controlling=True,
    tie_breaker=0x0123456789ABCDEF,
    use_candidate=True,
)
CHECK_CONTROLLED = build_check(
    TID,
    username="rcv2:snd22",
    password=LOCAL_PASSWORD,
    priority=1,
    controlling=False,
    tie_breaker=(1 << 64) - 1,
)
CHECK_SUCCESS_V6 = build_check_success(TID, mapped=("2001:db8::5", 5000), password=REMOTE_PASSWORD)
CHECK_SUCCESS_V4 = build_check_success(TID, mapped=("192.0.2.1", 1), password=REMOTE_PASSWORD)
CHECK_ERROR = build_check_error(TID, code=487, reason="Role Conflict", password=REMOTE_PASSWORD)
SIGNED_STUN = {
    "check_controlling": CHECK_CONTROLLING,
    "check_controlled": CHECK_CONTROLLED,
    "check_success_v6": CHECK_SUCCESS_V6,
    "check_success_v4": CHECK_SUCCESS_V4,
    "check_error": CHECK_ERROR,
}
STUN_SEEDS = [
    binding_request(TID),
    binding_response(TID, ("2001:db8::1", 40000)),
    binding_response(TID, ("198.51.100.7", 4191)),
    g.STUN_BINDING_REQUEST,
    *SIGNED_STUN.values(),
]


def check(data: bytes) -> CheckRequest | CheckResponse:
    return parse_check_untrusted(
        data, local_password=LOCAL_PASSWORD, remote_password=REMOTE_PASSWORD
    )


def check_without_remote(data: bytes) -> CheckRequest | CheckResponse:
    return parse_check_untrusted(data, local_password=LOCAL_PASSWORD, remote_password=None)


STUN_PARSERS: dict[str, Callable[[bytes], object]] = {
    "stun": parse_stun_untrusted,
    "check": check,
    "check_without_remote": check_without_remote,
    "lite_answer": parse_lite_answer_untrusted,
}


def sign_stun(msg_type: int, tid: bytes, attributes: bytes, password: str) -> bytes:
    """MESSAGE-INTEGRITY then FINGERPRINT over ``attributes``, computed here with the stdlib
    (RFC 8489 §14.5: the length field counts up to the MI attribute; §14.7: CRC-32 XOR
    0x5354554E with the length counting the FINGERPRINT)."""
    header = struct.pack("!HHI12s", msg_type, len(attributes) + 24, COOKIE, tid)
    mac = hmac.new(password.encode(), header + attributes, hashlib.sha1).digest()
    body = attributes + struct.pack("!HH", ATTR_MI, 20) + mac
    header = struct.pack("!HHI12s", msg_type, len(body) + 8, COOKIE, tid)
    crc = binascii.crc32(header + body) ^ 0x5354554E
    return header + body + struct.pack("!HHI", ATTR_FP, 4, crc)


def stun_attribute(attr_type: int, value: bytes, padding: bytes = b"") -> bytes:
    pad = (padding + bytes(3))[: -len(value) % 4]
    return struct.pack("!HH", attr_type, len(value)) + value + pad


def test_the_reference_signer_matches_the_encoder() -> None:
    """sign_stun() builds exactly what build_check() does, so the signed inputs below reach
    the attribute checks behind MESSAGE-INTEGRITY."""
    attributes = (
        stun_attribute(0x0006, b"rcv1:snd1")
        + stun_attribute(0x0024, struct.pack("!I", 0x6E7F00FF))
        + stun_attribute(0x802A, struct.pack("!Q", 0x0123456789ABCDEF))
        + stun_attribute(0x0025, b"")
    )
    assert sign_stun(0x0001, TID, attributes, LOCAL_PASSWORD) == CHECK_CONTROLLING


def test_stun_seeds_are_accepted() -> None:
    for seed in STUN_SEEDS:
        assert accepts(parse_stun_untrusted, seed) is not None
    request = check(CHECK_CONTROLLING)
    assert request == CheckRequest(TID, "rcv1:snd1", 0x6E7F00FF, 0x0123456789ABCDEF, None, True)
    assert check(CHECK_CONTROLLED) == CheckRequest(TID, "rcv2:snd22", 1, None, (1 << 64) - 1)
    assert check(CHECK_SUCCESS_V6) == CheckResponse(TID, ("2001:db8::5", 5000))
    assert check(CHECK_ERROR) == CheckResponse(TID, None, 487)
    assert parse_lite_answer_untrusted(STUN_SEEDS[1]) == CheckResponse(TID, ("2001:db8::1", 40000))
    assert parse_lite_answer_untrusted(CHECK_SUCCESS_V4) == CheckResponse(TID, ("192.0.2.1", 1))
    # The other side's key, or none, authenticates nothing.
    for data in (CHECK_CONTROLLING, CHECK_SUCCESS_V6):
        with pytest.raises(BadPacket):
            parse_check_untrusted(data, local_password="x" * 22, remote_password="y" * 22)
    with pytest.raises(BadPacket, match="stun_no_remote_credentials"):
        check_without_remote(CHECK_SUCCESS_V6)


@fuzz_settings(500)
@given(mutations(STUN_SEEDS) | st.binary(max_size=120))
def test_mutated_stun(data: bytes) -> None:
    for parser in STUN_PARSERS.values():
        accepts(parser, data)


@fuzz_settings(300)
@given(st.sampled_from(list(SIGNED_STUN)), st.data())
def test_a_changed_check_is_never_authentic(name: str, data: st.DataObject) -> None:
    """MESSAGE-INTEGRITY covers the header and every attribute before it, FINGERPRINT the rest:
    any change to a signed message is refused."""
    seed = SIGNED_STUN[name]
    mutated = data.draw(mutations([seed]))
    result = accepts(check, mutated)
    if mutated == seed:
        assert result is not None
    else:
        assert result is None, mutated.hex()


def address_value(family: int, port: int, address: bytes) -> bytes:
    """(XOR-)MAPPED-ADDRESS value: reserved, family, port, address (RFC 8489 §14.1, §14.2)."""
    return struct.pack("!BBH", 0, family, port) + address


def sized(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


addresses = st.builds(address_value, st.just(1), st.integers(0, 0xFFFF), sized(4)) | st.builds(
    address_value, st.just(2), st.integers(0, 0xFFFF), sized(16)
)
ice_text = st.text("abcdXYZ019+/:", min_size=1, max_size=20).map(str.encode)
# Per attribute type the parsers know (and two they do not): values its decoder takes, and
# values of any other length or content.
STUN_ATTRIBUTES: dict[int, tuple[st.SearchStrategy[bytes], st.SearchStrategy[bytes]]] = {
    0x0001: (addresses, st.binary(max_size=20)),  # MAPPED-ADDRESS
    0x0006: (ice_text, st.binary(max_size=24)),  # USERNAME
    0x0009: (  # ERROR-CODE: class, number, reason
        st.builds(
            lambda c, n, r: struct.pack("!HBB", 0, c, n) + r,
            st.integers(0, 9),
            st.integers(0, 120),
            ice_text,
        ),
        st.binary(max_size=12),
    ),
    0x0020: (addresses, st.binary(max_size=24)),  # XOR-MAPPED-ADDRESS
    0x0024: (sized(4), st.binary(max_size=8)),  # PRIORITY
    0x0025: (st.just(b""), st.binary(max_size=4)),  # USE-CANDIDATE
    0x8022: (ice_text, st.binary(max_size=16)),  # SOFTWARE
    0x8029: (sized(8), st.binary(max_size=12)),  # ICE-CONTROLLED
    0x802A: (sized(8), st.binary(max_size=12)),  # ICE-CONTROLLING
    0x000C: (sized(2), st.binary(max_size=4)),  # CHANNEL-NUMBER
    0x0013: (st.binary(max_size=8), st.binary(max_size=8)),  # DATA
    0x8000: (st.binary(max_size=8), st.binary(max_size=8)),  # comprehension-optional, unknown
    0x7FFF: (st.binary(max_size=8), st.binary(max_size=8)),  # comprehension-required, unknown
}
# What each class needs (request, success, error): often present, so that the checks behind
# the attribute decoders are reached too.
STUN_TEMPLATES = {0x0000: [0x0006, 0x0024], 0x0100: [0x0020], 0x0110: [0x0009], 0x0010: []}


@st.composite
def signed_stun(draw: st.DrawFn) -> tuple[bytes, int]:
    """A well-framed STUN message with arbitrary attribute values, signed with the right key
    for its class and with a correct FINGERPRINT: the parser must judge every value."""
    # Mostly Binding (request, indication, success, error), sometimes another method.
    msg_type = draw(st.sampled_from([0x0001, 0x0011, 0x0101, 0x0111]))
    if draw(st.integers(0, 7)) == 0:
        msg_type = draw(st.sampled_from([0x0003, 0x0103]) | st.integers(0, 0x3FFF))
    chosen = draw(st.lists(st.sampled_from(sorted(STUN_ATTRIBUTES)), max_size=4))
    if draw(st.integers(0, 3)):
        chosen = STUN_TEMPLATES[msg_type & 0x0110] + chosen
    attributes = b""
    for attr_type in chosen:
        valid, garbage = STUN_ATTRIBUTES[attr_type]
        value = draw(garbage if draw(st.integers(0, 5)) == 0 else valid)
        attributes += stun_attribute(attr_type, value, draw(sized(3)))
    key = LOCAL_PASSWORD if msg_type & 0x0110 == 0 else REMOTE_PASSWORD  # request or not
    return sign_stun(msg_type, TID, attributes, key), msg_type


@fuzz_settings(500)
@given(signed_stun())
def test_signed_stun_with_arbitrary_attributes(signed: tuple[bytes, int]) -> None:
    data, msg_type = signed
    for parser in STUN_PARSERS.values():
        accepts(parser, data)
    result = accepts(check, data)
    if result is not None:
        assert result.transaction_id == TID
        if msg_type & 0x0110 == 0:
            assert isinstance(result, CheckRequest) and result.priority >= 1
            assert result.ice_controlling is None or result.ice_controlled is None
        else:
            assert isinstance(result, CheckResponse)
            assert result.success == (result.mapped is not None)
            assert result.error_code is None or 300 <= result.error_code <= 699


def with_fingerprint(data: bytes) -> bytes:
    """``data`` (a STUN message without FINGERPRINT) with its length fixed and a correct
    FINGERPRINT: a CRC, which anyone can compute."""
    header = data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:20]
    crc = binascii.crc32(header + data[20:]) ^ 0x5354554E
    return header + data[20:] + struct.pack("!HHI", ATTR_FP, 4, crc)


def attribute_of_type(attr_type: int) -> st.SearchStrategy[bytes]:
    """A well-formed attribute of ``attr_type`` (MESSAGE-INTEGRITY and FINGERPRINT included)."""
    if attr_type in (ATTR_MI, ATTR_FP):
        values = sized(20 if attr_type == ATTR_MI else 4)
    else:
        values = STUN_ATTRIBUTES[attr_type][0]
    return values.map(partial(stun_attribute, attr_type))


inserted_attributes = st.lists(
    st.sampled_from([*sorted(STUN_ATTRIBUTES), ATTR_MI, ATTR_MI, ATTR_FP]).flatmap(
        attribute_of_type
    ),
    min_size=1,
    max_size=3,
).map(b"".join)


@fuzz_settings(300)
@given(st.sampled_from(list(SIGNED_STUN)), inserted_attributes)
# Found by this property: a second MESSAGE-INTEGRITY made the layout check take it for the
# one before FINGERPRINT, while aioice verified the first and ignored what followed it.
@example("check_controlling", stun_attribute(0x0024, bytes(4)) + stun_attribute(ATTR_MI, bytes(20)))
def test_nothing_unauthenticated_follows_message_integrity(name: str, inserted: bytes) -> None:
    """Attributes slipped in between MESSAGE-INTEGRITY and FINGERPRINT (the FINGERPRINT
    recomputed) are refused: only FINGERPRINT may follow the attribute that is verified."""
    forged = with_fingerprint(SIGNED_STUN[name][:-8] + inserted)
    assert accepts(check, forged) is None
    assert accepts(check, with_fingerprint(SIGNED_STUN[name][:-8])) is not None


# -- route optimisation rewrites (tunnels/ro.py) and flow keys (core/flows.py) -----------------

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:a::2")
CN = IPv6Address("2001:db8:c::2")
TCP, UDP, ICMPV6 = 6, 17, 58


def tcp_header(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


FROM_MN = [
    build_echo(HOA, CN, 7, 1, b"payload"),
    udp_in_ipv6(HOA, CN, 40000, 53, b"query"),
    ipv6_packet(HOA, CN, TCP, tcp_header(40001, 80, 0x02)),
    ipv6_packet(HOA, CN, 33, struct.pack("!HH", 5000, 6000) + bytes(8)),  # DCCP
    ipv6_packet(HOA, CN, 50, bytes(24)),  # ESP: keyed by the protocol alone
]
TO_MN = [
    build_echo(CN, HOA, 7, 1, b"payload", reply=True),
    build_echo(CN, HOA, 9, 1, b"ping"),
    udp_in_ipv6(CN, HOA, 53, 40000, b"answer"),
    ipv6_packet(CN, HOA, TCP, tcp_header(80, 40001, 0x12)),
    ipv6_packet(CN, HOA, TCP, tcp_header(22, 40002, 0x02)),
]
WITH_HAO = [add_home_address_option(p, COA.packed) for p in FROM_MN]
WITH_RH2 = [add_type2_routing_header(p, COA.packed) for p in TO_MN]


def fragment(next_header: int, offset: int) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset << 3, 0x1234)


CHAINED = [
    # hop-by-hop (PadN) -> fragment (first) -> UDP
    ipv6_packet(HOA, CN, 0, bytes((44, 0, 1, 4, 0, 0, 0, 0)) + fragment(UDP, 0) + FROM_MN[1][40:]),
    # a later fragment: no upper-layer header
    ipv6_packet(CN, HOA, 44, fragment(TCP, 100) + bytes(16)),
    # destination options (HAO) -> fragment -> echo request
    ipv6_packet(COA, CN, 60, build_hao_header(44, HOA) + fragment(ICMPV6, 0) + FROM_MN[0][40:]),
    # RH2 -> destination options (PadN) -> TCP SYN
    ipv6_packet(
        CN,
        COA,
        43,
        build_rh2_header(60, HOA) + bytes((TCP, 0, 1, 4, 0, 0, 0, 0)) + TO_MN[4][40:],
    ),
]
PACKET_SEEDS = [
    *FROM_MN,
    *TO_MN,
    *WITH_HAO,
    *WITH_RH2,
    *CHAINED,
    g.PACKET_BU_HAO,
    g.PACKET_BA_RH2,
    g.PACKET_BU_RR_HAO,
    g.ECHO_REQUEST,
    g.IP6IP6,
]

EXTENSION_HEADERS: dict[int, st.SearchStrategy[bytes]] = {
    # Each header without its Next Header octet, which the chain fills in.
    0: st.binary(min_size=7, max_size=23),  # hop-by-hop
    43: st.just(build_rh2_header(0, HOA)[1:]) | st.binary(min_size=7, max_size=23),
    44: st.binary(min_size=7, max_size=7),  # fragment (fixed size)
    60: st.just(build_hao_header(0, HOA)[1:]) | st.binary(min_size=7, max_size=23),
}


def framed(body: bytes) -> bytes:
    """``body`` cut or padded to 8k - 1 octets with Hdr Ext Len k - 1: a well-framed header."""
    units = max(1, (len(body) + 1) // 8)
    return bytes((units - 1,)) + (body + bytes(8 * units))[1 : 8 * units - 1]


@st.composite
def chained_packets(draw: st.DrawFn) -> bytes:
    """IPv6 packets with a random chain of extension headers (mostly well framed) and a random
    upper layer: the walk of core/flows.py goes all the way."""
    kinds = draw(st.lists(st.sampled_from(sorted(EXTENSION_HEADERS)), max_size=9))
    upper = draw(st.sampled_from([TCP, UDP, ICMPV6, 33, 132, 136, 59, 135]) | st.integers(0, 255))
    chain = [*kinds, upper]
    headers = b""
    for kind, next_header in pairwise(chain):
        body = draw(EXTENSION_HEADERS[kind])
        if kind != 44 and draw(st.integers(0, 3)):
            body = framed(body)
        headers += bytes((next_header,)) + body
    payload = draw(
        st.binary(max_size=24)
        | st.sampled_from([b"\x80" + bytes(7), b"\x81" + bytes(7), tcp_header(1, 2, 0x02)])
    )
    src, dst = draw(st.sampled_from([(HOA, CN), (CN, HOA), (COA, CN), (CN, COA)]))
    return ipv6_packet(src, dst, chain[0], headers + payload)


packets = mutations(PACKET_SEEDS) | chained_packets() | st.binary(max_size=120)


def test_packet_seeds_are_accepted() -> None:
    for packet in [*WITH_HAO, g.PACKET_BU_HAO, g.PACKET_BU_RR_HAO]:
        coa, hoa, inner = remove_home_address_option_untrusted(packet)
        assert (coa, hoa) == (packet[8:24], inner[8:24])
    for packet in [*WITH_RH2, g.PACKET_BA_RH2]:
        hoa, inner = remove_type2_routing_header_untrusted(packet)
        assert hoa == inner[24:40]
    for packet in PACKET_SEEDS:
        for from_mn in (True, False):
            assert isinstance(flow_key_untrusted(packet, from_mn=from_mn), FlowKey)
    # The CN opens the echo request and the SYN, not the reply or the SYN-ACK.
    assert [opened_by_cn_untrusted(p) is not None for p in TO_MN] == [
        False,
        True,
        False,
        False,
        True,
    ]
    assert flow_key_untrusted(CHAINED[2], from_mn=True).home_address == HOA.packed
    assert flow_key_untrusted(CHAINED[3], from_mn=False) == FlowKey(HOA.packed, TCP, 22, 40002)
    assert flow_key_untrusted(CHAINED[1], from_mn=False) == FlowKey(HOA.packed, TCP, NO_ID, NO_ID)


@fuzz_settings(500)
@given(mutations([*WITH_HAO, *WITH_RH2, *CHAINED, g.PACKET_BU_HAO, g.PACKET_BA_RH2]) | packets)
def test_route_optimisation_rewrites(data: bytes) -> None:
    """What is accepted comes back as a consistent packet: payload length right, the address
    from the removed header in place, nothing but that header gone."""
    without_hao = accepts(remove_home_address_option_untrusted, data)
    if without_hao is not None:
        coa, hoa, inner = without_hao
        header_length = (data[41] + 1) * 8
        assert coa == data[8:24] and inner[8:24] == hoa and len(hoa) == 16
        assert len(inner) == len(data) - header_length == 40 + int.from_bytes(inner[4:6], "big")
        assert inner[6] == data[40] and inner[40:] == data[40 + header_length :]
    without_rh2 = accepts(remove_type2_routing_header_untrusted, data)
    if without_rh2 is not None:
        hoa, inner = without_rh2
        assert inner[24:40] == hoa == data[48:64] and inner[8:24] == data[8:24]
        assert len(inner) == len(data) - 24 == 40 + int.from_bytes(inner[4:6], "big")
        assert inner[6] == data[40] and inner[40:] == data[64:]


def valid_key(key: FlowKey) -> bool:
    return (
        len(key.home_address) == 16
        and 0 <= key.protocol <= 255
        and all(NO_ID <= i <= 0xFFFF for i in (key.cn_id, key.mn_id))
    )


@fuzz_settings(500)
@given(packets)
@example(CHAINED[2][:-1])  # the echo identifier cut short
def test_flow_keys(data: bytes) -> None:
    for from_mn in (True, False):
        key = accepts(partial(flow_key_untrusted, from_mn=from_mn), data)
        assert key is None or (isinstance(key, FlowKey) and valid_key(key))
    opened = accepts(opened_by_cn_untrusted, data)
    if opened is not None:
        # The flow a CN opens is the flow the same packet belongs to.
        assert isinstance(opened, FlowKey) and opened.protocol in (TCP, ICMPV6)
        assert opened == flow_key_untrusted(data, from_mn=False)


@fuzz_settings(400)
@given(packets)
def test_home_address_and_rh2_of_a_parsed_packet(data: bytes) -> None:
    packet = accepts(parse_ipv6_packet_untrusted, data)
    if packet is None:
        return
    hoa = accepts(home_address_of_untrusted, packet)
    assert hoa is None or isinstance(hoa, IPv6Address)
    rh2 = accepts(rh2_of_untrusted, packet)
    assert rh2 is None or rh2.segments_left in (0, 1)


# -- MH options with their offsets (wire/mh.py) -----------------------------------------------

OPTION_TYPES: dict[type, int] = {
    BindingRefreshAdvice: OptionType.BINDING_REFRESH_ADVICE,
    AlternateCareOfAddress: OptionType.ALTERNATE_CARE_OF_ADDRESS,
    NonceIndices: OptionType.NONCE_INDICES,
    BindingAuthorizationData: OptionType.BINDING_AUTHORIZATION_DATA,
    MnHaAuth: OptionType.AUTH,
    MesgId: OptionType.MESG_ID,
    ExperimentalOption: OptionType.EXPERIMENTAL,
}


# The MH decoders past the checksum (mutations rarely keep it right).
decode_without_checksum = partial(decode_mh_untrusted, src=ZERO, dst=ZERO, verify_checksum=False)
decode_with_offsets = partial(
    decode_mh_with_offsets_untrusted, src=ZERO, dst=ZERO, verify_checksum=False
)


SHARE = KeyShare(SUITE_AES_GCM, 0x8000_1234, bytes(range(32)))
BU_WITH_SHARE = encode_mh(
    BindingUpdate(
        sequence=9,
        lifetime=150,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(COA), key_share_option(SHARE), MesgId(1 << 63)),
    ),
    HOA,
    g.HA,
)
MH_SEEDS = [
    g.BRR,
    g.BU_HOME,
    g.BU_ALL_FLAGS,
    g.BA_WITH_BRA,
    g.BA_PADDED,
    g.BE,
    g.BU_AUTH,
    g.HOT,
    g.BU_RR,
    g.BA_RR,
    g.EXPERIMENTAL_MICE,
    BU_WITH_SHARE,
]


@fuzz_settings(500)
@given(mutations(MH_SEEDS))
def test_mh_option_offsets(data: bytes) -> None:
    """Each offset points at its option: the right type octet, a length that fits, and the
    octets the option was decoded from."""
    decoded = accepts(decode_with_offsets, data)
    if decoded is None:
        return
    msg, offsets = decoded
    options = getattr(msg, "options", ())
    assert len(offsets) == len(options)
    assert list(offsets) == sorted(set(offsets))
    for option, offset in zip(options, offsets, strict=True):
        assert offset >= 6 and offset + 2 + data[offset + 1] <= len(data)
        body = data[offset + 2 : offset + 2 + data[offset + 1]]
        if isinstance(option, UnknownOption):
            assert (option.type, option.data) == (data[offset], body)
            assert option.type not in OPTION_TYPES.values() and option.type > 1
        else:
            assert data[offset] == OPTION_TYPES[type(option)]
        if isinstance(option, ExperimentalOption):
            assert option.data == body
        if isinstance(option, BindingAuthorizationData):
            assert option.authenticator == body
    assert decode_without_checksum(data) == msg


# -- the ESP key share (wire/keyshare.py) -----------------------------------------------------


def ours(option: MobilityOption) -> bool:
    """An Experimental option the key-share parser must judge (type 5 TLV)."""
    return (
        isinstance(option, ExperimentalOption)
        and len(option.data) >= 2
        and option.data[0] == TLV_KEY_SHARE
    )


share_options = st.builds(
    KeyShare,
    st.sampled_from([SUITE_AES_GCM, SUITE_CHACHA20_POLY1305]),
    st.integers(0x8000_0000, 0xFFFF_FFFF),
    st.binary(min_size=32, max_size=32),
).map(key_share_option)
mobility_options: st.SearchStrategy[MobilityOption] = st.one_of(
    share_options,
    share_options.flatmap(lambda o: mutations([o.data]).map(ExperimentalOption)),
    st.binary(max_size=40).map(lambda b: ExperimentalOption(bytes((TLV_KEY_SHARE,)) + b)),
    st.binary(max_size=40).map(ExperimentalOption),
    st.just(mice_options([Credentials("abcd", "p" * 22)])[0]),
    st.builds(MesgId, st.integers(0, (1 << 64) - 1)),
    st.just(AlternateCareOfAddress(COA)),
    st.builds(UnknownOption, st.integers(11, 17), st.binary(max_size=8)),
)


@fuzz_settings(400)
@given(st.lists(mobility_options, max_size=5))
def test_key_share_among_options(options: list[MobilityOption]) -> None:
    """None without a share, the share when there is exactly one and it is valid, BadPacket
    (``bad_key_share``) for two or for a malformed one; other experiments' options are ignored."""
    candidates = [o for o in options if ours(o)]
    try:
        found = key_share_from_options_untrusted(options)
    except BadPacket as exc:
        assert exc.reason == "bad_key_share" and candidates
        return
    if candidates:
        assert found is not None and candidates == [key_share_option(found)]
    else:
        assert found is None


@fuzz_settings(300)
@given(mutations([BU_WITH_SHARE]))
def test_key_share_of_a_mutated_bu(data: bytes) -> None:
    msg = accepts(decode_without_checksum, data)
    if msg is None:
        return
    accepts(key_share_from_options_untrusted, getattr(msg, "options", ()))


# -- ESP (tunnels/esp.py) ---------------------------------------------------------------------

ESP_SPI = 0x8000_0100
SUITES = (SUITE_AES_GCM, SUITE_CHACHA20_POLY1305)
KEYMAT = {suite: bytes(range(7, 7 + key_length(suite))) for suite in SUITES}
ESP_PAYLOADS = [(b"", 59), (b"\x60" + bytes(39), 41), (bytes(range(256)) * 5 + b"x", 4)]
REPLAY_SEQUENCES = 80


def sealed(suite: int, payloads: Sequence[tuple[bytes, int]]) -> list[bytes]:
    """``payloads`` sealed in order by one outbound SA (sequence numbers 1, 2, ...)."""
    sa = EspOutbound(suite, ESP_SPI, KEYMAT[suite])
    packets = []
    for payload, nh in payloads:
        packet = sa.seal(payload, nh)
        assert packet is not None
        packets.append(packet)
    return packets


# (suite, payload, next header, packet)
ESP_SEEDS = [
    (suite, payload, nh, packet)
    for suite in SUITES
    for (payload, nh), packet in zip(ESP_PAYLOADS, sealed(suite, ESP_PAYLOADS), strict=True)
]
NUMBERED = [(seq.to_bytes(2, "big"), 17) for seq in range(1, REPLAY_SEQUENCES + 1)]
SEALED = {suite: sealed(suite, NUMBERED) for suite in SUITES}


def inbound(suite: int) -> EspInbound:
    return EspInbound(suite, ESP_SPI, KEYMAT[suite], window=MIN_REPLAY_WINDOW)


def test_esp_seeds_open_once() -> None:
    for suite, payload, nh, packet in ESP_SEEDS:
        sa = inbound(suite)
        assert sa.open_untrusted(packet) == (nh, payload)
        with pytest.raises(BadPacket, match="esp_replay"):
            sa.open_untrusted(packet)


@fuzz_settings(500)
@given(st.sampled_from(range(len(ESP_SEEDS))), st.data())
def test_a_changed_esp_packet_is_never_accepted(index: int, data: st.DataObject) -> None:
    """Forgeries are refused and leave the window alone: the genuine packet still opens after
    them, once; a replay of it is refused."""
    suite, payload, nh, packet = ESP_SEEDS[index]
    sa = inbound(suite)
    forged = data.draw(st.lists(mutations([packet]), min_size=1, max_size=3))
    opened = False
    for candidate in forged:
        result = accepts(sa.open_untrusted, candidate)
        if candidate != packet or opened:
            assert result is None, candidate.hex()
        else:
            assert result == (nh, payload)
            opened = True
    if not opened:
        assert sa.open_untrusted(packet) == (nh, payload)
    with pytest.raises(BadPacket, match="esp_replay"):
        sa.open_untrusted(packet)


@fuzz_settings(200)
@given(
    st.sampled_from(SUITES),
    st.lists(st.integers(1, REPLAY_SEQUENCES), max_size=60),
)
def test_anti_replay_window_against_a_model(suite: int, order: list[int]) -> None:
    """RFC 4303 §3.4.3: a number is accepted once, and only while it is inside the window that
    ends at the highest number accepted."""
    sa = inbound(suite)
    seen: set[int] = set()
    top = 0
    for seq in order:
        result = accepts(sa.open_untrusted, SEALED[suite][seq - 1])
        fresh = seq not in seen and seq > top - MIN_REPLAY_WINDOW
        assert (result is not None) == fresh, (seq, top)
        if fresh:
            assert result == (17, seq.to_bytes(2, "big"))
            seen.add(seq)
            top = max(top, seq)


def seal_by_hand(suite: int, seq: int, plaintext: bytes) -> bytes:
    """An authentic ESP packet around ``plaintext`` as it is (trailer included), sealed here
    with the AEAD directly (RFC 4106 §3-§5, RFC 7634 §2): nonce = salt || IV, AAD = SPI || seq."""
    keymat = KEYMAT[suite]
    key, salt = keymat[:-4], keymat[-4:]
    aead = AESGCM(key) if suite == SUITE_AES_GCM else ChaCha20Poly1305(key)
    header, iv = struct.pack("!II", ESP_SPI, seq), struct.pack("!Q", seq)
    return header + iv + aead.encrypt(salt + iv, plaintext, header)


@fuzz_settings(300)
@given(
    st.sampled_from(SUITES),
    st.integers(1, 0xFFFF_FFFF),
    st.binary(max_size=40),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from(["right", "short", "raw"]),
)
def test_authentic_esp_with_any_trailer(
    suite: int, seq: int, body: bytes, pad: int, nh: int, how: str
) -> None:
    """What only a key holder can send: any plaintext, padding and pad length. The right
    RFC 4303 §2.4 trailer opens to the payload; anything else is refused (``esp_bad_trailer``
    once long enough to be opened at all) unless it happens to end in a well-formed trailer,
    and counts as received either way."""
    padding = bytes(range(1, pad + 1))
    plaintext = {
        "right": body + padding + bytes((pad, nh)),
        "short": body + padding[: pad // 2] + bytes((pad, nh)),
        "raw": body,  # the trailer is whatever the last two octets are
    }[how]
    packet = seal_by_hand(suite, seq, plaintext)
    sa = inbound(suite)
    try:
        opened = sa.open_untrusted(packet)
    except BadPacket as exc:
        assert how != "right"
        assert exc.reason == ("esp_truncated" if len(plaintext) < 2 else "esp_bad_trailer")
        if exc.reason == "esp_bad_trailer":
            with pytest.raises(BadPacket, match="esp_replay"):
                sa.open_untrusted(packet)
        return
    if how == "right":
        assert opened == (nh, body)
    pad_length = plaintext[-2]
    payload_end = len(plaintext) - 2 - pad_length
    assert opened == (plaintext[-1], plaintext[:payload_end])
    assert plaintext[payload_end:-2] == bytes(range(1, pad_length + 1))
    with pytest.raises(BadPacket, match="esp_replay"):
        sa.open_untrusted(packet)
