"""The agent against a lite peer (the home agent): explicit pairs, unsigned checks, death,
re-probes, the faster retry while nothing works, flap damping, confirmation (virtual time).

The lite peer here answers like the real HA's node core: a Binding request at least as large as
the answer gets a success naming the source it came from; nothing else.
"""

from __future__ import annotations

import random

import pytest

from ice import stun
from ice.agent import MAX_PROBES_PER_CALL, IceAgent, IceConfig, PathLost, PathSelected
from ice.candidate import Candidate, CandidateType, candidate_priority
from ice.checklist import PairState

NATIVE = (("2001:db8:1::10", 0), ("2001:db8:ff::1", 0))
UDP6 = (("2001:db8:1::10", 5000), ("2001:db8:ff::1", 4191))
UDP4 = (("10.0.0.10", 5001), ("198.51.100.1", 4191))
T0 = 10.0


def cand(address: tuple[str, int], pref: int, foundation: str) -> Candidate:
    return Candidate(
        CandidateType.HOST, address, address, candidate_priority("host", pref), foundation
    )


def home_agent(config: IceConfig | None = None, seed: int = 1) -> IceAgent:
    rng = random.Random(seed)
    agent = IceAgent.for_lite_peer(config or IceConfig(), random_bytes=rng.randbytes)
    for rank, (kind, (local, remote)) in enumerate(
        [("T-native", NATIVE), ("T-udp", UDP6), ("T-udp", UDP4)]
    ):
        agent.add_pair(cand(local, 65535 - rank, f"L{rank}"), cand(remote, 65535, f"R{rank}"), kind)
    return agent


class Lite:
    """Virtual time and the lite peer; ``dead`` pairs get no answer."""

    def __init__(self, agent: IceAgent) -> None:
        self.agent = agent
        self.now = T0
        self.dead: set[tuple[tuple[str, int], tuple[str, int]]] = set()
        self.events: list[tuple[float, object]] = []
        self.sent: list[tuple[float, bytes]] = []

    def run_until(self, t: float) -> None:
        while True:
            self.flush()
            nxt = self.agent.get_timer()
            if nxt is None or nxt > t:
                self.now = t
                return
            self.now = max(self.now, nxt)
            self.agent.handle_timer(self.now)

    def flush(self) -> None:
        for _ in range(100):
            out = self.agent.datagrams_to_send(self.now)
            while (e := self.agent.next_event()) is not None:
                self.events.append((self.now, e))
            if not out:
                return
            for d in out:
                self.sent.append((self.now, d.data))
                if (d.local, d.remote) in self.dead:
                    continue
                msg = stun.parse_stun_untrusted(d.data)
                answer = stun.binding_response(msg.transaction_id, d.local)
                assert len(answer) <= len(d.data)  # the padded request is answered
                self.agent.receive_datagram(self.now + 0.001, answer, d.local, d.remote)

    def selected(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        p = self.agent.selected_pair()
        return None if p is None else (p.local.base, p.remote.address)


def test_the_best_kind_answering_is_selected_and_checks_are_unsigned() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 2)
    assert net.selected() == NATIVE
    pair = net.agent.selected_pair()
    assert pair is not None and pair.kind == "T-native"
    for _, data in net.sent:
        msg = stun.parse_stun_untrusted(data)
        assert "MESSAGE-INTEGRITY" not in msg.attributes and "USERNAME" not in msg.attributes


def test_a_dead_selected_pair_falls_to_the_next_within_3_s_and_returns_after_repair() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 5)
    net.dead.add(NATIVE)
    killed = net.now
    net.run_until(killed + 5)
    assert net.selected() == UDP6
    lost = [t for t, e in net.events if isinstance(e, PathLost)]
    assert lost and lost[0] - killed <= 3.0
    net.dead.clear()
    repaired = net.now
    net.run_until(repaired + 20)
    back = [t for t, e in net.events if isinstance(e, PathSelected) and t > repaired]
    assert net.selected() == NATIVE and back and back[0] - repaired <= 30.0


def test_answers_must_match_a_transaction_on_the_same_pair() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 0.001)
    forged = stun.binding_response(b"\x01" * 12, UDP6[0])
    net.agent.receive_datagram(net.now, forged, UDP6[0], UDP6[1])
    assert net.agent.statistics()["drop_unknown_transaction"] == 1
    assert net.agent.selected_pair() is None or net.selected() != UDP6


def test_requests_from_a_lite_peer_are_dropped() -> None:
    agent = home_agent()
    request = stun.binding_request(b"\x02" * 12)
    agent.receive_datagram(T0, request, UDP6[0], UDP6[1])
    assert agent.statistics()["drop_stun_not_response"] == 1
    assert agent.datagrams_to_send(T0) == [] or all(
        d.data != request for d in agent.datagrams_to_send(T0)
    )


def test_nothing_answering_is_retried_every_retry_unselected_s() -> None:
    net = Lite(home_agent(IceConfig(max_transmissions=3, retry_unselected_s=2.0)))
    net.dead.update({NATIVE, UDP6, UDP4})
    net.run_until(T0 + 20)
    assert net.agent.selected_pair() is None
    net.dead.clear()
    healed = net.now
    net.run_until(healed + 5)
    first = [t for t, e in net.events if isinstance(e, PathSelected)]
    assert first and first[0] - healed <= 2.0 + 0.1


