"""RFC 4285 MN-HA authentication of BU/BA and NTP timestamps for Mesg-ID, pure.

The MN-HA Mobility Message Authentication option (type 9, subtype 1) carries a Mobility SPI and
the first 96 bits of HMAC-SHA1(key, CoA ‖ HoA ‖ MH Data), where MH Data runs from the start of the
MH through the SPI with the checksum field zero (RFC 4285 §5.1). The option is the last one and
nothing follows it, so the authenticator is the tail of the MH and MH Data is everything before
it. The checksum is computed after the authenticator.

For mipnode the "CoA" is the Alternate Care-of Address option when present, else the source of
the IPv6 packet that carried the MH (docs/internals.md); callers pass it.

Binding Acknowledgements (a home agent signs one per BU) are encoded from templates: the first
BA of a shape (the kinds of its options, in order, and the length of each Experimental option's
data) is encoded by the generic encoder of wire/mh.py with zero fields, decoded again for the
offsets of its options, and kept; every later BA of that shape is a copy of it with its fields
written in. Padding and alignment are the generic encoder's, so the octets are the same.
"""

from __future__ import annotations

import hmac
import struct

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import AddressLike, address_bytes
from mipnode.wire.mh import (
    AUTH_SUBTYPE_MN_HA,
    BA_FLAG_K,
    BA_FLAG_R,
    MH_CHECKSUM_OFFSET,
    BindingAck,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    ExperimentalOption,
    MesgId,
    MnHaAuth,
    MobilityMessage,
    MobilityOption,
    decode_mh_with_offsets_untrusted,
    encode_mh_without_checksum,
    fill_mh_checksum,
)

AUTHENTICATOR_LENGTH = 12  # HMAC-SHA1-96
# Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
_ZERO = b"\x00" * 16
_ZERO_AUTHENTICATOR = bytes(AUTHENTICATOR_LENGTH)
# BA templates (module docstring): shape -> (MH octets with zero fields, option offsets).
_BA_TEMPLATES: dict[tuple[object, ...], tuple[bytes, tuple[int, ...]]] = {}
_MAX_BA_TEMPLATES = 32  # shapes are few (a home agent sends 3 or 4); never grows unbounded
_BA_FIELDS = struct.Struct("!BBHH")  # status, flags, sequence, lifetime (RFC 6275 §6.1.8)
_BA_FIELDS_OFFSET = 6
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


def mn_ha_authenticator(key: bytes, coa: AddressLike, hoa: AddressLike, mh_data: bytes) -> bytes:
    """First 96 bits of HMAC-SHA1(key, CoA ‖ HoA ‖ MH Data) (RFC 4285 §5.1).

    ``mh_data`` is the MH from its first octet through the SPI, checksum field zero.
    """
    mac = hmac.new(key, address_bytes(coa) + address_bytes(hoa) + mh_data, "sha1")
    return mac.digest()[:AUTHENTICATOR_LENGTH]


def encode_mh_authenticated(
    msg: MobilityMessage,
    src: AddressLike,
    dst: AddressLike,
    *,
    spi: int,
    key: bytes,
    coa: AddressLike,
    hoa: AddressLike,
) -> bytes:
    """Encode ``msg`` with its options followed by the MN-HA auth option (last, no trailing
    padding), the authenticator filled in and then the checksum.

    Raises:
        ValueError: ``msg`` already has an authentication option, is of an unknown type, or a
            field is out of range.
    """
    if not isinstance(msg, BindingRefreshRequest | BindingUpdate | BindingAck | BindingError):
        raise ValueError(f"cannot authenticate {type(msg).__name__}")
    for option in msg.options:
        if isinstance(option, MnHaAuth):
            raise ValueError("message already carries an authentication option")
    raw: bytes | bytearray
    if isinstance(msg, BindingAck) and (shape := _ba_shape(msg.options)) is not None:
        raw = _ba_from_template(msg, shape, spi)
    else:
        raw = encode_mh_without_checksum(msg, append=(MnHaAuth(spi, _ZERO_AUTHENTICATOR),))
    mh_data = bytes(raw[:-AUTHENTICATOR_LENGTH])
    return fill_mh_checksum(mh_data + mn_ha_authenticator(key, coa, hoa, mh_data), src, dst)


def _ba_shape(options: tuple[MobilityOption, ...]) -> tuple[object, ...] | None:
    """The template key of a BA with ``options``, or ``None`` when one of them is not of a
    kind a template can carry (Binding Refresh Advice, Experimental, Mesg-ID)."""
    shape: list[object] = []
    for option in options:
        kind = type(option)
        if isinstance(option, ExperimentalOption):
            shape.append(len(option.data))
        elif kind is MesgId or kind is BindingRefreshAdvice:
            shape.append(kind)
        else:
            return None
    return tuple(shape)


