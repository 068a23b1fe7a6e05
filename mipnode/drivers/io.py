"""Sockets, batched draining and the core pump shared by the daemons.

Data-plane rule (DESIGN §5): wait for readability once, then drain a batch with non-blocking
reads; never one ``await`` per packet.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import trio

BATCH = 64
log = logging.getLogger("mipnode")
# Packets whose handler raised, by handler name: should stay empty; shown in `status` JSON.
HANDLER_ERRORS: dict[str, int] = {}
# Receive errors of a socket whose interface went down, by handler name.
SOCKET_ERRORS: dict[str, int] = {}
_TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
_LINK_ERRNOS = frozenset({errno.ENETDOWN, errno.ENODEV, errno.ENXIO})
LINK_DOWN_BACKOFF_S = 0.1
IPPROTO_MH = 135
SO_BINDTODEVICE = 25


def wall() -> float:
    """POSIX time: the ``now`` every pure core receives."""
    return time.time()


def trio_deadline(wall_deadline: float) -> float:
    return trio.current_time() + (wall_deadline - time.time())


def _bind_device(sock: socket.socket, ifname: str | None) -> None:
    if ifname:
        # Outer packets must leave through the access interface, never back into our TUN.
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())


def open_raw(proto: int, ifname: str | None = None, address: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    sock.setblocking(False)
    _bind_device(sock, ifname)
    if address:
        # The HA answers from its own address, whatever interface the route uses.
        sock.bind((address, 0))
    return sock


def open_udp(
    family: int, port: int, ifname: str | None = None, address: str | None = None
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind_device(sock, ifname)
    sock.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    return sock


def _handler_failed(where: str) -> None:
    """A bug met by one packet must not take the daemon down (DESIGN §5): count it, log it with
    its traceback at a bounded rate, drop the packet, go on."""
    HANDLER_ERRORS[where] = HANDLER_ERRORS.get(where, 0) + 1
    n = HANDLER_ERRORS[where]
    if n <= 5 or n % 1000 == 0:
        log.exception("internal error handling a packet in %s (%d so far)", where, n)


async def drain_socket(
    sock: socket.socket, handle: Callable[[bytes, Any], None], after_batch: Callable[[], None]
) -> None:
    """Forever: wait until readable, then hand up to BATCH datagrams to ``handle``."""
    recvfrom = sock.recvfrom
    where = getattr(handle, "__name__", "handler")
    while True:
        await trio.lowlevel.wait_readable(sock)
        link_down = False
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65535)
            except BlockingIOError:
                break
            except OSError as exc:
                # ICMP errors queued on the socket (e.g. ECONNREFUSED) are not fatal.
                if exc.errno in _TRANSIENT_ERRNOS:
                    continue
                # The bound interface went down or away (a move, a link flap): not fatal
                # either; the MN reopens its sockets on the new access network.
                if exc.errno in _LINK_ERRNOS:
                    SOCKET_ERRORS[where] = SOCKET_ERRORS.get(where, 0) + 1
                    link_down = True
                    break
                raise
            try:
                handle(data, addr)
            except Exception:
                _handler_failed(where)
        try:
            after_batch()
        except Exception:
            _handler_failed(f"{where}/after_batch")
        if link_down:
            await trio.sleep(LINK_DOWN_BACKOFF_S)


async def drain_fd(
    fd: int, handle: Callable[[bytes], None], after_batch: Callable[[], None]
) -> None:
    read = os.read
    where = getattr(handle, "__name__", "handler")
    while True:
        await trio.lowlevel.wait_readable(fd)
        for _ in range(BATCH):
            try:
                data = read(fd, 65535)
            except BlockingIOError:
                break
            try:
                handle(data)
            except Exception:
                _handler_failed(where)
        try:
            after_batch()
        except Exception:
            _handler_failed(f"{where}/after_batch")


def send_quietly(sock: socket.socket, data: bytes, addr: Any, count: Callable[[str], None]) -> None:
    """Send without blocking; a full buffer or unreachable peer is a counted drop, not a crash."""
    try:
        sock.sendto(data, addr)
    except BlockingIOError:
        count("tx_would_block")
    except OSError as exc:
        count(f"tx_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")


def write_quietly(fd: int, packet: bytes, count: Callable[[str], None]) -> bool:
    """Write one packet into a TUN device; a failure is a counted drop, not a crash."""
    try:
        os.write(fd, packet)
    except OSError:
        count("tun_write_failed")
        return False
    return True


class Counters(dict[str, int]):
    def __call__(self, reason: str, n: int = 1) -> None:
        self[reason] = self.get(reason, 0) + n


class TimerPump:
    """Runs a core's ``handle_timer`` at its ``get_timer`` deadline; ``kick()`` re-arms it."""

    def __init__(self, get_timer: Callable[[], float | None], fire: Callable[[float], None]):
        self._get_timer, self._fire = get_timer, fire
        self._changed = trio.Event()

    def kick(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            deadline = self._get_timer()
            self._changed = trio.Event()
            if deadline is None:
                await self._changed.wait()
                continue
            with trio.move_on_at(trio_deadline(deadline)):
                await self._changed.wait()
                continue
            self._fire(max(wall(), deadline))
