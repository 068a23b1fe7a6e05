"""RFC 4285 MN-HA authentication of BU/BA and NTP timestamps for Mesg-ID, pure.

The MN-HA Mobility Message Authentication option (type 9, subtype 1) carries a Mobility SPI and
the first 96 bits of HMAC-SHA1(key, CoA ‖ HoA ‖ MH Data), where MH Data runs from the start of the
MH through the SPI with the checksum field zero (RFC 4285 §5.1). The option is the last one and
nothing follows it, so the authenticator is the tail of the MH and MH Data is everything before
it. The checksum is computed after the authenticator.

For mipnode the "CoA" is the Alternate Care-of Address option when present, else the source of
the IPv6 packet that carried the MH (docs/internals.md); callers pass it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import AddressLike, address_bytes
from mipnode.wire.mh import (
    AUTH_SUBTYPE_MN_HA,
    MH_CHECKSUM_OFFSET,
    BindingAck,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    MnHaAuth,
    MobilityMessage,
    decode_mh_with_offsets_untrusted,
    encode_mh_without_checksum,
    fill_mh_checksum,
)

AUTHENTICATOR_LENGTH = 12  # HMAC-SHA1-96
# Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
_ZERO = b"\x00" * 16


def mn_ha_authenticator(key: bytes, coa: AddressLike, hoa: AddressLike, mh_data: bytes) -> bytes:
    """First 96 bits of HMAC-SHA1(key, CoA ‖ HoA ‖ MH Data) (RFC 4285 §5.1).

    ``mh_data`` is the MH from its first octet through the SPI, checksum field zero.
    """
    mac = hmac.new(key, address_bytes(coa) + address_bytes(hoa) + mh_data, hashlib.sha1)
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
    if any(isinstance(option, MnHaAuth) for option in msg.options):
        raise ValueError("message already carries an authentication option")
    placeholder = MnHaAuth(spi=spi, authenticator=bytes(AUTHENTICATOR_LENGTH))
    raw = encode_mh_without_checksum(dataclasses.replace(msg, options=(*msg.options, placeholder)))
    mh_data = raw[:-AUTHENTICATOR_LENGTH]
    return fill_mh_checksum(mh_data + mn_ha_authenticator(key, coa, hoa, mh_data), src, dst)


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
    if not offsets:
        return False
    option = msg.options[-1]
    if not isinstance(option, MnHaAuth) or option.subtype != AUTH_SUBTYPE_MN_HA:
        return False
    if offsets[-1] + 2 + data[offsets[-1] + 1] != len(data):
        return False  # RFC 4285 §5: nothing may follow the MN-HA option
    spi_end = len(data) - len(option.authenticator)
    mh_data = (
        bytes(data[:MH_CHECKSUM_OFFSET])
        + b"\x00\x00"
        + bytes(data[MH_CHECKSUM_OFFSET + 2 : spi_end])
    )
    return hmac.compare_digest(mn_ha_authenticator(key, coa, hoa, mh_data), option.authenticator)


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
