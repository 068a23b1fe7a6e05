"""The daemon pump: the one driver module that reads clocks, sleeps and waits (DESIGN §5).

Every daemon is a node core (five verbs, pure) and sockets. :class:`Pump` owns the core's
timer: it sleeps until ``get_timer()`` or until an input arrives, calls ``handle_timer(now)``,
and after every batch of inputs drains what the core wants sent (``datagrams_to_send``) and
what it decided (``next_event``) into the daemon's two callbacks. ``now`` is trio's monotonic
clock; the wall clock is read once, at start, as :attr:`Pump.wall_offset` (POSIX time minus
monotonic time), which the cores use only for RFC 4285 timestamps and what they persist.

The batch readers (:func:`drain_socket`, :func:`drain_tun`) live here too because they stamp
each batch with one clock read (:attr:`Pump.now`, what handlers pass to the core) and back off
briefly when an interface vanishes under a socket. :func:`run_daemon` is the signal loop the
three daemons share. A test (tests/test_drivers_clock.py) fails if any other driver module
calls a clock, ``trio.sleep`` or a timeout: protocol timing can only live in the cores.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

import trio

from mipnode.drivers import sdnotify
from mipnode.drivers.check_lane import LANE_STATS
from mipnode.drivers.io import Counters
from mipnode.drivers.tun import Tun, TunError
from mipnode.wire.offload import VNET_HEADER_LENGTH

BATCH = 64
LINK_DOWN_BACKOFF_S = 0.1
log = logging.getLogger("mipnode")
# Packets whose handler raised, by handler name: should stay empty; shown in `status` JSON.
HANDLER_ERRORS: dict[str, int] = {}
# Receive errors of a socket whose interface went down, by handler name.
SOCKET_ERRORS: dict[str, int] = {}
# What an ICMP error for a packet we sent looks like on the next receive (RFC 1122 §4.1.3.3):
# never fatal; with IPV6_RECVERR / IP_RECVERR the error queue says more (drivers/io.py).
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EACCES,
        errno.EPROTO,
        errno.EMSGSIZE,
        errno.EHOSTDOWN,
        errno.ENOPROTOOPT,
    }
)
_LINK_ERRNOS = frozenset({errno.ENETDOWN, errno.ENODEV, errno.ENXIO})


class NodeCore(Protocol):
    """The five verbs every node core speaks (the inputs differ per role)."""

    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def datagrams_to_send(self, now: float) -> list[Any]: ...
    def next_event(self) -> Any: ...
    def statistics(self) -> dict[str, int]: ...


def now() -> float:
    """Monotonic seconds: the ``now`` of every core."""
    return trio.current_time()


def wall_offset() -> float:
    """POSIX time minus monotonic time, read once per daemon start."""
    return time.time() - trio.current_time()


def elapsed_ms(since: float) -> float:
    """Milliseconds of ``time.monotonic()`` since ``since`` (a worker thread's own stopwatch)."""
    return round((time.monotonic() - since) * 1000, 2)


def stopwatch() -> float:
    return time.monotonic()


def posix_time() -> float:
    """The wall clock, for what is written to disk."""
    return time.time()


async def sleep(seconds: float) -> None:
    """An I/O back-off (never a protocol timer: those are the cores')."""
    await trio.sleep(seconds)


@contextmanager
def time_limit(seconds: float) -> Iterator[trio.CancelScope]:
    """Give up an I/O exchange (a control client) after ``seconds``."""
    with trio.move_on_after(seconds) as scope:
        yield scope


async def wait_for(event: trio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds``; True when it happened."""
    with trio.move_on_after(seconds):
        await event.wait()
        return True
    return False


class Pump:
    """Runs one node core: its timer, and the flush after every batch of inputs."""

    def __init__(
        self,
        core: NodeCore,
        send: Callable[[Any], None],
        on_event: Callable[[Any], None],
        after_flush: Callable[[], None] | None = None,
        counters: tuple[Counters, ...] = (),
    ) -> None:
        self.core = core
        self._counters = counters  # what the batch tallied, added up at every flush
        self._send = send
        self._on_event = on_event
        self._after_flush = after_flush
        self._changed = trio.Event()
        self._armed: float | None = None  # the deadline run() sleeps until
        self.now = trio.current_time()
        self.wall_offset = wall_offset()

    def stamp(self) -> float:
        """Read the clock once (a batch starts); handlers use :attr:`now`."""
        self.now = trio.current_time()
        return self.now

    def flush(self) -> None:
        """Send what the core queued and hand over its events; re-arm the timer."""
        now = self.now
        try:
            for out in self.core.datagrams_to_send(now):
                self._send(out)
            while (event := self.core.next_event()) is not None:
                self._on_event(event)
            if self._after_flush is not None:
                self._after_flush()
        finally:
            for counters in self._counters:
                counters.settle()
        # Wake run() only when the core's deadline moved: most batches of data leave it be,
        # and a wake-up is a task switch and a new cancel scope per batch.
        if self.core.get_timer() != self._armed:
            self._changed.set()

    async def run(self) -> None:
        while True:
            deadline = self._armed = self.core.get_timer()
            self._changed = trio.Event()
            if deadline is None:
                await self._changed.wait()
                continue
            with trio.move_on_at(deadline):
                await self._changed.wait()
                continue
            self.now = max(trio.current_time(), deadline)
            try:
                self.core.handle_timer(self.now)
            except Exception:
                _handler_failed("handle_timer")
            self.flush()


def _handler_failed(where: str) -> None:
    """A bug met by one packet must not take the daemon down (DESIGN §5): count it, log it with
    its traceback at a bounded rate, drop the packet, go on."""
    HANDLER_ERRORS[where] = HANDLER_ERRORS.get(where, 0) + 1
    n = HANDLER_ERRORS[where]
    if n <= 5 or n % 1000 == 0:
        log.exception("internal error handling a packet in %s (%d so far)", where, n)


ErrorHandler = Callable[[socket.socket, int], None]
SOL_UDP = 17
UDP_GRO = 104  # linux/udp.h: receive coalesced datagrams, the segment size in a cmsg
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
# What GRO receives were made of, for `status`: calls and the datagrams they carried.
GRO_STATS: dict[str, int] = {"gro_sockets_enabled": 0, "gro_reads": 0, "gro_datagrams": 0}


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced UDP datagrams on ``sock`` (Linux >= 5.0); False when refused."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    GRO_STATS["gro_sockets_enabled"] += 1
    return True


def _gro_read(sock: socket.socket) -> tuple[list[bytes], Any]:
    """One receive on a UDP_GRO socket: the datagrams it carried (the kernel coalesces only
    equal-size ones from one source, the last possibly shorter) and their source."""
    data, ancdata, _, addr = sock.recvmsg(65535, _GRO_CMSG_SPACE)
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            size = int.from_bytes(value[:4], sys.byteorder)  # an int (udp_cmsg_recv)
            if 0 < size < len(data):
                GRO_STATS["gro_reads"] += 1
                parts = [data[i : i + size] for i in range(0, len(data), size)]
                GRO_STATS["gro_datagrams"] += len(parts)
                return parts, addr
    return [data], addr


async def drain_socket(
    sock: socket.socket,
    handle: Callable[[bytes, Any], None],
    after_batch: Callable[[], None],
    *,
    pump: Pump | None = None,
    on_error: ErrorHandler | None = None,
    gro: bool = False,
) -> None:
    """Forever: wait until readable, stamp the clock, hand up to BATCH receives to ``handle``
    (with ``gro``, a receive may carry many datagrams: each is handed over on its own).

    ``on_error(sock, errno)`` reads the socket's error queue (IPV6_RECVERR / IP_RECVERR) when
    a receive reports an ICMP error, so a queued error is consumed, not spun on."""
    recvfrom = sock.recvfrom
    where = getattr(handle, "__name__", "handler")
    while True:
        await trio.lowlevel.wait_readable(sock)
        if pump is not None:
            pump.stamp()
        link_down = False
        for _ in range(BATCH):
            try:
                if gro:
                    parts, addr = _gro_read(sock)
                    if len(parts) > 1:
                        for part in parts[:-1]:
                            try:
                                handle(part, addr)
                            except Exception:
                                _handler_failed(where)
                    data = parts[-1]
                else:
                    data, addr = recvfrom(65535)
            except BlockingIOError:
                break
            except OSError as exc:
                # ICMP errors queued on the socket (e.g. ECONNREFUSED) are not fatal.
                if exc.errno in _TRANSIENT_ERRNOS:
                    if on_error is not None:
                        try:
                            on_error(sock, exc.errno)
                        except Exception:
                            _handler_failed(f"{where}/on_error")
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


def start_udp_drains(
    nursery: trio.Nursery,
    sock: socket.socket,
    lane: socket.socket | None,
    handle: Callable[[bytes, Any], None],
    pump: Pump,
    on_error: Callable[..., None] | None = None,
) -> None:
    """Drain one UDP port: its data socket and, when it has one, its check lane
    (drivers/check_lane.py), both with GRO (the kernel's GRO picks either socket by a hash of
    the addresses) and the same handler. The lane's ICMP errors are the data socket's:
    ``on_error(lane, errno, owner=sock)``."""
    drain = partial(drain_socket, pump=pump, on_error=on_error, gro=enable_gro(sock))
    nursery.start_soon(drain, sock, handle, pump.flush)
    if lane is None:
        return

    def from_lane(data: bytes, addr: Any) -> None:
        LANE_STATS["lane_datagrams"] += 1
        handle(data, addr)

    lane_error = None if on_error is None else partial(on_error, owner=sock)
    drain = partial(drain_socket, pump=pump, on_error=lane_error, gro=enable_gro(lane))
    nursery.start_soon(drain, lane, from_lane, pump.flush)


async def drain_tun(
    tun: Tun,
    handle: Callable[[bytes], None],
    after_batch: Callable[[], None],
    *,
    pump: Pump | None = None,
) -> None:
    """Forever: wait until the TUN is readable, stamp the clock, hand the packets of up to
    BATCH reads to ``handle``. With the virtio-net header, a plain packet is handed over
    without parsing (flags 0 or DATA_VALID, no GSO: two octets looked at); a super-packet or a
    checksum-partial one goes through :meth:`Tun.expand` first."""
    read, fd, size, vnet, expand = os.read, tun.fd, tun.read_size, tun.vnet, tun.expand
    where = getattr(handle, "__name__", "handler")
    while True:
        await trio.lowlevel.wait_readable(fd)
        if pump is not None:
            pump.stamp()
        for _ in range(BATCH):
            try:
                data = read(fd, size)
            except BlockingIOError:
                break
            except OSError as exc:
                # The TUN device was deleted under us (EBADFD, EIO...): nothing to read from
                # any more. One clear line, not a traceback (the CLI prints TunError as is).
                raise TunError(
                    f"the TUN device went away ({exc.strerror or exc}); stopping"
                ) from None
            try:
                if not vnet:
                    handle(data)
                elif len(data) > VNET_HEADER_LENGTH and not data[1] and not data[0] & 0xFD:
                    handle(data[VNET_HEADER_LENGTH:])
                else:
                    for packet in expand(data):
                        handle(packet)
            except Exception:
                _handler_failed(where)
        try:
            after_batch()
        except Exception:
            _handler_failed(f"{where}/after_batch")


class Daemon(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    async def shutdown(self) -> None: ...


async def run_daemon(daemon: Daemon, name: str) -> None:
    """Start ``daemon``, then wait for SIGINT/SIGTERM: tell systemd, shut down, stop."""
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("%s stopping", name)
                sdnotify.notify("STOPPING=1")
                await daemon.shutdown()
                nursery.cancel_scope.cancel()
                break
