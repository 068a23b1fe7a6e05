"""Robustness of every ``*_untrusted`` parser: a result or BadPacket, never anything else.

Inputs: arbitrary bytes, golden packets with structure-blind mutations (bit flips, byte sets,
length-field edits, truncation, splicing), a deterministic byte-walk, and every strict prefix of
every golden (which must be rejected). Decoded MHs must re-encode to something that decodes to
the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address

import pytest
import wire_goldens as g
from encap import decapsulate_untrusted
from fuzzkit import mutations
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.wire.auth4285 import verify_mh_authenticated
from mipnode.wire.bad import verify_bad
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    parse_destination_options_untrusted,
    parse_rh2_untrusted,
    pseudo_header_addresses_untrusted,
)
from mipnode.wire.icmpv6 import parse_echo_untrusted
from mipnode.wire.ipv6 import (
    NH_MH,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
)
from mipnode.wire.mh import BindingAuthorizationData, MnHaAuth, decode_mh_untrusted, encode_mh
from mipnode.wire.mice import decode_mice_untrusted, encode_mice, mice_from_options_untrusted
from tunnels.demux import classify_udp_payload_untrusted

FUZZ = settings(max_examples=400, deadline=None, derandomize=True)

ZERO = IPv6Address(0)


def mh_no_checksum(data: bytes) -> object:
    return decode_mh_untrusted(data, ZERO, ZERO, verify_checksum=False)


def mh_with_checksum(data: bytes) -> object:
    return decode_mh_untrusted(data, g.HOA, g.HA)


def whole_packet(data: bytes) -> object:
    """The receive path of a node: IPv6, HAO/RH2, then the MH or an echo or a tunnel."""
    packet = parse_ipv6_packet_untrusted(data)
    src, dst = pseudo_header_addresses_untrusted(packet)
    if packet.upper_protocol == NH_MH:
        return decode_mh_untrusted(packet.payload, src, dst)
    return packet


def verify_auth(data: bytes) -> object:
    result = verify_mh_authenticated(data, key=g.KEY, coa=g.COA, hoa=g.HOA)
    assert isinstance(result, bool)
    return result


def verify_rr(data: bytes) -> object:
    result = verify_bad(data, kbm=g.KBM, coa=g.COA, cn=g.CN)
    assert isinstance(result, bool)
    return result


def mh_mice(data: bytes) -> object:
    """The candidate-exchange receive path: the MH, then the M-ICE TLVs of its options."""
    return mice_from_options_untrusted(mh_no_checksum(data).options)  # type: ignore[attr-defined]


PARSERS: dict[str, Callable[[bytes], object]] = {
    "ipv6_header": parse_ipv6_header_untrusted,
    "ipv6_packet": parse_ipv6_packet_untrusted,
    "whole_packet": whole_packet,
    "dest_opts": parse_destination_options_untrusted,
    "rh2": parse_rh2_untrusted,
    "mh": mh_no_checksum,
    "mh_checksum": mh_with_checksum,
    "echo": parse_echo_untrusted,
    "ip6ip6": decapsulate_untrusted,
    "udp_demux": classify_udp_payload_untrusted,
    "auth": verify_auth,
    "bad": verify_rr,
    "mice": decode_mice_untrusted,
    "mh_mice": mh_mice,
}

# Each golden with the parsers that accept it whole.
GOLDENS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "brr": (g.BRR, ("mh",)),
    "bu_home": (g.BU_HOME, ("mh", "mh_checksum")),
    "bu_minimal": (g.BU_MINIMAL, ("mh", "mh_checksum")),
    "bu_all_flags": (g.BU_ALL_FLAGS, ("mh", "mh_checksum")),
    "ba_bra": (g.BA_WITH_BRA, ("mh",)),
    "ba_plain": (g.BA_PLAIN, ("mh",)),
    "ba_padded": (g.BA_PADDED, ("mh",)),
    "be": (g.BE, ("mh",)),
    "bu_auth": (g.BU_AUTH, ("mh", "mh_checksum", "auth")),
    "hao_header": (g.HAO_HEADER, ("dest_opts",)),
    "rh2_header": (g.RH2_HEADER, ("rh2",)),
    "packet_bu_hao": (g.PACKET_BU_HAO, ("ipv6_packet", "whole_packet")),
    "packet_ba_rh2": (g.PACKET_BA_RH2, ("ipv6_packet", "whole_packet")),
    "echo": (g.ECHO_REQUEST, ("ipv6_packet", "whole_packet", "echo")),
    "ip6ip6": (g.IP6IP6, ("ipv6_packet", "whole_packet", "ip6ip6")),
    "udp6": (g.UDP6_ENCAP, ("ipv6_packet", "whole_packet")),
    "stun": (g.STUN_BINDING_REQUEST, ("udp_demux",)),
    "hoti": (g.HOTI, ("mh",)),
    "coti": (g.COTI, ("mh",)),
    "hot": (g.HOT, ("mh",)),
    "cot": (g.COT, ("mh",)),
    "bu_rr": (g.BU_RR, ("mh", "bad")),
    "ba_rr": (g.BA_RR, ("mh", "bad")),
    "packet_bu_rr_hao": (g.PACKET_BU_RR_HAO, ("ipv6_packet", "whole_packet")),
    "experimental_empty": (g.EXPERIMENTAL_EMPTY, ("mh", "mh_mice")),
    "experimental_mice": (g.EXPERIMENTAL_MICE, ("mh", "mh_mice")),
    "mice_credentials": (g.MICE_CREDENTIALS, ("mice",)),
    "mice_candidate_v4": (g.MICE_CANDIDATE_V4, ("mice",)),
    "mice_candidate_v6": (g.MICE_CANDIDATE_V6, ("mice",)),
    "mice_end": (g.MICE_END, ("mice",)),
    "mice": (g.MICE, ("mice",)),
}
MICE_TLV_ENDS = (0, 31, 46, 74, 76)  # TLV boundaries in g.MICE
GOLDEN_BYTES = [golden for golden, _ in GOLDENS.values()]


def accepts(parser: Callable[[bytes], object], data: bytes) -> bool:
    """Run ``parser``; True if it returned, False on BadPacket; anything else propagates."""
    try:
        result = parser(data)
    except BadPacket as exc:
        assert exc.reason and exc.reason == exc.reason.strip().lower()
        return False
    return result is not False


@pytest.mark.parametrize(("name", "parsers"), [(k, v[1]) for k, v in GOLDENS.items()])
def test_goldens_are_accepted(name: str, parsers: tuple[str, ...]) -> None:
    for parser in parsers:
        assert accepts(PARSERS[parser], GOLDENS[name][0]), parser


@pytest.mark.parametrize(("name", "parsers"), [(k, v[1]) for k, v in GOLDENS.items()])
def test_every_strict_prefix_is_rejected(name: str, parsers: tuple[str, ...]) -> None:
    golden = GOLDENS[name][0]
    for parser_name in parsers:
        parser = PARSERS[parser_name]
        for end in range(len(golden)):
            prefix = golden[:end]
            if parser_name in ("auth", "bad"):
                assert parser(prefix) is False
                continue
            if parser_name == "mice" and end in (MICE_TLV_ENDS if name == "mice" else (0,)):
                # Cut at a TLV boundary: a shorter valid sequence (see the next test).
                assert isinstance(parser(prefix), tuple)
                continue
            with pytest.raises(BadPacket):
                parser(prefix)


@pytest.mark.parametrize("name", list(GOLDENS))
def test_byte_walk(name: str) -> None:
    """Every offset set to 0x00, 0xFF and +1, through every parser."""
    golden = GOLDENS[name][0]
    for offset in range(len(golden)):
        for value in {0x00, 0xFF, (golden[offset] + 1) & 0xFF}:
            mutated = golden[:offset] + bytes((value,)) + golden[offset + 1 :]
            for parser in PARSERS.values():
                accepts(parser, mutated)


def test_mice_prefixes_end_on_tlv_boundaries_or_are_rejected() -> None:
    """A sequence of TLVs cut at a TLV boundary is a shorter valid sequence; anywhere else, it
    is rejected."""
    items = decode_mice_untrusted(g.MICE)
    for end in range(len(g.MICE) + 1):
        if end in MICE_TLV_ENDS:
            assert decode_mice_untrusted(g.MICE[:end]) == items[: MICE_TLV_ENDS.index(end)]
        else:
            with pytest.raises(BadPacket):
                decode_mice_untrusted(g.MICE[:end])


@FUZZ
@given(st.binary(max_size=1500))
def test_arbitrary_bytes(data: bytes) -> None:
    for parser in PARSERS.values():
        accepts(parser, data)


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"\x3b" + bytes((len(b) // 8,)) + b))
def test_arbitrary_mh_shaped_bytes(data: bytes) -> None:
    """Bytes with Payload Proto 59 and a plausible Header Len reach the option parser."""
    accepts(PARSERS["mh"], data)
    accepts(PARSERS["auth"], data)
    accepts(PARSERS["bad"], data)
    accepts(PARSERS["mh_mice"], data)


mice_tlvs = st.lists(
    st.tuples(st.sampled_from([1, 2, 3, 42]), st.binary(max_size=40)).map(
        lambda t: bytes((t[0], len(t[1]))) + t[1]
    ),
    max_size=6,
).map(b"".join)


@FUZZ
@given(mice_tlvs | st.binary(max_size=120))
def test_arbitrary_mice_shaped_bytes(data: bytes) -> None:
    """Well-framed TLVs of the known types with arbitrary values reach the value checks; what
    decodes re-encodes to the same items."""
    try:
        items = decode_mice_untrusted(data)
    except BadPacket as exc:
        assert exc.reason in ("truncated", "bad_mice")
        return
    assert decode_mice_untrusted(encode_mice(items)) == items


def mutated_goldens() -> st.SearchStrategy[bytes]:
    return mutations(GOLDEN_BYTES)


@FUZZ
@given(mutated_goldens())
def test_mutated_goldens(data: bytes) -> None:
    for parser in PARSERS.values():
        accepts(parser, data)


@FUZZ
@given(mutated_goldens())
def test_decoded_mh_re_encodes_to_the_same_message(data: bytes) -> None:
    try:
        msg = mh_no_checksum(data)
    except BadPacket:
        return
    try:
        encoded = encode_mh(msg, g.HOA, g.HA)  # type: ignore[arg-type]
    except ValueError:
        # The encoder refuses an MN-HA auth or BAD option that is not last (or whose length
        # cannot end the MH), and re-padding may push a near-maximal MH past 2048 octets.
        last_only = MnHaAuth | BindingAuthorizationData
        assert any(isinstance(o, last_only) for o in msg.options) or len(data) > 1800
        return
    assert decode_mh_untrusted(encoded, g.HOA, g.HA) == msg
