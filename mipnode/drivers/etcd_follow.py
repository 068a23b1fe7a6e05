"""Follow one etcd key prefix: read it whole, then watch it from the revision read (issue 14).

A broken watch is started again from the last revision seen + 1 (etcd replays what was
missed); history etcd compacted away in the meantime (:class:`EtcdCompacted`) means reading
the prefix whole again, and a key that disappeared in between is reported deleted. Every
change reaches ``on_put(kv)`` or ``on_delete(key, revision)``, in etcd's order; a callback that
raises what a parser raises on a value it cannot read (``ValueError``, ``TypeError``,
``KeyError``, ``RecursionError``) is counted under ``malformed`` and the stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from mipnode.drivers import pump
from mipnode.drivers.etcd import EtcdCompacted, EtcdError, KeyValue, TxnResult

log = logging.getLogger("mipnode.cluster")
RETRY_S = 0.5  # between attempts while etcd does not answer


class Store(Protocol):
    """What a follower and a writer need of etcd (drivers/etcd.Etcd, or the tests' fake)."""

    async def range(self, prefix: bytes) -> Any: ...
    async def txn(self, expect: dict[bytes, int], then: Any) -> TxnResult: ...
    def watch(self, prefix: bytes, start_revision: int) -> Any: ...


class Follower:
    def __init__(
        self,
        store: Store,
        prefix: bytes,
        on_put: Callable[[KeyValue], None],
        on_delete: Callable[[bytes, int], None],
    ) -> None:
        self.store = store
        self.prefix = prefix
        self._on_put, self._on_delete = on_put, on_delete
        self.revision = 0  # everything up to here has been handed over
        self.known: dict[bytes, int] = {}  # key -> its mod_revision as last seen
        self.loaded = trio.Event()
        self.counters: dict[str, int] = {"malformed": 0, "watch_restarts": 0, "reloads": 0}
        self.error: str | None = None  # why etcd is not followed right now

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
                                self._deleted(event.kv.key, event.kv.mod_revision)
                            else:
                                self._put(event.kv)
                        self.revision = max(self.revision, seen)
                        self.error = None
            except EtcdCompacted as exc:
                # What changed since self.revision is gone from etcd's history: read it all.
                self.counters["reloads"] += 1
                log.warning("%s: %s; reading it all again", self.prefix.decode(), exc)
                await self._load()
            except EtcdError as exc:
                self.counters["watch_restarts"] += 1
                await self._failed(exc)

    async def _load(self) -> None:
        while True:
            try:
                kvs, revision = await self.store.range(self.prefix)
            except EtcdError as exc:
                await self._failed(exc)
                continue
            present = {kv.key for kv in kvs}
            for key in [k for k in self.known if k not in present]:
                self._deleted(key, revision)  # deleted while we were not looking
            for kv in kvs:
                self._put(kv)
            self.revision = revision
            self.error = None
            return

    def _put(self, kv: KeyValue) -> None:
        self.known[kv.key] = max(kv.mod_revision, self.known.get(kv.key, 0))
        try:
            self._on_put(kv)
        except (ValueError, TypeError, KeyError, RecursionError):
            # Whatever a value that does not parse makes a parser raise: every node follows
            # the prefix, so one bad record must not stop them all (and again at each start).
            self.counters["malformed"] += 1

    def _deleted(self, key: bytes, revision: int) -> None:
        self.known.pop(key, None)
        self._on_delete(key, revision)

    async def _failed(self, exc: EtcdError) -> None:
        if self.error != str(exc):
            log.warning("%s: %s; retrying", self.prefix.decode(), exc)
        self.error = str(exc)
        await pump.sleep(RETRY_S)
