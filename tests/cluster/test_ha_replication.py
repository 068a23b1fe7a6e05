"""Binding records replicated through etcd between two home-agent cores (drivers/ha_replication.py),
against the real three-member cluster and the in-memory fake alike: a BU accepted by one node
and replayed to the other is refused once the record has travelled."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from memory_etcd import MemoryEtcd

from mipnode.drivers.etcd import Put
from mipnode.drivers.ha_replication import Replicator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "core"))
from coretest_kit import HA, HOA, VIA, VIA_UDP, Stamper, build_bu, make_ha, single_ba

T0 = 1000.0


class Node:
    """A home agent core and its replicator; ``seen`` fires at every record observed."""

    def __init__(self, store: Any, cluster: str) -> None:
        self.core = make_ha()
        self.seen = trio.Event()
        self.replicator = Replicator(store, cluster, self._observe)

    def _observe(self, record: object) -> bool:
        raised = self.core.observe_replica(record)
        self.seen.set()
        return raised

    async def wait_for_record(self) -> None:
        with trio.fail_after(10):
            await self.seen.wait()
        self.seen = trio.Event()

    def bu(self, now: float, data: bytes, via: Any = VIA) -> int:
        self.core.receive_datagram(now, data, HOA, HA, via)
        return int(single_ba(self.core, now).status)


async def follow(nursery: trio.Nursery, node: Node) -> None:
    """Start ``node``'s replicator and wait until it has loaded what etcd holds."""
    nursery.start_soon(node.replicator.run)
    with trio.fail_after(10):
        await node.replicator.loaded.wait()


async def registered_and_written(node: Node, stamp: Stamper) -> bytes:
    """A BU ``node`` accepts and replicates; returned for replaying elsewhere."""
    captured = build_bu(7, stamp(T0))
    assert node.bu(T0, captured) == 0
    assert await node.replicator.write(str(HOA), node.core.replication_record(HOA)) is True
    return captured


@pytest.fixture
def cluster_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


async def test_a_replay_to_another_node_is_refused_once_the_record_travelled(
    store: Any, cluster_name: str
) -> None:
    stamp = Stamper()
    a, b = Node(store, cluster_name), Node(store, cluster_name)
    async with trio.open_nursery() as nursery:
        await follow(nursery, b)
        captured = await registered_and_written(a, stamp)
        await b.wait_for_record()
        assert b.bu(T0 + 1, captured, VIA_UDP) == 144
        assert b.replicator.counters["replica_raised"] == 1
        nursery.cancel_scope.cancel()


async def test_a_node_starting_later_loads_what_is_there(store: Any, cluster_name: str) -> None:
    stamp = Stamper()
    a = Node(store, cluster_name)
    captured = await registered_and_written(a, stamp)
    b = Node(store, cluster_name)
    async with trio.open_nursery() as nursery:
        await follow(nursery, b)
        assert b.bu(T0 + 1, captured, VIA_UDP) == 144
        nursery.cancel_scope.cancel()


async def test_a_write_from_a_stale_view_loses_and_says_so(store: Any, cluster_name: str) -> None:
    stamp = Stamper()
    a, b = Node(store, cluster_name), Node(store, cluster_name)
    assert a.bu(T0, build_bu(7, stamp(T0))) == 0
    assert b.bu(T0, build_bu(8, stamp(T0))) == 0
    assert await a.replicator.write(str(HOA), a.core.replication_record(HOA)) is True
    # b never saw a's record: its compare-and-swap expects the key to be absent.
    assert await b.replicator.write(str(HOA), b.core.replication_record(HOA)) is False
    assert b.replicator.counters["writes_lost_race"] == 1


