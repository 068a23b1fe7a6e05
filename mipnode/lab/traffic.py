"""Traffic generators run inside lab namespaces: ``python -m mipnode.lab.traffic ...``.

``server PORT``: accept one TCP connection, read to EOF, answer with the byte count and SHA-256.
``client HOST PORT BYTES``: send BYTES random bytes, check the answer, print one JSON line.
``stream-server PORT`` / ``stream-client HOST PORT SECONDS``: a steady stream (1 KB every 10 ms)
for SECONDS; the server measures the longest pause between arrivals (the handover gap) and the
client checks that every byte arrived on the same connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time


def server(port: int) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(1)
        print("listening", flush=True)
        s.settimeout(60)
        conn, _ = s.accept()
        with conn:
            conn.settimeout(30)
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


def stream_server(port: int) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(1)
        print("listening", flush=True)
        s.settimeout(60)
        conn, _ = s.accept()
        with conn:
            conn.settimeout(30)
            total, max_gap, last = 0, 0.0, time.monotonic()
            while chunk := conn.recv(65536):
                now = time.monotonic()
                if total:
                    max_gap = max(max_gap, now - last)
                last = now
                total += len(chunk)
            conn.sendall(
                json.dumps({"bytes": total, "max_gap_ms": round(max_gap * 1000, 1)}).encode()
                + b"\n"
            )


def stream_client(host: str, port: int, seconds: float) -> int:
    sent = 0
    try:
        with socket.create_connection((host, port), timeout=15) as s:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
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


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(int(sys.argv[2]))
    elif mode == "stream-server":
        stream_server(int(sys.argv[2]))
    elif mode == "stream-client":
        sys.exit(stream_client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        sys.exit(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
