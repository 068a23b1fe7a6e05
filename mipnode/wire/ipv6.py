"""IPv6 header codec, extension-header walk and the Internet checksum (pure).

Theory of operation: :func:`parse_ipv6_packet_untrusted` checks the fixed header (RFC 8200 §3),
trims the buffer to ``40 + Payload Length`` (link-layer padding after it is ignored) and walks
the extension headers a Mobile IPv6 node must see (hop-by-hop, routing, destination options,
fragment; RFC 8200 §4) without interpreting their contents. Each one is kept as a
:class:`RawExtensionHeader`; ``mipnode.wire.exthdr`` decodes the HAO and the type 2 routing
header from them. The walk stops at the first other header; that protocol and its offset are the
"upper layer" of the packet (which may itself be an extension such as AH, or IPv6-in-IPv6).

Addresses given to builders may be :class:`ipaddress.IPv6Address` or their 16 packed octets (the
drivers' fast paths keep addresses as ``bytes``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from mipnode.wire.errors import BadPacket

# Next Header values (IANA "Assigned Internet Protocol Numbers").
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_IPV6 = 41
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
NH_MH = 135

IPV6_HEADER_LENGTH = 40
MAX_PAYLOAD_LENGTH = 0xFFFF
# Implementation constant: more extension headers than this is an attack, not a packet.
MAX_EXTENSION_HEADERS = 8

_EXTENSION_HEADERS = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS})
_FIXED = struct.Struct("!IHBB16s16s")

AddressLike = IPv6Address | bytes


def address_bytes(address: AddressLike) -> bytes:
    """Return the 16 packed octets of ``address``.

    Raises:
        ValueError: ``address`` is ``bytes`` of the wrong length.
    """
    if isinstance(address, IPv6Address):
        return address.packed
    if len(address) != 16:
        raise ValueError(f"an IPv6 address is 16 octets, got {len(address)}")
    return bytes(address)


@dataclass(frozen=True, slots=True)
class IPv6Header:
    """The fixed IPv6 header (RFC 8200 §3)."""

    src: IPv6Address
    dst: IPv6Address
    next_header: int
    payload_length: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    def to_bytes(self) -> bytes:
        """Encode the 40-octet header.

        Raises:
            ValueError: a field does not fit its width.
        """
        if not 0 <= self.flow_label <= 0xFFFFF:
            raise ValueError(f"flow label out of range: {self.flow_label}")
        if not 0 <= self.traffic_class <= 0xFF:
            raise ValueError(f"traffic class out of range: {self.traffic_class}")
        if not 0 <= self.payload_length <= MAX_PAYLOAD_LENGTH:
            raise ValueError(f"payload length out of range: {self.payload_length}")
        word = (6 << 28) | (self.traffic_class << 20) | self.flow_label
        try:
            return _FIXED.pack(
                word,
                self.payload_length,
                self.next_header,
                self.hop_limit,
                self.src.packed,
                self.dst.packed,
            )
        except struct.error as exc:
            raise ValueError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class RawExtensionHeader:
    """One extension header as found on the wire.

    ``header_type`` is the protocol number that announced it (e.g. ``NH_DSTOPTS``),
    ``next_header`` its own Next Header field, ``data`` all of its octets.
    """

    header_type: int
    next_header: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IPv6Packet:
    """A parsed IPv6 packet: fixed header, walked extension headers, upper-layer payload.

    ``upper_offset`` is the offset of ``payload`` in the original buffer.
    """

    header: IPv6Header
    extension_headers: tuple[RawExtensionHeader, ...]
    upper_protocol: int
    upper_offset: int
    payload: bytes


def parse_ipv6_header_untrusted(data: bytes) -> IPv6Header:
    """Parse the fixed header: version 6, at least 40 octets, Payload Length within the buffer.

    Raises:
        BadPacket: ``truncated``, ``bad_version`` or ``bad_length``.
    """
    if len(data) < IPV6_HEADER_LENGTH:
        raise BadPacket("truncated", f"{len(data)} octets, IPv6 header needs 40")
    word, payload_length, next_header, hop_limit, src, dst = _FIXED.unpack_from(data)
    if word >> 28 != 6:
        raise BadPacket("bad_version", f"version {word >> 28}")
    # Payload Length 0 with a Jumbo Payload option (RFC 2675) is not supported: it reads as an
    # empty payload, which the upper-layer parsers then reject.
    if payload_length > len(data) - IPV6_HEADER_LENGTH:
        raise BadPacket(
            "bad_length", f"payload length {payload_length}, {len(data) - 40} octets present"
        )
    return IPv6Header(
        src=IPv6Address(src),
        dst=IPv6Address(dst),
        next_header=next_header,
        payload_length=payload_length,
        hop_limit=hop_limit,
        traffic_class=(word >> 20) & 0xFF,
        flow_label=word & 0xFFFFF,
    )


def parse_ipv6_packet_untrusted(data: bytes) -> IPv6Packet:
    """Parse the fixed header and walk hop-by-hop, routing, destination-options and fragment
    headers (at most :data:`MAX_EXTENSION_HEADERS`).

    A non-first fragment (offset != 0) ends the walk with ``upper_protocol == NH_FRAGMENT`` and
    the payload starting at the fragment header, because what follows it is not a header.

    Raises:
        BadPacket: anything :func:`parse_ipv6_header_untrusted` raises; ``truncated`` when an
            extension header overruns the payload; ``bad_exthdr`` for a hop-by-hop header that
            is not first (RFC 8200 §4.1) or too many extension headers.
    """
    header = parse_ipv6_header_untrusted(data)
    end = IPV6_HEADER_LENGTH + header.payload_length
    offset = IPV6_HEADER_LENGTH
    protocol = header.next_header
    found: list[RawExtensionHeader] = []
    while protocol in _EXTENSION_HEADERS:
        if len(found) == MAX_EXTENSION_HEADERS:
            raise BadPacket("bad_exthdr", "too many extension headers")
        if protocol == NH_HOPOPTS and found:
            raise BadPacket("bad_exthdr", "hop-by-hop options header not first")
        if end - offset < 8:
            raise BadPacket("truncated", "extension header")
        next_header = data[offset]
        if protocol == NH_FRAGMENT:
            length = 8
            if struct.unpack_from("!H", data, offset + 2)[0] >> 3 != 0:
                break
        else:
            length = (data[offset + 1] + 1) * 8
        if end - offset < length:
            raise BadPacket("truncated", f"extension header of {length} octets")
        found.append(
            RawExtensionHeader(protocol, next_header, bytes(data[offset : offset + length]))
        )
        offset += length
        protocol = next_header
    return IPv6Packet(
        header=header,
        extension_headers=tuple(found),
        upper_protocol=protocol,
        upper_offset=offset,
        payload=bytes(data[offset:end]),
    )


def build_ipv6_packet(
    src: AddressLike,
    dst: AddressLike,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
) -> bytes:
    """Return a 40-octet IPv6 header (traffic class and flow label 0) followed by ``payload``.

    Raises:
        ValueError: payload longer than 65535 octets or an address of the wrong length.
    """
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"payload of {len(payload)} octets needs a jumbogram")
    try:
        header = _FIXED.pack(
            6 << 28,
            len(payload),
            next_header,
            hop_limit,
            address_bytes(src),
            address_bytes(dst),
        )
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    return header + payload


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of ``data`` (RFC 1071).

    An odd trailing octet is padded with zero. Verifying a buffer whose checksum field is filled
    in gives 0. The result may be 0; UDP senders transmit that as 0xFFFF (RFC 8200 §8.1).
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    # 2**16 == 1 (mod 0xFFFF), so the sum of the 16-bit words is the number mod 0xFFFF; the
    # end-around-carry sum is 0 only for all-zero input, otherwise 0xFFFF stands for 0.
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF
    if total == 0 and value != 0:
        total = 0xFFFF
    return ~total & 0xFFFF


def pseudo_header(src: AddressLike, dst: AddressLike, next_header: int, length: int) -> bytes:
    """The upper-layer pseudo-header of RFC 8200 §8.1."""
    return address_bytes(src) + address_bytes(dst) + struct.pack("!IxxxB", length, next_header)


def icmpv6_with_checksum(src: AddressLike, dst: AddressLike, message: bytes) -> bytes:
    """``message``, an ICMPv6 message whose checksum field (octets 2-3) is zero, with its
    checksum over ``src`` and ``dst`` filled in (RFC 4443 §2.3)."""
    checksum = upper_layer_checksum(src, dst, NH_ICMPV6, message)
    return message[:2] + checksum.to_bytes(2, "big") + message[4:]


def upper_layer_checksum(src: AddressLike, dst: AddressLike, next_header: int, data: bytes) -> int:
    """Checksum of ``data`` (its checksum field zero) under the RFC 8200 §8.1 pseudo-header.

    ``src`` is the HoA when the packet has an HAO, ``dst`` the final destination when it has a
    routing header (RFC 6275 §6.1.1, §6.3, §6.4).
    """
    return internet_checksum(pseudo_header(src, dst, next_header, len(data)) + data)
