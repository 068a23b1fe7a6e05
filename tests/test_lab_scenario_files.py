"""Scenario files: the built-ins load, user files are validated with file and key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mipnode.lab import runner
from mipnode.lab.scenario_files import Scenario, ScenarioError, builtin_scenarios, load_scenario
from mipnode.lab.topology import FIREWALLS, HA_ADDRESS, MN_LAN6, NAT44_PROFILES

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


IPV4 = """
name = "v4"

[topology]
access = "ipv4"
firewall = "nat44"

[expect]
mn_ha = "T-udp"
"""

NAT_RULES = """
[nft]
fw = '''
table ip mine {
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname $LAN accept }
  chain postrouting { type nat hook postrouting priority srcnat;
    oifname $WAN %s }
}
'''
"""


@pytest.mark.parametrize("profile", NAT44_PROFILES)
def test_ipv4_access_behind_a_nat44_profile_loads(tmp_path: Path, profile: str) -> None:
    sc = load_scenario(_write(tmp_path, IPV4.replace('"nat44"', f'"{profile}"')))
    assert (sc.access, sc.firewall) == ("ipv4", profile)


def test_the_nat44_profiles_are_the_ones_that_translate_ipv4() -> None:
    for name, rules in FIREWALLS.items():
        nat44 = "table ip " in rules and "masquerade" in rules
        assert nat44 == (name in NAT44_PROFILES), name


@pytest.mark.parametrize("profile", [p for p in (*FIREWALLS, None) if p not in NAT44_PROFILES])
def test_ipv4_access_without_nat44_is_refused_naming_file_and_key(
    tmp_path: Path, profile: str | None
) -> None:
    """The core has no route back to the MN's private IPv4 network: without a NAT44 on fw
    nothing the MN sends can be answered (nat66 translates IPv6 only; no firewall is open)."""
    line = "" if profile is None else f'firewall = "{profile}"'
    path = _write(tmp_path, IPV4.replace('firewall = "nat44"', line))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, "topology.firewall")
    assert info.value.problem.startswith(f"{profile or 'open'!r} does no NAT44")
    assert "10.0.4.0/24" in info.value.problem and "nat44-random" in info.value.problem
    assert str(info.value).startswith(f"{path}: topology.firewall: ")


@pytest.mark.parametrize(
    "statement", ["masquerade", "masquerade fully-random", "snat to 198.51.100.2"]
)
def test_ipv4_access_behind_inline_nft_with_source_nat_loads(
    tmp_path: Path, statement: str
) -> None:
    text = IPV4.replace('firewall = "nat44"', 'firewall = "custom"') + NAT_RULES % statement
    sc = load_scenario(_write(tmp_path, text))
    assert sc.firewall == "custom" and statement in sc.nft["fw"]


@pytest.mark.parametrize(
    "statement",
    [
        "accept",
        'accept comment "no masquerade here"',
        "accept # masquerade would be needed",
        "counter accept",  # srcnat, the hook priority, is not a source NAT statement
    ],
)
def test_ipv4_access_behind_inline_nft_without_source_nat_is_refused(
    tmp_path: Path, statement: str
) -> None:
    text = IPV4.replace('firewall = "nat44"', 'firewall = "custom"') + NAT_RULES % statement
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, "nft.fw")
    assert info.value.problem.startswith("the ruleset does no NAT44")


def _builtin(name: str) -> Scenario:
    return runner.BY_NAME[name]


def test_the_home_path_scenarios_load_with_their_steps_and_budgets() -> None:
    dies = _builtin("home-path-dies")
    block, unblock = (s for s in dies.timeline if s.do in ("block", "unblock"))
    # ESP (what a protected T-native carries) between the MN's care-of address and the HA, on
    # the MN's fw.
    assert (block.on, block.proto, block.between) == ("fw", "esp", (MN_LAN6, HA_ADDRESS))
    assert (unblock.on, unblock.proto, unblock.between) == ("fw", "esp", (MN_LAN6, HA_ADDRESS))
    waits = [(s.mn_ha, s.within_s) for s in dies.timeline if s.do == "wait-for-path"]
    assert waits == [("T-udp", 5.0), ("T-native", 30.0)]
    assert dies.cn == "plain" and dies.stream and dies.traffic.udp_rate_pps == 50
    assert (dies.expect_tcp_survives, dies.expect_udp_max_gap_ms) == (True, 4000.0)

    no_cache = _builtin("ha-restart-no-cache")
    assert [(s.do, s.keep_state) for s in no_cache.timeline] == [("restart-ha", False)]
    assert no_cache.timeline[0].describe() == "restart-ha without its binding cache"
    assert no_cache.expect_ha_answered_to_traffic_ms == 3000.0
    assert no_cache.expect_ha_restart_ms is None
    assert _builtin("ha-restart").timeline[0].keep_state  # the default keeps the cache

    direct = _builtin("mn-restart-direct")
    assert (direct.cn, direct.firewall, direct.expect_mn_cn) == ("mipnode", "stateful", "D-udp")
    assert [s.do for s in direct.timeline][:2] == ["restart-mn", "wait-for-path"]
    assert direct.timeline[1].mn_cn == "D-udp" and direct.traffic.udp_rate_pps > 0

    web = _builtin("web-only")
    assert (web.firewall, web.ha_udp_ports) == ("web-only", (4191, 443))
    assert (web.expect_mn_ha, web.expect_mn_ha_port) == ("T-udp", 443)


PORTS = """
name = "ports"

[topology]
firewall = "web-only"
ha_udp_ports = [4191, 443]

