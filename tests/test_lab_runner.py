"""The runner's verdicts that need no daemons: the home path's HA port, the path a timeline
ends on, and the restart budgets; and how the report shows them."""

from __future__ import annotations

from typing import Any

import pytest

from mipnode.lab import runner
from mipnode.lab.attack_step import problems as attack_problems
from mipnode.lab.report import repeat_summary, report_table
from mipnode.lab.scenario_files import Scenario, Step, parse_scenario


def _scenario(expect: str, timeline: str = "") -> Scenario:
    return parse_scenario(
        f'name = "t"\n[topology]\nfirewall = "stateful"\n{timeline}\n[expect]\n{expect}\n', "t"
    )


@pytest.mark.parametrize(
    ("path", "port"),
    [
        ({"kind": "T-udp", "remote": {"address": "2001:db8:1::1", "port": 443}}, 443),
        ({"kind": "T-native", "remote": {"address": "2001:db8:1::1", "port": None}}, None),
        ({"kind": "T-native", "remote": None}, None),
        ({"kind": "T-native"}, None),
    ],
)
def test_the_home_port_is_the_remote_port_of_the_mns_binding(
    path: dict[str, Any], port: int | None
) -> None:
    assert runner.home_port({"hoa": "2001:db8:1::100", "path": path}) == port


def test_the_mn_ha_path_a_run_ends_on_is_the_last_one_waited_for() -> None:
    assert runner._final_mn_ha(_scenario('mn_ha = "T-native"')) == "T-native"
    steps = """
[[timeline]]
do = "wait-for-path"
mn_ha = "T-udp"

[[timeline]]
do = "wait-for-path"
mn_ha = "T-native"

[[timeline]]
do = "wait"
seconds = 1
"""
    sc = _scenario('mn_ha = "T-native"', steps)
    assert runner._final_mn_ha(sc) == "T-native"
    sc = _scenario('mn_ha = "T-native"', steps.replace('mn_ha = "T-native"', 'mn_ha = "T-udp"'))
    assert runner._final_mn_ha(sc) == "T-udp"


RESTART = '\n[[timeline]]\ndo = "restart-ha"\nkeep_state = false\n'


def _budgets(sc: Scenario, resumed: float | None, after_answer: float | None) -> list[str]:
    result: dict[str, Any] = {"timings_ms": {}}
    entry = {"resumed_ms": resumed, "answered_to_traffic_ms": after_answer}
    problems = runner._restart_budgets(sc, entry, result)
    assert result["timings_ms"] == {
        "ha_restart_to_traffic": resumed,
        "ha_answered_to_traffic": after_answer,
    }
    return problems


def test_without_budgets_ha_start_to_traffic_gets_the_default() -> None:
    sc = _scenario('mn_ha = "T-native"', RESTART)
    assert _budgets(sc, 1900.0, 1500.0) == []
    assert _budgets(sc, 2100.0, 300.0) == [
        "traffic through the HA resumed 2100.0 ms after its restart (budget 2000)"
    ]
    assert _budgets(sc, None, None) == []  # no traffic at all is the step's own problem


def test_the_budget_from_the_new_has_first_answer_replaces_the_default() -> None:
    sc = _scenario('mn_ha = "T-native"\nha_answered_to_traffic_ms = 3000', RESTART)
    assert _budgets(sc, 3500.0, 2900.0) == []  # the HA's own start-up is not counted
    assert _budgets(sc, 3500.0, 3100.0) == [
        "traffic through the HA resumed 3100.0 ms after the new HA first answered (budget 3000)"
    ]


def test_both_budgets_are_checked_when_both_are_set() -> None:
    sc = _scenario(
        'mn_ha = "T-native"\nha_restart_ms = 1000\nha_answered_to_traffic_ms = 500', RESTART
    )
    assert len(_budgets(sc, 1200.0, 600.0)) == 2
    assert _budgets(sc, 900.0, 400.0) == []


def test_a_result_expects_and_observes_the_ha_port_and_the_new_budget() -> None:
    sc = _scenario('mn_ha = "T-native"\nha_answered_to_traffic_ms = 3000', RESTART)
    result = runner.new_result(sc)
    assert result["expected"]["ha_answered_to_traffic_ms"] == 3000.0
    assert result["expected"]["mn_ha_port"] is None
    assert result["observed"]["mn_ha_port"] is None


def _run(**timings: float | None) -> dict[str, Any]:
    sc = _scenario('mn_ha = "T-native"', RESTART)
    result = runner.new_result(sc)
    result["timings_ms"].update(timings)
    result["timeline"] = [
        {
            "at_ms": 0.0,
            "step": Step("restart-ha", keep_state=False).describe(),
            "resumed_ms": timings.get("ha_restart_to_traffic"),
            "answered_to_traffic_ms": timings.get("ha_answered_to_traffic"),
            "ha_answered_ms": 400.0,
            "ha_binding_ms": 700.0,
            "probe": "core -> 2001:db8:1::100",
        }
    ]
    return result


