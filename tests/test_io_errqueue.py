"""The ICMP error queue (IPV6_RECVERR / IP_RECVERR): real sockets on loopback, no root needed.

A datagram to a closed port on loopback makes the kernel answer with ICMP port unreachable;
with the error queue on, the words and the offender come back from :func:`read_error_queue`,
and reading them leaves the socket quiet (a readable socket that nobody drains would spin the
daemon's reader).
"""

from __future__ import annotations

import select
import socket
from functools import partial

import pytest
import trio

from mipnode.drivers import pump
from mipnode.drivers.io import enable_error_queue, read_error_queue


def closed_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]
)
def test_a_port_unreachable_is_read_from_the_error_queue(family: int, host: str) -> None:
    port = closed_port(family, host)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        enable_error_queue(sock)
        sock.sendto(b"check", (host, port))
        assert select.select([sock], [], [], 2.0)[0]  # POLLERR: readable
        errors = read_error_queue(sock)
        assert len(errors) == 1
        assert errors[0].destination == (host, port)
        assert errors[0].words == f"port unreachable from {host}"
        # Read: nothing left to wake a reader.
        assert select.select([sock], [], [sock], 0)[0:3:2] == ([], [])


def test_without_the_error_queue_nothing_is_queued() -> None:
    port = closed_port(socket.AF_INET6, "::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        sock.sendto(b"check", ("::1", port))
        # An unconnected socket hears of no ICMP error at all without the queue (Linux).
        assert select.select([sock], [], [], 0.3)[0] == []
        assert read_error_queue(sock) == []


async def test_the_reader_hands_the_error_over_and_keeps_reading() -> None:
    """drain_socket gives the socket to on_error when a receive reports an ICMP error, then
    goes on with the datagrams that follow."""
    port = closed_port(socket.AF_INET6, "::1")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("::1", 0))
    enable_error_queue(sock)
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    seen: list[str] = []
    got: list[bytes] = []
    done = trio.Event()

    def on_error(s: socket.socket, code: int) -> None:
        seen.extend(e.words for e in read_error_queue(s))

    def handle(data: bytes, addr: object) -> None:
        got.append(data)
        done.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(pump.drain_socket, on_error=on_error), sock, handle, lambda: None
            )
            sock.sendto(b"check", ("::1", port))
            await trio.sleep(0.05)
            peer.sendto(b"data", sock.getsockname()[:2])
            with trio.fail_after(5):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        sock.close()
        peer.close()
    assert seen == ["port unreachable from ::1"] and got == [b"data"]


def test_data_sockets_get_receive_buffers_that_hold_a_tcp_burst() -> None:
    """A full raw socket makes the kernel answer ESP and protocol 41 with a Parameter Problem
    (io.DATA_RCVBUF): every data socket asks for 4 MB (Linux reports twice what was set)."""
    from mipnode.drivers.io import DATA_RCVBUF, open_raw, open_udp

    socks = [open_udp(socket.AF_INET6, 0, address="::1"), open_udp(socket.AF_INET, 0)]
    socks.append(open_raw(50))
    try:
        for sock in socks:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= DATA_RCVBUF
    finally:
        for sock in socks:
            sock.close()
