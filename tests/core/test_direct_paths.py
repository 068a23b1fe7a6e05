"""DirectPaths: the per-peer ICE engine shared by mobile node and correspondent (virtual time).

Two engines, an offering (controlling) one and an answering (controlled) one, exchange their
offers and answers directly and their STUN over a lossless in-memory network; what is tested is
the engine's own work: offers until answered, answers to every offer, restarts, the peer bound,
the gathering wait, and the events the node cores turn into forwarding entries.
"""

from __future__ import annotations

import random
from ipaddress import IPv6Address

from mipnode.core.direct_paths import (
    GATHER_WAIT_S,
    OFFER_RETRY_S,
    OFFER_TRIES,
    DirectPathChanged,
    DirectPaths,
)
from mipnode.wire import mice
from mipnode.wire.mh import ExperimentalMessage

HOA = IPv6Address("2001:db8:aaaa::1")
CN = IPv6Address("2001:db8:cccc::1")
MN_SOCK = ("2001:db8:1::10", 5000)
CN_SOCK = ("2001:db8:2::20", 6000)
T0 = 100.0


def engines(seed: int = 1) -> tuple[DirectPaths, DirectPaths]:
    rng = random.Random(seed)
    mn = DirectPaths(controlling=True, random_bytes=rng.randbytes)
    cn = DirectPaths(controlling=False, random_bytes=rng.randbytes)
    mn.set_local_candidates(T0, [MN_SOCK])
    cn.set_local_candidates(T0, [CN_SOCK])
    return mn, cn


def exchange(mn: DirectPaths, cn: DirectPaths, now: float, *, signalling: bool = True) -> None:
    """Deliver everything both have queued (signalling and STUN) until nothing moves."""
    for _ in range(50):
        moved = False
        for sig in mn.signalling_to_send():
            moved = True
            if signalling:
                cn.receive_signalling(now, HOA, sig.message)
        for sig in cn.signalling_to_send():
            moved = True
            if signalling:
                mn.receive_signalling(now, CN, sig.message)
        for src, dst in ((mn, cn), (cn, mn)):
            for d in src.datagrams_to_send(now):
                moved = True
                dst.receive_datagram(now, d.data, d.remote, d.local)
        if not moved:
            return


def run(mn: DirectPaths, cn: DirectPaths, until: float) -> float:
    now = T0
    while True:
        timers = [t for t in (mn.get_timer(), cn.get_timer()) if t is not None]
        if not timers or min(timers) > until:
            return until
        now = max(now, min(timers))
        mn.handle_timer(now)
        cn.handle_timer(now)
        exchange(mn, cn, now)


def events(engine: DirectPaths) -> list[DirectPathChanged]:
    out = []
    while (e := engine.next_event()) is not None:
        out.append(e)
    return out


def test_an_offer_is_answered_and_both_sides_select_the_pair() -> None:
    mn, cn = engines()
    assert mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    sel_mn, sel_cn = mn.selected(CN), cn.selected(HOA)
    assert sel_mn is not None and sel_cn is not None
    assert (sel_mn.local.base, sel_mn.remote.address) == (MN_SOCK, CN_SOCK)
    (up,) = [e for e in events(mn) if e.pair is not None]
    assert up.peer == CN


def test_an_unanswered_offer_is_repeated_then_given_up() -> None:
    mn, _ = engines()
    mn.start(T0, CN)
    assert len(mn.signalling_to_send()) == 1
    sent = 1
    now = T0
    for _ in range(OFFER_TRIES + 3):
        now += OFFER_RETRY_S
        mn.handle_timer(now)
        sent += len(mn.signalling_to_send())
    assert sent == OFFER_TRIES
    assert mn.statistics()["offers_unanswered"] == 1


def test_every_offer_is_answered_even_when_repeated() -> None:
    mn, cn = engines()
    mn.start(T0, CN)
    (offer,) = mn.signalling_to_send()
    for _ in range(3):
        cn.receive_signalling(T0, HOA, offer.message)
    assert len(cn.signalling_to_send()) == 3
    assert cn.statistics()["peers"] == 1  # one agent, however often the offer came


def test_an_offer_with_a_new_ufrag_restarts_the_answering_agent() -> None:
    mn, cn = engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    assert cn.selected(HOA) is not None
    mn.set_local_candidates(T0 + 3, [("2001:db8:9::10", 5000)])  # moved: an ICE restart
    (offer,) = mn.signalling_to_send()
    cn.receive_signalling(T0 + 3, HOA, offer.message)
    assert cn.selected(HOA) is None  # the old pair is gone with the old agent
    assert [e.pair for e in events(cn)][-1] is None


def test_the_answering_side_holds_at_most_max_peers() -> None:
    rng = random.Random(3)
    cn = DirectPaths(controlling=False, random_bytes=rng.randbytes, max_peers=4)
    cn.set_local_candidates(T0, [CN_SOCK])
    offerer = DirectPaths(controlling=True, random_bytes=rng.randbytes)
    offerer.set_local_candidates(T0, [MN_SOCK])
    offerer.start(T0, CN)
    (offer,) = offerer.signalling_to_send()
    for i in range(10):
        cn.receive_signalling(T0, IPv6Address(f"2001:db8:aaaa::{i + 10:x}"), offer.message)
    stats = cn.statistics()
    assert stats["peers"] == 4 and stats["drop_mice_too_many_peers"] == 6


def test_an_offer_waits_for_gathering_at_most_the_gather_wait() -> None:
    rng = random.Random(4)
    mn = DirectPaths(controlling=True, random_bytes=rng.randbytes)
    mn.set_local_candidates(T0, [MN_SOCK], gathering=True)
    mn.start(T0, CN)
    assert mn.signalling_to_send() == []
    mn.add_server_reflexive(MN_SOCK, ("2001:db8:ff::1", 7000), "2001:db8:ffff::1")
    assert mn.get_timer() == T0 + GATHER_WAIT_S
    mn.handle_timer(T0 + GATHER_WAIT_S)
    (offer,) = mn.signalling_to_send()
    items = mice.mice_from_options_untrusted(offer.message.options)
    kinds = sorted(i.kind for i in items if isinstance(i, mice.Candidate))
    assert kinds == ["host", "srflx"]


def test_gathering_done_sends_waiting_offers_at_once() -> None:
    rng = random.Random(5)
    mn = DirectPaths(controlling=True, random_bytes=rng.randbytes)
    mn.set_local_candidates(T0, [MN_SOCK], gathering=True)
    mn.start(T0, CN)
    mn.gathering_done(T0 + 0.1)
    assert len(mn.signalling_to_send()) == 1


def test_garbage_signalling_changes_nothing_and_is_counted() -> None:
    _, cn = engines()
    cn.receive_signalling(T0, HOA, ExperimentalMessage(options=()))
    assert cn.statistics()["peers"] == 0
    assert cn.statistics()["drop_mice_without_credentials"] == 1


def test_a_dead_pair_is_reported_and_comes_back_after_repair() -> None:
    mn, cn = engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    events(mn)
    # Drop all STUN for 5 s: heartbeats die, the pair is lost within 3 s.
    now = T0 + 3
    while now < T0 + 8:
        timers = [t for t in (mn.get_timer(), cn.get_timer()) if t is not None]
        now = min(timers)
        mn.handle_timer(now)
        cn.handle_timer(now)
        mn.datagrams_to_send(now)
        cn.datagrams_to_send(now)
    lost = [e for e in events(mn) if e.pair is None]
    assert lost and mn.selected(CN) is None
    run(mn, cn, now + 30)
    assert mn.selected(CN) is not None
