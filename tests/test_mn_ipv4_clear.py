"""The mobile node's IPv4 home address without protection (RFC 5555 §4.1 in clear;
drivers/mn_table.py, drivers/mn_sources.py): on T-native its packets leave on the access
network's protocol-4 socket (IPv4-in-IPv6), on T-udp on the UDP socket like IPv6; what comes
back in clear is delivered only from the home agent, only to that address, only when the
node runs without protection."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from mipnode.core.ipv4_networks import mapped
from mipnode.core.mobile_node import ForwardingChanged, Route
from mipnode.drivers.mn_sources import OwnSources
from mipnode.drivers.mn_table import ForwardingTable

COA = "::1"
HA = "2001:db8:1::1"
V4 = IPv4Address("192.0.2.1")


def ipv4(src: str, dst: str) -> bytes:
    head = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0])
    return head + IPv4Address(src).packed + IPv4Address(dst).packed + bytes(8)


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    made = {
        "raw41": socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),  # stand-ins: only identity
        "raw4": socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
        "udp": socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
    }
    made["udp"].bind(("::1", 0))
    yield made
    for s in made.values():
        s.close()


def table(protected: bool, s: dict[str, socket.socket]) -> ForwardingTable:
    fwd = ForwardingTable(protected=protected)
    fwd.raw41_by_coa[COA] = s["raw41"]
    fwd.raw50_by_coa[COA] = s["raw41"]
    fwd.raw4_by_coa[COA] = s["raw4"]
    fwd.udp_by_local[s["udp"].getsockname()[:2]] = s["udp"]
    return fwd


def test_on_t_native_in_clear_ipv4_takes_the_protocol_4_socket(
    sockets: dict[str, socket.socket],
) -> None:
    fwd = table(False, sockets)
    fwd.apply(ForwardingChanged(None, (Route("T-native", (COA, 0), (HA, 0)),)))
    assert fwd.default is not None and fwd.default[0] is sockets["raw41"]
    assert fwd.default4 is not None and fwd.default4[0] is sockets["raw4"]
    assert fwd.default4[1] == (HA, 0) and fwd.default4[4] is None  # clear


def test_on_t_udp_and_under_protection_ipv4_goes_the_way_ipv6_does(
    sockets: dict[str, socket.socket],
) -> None:
    local = sockets["udp"].getsockname()[:2]
    fwd = table(False, sockets)
    fwd.apply(ForwardingChanged(None, (Route("T-udp", local, (HA, 4191)),)))
    assert fwd.default4 == fwd.default and fwd.default4 is not None
    assert fwd.default4[0] is sockets["udp"]
    sealed = table(True, sockets)
    sealed.apply(ForwardingChanged(None, (Route("T-native", (COA, 0), (HA, 0)),)))
    assert sealed.default4 == sealed.default  # ESP with Next Header 4 (esp_plane.py)
    assert sealed.default4 is not None and sealed.default4[4] == b""


def test_clear_ipv4_is_delivered_only_from_the_ha_to_our_address_without_protection(
    sockets: dict[str, socket.socket],
) -> None:
    own = OwnSources(())
    own.ipv4 = V4.packed
    clear, sealed = table(False, sockets), table(True, sockets)
    ours = ipv4("198.18.0.2", "192.0.2.1")
    assert own.refuse_clear_ipv4(ours, True, clear) is None
    assert own.refuse_clear_ipv4(ours, False, clear) == "ipv4_not_from_ha"
    assert own.refuse_clear_ipv4(ours, True, sealed) == "clear_ipv4_refused"
    assert own.refuse_clear_ipv4(ipv4("198.18.0.2", "192.0.2.9"), True, clear) == (
        "ipv4_not_to_home_address"
    )
    assert own.refuse_clear_ipv4(ours[:19], True, clear) == "ipv4_malformed"
    own.ipv4 = None  # not given (yet)
    assert own.refuse_clear_ipv4(ours, True, clear) == "ipv4_not_to_home_address"


def test_a_routers_ipv4_networks_go_to_the_ha_and_come_back_to_the_kernel() -> None:
    """A router's IPv4 network (IPv4-mapped in its table): its hosts' IPv4 packets from the
    TUN are the home agent's, packets for them from the home agent are delivered; an IPv4
    source or destination outside it is neither."""
    own = OwnSources((mapped(IPv4Network("10.77.0.0/24")),))
    own.ipv4 = V4.packed
    assert own.sent_by(ipv4("10.77.0.2", "198.18.0.2"))
    assert own.sent_by(ipv4("192.0.2.1", "198.18.0.2"))  # the IPv4 home address's own
    assert not own.sent_by(ipv4("10.78.0.2", "198.18.0.2"))
    assert own.addressed(ipv4("198.18.0.2", "10.77.0.200"))
    assert not own.addressed(ipv4("198.18.0.2", "10.77.1.2"))
    assert not own.sent_by(ipv4("10.77.0.2", "198.18.0.2")[:19])


def test_protocol_4_carrying_ipv6_never_reaches_a_routers_network(
    sockets: dict[str, socket.socket],
) -> None:
    own = OwnSources((IPv6Network("2001:db8:aaaa::/48"),))
    six = b"\x60" + bytes(7) + bytes(16) + IPv6Address("2001:db8:aaaa:1::2").packed
    assert own.refuse_clear_ipv4(six, True, table(False, sockets)) == "ipv4_malformed"
