"""The control socket: one JSON request per connection, one JSON answer.

Socket names starting with ``@`` are Linux abstract sockets. Those belong to the network
namespace, so ``ip netns exec NS mipnode status`` reaches the daemon of that namespace without
any path juggling. Only root or the daemon's own user may ask (SO_PEERCRED).
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import trio

from mipnode.drivers import pump

MAX_REQUEST = 4096
CLIENT_TIMEOUT_S = 5.0  # a client that says nothing loses its connection
log = logging.getLogger("mipnode.control")
Handler = Callable[[str], Any]


def socket_address(name: str) -> str | bytes:
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def _peer_allowed(sock: trio.socket.SocketType) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


async def serve_control(
    name: str, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer requests on ``name`` until cancelled. ``handler(command)`` returns JSON-able data."""
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = socket_address(name)
    if isinstance(address, str) and os.path.exists(address):
        os.unlink(address)  # a stale path from a crashed run; abstract names need no cleanup
    try:
        await listener.bind(address)
    except OSError as exc:
        listener.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f" (another process holds it: `ss -xlp | grep {name.lstrip('@')}` shows which)"
        raise OSError(exc.errno, f"control socket {name}: {exc.strerror}{hint}") from None
    listener.listen(16)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_answer, conn, handler)
    finally:
        listener.close()
        if isinstance(address, str):
            with contextlib.suppress(OSError):
                os.unlink(address)


async def _answer(conn: trio.socket.SocketType, handler: Handler) -> None:
    """One request. A client that goes away early (Ctrl-C, a closed pipe) or asks nonsense
    costs this connection only, never the daemon."""
    with contextlib.suppress(OSError):
        await _answer_one(conn, handler)


async def _answer_one(conn: trio.socket.SocketType, handler: Handler) -> None:
    with conn, pump.time_limit(CLIENT_TIMEOUT_S):
        if not _peer_allowed(conn):
            await conn.send(b'{"error": "permission denied"}\n')
            return
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = await conn.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data.decode())
            command = str(request["command"])
            answer = handler(command)
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"error": f"bad request: {exc}"}
        except Exception:  # a bug in an inspection handler must not stop the daemon
            log.exception("control request failed")
            answer = {"error": "internal error (see the daemon's log)"}
        if inspect.isawaitable(answer):  # a command that waits for the network (ping)
            try:
                answer = await answer
            except Exception:
                log.exception("control request failed")
                answer = {"error": "internal error (see the daemon's log)"}
        payload = (json.dumps(answer) + "\n").encode()
        view = memoryview(payload)
        while view:
            sent = await conn.send(view)
            view = view[sent:]


class NotOurDaemon(OSError):
    """The control socket is held by a process of another user: a squatter, not a daemon."""


def query(name: str, command: str, timeout: float = 3.0, sock: socket.socket | None = None) -> Any:
    """Blocking client used by the CLI. Raises OSError when no daemon listens there, and
    :class:`NotOurDaemon` when the listener is neither root nor our own user (any local user
    can bind an abstract name first; its answers must never reach root's terminal).

    ``sock``: an unconnected AF_UNIX stream socket to use (and close), e.g. one created in
    another network namespace, whose abstract socket names it then resolves."""
    with sock or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_address(name))
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (0, os.geteuid()):
            raise NotOurDaemon(
                errno.EPERM,
                f"held by process {pid} of uid {uid}, not a mipnode daemon of root or yours; "
                "not reading it",
            )
        s.sendall((json.dumps({"command": command}) + "\n").encode())
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks).decode())
