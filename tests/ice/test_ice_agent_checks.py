"""One agent against a hand-driven peer: pacing, RTO ladder, triggered checks, peer-reflexive
candidates, role conflicts, authentication, budgets. Virtual time, exact deadlines."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from icenet import seeded_bytes

from ice import stun
from ice.agent import (
    Credentials,
    IceAgent,
    IceConfig,
    OutgoingDatagram,
    PathLost,
    PathSelected,
    PeerReflexiveCandidate,
    RoleChanged,
    new_credentials,
)
from ice.candidate import Candidate, CandidateType, candidate_priority, local_preference
from ice.checklist import PairState

T0 = 1000.0
LOCAL = ("2001:db8:1::1", 5000)
OURS = Credentials("mine", "minepasswordminepassword")
PEER = Credentials("peer", "peerpasswordpeerpassword")
TID = b"peer-txn-001"


def remote(i: int, pref: int = 65535) -> Candidate:
    return Candidate.host((f"2001:db8:2::{i}", 6000), local_pref=pref)


def make(
    *,
    controlling: bool = True,
    tie: int = 10,
    config: IceConfig | None = None,
    remotes: int = 1,
    creds: bool = True,
) -> IceAgent:
    agent = IceAgent(
        config or IceConfig(),
        controlling=controlling,
        credentials=OURS,
        tie_breaker=tie,
        random_bytes=seeded_bytes(7),
    )
    agent.add_local_candidate(Candidate.host(LOCAL))
    for i in range(1, remotes + 1):
        agent.add_remote_candidate(remote(i, 65535 - i))
    if creds:
        agent.set_remote_credentials(PEER)
    return agent


def peer_check(
    *,
    controlling: bool = False,
    tie: int = 5,
    use_candidate: bool = False,
    priority: int = 1862270975,
    username: str = "mine:peer",
    password: str = OURS.password,
    tid: bytes = TID,
) -> bytes:
    return stun.build_check(
        tid,
        username=username,
        password=password,
        priority=priority,
        controlling=controlling,
        tie_breaker=tie,
        use_candidate=use_candidate,
    )


def prove(agent: IceAgent, at: float = T0 - 10) -> None:
    """The peer proves it holds our password (a check of its own, signed with it) long before
    the test starts; without that, answers select nothing and a 487 moves no role."""
    agent.receive_datagram(at, peer_check(tid=b"proof-txn-01"), LOCAL, remote(1).address)
    agent.datagrams_to_send(at)
    events(agent)
    assert agent.statistics()["peer_proven"] == 1


def answer(dgram: OutgoingDatagram, password: str = PEER.password) -> bytes:
    tid = stun.parse_stun_untrusted(dgram.data).transaction_id
    return stun.build_check_success(tid, mapped=dgram.local, password=password)


def decode_request(dgram: OutgoingDatagram) -> stun.CheckRequest:
    msg = stun.parse_check_untrusted(dgram.data, local_password=PEER.password, remote_password=None)
    assert isinstance(msg, stun.CheckRequest)
    return msg


def decode_answer(dgram: OutgoingDatagram) -> stun.CheckResponse:
    msg = stun.parse_check_untrusted(
        dgram.data, local_password="unused-unused-unused-xx", remote_password=OURS.password
    )
    assert isinstance(msg, stun.CheckResponse)
    return msg


def drive(
    agent: IceAgent,
    until: float,
    on_send: Callable[[float, OutgoingDatagram], None] | None = None,
    start: float = T0,
) -> list[tuple[float, OutgoingDatagram]]:
    """Run the agent's timers from ``start`` up to ``until``; return what it sent, with times.

    A deadline in the past (the agent reports work as due) runs at ``start``.
    """
    sent: list[tuple[float, OutgoingDatagram]] = []
    now = start
    for _ in range(10_000):
        timer = agent.get_timer()
        if timer is None or timer > until:
            return sent
        now = t = max(now, timer)
        agent.handle_timer(t)
        for d in agent.datagrams_to_send(t):
            sent.append((t, d))
            if on_send:
                on_send(t, d)
    raise AssertionError("timer loop did not settle")


def events(agent: IceAgent) -> list[object]:
    out = []
    while (e := agent.next_event()) is not None:
        out.append(e)
    return out


# -- credentials and configuration -------------------------------------------------------------


def test_new_credentials_have_rfc_strength() -> None:
    c = new_credentials(seeded_bytes(1))
    assert len(c.ufrag) == 8 and len(c.password) == 24  # 48 and 144 random bits
    assert c != new_credentials(seeded_bytes(2))
    assert "password" not in repr(c) or c.password not in repr(c)
    with pytest.raises(ValueError):
        Credentials("abc", "x" * 22)
    with pytest.raises(ValueError):
        Credentials("abcd", "x" * 21)
    with pytest.raises(ValueError):
        Credentials("ab:d", "x" * 22)


def test_config_enforces_the_budgets() -> None:
    IceConfig()
    for bad in (
        {"ta_s": 0.019},
        {"rto_initial_s": 0.4},
        {"max_pairs": 101},
        {"heartbeat_interval_s": 3.0},
        {"consent_timeout_s": 31.0},
    ):
        with pytest.raises(ValueError):
            IceConfig(**bad)  # type: ignore[arg-type]


# -- pacing and retransmission -------------------------------------------------------------------


def test_no_checks_before_the_remote_credentials() -> None:
    agent = make(creds=False)
    assert drive(agent, T0 + 5) == []
    agent.set_remote_credentials(PEER)
    timer = agent.get_timer()
    assert timer is not None and timer <= T0 + 5
    agent.handle_timer(T0 + 5)
    [d] = agent.datagrams_to_send(T0 + 5)
    assert d.local == LOCAL and d.remote == remote(1).address


def test_checks_are_paced_ta_apart_in_priority_order() -> None:
    agent = make(remotes=5)
    agent.handle_timer(T0)
    sent = [(T0, d) for d in agent.datagrams_to_send(T0)] + drive(agent, T0 + 0.3)
    times = [t for t, _ in sent]
    assert times == pytest.approx([T0 + 0.02 * k for k in range(5)], abs=1e-9)
    assert [d.remote for _, d in sent] == [remote(i).address for i in range(1, 6)]
    req = decode_request(sent[0][1])
    assert req.username == "peer:mine"
    assert req.ice_controlling == 10 and req.ice_controlled is None and not req.use_candidate
    # RFC 8445 §7.1.1: PRIORITY is what a peer-reflexive candidate of our base would get.
    assert req.priority == candidate_priority("prflx")


def test_custom_ta_is_respected() -> None:
    agent = make(remotes=3, config=IceConfig(ta_s=0.05))
    agent.handle_timer(T0)
    agent.datagrams_to_send(T0)
    assert agent.get_timer() == pytest.approx(T0 + 0.05)


def test_rto_ladder_then_failure() -> None:
    agent = make()
    sent = drive(agent, T0 + 9)
    # First call happens at the agent's initial timer (due at once); shift to its time.
    start = sent[0][0]
    assert [t - start for t, _ in sent] == pytest.approx([0, 0.5, 1.5, 3.5])
    assert len({d.data for _, d in sent}) == 1  # retransmissions repeat the request
    [pair] = agent.pairs()
    assert pair.state is PairState.FAILED and not pair.valid
    stats = agent.statistics()
    assert stats["checks_sent"] == 1 and stats["retransmissions"] == 3
    assert stats["checks_failed"] == 1
    assert pair.checks_sent == 4


def test_failure_is_seven_and_a_half_seconds_after_the_first_send() -> None:
    agent = make()
    agent.handle_timer(T0)
    agent.datagrams_to_send(T0)
    drive(agent, T0 + 7.5 - 1e-6)
    assert agent.pairs()[0].state is PairState.IN_PROGRESS
    drive(agent, T0 + 7.5)
    assert agent.pairs()[0].state is PairState.FAILED


def test_rto_grows_with_the_number_of_active_pairs() -> None:
    agent = make(remotes=40)  # RFC 8445 §14.3: max(500 ms, Ta * (waiting + in-progress))
    agent.handle_timer(T0)
    [first] = agent.datagrams_to_send(T0)
    sent = drive(agent, T0 + 1.0)
    repeats = [t for t, d in sent if d.data == first.data]
    assert repeats == [pytest.approx(T0 + 0.8)]


def test_karn_no_rtt_sample_from_a_retransmitted_check() -> None:
    agent = make()
    sent = drive(agent, T0 + 0.6)
    assert len(sent) == 2
    t, d = sent[-1]
    agent.receive_datagram(t + 0.01, answer(d), d.local, d.remote)
    [pair] = agent.pairs()
    assert pair.valid and pair.rtt_s is None


# -- success, selection, nomination ----------------------------------------------------------------


def test_success_validates_selects_and_nominates() -> None:
    agent = make(remotes=2)
    prove(agent)
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    agent.receive_datagram(T0 + 0.03, answer(d), d.local, d.remote)
    [ev] = events(agent)
    assert isinstance(ev, PathSelected) and ev.previous is None
    assert ev.pair.remote.address == d.remote and ev.pair.valid
    selected = agent.selected_pair()
    assert selected is not None and selected.rtt_s == pytest.approx(0.03)
    assert selected.mapped == LOCAL and selected.nominated
    # The pacer slot is open (last check at T0): a heartbeat with USE-CANDIDATE goes at once.
    assert agent.get_timer() == pytest.approx(T0 + 0.03)
    agent.handle_timer(T0 + 0.03)
    [hb] = agent.datagrams_to_send(T0 + 0.03)
    assert hb.remote == d.remote and decode_request(hb).use_candidate
    assert agent.statistics()["heartbeats_sent"] == 1


def test_controlled_agent_follows_use_candidate_once_it_validated_the_pair() -> None:
    agent = make(controlling=False)
    r1 = remote(1).address
    agent.receive_datagram(T0, peer_check(controlling=True, use_candidate=True), LOCAL, r1)
    [resp] = agent.datagrams_to_send(T0)
    assert decode_answer(resp).success
    assert agent.selected_pair() is None  # not validated by us yet: a triggered check first
    agent.handle_timer(T0)
    [check] = agent.datagrams_to_send(T0)
    assert check.remote == r1 and not decode_request(check).use_candidate
    agent.receive_datagram(T0 + 0.02, answer(check), LOCAL, r1)
    selected = agent.selected_pair()
    assert selected is not None and selected.remote.address == r1 and selected.nominated


# -- triggered checks and peer-reflexive candidates -----------------------------------------------


def test_request_from_unknown_address_learns_prflx_and_triggers_a_check_first() -> None:
    agent = make(controlling=False, remotes=2)
    agent.handle_timer(T0)
    [ordinary] = agent.datagrams_to_send(T0)
    assert ordinary.remote == remote(1).address
    nat = ("2001:db8:99::7", 41000)
    check = peer_check(controlling=True, priority=1234567)
    agent.receive_datagram(T0 + 0.005, check, LOCAL, nat)
    [resp] = agent.datagrams_to_send(T0 + 0.005)
    assert resp.remote == nat and decode_answer(resp).mapped == nat
    [ev] = events(agent)
    assert isinstance(ev, PeerReflexiveCandidate)
    assert ev.candidate.kind is CandidateType.PRFLX and ev.candidate.priority == 1234567
    assert ev.candidate.address == nat
    # Triggered check at the next Ta slot, before the waiting ordinary pair (remote 2).
    assert agent.get_timer() == pytest.approx(T0 + 0.02)
    agent.handle_timer(T0 + 0.02)
    [triggered] = agent.datagrams_to_send(T0 + 0.02)
    assert triggered.remote == nat
    assert agent.statistics()["triggered_checks"] == 1
    # A later signalled candidate for the same address replaces the prflx one.
    agent.add_remote_candidate(Candidate.host(nat))
    kinds = {p.remote.address: p.remote.kind for p in agent.pairs()}
    assert kinds[nat] is CandidateType.HOST


def test_request_on_a_failed_pair_triggers_a_new_check() -> None:
    agent = make()
    drive(agent, T0 + 8)
    assert agent.pairs()[0].state is PairState.FAILED
    now = T0 + 8.0
    agent.receive_datagram(now, peer_check(), LOCAL, remote(1).address)
    agent.datagrams_to_send(now)
    assert agent.pairs()[0].state is PairState.WAITING
    agent.handle_timer(now)
    [check] = agent.datagrams_to_send(now)
    assert check.remote == remote(1).address


def test_frozen_pairs_wait_for_their_foundation() -> None:
    agent = make(remotes=0)
    # Same remote IP, two ports: one pair foundation (RFC 8445 §6.1.2.6).
    first, second = Candidate.host(("2001:db8:2::1", 6000)), Candidate.host(("2001:db8:2::1", 6001))
    assert first.foundation == second.foundation
    agent.add_remote_candidate(first)
    agent.add_remote_candidate(second)
    states = {p.remote.address: p.state for p in agent.pairs()}
    assert states == {first.address: PairState.WAITING, second.address: PairState.FROZEN}
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    assert d.remote == first.address
    agent.receive_datagram(T0 + 0.01, answer(d), d.local, d.remote)
    states = {p.remote.address: p.state for p in agent.pairs()}
    assert states[second.address] is PairState.WAITING  # unfrozen by the success


def test_frozen_pair_is_checked_when_nothing_waits() -> None:
    agent = make(remotes=0)
    agent.add_remote_candidate(Candidate.host(("2001:db8:2::1", 6000)))
    agent.add_remote_candidate(Candidate.host(("2001:db8:2::1", 6001)))
    sent = drive(agent, T0 + 0.1)
    assert sorted(d.remote[1] for _, d in sent) == [6000, 6001]


# -- role conflicts (RFC 8445 §7.3.1.1, §7.2.5.1) ----------------------------------------------


@pytest.mark.parametrize(
    ("we_control", "our_tie", "their_tie", "expect_487"),
    [
        (True, 10, 5, True),  # both controlling, ours larger: 487
        (True, 10, 10, True),  # equal: the receiver of the conflict answers 487
        (True, 5, 10, False),  # ours smaller: we become controlled
        (False, 5, 10, True),  # both controlled, ours smaller: 487
        (False, 10, 5, False),  # ours larger: we become controlling
    ],
)
def test_role_conflict_on_an_incoming_check(
    we_control: bool, our_tie: int, their_tie: int, expect_487: bool
) -> None:
    agent = make(controlling=we_control, tie=our_tie)
    data = peer_check(controlling=we_control, tie=their_tie)
    agent.receive_datagram(T0, data, LOCAL, remote(1).address)
    [resp] = agent.datagrams_to_send(T0)
    answer_ = decode_answer(resp)
    if expect_487:
        assert answer_.error_code == 487 and agent.controlling is we_control
        assert events(agent) == []
        assert len(resp.data) <= len(data)
    else:
        assert answer_.success and agent.controlling is not we_control
        assert events(agent) == [RoleChanged(not we_control)]


def test_487_answer_switches_role_and_retries() -> None:
    agent = make(controlling=True, tie=3, remotes=1)
    prove(agent)
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    tid = stun.parse_stun_untrusted(d.data).transaction_id
    err = stun.build_check_error(tid, code=487, reason="Role Conflict", password=PEER.password)
    agent.receive_datagram(T0 + 0.01, err, d.local, d.remote)
    assert agent.controlling is False
    assert events(agent) == [RoleChanged(False)]
    agent.handle_timer(T0 + 0.02)
    [retry] = agent.datagrams_to_send(T0 + 0.02)
    req = decode_request(retry)
    assert req.ice_controlled == 3 and req.ice_controlling is None
    assert stun.parse_stun_untrusted(retry.data).transaction_id != tid
    # Pair priorities follow the role: G is now the peer's candidate.
    pair = agent.pairs()[0]
    assert pair.priority == pair.priority  # recomputed without error


def test_stale_487_after_a_role_switch_is_ignored() -> None:
    agent = make(controlling=True, tie=3, remotes=2)
    prove(agent)
    agent.handle_timer(T0)
    [a] = agent.datagrams_to_send(T0)
    agent.handle_timer(T0 + 0.02)
    [b] = agent.datagrams_to_send(T0 + 0.02)
    for d in (a, b):  # both checks were sent as controlling; both come back 487
        tid = stun.parse_stun_untrusted(d.data).transaction_id
        err = stun.build_check_error(tid, code=487, reason="Role Conflict", password=PEER.password)
        agent.receive_datagram(T0 + 0.03, err, d.local, d.remote)
    assert agent.controlling is False
    assert events(agent) == [RoleChanged(False)]


def test_an_unproven_peer_gets_no_pair_selected_by_its_answers_or_a_487() -> None:
    """Attack (issue 12): a forged description brings a password its sender knows, so it can
    answer our checks and send us a 487 signed with it (which flipped a controlled agent to
    controlling, and a controlling agent selects on answers). Until the peer proves it holds
    our password no pair is selected, whatever our role; a proof selects at once."""
    agent = make(controlling=True, tie=3, remotes=2)
    agent.handle_timer(T0)
    [a] = agent.datagrams_to_send(T0)
    agent.receive_datagram(T0 + 0.01, answer(a), a.local, a.remote)
    assert agent.selected_pair() is None and events(agent) == []
    agent.handle_timer(T0 + 0.02)
    [b] = agent.datagrams_to_send(T0 + 0.02)
    tid = stun.parse_stun_untrusted(b.data).transaction_id
    err = stun.build_check_error(tid, code=487, reason="Role Conflict", password=PEER.password)
    agent.receive_datagram(T0 + 0.03, err, b.local, b.remote)
    stats = agent.statistics()
    assert stats["role_conflict_unproven"] == 1 and stats["selection_unproven"] >= 1
    assert agent.selected_pair() is None
    agent.receive_datagram(T0 + 0.05, answer(a), a.local, a.remote)  # answered again: no
    assert agent.selected_pair() is None


# -- authentication failures are ignored ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (peer_check(password="wrongpasswordwrongpass"), "drop_stun_integrity"),
        (peer_check(username="other:peer"), "drop_username"),
        (peer_check(username="mine:else"), "drop_username"),
        (peer_check(username="mine"), "drop_username"),
        (peer_check()[:-1] + bytes([peer_check()[-1] ^ 1]), "drop_stun_fingerprint"),
        (b"\x60" + bytes(59), "drop_not_stun"),
    ],
)
def test_bad_requests_are_dropped_silently(data: bytes, reason: str) -> None:
    agent = make()
    agent.receive_datagram(T0, data, LOCAL, remote(1).address)
    assert agent.datagrams_to_send(T0) == []
    assert events(agent) == []
    assert agent.statistics()[reason] == 1
    assert all(p.state is PairState.WAITING for p in agent.pairs())


def test_request_to_an_address_that_is_not_ours_is_dropped() -> None:
    agent = make()
    agent.receive_datagram(T0, peer_check(), ("2001:db8:1::99", 5000), remote(1).address)
    assert agent.datagrams_to_send(T0) == []
    assert agent.statistics()["drop_unknown_local_address"] == 1


def test_response_signed_with_the_wrong_password_is_ignored() -> None:
    agent = make()
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    agent.receive_datagram(T0 + 0.01, answer(d, password=OURS.password), d.local, d.remote)
    [pair] = agent.pairs()
    assert not pair.valid and pair.state is PairState.IN_PROGRESS
    assert agent.statistics()["drop_stun_integrity"] == 1
    assert len(drive(agent, T0 + 0.6)) == 1  # retransmission continues


@pytest.mark.parametrize("wrong", ["source", "local"])
def test_response_from_elsewhere_fails_the_check(wrong: str) -> None:
    agent = make()
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    src = ("2001:db8:2::77", 6000) if wrong == "source" else d.remote
    dst = ("2001:db8:1::2", 5000) if wrong == "local" else d.local
    agent.receive_datagram(T0 + 0.01, answer(d), dst, src)
    [pair] = agent.pairs()
    assert not pair.valid and pair.state is PairState.FAILED
    assert agent.selected_pair() is None and events(agent) == []
    assert agent.statistics()["drop_response_not_symmetric"] == 1


def test_replayed_response_is_dropped() -> None:
    agent = make()
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    resp = answer(d)
    agent.receive_datagram(T0 + 0.01, resp, d.local, d.remote)
    events(agent)
    agent.receive_datagram(T0 + 0.02, resp, d.local, d.remote)
    assert agent.statistics()["drop_unknown_transaction"] == 1
    assert events(agent) == []


# -- budgets ---------------------------------------------------------------------------------------


def test_answers_are_never_larger_than_requests() -> None:
    agent = IceAgent(
        IceConfig(),
        controlling=True,
        credentials=Credentials("abcd", "a" * 22),
        tie_breaker=10,
        random_bytes=seeded_bytes(1),
    )
    v6 = ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff1", 65535)
    agent.add_local_candidate(Candidate.host(v6))
    agent.set_remote_credentials(Credentials("efgh", "b" * 22))
    src = ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff2", 65535)
    for controlling, tie in ((False, 1), (True, 1)):  # a success, then a 487
        req = stun.build_check(
            TID,
            username="abcd:efgh",
            password="a" * 22,
            priority=1,
            controlling=controlling,
            tie_breaker=tie,
        )
        agent.receive_datagram(T0, req, v6, src)
        out = [d for d in agent.datagrams_to_send(T0) if d.remote == src]
        assert out and all(len(d.data) <= len(req) for d in out)
    assert "amplification_suppressed" not in agent.statistics()


def test_at_most_100_pairs_keeping_the_best() -> None:
    agent = IceAgent(
        IceConfig(),
        controlling=True,
        credentials=OURS,
        tie_breaker=1,
        random_bytes=seeded_bytes(1),
    )
    for i in range(11):
        agent.add_local_candidate(
            Candidate.host((f"2001:db8:1::{i + 1}", 5000), local_pref=local_preference(i))
        )
    remotes = [remote(i + 1, local_preference(i)) for i in range(11)]
    for r in remotes:
        agent.add_remote_candidate(r)
    pairs = agent.pairs()
    assert len(pairs) == 100
    all_priorities = sorted(
        (
            (min(lc.priority, rc.priority) << 32)
            + 2 * max(lc.priority, rc.priority)
            + (lc.priority > rc.priority)
            for lc in agent.local_candidates()
            for rc in remotes
        ),
        reverse=True,
    )
    assert sorted((p.priority for p in pairs), reverse=True) == all_priorities[:100]
    # A check from yet another address is still answered, the list stays capped.
    agent.receive_datagram(T0, peer_check(controlling=False), LOCAL, ("2001:db8:77::1", 1))
    assert agent.datagrams_to_send(T0)
    assert len(agent.pairs()) <= 100


def test_relayed_candidate_is_listed_but_never_checked() -> None:
    agent = make()
    relay = Candidate.relayed(("2001:db8:a::10", 4191), LOCAL, server_ip="2001:db8:ha::1")
    agent.add_local_candidate(relay)
    srflx = Candidate.server_reflexive(("2001:db8:f::1", 7000), LOCAL, server_ip="2001:db8::5")
    agent.add_local_candidate(srflx)
    pairs = agent.pairs()
    assert {p.state for p in pairs if p.relayed} == {PairState.RELAYED}
    assert [p.kind for p in pairs if p.relayed] == ["T"]
    assert not any(p.local.kind is CandidateType.SRFLX for p in pairs)
    sent = drive(agent, T0 + 40)
    assert sent and all(d.local == LOCAL for _, d in sent)
    assert all(d.local != relay.address for _, d in sent)


def test_srflx_local_candidate_is_kept_for_advertising_only() -> None:
    agent = make()
    srflx = Candidate.server_reflexive(
        ("203.0.113.1", 7000), ("10.0.0.1", 7000), server_ip="2001:db8::5"
    )
    agent.add_local_candidate(srflx)
    assert srflx in agent.local_candidates()
    with pytest.raises(ValueError):
        agent.add_local_candidate(Candidate(CandidateType.PRFLX, LOCAL, LOCAL, 5, "f"))


# -- heartbeats, death, re-probes: exact deadlines ------------------------------------------------


def selected_agent() -> tuple[IceAgent, OutgoingDatagram]:
    """A controlling agent whose only pair was validated at T0 + 0.02."""
    agent = make()
    prove(agent)
    agent.handle_timer(T0)
    [d] = agent.datagrams_to_send(T0)
    agent.receive_datagram(T0 + 0.02, answer(d), d.local, d.remote)
    events(agent)
    return agent, d


def test_heartbeats_every_second_and_death_2_5_s_after_the_last_answer() -> None:
    agent, d = selected_agent()
    sent = drive(agent, T0 + 2.52 - 1e-9, start=T0 + 0.02)
    heartbeats = [(t, x) for t, x in sent]
    assert [t for t, _ in heartbeats] == pytest.approx([T0 + 0.02, T0 + 1.02, T0 + 2.02])
    assert all((x.local, x.remote) == (d.local, d.remote) for _, x in heartbeats)
    assert all(decode_request(x).use_candidate for _, x in heartbeats)
    assert agent.selected_pair() is not None and events(agent) == []
    assert agent.get_timer() == pytest.approx(T0 + 0.02 + 2.5)
    agent.handle_timer(T0 + 2.52)
    [lost] = events(agent)
    assert isinstance(lost, PathLost) and lost.reason == "timeout"
    assert agent.selected_pair() is None
    pair = agent.pairs()[0]
    assert not pair.valid and not pair.nominated
    # Every pair is re-probed at once to look for a way back (here: the same pair).
    [reprobe] = agent.datagrams_to_send(T0 + 2.52)
    assert not decode_request(reprobe).use_candidate
    assert pair.state is PairState.IN_PROGRESS


def test_answered_heartbeats_keep_the_pair_and_measure_rtt() -> None:
    agent, _ = selected_agent()

    def respond(t: float, x: OutgoingDatagram) -> None:
        agent.receive_datagram(t + 0.05, answer(x), x.local, x.remote)

    drive(agent, T0 + 30, respond, start=T0 + 0.02)
    pair = agent.selected_pair()
    assert pair is not None and pair.rtt_s is not None
    assert 0.02 < pair.rtt_s < 0.05  # smoothed from 20 ms towards 50 ms
    assert [e for e in events(agent) if not isinstance(e, PathSelected)] == []
    assert agent.statistics()["heartbeats_sent"] >= 29


def test_reprobe_period_is_jittered_within_bounds() -> None:
    periods = set()
    for seed in range(8):
        agent = IceAgent(
            IceConfig(),
            controlling=True,
            credentials=OURS,
            tie_breaker=1,
            random_bytes=seeded_bytes(seed),
        )
        agent.add_local_candidate(Candidate.host(LOCAL))
        agent.add_remote_candidate(remote(1))
        agent.set_remote_credentials(PEER)
        sent = drive(agent, T0 + 40)
        seen: set[bytes] = set()
        starts = []
        for t, x in sent:
            if x.data not in seen:
                seen.add(x.data)
                starts.append(t)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps and all(9.6 - 1e-9 <= g <= 14.4 + 1e-9 for g in gaps)
        periods.update(round(g, 3) for g in gaps)
    assert len(periods) > 4


def test_idle_agent_has_no_timer() -> None:
    agent = IceAgent(
        IceConfig(), controlling=True, credentials=OURS, tie_breaker=1, random_bytes=seeded_bytes(1)
    )
    assert agent.get_timer() is None
    agent.handle_timer(T0)
    assert agent.datagrams_to_send(T0) == [] and agent.next_event() is None