# Values no parser should meet, each of which once made a parser raise something other than
# ValueError: every node follows the prefix, so one of them must not stop them all.
JUNK = {
    "not json": b"{not json",
    "a list for a kind": (
        b'{"version": 1, "timestamp": null, "binding": {"home_address": "2001:db8:1::100", '
        b'"care_of_address": "2001:db8:aa::5", "state": "registered", '
        b'"via": {"kind": [1], "remote": []}}}'
    ),
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("junk_value", list(JUNK.values()), ids=list(JUNK))
async def test_a_malformed_record_is_counted_and_the_stream_goes_on(
    store: Any, cluster_name: str, junk_value: bytes
) -> None:
    stamp = Stamper()
    a, b = Node(store, cluster_name), Node(store, cluster_name)
    async with trio.open_nursery() as nursery:
        await follow(nursery, b)
        junk = b.replicator.key("2001:db8:1::bad")
        await store.txn({junk: 0}, [Put(junk, junk_value)])
        captured = await registered_and_written(a, stamp)
        await b.wait_for_record()
        assert b.replicator.counters["replica_malformed"] == 1
        assert b.bu(T0 + 1, captured, VIA_UDP) == 144
        nursery.cancel_scope.cancel()


async def replay_refused_after_a_broken_watch(meanwhile: Any = None) -> Node:
    """b follows, its watch breaks (it waits RETRY_S before watching again), a writes a record
    and ``meanwhile(store, b)`` runs; b must still end up refusing a's BU replayed to it."""
    store = MemoryEtcd()
    stamp = Stamper()
    a, b = Node(store, "c"), Node(store, "c")
    async with trio.open_nursery() as nursery:
        await follow(nursery, b)
        await trio.testing.wait_all_tasks_blocked()
        store.break_watches()
        captured = await registered_and_written(a, stamp)
        if meanwhile is not None:
            await meanwhile(store, b)
        await b.wait_for_record()
        assert b.bu(T0 + 1, captured, VIA_UDP) == 144
        nursery.cancel_scope.cancel()
    return b


async def test_a_broken_watch_starts_again_where_it_was_and_misses_nothing() -> None:
    b = await replay_refused_after_a_broken_watch()
    assert b.replicator.counters["watch_restarts"] == 1


async def test_history_compacted_while_the_watch_was_down_is_read_again_whole() -> None:
    """The watch broke; before it came back, records were written and etcd compacted its
    history: the watch from the old revision is refused (EtcdCompacted, as the contract test
    shows real etcd does) and the replicator reads the whole prefix again."""

    async def write_and_compact(store: MemoryEtcd, b: Node) -> None:
        await store.put(b.replicator.key("2001:db8:1::77"), b"{}")  # history b has not seen
        await store.compact(store.revision)

    b = await replay_refused_after_a_broken_watch(write_and_compact)
    assert b.replicator.counters["reloads"] == 1
    assert b.replicator.counters["replica_malformed"] == 1  # the "{}" record, read once


async def test_a_writer_whose_claim_was_taken_over_writes_nothing(
    store: Any, cluster_name: str
) -> None:
    """A holder cut off from the link and etcd, back before it has seen that another node
    claimed its address, still believes it holds it: its writes are fenced by the address
    record of its own claim, so the records of the node that took over stand."""
    stamp = Stamper()
    a, b = Node(store, cluster_name), Node(store, cluster_name)
    address_key = f"/mipnode/{cluster_name}/addresses/2001:db8:1::1".encode()
    claimed_a = await store.txn({address_key: 0}, [Put(address_key, b"ha-a")])
    fence_a = (address_key, claimed_a.revision)
    async with trio.open_nursery() as nursery:
        await follow(nursery, a)
        await follow(nursery, b)
        captured = build_bu(7, stamp(T0))
        assert a.bu(T0, captured) == 0
        assert await a.replicator.write_many({str(HOA): rec(a)}, fence_a) == []
        await b.wait_for_record()
        # b takes the address over (a is cut off) and serves a newer registration.
        taken = await store.txn({address_key: claimed_a.revision}, [Put(address_key, b"ha-b")])
        assert taken.succeeded
        assert b.bu(T0 + 1, build_bu(8, stamp(T0 + 1)), VIA_UDP) == 0
        assert (
            await b.replicator.write_many({str(HOA): rec(b)}, (address_key, taken.revision)) == []
        )
        await a.wait_for_record()
        # a, back, still thinks it holds the address and writes what it has: fenced.
        assert a.bu(T0 + 2, build_bu(9, stamp(T0 + 2))) == 0
        lost = await a.replicator.write_many({str(HOA): rec(a)}, fence_a)
        assert lost == [str(HOA)] and a.replicator.fenced
        assert a.replicator.counters["writes_fenced"] == 1
        kvs, _ = await store.range(b.replicator.prefix)
        (kv,) = kvs
        assert json.loads(kv.value)["binding"]["sequence"] == 8  # b's record stands
        nursery.cancel_scope.cancel()


def rec(node: Node) -> Any:
    return node.core.replication_record(HOA)
