"""An in-memory etcd with the interface of mipnode.drivers.etcd.Etcd, for tests of the cluster
logic on trio's virtual clock. tests/cluster/test_etcd_contract.py runs the same contract
against it and against a real three-member etcd, so it cannot drift from what etcd does.

What it models: one global revision that every write (and every lease expiry that deletes
keys) advances, mod/create revisions and versions per key, transactions that compare
mod_revision (0: absent), leases that expire on ``trio.current_time()`` and take their keys
with them, and watches that replay history from any revision and then follow. ``available``
set to False makes every call raise EtcdUnavailable, as a lost quorum does.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from mipnode.drivers.etcd import (
    Delete,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    MemberStatus,
    Put,
    TxnResult,
    prefix_end,
)

MIN_TTL_S = 1  # what the test cluster raises shorter leases to (1.5 election timeouts)


class MemoryEtcd:
    def __init__(self) -> None:
        self.revision = 1  # a fresh etcd starts at revision 1
        self.kvs: dict[bytes, KeyValue] = {}
        self.history: list[tuple[int, Event]] = []
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, deadline)
        self._ids = itertools.count(0x1000)
        self._changed = trio.Event()
        self.generation = 0  # break_watches() ends every watch open before it
        self.compacted = 0  # history before this revision is gone
        self.available = True
        self.endpoints = ["memory://"]

    async def compact(self, revision: int) -> None:
        self._check()
        self.compacted = max(self.compacted, revision)
        self.history = [(r, e) for r, e in self.history if r >= self.compacted]

    def break_watches(self) -> None:
        """Every open watch raises EtcdUnavailable at its next read, as a dropped stream."""
        self.generation += 1
        self._notify()

    async def aclose(self) -> None:
        self._changed.set()

    def _check(self) -> None:
        if not self.available:
            raise EtcdUnavailable("no etcd endpoint answered (memory: unavailable)")
        self._expire()

    def _expire(self) -> None:
        now = trio.current_time()
        for lease, (_, deadline) in list(self.leases.items()):
            if deadline <= now:
                del self.leases[lease]
                doomed = [k for k, kv in self.kvs.items() if kv.lease == lease]
                if doomed:
                    self.revision += 1
                    for key in doomed:
                        self._delete_at(key)
                    self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _put_at(self, key: bytes, value: bytes, lease: int) -> None:
        old = self.kvs.get(key)
        kv = KeyValue(
            key,
            value,
            old.create_revision if old else self.revision,
            self.revision,
            (old.version if old else 0) + 1,
            lease,
        )
        self.kvs[key] = kv
        self.history.append((self.revision, Event(False, kv)))

    def _delete_at(self, key: bytes) -> bool:
        if self.kvs.pop(key, None) is None:
            return False
        self.history.append(
            (self.revision, Event(True, KeyValue(key, b"", 0, self.revision, 0, 0)))
        )
        return True

    async def get(self, key: bytes) -> KeyValue | None:
        self._check()
        return self.kvs.get(key)

    async def range(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        self._check()
        end = prefix_end(prefix)
        found = [kv for k, kv in sorted(self.kvs.items()) if prefix <= k < end]
        return found, self.revision

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        self._check()
        if lease and lease not in self.leases:
            raise EtcdError("/v3/kv/put: etcdserver: requested lease not found")
        self.revision += 1
        self._put_at(key, value, lease)
        self._notify()
        return self.revision

    async def delete(self, key: bytes) -> int:
        self._check()
        if key in self.kvs:
            self.revision += 1
            self._delete_at(key)
            self._notify()
        return self.revision

    async def txn(self, expect: dict[bytes, int], then: Sequence[Put | Delete]) -> TxnResult:
        self._check()
        ok = all(
            (self.kvs[k].mod_revision if k in self.kvs else 0) == rev for k, rev in expect.items()
        )
        if not ok:
            return TxnResult(False, self.revision, tuple(self.kvs.get(k) for k in expect))
        for op in then:
            if isinstance(op, Put) and op.lease and op.lease not in self.leases:
                raise EtcdError("/v3/kv/txn: etcdserver: requested lease not found")
        changes = [op for op in then if isinstance(op, Put) or op.key in self.kvs]
        if changes:
            self.revision += 1
            for op in changes:
                if isinstance(op, Put):
                    self._put_at(op.key, op.value, op.lease)
                else:
                    self._delete_at(op.key)
            self._notify()
        return TxnResult(True, self.revision, ())

    async def grant(self, ttl_s: int) -> tuple[int, int]:
        self._check()
        ttl = max(ttl_s, MIN_TTL_S)
        lease = next(self._ids)
        self.leases[lease] = (ttl, trio.current_time() + ttl)
        return lease, ttl

    async def keepalive(self, lease: int) -> int:
        self._check()
        if lease not in self.leases:
            return 0
        ttl, _ = self.leases[lease]
        self.leases[lease] = (ttl, trio.current_time() + ttl)
        return ttl

    async def revoke(self, lease: int) -> None:
        self._check()
        if lease not in self.leases:
            raise EtcdError("/v3/lease/revoke: etcdserver: requested lease not found")
        self.leases[lease] = (0, trio.current_time())
        self._expire()

    async def status(self) -> MemberStatus:
        self._check()
        return MemberStatus("memory://", 1, 1, self.revision, 2, "memory")

    @asynccontextmanager
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[MemoryWatch]:
        self._check()
        yield MemoryWatch(self, prefix, start_revision)


class MemoryWatch:
    """What Watch.next gives, computed on demand: first the empty "created" batch, then one
    batch per revision that touched the prefix."""

    def __init__(self, store: MemoryEtcd, prefix: bytes, start_revision: int) -> None:
        self.store, self.prefix, self.end = store, prefix, prefix_end(prefix)
        self.seen = start_revision - 1
        self.created = False
        self.generation = store.generation

    async def next(self) -> tuple[list[Event], int]:
        store = self.store
        if not self.created:
            self.created = True
            return [], self.seen  # as etcd's gateway: nothing vouched for beyond the start
        while True:
            store._check()
            if store.generation != self.generation:
                raise EtcdUnavailable("the watch on memory:// broke")
            if self.seen + 1 < store.compacted:
                raise EtcdCompacted(
                    f"/v3/watch: history compacted up to revision {store.compacted}"
                )
            changed = store._changed
            batch = [
                (revision, event)
                for revision, event in store.history
                if revision > self.seen and self.prefix <= event.kv.key < self.end
            ]
            if batch:
                first = batch[0][0]
                events = [event for revision, event in batch if revision == first]
                self.seen = first
                return events, first
            self.seen = max(self.seen, store.revision)
            await changed.wait()
