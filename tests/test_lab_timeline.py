"""The restart-ha step's waiting and measuring, without daemons: a fake home agent answers
its control socket on a fake clock, and a fake ping goes through it (or around it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mipnode.drivers.persist import STATE_FILE
from mipnode.lab import timeline
from mipnode.lab.scenario_files import Step
from mipnode.lab.timeline import HA_RESTART_TIMEOUT_S, await_home_agent, restart_problem
from mipnode.lab.topology import HOA

BINDING = {
    "hoa": HOA,
    "coa": "2001:db8:a::2",
    "path": {"kind": "T-native"},
    "state": "registered",
}


class FakeHomeAgent:
    """A restarted HA on a fake clock: silent until ``up_at``, its restored binding from
    ``bound_at``; a ping passes through it (both relay counters count) once it is bound, unless
    ``relays`` is off. ``direct`` answers every ping without the HA (a direct path)."""

    def __init__(
        self,
        up_at: float = 0.3,
        bound_at: float = 0.5,
        *,
        relays: bool = True,
        direct: bool = False,
        state: str = "registered",
        counters: dict[str, int] | None = None,
    ) -> None:
        self.now = 0.0
        self.up_at, self.bound_at = up_at, bound_at
        self.relays, self.direct, self.state = relays, direct, state
        self.counters = dict(counters or {})
        self.polls = 0
        self.pings: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def status(self) -> dict[str, Any] | None:
        self.polls += 1
        self.now += 0.002  # a control-socket round trip
        if self.now < self.up_at:
            return None
        bindings = [dict(BINDING, state=self.state)] if self.now >= self.bound_at else []
        return {"role": "ha", "bindings": bindings, "counters": dict(self.counters)}

    def probe(self) -> bool:
        self.pings.append(self.now)
        self.now += 0.004
        if self.direct:
            return True
        if self.relays and self.now >= self.bound_at:
            for key in ("tunnelled_to_mn", "forwarded_from_mn"):
                self.counters[key] = self.counters.get(key, 0) + 1
            return True
        self.now += 0.2  # ping -W 0.2: no answer
        return False


def _measure(ha: FakeHomeAgent) -> dict[str, Any]:
    return await_home_agent(ha.status, ha.probe, clock=ha.clock, sleep=ha.sleep)


def test_traffic_is_back_when_the_new_ha_is_bound_and_relayed_a_ping_both_ways() -> None:
    ha = FakeHomeAgent(up_at=0.3, bound_at=0.5)
    m = _measure(ha)
    assert 300 <= m["ha_answered_ms"] < 360
    assert 500 <= m["ha_binding_ms"] < 560
    assert m["ha_binding_ms"] <= m["resumed_ms"] < m["ha_binding_ms"] + 20
    assert m["probe_pings"] == {"sent": 1, "received": 1}
    assert m["ha_relayed"] == {"tunnelled_to_mn": 1, "forwarded_from_mn": 1}
    assert m["bindings_after"] == [(HOA, "2001:db8:a::2", "T-native")]
    # No ping before the new HA holds the binding: readiness is its own answer, not a sleep.
    assert ha.pings and min(ha.pings) >= 0.5


def test_a_ping_answered_around_the_ha_is_not_traffic_through_it() -> None:
    """A direct path (a correspondent running mipnode) answers pings while the HA relays
    nothing: the restart is not measured by them."""
    ha = FakeHomeAgent(direct=True)
    m = _measure(ha)
    assert m["resumed_ms"] is None
    assert m["ha_binding_ms"] is not None
    assert m["probe_pings"]["received"] == m["probe_pings"]["sent"] > 1
    assert m["ha_relayed"] == {"tunnelled_to_mn": 0, "forwarded_from_mn": 0}
    assert ha.now >= HA_RESTART_TIMEOUT_S


def test_counters_from_before_the_first_answer_are_not_the_probe() -> None:
    """Relayed traffic counted before the HA first answered is the baseline; only the probe's
    own growth counts, and a probe that is not answered does not."""
    ha = FakeHomeAgent(relays=False, counters={"tunnelled_to_mn": 7, "forwarded_from_mn": 7})
    m = _measure(ha)
    assert m["resumed_ms"] is None and m["probe_pings"]["received"] == 0
    assert m["ha_relayed"] == {"tunnelled_to_mn": 0, "forwarded_from_mn": 0}


def test_an_ha_that_never_answers_is_reported_as_such() -> None:
    ha = FakeHomeAgent(up_at=HA_RESTART_TIMEOUT_S + 1)
    m = _measure(ha)
    assert (m["ha_answered_ms"], m["ha_binding_ms"], m["resumed_ms"]) == (None, None, None)
    assert m["probe_pings"] == {"sent": 0, "received": 0} and m["bindings_after"] == []
    assert ha.polls > 50  # it kept asking, at a short interval, until the timeout


def test_a_deleted_binding_is_no_binding() -> None:
    ha = FakeHomeAgent(state="deleted")
    m = _measure(ha)
    assert m["ha_answered_ms"] is not None
    assert (m["ha_binding_ms"], m["resumed_ms"], ha.pings) == (None, None, [])
    assert m["bindings_after"] == []  # compared with the registered bindings before


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resumed_ms": 620.0,
        "ha_answered_ms": 300.0,
        "ha_binding_ms": 500.0,
        "probe": "core -> 2001:db8:1::100",
        "probe_pings": {"sent": 1, "received": 1},
        "ha_relayed": {"tunnelled_to_mn": 1, "forwarded_from_mn": 1},
        "bindings_before": [(HOA, "2001:db8:a::2", "T-native")],
        "bindings_after": [(HOA, "2001:db8:a::2", "T-native")],
    }
    entry.update(changes)
    return entry


def test_restart_problems_say_which_stage_failed(tmp_path: Path) -> None:
    (tmp_path / "ha.log").write_text("starting\ncannot bind @mipnode-ha\n")
    t: Any = SimpleNamespace(workdir=tmp_path)
    assert restart_problem(_entry(), t) is None
    silent = restart_problem(
        _entry(ha_answered_ms=None, ha_binding_ms=None, resumed_ms=None, bindings_after=[]), t
    )
    assert silent is not None
    assert silent.startswith("the new home agent did not answer on its control socket")
    assert "cannot bind @mipnode-ha" in silent
    lost = restart_problem(_entry(bindings_after=[], ha_binding_ms=None, resumed_ms=None), t)
    assert lost is not None and lost.startswith("after the HA restart its bindings are []")
    bypassed = restart_problem(
        _entry(
            resumed_ms=None,
            probe_pings={"sent": 40, "received": 40},
            ha_relayed={"tunnelled_to_mn": 0, "forwarded_from_mn": 0},
        ),
        t,
    )
    assert bypassed == (
        "no traffic through the new home agent within 10 s: ping core -> 2001:db8:1::100 "
        "40/40, the HA relayed tunnelled_to_mn 0, forwarded_from_mn 0"
    )


@pytest.mark.parametrize(
    ("initiator", "probe"),
    [
        ("both", ("core", "", HOA)),
        ("cn", ("core", "", HOA)),
        ("mn", ("mn", HOA, timeline.PROBE_ADDRESS)),
    ],
)
def test_the_probe_runs_between_the_home_address_and_a_host_without_mipnode(
    initiator: str, probe: tuple[str, str, str]
) -> None:
    assert timeline.ha_restart_probe(initiator) == probe


class FakeTopology:
    """Records what restart_home_agent does in which order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.events: list[str] = []
        self.relayed = 0

    def spawn(self, node: str, args: list[str], log_name: str) -> int:
        self.events.append(f"spawn {node} {' '.join(args[:2])}")
        return 4242

    def sh(self, node: str, *cmd: str, check: bool = True) -> str:
        self.events.append(f"{node}: {' '.join(cmd)}")
        self.relayed += 1
        return "1 packets transmitted, 1 received, 0% packet loss"