def _ba_template(shape: tuple[object, ...]) -> tuple[bytes, tuple[int, ...]]:
    """Encode a BA of ``shape`` with zero fields (the generic encoder lays it out) and find
    its options again. Raises ValueError as the generic encoder does (e.g. data too long)."""
    options: list[MobilityOption] = []
    for kind in shape:
        if isinstance(kind, int):
            options.append(ExperimentalOption(bytes(kind)))
        else:
            options.append(BindingRefreshAdvice(0) if kind is BindingRefreshAdvice else MesgId(0))
    ba = BindingAck(0, 0, 0, options=tuple(options))
    raw = encode_mh_without_checksum(ba, append=(MnHaAuth(0, _ZERO_AUTHENTICATOR),))
    _, offsets = decode_mh_with_offsets_untrusted(raw, _ZERO, _ZERO, verify_checksum=False)
    return raw, offsets


def _ba_from_template(msg: BindingAck, shape: tuple[object, ...], spi: int) -> bytearray:
    """``msg`` with a zero authenticator and checksum, written into the template of its
    shape. Out-of-range fields raise ValueError, as from the generic encoder."""
    template = _BA_TEMPLATES.get(shape)
    if template is None:
        template = _ba_template(shape)
        if len(_BA_TEMPLATES) < _MAX_BA_TEMPLATES:
            _BA_TEMPLATES[shape] = template
    raw, offsets = template
    out = bytearray(raw)
    flags = (BA_FLAG_K if msg.key_mgmt else 0) | (BA_FLAG_R if msg.mobile_router else 0)
    try:
        _BA_FIELDS.pack_into(out, _BA_FIELDS_OFFSET, msg.status, flags, msg.sequence, msg.lifetime)
        for option, offset in zip(msg.options, offsets, strict=False):
            if isinstance(option, MesgId):
                _U64.pack_into(out, offset + 2, option.timestamp)
            elif isinstance(option, BindingRefreshAdvice):
                _U16.pack_into(out, offset + 2, option.refresh_interval)
            elif isinstance(option, ExperimentalOption):
                out[offset + 2 : offset + 2 + len(option.data)] = option.data
        _U32.pack_into(out, offsets[-1] + 3, spi)  # the auth option: type, length, subtype, SPI
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    return out


def verify_mh_authenticated(data: bytes, *, key: bytes, coa: AddressLike, hoa: AddressLike) -> bool:
    """True when ``data`` (a whole MH) ends with an MN-HA auth option whose authenticator is
    right for ``key``, ``coa`` and ``hoa``; compared in constant time.

    Returns False, never raises, for malformed MHs, an MH whose last option is not MN-HA auth
    (or is followed by padding), and wrong authenticators. The checksum is not checked here.
    """
    try:
        msg, offsets = decode_mh_with_offsets_untrusted(data, _ZERO, _ZERO, verify_checksum=False)
    except BadPacket:
        return False
    return verify_decoded_mh_authenticated(data, msg, offsets, key=key, coa=coa, hoa=hoa)


def verify_decoded_mh_authenticated(
    data: bytes,
    msg: MobilityMessage,
    offsets: tuple[int, ...],
    *,
    key: bytes,
    coa: AddressLike,
    hoa: AddressLike,
) -> bool:
    """:func:`verify_mh_authenticated` for an MH its caller decoded already: ``msg`` and
    ``offsets`` are what ``decode_mh_with_offsets_untrusted(data, ...)`` returned for exactly
    these octets (a receiver decodes a BU once and checks it with this). Same rules, same
    constant-time comparison; never raises for a wrong or misplaced authenticator.
    """
    if not offsets:
        return False
    option = msg.options[-1]
    if not isinstance(option, MnHaAuth) or option.subtype != AUTH_SUBTYPE_MN_HA:
        return False
    data = bytes(data)
    last = offsets[-1]
    if last + 2 + data[last + 1] != len(data):
        return False  # RFC 4285 §5: nothing may follow the MN-HA option
    spi_end = len(data) - len(option.authenticator)
    covered = b"".join(
        (
            address_bytes(coa),
            address_bytes(hoa),
            data[:MH_CHECKSUM_OFFSET],
            b"\x00\x00",
            data[MH_CHECKSUM_OFFSET + 2 : spi_end],
        )
    )
    mac = hmac.new(key, covered, "sha1").digest()[:AUTHENTICATOR_LENGTH]
    return hmac.compare_digest(mac, option.authenticator)


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for POSIX time ``t``.

    Seconds wrap modulo 2**32 (NTP era 1 starts in February 2036; RFC 4330 §3).
    """
    return int((t + NTP_UNIX_OFFSET) * 2**32) % 2**64


def unix_from_ntp(ts: int) -> float:
    """POSIX time for a 64-bit NTP timestamp.

    RFC 4330 §3: seconds with the top bit clear are taken as era 1 (2036-2104), so the mapping
    is unambiguous for 1968-2104.
    """
    seconds, fraction = (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF
    if not seconds & 0x80000000:
        seconds += 2**32
    return seconds - NTP_UNIX_OFFSET + fraction / 2**32