[[timeline]]
do = "restart-ha"
keep_state = false

[expect]
mn_ha = "T-udp"
mn_ha_port = 443
ha_answered_to_traffic_ms = 3000
"""


def test_ha_ports_keep_state_and_the_new_budgets_load(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, PORTS))
    assert sc.ha_udp_ports == (4191, 443) and sc.expect_mn_ha_port == 443
    assert sc.timeline[0].keep_state is False
    assert (sc.expect_ha_answered_to_traffic_ms, sc.expect_ha_restart_ms) == (3000.0, None)
    plain = load_scenario(_write(tmp_path, GOOD))
    assert plain.ha_udp_ports is None and plain.expect_mn_ha_port is None


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("[4191, 443]", "4191"), "topology.ha_udp_ports", "a list of 1 to 8 UDP ports"),
        (("[4191, 443]", "[]"), "topology.ha_udp_ports", "a list of 1 to 8 UDP ports"),
        (
            ("[4191, 443]", str(list(range(1000, 1009)))),
            "topology.ha_udp_ports",
            "a list of 1 to 8 UDP ports",
        ),
        (("[4191, 443]", "[4191, 0]"), "topology.ha_udp_ports[1]", "from 1 to 65535"),
        (("[4191, 443]", '[4191, "443"]'), "topology.ha_udp_ports[1]", "whole number"),
        (("[4191, 443]", "[true]"), "topology.ha_udp_ports[0]", "whole number"),
        (("[4191, 443]", "[443, 443]"), "topology.ha_udp_ports", "listed twice"),
        (("[4191, 443]", "[4191, 4500]"), "topology.ha_udp_ports", "ESP-in-UDP"),
        (("keep_state = false", "keep_state = 0"), "timeline[0].keep_state", "true or false"),
        (
            ('do = "restart-ha"', 'do = "restart-mn"'),
            "timeline[0].keep_state",
            "unknown key for a restart-mn step",
        ),
        (("mn_ha_port = 443", "mn_ha_port = 70000"), "expect.mn_ha_port", "from 1 to 65535"),
        (("mn_ha_port = 443", "mn_ha_port = 53"), "expect.mn_ha_port", "not one of the HA's"),
        (("ha_udp_ports = [4191, 443]\n", ""), "expect.mn_ha_port", "(4191; set topology."),
        (
            ('firewall = "web-only"', 'firewall = "open"\n'),
            "expect.mn_ha_port",
            'needs mn_ha = "T-udp"',
        ),
        (
            ('do = "restart-ha"\nkeep_state = false', 'do = "wait"\nseconds = 1'),
            "expect.ha_answered_to_traffic_ms",
            "needs a restart-ha step",
        ),
        (
            ("ha_answered_to_traffic_ms = 3000", "ha_answered_to_traffic_ms = -1"),
            "expect.ha_answered_to_traffic_ms",
            "from 0 to 120000",
        ),
    ],
)
def test_ha_ports_keep_state_and_the_new_budgets_are_validated(
    tmp_path: Path, change: tuple[str, str], key: str, problem: str
) -> None:
    text = PORTS.replace(*change, 1)
    assert text != PORTS
    if change[0].startswith("firewall"):
        text = text.replace('mn_ha = "T-udp"', 'mn_ha = "T-native"')
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, key), info.value
    assert problem in info.value.problem


RESTART_MN = """
name = "again"

[topology]
firewall = "stateful"
cn = "mipnode"

[[timeline]]
do = "restart-mn"

[[timeline]]
do = "wait-for-path"
mn_cn = "D-udp"
within_s = 5

[traffic]
stream = false
udp_rate_pps = 20

[expect]
mn_ha = "T-native"
mn_cn = "D-udp"
"""


@pytest.mark.parametrize(
    "traffic", ["stream = false\nudp_rate_pps = 20", "stream = true", "udp_rate_pps = 5"]
)
def test_a_path_wait_after_an_mn_restart_loads_with_traffic_to_start_it(
    tmp_path: Path, traffic: str
) -> None:
    text = RESTART_MN.replace("stream = false\nudp_rate_pps = 20", traffic)
    sc = load_scenario(_write(tmp_path, text))
    assert [s.do for s in sc.timeline] == ["restart-mn", "wait-for-path"]


def test_a_path_wait_after_an_mn_restart_without_traffic_is_refused(tmp_path: Path) -> None:
    """The new MN process knows no correspondent until traffic to it crosses its tunnel: a
    wait for an MN-CN path after restart-mn with nothing flowing could only time out."""
    path = _write(tmp_path, RESTART_MN.replace("udp_rate_pps = 20", "udp_rate_pps = 0"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.file, info.value.key) == (path, "timeline[1].mn_cn")
    assert "traffic.udp_rate_pps or traffic.stream" in info.value.problem
    # Before the restart the MN already knows the CN from the first traffic.
    before = RESTART_MN.replace("udp_rate_pps = 20", "udp_rate_pps = 0").replace(
        'do = "restart-mn"', 'do = "wait"\nseconds = 1'
    )
    assert load_scenario(_write(tmp_path, before)).timeline[1].mn_cn == "D-udp"


def test_the_web_only_profile_is_p1_that_lets_out_web_ports_only() -> None:
    rules = FIREWALLS["web-only"]
    assert "policy drop;" in rules and "ct state established,related accept" in rules
    assert "iifname $LAN accept" not in rules  # P1's "everything out" is replaced
    assert (
        "iifname $LAN meta l4proto . th dport { tcp . 80, tcp . 443, udp . 53, udp . 443 } accept"
        in rules
    )
