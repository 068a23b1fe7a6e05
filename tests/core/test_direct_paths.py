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
    ANSWERED_IDLE_S,
    GATHER_WAIT_S,
    MAX_REMOTE_CANDIDATES,
    NEW_PEERS_BURST,
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


def test_every_offer_is_answered_even_when_repeated_at_most_once_a_retry_period() -> None:
    mn, cn = engines()
    mn.start(T0, CN)
    (offer,) = mn.signalling_to_send()
    for _ in range(3):
        cn.receive_signalling(T0, HOA, offer.message)
    assert len(cn.signalling_to_send()) == 1  # copies of one offer: one answer
    cn.receive_signalling(T0 + OFFER_RETRY_S, HOA, offer.message)  # the answer was lost
    (again,) = cn.signalling_to_send()
    items = mice.mice_from_options_untrusted(again.message.options)
    assert mice.AnswerTo(mn.offer_ufrag(CN)) in items
    assert cn.statistics()["peers"] == 1  # one agent, however often the offer came


def test_a_forged_answer_is_refused_and_never_answered() -> None:
    """Attack (issue 12): the first description received used to win. An answer must name the
    ufrag of the offer we have outstanding, which an off-path sender never saw."""
    mn, _ = engines()
    mn.start(T0, CN)
    mn.signalling_to_send()
    attacker = DirectPaths(controlling=False, random_bytes=random.Random(66).randbytes)
    attacker.set_local_candidates(T0, [("2001:db8:66::6", 666)])
    # The attacker answers an offer of its own making (it cannot know ours).
    bait = DirectPaths(controlling=True, random_bytes=random.Random(67).randbytes)
    bait.set_local_candidates(T0, [("2001:db8:67::7", 667)])
    bait.start(T0, HOA)
    (bait_offer,) = bait.signalling_to_send()
    attacker.receive_signalling(T0, CN, bait_offer.message)
    (forged,) = attacker.signalling_to_send()
    mn.receive_signalling(T0 + 0.1, CN, forged.message)
    assert mn.signalling_to_send() == []  # no answer to an answer
    assert mn.statistics()["drop_mice_unmatched_answer"] == 1
    assert mn.pairs(CN) == []  # nothing of the attacker's was taken


def test_a_forged_offer_starts_no_description_ping_pong() -> None:
    """Attack (issue 12): one forged offer, claiming to be the CN, used to start an endless
    exchange of descriptions between the MN and the real CN. Answers are never answered."""
    mn, cn = engines()
    bait = DirectPaths(controlling=True, random_bytes=random.Random(68).randbytes)
    bait.set_local_candidates(T0, [("2001:db8:66::6", 666)])
    bait.start(T0, HOA)
    (forged,) = bait.signalling_to_send()
    mn.receive_signalling(T0, CN, forged.message)
    sent = 0
    for _ in range(50):
        moved = False
        for s in mn.signalling_to_send():
            sent, moved = sent + 1, True
            cn.receive_signalling(T0, HOA, s.message)
        for s in cn.signalling_to_send():
            sent, moved = sent + 1, True
            mn.receive_signalling(T0, CN, s.message)
        if not moved:
            break
    assert sent == 1  # the MN's answer, which the CN drops: it offered nothing
    assert cn.statistics()["drop_mice_unmatched_answer"] == 1


def test_unsolicited_offers_create_peers_only_within_budget_and_idle_ones_expire() -> None:
    _, cn = engines()
    offerer = DirectPaths(controlling=True, random_bytes=random.Random(69).randbytes)
    offerer.set_local_candidates(T0, [MN_SOCK])
    offerer.start(T0, CN)
    (offer,) = offerer.signalling_to_send()
    for i in range(40):  # a burst of spoofed home addresses
        cn.receive_signalling(T0, IPv6Address(f"2001:db8:aaaa::{i + 100:x}"), offer.message)
    stats = cn.statistics()
    assert stats["peers"] == NEW_PEERS_BURST
    assert stats["drop_mice_new_peer_rate"] == 40 - NEW_PEERS_BURST
    # None of them ever checks: a minute later they are gone, and the slots are free again.
    cn.handle_timer(T0 + ANSWERED_IDLE_S + 1)
    assert cn.statistics()["peers"] == 0
    assert cn.statistics()["answered_peers_expired"] == NEW_PEERS_BURST


def test_a_description_adds_a_few_reachable_candidates_only() -> None:
    _, cn = engines()
    cands = [mice.Candidate("a", 100, "host", IPv6Address("::1"), 1)]  # loopback
    cands += [mice.Candidate("b", 100, "host", IPv6Address("ff02::1"), 1)]  # multicast
    cands += [mice.Candidate("c", 100, "host", IPv6Address("fe80::1"), 1)]  # link-local
    cands += [
        mice.Candidate(f"x{i}", 100 + i, "host", IPv6Address(f"2001:db8:77::{i + 1:x}"), 7)
        for i in range(30)
    ]
    offer = mice.mice_options([mice.Credentials("abcd", "p" * 22), *cands, mice.EndOfCandidates()])
    cn.receive_signalling(T0, HOA, ExperimentalMessage(offer))
    remotes = {p.remote.address for p in cn.pairs(HOA)}
    assert len(remotes) == MAX_REMOTE_CANDIDATES
    assert not {("::1", 1), ("ff02::1", 1), ("fe80::1", 1)} & remotes
    stats = cn.statistics()
    assert stats["drop_mice_unusable_candidate"] == 3


def test_an_offer_with_a_new_ufrag_restarts_the_answering_agent() -> None:
    mn, cn = engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    assert cn.selected(HOA) is not None
    mn.set_local_candidates(T0 + 3, [("2001:db8:9::10", 5000)])  # moved: an ICE restart
    (offer,) = mn.signalling_to_send()
    cn.receive_signalling(T0 + 3, HOA, offer.message)
    # Make-before-break: the old pair carries on until the peer proves the restart is its own
    # (nothing authenticates an offer), then the new agent's pair takes over.
    assert cn.selected(HOA) is not None
    events(cn)
    exchange(mn, cn, T0 + 3)
    run(mn, cn, T0 + 6)
    sel = cn.selected(HOA)
    assert sel is not None and sel.remote.address == ("2001:db8:9::10", 5000)
    assert [e.pair is not None for e in events(cn)][-1]
    assert cn.statistics()["restarts_taken"] == 1


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
