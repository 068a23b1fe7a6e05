"""Outer headers the daemons never build themselves, for the wire tests and their oracles.

The kernel adds the outer IPv6 header of IPv6-in-IPv6 (raw socket, protocol 41) and the UDP and
IPv4 headers of T-udp (UDP sockets); the tests build whole packets with these to feed scapy,
tshark and the parsers. The UDP-in-IPv6 builder the cores use is
:func:`mipnode.wire.packets.udp_in_ipv6`.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import (
    IPV6_HEADER_LENGTH,
    NH_IPV6,
    NH_UDP,
    AddressLike,
    IPv6Header,
    build_ipv6_packet,
    internet_checksum,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
)

DSMIP_UDP_PORT = 4191
UDP_HEADER_LENGTH = 8
IPV4_HEADER_LENGTH = 20
_UDP = struct.Struct("!HHHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")

IPv4AddressLike = IPv4Address | bytes


def encapsulate(
    outer_src: AddressLike, outer_dst: AddressLike, inner: bytes, hop_limit: int = 64
) -> bytes:
    """Prepend an outer IPv6 header (Next Header 41, RFC 2473 §3)."""
    return build_ipv6_packet(outer_src, outer_dst, NH_IPV6, inner, hop_limit)


def decapsulate_untrusted(packet: bytes) -> tuple[IPv6Header, bytes]:
    """The outer header and the inner IPv6 packet, which must fill the outer payload exactly.

    Raises:
        BadPacket: what the IPv6 parser raises; ``not_ip6ip6``; ``bad_length``.
    """
    outer = parse_ipv6_packet_untrusted(packet)
    if outer.upper_protocol != NH_IPV6:
        raise BadPacket("not_ip6ip6", f"upper protocol {outer.upper_protocol}")
    inner = outer.payload
    inner_header = parse_ipv6_header_untrusted(inner)
    if IPV6_HEADER_LENGTH + inner_header.payload_length != len(inner):
        raise BadPacket("bad_length", "inner packet shorter than the outer payload")
    return outer.header, inner


def _ipv4_bytes(address: IPv4AddressLike) -> bytes:
    if isinstance(address, IPv4Address):
        return address.packed
    if len(address) != 4:
        raise ValueError(f"an IPv4 address is 4 octets, got {len(address)}")
    return bytes(address)


def build_udp_ipv4(
    src: IPv4AddressLike,
    dst: IPv4AddressLike,
    sport: int,
    dport: int,
    payload: bytes,
    ttl: int = 64,
) -> bytes:
    """IPv4 (20-octet header, DF set, ID 0) + UDP packet with both checksums (RFC 768, 791).

    Raises:
        ValueError: ports out of range, payload too long, or a malformed address.
    """
    src_b, dst_b = _ipv4_bytes(src), _ipv4_bytes(dst)
    length = UDP_HEADER_LENGTH + len(payload)
    total = IPV4_HEADER_LENGTH + length
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} octets")
    pseudo = src_b + dst_b + struct.pack("!BBH", 0, NH_UDP, length)
    try:
        datagram = _UDP.pack(sport, dport, length, 0) + payload
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    checksum = internet_checksum(pseudo + datagram) or 0xFFFF
    datagram = datagram[:6] + struct.pack("!H", checksum) + datagram[8:]
    # RFC 6864 §4.1: an atomic datagram (DF=1, never fragmented) may carry ID 0.
    try:
        header = _IPV4.pack(0x45, 0, total, 0, 0x4000, ttl, NH_UDP, 0, src_b, dst_b)
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + datagram
