"""Packet capture for the lab: one classic pcap file per veth link.

Run inside a namespace as ``python -m mipnode.lab.capture OUT.pcap IFNAME``: it records every
frame on IFNAME (both directions, outgoing included) until SIGTERM or SIGINT, prints ``ready``
once the socket is bound (the caller's readiness probe, no sleeps) and, on exit, one JSON line
with the frame count and the kernel's drop count. ``LinkCaptures`` starts one such process per
link of a topology and registers each with the run record, so teardown reaps them after a crash.

Only stdlib: a classic pcap (not pcapng) takes a few lines of ``struct``, and every tool
reads it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mipnode.lab.netns import CHILDREN, LabError, RunRecord
from mipnode.lab.topology import Topology, plan

SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
# magic, version 2.4, thiszone, sigfigs, snaplen, linktype. Little-endian on purpose: readers
# detect the byte order from the magic, and a fixed order makes the golden bytes testable.
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len

ETH_P_ALL = 0x0003  # linux/if_ether.h; not exported by Python's socket module
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats {unsigned tp_packets, tp_drops}
SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max
RCVBUF = 4 << 20  # absorbs a burst while Python is busy writing
WRITE_BUFFER = 1 << 20
# The socket reports these when its interface goes down or away (namespace deleted under us):
# the end of the capture, not a failure.
GONE = frozenset({errno.ENETDOWN, errno.ENODEV, errno.ENXIO})

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

Link = tuple[str, str, str, str]


# --- the file format (pure) ---


def pcap_global_header(snaplen: int = SNAPLEN) -> bytes:
    return GLOBAL_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def _split(ts: float) -> tuple[int, int]:
    sec = int(ts)
    return sec, int((ts - sec) * 1_000_000)  # truncated, so never 1_000_000


def pcap_record(ts: float, frame: bytes, snaplen: int = SNAPLEN) -> bytes:
    """One record: header and the frame cut to ``snaplen`` (orig_len keeps the real length)."""
    incl = min(len(frame), snaplen)
    return RECORD_HEADER.pack(*_split(ts), incl, len(frame)) + frame[:incl]


# --- the capturing process ---


class _Stop(Exception):
    """Raised by the signal handler: the only way out of a blocking recv (PEP 475 retries it)."""


class RecvSocket(Protocol):
    def recv_into(self, buffer: memoryview, nbytes: int, flags: int) -> int: ...


def record_frames(
    sock: RecvSocket,
    out: BinaryIO,
    *,
    ifname: str | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Write a record for every frame until ``_Stop`` or the interface disappears; the count.

    The record header sits in front of the frame in one buffer, so each frame is one write:
    a signal can then cost the frame being received, never leave half a record in the file.
    A link set down and up again (``ifname`` still exists) only interrupts the capture.
    """
    buf = bytearray(RECORD_HEADER.size + SNAPLEN)
    view = memoryview(buf)
    frame = view[RECORD_HEADER.size :]
    recv_into, write, pack_into = sock.recv_into, out.write, RECORD_HEADER.pack_into
    frames = 0
    while True:
        try:
            while True:
                # MSG_TRUNC: the real length even when the frame is longer than the buffer.
                n = recv_into(frame, SNAPLEN, socket.MSG_TRUNC)
                sec, usec = _split(clock())
                incl = n if n < SNAPLEN else SNAPLEN
                pack_into(buf, 0, sec, usec, incl, n)
                write(view[: RECORD_HEADER.size + incl])
                frames += 1
        except _Stop:
            return frames
        except OSError as exc:
            if exc.errno not in GONE:
                raise
            if ifname is None or not _interface_exists(ifname):
                return frames


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def open_packet_socket(ifname: str) -> socket.socket:
    # Protocol 0 receives nothing until bind() names ETH_P_ALL: no frame of another interface
    # slips in between socket() and bind().
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((ifname, ETH_P_ALL))
        kernel_stats(sock)  # reading resets the counters: count from here on
    except BaseException:
        sock.close()
        raise
    return sock


def kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(frames the kernel queued for us, frames it dropped because we were slow), since the
    last call. The kernel's tp_packets includes the drops; this returns it as is."""
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def _on_signal(signum: int, frame: object) -> None:
    _ignore_signals()  # one stop is enough: later signals must not interrupt closing the file
    raise _Stop


