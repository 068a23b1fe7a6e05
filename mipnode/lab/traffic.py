"""Traffic generators run inside lab namespaces: ``python -m mipnode.lab.traffic ...``.

``server PORT``: accept one TCP connection, read to EOF, answer with the byte count and SHA-256.
``client HOST PORT BYTES``: send BYTES random bytes, check the answer, print one JSON line.
``stream-server PORT`` / ``stream-client HOST PORT [SECONDS]``: a steady stream (1 KB every
10 ms) for SECONDS, or until the client's stdin closes (the lab's timeline decides how long);
the server measures the longest pause between arrivals (the handover gap) and the client checks
that every byte arrived on the same connection.
``udp-sink PORT`` / ``udp-send HOST PORT RATE``: numbered datagrams at RATE per second until
stdin closes; the sink reports what arrived (unique, duplicates, longest pause).
The stream server and the UDP sink also print what arrived over time (:class:`Meter`), which
the lab keeps as ``history`` for its HTML report.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time


def _accept_one(port: int) -> socket.socket:
    """Listen on ``port``, say "listening" (the lab's readiness probe), accept one connection."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(1)
        print("listening", flush=True)
        s.settimeout(60)
        conn, _ = s.accept()
    conn.settimeout(30)
    return conn


def server(port: int) -> None:
    with _accept_one(port) as conn:
        digest, total = hashlib.sha256(), 0
        while chunk := conn.recv(65536):
            digest.update(chunk)
            total += len(chunk)
        conn.sendall(f"{total} {digest.hexdigest()}\n".encode())


def client(host: str, port: int, size: int) -> int:
    data = os.urandom(size)
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=15) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    seconds = time.monotonic() - start
    expected = f"{size} {hashlib.sha256(data).hexdigest()}"
    ok = answer.decode(errors="replace").strip() == expected
    print(
        json.dumps(
            {
                "ok": ok,
                "bytes": size,
                "seconds": round(seconds, 3),
                "mbit_s": round(size * 8 / seconds / 1e6, 1),
            }
        )
    )
    return 0 if ok else 1


CHUNK = 1024
INTERVAL_S = 0.01


BIN_S = 0.1
MAX_BINS = 300  # then the bins double in width: a flow of any length stays a few KB of JSON
GAP_MIN_S = 0.2  # a pause worth showing: 10 missed stream chunks, 10 datagrams at 50/s
MAX_GAPS = 50


class Meter:
    """What arrived per interval and the pauses of at least GAP_MIN_S, from ``start`` on:
    the report draws throughput over time and marks where a flow stopped."""

    def __init__(self) -> None:
        self.start, self.start_mono = time.time(), time.monotonic()
        self.bin_s = BIN_S
        self.bins: list[int] = []
        self.gaps: list[list[float]] = []  # [since start, length] in ms
        self.last: float | None = None

    def add(self, amount: int, now: float) -> None:
        """``amount`` (bytes, datagrams) arrived at monotonic time ``now``."""
        if self.last is not None and now - self.last >= GAP_MIN_S and len(self.gaps) < MAX_GAPS:
            since = round((self.last - self.start_mono) * 1000, 1)
            self.gaps.append([since, round((now - self.last) * 1000, 1)])
        self.last = now
        index = self._reach(now)  # first: merging bins replaces the list
        self.bins[index] += amount

    def _reach(self, now: float) -> int:
        """The index of the bin ``now`` falls in, the bins grown up to it (pairs merged while
        there would be more than MAX_BINS)."""
        index = int(max(0.0, now - self.start_mono) / self.bin_s)
        while index >= MAX_BINS:
            self.bins = [sum(self.bins[i : i + 2]) for i in range(0, len(self.bins), 2)]
            self.bin_s *= 2
            index = int(max(0.0, now - self.start_mono) / self.bin_s)
        self.bins.extend([0] * (index + 1 - len(self.bins)))
        return index

    def report(self, end: float | None = None) -> dict[str, object]:
        """Bins up to ``end`` (monotonic; now by default), so a pause at the very end of the
        flow shows as empty bins."""
        self._reach(time.monotonic() if end is None else end)
        return {
            "start": round(self.start, 3),
            "bin_ms": round(self.bin_s * 1000),
            "counts": self.bins,
            "gaps": self.gaps,
        }


