"""The Neighbor Discovery messages a home agent builds or reads itself (RFC 4861).

When a node takes a home-agent address over, the home link's router still has the old
holder's link-layer address for it. An unsolicited Neighbor Advertisement with the Override
flag (RFC 4861 §7.2.6), sent to all nodes, makes every neighbor that has an entry for the
address take the new link-layer address at once (§7.2.5: state STALE, then a unicast probe to
the new holder). It goes out of a raw ICMPv6 socket with hop limit 255 (receivers drop ND
with any other, §7.1.2); the kernel fills in the ICMPv6 checksum.
"""

from __future__ import annotations

import struct

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import (
    NH_ICMPV6,
    build_ipv6_packet,
    icmpv6_with_checksum,
    upper_layer_checksum,
)

ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
FLAG_ROUTER = 0x80  # first octet of the flags word (RFC 4861 §4.4)
FLAG_SOLICITED = 0x40
FLAG_OVERRIDE = 0x20
OPTION_TARGET_LINK_LAYER = 2
_NA = struct.Struct("!BBHB3x16sBB6s")


def unsolicited_na(target: bytes, link_layer: bytes, *, router: bool) -> bytes:
    """An unsolicited, overriding NA for ``target`` (16 octets) naming ``link_layer`` (a
    6-octet Ethernet address); ``router``: the sender forwards (a home agent does)."""
    if len(target) != 16 or len(link_layer) != 6:
        raise ValueError("target is 16 octets, the link-layer address 6")
    flags = FLAG_OVERRIDE | (FLAG_ROUTER if router else 0)
    return _NA.pack(
        ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, flags, target, OPTION_TARGET_LINK_LAYER, 1, link_layer
    )


# -- a home agent on its home link (RFC 6275 §10.3.1, §10.4.1) ------------------------------------

ICMPV6_NEIGHBOR_SOLICITATION = 135
ND_HOP_LIMIT = 255  # RFC 4861 §7.1: any other value means the message crossed a router
_SOLICITED_NODE = bytes.fromhex("ff0200000000000000000001ff")  # ff02::1:ff00:0/104
_NS = struct.Struct("!BBH4x16s")
UNSPECIFIED = bytes(16)


def solicited_node(address: bytes) -> bytes:
    """The solicited-node multicast address of ``address`` (RFC 4291 §2.7.1)."""
    return _SOLICITED_NODE + address[13:16]


def multicast_mac(group: bytes) -> bytes:
    """The Ethernet address an IPv6 multicast ``group`` is sent to (RFC 2464 §7)."""
    return b"\x33\x33" + group[12:16]


def dad_solicitation(target: bytes) -> bytes:
    """The whole IPv6 packet of a Duplicate Address Detection probe for ``target`` (RFC 4862
    §5.4.2): a Neighbor Solicitation from the unspecified address to the target's
    solicited-node group, hop limit 255, without a Source Link-Layer Address option (RFC 4861
    §4.3 forbids one from the unspecified address)."""
    if len(target) != 16:
        raise ValueError("target is 16 octets")
    dst = solicited_node(target)
    message = icmpv6_with_checksum(
        UNSPECIFIED, dst, _NS.pack(ICMPV6_NEIGHBOR_SOLICITATION, 0, 0, target)
    )
    return build_ipv6_packet(UNSPECIFIED, dst, NH_ICMPV6, message, ND_HOP_LIMIT)


def neighbor_message_untrusted(packet: bytes) -> tuple[int, bytes, bytes]:
    """``(type, source, target)`` of a Neighbor Solicitation or Advertisement in ``packet`` (a
    whole IPv6 packet, the ICMPv6 message right after its header). Only what RFC 4861 §7.1.1
    and §7.1.2 let a node take: hop limit 255, code 0, at least 24 octets; the checksum is the
    kernel's to check, but a tap sees the packet ahead of it, so it is checked here."""
    if len(packet) < 64 or packet[0] >> 4 != 6 or packet[6] != NH_ICMPV6:
        raise BadPacket("nd_short")
    if packet[7] != ND_HOP_LIMIT:
        raise BadPacket("nd_hop_limit")
    length = int.from_bytes(packet[4:6], "big")
    message = packet[40 : 40 + length]
    if length < 24 or len(message) != length:
        raise BadPacket("nd_length")
    kind = message[0]
    if kind not in (ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_NEIGHBOR_ADVERTISEMENT) or message[1]:
        raise BadPacket("nd_type")
    source, destination = packet[8:24], packet[24:40]
    if upper_layer_checksum(source, destination, NH_ICMPV6, message) != 0:
        raise BadPacket("nd_checksum")
    return kind, source, message[8:24]