def _ignore_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _say(line: str) -> None:
    # Straight to fd 1: unbuffered, and a reader that went away is not an error of ours.
    with contextlib.suppress(OSError):
        os.write(1, line.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mipnode.lab.capture OUT.pcap IFNAME", file=sys.stderr)
        return 2
    out_path, ifname = Path(args[0]), args[1]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with contextlib.ExitStack() as stack:
        try:
            sock = stack.enter_context(open_packet_socket(ifname))
            out = stack.enter_context(open(out_path, "wb", buffering=WRITE_BUFFER))
            out.write(pcap_global_header())
            out.flush()  # a capture stopped before any frame is still a valid file
        except _Stop:
            return 0
        except OSError as exc:
            print(f"capture: cannot capture {ifname} into {out_path}: {exc}", file=sys.stderr)
            return 1
        try:
            _say("ready")
            frames = record_frames(sock, out, ifname=ifname)
            _ignore_signals()
            packets, drops = kernel_stats(sock)
        except _Stop:  # stopped in the few lines before the loop: no statistics
            return 0
    stats = {
        "interface": ifname,
        "frames": frames,
        "kernel_packets": packets,
        "kernel_drops": drops,
    }
    _say(json.dumps(stats))
    if drops:
        print(f"capture {ifname}: the kernel dropped {drops} frames", file=sys.stderr)
    return 0


# --- the lab side ---


def topology_links(t: Topology) -> tuple[Link, ...]:
    """The veth links of ``t`` as (node a, ifname in a, node b, ifname in b).

    The one place that knows how a Topology describes its links: ``t.links`` where it exists,
    else ``plan()`` with the fields it took when this was written.
    """
    links = getattr(t, "links", None)
    if links is not None:
        return tuple(links)
    return plan(t.cn_firewall, t.second_access, t.second_mn)[1]


def link_name(link: Link) -> str:
    """``mn-eth0--fw-lan``: a file name that says which link it is."""
    a, ia, b, ib = link
    return f"{a}-{ia}--{b}-{ib}"


def _read_line(fd: int, timeout: float) -> bytes | None:
    """The first line the child writes; b"" if it closed stdout (died) first; None on timeout.

    EOF, not ``poll()``, tells that the child is gone: it closes its pipes a moment before
    it can be reaped.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0].strip()


@dataclass
class _Capture:
    name: str
    path: Path
    where: str  # "eth0 in mipl-1a2b3c-mn", for messages
    proc: subprocess.Popen[bytes]


class LinkCaptures:
    """Capture processes of one lab run, each writing ``out_dir/<name>.pcap``.

    Each child is registered in ``netns.CHILDREN`` and in ``record.daemons`` (``record`` given
    here, or the topology's in ``start_for_links``), so ``RunRecord.teardown()`` stops them if
    ``stop()`` is never reached. Call ``stop()`` before teardown: it is idempotent. ``stats``
    maps a capture's name to what its process reported (frames, kernel_drops) or an error.
    """

    def __init__(self, out_dir: Path, *, record: RunRecord | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.record = record
        self.stats: dict[str, dict[str, Any]] = {}
        self._running: list[_Capture] = []
        self._written: set[Path] = set()

    @property
    def pids(self) -> list[int]:
        """The capture processes running now."""
        return [cap.proc.pid for cap in self._running]

    def start_for_links(self, t: Topology) -> None:
        """Capture one end (node a's) of every link: it sees both directions."""
        if self.record is None:
            self.record = t.record
        # All spawned first, then awaited: Python starts in parallel, not one after another.
        caps = [self._spawn(t.ns(link[0]), link[1], link_name(link)) for link in topology_links(t)]
        for cap in caps:
            self._await_ready(cap)

    def start(self, ns: str, ifname: str, name: str) -> None:
        """Capture ``ifname`` in namespace ``ns`` into ``out_dir/<name>.pcap``; returns once
        the capture runs. LabError if it does not start within 10 s."""
        self._await_ready(self._spawn(ns, ifname, name))

    def _spawn(self, ns: str, ifname: str, name: str) -> _Capture:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = (self.out_dir / f"{name}.pcap").resolve()
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "mipnode.lab.capture"]
        proc = subprocess.Popen(
            [*cmd, str(path), ifname],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # the lab stops it in order; a terminal's ^C does not
        )
        self._register(proc)
        cap = _Capture(name, path, f"{ifname} in {ns}", proc)
        self._running.append(cap)  # from here on stop() reaps it, whatever happens next
        return cap

    def _await_ready(self, cap: _Capture) -> None:
        assert cap.proc.stdout is not None
        line = _read_line(cap.proc.stdout.fileno(), READY_TIMEOUT_S)
        if line == b"ready":
            return
        self._running.remove(cap)
        self._finish(cap, kill=True)
        why = (
            f"no 'ready' within {READY_TIMEOUT_S:.0f} s"
            if line is None
            else self.stats[cap.name].get("error", f"it said {line!r}, not 'ready'")
        )
        raise LabError(f"capture of {cap.where} did not start: {why}")

    def stop(self) -> list[Path]:
        """Stop every capture (SIGTERM, then SIGKILL after 5 s); all pcap files written."""
        running, self._running = self._running, []
        for cap in running:
            with contextlib.suppress(ProcessLookupError):
                cap.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for cap in running:
            try:
                cap.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._finish(cap, kill=True)
            else:
                self._finish(cap, kill=False)
        return sorted(self._written)

    def _register(self, proc: subprocess.Popen[bytes]) -> None:
        CHILDREN[proc.pid] = proc
        if self.record is not None:
            self.record.daemons.append(proc.pid)
            self.record.save()

    def _unregister(self, pid: int) -> None:
        CHILDREN.pop(pid, None)
        rec = self.record
        if rec is not None and pid in rec.daemons:
            rec.daemons.remove(pid)
            if rec.path.exists():  # never resurrect the record of a run already torn down
                rec.save()

    def _finish(self, cap: _Capture, *, kill: bool) -> None:
        """Reap the child, collect what it said, forget its pid."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                cap.proc.kill()
        # Its output is a line or two (the pipes cannot fill), so wait then read is safe.
        cap.proc.wait()
        out = cap.proc.stdout.read() if cap.proc.stdout else b""
        err = cap.proc.stderr.read() if cap.proc.stderr else b""
        for pipe in (cap.proc.stdout, cap.proc.stderr):
            if pipe is not None:
                pipe.close()
        self._unregister(cap.proc.pid)
        stats: dict[str, Any] = {}
        for line in out.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    stats = parsed
        code = cap.proc.returncode
        if code != 0:
            stats["error"] = f"exit {code}: {err.decode(errors='replace').strip()[-300:]}"
        self.stats[cap.name] = stats
        if cap.path.exists():
            self._written.add(cap.path)


if __name__ == "__main__":
    sys.exit(main())
