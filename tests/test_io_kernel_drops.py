"""`status` shows what the kernel dropped at each data socket: read from proc_net(5) by inode.

The oracle is the kernel itself: a socket with a tiny receive buffer that is sent more than it
holds on loopback must show the overflow; a socket nobody overfilled shows none.
"""

from __future__ import annotations

import socket

from mipnode.drivers.io import kernel_drops


def test_an_overflowing_socket_shows_the_kernel_s_drops_and_a_quiet_one_none() -> None:
    full = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with full, quiet, sender:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel's minimum
        full.bind(("::1", 0))
        quiet.bind(("127.0.0.1", 0))
        for _ in range(200):
            sender.sendto(b"x" * 1000, full.getsockname())
        drops = kernel_drops({"full": full, "quiet": quiet})
        assert drops["quiet"] == 0
        assert drops["full"] >= 150, drops  # a 1 KB (doubled to ~4.6 KB) buffer holds a few


def test_a_closed_socket_is_left_out_not_an_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()
    assert kernel_drops({"gone": sock}) == {}