def test_restart_home_agent_stops_starts_then_polls_the_new_ha(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = FakeTopology(tmp_path)
    answers: list[str] = []

    def status(topo: Any, node: str, command: str = "status") -> dict[str, Any] | None:
        assert (node, command) == ("ha", "status")
        t.events.append("status ha")
        answers.append(node)
        if len(answers) == 2:  # the first poll after the start: not listening yet
            return None
        n = t.relayed
        counters = {"tunnelled_to_mn": n, "forwarded_from_mn": n}
        return {"bindings": [BINDING], "counters": counters}

    monkeypatch.setattr(timeline, "daemon_status", status)
    monkeypatch.setattr(timeline, "_stop", lambda topo, name: t.events.append(f"stop {name}"))
    entry = timeline.restart_home_agent(t, "both")  # type: ignore[arg-type]
    assert t.events[:4] == ["status ha", "stop ha", "spawn ha ha --config", "status ha"]
    assert t.events[-2].startswith("core: ping -6 -n -c 1 -W 0.2 ") and t.events[-2].endswith(HOA)
    assert entry["probe"] == f"core -> {HOA}"
    assert entry["resumed_ms"] is not None and entry["ha_answered_ms"] is not None
    assert (
        entry["bindings_before"] == entry["bindings_after"] == [(HOA, "2001:db8:a::2", "T-native")]
    )
    assert restart_problem(entry, t) is None  # type: ignore[arg-type]


def test_run_step_passes_the_initiator_and_reports_the_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []

    def fake_restart(t: Any, initiator: str, keep_state: bool) -> dict[str, Any]:
        seen.append(f"{initiator} {keep_state}")
        return _entry(resumed_ms=None, probe=f"mn {HOA} -> {timeline.PROBE_ADDRESS}")

    monkeypatch.setattr(timeline, "restart_home_agent", fake_restart)
    t: Any = SimpleNamespace(workdir=tmp_path)
    entry = timeline.run_step(t, Step("restart-ha"), "2001:db8:c::2", "mn")
    timeline.run_step(t, Step("restart-ha", keep_state=False), "2001:db8:c::2", "both")
    assert seen == ["mn True", "both False"]
    assert entry["step"] == "restart-ha" and entry["resumed_ms"] is None
    assert entry["problem"].startswith("no traffic through the new home agent")


def _restart_with_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_state: bool
) -> tuple[dict[str, Any], list[bool]]:
    """restart_home_agent on the fake topology, with a binding cache file in the workdir (the
    HA's state_dir); returns the entry and whether the file existed when the new HA started."""
    t = FakeTopology(tmp_path)
    cache = tmp_path / STATE_FILE
    cache.write_text("{}")
    at_start: list[bool] = []
    spawn = t.spawn

    def spawn_and_look(node: str, args: list[str], log_name: str) -> int:
        at_start.append(cache.exists())
        return spawn(node, args, log_name)

    def status(topo: Any, node: str, command: str = "status") -> dict[str, Any]:
        n = t.relayed
        return {"bindings": [BINDING], "counters": {k: n for k in timeline.HA_RELAY_COUNTERS}}

    monkeypatch.setattr(t, "spawn", spawn_and_look)
    monkeypatch.setattr(timeline, "daemon_status", status)
    monkeypatch.setattr(timeline, "_stop", lambda topo, name: t.events.append(f"stop {name}"))
    entry = timeline.restart_home_agent(t, "both", keep_state)  # type: ignore[arg-type]
    return entry, at_start


