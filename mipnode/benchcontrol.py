"""How fast the home agent's control plane is: the pure core the HA daemon drives, measured.

Theory of operation (issue 13). :func:`control_plane` builds a :class:`HomeAgentNode` the way
``drivers/ha_daemon.py`` does (one RFC 4285 MN-HA security association per mobile node, each
with its own SPI and key; refresh advice and refresh requests on) and feeds it what the daemon
would: the inner IPv6 packets of authenticated home Binding Updates, through
``receive_tunnelled``, with the flush the pump does after every batch of 64 inputs (BAs taken
with ``datagrams_to_send``, forwarding events with ``next_event``, the timer re-read). Three
phases are timed, each on a core holding ``n`` mobile nodes:

* ``bu_per_s``: first registrations of ``n`` distinct mobile nodes (each gets its binding);
* ``refresh_per_s``: every mobile node refreshes (a newer sequence number and timestamp, the
  same care-of address), in a shuffled order so a large cache is not walked in insertion order;
* ``replay_reject_per_s``: the refreshes are replayed: each passes the MAC and is refused by
  the RFC 4285 timestamp check with a signed BA 144 (a replay costs what a genuine BU does).

Every phase checks the core's counters afterwards (``registrations``, ``refreshes``,
``rejected_144``), so a speed-up that skipped a check would fail here rather than look good.

``bytes_per_binding`` comes from a separate, untimed pass under :mod:`tracemalloc`: the memory
the core holds after ``n`` registrations minus what it held before, divided by ``n``. The
pass creates each BU's ``Via`` inside the traced region (the daemon makes one per new source),
so what a binding keeps alive is counted wherever it was allocated (the ``Via`` is about 200 of
those bytes, shared with the daemon's forwarding table). It counts Python's allocator only:
OpenSSL's own memory is invisible to it, which is one reason the core keeps no per-SA HMAC
objects. Tracing makes this pass about five times slower than the timed registrations (some
20 s for 100,000 mobile nodes where it was written); it does not count against the budget.

Inputs are deterministic (addresses, keys, SPIs, timestamps and the shuffle all derive from
the mobile node's index); the core's clock is synthetic (``now`` is fixed per phase, so no
binding expires while measured) and only the stopwatch is real (``time.perf_counter``). Packet
building is not timed. ``seconds_budget`` bounds each of the refresh and replay phases: a
phase stops early (after at least ``min(n, 1000)`` BUs) once it has run that long, and its rate
is over what ran; the registrations and the memory pass always cover all ``n`` mobile nodes.
This module sits outside the pure packages and the drivers, so it may read a clock.
"""

from __future__ import annotations

import gc
import hashlib
import random
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv6Address, IPv6Network

from mipnode.core.ha import HaCoreConfig, SecurityAssociation
from mipnode.core.home_agent import HomeAgentNode
from mipnode.core.types import Via
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix
from mipnode.wire.ipv6 import NH_MH
from mipnode.wire.keyshare import KeyShare, key_share_option
from mipnode.wire.mh import AlternateCareOfAddress, BindingUpdate, MesgId
from mipnode.wire.packets import ipv6_packet

HA = IPv6Address("2001:db8:1::1")
HOME_PREFIX = IPv6Network("2001:db8:1::/64")
HOA_BASE = int(HOME_PREFIX.network_address) + 0x1_0000  # mobile node i: HOA_BASE + i
COA_BASE = int(IPv6Address("2001:db8:c000::"))  # its care-of address: COA_BASE + i
SPI_BASE = 0x100  # RFC 4285 §5: SPIs 0-255 are reserved
T0 = 1000.0  # the core's monotonic clock at the registrations
WALL = 1_750_000_000.0  # POSIX time at T0
REFRESH_AFTER_S = 60.0
LIFETIME_UNITS = 900  # 3600 s requested; the core grants max_lifetime_s
BATCH = 64  # inputs between two flushes, as drivers/pump.py
MIN_SAMPLE = 1000  # BUs a budget-limited phase runs at least
SEED = 13


def mn_key(index: int) -> bytes:
    """The MN-HA key of mobile node ``index`` (16 octets, deterministic)."""
    return hashlib.sha256(b"mipnode bench mn-ha key %d" % index).digest()[:16]


def mn_home_address(index: int) -> IPv6Address:
    return IPv6Address(HOA_BASE + index)


def mn_care_of(index: int) -> IPv6Address:
    return IPv6Address(COA_BASE + index)


