"""The binding cache shared by the HA and CN cores (mipnode/core/binding_cache.py): deadlines in
order, stale heap items skipped, registrations expiring into removal or a hold, held entries
purged, the size bound, the events, and a model check of the whole store."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.core import binding_cache
from mipnode.core.binding_cache import BindingCache, BindingState, Deadlines
from mipnode.core.cn import CnBinding, CnBindingAdded, CnBindingRemoved, CnBindingState
from mipnode.core.ha import BindingRemoved

HOAS = [IPv6Address(f"2001:db8:1::{i:x}") for i in range(0x100, 0x106)]
A, B, C = HOAS[:3]
REGISTERED, DELETED = BindingState.REGISTERED, BindingState.DELETED
HOLD_S = 240.0


@dataclass
class Entry:
    """The least a core's entry has; ``tag`` stands for its role-specific fields."""

    home_address: IPv6Address
    state: BindingState = REGISTERED
    expires_at: float = 0.0
    tag: str = ""


def cache_with(
    *deadlines: tuple[IPv6Address, float],
    hold_expired_s: float | None = None,
    max_entries: int | None = None,
) -> tuple[BindingCache[Entry], dict[IPv6Address, Entry]]:
    """A cache holding a fresh registered entry per (HoA, deadline), in that order."""
    cache: BindingCache[Entry] = BindingCache(
        hold_expired_s=hold_expired_s, max_entries=max_entries
    )
    entries: dict[IPv6Address, Entry] = {}
    for hoa, deadline in deadlines:
        entries[hoa] = Entry(hoa)
        cache.put(entries[hoa], deadline)
    return cache, entries


# -- Deadlines --------------------------------------------------------------------------------


def test_deadlines_come_due_earliest_first_and_ties_in_scheduling_order() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for key, at in [("c", 30.0), ("a", 10.0), ("tie1", 20.0), ("tie2", 20.0), ("late", 99.0)]:
        deadlines.schedule(key, at)
    assert deadlines.next_deadline() == 10.0
    assert list(deadlines.due(30.0)) == ["a", "tie1", "tie2", "c"]
    assert list(deadlines.due(98.9)) == []
    assert (len(deadlines), "late" in deadlines, "a" in deadlines) == (1, True, False)


def test_a_rescheduled_key_leaves_a_stale_item_that_is_skipped() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("later", 10.0)
    deadlines.schedule("later", 50.0)  # moved back: the item at 10 is stale
    deadlines.schedule("sooner", 40.0)
    deadlines.schedule("sooner", 5.0)  # moved forward: the item at 40 is stale
    assert deadlines.next_deadline() == 5.0
    assert list(deadlines.due(45.0)) == ["sooner"]  # neither stale item comes out
    assert deadlines.next_deadline() == 50.0  # the stale head at 10 was skipped
    assert list(deadlines.due(50.0)) == ["later"]
    assert deadlines.next_deadline() is None


def test_a_cancelled_key_never_comes_due() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("gone", 1.0)
    deadlines.schedule("kept", 2.0)
    deadlines.cancel("gone")
    deadlines.cancel("never scheduled")
    assert deadlines.next_deadline() == 2.0
    assert list(deadlines.due(100.0)) == ["kept"]


def test_a_key_scheduled_while_draining_comes_due_in_the_same_pass_if_its_time_has_come() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("a", 1.0)
    deadlines.schedule("b", 5.0)
    seen: list[str] = []
    for key in deadlines.due(10.0):
        seen.append(key)
        if seen == ["a"]:
            deadlines.schedule("a", 3.0)  # before b: still due in this pass
        elif seen == ["a", "a"]:
            deadlines.schedule("a", 11.0)  # not yet
    assert seen == ["a", "a", "b"]
    assert deadlines.next_deadline() == 11.0


# -- the cache: expiry ------------------------------------------------------------------------


def test_entries_expire_in_deadline_order_at_exactly_their_deadline() -> None:
    cache, entries = cache_with((A, 30.0), (B, 10.0), (C, 20.0))
    assert cache.next_deadline() == 10.0
    assert cache.expire(9.999) == binding_cache.Expiry([], [])
    expiry = cache.expire(20.0)  # a deadline equal to now has come
    assert expiry.expired == [entries[B], entries[C]]
    assert expiry.purged == []
    assert [e.home_address for e in cache] == [A]
    assert cache.next_deadline() == 30.0


