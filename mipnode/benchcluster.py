"""How a cluster of home agents carries its binding cache through etcd (issue 14), measured.

Theory of operation. :func:`cluster_plane` runs, against a real etcd, what the HA daemons of a
cluster run around their cores (``drivers/cluster_node.py``), without sockets or TUNs: one
holder (a :class:`HomeAgentNode` configured as the daemon configures it, fed authenticated
home Binding Updates exactly as ``benchcontrol`` feeds them, flushed every 64) and standbys
that follow the binding records with the daemon's :class:`Replicator`. After every flush the
holder's changed home addresses go to a writer task that writes them as the daemon's does
(``write_many``: compare-and-swap, up to 64 records a transaction, whatever piled up while the
last transaction was in flight). Measured:

* ``bu_per_s``: registrations of ``n`` distinct mobile nodes accepted by the holder while its
  records are being written (the core's work; BAs do not wait for etcd);
* ``records_per_s``, ``transactions``: from the first BU until etcd has every record;
* ``visible_to_all_s``: from the first BU until every standby has observed every record, and
  ``lag_after_last_bu_s``: how long after the last BU that was;
* ``refresh_records_per_s``: every mobile node refreshes (new sequence number and timestamp,
  same path), written the same way;
* ``one_binding_visible_ms``: on the idle cluster, 20 mobile nodes move one after the other;
  for each, from its BU until every standby has its record (min/median/max);
* ``load_s``: a node that starts now reads the whole cache (one range) and follows it;
* ``standby_bytes_per_binding``: what a node holds per binding it only follows (the records
  kept for a takeover and the replay state raised from them), by :mod:`tracemalloc` during the
  load; ``holder_bytes_per_binding`` adds what a core holds per binding (``benchcontrol``).

Every phase checks the cores' and the replicators' counters (registrations, refreshes, records
observed), so a shortcut would fail here instead of looking fast. Inputs are deterministic; the
cores' clocks are synthetic; the stopwatch is real. This module sits outside the pure packages
and the drivers, so it may read a clock.
"""

from __future__ import annotations

import gc
import secrets
import time
from ipaddress import IPv6Address
from typing import Any

import trio

from mipnode import benchcontrol as bc
from mipnode.core.home_agent import HomeAgentNode
from mipnode.core.types import Via
from mipnode.drivers.etcd import Etcd
from mipnode.drivers.ha_replication import TXN_KEYS, Replicator

WAIT_S = 300.0  # a phase that has not finished by then is a failure, not a slow result
SINGLES = 20  # single moves timed one at a time, on an idle cluster