def mn_remote(index: int) -> tuple[str, int]:
    """The outer (NATed IPv4) source of mobile node ``index``'s T-udp tunnel."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 4500 + index % 50_000


def security_associations(n: int) -> tuple[SecurityAssociation, ...]:
    return tuple(SecurityAssociation(SPI_BASE + i, mn_key(i), mn_home_address(i)) for i in range(n))


def make_node(n: int) -> HomeAgentNode:
    """A home agent node configured as the daemon configures it, for ``n`` mobile nodes."""
    config = HaCoreConfig(
        address=HA,
        home_prefix=HOME_PREFIX,
        security_associations=security_associations(n),
        max_lifetime_s=3600,
        refresh_advice_fraction=0.75,
        refresh_requests=True,
    )
    return HomeAgentNode(config, wall_offset=WALL - T0)


def binding_update(
    index: int,
    sequence: int,
    at: float,
    *,
    wall: float | None = None,
    share: KeyShare | None = None,
) -> bytes:
    """Mobile node ``index``'s home BU sent at core time ``at`` (or POSIX time ``wall``), as
    the inner IPv6 packet (HoA -> HA) that the tunnel delivers: Alt-CoA, Mesg-ID, an ESP key
    share when given, MN-HA authenticator (mn.py)."""
    hoa, coa = mn_home_address(index), mn_care_of(index)
    stamp = MesgId(ntp_from_unix(at + WALL - T0 if wall is None else wall))
    keyed = () if share is None else (key_share_option(share),)
    bu = BindingUpdate(
        sequence=sequence,
        lifetime=LIFETIME_UNITS,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(coa), stamp, *keyed),
    )
    mh = encode_mh_authenticated(
        bu, hoa, HA, spi=SPI_BASE + index, key=mn_key(index), coa=coa, hoa=hoa
    )
    return ipv6_packet(hoa, HA, NH_MH, mh)


def via_of(index: int) -> Via:
    return Via("T-udp", mn_remote(index), 4500)


def feed(
    node: HomeAgentNode,
    now: float,
    packets: list[tuple[bytes, Via]],
    deadline: float | None = None,
) -> int:
    """Hand ``packets`` to the node as the daemon does, flushing every BATCH; the number fed
    (fewer when the perf_counter ``deadline`` passed)."""
    receive = node.receive_tunnelled
    fed = 0
    for start in range(0, len(packets), BATCH):
        batch = packets[start : start + BATCH]
        for inner, via in batch:
            receive(now, inner, via)
        fed += len(batch)
        _flush(node, now)
        if deadline is not None and fed >= MIN_SAMPLE and time.perf_counter() > deadline:
            break
    return fed


def _flush(node: HomeAgentNode, now: float) -> None:
    node.datagrams_to_send(now)
    while node.next_event() is not None:
        pass
    node.get_timer()


def _timed(
    node: HomeAgentNode, now: float, packets: list[tuple[bytes, Via]], budget_s: float | None
) -> tuple[int, float]:
    """Feed ``packets`` (all, or until ``budget_s`` is spent): how many, in how many seconds."""
    gc.collect()
    start = time.perf_counter()
    fed = feed(node, now, packets, None if budget_s is None else start + budget_s)
    return fed, time.perf_counter() - start


def expect_counter(node: HomeAgentNode, counter: str, value: int) -> None:
    got = node.statistics().get(counter, 0)
    if got != value:
        raise RuntimeError(f"benchmark core: {counter} is {got}, expected {value}")


@contextmanager
def traced_growth() -> Iterator[list[int]]:
    """Python's allocations the block leaves behind, in bytes: ``[grown]`` once it ends
    (tracemalloc, started here unless it already runs; garbage collected on both sides)."""
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    grown = [0]
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield grown
        gc.collect()
        grown[0] = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def bytes_per_binding(n: int, packets: list[bytes]) -> float:
    """Traced memory the node holds after registering ``n`` mobile nodes, per binding."""
    node = make_node(n)
    with traced_growth() as grown:
        for start in range(0, n, BATCH):
            for i in range(start, min(n, start + BATCH)):
                node.receive_tunnelled(T0, packets[i], via_of(i))
            _flush(node, T0)
    expect_counter(node, "registrations", n)
    return grown[0] / n


def control_plane(n_mns: int, seconds_budget: float = 60.0) -> dict[str, float]:
    """Measure the HA control plane with ``n_mns`` mobile nodes (module docstring).

    Returns ``{"mns", "bu_per_s", "refresh_per_s", "replay_reject_per_s",
    "bytes_per_binding"}``.
    """
    n = n_mns
    if n < 1:
        raise ValueError("n_mns must be positive")
    order = list(range(n))
    random.Random(SEED).shuffle(order)
    refresh_at = T0 + REFRESH_AFTER_S
    registrations = [(binding_update(i, 1, T0), via_of(i)) for i in range(n)]
    refreshes = [(binding_update(i, 2, refresh_at), via_of(i)) for i in order]

    node = make_node(n)
    registered, registration_s = _timed(node, T0, registrations, None)
    expect_counter(node, "registrations", registered)
    refreshed, refresh_s = _timed(node, refresh_at, refreshes, seconds_budget)
    expect_counter(node, "refreshes", refreshed)
    replayed, replay_s = _timed(node, refresh_at + 1, refreshes[:refreshed], seconds_budget)
    expect_counter(node, "rejected_144", replayed)
    del node  # the measured core goes before the memory pass

    return {
        "mns": n,
        "bu_per_s": round(registered / registration_s, 1),
        "refresh_per_s": round(refreshed / refresh_s, 1),
        "replay_reject_per_s": round(replayed / replay_s, 1),
        "bytes_per_binding": round(bytes_per_binding(n, [p for p, _ in registrations]), 1),
    }
