"""RFC 6275 Binding Authorization Data (return routability) for BU/BA to and from a CN, pure.

RFC 6275 §5.2.6 authorises a Binding Update to a correspondent with

    Authenticator = First (96, HMAC_SHA1 (Kbm, (care-of address | correspondent | BU)))

and §6.2.7 (the Binding Authorization Data option, type 5) states exactly what is MACed:

    Mobility Data = care-of address | correspondent | MH Data
    Authenticator = First (96, HMAC_SHA1 (Kbm, Mobility Data))

where "MH Data" is the content of the Mobility Header *excluding the Authenticator field itself*,
calculated as if the Checksum field were zero; the checksum is then computed in the usual way over
the finished MH, authenticator included. The Binding Acknowledgement uses the same formula. The
option is the last one with no padding after it (alignment 8n+2, §6.2.7), so the authenticator
is the final 12 octets of the MH and MH Data is everything before them (the option's Type and
Length octets included), checksum zeroed.

"care-of address" is the CoA being registered (the Alternate Care-of Address when present), or
the home address for a de-registration; "correspondent" is the CN's address (the home address
from an RH2 when the CN is itself mobile). Callers pass both; Kbm comes from
``mipnode/core/rr.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import AddressLike, address_bytes
from mipnode.wire.mh import (
    MH_CHECKSUM_OFFSET,
    BindingAck,
    BindingAuthorizationData,
    BindingUpdate,
    MnHaAuth,
    MobilityMessage,
    decode_mh_with_offsets_untrusted,
    encode_mh_without_checksum,
    fill_mh_checksum,
)

AUTHENTICATOR_LENGTH = 12  # First(96, HMAC_SHA1(...))
_ZERO = b"\x00" * 16


def binding_authenticator(kbm: bytes, coa: AddressLike, cn: AddressLike, mh_data: bytes) -> bytes:
    """First 96 bits of HMAC-SHA1(Kbm, CoA ‖ CN ‖ MH Data) (RFC 6275 §5.2.6, §6.2.7).

    ``mh_data`` is the whole MH with the checksum field zero and without the Authenticator
    field's octets.
    """
    mac = hmac.new(kbm, address_bytes(coa) + address_bytes(cn) + mh_data, hashlib.sha1)
    return mac.digest()[:AUTHENTICATOR_LENGTH]


def encode_mh_with_bad(
    msg: MobilityMessage,
    src: AddressLike,
    dst: AddressLike,
    *,
    kbm: bytes,
    coa: AddressLike,
    cn: AddressLike,
) -> bytes:
    """Encode ``msg`` (a BU or BA) with its options followed by the Binding Authorization Data
    option (last, no trailing padding), the authenticator filled in and then the checksum.

    ``src``/``dst`` are the pseudo-header addresses as for :func:`mipnode.wire.mh.encode_mh`.

    Raises:
        ValueError: ``msg`` is not a BU or BA, already carries a BAD or MN-HA auth option, or a
            field is out of range.
    """
    if not isinstance(msg, BindingUpdate | BindingAck):
        raise ValueError(f"cannot authorise {type(msg).__name__}")
    if any(isinstance(o, BindingAuthorizationData | MnHaAuth) for o in msg.options):
        raise ValueError("message already carries an authentication or authorization option")
    placeholder = BindingAuthorizationData(bytes(AUTHENTICATOR_LENGTH))
    raw = encode_mh_without_checksum(dataclasses.replace(msg, options=(*msg.options, placeholder)))
    mh_data = raw[:-AUTHENTICATOR_LENGTH]
    return fill_mh_checksum(mh_data + binding_authenticator(kbm, coa, cn, mh_data), src, dst)


def verify_bad(data: bytes, *, kbm: bytes, coa: AddressLike, cn: AddressLike) -> bool:
    """True when ``data`` (a whole MH) ends with a Binding Authorization Data option whose
    12-octet authenticator is right for ``kbm``, ``coa`` and ``cn``; compared in constant time.

    Returns False, never raises, for malformed MHs, an MH whose last option is not BAD (or is
    followed by padding), an authenticator of another length, and wrong authenticators. The
    checksum and the message type are not checked here.
    """
    try:
        msg, offsets = decode_mh_with_offsets_untrusted(data, _ZERO, _ZERO, verify_checksum=False)
        option = msg.options[-1] if offsets else None
        if not isinstance(option, BindingAuthorizationData):
            return False
        if len(option.authenticator) != AUTHENTICATOR_LENGTH:
            return False
        if offsets[-1] + 2 + AUTHENTICATOR_LENGTH != len(data):
            return False  # §6.2.7: nothing may follow the BAD option
        mh_data = (
            bytes(data[:MH_CHECKSUM_OFFSET])
            + b"\x00\x00"
            + bytes(data[MH_CHECKSUM_OFFSET + 2 : -AUTHENTICATOR_LENGTH])
        )
        expected = binding_authenticator(kbm, coa, cn, mh_data)
    except (BadPacket, ValueError, TypeError):
        return False  # also a bad address or key type from the caller: never raise
    return hmac.compare_digest(expected, option.authenticator)
