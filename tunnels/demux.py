"""Classify a UDP payload on a tunnel port (DESIGN §3), pure.

A UDP payload is always a whole IP packet or a STUN message. Version nibble 6 -> IPv6 packet.
STUN (RFC 8489 §5): the two most significant bits are 00, the magic cookie 0x2112A442 sits at
octets 4-7, and the Message Length (a multiple of 4) plus the 20-octet header is the datagram
length. Checking the cookie and the top bits matters: aioice's parser checks neither.
Anything else is dropped by the caller and counted.
"""

from __future__ import annotations

import enum

from mipnode.wire.errors import BadPacket

STUN_MAGIC_COOKIE = b"\x21\x12\xa4\x42"
STUN_HEADER_LENGTH = 20


class UdpPayloadKind(enum.Enum):
    """What a UDP payload on a mipnode port carries."""

    IPV6 = "ipv6"
    STUN = "stun"


def is_stun(data: bytes) -> bool:
    """True when ``data`` has the shape of a STUN message (RFC 8489 §5, §6)."""
    return (
        len(data) >= STUN_HEADER_LENGTH
        and data[0] >> 6 == 0
        and data[4:8] == STUN_MAGIC_COOKIE
        and int.from_bytes(data[2:4], "big") % 4 == 0
        and STUN_HEADER_LENGTH + int.from_bytes(data[2:4], "big") == len(data)
    )


def classify_udp_payload_untrusted(data: bytes) -> UdpPayloadKind:
    """Return the kind of ``data`` from its first octets (the payload is not validated further).

    Raises:
        BadPacket: ``truncated`` for an empty payload, ``unknown_udp_payload`` otherwise.
    """
    if not data:
        raise BadPacket("truncated", "empty UDP payload")
    first = data[0]
    if first >> 4 == 6:
        return UdpPayloadKind.IPV6
    if is_stun(data):
        return UdpPayloadKind.STUN
    raise BadPacket("unknown_udp_payload", f"first octet 0x{first:02x}, {len(data)} octets")
