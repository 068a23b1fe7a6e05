"""Traffic generators run inside lab namespaces: ``python -m mipnode.lab.traffic ...``.

``server PORT``: accept one TCP connection, read to EOF, answer with the byte count and SHA-256.
``client HOST PORT BYTES``: send BYTES random bytes, check the answer, print one JSON line.
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


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        sys.exit(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
