"""Agent defects the simulated network found, each pinned as small as it goes (not xfail: they
fail until ``ice/`` is fixed). The many-seed test (test_sim_seeds.py) meets all three.

1. Timer contract at the death deadline. ``IceAgent.get_timer()`` returns
   ``last_response_at + dead_after_s`` for the selected pair, but ``handle_timer`` declares it
   dead only when ``now - last_response_at >= dead_after_s``. In floating point
   ``(t + 2.5) - t`` can be a hair below 2.5 (t = 30.320619155939145 gives 2.4999999999999964),
   so at that deadline ``handle_timer`` does nothing and ``get_timer()`` keeps returning the
   same instant: a driver on virtual time (this simulator, trio's ``autojump_clock``) spins
   forever at one instant; a real-time one busy-loops until its clock moves. 73 of the 1000
   seeds stop on it.

2. A peer's check does not re-trigger a pair whose own check is in progress, even when that
   check has sent its last retransmission and only waits to fail (up to ``rto_max_s``).
   RFC 8445 §7.3.1.4: an In-Progress pair's transaction is cancelled and a triggered check is
   queued. After a repaired outage the controlled agent then answers the MN's checks and
   USE-CANDIDATE heartbeats for seconds without validating the pair itself, long enough in
   seed 197 for its consent to run out (then 3. keeps them apart).

3. Consent lost on one side only. When the controlled agent's own checks on the selected pair
   go unanswered for 30 s while the controlling agent's are answered (its answers come back, its
   requests do not), the controlled agent loses consent on the pair (RFC 7675: no reuse of those
   credentials on that 5-tuple without an ICE restart) and goes to T for good; the controlling
   agent keeps the pair (a consent-lost pair still answers the peer's checks), never sees a
   ``ConsentLost``, so its driver never restarts ICE: the MN sends on D-udp, the peer on T,
   indefinitely. Seed 760 gets there with plain random loss and a repaired cut.
"""

from __future__ import annotations

import random

from simnet import HA_IP4, HA_IP6, Packet, build_world, selections

from ice import stun
from ice.agent import Credentials, IceAgent, IceConfig
from ice.candidate import Candidate

LOCAL = ("2001:db8:1::10", 5000)
REMOTE = ("2001:db8:2::10", 5000)
OURS = Credentials("mine", "minepasswordminepassword")
PEER = Credentials("peer", "peerpasswordpeerpassword")
ANSWERED_AT = 30.320619155939145  # (ANSWERED_AT + 2.5) - ANSWERED_AT == 2.4999999999999964


def agent(*, controlling: bool) -> IceAgent:
    rng = random.Random(1)
    a = IceAgent(
        IceConfig(),
        controlling=controlling,
        credentials=OURS,
        tie_breaker=1,
        random_bytes=rng.randbytes,
    )
    a.add_local_candidate(Candidate.host(LOCAL))
    a.add_remote_candidate(Candidate.host(REMOTE))
    a.set_remote_credentials(PEER)
    return a


def requests(sent: list[tuple[float, bytes]]) -> list[float]:
    return [t for t, data in sent if data[:2] == b"\x00\x01"]


# -- 1. the timer at the death deadline -----------------------------------------------------------


def test_the_float_trap_exists() -> None:
    assert (ANSWERED_AT + 2.5) - ANSWERED_AT < 2.5


def test_get_timer_never_stays_due_while_handle_timer_does_nothing() -> None:
    """The peer answers one check, then goes silent; a driver follows get_timer() as DESIGN §5
    says. The selected pair must be lost at the deadline (within 3 s), not spin there."""
    a = agent(controlling=True)
    # The peer proved it holds our password (its own check), so an answer selects the pair.
    proof = stun.build_check(
        b"proof-txn-01",
        username=f"{OURS.ufrag}:{PEER.ufrag}",
        password=OURS.password,
        priority=1,
        controlling=False,
        tie_breaker=0,
    )
    a.receive_datagram(ANSWERED_AT - 0.05, proof, LOCAL, REMOTE)
    a.datagrams_to_send(ANSWERED_AT - 0.05)
    a.handle_timer(ANSWERED_AT - 0.04)
    [check] = a.datagrams_to_send(ANSWERED_AT - 0.04)
    answer = stun.build_check_success(check.data[8:20], mapped=LOCAL, password=PEER.password)
    a.receive_datagram(ANSWERED_AT, answer, LOCAL, REMOTE)
    assert a.selected_pair() is not None
    now = ANSWERED_AT
    for _ in range(200):
        deadline = a.get_timer()
        assert deadline is not None
        if deadline <= now and a.selected_pair() is not None and now > ANSWERED_AT + 2.4:
            a.handle_timer(now)
            if a.get_timer() == deadline and a.selected_pair() is not None:
                break  # due, handled, due again at the same instant: no progress
        now = max(now, deadline)
        a.handle_timer(now)
        a.datagrams_to_send(now)
        if a.selected_pair() is None:
            break
    assert a.selected_pair() is None, (
        f"get_timer() returns {a.get_timer()!r} <= now={now!r} but handle_timer(now) does "
        f"nothing: the death check is now - last_response_at < dead_after_s"
    )
    assert now - ANSWERED_AT <= 3.0


