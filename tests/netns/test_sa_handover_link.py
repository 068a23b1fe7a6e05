"""ESP SAs handed over TCP between two cluster nodes' home links (drivers/sa_handover.py) on a
real veth pair with link-local addresses in a namespace of our own: the whole transfer with its
answer, the final windows, and what an on-link attacker gets (a connection from an address no
announcement came from, frames made without the cluster key, a receiver that never answers).

Both ends run in this test's trio loop; their sockets are made inside the namespace
(lab/status.py ``in_namespace``: setns in a short-lived thread, the test never moves)."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from ipaddress import IPv6Address
from typing import Any

import pytest
import trio

from mipnode.config import ClusterConfig
from mipnode.core.esp_keys import EspKeys
from mipnode.drivers import sa_handover
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters
from mipnode.drivers.sa_handover import SaHandover, TransferRefused
from mipnode.lab.status import in_namespace
from tunnels.esp import SUITE_AES_GCM, key_length

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]

OLD_LL, NEW_LL = "fe80::a1", "fe80::a2"
PORT = 4192
KEYMAT = b"\x11" * key_length(SUITE_AES_GCM), b"\x22" * key_length(SUITE_AES_GCM)


def sh(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Namespace with veth sa0 (the stopping node's home link) <-> sa1 (the successor's)."""
    ns = f"mipt-{secrets.token_hex(3)}-sa"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        sh(ns, "ip", "link", "add", "sa0", "type", "veth", "peer", "name", "sa1")
        for dev, address in (("sa0", OLD_LL), ("sa1", NEW_LL)):
            sh(ns, "ip", "link", "set", dev, "up")
            sh(ns, "ip", "addr", "add", f"{address}/64", "dev", dev, "nodad")
        indexes = {
            dev: int(sh(ns, "cat", f"/sys/class/net/{dev}/ifindex")) for dev in ("sa0", "sa1")
        }
        listener, stream = sa_handover._listener, sa_handover._stream_socket
        monkeypatch.setattr(
            sa_handover, "_listener", lambda *a: in_namespace(ns, lambda: listener(*a))
        )
        monkeypatch.setattr(
            sa_handover, "_stream_socket", lambda *a: in_namespace(ns, lambda: stream(*a))
        )
        yield {**indexes, "ns": ns}  # type: ignore[dict-item]
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def node(node_id: str, dev: str, index: int, esp: EspSas, *, key: bytes = bytes(32)) -> SaHandover:
    cfg = ClusterConfig(
        name="campus",
        node_id=node_id,
        etcd_endpoints=("http://[::1]:2379",),
        key=key,
        home_link=dev,
        announce_port=PORT,
    )
    return SaHandover(cfg, esp, index, Counters(), Counters(), allowed=lambda peer: peer == OLD_LL)


def keyed(count: int) -> EspSas:
    """A home agent's SA table with ``count`` bindings (more than one frame's worth)."""
    esp = EspSas(keylog="")
    for i in range(count):
        hoa = IPv6Address(0x20010DB8_0001_0000_0000_0000_0000_0000 + i + 1).packed
        esp.keyed(
            hoa, EspKeys(SUITE_AES_GCM, 0x8100_0000 + i, KEYMAT[0], 0x8200_0000 + i, KEYMAT[1]), 0.0
        )
    return esp


async def test_two_hundred_bindings_move_and_are_confirmed(link: dict[str, Any]) -> None:
    old, new = keyed(200), EspSas(keylog="")
    sender = node("ha-1", "sa0", link["sa0"], old)
    receiver = node("ha-2", "sa1", link["sa1"], new)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        assert await sender.send(NEW_LL, "ha-2", final=False) == 200
        now = trio.current_time()
        states = [receiver.take(owner, now) for owner in list(old.outbound)]
        assert all(states) and receiver.counters["sa_states_received"] == 200
        for state in states:
            assert new.restore(state, now)  # type: ignore[arg-type]
        # The final windows: merged there, and the stopping node keeps no SA.
        assert await sender.send(NEW_LL, "ha-2", final=True) == 200
        assert receiver.counters["sa_windows_merged"] == 200
        assert old.outbound == {} and old.inbound == {}
        nursery.cancel_scope.cancel()
    assert dict(receiver.drops) == {}


async def test_frames_without_the_cluster_key_are_refused_and_the_sender_knows(
    link: dict[str, Any],
) -> None:
    receiver = node("ha-2", "sa1", link["sa1"], EspSas(keylog=""))
    forger = node("ha-1", "sa0", link["sa0"], keyed(3), key=b"\xee" * 32)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        with pytest.raises(TransferRefused):
            await forger.send(NEW_LL, "ha-2", final=False)
        nursery.cancel_scope.cancel()
    assert receiver.drops["sa_transfer_auth"] == 1
    assert receiver.take(next(iter(forger.esp.outbound)), trio.current_time()) is None


async def test_a_connection_from_an_address_no_announcement_came_from_is_closed(
    link: dict[str, Any],
) -> None:
    receiver = node("ha-2", "sa1", link["sa1"], EspSas(keylog=""))
    receiver.allowed = lambda peer: False  # sa0's address announced nothing
    sender = node("ha-1", "sa0", link["sa0"], keyed(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        with pytest.raises((TransferRefused, OSError, trio.BrokenResourceError)):
            await sender.send(NEW_LL, "ha-2", final=False)
        nursery.cancel_scope.cancel()
    assert receiver.drops["sa_transfer_refused"] == 1
    assert receiver.counters.get("sa_states_received", 0) == 0


async def test_a_receiver_that_never_answers_fails_the_transfer_in_bounded_time(
    link: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listener that accepts and then says nothing (a node wedged, or someone else's port).
    mute = in_namespace(link["ns"], lambda: _mute_listener("sa1"))
    monkeypatch.setattr(sa_handover, "CONNECTION_S", 0.5)
    sender = node("ha-1", "sa0", link["sa0"], keyed(1))
    try:
        with pytest.raises(trio.TooSlowError):
            await sender.send(NEW_LL, "ha-2", final=False)
    finally:
        mute.close()


def _mute_listener(dev: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", PORT))
    sock.listen(1)
    return sock
