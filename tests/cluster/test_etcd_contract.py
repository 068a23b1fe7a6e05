"""One contract, two stores: a real three-member etcd cluster (started here, on loopback) through
mipnode.drivers.etcd, and the in-memory fake the cluster logic's tests use (memory_etcd.py).
Whatever the fake gets wrong about etcd fails here first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from mipnode.drivers.etcd import (
    Delete,
    Etcd,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    Event,
    Put,
)
from mipnode.lab.etcd_cluster import EtcdCluster, free_ports, make_tls, start_cluster

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


async def test_put_get_and_an_absent_key(store: Any, prefix: bytes) -> None:
    key = prefix + b"binding/\x00\xff"  # keys and values are octets, not text
    assert await store.get(key) is None
    revision = await store.put(key, b"\x01\x02value")
    kv = await store.get(key)
    assert kv is not None and kv.value == b"\x01\x02value"
    assert kv.mod_revision == kv.create_revision == revision and kv.version == 1
    again = await store.put(key, b"v2")
    kv = await store.get(key)
    assert kv is not None and (kv.value, kv.version) == (b"v2", 2)
    assert kv.mod_revision == again > revision and kv.create_revision == revision


async def test_range_is_by_prefix_in_key_order(store: Any, prefix: bytes) -> None:
    for name in (b"b", b"a", b"c/d"):
        await store.put(prefix + name, name)
    await store.put(prefix[:-1] + b"x", b"outside")  # shares all but the last octet
    found, revision = await store.range(prefix)
    assert [kv.key for kv in found] == [prefix + b"a", prefix + b"b", prefix + b"c/d"]
    assert revision >= max(kv.mod_revision for kv in found)


async def test_create_if_absent_wins_once(store: Any, prefix: bytes) -> None:
    key = prefix + b"owner"
    first = await store.txn({key: 0}, [Put(key, b"node-1")])
    second = await store.txn({key: 0}, [Put(key, b"node-2")])
    assert first.succeeded and not second.succeeded
    (current,) = second.current
    assert current is not None and current.value == b"node-1"
    assert current.mod_revision == first.revision


async def test_a_stale_revision_changes_nothing_and_shows_what_is_there(
    store: Any, prefix: bytes
) -> None:
    key = prefix + b"seq"
    created = await store.put(key, b"1")
    moved = await store.txn({key: created}, [Put(key, b"2")])
    assert moved.succeeded and moved.revision > created
    stale = await store.txn({key: created}, [Put(key, b"3")])
    assert not stale.succeeded and stale.revision == moved.revision
    assert [kv.value if kv else None for kv in stale.current] == [b"2"]
    kv = await store.get(key)
    assert kv is not None and kv.value == b"2"


async def test_a_transaction_over_several_keys_is_all_or_nothing(store: Any, prefix: bytes) -> None:
    a, b, c = prefix + b"a", prefix + b"b", prefix + b"c"
    ra = await store.put(a, b"a1")
    rb = await store.put(b, b"b1")
    await store.put(b, b"b2")  # b moved on: the next transaction's view of it is stale
    failed = await store.txn({a: ra, b: rb}, [Put(a, b"a2"), Put(c, b"c1"), Delete(b)])
    assert not failed.succeeded
    assert [kv.value if kv else None for kv in failed.current] == [b"a1", b"b2"]
    assert await store.get(c) is None
    current_b = await store.get(b)
    assert current_b is not None
    done = await store.txn(
        {a: ra, b: current_b.mod_revision, c: 0}, [Put(a, b"a2"), Put(c, b"c1"), Delete(b)]
    )
    assert done.succeeded
    found, _ = await store.range(prefix)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in found] == [
        (a, b"a2", done.revision),
        (c, b"c1", done.revision),
    ]


async def test_delete(store: Any, prefix: bytes) -> None:
    key = prefix + b"gone"
    put = await store.put(key, b"x")
    deleted = await store.delete(key)
    assert deleted > put and await store.get(key) is None
    assert await store.delete(key) == deleted  # nothing to delete: no new revision


async def test_leases_take_their_keys_when_revoked_or_expired(store: Any, prefix: bytes) -> None:
    revoked, ttl = await store.grant(5)
    assert ttl >= 5
    await store.put(prefix + b"r", b"x", lease=revoked)
    assert (await store.get(prefix + b"r")).lease == revoked
    await store.revoke(revoked)
    assert await store.get(prefix + b"r") is None
    assert await store.keepalive(revoked) == 0
    short, ttl = await store.grant(1)
    await store.put(prefix + b"s", b"x", lease=short)
    await store.put(prefix + b"kept", b"x")
    await trio.sleep(ttl + 1.5)  # etcd checks expiry every 500 ms
    assert await store.get(prefix + b"s") is None
    assert await store.get(prefix + b"kept") is not None


async def test_keepalive_extends_a_lease(store: Any, prefix: bytes) -> None:
    lease, ttl = await store.grant(2)
    await store.put(prefix + b"k", b"x", lease=lease)
    for _ in range(3):
        await trio.sleep(ttl / 2)
        assert await store.keepalive(lease) == ttl
    assert await store.get(prefix + b"k") is not None  # 1.5 TTLs later, still there


async def test_a_put_on_an_unknown_lease_is_refused(store: Any, prefix: bytes) -> None:
    with pytest.raises(EtcdError, match="lease not found"):
        await store.put(prefix + b"x", b"x", lease=0x7777_0000_0001)
    assert await store.get(prefix + b"x") is None


async def test_a_watch_replays_history_then_follows(store: Any, prefix: bytes) -> None:
    """A node that reconnects from an old revision misses nothing (the takeover relies on
    it): puts, a transaction and a delete, replayed in order, then the live changes."""
    first = await store.put(prefix + b"a", b"1")
    await store.put(prefix + b"b", b"1")
    await store.put(b"/elsewhere/" + prefix, b"not watched")
    await store.txn({prefix + b"a": first}, [Put(prefix + b"a", b"2"), Delete(prefix + b"b")])
    events: list[tuple[bool, bytes, bytes]] = []
    seen = 0
    with trio.fail_after(10):
        async with store.watch(prefix, first) as watch:
            batch, _ = await watch.next()
            assert batch == []  # the watch exists
            while len(events) < 4:
                batch, seen = await watch.next()
                events.extend(flat(batch))
            live = await store.put(prefix + b"c", b"3")
            while len(events) < 5:
                batch, seen = await watch.next()
                events.extend(flat(batch))
    assert events == [
        (False, prefix + b"a", b"1"),
        (False, prefix + b"b", b"1"),
        (False, prefix + b"a", b"2"),
        (True, prefix + b"b", b""),
        (False, prefix + b"c", b"3"),
    ]
    assert seen == live


def flat(batch: list[Event]) -> list[tuple[bool, bytes, bytes]]:
    return [(e.deleted, e.kv.key, e.kv.value) for e in batch]


@needs_etcd
async def test_a_dead_endpoint_is_skipped_and_none_answering_is_one_error(
    cluster: EtcdCluster,
) -> None:
    (dead,) = free_ports(1)
    client = Etcd([f"http://127.0.0.1:{dead}", *cluster.endpoints], timeout_s=1)
    try:
        assert (await client.status()).version.startswith("3.")
    finally:
        await client.aclose()
    nobody = Etcd([f"http://127.0.0.1:{dead}"], timeout_s=1)
    try:
        with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await nobody.get(b"x")
    finally:
        await nobody.aclose()


@needs_etcd
async def test_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    """etcd's client port over HTTPS, client certificates required: the client's ca_file,
    cert_file and key_file options (what [ha.cluster] will pass) get through; without a
    certificate the member refuses the handshake."""
    tls = make_tls(tmp_path / "tls")
    secure = start_cluster(tmp_path / "etcd", 1, tls=tls)
    try:
        client = Etcd(
            secure.endpoints,
            ca_file=str(tls.ca),
            cert_file=str(tls.client_cert),
            key_file=str(tls.client_key),
        )
        try:
            await client.put(b"/tls/k", b"v")
            kv = await client.get(b"/tls/k")
            assert kv is not None and kv.value == b"v"
        finally:
            await client.aclose()
        anonymous = Etcd(secure.endpoints, ca_file=str(tls.ca), timeout_s=2)
        try:
            with pytest.raises(EtcdUnavailable):
                await anonymous.get(b"/tls/k")
        finally:
            await anonymous.aclose()
    finally:
        secure.close()


@needs_etcd
async def test_with_etcd_authentication(tmp_path: Path) -> None:
    """etcd with auth on: the client's username and password get a token that every later
    call carries, and a new one when etcd has forgotten it; a wrong password is refused in
    etcd's words, and no token, no access."""
    guarded = start_cluster(tmp_path / "etcd", 1, extra_args=("--auth-token-ttl", "1"))
    admin = Etcd(guarded.endpoints)
    try:
        for path, body in (
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/add", {"name": "root", "password": "root-secret"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/enable", {}),
        ):
            await admin._call(path, body)
        client = Etcd(guarded.endpoints, username="root", password="root-secret")
        try:
            await client.authenticate()
            await client.put(b"/auth/k", b"v")
            assert (await client.get(b"/auth/k")) is not None
            await trio.sleep(2.5)  # etcd forgets the token after 1 s unused (--auth-token-ttl)
            assert (await client.get(b"/auth/k")) is not None  # a new token, asked for once
        finally:
            await client.aclose()
        wrong = Etcd(guarded.endpoints, username="root", password="guess")
        try:
            with pytest.raises(EtcdError, match="authentication failed"):
                await wrong.authenticate()
        finally:
            await wrong.aclose()
        with pytest.raises(EtcdError, match="user name is empty"):
            await admin.get(b"/auth/k")  # no token
    finally:
        await admin.aclose()
        guarded.close()


