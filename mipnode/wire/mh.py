"""Mobility Header codec (RFC 6275 §6.1, §6.2; options 9 and 10 of RFC 4285; RFC 5096; NEMO's
R flags and Mobile Network Prefix option, RFC 3963 §4; DSMIPv6's IPv4 Home Address and IPv4
Address Acknowledgement options, RFC 5555 §3.1.1, §3.2.1), pure.

Theory of operation. An MH is a 6-octet common header (Payload Proto, Header Len, MH Type,
Reserved, Checksum), a fixed part per type, then mobility options up to a length that is a
multiple of 8 octets. :func:`encode_mh` inserts Pad1/PadN so every option meets its alignment
rule ("xn+y": the Type octet sits y octets past a multiple of x from the MH start, §6.2), pads the
end to 8 octets and computes the checksum over the pseudo-header (§6.1.1). The MN-HA
authentication option (RFC 4285 §5) and the Binding Authorization Data option (RFC 6275 §6.2.7)
must be last with no padding after it, so the encoder pads *before* such an option to make the MH
end on an 8-octet boundary.

:func:`decode_mh_untrusted` is strict about framing (Payload Proto 59, Header Len matching the
buffer exactly, fixed part present, options never overrunning, known options with their RFC
lengths) and lenient where the RFCs ask for it: unknown options are kept as
:class:`UnknownOption` (§6.2.1: skipped by the receiver), unknown MH types become
:class:`UnknownMobilityMessage` so the receiver can answer Binding Error status 2 (§9.2), and
reserved bits are ignored.

Decoded types: BRR, HoTI, CoTI, HoT, CoT, BU, BA, BE (RFC 6275 §6.1.2-§6.1.9) and the
Experimental MH (RFC 5096 §3). RFC 5096 leaves the Experimental message's Message Data to the
experiment; mipnode's experiment defines it as a sequence of mobility options starting right after
the checksum (offset 6), padded with Pad1/PadN like any other MH, so
``ExperimentalMessage(options=(ExperimentalOption(...), ...))`` carries our payload and an MH 11
whose data is not a well-formed option sequence is ``bad_option``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_MH, NH_NONE, AddressLike, internet_checksum, pseudo_header

# Specification constants --------------------------------------------------------------------

MH_COMMON_HEADER_LENGTH = 6
MH_CHECKSUM_OFFSET = 4
MAX_MH_LENGTH = 8 * 256  # Header Len is one octet of 8-octet units beyond the first 8.


class MhType(IntEnum):
    """MH Type values (RFC 6275 §6.1.2-§6.1.9, RFC 5096)."""

    BRR = 0
    HOTI = 1
    COTI = 2
    HOT = 3
    COT = 4
    BU = 5
    BA = 6
    BE = 7
    EXPERIMENTAL = 11


class BaStatus(IntEnum):
    """Binding Acknowledgement status (RFC 6275 §6.1.8, RFC 4285 §8)."""

    ACCEPTED = 0
    ACCEPTED_PREFIX_DISCOVERY_NECESSARY = 1
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    HOME_REGISTRATION_NOT_SUPPORTED = 131
    NOT_HOME_SUBNET = 132
    NOT_HOME_AGENT_FOR_THIS_MN = 133
    DUPLICATE_ADDRESS_DETECTION_FAILED = 134
    SEQUENCE_NUMBER_OUT_OF_WINDOW = 135
    EXPIRED_HOME_NONCE_INDEX = 136
    EXPIRED_CARE_OF_NONCE_INDEX = 137
    EXPIRED_NONCES = 138
    REGISTRATION_TYPE_CHANGE_DISALLOWED = 139
    MOBILE_ROUTER_OPERATION_NOT_PERMITTED = 140  # RFC 3963 §4.2
    INVALID_PREFIX = 141
    NOT_AUTHORIZED_FOR_PREFIX = 142
    FORWARDING_SETUP_FAILED = 143  # prefixes missing
    ID_MISMATCH = 144
    MESG_ID_REQUIRED = 145
    AUTH_FAILED = 146


class Ipv4AckStatus(IntEnum):
    """IPv4 Address Acknowledgement status (RFC 5555 §3.2.1)."""

    SUCCESS = 0
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INCORRECT_IPV4_HOME_ADDRESS = 130
    INVALID_IPV4_ADDRESS = 131
    DYNAMIC_IPV4_HOME_ADDRESS_NOT_AVAILABLE = 132
    PREFIX_ALLOCATION_UNAUTHORIZED = 133


class BeStatus(IntEnum):
    """Binding Error status (RFC 6275 §6.1.9)."""

    UNKNOWN_BINDING_FOR_HOME_ADDRESS_OPTION = 1
    UNRECOGNIZED_MH_TYPE = 2


class OptionType(IntEnum):
    """Mobility option types (RFC 6275 §6.2, RFC 4285, RFC 5096)."""

    PAD1 = 0
    PADN = 1
    BINDING_REFRESH_ADVICE = 2
    ALTERNATE_CARE_OF_ADDRESS = 3
    NONCE_INDICES = 4
    BINDING_AUTHORIZATION_DATA = 5
    MOBILE_NETWORK_PREFIX = 6  # RFC 3963 §4.3
    AUTH = 9  # RFC 4285 §5 (subtype 1 = MN-HA, 2 = MN-AAA)
    MESG_ID = 10  # RFC 4285 §6
    EXPERIMENTAL = 18
    IPV4_HOME_ADDRESS = 29  # RFC 5555 §3.1.1
    IPV4_ADDRESS_ACK = 30  # RFC 5555 §3.2.1


AUTH_SUBTYPE_MN_HA = 1
AUTH_SUBTYPE_MN_AAA = 2

COOKIE_LENGTH = 8  # Home/Care-of Init Cookie (RFC 6275 §6.1.3-§6.1.6)
KEYGEN_TOKEN_LENGTH = 8  # Home/Care-of Keygen Token (§6.1.5, §6.1.6)

# BU flags word (RFC 6275 §6.1.7; F from RFC 5555 §3.1.3).
BU_FLAG_A = 0x8000
BU_FLAG_H = 0x4000
BU_FLAG_L = 0x2000
BU_FLAG_K = 0x1000
BU_FLAG_R = 0x0400  # RFC 3963 §4.1: a mobile router's registration
BU_FLAG_F = 0x0100
# BA flags octet (RFC 6275 §6.1.8; R from RFC 3963 §4.2: the HA supports mobile routers).
BA_FLAG_K = 0x80
BA_FLAG_R = 0x40


# Options ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pad1:
    """One octet of padding (§6.2.2). Only meaningful when encoding."""


@dataclass(frozen=True, slots=True)
class PadN:
    """``length`` octets of padding including the type and length octets (§6.2.3)."""

    length: int


@dataclass(frozen=True, slots=True)
class BindingRefreshAdvice:
    """Binding Refresh Advice (§6.2.4); ``refresh_interval`` in units of 4 s."""

    refresh_interval: int


@dataclass(frozen=True, slots=True)
class AlternateCareOfAddress:
    """Alternate Care-of Address (§6.2.5)."""

    address: IPv6Address


@dataclass(frozen=True, slots=True)
class NonceIndices:
    """Nonce Indices (§6.2.6): the home and care-of nonce indices from HoT and CoT."""

    home_nonce_index: int
    care_of_nonce_index: int


@dataclass(frozen=True, slots=True)
class BindingAuthorizationData:
    """Binding Authorization Data (§6.2.7); must be the last option of the MH.

    Decoded with any length (the authorization procedure sets it); :mod:`mipnode.wire.bad`
    insists on the 12 octets of return routability."""

    authenticator: bytes


@dataclass(frozen=True, slots=True)
class MnHaAuth:
    """Mobility Message Authentication option (RFC 4285 §5), subtype 1 (MN-HA) by default."""

    spi: int
    authenticator: bytes
    subtype: int = AUTH_SUBTYPE_MN_HA


@dataclass(frozen=True, slots=True)
class MesgId:
    """Mobility Message Replay Protection option (RFC 4285 §6): 64-bit NTP timestamp."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class ExperimentalOption:
    """Experimental Mobility Option (RFC 5096 §4): opaque data for an experiment."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MobileNetworkPrefix:
    """Mobile Network Prefix (RFC 3963 §4.3): a prefix a mobile router registers in explicit
    mode. Kept as sent (``prefix`` may have host bits, ``length`` any octet): whether it is a
    valid prefix is the home agent's decision (status 141), not a framing error."""

    prefix: IPv6Address
    length: int