def stream_server(port: int) -> None:
    meter = Meter()
    with _accept_one(port) as conn:
        total, max_gap, last = 0, 0.0, time.monotonic()
        try:
            while chunk := conn.recv(65536):
                now = time.monotonic()
                if total:
                    max_gap = max(max_gap, now - last)
                last = now
                total += len(chunk)
                meter.add(len(chunk), now)
            report = {"bytes": total, "max_gap_ms": round(max_gap * 1000, 1)}
            conn.sendall(json.dumps(report).encode() + b"\n")
        except OSError:
            pass  # a broken stream: the client says so; what arrived until then still counts
    print(json.dumps({"bytes": total, "over_time": meter.report()}), flush=True)


MAX_RUN_S = 300.0  # a traffic process the lab forgot must still end


def _stdin_closed() -> threading.Event:
    """Set once stdin reaches EOF: the lab closes the pipe to end a flow at a timeline's end."""
    closed = threading.Event()

    def watch() -> None:
        sys.stdin.buffer.read()
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    return closed


def stream_client(host: str, port: int, seconds: float | None) -> int:
    sent = 0
    stop = _stdin_closed() if seconds is None else threading.Event()
    try:
        with socket.create_connection((host, port), timeout=15) as s:
            end = time.monotonic() + (MAX_RUN_S if seconds is None else seconds)
            while time.monotonic() < end and not stop.is_set():
                s.sendall(b"x" * CHUNK)
                sent += CHUNK
                time.sleep(INTERVAL_S)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError as exc:
        print(json.dumps({"ok": False, "sent": sent, "error": str(exc)}))
        return 1
    report = json.loads(answer.decode())
    ok = report["bytes"] == sent
    print(json.dumps({"ok": ok, "sent": sent, **report}))
    return 0 if ok else 1


UDP_PAYLOAD = 100
GRACE_S = 0.5  # datagrams still in flight when the sender stops


def udp_sink(port: int) -> None:
    stop = _stdin_closed()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::", port))
        s.settimeout(0.1)
        print("listening", flush=True)
        seen: set[int] = set()
        duplicates, max_gap, last = 0, 0.0, None
        stop_at = None
        meter = Meter()
        while stop_at is None or time.monotonic() < stop_at:
            if stop_at is None and stop.is_set():
                stop_at = time.monotonic() + GRACE_S
            try:
                data = s.recv(2048)
            except TimeoutError:
                continue
            now = time.monotonic()
            if len(data) < 8:
                continue
            (seq,) = struct.unpack_from("!Q", data)
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            meter.add(1, now)
            if last is not None:
                max_gap = max(max_gap, now - last)
            last = now
    print(
        json.dumps(
            {
                "received": len(seen),
                "duplicates": duplicates,
                "max_gap_ms": round(max_gap * 1000, 1),
                # Up to when the sender stopped: the grace time after it is no pause.
                "over_time": meter.report(None if stop_at is None else stop_at - GRACE_S),
            }
        ),
        flush=True,
    )


def udp_send(host: str, port: int, rate: float) -> None:
    stop = _stdin_closed()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    interval, sent, errors = 1.0 / rate, 0, 0
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        start = time.monotonic()
        while not stop.is_set() and time.monotonic() - start < MAX_RUN_S:
            try:
                s.sendto(struct.pack("!Q", sent) + bytes(UDP_PAYLOAD - 8), (host, port))
            except OSError:
                errors += 1  # a path that is down for a moment: counted as lost
            sent += 1
            # Pace against the start time, so a slow iteration does not lower the rate.
            time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    print(json.dumps({"sent": sent, "send_errors": errors}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(int(sys.argv[2]))
    elif mode == "stream-server":
        stream_server(int(sys.argv[2]))
    elif mode == "stream-client":
        seconds = float(sys.argv[4]) if len(sys.argv) > 4 else None
        sys.exit(stream_client(sys.argv[2], int(sys.argv[3]), seconds))
    elif mode == "udp-sink":
        udp_sink(int(sys.argv[2]))
    elif mode == "udp-send":
        udp_send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