async def test_a_request_sent_without_an_answer_is_never_sent_to_another_endpoint() -> None:
    """A write that reached a member and got no answer may have happened: the client says the
    outcome is unknown instead of writing it again elsewhere (a CAS that went through would
    then read as lost). A member that refused the connection is skipped as before."""
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    second = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await second.bind(("127.0.0.1", 0))
    second.listen(8)
    accepted: list[object] = []

    async def swallow(listener: Any) -> None:
        while True:
            conn, _ = await listener.accept()
            accepted.append(conn)  # read nothing, answer nothing, keep it open

    client = Etcd(
        [f"http://127.0.0.1:{s.getsockname()[1]}" for s in (silent, second)], timeout_s=0.5
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(swallow, silent)
            nursery.start_soon(swallow, second)
            with pytest.raises(EtcdUnavailable, match="outcome unknown"):
                await client.put(b"k", b"v")
            assert len(accepted) == 1  # only the first member ever saw it
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
        for s in (silent, second, *accepted):
            s.close()  # type: ignore[attr-defined]


async def test_a_watch_from_compacted_history_says_so(store: Any, prefix: bytes) -> None:
    """History before a compaction is gone: a watch asking for it gets EtcdCompacted (the
    caller reads the whole range again), not a silent gap."""
    first = await store.put(prefix + b"a", b"1")
    await store.put(prefix + b"a", b"2")
    latest = await store.put(prefix + b"a", b"3")
    await store.compact(latest)
    with trio.fail_after(10), pytest.raises(EtcdCompacted, match="compacted"):
        async with store.watch(prefix, first) as watch:
            while True:
                await watch.next()
