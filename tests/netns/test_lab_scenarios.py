"""Every built-in lab scenario, end to end: real daemons, nftables, ping, TCP and timelines."""

from __future__ import annotations

import pytest

from mipnode.lab import runner

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]


@pytest.mark.parametrize("scenario", runner.SCENARIOS, ids=lambda s: s.name)
def test_builtin_scenario_passes(scenario: runner.Scenario) -> None:
    result = runner.run_scenario(scenario)
    assert result["passed"], result["diagnosis"]
    assert result["observed"]["mn_ha"] == scenario.expect_mn_ha
    if scenario.expect_diagnosis is not None:
        # No path can exist: the MN said why, and nothing was registered.
        assert result["observed"]["mn_diagnosis"].startswith(scenario.expect_diagnosis)
        assert result["timings_ms"]["diagnosis"] <= scenario.expect_diagnosis_within_s * 1000
        return
    traffic = result["traffic"]
    assert traffic["tcp"]["ok"] and traffic["tcp"]["bytes"] == runner.TCP_BYTES
    pings = [p for p in (traffic["ping_cn_to_hoa"], traffic["ping_hoa_to_cn"]) if p]
    assert pings and all(p["received"] >= 4 for p in pings)
    assert all("problem" not in step for step in result["timeline"])
    assert len(result["timeline"]) == len(scenario.timeline)
    if scenario.stream:
        assert traffic["stream"]["ok"] and traffic["stream"]["bytes"] > 0