def test_a_refresh_moves_the_expiry_and_the_old_deadline_is_skipped() -> None:
    cache, entries = cache_with((A, 10.0), (B, 15.0))
    cache.schedule(entries[A], 100.0)
    assert entries[A].expires_at == 100.0  # the store keeps expires_at = the deadline
    assert cache.next_deadline() == 15.0
    assert cache.expire(50.0).expired == [entries[B]]
    assert cache.get(A) is entries[A]
    cache.schedule(entries[A], 60.0)  # and forward again
    assert cache.expire(60.0).expired == [entries[A]]
    assert len(cache) == 0
    assert cache.next_deadline() is None


def test_without_a_hold_an_expired_registration_is_removed_at_once() -> None:
    cache, entries = cache_with((A, 10.0))
    expiry = cache.expire(10.0)
    assert (expiry.expired, expiry.purged) == ([entries[A]], [])
    assert cache.get(A) is None


def test_with_a_hold_an_expired_registration_is_kept_deleted_in_place_then_purged() -> None:
    cache, entries = cache_with((A, 10.0), (B, 500.0), hold_expired_s=HOLD_S)
    expiry = cache.expire(10.0)
    assert (expiry.expired, expiry.purged) == ([entries[A]], [])
    assert (entries[A].state, entries[A].expires_at) == (DELETED, 10.0 + HOLD_S)
    assert cache.get(A) is entries[A]
    assert cache.registered(A) is None
    assert [e.home_address for e in cache] == [A, B]  # held where it was
    assert cache.next_deadline() == 10.0 + HOLD_S
    assert cache.expire(10.0 + HOLD_S - 0.001) == binding_cache.Expiry([], [])
    expiry = cache.expire(10.0 + HOLD_S)
    assert (expiry.expired, expiry.purged) == ([], [entries[A]])
    assert [e.home_address for e in cache] == [B]


def test_a_hold_already_over_is_purged_in_the_same_call() -> None:
    cache, entries = cache_with((A, 10.0), (B, 20.0), hold_expired_s=HOLD_S)
    expiry = cache.expire(10.0 + HOLD_S)  # B's hold ends at 260: still held
    assert expiry.expired == [entries[A], entries[B]]
    assert expiry.purged == [entries[A]]
    assert [e.home_address for e in cache] == [B]
    assert entries[B].state is DELETED


def test_a_held_entry_is_purged_at_its_deadline_and_a_reregistration_ends_the_hold() -> None:
    cache, entries = cache_with((A, 100.0), (B, 100.0))
    cache.hold(entries[A], 5.0)  # de-registered: held until 5
    cache.hold(entries[B], 5.0)
    entries[B].state = REGISTERED  # B registers again before its hold ends
    cache.schedule(entries[B], 50.0)
    assert (entries[A].state, entries[A].expires_at) == (DELETED, 5.0)
    expiry = cache.expire(5.0)
    assert (expiry.expired, expiry.purged) == ([], [entries[A]])
    assert cache.get(A) is None
    assert cache.registered(B) is entries[B]
    assert cache.next_deadline() == 50.0


def test_statistics_count_registered_and_deleted_entries() -> None:
    cache, entries = cache_with((A, 10.0), (B, 10.0), (C, 10.0))
    cache.hold(entries[C], 5.0)
    assert cache.statistics() == {"bindings": 2, "deleted_entries": 1}


# -- the cache: bounds and misuse -------------------------------------------------------------


def test_a_full_cache_refuses_new_entries_until_one_is_purged() -> None:
    cache, entries = cache_with((A, 10.0), (B, 20.0), max_entries=2)
    assert cache.full
    with pytest.raises(ValueError, match="full"):
        cache.put(Entry(C), 30.0)
    cache.hold(entries[A], 5.0)
    assert cache.full  # a held entry still counts
    cache.expire(5.0)
    assert not cache.full
    cache.put(Entry(C), 30.0)
    assert cache.full
    assert [e.home_address for e in cache] == [B, C]


def test_an_unbounded_cache_is_never_full() -> None:
    cache, _ = cache_with(*((hoa, 1.0) for hoa in HOAS))
    assert not cache.full
    assert len(cache) == len(HOAS)