def test_no_consent_expiry_against_a_lite_peer() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 5)
    net.dead.add(NATIVE)
    net.run_until(T0 + 60)  # far beyond RFC 7675's 30 s
    net.dead.clear()
    net.run_until(T0 + 90)
    assert net.selected() == NATIVE  # re-probed and taken back: no consent was ever lost
    assert net.agent.statistics().get("consent_lost", 0) == 0


def test_flap_damping_holds_a_twice_dying_pair_down_and_checks_it_when_it_ends() -> None:
    config = IceConfig(flap_holddown_s=15.0, reprobe_interval_s=5.0)
    net = Lite(home_agent(config))
    net.run_until(T0 + 2)
    for _ in range(2):  # selected, dies within seconds, comes back at a re-probe
        net.dead.add(NATIVE)
        net.run_until(net.now + 4)
        net.dead.clear()
        net.run_until(net.now + 8)
    assert net.agent.statistics()["flaps"] == 2
    # Held down since its second death: it answers re-probes, yet another pair carries on.
    second_death = max(t for t, e in net.events if isinstance(e, PathLost))
    assert net.selected() not in (None, NATIVE)
    assert net.agent.statistics()["held_down"] >= 1
    net.run_until(second_death + 15.5)  # checked again when the hold-down ends
    assert net.selected() == NATIVE


def test_a_dying_pair_is_not_damped_by_default() -> None:
    config = IceConfig(reprobe_interval_s=5.0)
    net = Lite(home_agent(config))
    net.run_until(T0 + 2)
    for _ in range(3):
        net.dead.add(NATIVE)
        net.run_until(net.now + 4)
        net.dead.clear()
        net.run_until(net.now + 8)
        assert net.selected() == NATIVE  # back at the next re-probe every time


def test_removed_pairs_are_forgotten_and_a_confirmation_keeps_a_pair_alive() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 2)
    net.agent.remove_pair(*NATIVE)
    net.run_until(net.now + 1)
    assert net.selected() == UDP6
    assert all(p.kind != "T-native" for p in net.agent.pairs())
    # Heartbeats unanswered, but an authenticated message arrives on the pair every second.
    net.dead.add(UDP6)
    for _ in range(6):
        net.run_until(net.now + 1)
        net.agent.path_confirmed(net.now, *UDP6)
    assert net.selected() == UDP6
    assert net.agent.statistics()["confirmations"] >= 5


def test_pair_states_are_the_check_lists() -> None:
    net = Lite(home_agent())
    net.run_until(T0 + 2)
    states = {p.kind: p.state for p in net.agent.pairs() if p.kind == "T-native"}
    assert states == {"T-native": PairState.SUCCEEDED}


def test_a_probe_checks_every_pair_once_and_reports_each_round_trip() -> None:
    """`mipnode ping`: one check per pair now, its own round trip; an unanswered probe is just
    unanswered (the pair is not failed for it, the selection stays)."""
    net = Lite(home_agent())
    net.run_until(T0 + 5)
    net.dead.add(UDP4)
    before = len(net.sent)
    probes = net.agent.probe(net.now)
    assert [(p.pair.local.base, p.pair.remote.address) for p in probes] == [NATIVE, UDP6, UDP4]
    assert [p.pair.kind for p in probes] == ["T-native", "T-udp", "T-udp"]
    net.flush()
    assert len(net.sent) - before == 3
    results = [net.agent.probe_result(p.transaction_id) for p in probes]
    assert results[0] == results[1] == pytest.approx(0.001) and results[2] is None
    net.run_until(net.now + 1)
    assert net.agent.probe_result(probes[2].transaction_id) is None
    assert net.selected() == NATIVE
    assert net.agent.statistics()["probes_sent"] == 3
    only = net.agent.probe(net.now, frozenset({"T-native"}))
    assert [p.pair.kind for p in only] == ["T-native"]
    one = net.agent.probe(net.now, None, UDP6)
    assert [(p.pair.local.base, p.pair.remote.address) for p in one] == [UDP6]


def test_a_probe_round_is_capped_and_starts_with_the_selected_pair() -> None:
    agent = home_agent()
    for n in range(12):  # more pairs than one round may check
        local, remote = (f"2001:db8:1::{n + 20:x}", 6000 + n), ("2001:db8:ff::1", 4191)
        agent.add_pair(cand(local, 100 + n, f"X{n}"), cand(remote, 65535, f"Y{n}"), "T-udp")
    net = Lite(agent)
    net.dead.update({NATIVE, UDP6})  # the IPv4 pair, lowest in priority, is the one selected
    net.run_until(T0 + 5)
    assert net.selected() == UDP4
    probes = net.agent.probe(net.now)
    assert len(probes) == MAX_PROBES_PER_CALL
    assert (probes[0].pair.local.base, probes[0].pair.remote.address) == UDP4
