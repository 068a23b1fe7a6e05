"""TUN devices: opened with TUNSETIFF ourselves (pyroute2 cannot hand us the packet fd).

A non-persistent TUN vanishes with its last fd, so a crashed daemon leaves nothing behind.

Offloads (probed at open). The device is opened with ``IFF_VNET_HDR``: every packet read or
written carries the 10-octet virtio-net header in front (mipnode/wire/offload.py). Then
``TUNSETOFFLOAD`` tells the kernel what we can take: checksum offload (``TUN_F_CSUM``: a TCP or
UDP packet may arrive with only its pseudo-header sum, "checksum partial"), TCP segmentation
(``TUN_F_TSO4``/``TSO6``/``TSO_ECN``: a read may be a TCP super-packet of up to 64 KB, one
system call instead of ~46) and, on Linux ≥ 6.2, UDP segmentation (``TUN_F_USO4``/``USO6``).
A kernel that refuses a set answers EINVAL (``tun_set_offload`` rejects any bit it does not
know), and we try the next smaller set: all of them, without USO, TSO without ECN, checksum
only, none. A kernel that refuses ``IFF_VNET_HDR`` itself gets the plain device. One log line
says what was refused; ``status --json`` shows what is on (``offloads.tun``).

Reading (:meth:`Tun.expand`): a super-packet is cut into ordinary packets and every
checksum-partial packet is completed, in Python, before any path sees it (``segment_untrusted``
with full checksums): whatever leaves the node is a packet a kernel would have sent. Writing
(:meth:`Tun.write`, :meth:`Tun.flush`): packets are queued during a batch and, at its end, runs
of in-order segments of one TCP connection are merged into one super-packet (``coalesce_tcp``,
which checks every merged segment's checksum first) and written with one ``writev``; the
kernel then forwards or delivers the run as one packet, as its own GRO would have made it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

from mipnode.wire.errors import BadPacket
from mipnode.wire.offload import (
    VNET_HEADER_LENGTH,
    VNET_NONE,
    coalesce_tcp,
    complete_read_untrusted,
    parse_vnet_untrusted,
    segment_untrusted,
)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

# linux/if_tun.h
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
FEATURE_NAMES = {
    TUN_F_CSUM: "csum",
    TUN_F_TSO4: "tso4",
    TUN_F_TSO6: "tso6",
    TUN_F_TSO_ECN: "tso_ecn",
    TUN_F_USO4: "uso4",
    TUN_F_USO6: "uso6",
}
TSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
ALL_OFFLOADS = TSO | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6
# What is tried after a refusal, each masked with what was asked for.
_FALLBACKS = (TSO | TUN_F_TSO_ECN, TSO, TUN_F_CSUM, 0)
# One read: a 64 KB IPv6 payload, its 40-octet header and the virtio-net header.
VNET_READ_SIZE = VNET_HEADER_LENGTH + 0xFFFF + 40
PLAIN_READ_SIZE = 0xFFFF

log = logging.getLogger("mipnode.tun")


class TunError(Exception):
    pass


def feature_names(features: int) -> list[str]:
    return [name for bit, name in FEATURE_NAMES.items() if features & bit]


class Tun:
    """One open TUN device: its fd, what offloads it has, and the write queue of a batch.

    ``count`` is the daemon's drop counter (reasons ``tun_<BadPacket reason>`` for a read the
    kernel should never have produced, ``tun_write_failed``)."""

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        vnet: bool,
        features: int,
        count: Callable[..., None],
        coalesce: bool = True,
    ) -> None:
        self.fd = fd
        self.name = name
        self.vnet = vnet
        self.features = features
        self.coalesce = vnet and coalesce
        self.read_size = VNET_READ_SIZE if vnet else PLAIN_READ_SIZE
        self.refused: list[str] = []
        self._count = count
        self._queue: list[bytes] = []
        self._unchecked = False  # the queue holds a packet not written checked=True
        self.stats = {
            "gso_reads": 0,  # reads that carried a super-packet
            "gso_segments": 0,  # the packets they were cut into
            "checksums_completed": 0,  # checksum-partial packets finished here
            "writes": 0,  # write system calls
            "packets_written": 0,  # the packets they carried (more than writes: coalesced)
        }

    def expand(self, data: bytes) -> list[bytes]:
        """The packets of one vnet read that is not a plain packet (a GSO type or partial
        checksum): segmented and checksummed; ``[]`` (counted) when the header does not fit
        the packet."""
        try:
            if data[1:2] == b"\x00":  # no GSO: a checksum-partial packet
                packet = complete_read_untrusted(data)
                self.stats["checksums_completed"] += 1
                return [packet]
            header, view = parse_vnet_untrusted(data)
            packets = segment_untrusted(header, view)
        except BadPacket as exc:
            self._count(f"tun_{exc.reason}")
            return []
        self.stats["gso_reads"] += 1
        self.stats["gso_segments"] += len(packets)
        return packets

    def write(self, packet: bytes, checked: bool = False) -> None:
        """Queue ``packet`` for the TUN; it is written by the next :meth:`flush`. ``checked``:
        opened by an AEAD from the peer whose own stack wrote it, so no octet changed since its
        checksums were computed, and merging it skips the per-segment check
        (``coalesce_tcp(checked=...)``) as long as the whole flush holds only such packets."""
        self._queue.append(packet)
        if not checked:
            self._unchecked = True

    def flush(self) -> None:
        """Write what the batch queued: merged into super-packets where the device takes them."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        checked, self._unchecked = not self._unchecked, False
        fd, failed = self.fd, 0
        if not self.vnet:
            for packet in queue:
                try:
                    os.write(fd, packet)
                except OSError:
                    failed += 1  # a full device queue, a device going away: this one is lost
            writes = len(queue)
        else:
            framed: Iterable[tuple[bytes, bytes]] = (
                coalesce_tcp(queue, checked=checked)
                if self.coalesce and len(queue) > 1
                else zip(repeat(VNET_NONE), queue)
            )
            writev, writes = os.writev, 0
            for frame in framed:
                writes += 1
                try:
                    writev(fd, frame)
                except OSError:
                    failed += 1
        if failed:
            self._count("tun_write_failed", failed)
        self.stats["writes"] += writes
        self.stats["packets_written"] += len(queue)

    def status(self) -> dict[str, Any]:
        """What ``status --json`` shows under ``offloads.tun``."""
        return {
            "vnet_header": self.vnet,
            "features": feature_names(self.features),
            "refused": self.refused,
            "coalesce": self.coalesce,
            **self.stats,
        }

    def close(self) -> None:
        os.close(self.fd)


