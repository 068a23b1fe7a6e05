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


def test_every_builtin_scenario_is_a_shipped_file_in_test_case_order() -> None:
    scenarios = builtin_scenarios()
    names = [s.name for s in scenarios]
    assert names == [s.name for s in runner.SCENARIOS]
    shipped = sorted(p.stem for p in (Path(runner.__file__).parent / "scenarios").glob("*.toml"))
    assert shipped == sorted(names)
    cases = [s.tc for s in scenarios if s.tc]
    assert cases == sorted(cases)
    # Every RFC 4487 case the design can meet has a built-in (reference/protocol.md §5.5);
    # TC-15 needs NPTv6 (no SNPT/DNPT target here), TC-18 lives in the conformance tests.
    wanted = {f"TC-{n:02d}" for n in range(18)} - {"TC-15"}
    assert set(cases) == wanted


EXTENDED = """
name = "extended"
tc = "TC-10"

[topology]
firewall = "custom"
cn = "mipnode"
cn_firewall = "stateful"

[nft]
fw = '''
table inet mine {
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname $LAN accept }
}
'''

[sysctl.fw]
"net.netfilter.nf_conntrack_checksum" = 0

[[timeline]]
do = "wait"
seconds = 1.5

[[timeline]]
do = "block"
on = "fwc"
proto = "udp"
between = ["mn", "2001:db8:c::2"]

[[timeline]]
do = "wait-for-path"
mn_cn = "T-native"
within_s = 5

[traffic]
udp_rate_pps = 20

[expect]
mn_ha = "T-native"
mn_cn = "D-udp"
first_data_ms = 2000
udp_loss_pct = 50
tcp_survives = true
"""


def test_a_file_with_every_section_loads(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, EXTENDED))
    assert (sc.firewall, sc.cn_firewall, sc.tc) == ("custom", "stateful", "TC-10")
    assert "iifname $LAN" in sc.nft["fw"]
    assert sc.sysctl == {"fw": {"net.netfilter.nf_conntrack_checksum": "0"}}
    assert [s.do for s in sc.timeline] == ["wait", "block", "wait-for-path"]
    assert sc.timeline[1].between == ("2001:db8:a::2", "2001:db8:c::2")
    assert sc.timeline[1].on == "fwc" and sc.timeline[2].mn_cn == "T-native"
    # A CN behind a firewall admits only what it starts; a timeline runs a TCP stream.
    assert (sc.traffic.initiator, sc.traffic.stream, sc.traffic.udp_rate_pps) == ("cn", True, 20)
    assert (sc.expect_first_data_ms, sc.expect_udp_loss_pct) == (2000.0, 50.0)


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
        (('mn_ha = "T-native"', 'mn_ha = "none"'), "expect.diagnosis", "go together"),
        (('name = "mine"', 'name = "mine"\ntc = "7"'), "tc", "like TC-07"),
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


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('firewall = "custom"', 'firewall = "stateful"'), "nft.fw", "replaces a profile"),
        (("[nft]\nfw", "[nft]\nfw9"), "nft.fw9", "not a firewall node"),
        (("[sysctl.fw]", "[sysctl.fwh]"), "sysctl.fwh", "not a node of this topology"),
        (
            ('"net.netfilter.nf_conntrack_checksum"', '"kernel.panic"'),
            'sysctl.fw."kernel.panic"',
            "only per-namespace net.*",
        ),
        (('do = "wait"', 'do = "sleep"'), "timeline[0].do", "is not one of"),
        (("seconds = 1.5", "seconds = 1000"), "timeline[0].seconds", "from 0 to 120"),
        (('on = "fwc"', 'on = "fwh"'), "timeline[1].on", "not a firewall of this topology"),
        (('proto = "udp"', 'proto = "sctp"'), "timeline[1].proto", "is not one of"),
        (('"2001:db8:c::2"]', '"cn4"]'), "timeline[1].between", "not the same IP version"),
        (('["mn", ', '["router", '), "timeline[1].between", "neither an address nor"),
        (("within_s = 5", "within_s = 5\nmn_hb = 1"), "timeline[2].mn_hb", "unknown key"),
        (("udp_rate_pps = 20", "udp_rate_pps = -1"), "traffic.udp_rate_pps", "whole number"),
        (("udp_rate_pps = 20", "udp_rate_pps = 0"), "expect.udp_loss_pct", "needs traffic."),
        (("tcp_survives = true", "tcp_survives = 1"), "expect.tcp_survives", "true or false"),
        (
            ("first_data_ms = 2000", "handover_gap_ms = 2000"),
            "expect.handover_gap_ms",
            "needs a move step",
        ),
        (('cn = "mipnode"', 'cn = "plain"'), "expect.mn_cn", 'needs cn = "mipnode"'),
    ],
)
def test_extended_sections_are_validated(
    tmp_path: Path, change: tuple[str, str], key: str, problem: str
) -> None:
    text = EXTENDED.replace(*change, 1)
    assert text != EXTENDED
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, key), info.value
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
        f"mipnode lab: {path}: topology.firewall: 'strict' is not one of "
        + ", ".join((*FIREWALLS, "custom"))
    ]
