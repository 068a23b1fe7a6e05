"""The one Neighbor Discovery message a home agent of a cluster sends itself (RFC 4861).

When a node takes a home-agent address over, the home link's router still has the old
holder's link-layer address for it. An unsolicited Neighbor Advertisement with the Override
flag (RFC 4861 §7.2.6), sent to all nodes, makes every neighbor that has an entry for the
address take the new link-layer address at once (§7.2.5: state STALE, then a unicast probe to
the new holder). It goes out of a raw ICMPv6 socket with hop limit 255 (receivers drop ND
with any other, §7.1.2); the kernel fills in the ICMPv6 checksum.
"""

from __future__ import annotations

import struct

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
