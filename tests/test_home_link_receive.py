"""What the home link's driver does with each packet its socket gets (drivers/home_link.py):
packets built by scapy, a stand-in for the node core that records what it is told."""

from __future__ import annotations

import warnings
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest

from mipnode.drivers.home_link import HomeLink
from mipnode.drivers.io import Counters

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.layers.inet6 import MIP6MH_BU, ICMPv6ND_NA, ICMPv6ND_NS, IPv6

HA = IPv6Address("2001:db8:1::1")
HOST = "2001:db8:1::2"
TARGET = "2001:db8:1::c:1"
OURS = bytes.fromhex("020000000001")
THEIRS = bytes.fromhex("020000000002")
PACKET_HOST, PACKET_MULTICAST = 0, 2


class Node:
    def __init__(self, pending: bool) -> None:
        self.dad_pending = pending
        self.conflicts: list[IPv6Address] = []
        self.bus: list[tuple[bytes, bytes]] = []

    def dad_conflict(self, now: float, target: IPv6Address) -> None:
        self.conflicts.append(target)

    def receive_home_link_bu(self, now: float, packet: bytes, link_address: bytes) -> None:
        self.bus.append((packet, link_address))


def link(pending: bool = True) -> tuple[HomeLink, Node, Counters]:
    node, drops = Node(pending), Counters()
    home = HomeLink("home0", HA, IPv6Network("2001:db8:1::/64"), node, drops, Counters())
    home.mac = OURS
    return home, node, drops


def addr(mac: bytes = THEIRS, kind: int = PACKET_MULTICAST) -> tuple[Any, ...]:
    return ("home0", 0x86DD, kind, 1, mac)


NA = bytes(IPv6(src=HOST, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=TARGET, O=1))
DAD = bytes(IPv6(src="::", dst="ff02::1:ff0c:1", hlim=255) / ICMPv6ND_NS(tgt=TARGET))


@pytest.mark.parametrize("packet", [NA, DAD], ids=["advertisement", "dad-solicitation"])
def test_an_advertisement_or_anothers_dad_is_a_conflict(packet: bytes) -> None:
    home, node, _ = link()
    home.receive(1.0, packet, addr())
    assert node.conflicts == [IPv6Address(TARGET)]


def test_address_resolution_is_not_a_conflict() -> None:
    home, node, drops = link()
    resolve = IPv6(src=HOST, dst="ff02::1:ff0c:1", hlim=255) / ICMPv6ND_NS(tgt=TARGET)
    home.receive(1.0, bytes(resolve), addr())
    assert node.conflicts == [] and drops == {"home_link_ns_not_dad": 1}


def test_our_own_solicitation_looped_back_is_not_a_conflict() -> None:
    home, node, drops = link()
    home.receive(1.0, DAD, addr(mac=OURS))
    assert node.conflicts == [] and drops == {"home_link_nd_looped_back": 1}


def test_nothing_is_parsed_while_no_dad_runs() -> None:
    home, node, drops = link(pending=False)
    home.receive(1.0, NA, addr())
    assert node.conflicts == [] and drops == {"home_link_nd_without_dad": 1}


def test_a_forged_neighbor_message_is_dropped_by_reason() -> None:
    home, node, drops = link()
    home.receive(
        1.0, bytes(IPv6(src=HOST, dst="ff02::1", hlim=64) / ICMPv6ND_NA(tgt=TARGET)), addr()
    )
    assert node.conflicts == [] and drops == {"home_link_nd_hop_limit": 1}


def test_a_mobility_header_goes_to_the_core_with_the_senders_link_address() -> None:
    home, node, _ = link(pending=False)
    bu = bytes(IPv6(src=TARGET, dst=str(HA)) / MIP6MH_BU())
    home.receive(1.0, bu, addr(kind=PACKET_HOST))
    assert node.bus == [(bu, THEIRS)]
