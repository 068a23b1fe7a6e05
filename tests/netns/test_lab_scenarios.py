"""The four built-in lab scenarios, end to end: real daemons, nftables, ping and TCP."""

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
    traffic = result["traffic"]
    assert traffic["tcp"]["ok"] and traffic["tcp"]["bytes"] == runner.TCP_BYTES
    assert traffic["ping_cn_to_hoa"]["received"] >= 4
