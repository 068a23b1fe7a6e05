"""IPv4 mobile networks inside the IPv6 machinery (pure).

A mobile router may route IPv4 networks too (RFC 5555 carries IPv4 in the tunnel of a mobile
router's binding, RFC 3963 registers its networks). mipnode holds an IPv4 network as its
IPv4-mapped IPv6 prefix (RFC 4291 §2.5.5.2: ``::ffff:0:0/96`` followed by the IPv4 prefix), so
the registration, the binding, the state file and the cluster's record carry IPv4 networks
exactly like IPv6 ones; only what is shown to people, the routes and the Mobility Header on the
wire (RFC 3963's Mobile Network Prefix option has no IPv4 form: those are registered
implicitly) look at the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

MAPPED = IPv6Network("::ffff:0:0/96")
MAPPED_HEAD = MAPPED.network_address.packed[:12]  # what precedes an IPv4 address's 4 octets


def mapped(network: IPv4Network) -> IPv6Network:
    return IPv6Network((MAPPED_HEAD + network.network_address.packed, 96 + network.prefixlen))


def unmapped(network: IPv6Network) -> IPv4Network | None:
    """The IPv4 network ``network`` stands for, or None (a true IPv6 prefix)."""
    if network.prefixlen < 96 or not network.subnet_of(MAPPED):
        return None
    return IPv4Network((network.network_address.packed[12:], network.prefixlen - 96))


def text(network: IPv6Network) -> str:
    """How people read it: an IPv4 network in IPv4 notation."""
    v4 = unmapped(network)
    return str(network if v4 is None else v4)


def ipv6_only(networks: Iterable[IPv6Network]) -> tuple[IPv6Network, ...]:
    return tuple(n for n in networks if unmapped(n) is None)


def split(
    networks: Iterable[IPv6Network],
) -> tuple[tuple[IPv6Network, ...], tuple[IPv6Network, ...]]:
    """(the IPv6 networks, the IPv4 ones still IPv4-mapped): each family gets its own table,
    so an IPv6 packet with an IPv4-mapped source never matches a router's IPv4 network."""
    nets = tuple(networks)
    return ipv6_only(nets), tuple(n for n in nets if unmapped(n) is not None)