def open_tun(
    name: str,
    *,
    offloads: int = ALL_OFFLOADS,
    count: Callable[..., None] = lambda reason, n=1: None,
    coalesce: bool = True,
) -> Tun:
    """Create TUN ``name`` in the current network namespace, non-blocking, with as many of
    ``offloads`` (TUN_F_* bits; 0 for a plain device without the virtio-net header) as the
    kernel accepts."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError("/dev/net/tun is missing (load the tun module or pass the device)") from None
    except PermissionError:
        raise TunError("cannot open /dev/net/tun: permission denied (need CAP_NET_ADMIN)") from None
    flags = IFF_TUN | IFF_NO_PI
    refused: list[str] = []
    vnet = False
    try:
        if offloads:
            try:
                fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags | IFF_VNET_HDR))
                vnet = True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                refused.append("vnet_header")
        if not vnet:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EPERM:
            raise TunError(f"cannot create TUN {name}: need CAP_NET_ADMIN") from None
        if exc.errno == errno.EBUSY:
            raise TunError(f"TUN {name} is in use by another process") from None
        raise TunError(f"cannot create TUN {name}: {exc.strerror}") from None
    features = _set_offload(fd, offloads) if vnet else 0
    refused += feature_names(offloads & ~features)
    if refused:
        log.warning("TUN %s: offloads refused by the kernel: %s", name, ", ".join(refused))
    os.set_blocking(fd, False)
    tun = Tun(fd, name, vnet=vnet, features=features, count=count, coalesce=coalesce)
    tun.refused = refused
    return tun


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH", name.encode(), flags)


def _set_offload(fd: int, wanted: int) -> int:
    """The largest of ``wanted`` and its fallbacks that TUNSETOFFLOAD accepts."""
    for features in (wanted, *(wanted & f for f in _FALLBACKS)):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, features)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                return 0
            continue
        return features
    return 0


def open_daemon_tun(name: str, offloads: bool, count: Callable[..., None]) -> Tun:
    """A daemon's TUN: every offload the kernel takes, or (``tun_offloads = false``) none."""
    return open_tun(name, offloads=ALL_OFFLOADS if offloads else 0, count=count)
