"""Datagrams sent a batch at a time: UDP generic segmentation offload (``UDP_SEGMENT``).

The data plane drains up to a batch of packets from the TUN before it yields; what it tunnels
over UDP during that batch is queued here per (socket, destination) and sent when the batch
ends, each run of equal-size datagrams (the last may be shorter) in one ``sendmsg`` with a
``UDP_SEGMENT`` control message: the kernel cuts the buffer into datagrams (udp(7), Linux ≥
4.18). A batch of 40 full packets to the home agent then costs one system call, not 40; the
wait is the rest of the batch, microseconds.

A socket whose kernel or route refuses it (EINVAL, EIO: no checksum offload on the way out,
ENOPROTOOPT: an old kernel) falls back to one ``sendto`` per datagram for good, with one log
line; the datagrams of the refused call are sent that way at once, none is lost.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Any

from mipnode.drivers.check_lane import LANE_STATS
from mipnode.drivers.io import Counters, send_quietly, tx_error
from mipnode.drivers.pump import GRO_STATS

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS is 128; wireguard-go keeps 64 per call
# All segments of one call form one datagram before segmentation: its UDP payload must fit in
# an IPv4 or IPv6 packet (65,535 - 20 - 8 for IPv4).
MAX_BYTES = 65_507
_REFUSED = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
_SIZE = struct.Struct("=H")
log = logging.getLogger("mipnode.gso")


class BatchSender:
    """Queue with :meth:`add` during a batch, send with :meth:`flush` after it."""

    def __init__(self, count: Counters, *, enabled: bool = True) -> None:
        self._count = count
        self._queue: dict[tuple[socket.socket, Any], list[bytes]] = {}
        self.enabled = enabled
        self.refused: set[int] = set()  # fds that refused UDP_SEGMENT
        self.calls = 0  # sendmsg calls that carried more than one datagram
        self.datagrams = 0  # datagrams those calls carried

    def add(self, sock: socket.socket, addr: Any, datagram: bytes) -> None:
        key = (sock, addr)
        queued = self._queue.get(key)
        if queued is None:
            self._queue[key] = [datagram]
        else:
            queued.append(datagram)

    def flush(self) -> None:
        if not self._queue:
            return
        queue, self._queue = self._queue, {}
        for (sock, addr), datagrams in queue.items():
            if len(datagrams) == 1 or not self.enabled or sock.fileno() in self.refused:
                for d in datagrams:
                    self._sendto(sock, d, addr)
                continue
            for run in _runs(datagrams):
                if len(run) == 1:
                    self._sendto(sock, run[0], addr)
                else:
                    self._send_run(sock, addr, run)

    def statistics(self) -> dict[str, int]:
        return {"gso_calls": self.calls, "gso_datagrams": self.datagrams}

    def status(self) -> dict[str, Any]:
        """What ``status --json`` shows under ``offloads``: what is on, and what it carried."""
        return {
            "udp_segment": self.enabled,
            "udp_segment_refused_sockets": len(self.refused),
            **self.statistics(),
            **GRO_STATS,
            **LANE_STATS,
        }

    def _send_run(self, sock: socket.socket, addr: Any, run: list[bytes]) -> None:
        size = _SIZE.pack(len(run[0]))
        try:
            sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, size)], 0, addr)
        except BlockingIOError:
            self._count("tx_would_block", len(run))
            return
        except OSError as exc:
            if exc.errno in _REFUSED:
                self.refused.add(sock.fileno())
                log.warning(
                    "UDP segmentation offload refused on %s (%s): one datagram per call",
                    sock.getsockname(),
                    exc.strerror,
                )
                for d in run:
                    self._sendto(sock, d, addr)
                return
            self._count(tx_error(exc), len(run))
            return
        self.calls += 1
        self.datagrams += len(run)

    def _sendto(self, sock: socket.socket, datagram: bytes, addr: Any) -> None:
        send_quietly(sock, datagram, addr, self._count)


def _runs(datagrams: list[bytes]) -> list[list[bytes]]:
    """Consecutive datagrams cut into runs the kernel can segment: equal sizes, the last of a
    run possibly shorter, at most MAX_SEGMENTS and MAX_BYTES each (order kept)."""
    runs: list[list[bytes]] = []
    run: list[bytes] = []
    size = total = 0
    for d in datagrams:
        n = len(d)
        if run and n <= size and len(run) < MAX_SEGMENTS and total + n <= MAX_BYTES:
            run.append(d)
            total += n
            if n < size:  # a shorter one ends the run
                runs.append(run)
                run = []
            continue
        if run:
            runs.append(run)
        run, size, total = [d], n, n
    if run:
        runs.append(run)
    return runs
