"""A home agent's binding records in etcd, kept in step with its core (issue 14).

docs/internals.md, "Home agents in a cluster on etcd": each binding is one key under
``/mipnode/<cluster>/bindings/``, its value the core's ``replication_record`` as JSON. This
driver loads every record at start, then follows the prefix with a watch from the revision it
loaded (a broken watch is started again from the last revision seen + 1: etcd replays what was
missed; history etcd compacted away is read again whole), and hands each record to
``observe(record)`` (``HomeAgentCore.observe_replica``), so a
BU accepted by any node and replayed here is refused. It writes this node's records with a
compare-and-swap on the ``mod_revision`` it last saw for the key (:meth:`Replicator.write`):
a lost race is reported, never papered over.

A record that does not parse (a bug, or someone writing under our prefix) is counted under
``replica_malformed`` and skipped: it must not stop the stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from mipnode.drivers import pump
from mipnode.drivers.etcd import EtcdCompacted, EtcdError, Put, TxnResult

log = logging.getLogger("mipnode.cluster")
RETRY_S = 0.5  # between attempts while etcd does not answer


class Store(Protocol):
    """What the replicator needs of etcd (mipnode.drivers.etcd.Etcd, or the tests' fake)."""

    async def range(self, prefix: bytes) -> Any: ...
    async def txn(self, expect: dict[bytes, int], then: Any) -> TxnResult: ...
    def watch(self, prefix: bytes, start_revision: int) -> Any: ...


def bindings_prefix(cluster: str) -> bytes:
    return f"/mipnode/{cluster}/bindings/".encode()


class Replicator:
    def __init__(self, store: Store, cluster: str, observe: Callable[[object], bool]) -> None:
        self.store = store
        self.prefix = bindings_prefix(cluster)
        self._observe = observe
        self.revision = 0  # everything up to here has been observed
        self.mod_revisions: dict[bytes, int] = {}  # key -> its mod_revision as last seen
        self.loaded = trio.Event()
        self.counters: dict[str, int] = {
            "replica_observed": 0,
            "replica_raised": 0,
            "replica_malformed": 0,
            "replica_deleted": 0,
            "watch_restarts": 0,
            "reloads": 0,
            "writes": 0,
            "writes_lost_race": 0,
        }
        self.error: str | None = None  # why etcd is not followed right now

    def key(self, home_address: str) -> bytes:
        return self.prefix + home_address.encode()

    async def run(self) -> None:
        """Load, then follow, forever; etcd errors are retried (``error`` says why)."""
        await self._load()
        self.loaded.set()
        while True:
            try:
                async with self.store.watch(self.prefix, self.revision + 1) as watch:
                    while True:
                        events, seen = await watch.next()
                        for event in events:
                            if event.deleted:
                                self.mod_revisions.pop(event.kv.key, None)
                                self.counters["replica_deleted"] += 1
                            else:
                                self._apply(event.kv.key, event.kv.value, event.kv.mod_revision)
                        self.revision = max(self.revision, seen)
                        self.error = None
            except EtcdCompacted as exc:
                # What changed since self.revision is gone from etcd's history: read it all
                # again (replay state only ever rises, so observing twice is harmless).
                self.counters["reloads"] += 1
                log.warning("binding records: %s; reading them all again", exc)
                await self._load()
            except EtcdError as exc:
                self.counters["watch_restarts"] += 1
                await self._failed(exc)

    async def _load(self) -> None:
        """Every record under the prefix, and the revision they were read at."""
        while True:
            try:
                kvs, revision = await self.store.range(self.prefix)
            except EtcdError as exc:
                await self._failed(exc)
                continue
            present = {kv.key for kv in kvs}
            for key in [k for k in self.mod_revisions if k not in present]:
                del self.mod_revisions[key]  # deleted while we were not looking
            for kv in kvs:
                self._apply(kv.key, kv.value, kv.mod_revision)
            self.revision = revision
            self.error = None
            return

    async def write(self, home_address: str, record: object) -> bool:
        """Write this node's record for ``home_address`` if nobody changed it since we last
        saw it; False when another node did (the watch brings its record)."""
        key = self.key(home_address)
        value = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        result = await self.store.txn({key: self.mod_revisions.get(key, 0)}, [Put(key, value)])
        if not result.succeeded:
            self.counters["writes_lost_race"] += 1
            return False
        self.counters["writes"] += 1
        self.mod_revisions[key] = result.revision
        return True

    def _apply(self, key: bytes, value: bytes, mod_revision: int) -> None:
        self.mod_revisions[key] = max(mod_revision, self.mod_revisions.get(key, 0))
        try:
            record = json.loads(value)
            raised = self._observe(record)
        except ValueError:  # json's, and observe_replica's for a malformed record
            self.counters["replica_malformed"] += 1
            return
        self.counters["replica_observed"] += 1
        if raised:
            self.counters["replica_raised"] += 1

    async def _failed(self, exc: EtcdError) -> None:
        if self.error != str(exc):
            log.warning("binding records: %s; retrying", exc)
        self.error = str(exc)
        await pump.sleep(RETRY_S)
