"""The control socket's client refuses a listener of another user, and what a daemon says
cannot drive the terminal (issue 12: local hardening)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from mipnode.cli import _printable
from mipnode.drivers.control import NotOurDaemon, query

ROOT = Path(__file__).resolve().parent.parent


def _serve_once(name: str, answer: bytes, ready: threading.Event) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(b"\0" + name.encode())
        srv.listen(1)
        ready.set()
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)


def test_a_daemon_of_our_own_user_is_read() -> None:
    name = f"mipnode-test-{uuid.uuid4().hex[:8]}"
    ready = threading.Event()
    t = threading.Thread(target=_serve_once, args=(name, b'{"role": "mn"}\n', ready))
    t.start()
    ready.wait(5)
    assert query(f"@{name}", "status") == {"role": "mn"}
    t.join(5)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root privileges for a listener of another uid")
def test_a_squatter_of_another_user_is_refused() -> None:
    """Any local user can bind @mipnode-ha before the daemon; root's `mipnode status` must not
    print what that process says."""
    name = f"mipnode-test-{uuid.uuid4().hex[:8]}"
    squatter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, socket, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"s.bind(b'\\0{name}'); s.listen(1)\n"
            "print('ready', flush=True)\n"
            "c, _ = s.accept(); c.recv(4096)\n"
            'c.sendall(b\'{"role": "ha", "bindings": []}\\n\')\n',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready"
        with pytest.raises(NotOurDaemon, match="uid 65534"):
            query(f"@{name}", "status")
    finally:
        squatter.kill()
        squatter.wait(5)
        if squatter.stdout is not None:
            squatter.stdout.close()


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("\x1b[2J\x1b[Hfake", "\\x1b[2J\\x1b[Hfake"),
        ("line\rover", "line\\rover"),
        ("fine text", "fine text"),
    ],
)
def test_strings_from_a_daemon_are_printed_harmless(said: str, shown: str) -> None:
    answer: Any = {"diagnosis": said, "bindings": [{"hoa": said}], said: 1}
    clean = _printable(answer)
    assert clean["diagnosis"] == shown and clean["bindings"][0]["hoa"] == shown
    assert shown in clean
