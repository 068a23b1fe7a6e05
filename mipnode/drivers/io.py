"""Sockets shared by the daemons: opening, sending without blocking, the ICMP error queue.

Reading happens in batches in :mod:`mipnode.drivers.pump` (DESIGN §5: wait for readability
once, then drain with non-blocking reads; never one ``await`` per packet).
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import socket
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

SO_BINDTODEVICE = 25
SO_SNDBUFFORCE = 32  # asm-generic/socket.h: root may go past net.core.wmem_max
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: root may go past net.core.rmem_max
# A data socket's receive buffer: the default (~208 KB) holds ~90 full packets, less than one
# TCP window burst while the daemon is busy sealing a batch. A full raw socket does worse than
# drop: current kernels then count the packet as undelivered (ipv6_raw_deliver) and answer
# its sender with an ICMPv6 Parameter Problem ("unrecognized next header") for ESP and 41.
DATA_RCVBUF = 4 << 20
# Sending a batch must not meet a full send buffer halfway (tx_would_block drops).
DATA_SNDBUF = 4 << 20
# Where the kernel counts what it dropped at each socket (full receive buffer, bad checksum):
# the last column of these tables, found by the socket's inode (proc_net(5)).
PROC_NET_TABLES = ("/proc/net/udp", "/proc/net/udp6", "/proc/net/raw", "/proc/net/raw6")
IPV6_RECVERR = 25  # linux/in6.h (not exported by Python 3.11's socket module)
IP_RECVERR = 11  # linux/in.h
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err (linux/errqueue.h)
# What the network said, by (origin, ICMP type, code): RFC 4443 §3 and RFC 792.
_ICMP_WORDS = {
    (SO_EE_ORIGIN_ICMP6, 1, 0): "no route to destination",
    (SO_EE_ORIGIN_ICMP6, 1, 1): "administratively prohibited",
    (SO_EE_ORIGIN_ICMP6, 1, 2): "beyond the scope of the source address",
    (SO_EE_ORIGIN_ICMP6, 1, 3): "address unreachable",
    (SO_EE_ORIGIN_ICMP6, 1, 4): "port unreachable",
    (SO_EE_ORIGIN_ICMP6, 1, 5): "source address failed a policy",
    (SO_EE_ORIGIN_ICMP6, 1, 6): "reject route",
    (SO_EE_ORIGIN_ICMP, 3, 0): "network unreachable",
    (SO_EE_ORIGIN_ICMP, 3, 1): "host unreachable",
    (SO_EE_ORIGIN_ICMP, 3, 2): "protocol unreachable",
    (SO_EE_ORIGIN_ICMP, 3, 3): "port unreachable",
    (SO_EE_ORIGIN_ICMP, 3, 9): "administratively prohibited",
    (SO_EE_ORIGIN_ICMP, 3, 10): "administratively prohibited",
    (SO_EE_ORIGIN_ICMP, 3, 13): "administratively prohibited",
}
MAX_ERRORS_PER_READ = 16


@dataclass(frozen=True, slots=True)
class IcmpError:
    """One ICMP error the kernel queued for a packet we sent to ``destination``."""

    destination: tuple[str, int]
    words: str  # "administratively prohibited from 2001:db8::1"


def _bind_device(sock: socket.socket, ifname: str | None) -> None:
    if ifname:
        # Outer packets must leave through the access interface, never back into our TUN.
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())


def open_raw(proto: int, ifname: str | None = None, address: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    sock.setblocking(False)
    grow_buffers(sock)
    _bind_device(sock, ifname)
    if address:
        # The HA answers from its own address, whatever interface the route uses.
        sock.bind((address, 0))
    return sock


def open_udp(
    family: int,
    port: int,
    ifname: str | None = None,
    address: str | None = None,
    freebind: bool = False,
) -> socket.socket:
    """``freebind``: ``address`` may not be this host's yet (a cluster's address, held by
    another node now); what is sent leaves from it all the same."""
    sock = new_udp_socket(family, ifname)
    try:
        if freebind:
            sock.setsockopt(*_freebind_option(family), 1)
        sock.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except OSError:
        sock.close()
        raise
    return sock


IP_FREEBIND = 15  # linux/in.h
IPV6_FREEBIND = 78  # linux/in6.h


def _freebind_option(family: int) -> tuple[int, int]:
    if family == socket.AF_INET:
        return socket.IPPROTO_IP, IP_FREEBIND
    return socket.IPPROTO_IPV6, IPV6_FREEBIND


def copy_freebind(source: socket.socket, target: socket.socket) -> None:
    """Give ``target`` the freebind setting of ``source`` (a sibling on the same address)."""
    level, option = _freebind_option(source.family)
    if source.getsockopt(level, option):
        target.setsockopt(level, option, 1)


def new_udp_socket(family: int, ifname: str | None = None) -> socket.socket:
    """An unbound UDP socket set up as every data port is: non-blocking, IPv6 only for
    AF_INET6, big buffers, bound to ``ifname``, and SO_REUSEPORT (a check lane may join the
    port, drivers/check_lane.py: both sockets must ask before they bind)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        grow_buffers(sock)
        _bind_device(sock, ifname)
    except OSError:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=4096)
def raw_destination(packed: bytes) -> tuple[str, int]:
    """The address tuple of a raw IPv6 send to ``packed``: the text form is built once per
    address (a bounded cache), not per packet (~1 us for ``str(IPv6Address(...))``)."""
    return (str(IPv6Address(packed)), 0)


