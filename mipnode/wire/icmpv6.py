"""ICMPv6 Echo Request/Reply (RFC 4443 §4.1, §4.2) and Parameter Problem (§3.4), pure: whole
packets for probes, errors and tests."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import pseudo_header_addresses_untrusted
from mipnode.wire.ipv6 import (
    NH_ICMPV6,
    AddressLike,
    build_ipv6_packet,
    icmpv6_with_checksum,
    internet_checksum,
    parse_ipv6_packet_untrusted,
    pseudo_header,
)

ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
_ECHO = struct.Struct("!BBHHH")


@dataclass(frozen=True, slots=True)
class EchoMessage:
    """An Echo Request or Reply. ``src``/``dst`` are the checksum endpoints: the HoA of an HAO
    replaces the source and the HoA of an RH2 the destination (RFC 6275 §6.3, §6.4)."""

    src: IPv6Address
    dst: IPv6Address
    ident: int
    seq: int
    data: bytes
    reply: bool


def build_echo(
    src: AddressLike,
    dst: AddressLike,
    ident: int,
    seq: int,
    data: bytes,
    *,
    reply: bool = False,
    hop_limit: int = 64,
) -> bytes:
    """A whole IPv6 packet ``src`` -> ``dst`` carrying an Echo Request (or Reply) with a correct
    checksum.

    Raises:
        ValueError: ``ident``/``seq`` not 16-bit, or the packet would exceed 65535 octets payload.
    """
    icmp_type = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    try:
        message = _ECHO.pack(icmp_type, 0, 0, ident, seq) + data
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    return build_ipv6_packet(
        src, dst, NH_ICMPV6, icmpv6_with_checksum(src, dst, message), hop_limit
    )


def parse_echo_untrusted(packet_bytes: bytes) -> EchoMessage:
    """Parse a whole IPv6 packet holding an ICMPv6 Echo Request or Reply.

    Raises:
        BadPacket: anything the IPv6 parser raises; ``not_icmpv6``, ``truncated``, ``not_echo``
            (another ICMPv6 type, or a code other than 0), ``bad_checksum``.
    """
    packet = parse_ipv6_packet_untrusted(packet_bytes)
    if packet.upper_protocol != NH_ICMPV6:
        raise BadPacket("not_icmpv6", f"upper protocol {packet.upper_protocol}")
    message = packet.payload
    if len(message) < _ECHO.size:
        raise BadPacket("truncated", f"ICMPv6 echo of {len(message)} octets")
    icmp_type, code, _checksum, ident, seq = _ECHO.unpack_from(message)
    if icmp_type not in (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY) or code != 0:
        raise BadPacket("not_echo", f"type {icmp_type} code {code}")
    src, dst = pseudo_header_addresses_untrusted(packet)
    if internet_checksum(pseudo_header(src, dst, NH_ICMPV6, len(message)) + message):
        raise BadPacket("bad_checksum")
    return EchoMessage(
        src=src,
        dst=dst,
        ident=ident,
        seq=seq,
        data=message[_ECHO.size :],
        reply=icmp_type == ICMPV6_ECHO_REPLY,
    )


ICMPV6_PARAMETER_PROBLEM = 4
_ERROR_HEADER = struct.Struct("!BBHI")
MIN_MTU = 1280  # RFC 8200 §5: an ICMPv6 error never exceeds it (RFC 4443 §2.4 (c))


def build_parameter_problem(
    src: AddressLike,
    dst: AddressLike,
    code: int,
    pointer: int,
    invoking: bytes,
    *,
    max_octets: int = MIN_MTU,
) -> bytes | None:
    """A whole IPv6 packet carrying a Parameter Problem (RFC 4443 §3.4) about ``invoking`` (the
    packet at fault, from its IPv6 header), ``pointer`` the offset of the field in it. As much
    of ``invoking`` as fits in ``max_octets`` (and in the minimum MTU) is quoted; None when not
    even the field ``pointer`` names would fit."""
    room = min(max_octets, MIN_MTU) - 40 - _ERROR_HEADER.size
    if room <= pointer:
        return None
    message = _ERROR_HEADER.pack(ICMPV6_PARAMETER_PROBLEM, code, 0, pointer) + invoking[:room]
    return build_ipv6_packet(src, dst, NH_ICMPV6, icmpv6_with_checksum(src, dst, message))