@dataclass(frozen=True, slots=True)
class Ipv4HomeAddress:
    """IPv4 Home Address (RFC 5555 §3.1.1): the mobile node's IPv4 home address, 0.0.0.0 to
    ask for one; ``prefix_length`` 32 for one address; ``prefix_requested``: the P flag (a
    mobile router asks for an IPv4 mobile network prefix)."""

    address: IPv4Address
    prefix_length: int = 32
    prefix_requested: bool = False


@dataclass(frozen=True, slots=True)
class Ipv4AddressAck:
    """IPv4 Address Acknowledgement (RFC 5555 §3.2.1): the home agent's answer to an IPv4
    Home Address option, in the BA."""

    status: int
    address: IPv4Address
    prefix_length: int = 32


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """An option this codec does not interpret, kept as its type and data octets."""

    type: int
    data: bytes


MobilityOption = (
    Pad1
    | PadN
    | BindingRefreshAdvice
    | AlternateCareOfAddress
    | NonceIndices
    | BindingAuthorizationData
    | MnHaAuth
    | MesgId
    | ExperimentalOption
    | MobileNetworkPrefix
    | Ipv4HomeAddress
    | Ipv4AddressAck
    | UnknownOption
)

# Messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindingRefreshRequest:
    """Binding Refresh Request (§6.1.2)."""

    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class HomeTestInit:
    """Home Test Init (§6.1.3); ``cookie`` is the 8-octet Home Init Cookie."""

    cookie: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class CareOfTestInit:
    """Care-of Test Init (§6.1.4); ``cookie`` is the 8-octet Care-of Init Cookie."""

    cookie: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class HomeTest:
    """Home Test (§6.1.5): the HoTI's cookie echoed, and an 8-octet home keygen token."""

    nonce_index: int
    cookie: bytes
    keygen_token: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class CareOfTest:
    """Care-of Test (§6.1.6): the CoTI's cookie echoed, and an 8-octet care-of keygen token."""

    nonce_index: int
    cookie: bytes
    keygen_token: bytes
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class BindingUpdate:
    """Binding Update (§6.1.7); ``lifetime`` in units of 4 s."""

    sequence: int
    lifetime: int
    ack: bool = False
    home: bool = False
    link_local: bool = False
    key_mgmt: bool = False
    force_udp: bool = False
    options: tuple[MobilityOption, ...] = ()
    mobile_router: bool = False  # R (RFC 3963 §4.1)


