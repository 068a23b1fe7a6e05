"""Cluster announcements on the home link (mipnode/wire/cluster_announce.py): the layout against
a second encoder written here from the docstring's table, every field under the MAC, every
rejection, and the freshness rule that keeps a captured announcement from faking a live node."""

from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.cluster_announce import (
    FRESHNESS_MS,
    MAX_NODES,
    Announcement,
    Freshness,
    decode_announcement_untrusted,
    encode_announcement,
)
from mipnode.wire.errors import BadPacket

KEY = bytes(range(32))
HOLDS = (IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:1::2"))


def by_hand(node: bytes, holds: list[bytes], etcd_ok: bool, sent_ms: int, key: bytes) -> bytes:
    """The layout as the module docstring draws it, built without the module."""
    body = b"MHAC" + bytes([1, 1 if etcd_ok else 0, len(holds), len(node)])
    body += struct.pack("!Q", sent_ms) + node + b"".join(holds)
    return body + hmac.new(key, body, "sha256").digest()[:16]


def test_the_layout_is_the_documented_one() -> None:
    ours = encode_announcement(Announcement("ha-1", HOLDS, True), KEY, 1_796_450_000_123)
    theirs = by_hand(b"ha-1", [a.packed for a in HOLDS], True, 1_796_450_000_123, KEY)
    assert ours == theirs
    assert decode_announcement_untrusted(theirs, KEY) == (
        Announcement("ha-1", HOLDS, True),
        1_796_450_000_123,
    )


@given(
    node=st.text(min_size=1, max_size=16).filter(lambda n: 0 < len(n.encode()) <= 64),
    holds=st.lists(st.binary(min_size=16, max_size=16), max_size=64),
    etcd_ok=st.booleans(),
    sent_ms=st.integers(0, 2**64 - 1),
)
def test_round_trip(node: str, holds: list[bytes], etcd_ok: bool, sent_ms: int) -> None:
    ann = Announcement(node, tuple(IPv6Address(h) for h in holds), etcd_ok)
    assert decode_announcement_untrusted(encode_announcement(ann, KEY, sent_ms), KEY) == (
        ann,
        sent_ms,
    )


def test_every_octet_is_under_the_mac() -> None:
    data = encode_announcement(Announcement("ha-1", HOLDS, False), KEY, 5)
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] ^= 0x01
        with pytest.raises(BadPacket):
            decode_announcement_untrusted(bytes(changed), KEY)
    with pytest.raises(BadPacket) as bad:
        decode_announcement_untrusted(data, hashlib.sha256(b"another cluster").digest())
    assert bad.value.reason == "announcement_mac"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"MHAC" + bytes(20), "truncated"),
        (b"XXXX" + by_hand(b"a", [], True, 1, KEY)[4:], "not_an_announcement"),
        (b"MHAC\x02" + by_hand(b"a", [], True, 1, KEY)[5:], "announcement_version"),
        (by_hand(b"a", [], True, 1, KEY) + b"\x00", "announcement_length"),
        (by_hand(b"a" * 65, [], True, 1, KEY), "announcement_length"),
        (by_hand(b"\xff\xfe", [], True, 1, KEY), "announcement_node_id"),
    ],
)
def test_what_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as bad:
        decode_announcement_untrusted(data, KEY)
    assert bad.value.reason == reason


def test_a_short_key_or_an_oversize_announcement_is_never_sent() -> None:
    with pytest.raises(ValueError, match="key"):
        encode_announcement(Announcement("a", (), True), b"short", 1)
    with pytest.raises(ValueError, match="node id"):
        encode_announcement(Announcement("a" * 65, (), True), KEY, 1)
    with pytest.raises(ValueError, match="addresses"):
        encode_announcement(Announcement("a", HOLDS * 33, True), KEY, 1)


def test_freshness_refuses_replays_stale_and_future_announcements() -> None:
    f = Freshness()
    now = 1_000_000
    assert f.accept("ha-1", now - 100, now)
    assert not f.accept("ha-1", now - 100, now + 50)  # the same one again: a replay
    assert not f.accept("ha-1", now - 150, now + 50)  # older than the last believed
    assert f.accept("ha-1", now - 50, now + 50)
    assert not f.accept("ha-2", now - FRESHNESS_MS - 1, now)  # captured too long ago
    assert not f.accept("ha-2", now + FRESHNESS_MS + 1, now)  # from the future
    assert f.accept("ha-2", now, now)


def test_freshness_remembers_a_bounded_number_of_nodes() -> None:
    f = Freshness()
    for i in range(MAX_NODES + 10):
        assert f.accept(f"node-{i}", 1000, 1000)
    assert len(f._last) == MAX_NODES
    assert f.accept("node-0", 1000, 1000)  # forgotten first, believed again within the window
    assert not f.accept(f"node-{MAX_NODES + 9}", 1000, 1000)  # still remembered
