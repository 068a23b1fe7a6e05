"""A strict front door to ``aioice.stun``.

aioice's parser checks neither the magic cookie nor the top two bits and can leak
``struct.error`` and friends on garbage (reference/ice.md), so every check that tells STUN apart
from other UDP payloads (DESIGN §3) happens here first, and only ``BadPacket`` escapes.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from aioice import stun

from mipnode.wire.errors import BadPacket
from tunnels.demux import is_stun

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20

Message = stun.Message
Method = stun.Method
Class = stun.Class


def looks_like_stun(data: bytes) -> bool:
    """RFC 8489 §6: top two bits zero, magic cookie, consistent length (DESIGN §3 demux)."""
    return is_stun(data)


def parse_stun_untrusted(data: bytes) -> stun.Message:
    """Parse a STUN message after the header checks of DESIGN §3 (integrity not checked).

    Raises:
        BadPacket: ``truncated``, ``stun_top_bits``, ``stun_cookie``, ``bad_length``,
            ``stun_malformed``.
    """
    _check_header(data)
    try:
        return stun.parse_message(data)
    except Exception as exc:  # third-party parser: anything it raises is a bad packet
        raise BadPacket("stun_malformed", type(exc).__name__) from None


def _check_header(data: bytes) -> None:
    if len(data) < HEADER_LENGTH:
        raise BadPacket("truncated", "shorter than a STUN header")
    if data[0] & 0xC0:
        raise BadPacket("stun_top_bits")
    if data[4:8] != _COOKIE_BYTES:
        raise BadPacket("stun_cookie")
    if int.from_bytes(data[2:4], "big") + HEADER_LENGTH != len(data) or len(data) % 4:
        raise BadPacket("bad_length", "STUN length field disagrees with the datagram")


# A Binding success response with an IPv6 XOR-MAPPED-ADDRESS is 44 octets. Requests to the HA
# are padded to at least that (a SOFTWARE attribute, comprehension-optional, RFC 8489 §14.14),
# so the HA can answer only requests at least as large as its answer: amplification <= 1.
MIN_ANSWERED_REQUEST = 44
_SOFTWARE = "mipnode"


def binding_request(transaction_id: bytes) -> bytes:
    msg = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=transaction_id,
    )
    msg.attributes["SOFTWARE"] = _SOFTWARE + " " * 13  # 20 octets: a 48-octet request
    return bytes(msg)


def binding_response(transaction_id: bytes, mapped: tuple[str, int]) -> bytes:
    """Success response telling the requester where its request came from (RFC 8489 §14.2)."""
    msg = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=transaction_id,
    )
    msg.attributes["XOR-MAPPED-ADDRESS"] = mapped
    return bytes(msg)


# -- ICE connectivity checks (RFC 8445 §7.1-§7.3, RFC 8489 short-term credentials) ---------
#
# A check is a Binding request with USERNAME "<receiver ufrag>:<sender ufrag>", PRIORITY,
# ICE-CONTROLLING or ICE-CONTROLLED (the 64-bit tie-breaker), USE-CANDIDATE when the
# controlling agent nominates, then MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the receiver's
# password) and FINGERPRINT last. Its success response carries XOR-MAPPED-ADDRESS and is signed
# with the responder's password, so both directions are authenticated. The parser below is
# stricter than aioice's: every attribute must fit the datagram, MESSAGE-INTEGRITY (20 octets)
# must be followed by nothing but FINGERPRINT, FINGERPRINT must be present and last, and an
# unknown comprehension-required attribute (< 0x8000) rejects the message (RFC 8489 §14 would
# answer 420; an agent that answers only authenticated requests just drops it).

ROLE_CONFLICT = 487  # RFC 8445 §7.3.1.1
_FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7
_ATTR_MESSAGE_INTEGRITY = 0x0008
_ATTR_FINGERPRINT = 0x8028
_MI_LENGTH = 20
_COMPREHENSION_OPTIONAL = 0x8000


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """An authenticated connectivity check (RFC 8445 §7.1)."""

    transaction_id: bytes
    username: str
    priority: int
    ice_controlling: int | None = None
    ice_controlled: int | None = None
    use_candidate: bool = False


@dataclass(frozen=True, slots=True)
class CheckResponse:
    """An authenticated answer to a check: success with the mapped address, or an error."""

    transaction_id: bytes
    mapped: tuple[str, int] | None = None
    error_code: int | None = None

    @property
    def success(self) -> bool:
        return self.error_code is None


def build_check(
    transaction_id: bytes,
    *,
    username: str,
    password: str,
    priority: int,
    controlling: bool,
    tie_breaker: int,
    use_candidate: bool = False,
) -> bytes:
    """A signed Binding request for a connectivity check (RFC 8445 §7.1.1-§7.1.2).

    ``password`` is the *receiver's* password; ``username`` is "receiver-ufrag:our-ufrag".
    """
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = priority
    role = "ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"
    msg.attributes[role] = tie_breaker
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(password.encode())  # adds FINGERPRINT after it
    return bytes(msg)


def build_check_success(transaction_id: bytes, *, mapped: tuple[str, int], password: str) -> bytes:
    """Success response: XOR-MAPPED-ADDRESS = the request's source, signed with our password."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id)
    msg.attributes["XOR-MAPPED-ADDRESS"] = mapped
    msg.add_message_integrity(password.encode())
    return bytes(msg)


