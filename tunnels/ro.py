"""Per-packet rewrites for D-native route optimisation (RFC 6275 §6.3, §6.4, §9.3.1, §11.3).

Upper-layer checksums of route-optimised packets are computed over the home address (HoA), so
moving the HoA between the address field and the HAO / RH2 never touches a checksum: the
transport header stays valid end to end (reference/linux.md "End-to-end RO demo").

- MN send: ``add_home_address_option`` turns ``HoA -> CN`` into ``CoA -> CN`` + HAO(HoA).
- CN receive: ``remove_home_address_option_untrusted`` turns it back into ``HoA -> CN``.
- CN send: ``add_type2_routing_header`` turns ``CN -> HoA`` into ``CN -> CoA`` + RH2(HoA).
- MN receive: ``remove_type2_routing_header_untrusted`` turns it back into ``CN -> HoA``.

Only packets whose first next header is an upper layer are rewritten on send (a hop-by-hop or
routing header would have to stay in front of the new header: such packets keep the tunnel).
"""

from __future__ import annotations

import struct

from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import (
    HAO_OPTION_LENGTH,
    HAO_OPTION_TYPE,
    build_hao_header,
    build_rh2_header,
)
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_ROUTING

# RFC 8200 §4 and the IANA extension header registry: what can_route_optimise() refuses.
EXTENSION_HEADERS = frozenset({0, 43, 44, 50, 51, 60, 135, 139, 140})
EXT_LEN = 24  # both the HAO destination options header and the RH2 are 24 octets
_PLEN = struct.Struct("!H")


def _check_fixed(packet: bytes) -> None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        raise BadPacket("not_ipv6")
    if 40 + _PLEN.unpack_from(packet, 4)[0] != len(packet):
        raise BadPacket("bad_length", "payload length disagrees with the packet")


def can_route_optimise(packet: bytes) -> bool:
    """True when ``packet`` (from our own TUN) has no extension header we would have to keep
    in front of an inserted one, and room for 24 more octets."""
    return packet[6] not in EXTENSION_HEADERS and len(packet) + EXT_LEN <= 0xFFFF + 40


def add_home_address_option(packet: bytes, care_of: bytes) -> bytes:
    """``HoA -> CN`` becomes ``CoA -> CN`` with HAO(HoA) (RFC 6275 §11.3.1)."""
    plen = _PLEN.unpack_from(packet, 4)[0] + EXT_LEN
    return b"".join(
        (
            packet[:4],
            _PLEN.pack(plen),
            bytes((NH_DSTOPTS,)),
            packet[7:8],
            care_of,
            packet[24:40],
            build_hao_header(packet[6], packet[8:24]),
            packet[40:],
        )
    )


def remove_home_address_option_untrusted(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """Undo ``add_home_address_option``: return (care-of address, HoA, ``HoA -> CN`` packet).

    The destination options header must hold exactly the HAO and padding; anything else is not
    ours to rewrite (RFC 6275 §9.3.1 processes only the HAO).

    Raises:
        BadPacket: not IPv6, no destination options header, malformed options, no HAO.
    """
    _check_fixed(packet)
    if packet[6] != NH_DSTOPTS:
        raise BadPacket("no_home_address_option")
    if len(packet) < 42:
        raise BadPacket("truncated", "destination options header")
    hdr_len = (packet[41] + 1) * 8
    if 40 + hdr_len > len(packet):
        raise BadPacket("truncated", "destination options header")
    options = packet[42 : 40 + hdr_len]
    hoa: bytes | None = None
    i = 0
    while i < len(options):
        opt = options[i]
        if opt == 0:  # Pad1
            i += 1
            continue
        if i + 2 > len(options) or i + 2 + options[i + 1] > len(options):
            raise BadPacket("bad_option", "destination option overruns its header")
        length = options[i + 1]
        if opt == HAO_OPTION_TYPE:
            if length != HAO_OPTION_LENGTH or hoa is not None:
                raise BadPacket("bad_option", "home address option")
            hoa = options[i + 2 : i + 2 + length]
        elif opt != 1:  # only PadN may accompany the HAO
            raise BadPacket("unexpected_destination_option", f"option type {opt}")
        i += 2 + length
    if hoa is None:
        raise BadPacket("no_home_address_option")
    plen = len(packet) - 40 - hdr_len
    rebuilt = b"".join(
        (
            packet[:4],
            _PLEN.pack(plen),
            packet[40:41],
            packet[7:8],
            hoa,
            packet[24:40],
            packet[40 + hdr_len :],
        )
    )
    return packet[8:24], hoa, rebuilt


def add_type2_routing_header(packet: bytes, care_of: bytes) -> bytes:
    """``CN -> HoA`` becomes ``CN -> CoA`` with RH2(HoA), Segments Left 1 (RFC 6275 §9.3.2)."""
    plen = _PLEN.unpack_from(packet, 4)[0] + EXT_LEN
    return b"".join(
        (
            packet[:4],
            _PLEN.pack(plen),
            bytes((NH_ROUTING,)),
            packet[7:8],
            packet[8:24],
            care_of,
            build_rh2_header(packet[6], packet[24:40]),
            packet[40:],
        )
    )


def remove_type2_routing_header_untrusted(packet: bytes) -> tuple[bytes, bytes]:
    """Undo ``add_type2_routing_header``: return (HoA, ``CN -> HoA`` packet).

    The caller must check that the HoA is its own (RFC 6275 §11.3.3) before delivering; this
    never forwards on an RH2.

    Raises:
        BadPacket: not IPv6, no type 2 routing header, or a malformed one.
    """
    _check_fixed(packet)
    if packet[6] != NH_ROUTING:
        raise BadPacket("no_type2_routing_header")
    if len(packet) < 40 + EXT_LEN:
        raise BadPacket("truncated", "routing header")
    rh = packet[40 : 40 + EXT_LEN]
    if rh[2] != 2:
        raise BadPacket("bad_routing_type", f"routing type {rh[2]}")
    if rh[1] != 2:
        raise BadPacket("bad_length", "type 2 routing header length")
    if rh[3] != 1:
        # RFC 6275 §6.4.1: Segments Left is 1; anything else is not for a mobile node.
        raise BadPacket("bad_segments_left", f"segments left {rh[3]}")
    hoa = rh[8:24]
    rebuilt = b"".join(
        (
            packet[:4],
            _PLEN.pack(len(packet) - 40 - EXT_LEN),
            rh[0:1],
            packet[7:8],
            packet[8:24],
            hoa,
            packet[40 + EXT_LEN :],
        )
    )
    return hoa, rebuilt
