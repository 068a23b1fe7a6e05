"""Every built-in lab scenario, end to end: real daemons, nftables, ping, TCP and timelines."""

from __future__ import annotations

import pytest

from mipnode.lab import runner, topology

from .conftest import needs_root
from .lab_attack_checks import CHECKS

pytestmark = [needs_root, pytest.mark.netns]


@pytest.mark.parametrize("scenario", runner.SCENARIOS, ids=lambda s: s.name)
def test_builtin_scenario_passes(scenario: runner.Scenario) -> None:
    result = runner.run_scenario(scenario)
    assert result["passed"], result["diagnosis"]
    assert result["observed"]["mn_ha"] == scenario.expect_mn_ha
    if scenario.expect_mn_ha_port is not None:
        assert result["observed"]["mn_ha_port"] == scenario.expect_mn_ha_port
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
    if scenario.timeline:
        assert result["observed"]["mn_ha_at_end"] == runner._final_mn_ha(scenario)
    if scenario.name in CHECKS:  # an attack: what it measured (lab_attack_checks.py)
        CHECKS[scenario.name](result)


def test_every_attack_check_names_a_built_in_scenario() -> None:
    """A renamed scenario would otherwise skip its checks without a word."""
    assert set(CHECKS) <= {s.name for s in runner.SCENARIOS}


@pytest.mark.parametrize("profile", [p for p, rules in topology.FIREWALLS.items() if rules])
def test_every_firewall_profile_is_valid_nft(profile: str) -> None:
    """nft itself accepts every profile's ruleset (``nft -c`` in a throwaway namespace), with
    the placeholders of each access network it can sit in front of."""
    access = "ipv4" if profile in topology.NAT44_PROFILES else "ipv6"
    assert topology.check_ruleset(access, topology.FIREWALLS[profile]) is None
