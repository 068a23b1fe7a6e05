"""The binding cache both the home agent and the correspondent node keep (sans-IO, no clock).

Theory of operation. A binding cache (RFC 6275 §9.1) maps a home address to one entry, and an
entry is either ``registered`` (a live binding) or ``deleted``: a binding that ended. A
``deleted`` entry is *held* until a deadline and then *purged*. What it is held for is the
role's rule, chosen by the core that owns the cache: the correspondent node holds both kinds
for as long as the nonces that could have authorised an older BU live, so that a replayed one
still meets the sequence check (§5.2.8, §9.5.3); the home agent holds a de-registered entry for
MAX_DELETE_BCE_TIMEOUT only to show and persist it -- it applies no sequence window to it (with
no binding §9.5.1 accepts any sequence number; its RFC 4285 timestamps stop replays) -- and
drops an expired one at once.

:class:`BindingCache` is the store. Every entry has exactly one deadline: its expiry while
``registered`` (§9.1: when the lifetime expires the entry MUST be deleted), its purge while
``deleted``. :meth:`BindingCache.expire` is called with the caller's ``now`` and processes the
deadlines that have come in deadline order: a registration that ran out is removed, or turned
``deleted`` and held ``hold_expired_s`` past its expiry; a held entry whose time is over is
purged. The caller gets both lists back and turns them into its events and counters. A
deadline equal to ``now`` has come. ``max_entries`` bounds the cache; the caller decides what a
full cache means (the correspondent node answers a new home address with BA 130).

Deadlines live in :class:`Deadlines`, a heap of ``(deadline, generation, key)`` with at most one
live item per key: re-scheduling or cancelling a key only changes the generation its live item
must carry, and stale items are skipped where they surface (lazy deletion, O(log n) per change
and no search). Stale items are bounded too: when they outnumber the live ones (every refresh
leaves one behind, and it surfaces only at the old deadline) the heap is rebuilt from the live
items, O(n) once per n changes, so a cache of n keys holds at most about 2n items. The home
agent uses a second one for its Binding Refresh Requests.

Entries are the cores' own mutable dataclasses: the store needs only ``home_address``,
``state`` and ``expires_at`` (:class:`CacheEntry`) and sets the last two; care-of addresses,
vias, nonce indices and refresh state are the cores' business. What the cores publish are
frozen snapshots and the events :class:`BindingAdded`, :class:`BindingUpdated` (with the
``previous`` snapshot) and :class:`BindingRemoved` (``"deregistered"`` or ``"expired"``),
generic over the snapshot type; each core subclasses them under its own names, so an event of
one role is never an instance of the other's.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv6Address
from typing import Generic, Protocol, TypeVar


class BindingState(StrEnum):
    REGISTERED = "registered"
    DELETED = "deleted"


class HasHomeAddress(Protocol):
    @property
    def home_address(self) -> IPv6Address: ...


class CacheEntry(HasHomeAddress, Protocol):
    """What the store reads and writes of an entry; everything else is the core's."""

    state: BindingState
    expires_at: float


KeyT = TypeVar("KeyT", bound=Hashable)
COMPACT_SLACK = 64  # stale heap items always tolerated (a small heap is never rebuilt)
EntryT = TypeVar("EntryT", bound=CacheEntry)
SnapshotT = TypeVar("SnapshotT", bound=HasHomeAddress)


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindingAdded(Generic[SnapshotT]):
    """A home address without a binding got one."""

    binding: SnapshotT

    @property
    def home_address(self) -> IPv6Address:
        return self.binding.home_address


