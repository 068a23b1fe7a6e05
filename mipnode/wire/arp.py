"""The ARP announcement a home agent of a cluster sends when it takes over an IPv4 address
(RFC 5227 §3, the "gratuitous ARP" of RFC 826 practice).

Mobile nodes on IPv4-only access networks reach the home agent in UDP over IPv4 (T-udp, as
DSMIPv6 does), at the cluster's IPv4 address. When another node takes that address over, the
home link's router still has the old holder's MAC for it; an ARP request whose sender and
target are both the address, broadcast, makes every neighbor with an entry for it take the new
MAC at once (Linux overrides an existing entry for a gratuitous ARP whatever its lock time).
"""

from __future__ import annotations

import struct

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
_FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")


def arp_announcement(address: bytes, link_layer: bytes) -> bytes:
    """A whole Ethernet frame: an ARP request announcing ``address`` (4 octets) at
    ``link_layer`` (6 octets), to the broadcast address."""
    if len(address) != 4 or len(link_layer) != 6:
        raise ValueError("the address is 4 octets, the link-layer address 6")
    return _FRAME.pack(
        BROADCAST,
        link_layer,
        ETH_P_ARP,
        1,  # hardware type: Ethernet
        0x0800,  # protocol type: IPv4
        6,
        4,
        1,  # request
        link_layer,
        address,
        bytes(6),  # target hardware address: unknown, as RFC 5227 §2.3 asks
        address,
    )
