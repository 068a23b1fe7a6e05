"""M-ICE candidate-exchange TLVs (DESIGN §3), carried in Experimental Mobility Options, pure.

mipnode's own compact layout; the MIP-ICE option of draft-tschofenig-mip6-ice is not used (see
reference/protocol.md §3.4 for why). The data is a sequence of TLVs, no padding, no alignment::

    +--------+--------+----------------------------+
    | Type 8 | Len 8  | Value (Len octets)         |
    +--------+--------+----------------------------+

    Type 1  Credentials       Ufrag Len 8 | ufrag | password (the rest of the value)
    Type 2  Candidate         Priority 32 | Port 16 | Kind 8 | Family 8 | Address 32 or 128
                              | foundation (the rest of the value)
    Type 3  EndOfCandidates   empty value
    Type 4  AnswerTo          ufrag of the offer this description answers (absent: an offer)
    Type 5  KeyShare          Suite 8 | SPI 32 | X25519 public key 256 (wire/keyshare.py): the
                              ESP key exchange of a protected D-udp path
    Type 6  Padding           zeros: an offer pays for the checks it asks for (amplification)

Kind: 1 host, 2 srflx, 3 prflx, 4 relay. Family: 4 (IPv4, 4 address octets) or 6 (IPv6, 16).
Integers are big-endian; strings are ASCII. Unknown TLV types are skipped (a newer peer may add
some). Limits, checked when encoding (ValueError) and decoding (``BadPacket("bad_mice")``):

- ufrag 4-32 ice-chars, password 22-256 ice-chars (RFC 8839 §5.4 grammar: ice-char is ALPHA /
  DIGIT / "+" / "/"; RFC 8839 allows a ufrag of up to 256, mipnode caps it at 32), and the
  Credentials value must fit the 8-bit length (1 + ufrag + password <= 255 octets);
- foundation 1-32 ice-chars (RFC 8839 §5.1), priority 1 to 2**31 - 1 (RFC 8445 §5.1.2.1), port
  1-65535.

An Experimental option holds at most 255 octets, so :func:`mice_options` cuts the encoded TLVs
into as many options as needed (a TLV may straddle two), and :func:`mice_from_options_untrusted`
joins the data of the message's Experimental options, in order, before decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from mipnode.wire.errors import BadPacket
from mipnode.wire.keyshare import (
    TLV_KEY_SHARE,
    KeyShare,
    key_share_from_value_untrusted,
    key_share_value,
)
from mipnode.wire.mh import ExperimentalOption, MobilityOption

TLV_CREDENTIALS = 1
TLV_CANDIDATE = 2
TLV_END_OF_CANDIDATES = 3
TLV_ANSWER_TO = 4
TLV_PADDING = 6

CANDIDATE_KINDS = ("host", "srflx", "prflx", "relay")  # wire codes 1-4, in this order
FAMILY_IPV4 = 4
FAMILY_IPV6 = 6

UFRAG_MIN, UFRAG_MAX = 4, 32
PASSWORD_MIN, PASSWORD_MAX = 22, 256
FOUNDATION_MIN, FOUNDATION_MAX = 1, 32
PRIORITY_MAX = 2**31 - 1
MAX_OPTION_DATA = 255

_ICE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_CANDIDATE_FIXED = struct.Struct("!IHBB")  # priority, port, kind, family


@dataclass(frozen=True, slots=True)
class Credentials:
    """ICE username fragment and password of the sender (RFC 8445 §5.3)."""

    ufrag: str
    password: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """One local candidate of the sender (RFC 8445 §5.1); ``kind`` is one of
    :data:`CANDIDATE_KINDS`."""

    foundation: str
    priority: int
    kind: str
    address: IPv4Address | IPv6Address
    port: int


@dataclass(frozen=True, slots=True)
class EndOfCandidates:
    """The sender has no more candidates to offer."""


@dataclass(frozen=True, slots=True)
class AnswerTo:
    """This description answers the offer whose ufrag is ``ufrag``. An answer is accepted only
    by the node with that offer outstanding (an off-path sender never saw the ufrag: offers
    travel between the home address and the correspondent, through the home agent), and an
    answer is never answered, so two nodes cannot trade descriptions for ever."""

    ufrag: str


MiceItem = Credentials | Candidate | EndOfCandidates | AnswerTo | KeyShare

# Encoding -----------------------------------------------------------------------------------


def _ice_string(value: str, low: int, high: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {value!r}")
    data = value.encode("ascii", "replace")
    if not low <= len(data) <= high or not set(data) <= _ICE_CHARS:
        raise ValueError(f"{what} must be {low}-{high} ice-chars, got {value!r}")
    return data


def _encode_item(item: MiceItem) -> bytes:
    match item:
        case Credentials(ufrag=ufrag, password=password):
            u = _ice_string(ufrag, UFRAG_MIN, UFRAG_MAX, "ufrag")
            p = _ice_string(password, PASSWORD_MIN, PASSWORD_MAX, "password")
            tlv_type, value = TLV_CREDENTIALS, bytes((len(u),)) + u + p
        case Candidate(foundation=foundation, priority=priority, kind=kind, address=address):
            if not 1 <= priority <= PRIORITY_MAX:
                raise ValueError(f"candidate priority out of range: {priority}")
            if not 1 <= item.port <= 0xFFFF:
                raise ValueError(f"candidate port out of range: {item.port}")
            if kind not in CANDIDATE_KINDS:
                raise ValueError(f"unknown candidate kind {kind!r}")
            if isinstance(address, IPv4Address):
                family = FAMILY_IPV4
            elif isinstance(address, IPv6Address):
                family = FAMILY_IPV6
            else:
                raise ValueError(f"not an IP address: {address!r}")
            fixed = _CANDIDATE_FIXED.pack(
                priority, item.port, CANDIDATE_KINDS.index(kind) + 1, family
            )
            found = _ice_string(foundation, FOUNDATION_MIN, FOUNDATION_MAX, "foundation")
            tlv_type, value = TLV_CANDIDATE, fixed + address.packed + found
        case EndOfCandidates():
            tlv_type, value = TLV_END_OF_CANDIDATES, b""
        case AnswerTo(ufrag=ufrag):
            tlv_type, value = TLV_ANSWER_TO, _ice_string(ufrag, UFRAG_MIN, UFRAG_MAX, "ufrag")
        case KeyShare():
            tlv_type, value = TLV_KEY_SHARE, key_share_value(item)
        case _:
            raise ValueError(f"not an M-ICE item: {item!r}")
    if len(value) > 255:
        raise ValueError(f"{type(item).__name__} of {len(value)} octets does not fit a TLV")
    return bytes((tlv_type, len(value))) + value


def encode_mice(items: Iterable[MiceItem]) -> bytes:
    """The TLVs of ``items``, in order.

    Raises:
        ValueError: an item is not an M-ICE item, or breaks a limit of the module docstring.
    """
    return b"".join(_encode_item(item) for item in items)


def padding_options(octets: int) -> tuple[ExperimentalOption, ...]:
    """Experimental options of Padding TLVs (skipped by every decoder as unknown-to-use) that
    add about ``octets`` on the wire (nothing for ``octets`` < 4)."""
    out = []
    while octets >= 4:
        value = min(octets - 4, MAX_OPTION_DATA - 2)
        out.append(ExperimentalOption(bytes((TLV_PADDING, value)) + bytes(value)))
        octets -= value + 4
    return tuple(out)


def mice_options(items: Iterable[MiceItem]) -> tuple[ExperimentalOption, ...]:
    """``encode_mice(items)`` cut into Experimental options of at most 255 octets each (none
    for no items)."""
    data = encode_mice(items)
    return tuple(
        ExperimentalOption(data[i : i + MAX_OPTION_DATA])
        for i in range(0, len(data), MAX_OPTION_DATA)
    )


# Decoding -----------------------------------------------------------------------------------


def _decode_ice_string(data: bytes, low: int, high: int, what: str) -> str:
    if not low <= len(data) <= high or not set(data) <= _ICE_CHARS:
        raise BadPacket("bad_mice", f"{what} of {len(data)} octets or not ice-chars")
    return data.decode("ascii")


def _decode_credentials(value: bytes) -> Credentials:
    if not value or 1 + value[0] > len(value):
        raise BadPacket("bad_mice", "credentials shorter than their ufrag length")
    ufrag = _decode_ice_string(value[1 : 1 + value[0]], UFRAG_MIN, UFRAG_MAX, "ufrag")
    password = value[1 + value[0] :]
    return Credentials(ufrag, _decode_ice_string(password, PASSWORD_MIN, PASSWORD_MAX, "password"))


def _decode_candidate(value: bytes) -> Candidate:
    if len(value) < _CANDIDATE_FIXED.size:
        raise BadPacket("bad_mice", f"candidate of {len(value)} octets")
    priority, port, kind, family = _CANDIDATE_FIXED.unpack_from(value)
    if not 1 <= priority <= PRIORITY_MAX or port == 0:
        raise BadPacket("bad_mice", f"candidate priority {priority} port {port}")
    if not 1 <= kind <= len(CANDIDATE_KINDS):
        raise BadPacket("bad_mice", f"candidate kind {kind}")
    start = _CANDIDATE_FIXED.size
    address: IPv4Address | IPv6Address
    if family == FAMILY_IPV4 and len(value) >= start + 4:
        address, foundation = IPv4Address(value[start : start + 4]), value[start + 4 :]
    elif family == FAMILY_IPV6 and len(value) >= start + 16:
        address, foundation = IPv6Address(value[start : start + 16]), value[start + 16 :]
    else:
        raise BadPacket("bad_mice", f"candidate family {family} in {len(value)} octets")
    return Candidate(
        foundation=_decode_ice_string(foundation, FOUNDATION_MIN, FOUNDATION_MAX, "foundation"),
        priority=priority,
        kind=CANDIDATE_KINDS[kind - 1],
        address=address,
        port=port,
    )


def decode_mice_untrusted(data: bytes) -> tuple[MiceItem, ...]:
    """Decode a sequence of M-ICE TLVs (exactly ``data``; empty data is no items).

    Raises:
        BadPacket: ``truncated`` (a TLV header or value runs past the end), ``bad_mice`` (a
            known TLV breaks its layout or a limit of the module docstring).
    """
    data = bytes(data)
    items: list[MiceItem] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 2 or len(data) - offset - 2 < data[offset + 1]:
            raise BadPacket("truncated", f"M-ICE TLV at {offset} overruns the data")
        tlv_type, length = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if tlv_type == TLV_CREDENTIALS:
            items.append(_decode_credentials(value))
        elif tlv_type == TLV_CANDIDATE:
            items.append(_decode_candidate(value))
        elif tlv_type == TLV_END_OF_CANDIDATES:
            if length:
                raise BadPacket("bad_mice", f"end-of-candidates of length {length}")
            items.append(EndOfCandidates())
        elif tlv_type == TLV_ANSWER_TO:
            items.append(AnswerTo(_decode_ice_string(value, UFRAG_MIN, UFRAG_MAX, "ufrag")))
        elif tlv_type == TLV_KEY_SHARE:
            try:
                items.append(key_share_from_value_untrusted(value))
            except BadPacket as exc:
                raise BadPacket("bad_mice", exc.detail) from None
        offset += 2 + length
    return tuple(items)


def mice_from_options_untrusted(options: Iterable[MobilityOption]) -> tuple[MiceItem, ...]:
    """Decode the M-ICE items in the Experimental options among ``options`` (a decoded
    message's options), their data joined in order; other options are ignored.

    Raises:
        BadPacket: see :func:`decode_mice_untrusted`.
    """
    return decode_mice_untrusted(
        b"".join(o.data for o in options if isinstance(o, ExperimentalOption))
    )