def build_check_error(transaction_id: bytes, *, code: int, reason: str, password: str) -> bytes:
    """Error response (e.g. 487 Role Conflict), signed with our password (RFC 8445 §7.3.1.1)."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id)
    msg.attributes["ERROR-CODE"] = (code, reason)
    msg.add_message_integrity(password.encode())
    return bytes(msg)


def parse_check_untrusted(
    data: bytes, *, local_password: str, remote_password: str | None
) -> CheckRequest | CheckResponse:
    """Parse and authenticate a check or an answer to one.

    Requests are verified with ``local_password`` (the key the peer used), responses with
    ``remote_password``. The USERNAME of a request is returned for the caller to match.

    Raises:
        BadPacket: ``truncated``, ``stun_top_bits``, ``stun_cookie``, ``bad_length``,
            ``stun_malformed``, ``stun_attribute_length``, ``stun_unknown_attribute``,
            ``stun_no_fingerprint``, ``stun_fingerprint``, ``stun_no_integrity``,
            ``stun_integrity``, ``stun_not_binding``, ``stun_indication``,
            ``stun_missing_attribute``, ``stun_no_remote_credentials``.
    """
    _check_header(data)
    _check_layout(data)
    msg = parse_stun_untrusted(data)
    if msg.message_method != stun.Method.BINDING:
        raise BadPacket("stun_not_binding")
    if msg.message_class == stun.Class.INDICATION:
        raise BadPacket("stun_indication")
    if msg.message_class == stun.Class.REQUEST:
        key = local_password
    elif remote_password is None:
        raise BadPacket("stun_no_remote_credentials")
    else:
        key = remote_password
    if not msg.check_message_integrity(key.encode()):
        raise BadPacket("stun_integrity")
    try:
        return _typed(msg)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPacket("stun_missing_attribute", str(exc)) from None


def parse_lite_answer_untrusted(data: bytes) -> CheckResponse:
    """Parse a lite peer's answer to :func:`binding_request` (no credentials: the home agent).

    Nothing in it is signed; what ties it to a check is the 96-bit random transaction id, which
    an off-path sender cannot guess (RFC 8489 §5: the id is what matches a response).

    Raises:
        BadPacket: the reasons of :func:`parse_stun_untrusted`, ``stun_not_binding``,
            ``stun_not_response``, ``stun_missing_attribute``.
    """
    msg = parse_stun_untrusted(data)
    if msg.message_method != stun.Method.BINDING:
        raise BadPacket("stun_not_binding")
    if msg.message_class not in (stun.Class.RESPONSE, stun.Class.ERROR):
        raise BadPacket("stun_not_response")
    try:
        answer = _typed(msg)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPacket("stun_missing_attribute", str(exc)) from None
    assert isinstance(answer, CheckResponse)  # not a request: checked above
    return answer


def _check_layout(data: bytes) -> None:
    """Every attribute fits; MESSAGE-INTEGRITY then FINGERPRINT (verified) end the message."""
    if len(data) < HEADER_LENGTH:
        raise BadPacket("truncated", "shorter than a STUN header")
    types: list[int] = []
    pos = HEADER_LENGTH
    mi_at = fp_at = fp_pos = -1
    while pos < len(data):
        if pos + 4 > len(data):
            raise BadPacket("stun_attribute_length")
        attr_type = int.from_bytes(data[pos : pos + 2], "big")
        attr_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 4 + attr_len + (-attr_len % 4)
        if end > len(data):
            raise BadPacket("stun_attribute_length")
        if attr_type < _COMPREHENSION_OPTIONAL and attr_type not in stun.ATTRIBUTES_BY_TYPE:
            raise BadPacket("stun_unknown_attribute", f"0x{attr_type:04x}")
        if attr_type == _ATTR_MESSAGE_INTEGRITY:
            if attr_len != _MI_LENGTH:
                raise BadPacket("stun_attribute_length", "MESSAGE-INTEGRITY")
            # The first one counts: it is the one aioice verifies, ignoring what follows it. Were
            # it the last one, a second MESSAGE-INTEGRITY before FINGERPRINT (a CRC anyone can
            # recompute) would let unauthenticated attributes follow the verified one.
            if mi_at < 0:
                mi_at = len(types)
        elif attr_type == _ATTR_FINGERPRINT:
            if attr_len != 4:
                raise BadPacket("stun_attribute_length", "FINGERPRINT")
            fp_at = len(types)
            fp_pos = pos
        types.append(attr_type)
        pos = end
    if fp_at < 0 or fp_at != len(types) - 1:
        raise BadPacket("stun_no_fingerprint")
    expected = binascii.crc32(data[:fp_pos]) ^ _FINGERPRINT_XOR
    if int.from_bytes(data[fp_pos + 4 : fp_pos + 8], "big") != expected:
        raise BadPacket("stun_fingerprint")
    if mi_at < 0 or mi_at != len(types) - 2:
        raise BadPacket("stun_no_integrity")


def _typed(msg: stun.Message) -> CheckRequest | CheckResponse:
    a = msg.attributes
    tid = msg.transaction_id
    if msg.message_class == stun.Class.REQUEST:
        username, priority = a["USERNAME"], a["PRIORITY"]
        if not isinstance(username, str) or not isinstance(priority, int) or priority < 1:
            raise ValueError("USERNAME/PRIORITY")
        controlling, controlled = a.get("ICE-CONTROLLING"), a.get("ICE-CONTROLLED")
        if controlling is not None and controlled is not None:
            raise ValueError("both ICE-CONTROLLING and ICE-CONTROLLED")
        return CheckRequest(tid, username, priority, controlling, controlled, "USE-CANDIDATE" in a)
    if msg.message_class == stun.Class.RESPONSE:
        mapped = a["XOR-MAPPED-ADDRESS"]
        return CheckResponse(tid, (str(mapped[0]), int(mapped[1])))
    code = a["ERROR-CODE"][0]
    if not 300 <= code <= 699:
        raise ValueError("ERROR-CODE out of range")
    return CheckResponse(tid, None, int(code))