def test_the_report_shows_the_time_from_the_first_answer_and_summarises_it() -> None:
    runs = [
        _run(ha_restart_to_traffic=800.0 + d, ha_answered_to_traffic=300.0 + d)
        for d in (0.0, 100.0, 50.0)
    ]
    table = report_table(runs[:1])
    assert "restart-ha without its binding cache: the new HA answered after 400.0 ms" in table
    assert "after 800.0 ms (300.0 ms after its first answer)" in table
    (summary,) = repeat_summary(runs)
    assert summary["ha_answered_to_traffic_ms"] == {"min": 300.0, "median": 350.0, "max": 400.0}
    assert summary["ha_restart_to_traffic_ms"] == {"min": 800.0, "median": 850.0, "max": 900.0}


def test_the_table_shows_the_unprotected_throughput_next_to_the_protected_one() -> None:
    protected = _run()
    protected["traffic"]["tcp"] = {"ok": True, "mbit_s": 150.2}
    plain = _run()
    plain["traffic"]["tcp"] = {"ok": True, "mbit_s": 201.7}
    plain["observed"]["mn_ha"] = "T-native"
    protected["unprotected"] = runner.comparison(plain)
    other = _run()  # a scenario run without a comparison
    table = report_table([protected, other])
    header, _, first, *_ = table.splitlines()
    assert "no ESP" in header
    assert "150.2 Mb/s" in first and "201.7 Mb/s" in first
    assert protected["unprotected"]["tcp_mbit_s"] == 201.7
    assert "no ESP" not in report_table([other])


def test_an_attack_step_reads_as_what_it_did() -> None:
    result = _run()
    result["timeline"] = [
        {
            "at_ms": 0.0,
            "step": Step("attack", kind="bu-flood", rate=11000, seconds=4).describe(),
            "attack": {"sent_packets": 44000, "sent_octets": 6336000, "reflected_octets": 0},
            "injected_received": {"mn": 0, "cn": 0},
            "ha_counted_during": {"core.bad_auth": 2010, "unbound_mh_rate_limited": 41990},
            "latency_ms": {
                "before": {"p99": 1.5},
                "during": {"p99": 3.8},
                "control": {"p99": 3.1},
            },
        }
    ]
    (line,) = [x for x in report_table([result]).splitlines() if "attack" in x]
    assert "attack bu-flood 11000/s for 4 s: sent 44000 (6336000 B), back 0 B" in line
    assert "injected delivered 0, HA bad_auth 2010, unbound_mh_rate_limited 41990" in line
    assert line.endswith("p99 1.5 -> 3.8 ms (control 3.1 ms)")


def test_a_flood_verdict_weighs_the_data_path_against_the_control_flood() -> None:
    # The control (the same flood dropped by the kernel before the daemon) is the yardstick,
    # not the idle p99: the sender itself loads a small machine.
    step = Step("attack", kind="bu-flood", rate=11000, seconds=8, latency_ratio=2)
    paths = {"mn_state": "registered", "mn_ha": "T-native", "mn_cn": "T-native"}

    def entry(during: float, control: float) -> dict[str, Any]:
        return {
            "before": paths,
            "after": paths,
            "attack": {"sent_octets": 100, "reflected_octets": 0},
            "injected_received": {"mn": 0, "cn": 0},
            "latency_ms": {
                "before": {"p99": 1.0},
                "during": {"p99": during},
                "control": {"p99": control},
            },
        }

    assert attack_problems(step, entry(3.9, 2.0)) == []
    (problem,) = attack_problems(step, entry(4.1, 2.0))
    assert "4.1 ms under the flood, 2.0 ms under the control" in problem


def test_a_flood_verdict_names_how_many_floods_broke_the_bound() -> None:
    # A p99 broken once by a scheduling stall is measured again; the verdict that stays says
    # it was the last of several floods.
    step = Step("attack", kind="bu-flood", rate=11000, seconds=8, latency_ratio=2)
    paths = {"mn_state": "registered", "mn_ha": "T-native", "mn_cn": "T-native"}
    entry: dict[str, Any] = {
        "before": paths,
        "after": paths,
        "attack": {"sent_octets": 100, "reflected_octets": 0},
        "injected_received": {"mn": 0, "cn": 0},
        "latency_ms": {"during": {"p99": 5.0}, "control": {"p99": 1.0}},
        "latency_attempts": [{"during": 4.0, "control": 1.0}, {"during": 5.0, "control": 1.0}],
    }
    (problem,) = attack_problems(step, entry)
    assert problem.endswith("(bound 2x, last of 2 floods)")