def test_misuse_is_refused() -> None:
    cache, entries = cache_with((A, 10.0))
    with pytest.raises(ValueError, match="already"):
        cache.put(Entry(A), 20.0)
    with pytest.raises(ValueError, match="not this cache's entry"):
        cache.schedule(Entry(B), 20.0)
    with pytest.raises(ValueError, match="not this cache's entry"):
        cache.schedule(Entry(A), 20.0)  # same HoA, another object
    assert cache.get(A) is entries[A]
    assert entries[A].expires_at == 10.0
    with pytest.raises(ValueError):
        BindingCache(max_entries=0)
    with pytest.raises(ValueError):
        BindingCache(hold_expired_s=-1.0)
    with pytest.raises(ValueError):
        BindingCache(hold_expired_s=float("nan"))


# -- events -----------------------------------------------------------------------------------


def test_each_role_subclasses_the_events_so_they_stay_apart() -> None:
    snapshot = CnBinding(A, B, 7, 40, 140.0, 3, 4)
    added = CnBindingAdded(snapshot)
    assert added.home_address == A
    assert isinstance(added, binding_cache.BindingAdded)
    assert repr(added).startswith("CnBindingAdded(binding=CnBinding(")
    assert CnBindingState is BindingState
    ha_removed, cn_removed = BindingRemoved(A, "expired"), CnBindingRemoved(A, "expired")
    assert ha_removed != cn_removed
    assert not isinstance(cn_removed, BindingRemoved)
    assert cn_removed == CnBindingRemoved(A, "expired")
    assert hash(cn_removed) == hash(CnBindingRemoved(A, "expired"))


# -- the whole store against a model ----------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "refresh", "hold", "advance"]),
        st.integers(0, len(HOAS) - 1),
        st.sampled_from([0.0, 0.5, 1.0, 4.0, 10.0, 240.0, 300.0]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.sampled_from([None, 0.0, 10.0, HOLD_S]), bound=st.sampled_from([3, None]))
def test_the_store_matches_a_model(
    ops: list[tuple[str, int, float]], hold: float | None, bound: int | None
) -> None:
    cache: BindingCache[Entry] = BindingCache(hold_expired_s=hold, max_entries=bound)
    model: dict[IPv6Address, tuple[float, bool]] = {}  # HoA -> (deadline, deleted)
    now = 0.0
    for op, index, dt in ops:
        hoa = HOAS[index]
        if op == "advance":
            now += dt
            want_expired: list[IPv6Address] = []
            want_purged: list[IPv6Address] = []
            for key, (deadline, deleted) in sorted(model.items(), key=lambda kv: kv[1][0]):
                if deadline > now:
                    continue
                if deleted:
                    want_purged.append(key)
                    del model[key]
                    continue
                want_expired.append(key)
                if hold is None or deadline + hold <= now:
                    del model[key]
                    if hold is not None:
                        want_purged.append(key)
                else:
                    model[key] = (deadline + hold, True)
            expiry = cache.expire(now)
            assert sorted(e.home_address for e in expiry.expired) == sorted(want_expired)
            assert sorted(e.home_address for e in expiry.purged) == sorted(want_purged)
            if hold is None:  # removed untouched: their deadlines show the order
                times = [e.expires_at for e in expiry.expired]
                assert times == sorted(times)
        elif op == "put" and hoa not in model:
            if bound is not None and len(model) >= bound:
                assert cache.full
                continue
            cache.put(Entry(hoa), now + dt)
            model[hoa] = (now + dt, False)
        elif (entry := cache.get(hoa)) is not None:
            if op == "refresh":
                entry.state = REGISTERED
                cache.schedule(entry, now + dt)
                model[hoa] = (now + dt, False)
            else:
                cache.hold(entry, now + dt)
                model[hoa] = (now + dt, True)
        got = {e.home_address: (e.expires_at, e.state is DELETED) for e in cache}
        assert got == model
        deadlines = [deadline for deadline, _ in model.values()]
        assert cache.next_deadline() == (min(deadlines) if deadlines else None)
        assert cache.statistics() == {
            "bindings": sum(not deleted for _, deleted in model.values()),
            "deleted_entries": sum(deleted for _, deleted in model.values()),
        }