@dataclass(frozen=True, slots=True)
class BindingUpdated(Generic[SnapshotT]):
    """An existing binding was re-registered (a refresh or a move: compare ``previous``)."""

    binding: SnapshotT
    previous: SnapshotT

    @property
    def home_address(self) -> IPv6Address:
        return self.binding.home_address


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A binding ended; ``reason`` is ``"deregistered"`` or ``"expired"``."""

    home_address: IPv6Address
    reason: str


# -- deadlines --------------------------------------------------------------------------------


class Deadlines(Generic[KeyT]):
    """At most one pending deadline per key, earliest first (see the module docstring)."""

    __slots__ = ("_generation", "_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, KeyT]] = []
        self._live: dict[KeyT, int] = {}  # key -> generation of its live heap item
        self._generation = 0  # unique per item, so ties never compare keys

    def __len__(self) -> int:
        """Keys with a pending deadline."""
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def schedule(self, key: KeyT, deadline: float) -> None:
        """Set the deadline of ``key``, replacing any pending one."""
        self._generation += 1
        self._live[key] = self._generation
        heap = self._heap
        heapq.heappush(heap, (deadline, self._generation, key))
        if len(heap) > 2 * len(self._live) + COMPACT_SLACK:
            self._compact()

    def cancel(self, key: KeyT) -> None:
        """Forget the pending deadline of ``key``, if any."""
        self._live.pop(key, None)

    def _compact(self) -> None:
        """Drop every stale item. In place: a running :meth:`due` holds the list."""
        heap, live = self._heap, self._live
        heap[:] = [item for item in heap if live.get(item[2]) == item[1]]
        heapq.heapify(heap)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or ``None``."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> Iterator[KeyT]:
        """Yield, earliest first, each key whose deadline is at or before ``now``, unscheduling
        it. A key (re-)scheduled at or before ``now`` while this runs is yielded in turn."""
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now:
            _, generation, key = heapq.heappop(heap)
            if live.get(key) == generation:
                del live[key]
                yield key


# -- the cache --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expiry(Generic[EntryT]):
    """What :meth:`BindingCache.expire` did, each list in deadline order.

    ``expired``: registrations whose lifetime ran out (now removed, or ``deleted`` and held).
    ``purged``: ``deleted`` entries whose hold was over (removed).
    """

    expired: list[EntryT]
    purged: list[EntryT]


class BindingCache(Generic[EntryT]):
    """Entries by home address, each with one deadline (see the module docstring).

    Args:
        hold_expired_s: ``None``: a registration that expires is removed at once; a number:
            it becomes ``deleted`` and is held that long past its expiry.
        max_entries: at most this many entries, registered and deleted (``None``: no bound).
    """

    __slots__ = ("_deadlines", "_entries", "_hold_expired_s", "_max_entries")

    def __init__(
        self, *, hold_expired_s: float | None = None, max_entries: int | None = None
    ) -> None:
        if hold_expired_s is not None and not hold_expired_s >= 0:
            raise ValueError("hold_expired_s must be >= 0")
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._hold_expired_s = hold_expired_s
        self._max_entries = max_entries
        self._entries: dict[IPv6Address, EntryT] = {}  # insertion order is listing order
        self._deadlines: Deadlines[IPv6Address] = Deadlines()

    def __len__(self) -> int:
        """Entries, registered and deleted."""
        return len(self._entries)

    def __iter__(self) -> Iterator[EntryT]:
        """Every entry, registered and deleted, oldest first."""
        return iter(self._entries.values())

    @property
    def full(self) -> bool:
        """Whether :meth:`put` would refuse a new entry."""
        return self._max_entries is not None and len(self._entries) >= self._max_entries

    def get(self, home_address: IPv6Address) -> EntryT | None:
        """The entry of ``home_address`` in either state, or ``None``."""
        return self._entries.get(home_address)

    def registered(self, home_address: IPv6Address) -> EntryT | None:
        """The entry of ``home_address`` if it is ``registered``, else ``None``."""
        entry = self._entries.get(home_address)
        return entry if entry is not None and entry.state is BindingState.REGISTERED else None

    def statistics(self) -> dict[str, int]:
        """``bindings`` (registered entries) and ``deleted_entries``."""
        live = sum(e.state is BindingState.REGISTERED for e in self._entries.values())
        return {"bindings": live, "deleted_entries": len(self._entries) - live}

    def put(self, entry: EntryT, deadline: float) -> None:
        """Add ``entry`` for a home address not in the cache, with its deadline.

        Raises:
            ValueError: the home address has an entry already, or the cache is full.
        """
        if entry.home_address in self._entries:
            raise ValueError(f"{entry.home_address} is in the binding cache already")
        if self.full:
            raise ValueError("the binding cache is full")
        self._entries[entry.home_address] = entry
        self.schedule(entry, deadline)

    def schedule(self, entry: EntryT, deadline: float) -> None:
        """Move the deadline of a cached ``entry`` (its expiry, or its purge if deleted)."""
        if self._entries.get(entry.home_address) is not entry:
            raise ValueError(f"{entry.home_address}: not this cache's entry")
        entry.expires_at = deadline
        self._deadlines.schedule(entry.home_address, deadline)

    def hold(self, entry: EntryT, until: float) -> None:
        """Make a cached ``entry`` ``deleted``, to be purged at ``until``."""
        entry.state = BindingState.DELETED
        self.schedule(entry, until)

    def remove(self, home_address: IPv6Address) -> EntryT | None:
        """Take the entry for ``home_address`` out now, whatever its state (None: none)."""
        entry = self._entries.pop(home_address, None)
        if entry is not None:
            self._deadlines.cancel(home_address)
        return entry

    def expire(self, now: float) -> Expiry[EntryT]:
        """Process every deadline at or before ``now``, earliest first.

        An expired registration is removed, or held as ``deleted`` for ``hold_expired_s``
        after its expiry (purged in this same call if that is at or before ``now`` too).
        """
        expired: list[EntryT] = []
        purged: list[EntryT] = []
        hold_s = self._hold_expired_s
        for home_address in self._deadlines.due(now):
            entry = self._entries[home_address]
            if entry.state is BindingState.REGISTERED:
                expired.append(entry)
                if hold_s is not None:
                    self.hold(entry, entry.expires_at + hold_s)
                    continue
            else:
                purged.append(entry)
            del self._entries[home_address]
        return Expiry(expired, purged)

    def next_deadline(self) -> float | None:
        """The earliest expiry or purge, or ``None`` when the cache is empty."""
        return self._deadlines.next_deadline()