class _Holder:
    """The holder's core and the daemon's writer around it."""

    def __init__(self, etcd: Etcd, cluster: str, n: int) -> None:
        self.node = bc.make_node(n)
        self.replicator = Replicator(etcd, cluster, self.node.core.observe_replica)
        self.pending: set[IPv6Address] = set()
        self.wanted = trio.Event()
        self.transactions = 0

    def changed(self) -> None:
        self.pending |= self.node.core.take_changed()
        self.wanted.set()

    async def writer(self) -> None:
        while True:
            await self.wanted.wait()
            self.wanted = trio.Event()
            batch, self.pending = self.pending, set()
            if not batch:
                continue
            records = {}
            for hoa in batch:
                record = self.node.core.replication_record(hoa)
                records[str(hoa)] = None if record is None else {**record, "owner": "bench"}
            before = self.replicator.counters["writes"]
            await self.replicator.write_many(records)
            if self.replicator.counters["writes"] - before != len(records):
                raise RuntimeError("benchmark: a record write lost its compare-and-swap")
            self.transactions += -(-len(records) // TXN_KEYS)

    async def feed(self, now: float, packets: list[tuple[bytes, Any]]) -> None:
        """BUs in batches of 64, each batch flushed and its changes handed to the writer,
        yielding to it between batches as the daemon's pump does between reads."""
        for start in range(0, len(packets), bc.BATCH):
            bc.feed(self.node, now, packets[start : start + bc.BATCH])
            self.changed()
            await trio.sleep(0)


async def _until(predicate: Any, what: str) -> float:
    """Wait (polling every ms) until ``predicate()``; the stopwatch time it became true."""
    with trio.move_on_after(WAIT_S):
        while not predicate():
            await trio.sleep(0.001)
        return time.perf_counter()
    raise RuntimeError(f"benchmark: {what} not within {WAIT_S:g} s")


async def cluster_plane(n_mns: int, endpoints: list[str], standbys: int = 2) -> dict[str, Any]:
    """Measure the replicated binding cache with ``n_mns`` mobile nodes, one holder and
    ``standbys`` following nodes, on the etcd at ``endpoints`` (module docstring)."""
    n = n_mns
    cluster = f"bench-{secrets.token_hex(4)}"  # a prefix of its own in a shared etcd
    registrations = [(bc.binding_update(i, 1, bc.T0), bc.via_of(i)) for i in range(n)]
    refresh_at = bc.T0 + bc.REFRESH_AFTER_S
    refreshes = [(bc.binding_update(i, 2, refresh_at), bc.via_of(i)) for i in range(n)]
    etcd = Etcd(endpoints, timeout_s=10.0)
    try:
        holder = _Holder(etcd, cluster, n)
        followers = [bc.make_node(n) for _ in range(standbys)]
        replicas = [Replicator(etcd, cluster, f.core.observe_replica) for f in followers]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder.writer)
            for r in replicas:
                nursery.start_soon(r.run)
            for r in [*replicas]:
                await r.loaded.wait()

            def written(count: int) -> bool:
                return holder.replicator.counters["writes"] >= count

            def seen(count: int) -> bool:
                return all(r.counters["replica_observed"] >= count for r in replicas)

            gc.collect()
            start = time.perf_counter()
            await holder.feed(bc.T0, registrations)
            last_bu = time.perf_counter()
            bc.expect_counter(holder.node, "registrations", n)
            all_written = await _until(lambda: written(n), "every record written")
            all_seen = await _until(lambda: seen(n), "every record seen by every standby")
            registration_transactions = holder.transactions

            refresh_start = time.perf_counter()
            await holder.feed(refresh_at, refreshes)
            bc.expect_counter(holder.node, "refreshes", n)
            refreshed = await _until(lambda: written(2 * n), "every refresh written")
            await _until(lambda: seen(2 * n), "every refresh seen")
            one = await _one_at_a_time(holder, replicas, refresh_at + 1, min(n, SINGLES))
            nursery.cancel_scope.cancel()

        load_s, standby_bytes = await _load(etcd, cluster, n)
    finally:
        await etcd.aclose()
    holder_core_bytes = bc.bytes_per_binding(n, [p for p, _ in registrations])
    return {
        "mns": n,
        "standbys": standbys,
        "bu_per_s": round(n / (last_bu - start), 1),
        "records_per_s": round(n / (all_written - start), 1),
        "transactions": registration_transactions,
        "visible_to_all_s": round(all_seen - start, 3),
        "lag_after_last_bu_s": round(all_seen - last_bu, 3),
        "refresh_records_per_s": round(n / (refreshed - refresh_start), 1),
        "one_binding_visible_ms": one,
        "load_s": round(load_s, 3),
        "standby_bytes_per_binding": round(standby_bytes, 1),
        "holder_bytes_per_binding": round(holder_core_bytes + standby_bytes, 1),
    }


async def _one_at_a_time(
    holder: _Holder, replicas: list[Replicator], now: float, count: int
) -> dict[str, float]:
    """``count`` mobile nodes move one after the other (a BU from a new UDP source): for each,
    milliseconds from the BU until every standby has observed its record; min/median/max."""
    samples = []
    for i in range(count):
        before = [r.counters["replica_observed"] for r in replicas]
        moved = Via("T-udp", (bc.mn_remote(i)[0], 40_000 + i), 4500)
        start = time.perf_counter()
        await holder.feed(now, [(bc.binding_update(i, 3, now), moved)])
        done = await _until(
            lambda b=before: all(
                r.counters["replica_observed"] > x for r, x in zip(replicas, b, strict=True)
            ),
            "a single record seen by every standby",
        )
        samples.append((done - start) * 1000)
    samples.sort()
    return {
        "min": round(samples[0], 2),
        "median": round(samples[len(samples) // 2], 2),
        "max": round(samples[-1], 2),
    }


async def _load(etcd: Etcd, cluster: str, n: int) -> tuple[float, float]:
    """A node that starts now: seconds until it has read and observed every record (timed
    untraced), and the traced bytes per binding a node then holds (records and raised replay
    state; a second load under tracemalloc)."""
    load_s, _ = await _load_once(etcd, cluster, n, bc.make_node(n))
    node = bc.make_node(n)  # its configuration (n security associations) is not a binding's
    with bc.traced_growth() as grown:
        _, held = await _load_once(etcd, cluster, n, node)
    del held
    return load_s, grown[0] / n


async def _load_once(
    etcd: Etcd, cluster: str, n: int, node: HomeAgentNode
) -> tuple[float, Replicator]:
    """(seconds until ``node`` has loaded every record, its replicator)."""
    replicator = Replicator(etcd, cluster, node.core.observe_replica)
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        nursery.start_soon(replicator.run)
        await replicator.loaded.wait()
        loaded = time.perf_counter()
        nursery.cancel_scope.cancel()
    observed = replicator.counters["replica_observed"]
    if observed != n:
        raise RuntimeError(f"benchmark: the new node observed {observed} records, expected {n}")
    return loaded - start, replicator