@dataclass(frozen=True, slots=True)
class BindingAck:
    """Binding Acknowledgement (§6.1.8); ``lifetime`` in units of 4 s."""

    status: int
    sequence: int
    lifetime: int
    key_mgmt: bool = False
    options: tuple[MobilityOption, ...] = ()
    mobile_router: bool = False  # R (RFC 3963 §4.2): this home agent supports mobile routers


@dataclass(frozen=True, slots=True)
class BindingError:
    """Binding Error (§6.1.9)."""

    status: int
    home_address: IPv6Address
    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class ExperimentalMessage:
    """Experimental Mobility Header (RFC 5096 §3), MH type 11. mipnode's Message Data is a
    sequence of mobility options (see the module docstring), normally
    :class:`ExperimentalOption` s."""

    options: tuple[MobilityOption, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownMobilityMessage:
    """An MH of a type this codec does not decode; ``body`` is everything after the common
    header (fixed part, options and padding)."""

    mh_type: int
    body: bytes

    @property
    def options(self) -> tuple[MobilityOption, ...]:
        """Always empty: the body is not interpreted."""
        return ()


MobilityMessage = (
    BindingRefreshRequest
    | HomeTestInit
    | CareOfTestInit
    | HomeTest
    | CareOfTest
    | BindingUpdate
    | BindingAck
    | BindingError
    | ExperimentalMessage
    | UnknownMobilityMessage
)

# Encoding -----------------------------------------------------------------------------------


def _padding(n: int) -> bytes:
    """``n`` octets of Pad1 or PadN."""
    if n == 0:
        return b""
    if n == 1:
        return b"\x00"
    return bytes((OptionType.PADN, n - 2)) + bytes(n - 2)


def _encode_pad1(option: Pad1) -> tuple[bytes, int, int]:
    return b"\x00", 1, 0


def _encode_padn(option: PadN) -> tuple[bytes, int, int]:
    if not 2 <= option.length <= 257:
        raise ValueError(f"PadN length out of range: {option.length}")
    return _padding(option.length), 1, 0


def _encode_refresh_advice(option: BindingRefreshAdvice) -> tuple[bytes, int, int]:
    return _BRA.pack(OptionType.BINDING_REFRESH_ADVICE, 2, option.refresh_interval), 2, 0


def _encode_alternate_care_of(option: AlternateCareOfAddress) -> tuple[bytes, int, int]:
    return b"\x03\x10" + option.address.packed, 8, 6


def _encode_nonce_indices(option: NonceIndices) -> tuple[bytes, int, int]:
    data = struct.pack(
        "!BBHH", OptionType.NONCE_INDICES, 4, option.home_nonce_index, option.care_of_nonce_index
    )
    return data, 2, 0


def _encode_authorization_data(option: BindingAuthorizationData) -> tuple[bytes, int, int]:
    authenticator = option.authenticator
    if len(authenticator) > 255:
        raise ValueError("authenticator too long")
    head = bytes((OptionType.BINDING_AUTHORIZATION_DATA, len(authenticator)))
    return head + authenticator, 8, 2


def _encode_experimental(option: ExperimentalOption) -> tuple[bytes, int, int]:
    # RFC 5096 §4 states no alignment requirement.
    data = option.data
    if len(data) > 255:
        raise ValueError(f"experimental option data of {len(data)} octets")
    return bytes((OptionType.EXPERIMENTAL, len(data))) + data, 1, 0


def _encode_mesg_id(option: MesgId) -> tuple[bytes, int, int]:
    return _MESG_ID.pack(OptionType.MESG_ID, 8, option.timestamp), 8, 2


def _encode_auth(option: MnHaAuth) -> tuple[bytes, int, int]:
    authenticator = option.authenticator
    length = 5 + len(authenticator)
    if length > 255:
        raise ValueError("authenticator too long")
    return (
        _AUTH_HEAD.pack(OptionType.AUTH, length, option.subtype, option.spi) + authenticator,
        4,
        1,
    )


def _encode_mobile_network_prefix(option: MobileNetworkPrefix) -> tuple[bytes, int, int]:
    head = bytes((OptionType.MOBILE_NETWORK_PREFIX, 18, 0, option.length))
    return head + option.prefix.packed, 8, 4  # 8n+4 (RFC 3963 §4.3)


def _encode_ipv4_home_address(option: Ipv4HomeAddress) -> tuple[bytes, int, int]:
    if not 0 <= option.prefix_length <= 63:
        raise ValueError(f"IPv4 prefix length {option.prefix_length} does not fit 6 bits")
    bits = option.prefix_length << 10 | (0x200 if option.prefix_requested else 0)
    head = struct.pack("!BBH", OptionType.IPV4_HOME_ADDRESS, 6, bits)
    return head + option.address.packed, 4, 0  # 4n (RFC 5555 §3.1.1)


def _encode_ipv4_address_ack(option: Ipv4AddressAck) -> tuple[bytes, int, int]:
    if not 0 <= option.prefix_length <= 63:
        raise ValueError(f"IPv4 prefix length {option.prefix_length} does not fit 6 bits")
    head = bytes((OptionType.IPV4_ADDRESS_ACK, 6, option.status, option.prefix_length << 2))
    return head + option.address.packed, 4, 0  # 4n (RFC 5555 §3.2.1)


def _encode_unknown(option: UnknownOption) -> tuple[bytes, int, int]:
    option_type, data = option.type, option.data
    if option_type == OptionType.PAD1 or len(data) > 255:
        raise ValueError(f"cannot encode option type {option_type} of {len(data)} octets")
    return bytes((option_type, len(data))) + data, 1, 0


_BRA = struct.Struct("!BBH")
_MESG_ID = struct.Struct("!BBQ")
_AUTH_HEAD = struct.Struct("!BBBI")
# Each option class's encoder: (octets, x, y) with its "xn+y" alignment requirement (§6.2).
_OPTION_ENCODERS: dict[type, Callable[[Any], tuple[bytes, int, int]]] = {
    Pad1: _encode_pad1,
    PadN: _encode_padn,
    BindingRefreshAdvice: _encode_refresh_advice,
    AlternateCareOfAddress: _encode_alternate_care_of,
    NonceIndices: _encode_nonce_indices,
    BindingAuthorizationData: _encode_authorization_data,
    ExperimentalOption: _encode_experimental,
    MesgId: _encode_mesg_id,
    MnHaAuth: _encode_auth,
    MobileNetworkPrefix: _encode_mobile_network_prefix,
    Ipv4HomeAddress: _encode_ipv4_home_address,
    Ipv4AddressAck: _encode_ipv4_address_ack,
    UnknownOption: _encode_unknown,
}


def _encode_option(option: MobilityOption) -> tuple[bytes, int, int]:
    """Return (octets, x, y) with the option's "xn+y" alignment requirement (§6.2)."""
    encoder = _OPTION_ENCODERS.get(type(option))
    if encoder is None:  # a subclass of an option class, or not an option at all
        kind = next((k for k in _OPTION_ENCODERS if isinstance(option, k)), None)
        if kind is None:
            raise ValueError(f"not a mobility option: {option!r}")
        encoder = _OPTION_ENCODERS[kind]
    return encoder(option)


def _encode_options(fixed: bytes, options: tuple[MobilityOption, ...]) -> bytearray:
    out = bytearray(fixed)
    for index, option in enumerate(options):
        data, x, y = _encode_option(option)
        if isinstance(option, _LAST_OPTIONS):
            # RFC 4285 §5 (MN-HA) and RFC 6275 §6.2.7 (BAD): the option is the last one and
            # nothing follows it, so the MH must end right after it: pad before it to reach a
            # multiple of 8 at its end. Both alignments then fix the authenticator length
            # (4n octets for MN-HA's 4n+1, 8n+4 for BAD's 8n+2; 12 fits both).
            if index != len(options) - 1:
                raise ValueError(f"{type(option).__name__} must be the last option")
            pad = -(len(out) + len(data)) % 8
            if (len(out) + pad) % x != y:
                raise ValueError(f"{type(option).__name__} of this length cannot end the MH")
        else:
            pad = (y - len(out)) % x
        if pad:
            out += _padding(pad)
        out += data
    if len(out) % 8:
        out += _padding(-len(out) % 8)
    return out


_LAST_OPTIONS = (MnHaAuth, BindingAuthorizationData)  # must end the MH (see _encode_options)


def _common_header(mh_type: int) -> bytes:
    # Header Len is patched in once the length is known; the checksum is computed last.
    return bytes((NH_NONE, 0, mh_type, 0, 0, 0))


def _fixed_part(msg: MobilityMessage) -> bytes:
    # The home agent's and mobile node's messages first: they are the frequent ones.
    match msg:
        case BindingAck():
            return _BA_FIXED.pack(
                NH_NONE,
                0,
                MhType.BA,
                0,
                0,
                msg.status,
                (BA_FLAG_K if msg.key_mgmt else 0) | (BA_FLAG_R if msg.mobile_router else 0),
                msg.sequence,
                msg.lifetime,
            )
        case BindingUpdate():
            flags = (
                (BU_FLAG_A if msg.ack else 0)
                | (BU_FLAG_H if msg.home else 0)
                | (BU_FLAG_L if msg.link_local else 0)
                | (BU_FLAG_K if msg.key_mgmt else 0)
                | (BU_FLAG_R if msg.mobile_router else 0)
                | (BU_FLAG_F if msg.force_udp else 0)
            )
            return _common_header(MhType.BU) + struct.pack(
                "!HHH", msg.sequence, flags, msg.lifetime
            )
        case BindingRefreshRequest():
            return _common_header(MhType.BRR) + b"\x00\x00"
        case HomeTestInit(cookie=cookie) | CareOfTestInit(cookie=cookie):
            mh_type = MhType.HOTI if isinstance(msg, HomeTestInit) else MhType.COTI
            return _common_header(mh_type) + b"\x00\x00" + _fixed_octets(cookie, COOKIE_LENGTH)
        case HomeTest() | CareOfTest():
            mh_type = MhType.HOT if isinstance(msg, HomeTest) else MhType.COT
            return (
                _common_header(mh_type)
                + struct.pack("!H", msg.nonce_index)
                + _fixed_octets(msg.cookie, COOKIE_LENGTH)
                + _fixed_octets(msg.keygen_token, KEYGEN_TOKEN_LENGTH)
            )
        case BindingError():
            return _common_header(MhType.BE) + bytes((msg.status, 0)) + msg.home_address.packed
        case ExperimentalMessage():
            return _common_header(MhType.EXPERIMENTAL)
    raise ValueError(f"not an encodable mobility message: {msg!r}")


_BA_FIXED = struct.Struct("!BBBBHBBHH")  # common header (checksum 0), status, flags, seq, life


def _fixed_octets(value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        raise ValueError(f"expected {length} octets, got {value!r}")
    return bytes(value)


def encode_mh_without_checksum(
    msg: MobilityMessage, *, append: tuple[MobilityOption, ...] = ()
) -> bytes:
    """The MH octets of ``msg`` with a zero checksum (see :func:`encode_mh`); ``append``: options
    encoded after the message's own (as if they ended ``msg.options``).

    Raises:
        ValueError: a field out of range, a cookie or keygen token not of 8 octets, a misplaced
            authentication or authorization option, or an MH longer than 2048 octets.
    """
    try:
        if isinstance(msg, UnknownMobilityMessage):
            raw = bytearray(_common_header(msg.mh_type) + msg.body)
            raw += bytes(-len(raw) % 8)
        else:
            fixed = _fixed_part(msg)
            raw = _encode_options(fixed, (*msg.options, *append) if append else msg.options)
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    if len(raw) > MAX_MH_LENGTH:
        raise ValueError(f"mobility header of {len(raw)} octets is too long")
    raw[1] = len(raw) // 8 - 1
    return bytes(raw)


def fill_mh_checksum(data: bytes, src: AddressLike, dst: AddressLike) -> bytes:
    """Return ``data`` (an MH whose checksum field is zero) with its checksum computed over the
    RFC 8200 §8.1 pseudo-header (RFC 6275 §6.1.1)."""
    checksum = internet_checksum(pseudo_header(src, dst, NH_MH, len(data)) + data)
    return b"".join(
        (data[:MH_CHECKSUM_OFFSET], checksum.to_bytes(2, "big"), data[MH_CHECKSUM_OFFSET + 2 :])
    )


def encode_mh(msg: MobilityMessage, src: AddressLike, dst: AddressLike) -> bytes:
    """Encode ``msg`` as a complete Mobility Header with its checksum.

    ``src``/``dst`` are the pseudo-header addresses: the HoA when the packet carries an HAO, the
    final destination (HoA) when it carries an RH2 (RFC 6275 §6.1.1).

    Raises:
        ValueError: see :func:`encode_mh_without_checksum`.
    """
    return fill_mh_checksum(encode_mh_without_checksum(msg), src, dst)


# Decoding -----------------------------------------------------------------------------------


def _decode_option(option_type: int, body: bytes) -> MobilityOption:
    length = len(body)
    # The options of a home registration first (Mesg-ID, MN-HA, Alternate CoA).
    if option_type == _MESG_ID_TYPE:
        if length != 8:
            raise BadPacket("bad_option", f"mesg-id option of length {length}")
        return MesgId(int.from_bytes(body, "big"))
    if option_type == _AUTH_TYPE:
        if length < 5:
            raise BadPacket("bad_option", f"authentication option of length {length}")
        return MnHaAuth(int.from_bytes(body[1:5], "big"), body[5:], body[0])
    if option_type == _ALTERNATE_CARE_OF_TYPE:
        if length != 16:
            raise BadPacket("bad_option", f"alternate care-of address of length {length}")
        return AlternateCareOfAddress(IPv6Address(body))
    if option_type == OptionType.BINDING_REFRESH_ADVICE:
        if length != 2:
            raise BadPacket("bad_option", f"binding refresh advice of length {length}")
        return BindingRefreshAdvice(int.from_bytes(body, "big"))
    if option_type == OptionType.NONCE_INDICES:
        if length != 4:
            raise BadPacket("bad_option", f"nonce indices of length {length}")
        home, care_of = struct.unpack("!HH", body)
        return NonceIndices(home, care_of)
    if option_type == OptionType.BINDING_AUTHORIZATION_DATA:
        return BindingAuthorizationData(body)
    if option_type == OptionType.EXPERIMENTAL:
        return ExperimentalOption(body)
    if option_type == OptionType.MOBILE_NETWORK_PREFIX:
        if length != 18:
            raise BadPacket("bad_option", f"mobile network prefix of length {length}")
        return MobileNetworkPrefix(IPv6Address(body[2:]), body[1])
    if option_type == OptionType.IPV4_HOME_ADDRESS:
        if length != 6:
            raise BadPacket("bad_option", f"IPv4 home address of length {length}")
        return Ipv4HomeAddress(IPv4Address(body[2:]), body[0] >> 2, bool(body[0] & 0x02))
    if option_type == OptionType.IPV4_ADDRESS_ACK:
        if length != 6:
            raise BadPacket("bad_option", f"IPv4 address acknowledgement of length {length}")
        return Ipv4AddressAck(
            _enum_or_int(Ipv4AckStatus, body[0]), IPv4Address(body[2:]), body[1] >> 2
        )
    return UnknownOption(option_type, body)


_MESG_ID_TYPE = int(OptionType.MESG_ID)
_AUTH_TYPE = int(OptionType.AUTH)
_ALTERNATE_CARE_OF_TYPE = int(OptionType.ALTERNATE_CARE_OF_ADDRESS)
_PAD1_TYPE = int(OptionType.PAD1)
_PADN_TYPE = int(OptionType.PADN)


def _decode_options(data: bytes, start: int) -> tuple[tuple[MobilityOption, ...], tuple[int, ...]]:
    options: list[MobilityOption] = []
    offsets: list[int] = []
    offset, end = start, len(data)
    while offset < end:
        option_type = data[offset]
        if option_type == _PAD1_TYPE:
            offset += 1
            continue
        if end - offset < 2 or end - offset - 2 < data[offset + 1]:
            raise BadPacket("bad_option", f"option {option_type} at {offset} overruns the MH")
        body_end = offset + 2 + data[offset + 1]
        if option_type != _PADN_TYPE:
            options.append(_decode_option(option_type, data[offset + 2 : body_end]))
            offsets.append(offset)
        offset = body_end
    return tuple(options), tuple(offsets)


def _options_start(data: bytes, fixed_length: int) -> int:
    if len(data) < fixed_length:
        raise BadPacket("bad_length", f"MH type {data[2]} needs {fixed_length} octets")
    return fixed_length


def _decode_body(data: bytes) -> tuple[MobilityMessage, tuple[int, ...]]:
    mh_type = data[2]
    if mh_type == _BU_TYPE:  # what a home agent receives most
        start = _options_start(data, 12)
        sequence, flags, lifetime = _BU_FIXED.unpack_from(data, 6)
        options, offsets = _decode_options(data, start)
        bu = BindingUpdate(
            sequence,
            lifetime,
            bool(flags & BU_FLAG_A),
            bool(flags & BU_FLAG_H),
            bool(flags & BU_FLAG_L),
            bool(flags & BU_FLAG_K),
            bool(flags & BU_FLAG_F),
            options,
            bool(flags & BU_FLAG_R),
        )
        return bu, offsets
    if mh_type == MhType.BRR:
        options, offsets = _decode_options(data, _options_start(data, 8))
        return BindingRefreshRequest(options), offsets
    if mh_type in (MhType.HOTI, MhType.COTI):
        options, offsets = _decode_options(data, _options_start(data, 16))
        cookie = data[8:16]
        init = HomeTestInit if mh_type == MhType.HOTI else CareOfTestInit
        return init(cookie, options), offsets
    if mh_type in (MhType.HOT, MhType.COT):
        options, offsets = _decode_options(data, _options_start(data, 24))
        test = HomeTest if mh_type == MhType.HOT else CareOfTest
        nonce_index = int.from_bytes(data[6:8], "big")
        return test(nonce_index, data[8:16], data[16:24], options), offsets
    if mh_type == MhType.EXPERIMENTAL:
        options, offsets = _decode_options(data, MH_COMMON_HEADER_LENGTH)
        return ExperimentalMessage(options), offsets
    if mh_type == MhType.BA:
        start = _options_start(data, 12)
        status, flags, sequence, lifetime = struct.unpack_from("!BBHH", data, 6)
        options, offsets = _decode_options(data, start)
        ba = BindingAck(
            status=_enum_or_int(BaStatus, status),
            sequence=sequence,
            lifetime=lifetime,
            key_mgmt=bool(flags & BA_FLAG_K),
            options=options,
            mobile_router=bool(flags & BA_FLAG_R),
        )
        return ba, offsets
    if mh_type == MhType.BE:
        options, offsets = _decode_options(data, _options_start(data, 24))
        be = BindingError(
            status=_enum_or_int(BeStatus, data[6]),
            home_address=IPv6Address(data[8:24]),
            options=options,
        )
        return be, offsets
    # §9.2: an unrecognised MH type is not a framing error; the receiver answers BE status 2.
    return UnknownMobilityMessage(mh_type, data[MH_COMMON_HEADER_LENGTH:]), ()


_BU_TYPE = int(MhType.BU)
_BU_FIXED = struct.Struct("!HHH")


def _enum_or_int(enum: type[BaStatus] | type[BeStatus] | type[Ipv4AckStatus], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


def decode_mh_with_offsets_untrusted(
    data: bytes, src: AddressLike, dst: AddressLike, *, verify_checksum: bool = True
) -> tuple[MobilityMessage, tuple[int, ...]]:
    """Like :func:`decode_mh_untrusted`, also returning the offset in ``data`` of each decoded
    option (parallel to ``message.options``)."""
    data = bytes(data)
    if len(data) < 8:
        raise BadPacket("truncated", f"MH of {len(data)} octets")
    if len(data) != (data[1] + 1) * 8:
        raise BadPacket("bad_length", f"header len {data[1]} for {len(data)} octets")
    if verify_checksum and internet_checksum(pseudo_header(src, dst, NH_MH, len(data)) + data):
        raise BadPacket("bad_checksum")
    if data[0] != NH_NONE:
        # §6.1.1 / §9.2: Payload Proto other than 59 is answered with Parameter Problem.
        raise BadPacket("payload_proto", f"payload proto {data[0]}")
    return _decode_body(data)


def decode_mh_untrusted(
    data: bytes, src: AddressLike, dst: AddressLike, *, verify_checksum: bool = True
) -> MobilityMessage:
    """Decode one Mobility Header (exactly ``data``).

    ``src``/``dst`` are the pseudo-header addresses (see :func:`encode_mh`). Pass
    ``verify_checksum=False`` when the kernel already verified it (raw ``IPPROTO_MH`` sockets).

    Raises:
        BadPacket: ``truncated`` (< 8 octets), ``bad_length`` (Header Len does not match the
            buffer, or the type's fixed part does not fit), ``bad_checksum``, ``payload_proto``
            (not 59), ``bad_option`` (an option overruns the MH, a known option has the wrong
            length, or an Experimental MH's data is not a sequence of options).
    """
    return decode_mh_with_offsets_untrusted(data, src, dst, verify_checksum=verify_checksum)[0]


# RFC 6275 §9.2: the field a Parameter Problem (code 0) about a malformed Mobility Header
# points at, by the decoder's reason: Payload Proto (the MH's first octet) when it is not 59,
# Header Len (its second) when it is too small for the message or disagrees with the octets.
MH_PROBLEM_OFFSET = {"payload_proto": 0, "bad_length": 1, "truncated": 1}


def mh_checksum_ok(data: bytes, src: AddressLike, dst: AddressLike) -> bool:
    """Whether the MH's checksum over the ``src``/``dst`` pseudo-header is right (§9.2 drops a
    wrong one silently, before anything else is looked at)."""
    return len(data) >= 2 and not internet_checksum(
        pseudo_header(src, dst, NH_MH, len(data)) + data
    )