# -- 2. a peer's check on a pair whose own check only waits to fail -------------------------------


def test_peer_check_on_a_pair_with_an_exhausted_check_triggers_a_new_check_at_once() -> None:
    """The controlled agent's check on the pair went out 4 times into a dead path (0, 0.5, 1.5,
    3.5 s; it fails at 7.5 s). At 4 s the path is back and the MN's nominating check arrives.
    The agent answers it and must check the pair itself now (RFC 8445 §7.3.1.4), so it can
    follow the nomination one round trip later, not after 7.5 s plus a re-probe."""
    a = agent(controlling=False)
    t0 = 100.0
    sent: list[tuple[float, bytes]] = []
    now = t0
    while now < t0 + 4.0:
        a.handle_timer(now)
        sent += [(now, d.data) for d in a.datagrams_to_send(now)]
        deadline = a.get_timer()
        assert deadline is not None
        now = max(now + 1e-6, deadline)
    assert requests(sent) == [t0, t0 + 0.5, t0 + 1.5, t0 + 3.5]
    back = t0 + 4.0
    check = stun.build_check(
        b"mn-check-001",
        username=f"{OURS.ufrag}:{PEER.ufrag}",
        password=OURS.password,
        priority=1862270975,
        controlling=True,
        tie_breaker=2**63,
        use_candidate=True,
    )
    a.receive_datagram(back, check, LOCAL, REMOTE)
    now = back
    later: list[tuple[float, bytes]] = []
    while now < back + 0.2:
        later += [(now, d.data) for d in a.datagrams_to_send(now)]
        a.handle_timer(now)
        deadline = a.get_timer()
        now = back + 0.2 if deadline is None else max(now + 1e-6, min(deadline, back + 0.2))
    later += [(now, d.data) for d in a.datagrams_to_send(now)]
    assert [d[:2] for _, d in later][:1] == [b"\x01\x01"]  # the answer to the MN's check
    assert requests(later), "no check of our own within 200 ms of the peer's check"


# -- 3. consent lost on the controlled side only --------------------------------------------------


def test_consent_lost_by_the_controlled_side_alone_is_not_a_lasting_split() -> None:
    """Two MNs on open networks agree on D-udp. For 45 s the second MN's own checks are lost
    on the way (its answers to the first MN's checks get through). It loses consent on the pair
    and falls back to T; the first MN's checks are answered all along, so it keeps the pair.
    30 s after the fault is gone they must agree again (both on T, or on one pair)."""
    world = build_world(11, mn="open", peer="open", peer_role="mn", families="6")
    world.net.run_until(10)
    assert world.agree() and all(s.path() is not None for s in world.sessions())

    def peer_requests(now: float, pkt: Packet) -> bool:  # its D-udp checks, not its home path's
        return (
            pkt.origin == "peer"
            and pkt.proto == "udp"
            and pkt.dst[0] not in (HA_IP6, HA_IP4)
            and pkt.data[:2] == b"\x00\x01"
        )

    world.net.rules.append(peer_requests)
    world.net.run_until(55)
    world.net.rules.remove(peer_requests)
    world.net.run_until(85)
    mn, peer = world.mn_session(), world.peer_session()
    assert mn is not None and peer is not None
    assert world.net.violations == []
    assert world.agree(), (
        f"MN on {mn.path()} (selections {selections(mn)}), peer on {peer.path()} "
        f"(consent lost: {[p.consent_lost for p in peer.pairs()]}); "
        f"ICE restarts by the MN: {world.mn.direct_statistics().get('ice_restarts', 0)}"
    )
