"""Whole UDP packets over IPv6 or IPv4 with correct checksums (RFC 768, RFC 8200 §8.1, RFC 791).

For captures and tests: the daemons send through kernel UDP sockets. The DSMIPv6 port (RFC 5555)
is :data:`DSMIP_UDP_PORT`; the UDP payload is always a whole inner IP packet (DESIGN §3).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from mipnode.wire.ipv6 import (
    NH_UDP,
    AddressLike,
    build_ipv6_packet,
    internet_checksum,
    pseudo_header,
)

DSMIP_UDP_PORT = 4191
UDP_HEADER_LENGTH = 8
IPV4_HEADER_LENGTH = 20
_UDP = struct.Struct("!HHHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")

IPv4AddressLike = IPv4Address | bytes


def _ipv4_bytes(address: IPv4AddressLike) -> bytes:
    if isinstance(address, IPv4Address):
        return address.packed
    if len(address) != 4:
        raise ValueError(f"an IPv4 address is 4 octets, got {len(address)}")
    return bytes(address)


def _udp(sport: int, dport: int, payload: bytes, pseudo: bytes) -> bytes:
    length = UDP_HEADER_LENGTH + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} octets")
    try:
        datagram = _UDP.pack(sport, dport, length, 0) + payload
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    # RFC 768 / RFC 8200 §8.1: a computed checksum of zero is sent as all ones.
    checksum = internet_checksum(pseudo + datagram) or 0xFFFF
    return datagram[:6] + struct.pack("!H", checksum) + datagram[8:]


def build_udp_ipv6(
    src: AddressLike, dst: AddressLike, sport: int, dport: int, payload: bytes, hop_limit: int = 64
) -> bytes:
    """IPv6 + UDP packet with the UDP checksum over the RFC 8200 §8.1 pseudo-header.

    Raises:
        ValueError: ports out of range, payload too long, or a malformed address.
    """
    length = UDP_HEADER_LENGTH + len(payload)
    datagram = _udp(sport, dport, payload, pseudo_header(src, dst, NH_UDP, length))
    return build_ipv6_packet(src, dst, NH_UDP, datagram, hop_limit)


def build_udp_ipv4(
    src: IPv4AddressLike,
    dst: IPv4AddressLike,
    sport: int,
    dport: int,
    payload: bytes,
    ttl: int = 64,
) -> bytes:
    """IPv4 (20-octet header, DF set, ID 0) + UDP packet with both checksums.

    Raises:
        ValueError: ports out of range, payload too long, or a malformed address.
    """
    src_b, dst_b = _ipv4_bytes(src), _ipv4_bytes(dst)
    length = UDP_HEADER_LENGTH + len(payload)
    total = IPV4_HEADER_LENGTH + length
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} octets")
    pseudo = src_b + dst_b + struct.pack("!BBH", 0, NH_UDP, length)
    datagram = _udp(sport, dport, payload, pseudo)
    # RFC 6864 §4.1: an atomic datagram (DF=1, never fragmented) may carry ID 0.
    try:
        header = _IPV4.pack(0x45, 0, total, 0, 0x4000, ttl, NH_UDP, 0, src_b, dst_b)
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + datagram
