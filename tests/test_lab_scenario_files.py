"""Scenario files: the built-ins load, user files are validated with file and key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mipnode.lab import runner
from mipnode.lab.scenario_files import ScenarioError, builtin_scenarios, load_scenario
from mipnode.lab.topology import FIREWALLS

GOOD = """
name = "mine"
description = "my firewall"

[topology]
access = "ipv6"
firewall = "stateful"
cn = "mipnode"

[expect]
mn_ha = "T-native"
mn_cn = "D-udp"
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


def test_every_builtin_scenario_is_a_shipped_file_in_lab_order() -> None:
    names = [s.name for s in builtin_scenarios()]
    assert names == [s.name for s in runner.SCENARIOS] and len(names) == 14
    shipped = sorted(p.stem for p in (Path(runner.__file__).parent / "scenarios").glob("*.toml"))
    assert shipped == sorted(names)


def test_a_user_file_loads(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, GOOD))
    assert (sc.name, sc.firewall, sc.cn, sc.expect_mn_ha, sc.expect_mn_cn) == (
        "mine",
        "stateful",
        "mipnode",
        "T-native",
        "D-udp",
    )


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("[topology]", "[topology]\ncolour = 1"), "topology.colour", "unknown key"),
        (('firewall = "stateful"', 'firewall = "strict"'), "topology.firewall", "is not one of"),
        (('mn_ha = "T-native"', 'mn_ha = "D-udp"'), "expect.mn_ha", "is not one of"),
        (('access = "ipv6"', 'access = "ipv4"'), "expect.mn_ha", "needs IPv6 access"),
        (('cn = "mipnode"', 'cn = "plain"'), "expect.mn_cn", 'needs cn = "mipnode"'),
        (('name = "mine"', 'name = "my scenario"'), "name", "without spaces"),
        (("[expect]", "[expect]\nmn_hb = 1"), "expect.mn_hb", "unknown key"),
        (('mn_ha = "T-native"\n', ""), "expect.mn_ha", "required"),
        (("[topology]", "[topologies]"), "topologies", "unknown key"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, change: tuple[str, str], key: str, problem: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, key)
    assert problem in info.value.problem


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, "name = \n"))
    assert info.value.key == "-" and info.value.problem.startswith("not valid TOML")
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(tmp_path / "absent.toml"))
    assert info.value.problem.startswith("cannot read")


def test_the_cli_reports_a_bad_file_in_one_line_with_status_2(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('firewall = "stateful"', 'firewall = "strict"'))
    proc = subprocess.run(
        [sys.executable, "-m", "mipnode.cli", "lab", "-s", path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mipnode lab: {path}: topology.firewall: 'strict' is not one of " + ", ".join(FIREWALLS)
    ]