def grow_buffers(sock: socket.socket) -> None:
    """DATA_RCVBUF and DATA_SNDBUF bytes of buffers; without the privilege to force them, as
    much as net.core.rmem_max and wmem_max allow."""
    grow_receive_buffer(sock)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, DATA_SNDBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DATA_SNDBUF)


def grow_receive_buffer(sock: socket.socket, size: int = DATA_RCVBUF) -> None:
    """``size`` bytes of receive buffer (DATA_RCVBUF); without the privilege to force it, as
    much as net.core.rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


SOL_PACKET, PACKET_STATISTICS = 263, 6  # linux/if_packet.h
# PACKET_STATISTICS counts since its last read (packet(7)); the sums since each tap opened.
_PACKET_DROPS: weakref.WeakKeyDictionary[socket.socket, int] = weakref.WeakKeyDictionary()


def _packet_drops(sock: socket.socket) -> int:
    """What the kernel dropped at an AF_PACKET socket (a full queue) since it was opened."""
    _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    total = _PACKET_DROPS[sock] = _PACKET_DROPS.get(sock, 0) + drops
    return total


def kernel_drops(sockets: dict[str, socket.socket], tun: str | None = None) -> dict[str, int]:
    """What the kernel dropped at each of ``sockets`` (by name) since it was opened: a full
    receive buffer above all; with ``tun``, also under "tun" what overflowed that TUN's queue
    toward us (its tx_dropped). Read on demand (``status``), never per packet."""
    inodes = {}
    out: dict[str, int] = {}
    for name, sock in sockets.items():
        try:
            if sock.family == socket.AF_PACKET:  # a tap: no /proc table, its own statistics
                out[name] = _packet_drops(sock)
            else:
                inodes[os.fstat(sock.fileno()).st_ino] = name
        except (OSError, ValueError):  # closed under us
            continue
    for table in PROC_NET_TABLES:
        try:
            with open(table) as f:
                next(f, None)  # the header line
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and int(fields[9]) in inodes:
                        out[inodes[int(fields[9])]] = int(fields[-1])
        except (OSError, ValueError):
            continue
    if tun is not None:
        try:
            with open(f"/sys/class/net/{tun}/statistics/tx_dropped") as f:
                out["tun"] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def enable_error_queue(sock: socket.socket) -> None:
    """Queue ICMP errors for what this socket sends (IPV6_RECVERR / IP_RECVERR), so the
    diagnosis can say what the network answered; read them with :func:`read_error_queue`."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def read_error_queue(sock: socket.socket) -> list[IcmpError]:
    """Every queued ICMP error (MSG_ERRQUEUE, non-blocking): reading them clears the socket's
    error state, so a readable socket never spins on an error nobody reads."""
    out: list[IcmpError] = []
    for _ in range(MAX_ERRORS_PER_READ):
        try:
            _, ancdata, _, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, kind, data in ancdata:
            if (level, kind) not in (
                (socket.IPPROTO_IPV6, IPV6_RECVERR),
                (socket.IPPROTO_IP, IP_RECVERR),
            ) or len(data) < _EXTENDED_ERR.size:
                continue
            _errno, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
            words = _ICMP_WORDS.get((origin, icmp_type, code))
            if words is None:
                continue
            offender = _offender(data[_EXTENDED_ERR.size :])
            text = words if offender is None else f"{words} from {offender}"
            port = addr[1] if isinstance(addr, tuple) and len(addr) > 1 else 0
            host = addr[0].split("%", 1)[0] if isinstance(addr, tuple) else "?"
            out.append(IcmpError((host, port), text))
    return out


def _offender(sockaddr: bytes) -> str | None:
    """The address in the SO_EE_OFFENDER sockaddr after the extended error."""
    if len(sockaddr) >= 24 and int.from_bytes(sockaddr[:2], "little") == socket.AF_INET6:
        return str(IPv6Address(sockaddr[8:24]))
    if len(sockaddr) >= 8 and int.from_bytes(sockaddr[:2], "little") == socket.AF_INET:
        return str(IPv4Address(sockaddr[4:8]))
    return None


def send_quietly(sock: socket.socket, data: bytes, addr: Any, count: Callable[[str], None]) -> None:
    """Send without blocking; a full buffer or unreachable peer is a counted drop, not a crash."""
    try:
        sock.sendto(data, addr)
    except BlockingIOError:
        count("tx_would_block")
    except OSError as exc:
        count(tx_error(exc))


def tx_error(exc: OSError) -> str:
    """The drop reason of a failed send: ``tx_`` and the errno's name (``tx_enetunreach``)."""
    return f"tx_{errno.errorcode.get(exc.errno or 0, 'error').lower()}"


class Counters(dict[str, int]):
    """Counts by reason. Rare events call it; the data plane appends the reason of each packet
    to :attr:`pending` (a list append, a third of the call's cost) and the pump adds a whole
    batch at once with :meth:`settle` when the batch ends, before anyone can read the counts."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[str] = []

    def __call__(self, reason: str, n: int = 1) -> None:
        self[reason] = self.get(reason, 0) + n

    def settle(self) -> None:
        if self.pending:
            for reason, n in collections.Counter(self.pending).items():
                self[reason] = self.get(reason, 0) + n
            self.pending.clear()
