"""The announcement a home-agent cluster node sends on the home link every 100 ms (issue 14).

docs/internals.md, "Home agents in a cluster on etcd": a node that stops announcing is dead
after 500 ms, and its addresses move. Anyone on the link can send a UDP datagram with any
source, so an announcement is authenticated with the cluster key (HMAC-SHA-256, RFC 2104,
truncated to 16 octets as RFC 4868 §2.3 does for IPsec) and carries the sender's wall clock in
milliseconds: a receiver accepts only what is within FRESHNESS_MS of its own clock and newer
than the last it accepted from that node, so a captured announcement cannot keep a dead node
alive (nodes keep their clocks within FRESHNESS_MS / 2 of each other: NTP does far better).

Layout (network byte order)::

    magic "MHAC" | version 1 | flags (0x01 etcd_ok) | address count | node id length
    sent_ms (8) | node id (1..64 octets, UTF-8) | addresses (16 each, at most 64)
    | HMAC-SHA-256 over everything before it, first 16 octets

Pure: no clock (``sent_ms`` and ``now_ms`` are passed in).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from mipnode.wire.errors import BadPacket

MAGIC = b"MHAC"
VERSION = 1
FLAG_ETCD_OK = 0x01
MAC_LENGTH = 16
MAX_NODE_ID = 64
MAX_ADDRESSES = 64
MIN_KEY_LENGTH = 32
FRESHNESS_MS = 2000
MAX_NODES = 256  # what a receiver remembers; a cluster is a handful of nodes
_HEADER = struct.Struct("!4sBBBBQ")


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a node says on the home link: who it is, what it holds, whether it reaches etcd."""

    node: str
    holds: tuple[IPv6Address, ...]
    etcd_ok: bool


def encode_announcement(announcement: Announcement, key: bytes, sent_ms: int) -> bytes:
    node = announcement.node.encode()
    if not 1 <= len(node) <= MAX_NODE_ID:
        raise ValueError(f"a node id is 1-{MAX_NODE_ID} octets")
    if len(announcement.holds) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} addresses")
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"the cluster key is at least {MIN_KEY_LENGTH} octets")
    flags = FLAG_ETCD_OK if announcement.etcd_ok else 0
    body = (
        _HEADER.pack(MAGIC, VERSION, flags, len(announcement.holds), len(node), sent_ms)
        + node
        + b"".join(a.packed for a in announcement.holds)
    )
    return body + _mac(key, body)


def decode_announcement_untrusted(data: bytes, key: bytes) -> tuple[Announcement, int]:
    """The announcement in ``data`` and its ``sent_ms``, if the cluster key made it.

    Raises:
        BadPacket: ``truncated``, ``not_an_announcement``, ``announcement_version``,
            ``announcement_length``, ``announcement_mac`` or ``announcement_node_id``.
    """
    if len(data) < _HEADER.size + 1 + MAC_LENGTH:
        raise BadPacket("truncated", f"{len(data)} octets")
    magic, version, flags, count, node_length, sent_ms = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadPacket("not_an_announcement")
    if version != VERSION:
        raise BadPacket("announcement_version", str(version))
    if not 1 <= node_length <= MAX_NODE_ID or count > MAX_ADDRESSES:
        raise BadPacket("announcement_length", f"node id {node_length}, {count} addresses")
    end = _HEADER.size + node_length + 16 * count
    if len(data) != end + MAC_LENGTH:
        raise BadPacket("announcement_length", f"{len(data)} octets, {end + MAC_LENGTH} expected")
    # The MAC first: nothing of an unauthenticated datagram is looked at beyond its shape.
    if not hmac.compare_digest(_mac(key, data[:end]), data[end:]):
        raise BadPacket("announcement_mac")
    try:
        node = data[_HEADER.size : _HEADER.size + node_length].decode()
    except UnicodeDecodeError:
        raise BadPacket("announcement_node_id") from None
    start = _HEADER.size + node_length
    holds = tuple(IPv6Address(data[i : i + 16]) for i in range(start, end, 16))
    return Announcement(node, holds, bool(flags & FLAG_ETCD_OK)), sent_ms


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_LENGTH]


class Freshness:
    """Which authenticated announcements to believe: within FRESHNESS_MS of our clock, and newer
    than the last one believed from the same node (a replay is never newer). Bounded: at most
    MAX_NODES nodes remembered, the one heard longest ago forgotten first."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def accept(self, node: str, sent_ms: int, now_ms: int) -> bool:
        if abs(now_ms - sent_ms) > FRESHNESS_MS:
            return False
        last = self._last.get(node)
        if last is not None and sent_ms <= last:
            return False
        self._last.pop(node, None)
        self._last[node] = sent_ms  # most recent last: the first key is the oldest
        if len(self._last) > MAX_NODES:
            del self._last[next(iter(self._last))]
        return True