def test_a_restart_without_state_deletes_the_cache_file_between_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, at_start = _restart_with_cache_file(tmp_path, monkeypatch, keep_state=False)
    assert at_start == [False]  # gone before the new HA started
    assert (entry["kept_state"], entry["state_file_removed"]) == (False, True)
    assert entry["answered_to_traffic_ms"] == round(
        entry["resumed_ms"] - entry["ha_answered_ms"], 1
    )


def test_a_restart_with_state_keeps_the_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, at_start = _restart_with_cache_file(tmp_path, monkeypatch, keep_state=True)
    assert at_start == [True] and (tmp_path / STATE_FILE).exists()
    assert entry["kept_state"] is True and "state_file_removed" not in entry


def test_forget_bindings_says_whether_there_was_a_file(tmp_path: Path) -> None:
    t: Any = SimpleNamespace(workdir=tmp_path)
    assert timeline.forget_bindings(t) is False
    (tmp_path / STATE_FILE).write_text("{}")
    assert timeline.forget_bindings(t) is True
    assert not (tmp_path / STATE_FILE).exists()


def test_no_answer_means_no_time_from_the_first_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = FakeTopology(tmp_path)
    monkeypatch.setattr(timeline, "daemon_status", lambda topo, node, command="status": None)
    monkeypatch.setattr(timeline, "_stop", lambda topo, name: None)
    monkeypatch.setattr(
        timeline,
        "await_home_agent",
        lambda status, probe: await_home_agent(status, probe, timeout=0.05, interval=0.01),
    )
    entry = timeline.restart_home_agent(t, "both", keep_state=False)  # type: ignore[arg-type]
    assert (entry["resumed_ms"], entry["answered_to_traffic_ms"]) == (None, None)
    assert entry["state_file_removed"] is False


@pytest.mark.parametrize(
    ("proto", "match"),
    [("ipv6", "meta l4proto ipv6 "), ("ipv4-in-ipv6", "meta l4proto 4 "), ("all", "")],
)
def test_block_rules_name_the_protocol_nft_knows(proto: str, match: str) -> None:
    """Protocol 4 has no name every /etc/protocols agrees on: the rule carries its number."""
    rules = timeline._block_rules(
        Step("block", proto=proto, between=("2001:db8::1", "2001:db8::2"))
    )
    assert rules == [
        f"ip6 saddr 2001:db8::1 ip6 daddr 2001:db8::2 {match}drop",
        f"ip6 saddr 2001:db8::2 ip6 daddr 2001:db8::1 {match}drop",
    ]
