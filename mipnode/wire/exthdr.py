"""Home Address destination option and type 2 routing header (RFC 6275 §6.3, §6.4), pure.

A mobile node away from home sends from its care-of address and names its home address in an
HAO; packets to it carry the HoA in a type 2 routing header and go to the CoA. Upper-layer
checksums (MH, UDP, ICMPv6, ...) in such packets are computed with the HoA in the pseudo-header:
as the source for an HAO, as the final destination for an RH2 (RFC 6275 §6.1.1, §6.3, §6.4;
RFC 8200 §8.1). Callers pass those addresses; :func:`pseudo_header_addresses` derives them from a
parsed packet.

Both builders emit the 24-octet forms every implementation uses: a destination options header
holding PadN(4) + HAO so that the HAO sits at 8n+6 and the address is 8-aligned, and an RH2 with
Hdr Ext Len 2 and one address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import (
    NH_DSTOPTS,
    NH_ROUTING,
    AddressLike,
    IPv6Packet,
    address_bytes,
    build_ipv6_packet,
)

# Specification constants.
HAO_OPTION_TYPE = 0xC9  # RFC 6275 §6.3 (top bits 11: discard + ICMP if not understood)
HAO_OPTION_LENGTH = 16
ROUTING_TYPE_2 = 2  # RFC 6275 §6.4
RH2_HDR_EXT_LEN = 2
_OPT_PAD1 = 0
_OPT_PADN = 1

HAO_HEADER_LENGTH = 24
RH2_HEADER_LENGTH = 24


@dataclass(frozen=True, slots=True)
class HomeAddressOption:
    """The Home Address destination option (RFC 6275 §6.3)."""

    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class UnknownDestinationOption:
    """Any destination option other than Pad1, PadN and the HAO, kept undecoded."""

    option_type: int
    data: bytes


DestinationOption = HomeAddressOption | UnknownDestinationOption


@dataclass(frozen=True, slots=True)
class DestinationOptions:
    """A destination options header (RFC 8200 §4.6); Pad1/PadN are dropped when decoding."""

    next_header: int
    options: tuple[DestinationOption, ...]

    @property
    def home_address(self) -> IPv6Address | None:
        """The HoA of the (first) Home Address option, if any."""
        for option in self.options:
            if isinstance(option, HomeAddressOption):
                return option.home_address
        return None


@dataclass(frozen=True, slots=True)
class RoutingHeaderType2:
    """The type 2 routing header (RFC 6275 §6.4): exactly one address, the HoA."""

    next_header: int
    home_address: IPv6Address
    segments_left: int = 1

    def to_bytes(self) -> bytes:
        """Encode the 24-octet header.

        Raises:
            ValueError: a field does not fit its octet.
        """
        try:
            return struct.pack(
                "!BBBB4x16s",
                self.next_header,
                RH2_HDR_EXT_LEN,
                ROUTING_TYPE_2,
                self.segments_left,
                self.home_address.packed,
            )
        except struct.error as exc:
            raise ValueError(str(exc)) from exc


def build_hao_header(next_header: int, hoa: AddressLike) -> bytes:
    """Destination options header with PadN(4) then the HAO at offset 6 (8n+6, RFC 6275 §6.3).

    Raises:
        ValueError: ``next_header`` is not an octet or ``hoa`` is not 16 octets.
    """
    if not 0 <= next_header <= 0xFF:
        raise ValueError(f"next header out of range: {next_header}")
    # Hdr Ext Len 2 = 24 octets; PadN type 1 length 2 covers octets 2..5.
    return bytes(
        (next_header, 2, _OPT_PADN, 2, 0, 0, HAO_OPTION_TYPE, HAO_OPTION_LENGTH)
    ) + address_bytes(hoa)


def build_rh2_header(next_header: int, hoa: AddressLike) -> bytes:
    """Type 2 routing header carrying ``hoa`` with Segments Left 1 (RFC 6275 §6.4.1).

    Raises:
        ValueError: ``next_header`` is not an octet or ``hoa`` is not 16 octets.
    """
    if not 0 <= next_header <= 0xFF:
        raise ValueError(f"next header out of range: {next_header}")
    return bytes((next_header, RH2_HDR_EXT_LEN, ROUTING_TYPE_2, 1, 0, 0, 0, 0)) + address_bytes(hoa)


def build_packet_with_hao(
    coa: AddressLike,
    dst: AddressLike,
    hoa: AddressLike,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
) -> bytes:
    """IPv6 packet CoA -> ``dst`` with an HAO naming ``hoa``; ``payload``'s checksum must
    already use ``hoa`` as the source (RFC 6275 §6.3).

    Raises:
        ValueError: see :func:`build_ipv6_packet` and :func:`build_hao_header`.
    """
    return build_ipv6_packet(
        coa, dst, NH_DSTOPTS, build_hao_header(next_header, hoa) + payload, hop_limit
    )


def build_packet_with_rh2(
    src: AddressLike,
    coa: AddressLike,
    hoa: AddressLike,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
) -> bytes:
    """IPv6 packet ``src`` -> CoA with an RH2 naming ``hoa``; ``payload``'s checksum must
    already use ``hoa`` as the destination (RFC 6275 §6.4).

    Raises:
        ValueError: see :func:`build_ipv6_packet` and :func:`build_rh2_header`.
    """
    return build_ipv6_packet(
        src, coa, NH_ROUTING, build_rh2_header(next_header, hoa) + payload, hop_limit
    )


def parse_destination_options_untrusted(data: bytes) -> DestinationOptions:
    """Decode one destination options header; ``data`` is exactly its octets.

    Raises:
        BadPacket: ``truncated``/``bad_length`` when the length does not match ``data``,
            ``bad_option`` for an option overrunning the header or an HAO whose length is not 16.
    """
    if len(data) < 8:
        raise BadPacket("truncated", "destination options header")
    if len(data) != (data[1] + 1) * 8:
        raise BadPacket("bad_length", "destination options header length")
    options: list[DestinationOption] = []
    offset = 2
    while offset < len(data):
        option_type = data[offset]
        if option_type == _OPT_PAD1:
            offset += 1
            continue
        if offset + 2 > len(data) or offset + 2 + data[offset + 1] > len(data):
            raise BadPacket("bad_option", f"destination option {option_type} overruns header")
        length = data[offset + 1]
        body = bytes(data[offset + 2 : offset + 2 + length])
        if option_type == HAO_OPTION_TYPE:
            if length != HAO_OPTION_LENGTH:
                raise BadPacket("bad_option", f"home address option of length {length}")
            options.append(HomeAddressOption(IPv6Address(body)))
        elif option_type != _OPT_PADN:
            options.append(UnknownDestinationOption(option_type, body))
        offset += 2 + length
    return DestinationOptions(next_header=data[0], options=tuple(options))


def parse_rh2_untrusted(data: bytes) -> RoutingHeaderType2:
    """Decode a type 2 routing header; ``data`` is exactly its octets.

    RFC 6275 §6.4.1 fixes Hdr Ext Len 2 and one address. Segments Left is 1 on the wire; 0 is
    accepted too (RFC 8200 §4.4: a routing header with no segments left is simply skipped).

    Raises:
        BadPacket: ``truncated``, ``bad_length`` (Hdr Ext Len != 2 or buffer size mismatch),
            ``bad_routing_type`` or ``bad_segments_left``.
    """
    if len(data) < 8:
        raise BadPacket("truncated", "routing header")
    next_header, hdr_ext_len, routing_type, segments_left = data[0], data[1], data[2], data[3]
    if routing_type != ROUTING_TYPE_2:
        raise BadPacket("bad_routing_type", f"routing type {routing_type}")
    if hdr_ext_len != RH2_HDR_EXT_LEN or len(data) != RH2_HEADER_LENGTH:
        raise BadPacket("bad_length", f"type 2 routing header hdr ext len {hdr_ext_len}")
    if segments_left > 1:
        raise BadPacket("bad_segments_left", f"segments left {segments_left}")
    return RoutingHeaderType2(
        next_header=next_header,
        home_address=IPv6Address(bytes(data[8:24])),
        segments_left=segments_left,
    )


def home_address_of_untrusted(packet: IPv6Packet) -> IPv6Address | None:
    """The HoA from the packet's HAO, if a destination options header carries one.

    Raises:
        BadPacket: a destination options header is malformed.
    """
    for ext in packet.extension_headers:
        if ext.header_type == NH_DSTOPTS:
            hoa = parse_destination_options_untrusted(ext.data).home_address
            if hoa is not None:
                return hoa
    return None


def rh2_of_untrusted(packet: IPv6Packet) -> RoutingHeaderType2 | None:
    """The packet's type 2 routing header, if any (other routing types are ignored).

    Raises:
        BadPacket: a routing header of type 2 is malformed.
    """
    for ext in packet.extension_headers:
        if ext.header_type == NH_ROUTING and len(ext.data) >= 3 and ext.data[2] == ROUTING_TYPE_2:
            return parse_rh2_untrusted(ext.data)
    return None


def pseudo_header_addresses_untrusted(packet: IPv6Packet) -> tuple[IPv6Address, IPv6Address]:
    """(source, destination) for the packet's upper-layer checksum: the HoA from an HAO replaces
    the source, the HoA from an unprocessed RH2 is the final destination (RFC 6275 §6.1.1).

    Raises:
        BadPacket: an HAO or RH2 is malformed.
    """
    hoa = home_address_of_untrusted(packet)
    src = hoa if hoa is not None else packet.header.src
    rh2 = rh2_of_untrusted(packet)
    # RFC 8200 §8.1: the final destination is the last routing-header address while segments
    # remain, else the Destination Address field.
    if rh2 is not None and rh2.segments_left > 0:
        return src, rh2.home_address
    return src, packet.header.dst
