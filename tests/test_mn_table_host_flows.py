"""A mobile router's D-udp data plane for its hosts' flows (drivers/mn_table.py): a flow's
pair delivers only what goes from its correspondent to its host, from the selected pair, and
sealed once keyed -- a correspondent holding one host's flow cannot write to another host or
to the router's home address with it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest

from mipnode.core.esp_keys import EspKeys
from mipnode.core.mn_hosts import flow_key
from mipnode.core.mobile_node import ForwardingChanged, Route
from mipnode.drivers.esp_plane import NH_IPV6, EspSas
from mipnode.drivers.io import Counters
from mipnode.drivers.mn_table import ForwardingTable
from mipnode.wire.ipv6 import NH_UDP
from mipnode.wire.packets import ipv6_packet
from tunnels.esp import SUITE_AES_GCM, EspOutbound, key_length

HOA = IPv6Address("2001:db8:aaaa::1").packed
HOST = IPv6Address("2001:db8:ee00:1::2").packed
HOST2 = IPv6Address("2001:db8:ee00:1::3").packed
CN = IPv6Address("2001:db8:cccc::1").packed
CN_PAIR = ("2001:db8:cccc::1", 7000)
KEY = flow_key(HOST, CN)
OUT, IN = 0x8001_0001, 0x8064_0001
K_OUT, K_IN = b"\x11" * key_length(SUITE_AES_GCM), b"\x22" * key_length(SUITE_AES_GCM)


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    yield s
    s.close()


def table(sock: socket.socket, sealed: bool) -> ForwardingTable:
    fwd = ForwardingTable(protected=sealed)
    local = sock.getsockname()[:2]
    fwd.udp_by_local[local] = sock
    fwd.apply(ForwardingChanged(KEY, (Route("D-udp", local, CN_PAIR, None, sealed),)))
    return fwd


def data(src: bytes, dst: bytes) -> bytes:
    return ipv6_packet(IPv6Address(src), IPv6Address(dst), NH_UDP, bytes(8) + b"payload")


def test_a_flow_seals_with_its_own_sa_named_by_the_flow(sock: socket.socket) -> None:
    fwd = table(sock, True)
    (way,) = fwd.routes[KEY]
    assert way[1] == CN_PAIR and way[4] == KEY  # sealed with the flow's SA
    assert fwd.routes.get(CN) is None  # the router's own traffic to CN: not this entry


def test_clear_data_of_a_flow_only_to_its_host_from_its_pair(sock: socket.socket) -> None:
    fwd, drops = table(sock, False), Counters()
    assert fwd.direct_clear_ok(data(CN, HOST), CN_PAIR, HOA, drops)
    assert not fwd.direct_clear_ok(data(CN, HOST), ("2001:db8:cccc::1", 7001), HOA, drops)
    assert not fwd.direct_clear_ok(data(CN, HOST2), CN_PAIR, HOA, drops)  # another host
    assert not fwd.direct_clear_ok(data(CN, HOA), CN_PAIR, HOA, drops)  # the router itself
    assert drops["direct_not_from_selected_pair"] == 3


def test_clear_data_on_a_keyed_flow_is_refused(sock: socket.socket) -> None:
    fwd, drops = table(sock, True), Counters()
    assert not fwd.direct_clear_ok(data(CN, HOST), CN_PAIR, HOA, drops)
    assert drops["clear_direct_refused"] == 1


def test_a_flows_sa_opens_only_packets_from_its_cn_to_its_host(sock: socket.socket) -> None:
    fwd, drops, esp = table(sock, True), Counters(), EspSas(keylog="")
    esp.keyed(KEY, EspKeys(SUITE_AES_GCM, OUT, K_OUT, IN, K_IN), 0.0)
    cn_sa = EspOutbound(SUITE_AES_GCM, IN, K_IN)

    good = cn_sa.seal(data(CN, HOST), NH_IPV6) or b""
    assert fwd.open_direct(esp, good, CN_PAIR, HOA, 0.0, drops) == data(CN, HOST)
    # The attack: the correspondent uses the host's SA to reach another host, or the router.
    for inner in (data(CN, HOST2), data(CN, HOA), data(HOST2, HOST)):
        sealed = cn_sa.seal(inner, NH_IPV6) or b""
        assert fwd.open_direct(esp, sealed, CN_PAIR, HOA, 0.0, drops) is None
    assert drops["esp_direct_wrong_addresses"] == 3
    # And the right packet from another address never reaches decryption.
    other = cn_sa.seal(data(CN, HOST), NH_IPV6) or b""
    assert fwd.open_direct(esp, other, ("2001:db8:cccc::9", 7000), HOA, 0.0, drops) is None
    assert drops["direct_not_from_selected_pair"] == 1
