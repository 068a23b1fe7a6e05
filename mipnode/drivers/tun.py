"""TUN devices: opened with TUNSETIFF ourselves (pyroute2 cannot hand us the packet fd).

A non-persistent TUN vanishes with its last fd, so a crashed daemon leaves nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunError(Exception):
    pass


def open_tun(name: str) -> int:
    """Create TUN ``name`` in the current network namespace; return its non-blocking fd."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError("/dev/net/tun is missing (load the tun module or pass the device)") from None
    except PermissionError:
        raise TunError("cannot open /dev/net/tun: permission denied (need CAP_NET_ADMIN)") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EPERM:
            raise TunError(f"cannot create TUN {name}: need CAP_NET_ADMIN") from None
        if exc.errno == errno.EBUSY:
            raise TunError(f"TUN {name} is in use by another process") from None
        raise TunError(f"cannot create TUN {name}: {exc.strerror}") from None
    os.set_blocking(fd, False)
    return fd
