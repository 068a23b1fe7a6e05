"""Ask the lab's daemons how they are doing (``mipnode status --json`` in their namespace)."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mipnode.drivers.control import query
from mipnode.lab.topology import CN_ADDRESS, Topology

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def in_namespace(ns: str, call: Callable[[], T]) -> T:
    """``call()`` in network namespace ``ns``: sockets it creates live there (abstract Unix
    socket names and addresses are per namespace). setns(2) moves only the calling thread, so
    a short-lived thread does it and the lab process itself never moves."""
    made: list[T | BaseException] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(call())
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    worker = threading.Thread(target=enter_and_call, name=f"setns-{ns}")
    worker.start()
    worker.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def unix_socket_in(ns: str) -> socket.socket:
    """An AF_UNIX socket created inside network namespace ``ns``."""
    return in_namespace(ns, lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))


DAEMON_SOCKETS = {
    "mn": "@mipnode-mn",
    "mn2": "@mipnode-mn",
    "ha": "@mipnode-ha",
    "ha2": "@mipnode-ha",  # the other home agents of a cluster, each in its own namespace
    "ha3": "@mipnode-ha",
    "ha4": "@mipnode-ha",
    "ha5": "@mipnode-ha",
    "cn": "@mipnode-cn",
}


def daemon_status(t: Topology, node: str, command: str = "status") -> Any:
    """The daemon's JSON answer (an object; a list for `paths`), or None if it does not answer.

    Asked over its control socket directly (a few ms), not by running ``mipnode status`` in
    the namespace (a Python start-up, ~250 ms, per poll)."""
    try:
        answer = query(DAEMON_SOCKETS[node], command, timeout=5, sock=unix_socket_in(t.ns(node)))
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict | list) else None


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll a readiness predicate until it returns something truthy (or None at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def log_tail(t: Topology, name: str, lines: int = 5) -> str:
    return file_tail(t.workdir / name, lines)


def file_tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` of a log, on one line (empty when it cannot be read)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


NO_PATH = "none"  # what correspondent_path says for a peer the MN does not list


def correspondent_path(
    t: Topology, peer: str = CN_ADDRESS, status: dict[str, Any] | None = None
) -> str | None:
    """The path the MN's traffic to ``peer`` (the CN, or the second MN's HoA) takes now, as the
    MN lists it under ``correspondents`` in its status; None when the MN does not answer.

    A peer the MN does not list (or lists without a path) has no path: ``NO_PATH``, never the
    home path. The MN lists every destination it sends to, so an unlisted peer means its
    traffic has not reached the MN's daemon, and the lab must not guess where it would go.

    Behind a mobile router the traffic is the host's (``Topology.mn_host``): its flow to
    ``peer`` as the router lists it under ``mobile_network_flows``."""
    if status is None:
        status = daemon_status(t, "mn")
    if not status:  # the MN did not answer
        return None
    if t.mobile_network:
        _, host = t.mn_host()
        for f in status.get("mobile_network_flows") or []:
            if f.get("host") == host and f.get("cn") == peer:
                return str(f["path"]) if f.get("path") else NO_PATH
        return NO_PATH
    for c in status.get("correspondents") or []:
        if c.get("cn") == peer:
            return str(c["path"]) if c.get("path") else NO_PATH
    return NO_PATH


def module_process(
    t: Topology, node: str, module: str, *args: str, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """``python -m MODULE ARGS`` in ``node``'s namespace, stdin and stdout piped (text): the
    lab's traffic generators and its attacker."""
    return subprocess.Popen(
        ["ip", "netns", "exec", t.ns(node), sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
