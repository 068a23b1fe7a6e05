"""A strict front door to ``aioice.stun``.

aioice's parser checks neither the magic cookie nor the top two bits and can leak
``struct.error`` and friends on garbage (reference/ice.md), so every check that tells STUN apart
from other UDP payloads (DESIGN §3) happens here first, and only ``BadPacket`` escapes.
"""

from __future__ import annotations

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
    if len(data) < HEADER_LENGTH:
        raise BadPacket("truncated", "shorter than a STUN header")
    if data[0] & 0xC0:
        raise BadPacket("stun_top_bits")
    if data[4:8] != _COOKIE_BYTES:
        raise BadPacket("stun_cookie")
    if int.from_bytes(data[2:4], "big") + HEADER_LENGTH != len(data) or len(data) % 4:
        raise BadPacket("bad_length", "STUN length field disagrees with the datagram")
    try:
        return stun.parse_message(data)
    except Exception as exc:  # third-party parser: anything it raises is a bad packet
        raise BadPacket("stun_malformed", type(exc).__name__) from None


def binding_request(transaction_id: bytes) -> bytes:
    return bytes(
        stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.REQUEST,
            transaction_id=transaction_id,
        )
    )


def binding_response(transaction_id: bytes, mapped: tuple[str, int]) -> bytes:
    """Success response telling the requester where its request came from (RFC 8489 §14.2)."""
    msg = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=transaction_id,
    )
    msg.attributes["XOR-MAPPED-ADDRESS"] = mapped
    return bytes(msg)
