"""A home agent's binding records in etcd, kept in step with its core (issue 14).

docs/internals.md, "Home agents in a cluster on etcd": each binding is one key under
``/mipnode/<cluster>/bindings/``, its value the core's ``replication_record`` as JSON (plus the
node that wrote it, ``owner``). A :class:`~mipnode.drivers.etcd_follow.Follower` loads every
record at start and follows the prefix; each record goes to ``observe(record)``
(``HomeAgentCore.observe_replica``), so a BU accepted by any node and replayed here is refused,
and is kept (:attr:`Replicator.records`) for the day this node takes the home-agent address
over. This node's records are written with a compare-and-swap on the ``mod_revision`` it last
saw for each key (:meth:`Replicator.write_many`): a lost race is reported, never papered over.

A record that does not parse (a bug, or someone writing under our prefix) is counted under
``replica_malformed`` and skipped: it must not stop the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from mipnode.drivers.etcd import Delete, KeyValue, Put
from mipnode.drivers.etcd_follow import Follower, Store

TXN_KEYS = 64  # records per transaction (etcd refuses more than --max-txn-ops, default 128)


def bindings_prefix(cluster: str) -> bytes:
    return f"/mipnode/{cluster}/bindings/".encode()


class Replicator:
    def __init__(self, store: Store, cluster: str, observe: Callable[[object], bool]) -> None:
        self.store = store
        self.prefix = bindings_prefix(cluster)
        self._observe = observe
        # home address -> its record in etcd, as etcd holds it (JSON: a third of the memory of
        # the parsed record; parsed again only at a takeover or for `mipnode bindings`)
        self.records: dict[str, bytes] = {}
        self.follower = Follower(store, self.prefix, self._apply, self._deleted)
        self.loaded = self.follower.loaded
        self._counters: dict[str, int] = {
            "replica_observed": 0,
            "replica_raised": 0,
            "replica_deleted": 0,
            "writes": 0,
            "writes_lost_race": 0,
            "writes_fenced": 0,
        }
        self.fenced = False  # the last write_many found its fence moved

    @property
    def counters(self) -> dict[str, int]:
        f = self.follower.counters
        return {
            **self._counters,
            "replica_malformed": f["malformed"],
            "watch_restarts": f["watch_restarts"],
            "reloads": f["reloads"],
        }

    @property
    def revision(self) -> int:
        return self.follower.revision

    @property
    def error(self) -> str | None:
        return self.follower.error

    def key(self, home_address: str) -> bytes:
        return self.prefix + home_address.encode()

    async def run(self) -> None:
        await self.follower.run()

    async def write(self, home_address: str, record: object) -> bool:
        """Write one record (None: delete it) if nobody changed it since we last saw it;
        False when another node did (the watch brings its record)."""
        return not await self.write_many({home_address: record})

    async def write_many(
        self, records: Mapping[str, object], fence: tuple[bytes, int] | None = None
    ) -> list[str]:
        """Write each record (None: delete the key) with a compare-and-swap on the
        ``mod_revision`` last seen, up to TXN_KEYS in one transaction; the home addresses
        whose compare-and-swap failed (their expected revision is now etcd's: writing them
        again asks the right question). A transaction that loses a race is retried key by key,
        so one lost key costs only itself.

        ``fence`` (key, mod_revision): every transaction also requires that key unchanged --
        the address record of the claim this node holds by. A node cut off and back that
        still believes it holds the address can then never overwrite the records of the node
        that took it over: its transactions fail, :attr:`fenced` says why, and nothing is
        written."""
        lost: list[str] = []
        self.fenced = False
        items = list(records.items())
        for start in range(0, len(items), TXN_KEYS):
            chunk = dict(items[start : start + TXN_KEYS])
            if self.fenced:
                lost.extend(chunk)
                continue
            if await self._txn(chunk, fence):
                continue
            if self.fenced:
                lost.extend(chunk)
                continue
            for hoa, record in chunk.items() if len(chunk) > 1 else ():
                if not await self._txn({hoa: record}, fence):
                    lost.append(hoa)
            if len(chunk) == 1:
                lost.extend(chunk)
        self._counters["writes_fenced" if self.fenced else "writes_lost_race"] += len(lost)
        return lost

    async def _txn(self, records: Mapping[str, object], fence: tuple[bytes, int] | None) -> bool:
        known = self.follower.known
        expect: dict[bytes, int] = {}
        then: list[Put | Delete] = []
        for hoa, record in records.items():
            key = self.key(hoa)
            expect[key] = known.get(key, 0)
            if record is None:
                then.append(Delete(key))
            else:
                value = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
                then.append(Put(key, value))
        if fence is not None:
            expect[fence[0]] = fence[1]
        result = await self.store.txn(expect, then)
        if not result.succeeded:
            for key, now in zip(expect, result.current, strict=False):
                revision = 0 if now is None else now.mod_revision
                if fence is not None and key == fence[0]:
                    self.fenced = self.fenced or revision != fence[1]
                elif now is None:
                    known.pop(key, None)
                else:
                    known[key] = revision
            return False
        self._counters["writes"] += len(records)
        for op in then:
            if isinstance(op, Delete):
                known.pop(op.key, None)
            else:
                known[op.key] = result.revision
        return True

    def _apply(self, kv: KeyValue) -> None:
        record = json.loads(kv.value)
        raised = self._observe(record)  # raising: malformed (counted by the follower)
        hoa = kv.key[len(self.prefix) :].decode(errors="replace")
        self.records[hoa] = kv.value
        self._counters["replica_observed"] += 1
        if raised:
            self._counters["replica_raised"] += 1

    def record(self, home_address: str) -> dict[str, Any] | None:
        """The record etcd holds for ``home_address``, parsed (None: none, or malformed)."""
        value = self.records.get(home_address)
        if value is None:
            return None
        try:
            record = json.loads(value)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def _deleted(self, key: bytes, revision: int) -> None:
        self.records.pop(key[len(self.prefix) :].decode(errors="replace"), None)
        self._counters["replica_deleted"] += 1
