"""Scenario files: every lab scenario, built-in or the user's, is a small TOML file.

```toml
name = "stateful-fw"
description = "MN behind a stateful firewall (outbound only)"

[topology]
access = "ipv6"          # ipv6 | ipv6-nat66 | ipv4
firewall = "stateful"    # profile of the firewall router in front of the MN
cn = "plain"             # plain (no mipnode) | mipnode
cn_firewall = "stateful" # optional: a firewall in front of the CN
move_to = "stateful"     # optional: a second access network (behind this profile) to move to
second_mn = "stateful"   # optional: a second MN behind this profile (MN-to-MN paths)

[steps]
restart_ha = false       # restart the HA after the traffic; its bindings must come back

[expect]
mn_ha = "T-native"       # T-native | T-udp
mn_cn = "T-native"       # D-native | D-udp | T-native | T-udp (optional)
```

Errors name the file, the key and the problem (like the daemons' configuration files), and an
expectation the topology cannot meet is an error before anything is built.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mipnode.lab import topology
from mipnode.lab.netns import LabError, RunRecord
from mipnode.lab.topology import FIREWALLS, Topology

ACCESS = ("ipv6", "ipv6-nat66", "ipv4")
CN_KINDS = ("plain", "mipnode")
MN_HA_PATHS = ("T-native", "T-udp")
MN_CN_PATHS = ("D-native", "D-udp", "T-native", "T-udp")
BUILTIN_ORDER = (
    "open",
    "stateful-fw",
    "stateful-fw-no41",
    "ipv4-nat44",
    "nat44-direct",
    "nat44-random",
    "nat66",
    "move-fw-to-fw",
    "ha-restart",
    "ro-open",
    "direct-mn-behind-fw",
    "udp-only-to-ha",
    "two-mns-behind-fw",
    "ro-cn-behind-fw",
)
_TABLES = {
    "": {"name", "description", "topology", "steps", "expect"},
    "topology": {"access", "firewall", "cn", "cn_firewall", "move_to", "second_mn"},
    "steps": {"restart_ha"},
    "expect": {"mn_ha", "mn_cn"},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    access: str  # "ipv6" | "ipv6-nat66" | "ipv4"
    firewall: str  # key of topology.FIREWALLS
    expect_mn_ha: str
    cn: str = "plain"  # "plain" (no mipnode) | "mipnode"
    cn_firewall: str | None = None  # key of topology.FIREWALLS for a firewall in front of the CN
    expect_mn_cn: str | None = None  # checked when set
    restart_ha: bool = False  # restart the HA after the traffic; bindings must come back
    move_to: str | None = None  # firewall profile of a second access network to move to
    second_mn: str | None = None  # firewall profile in front of a second MN (MN-to-MN paths)

    def build(self, record: RunRecord, workdir: Path) -> Topology:
        return topology.build(
            record,
            workdir,
            access=self.access,
            firewall=self.firewall,
            cn_firewall=self.cn_firewall,
            second_access=self.move_to,
            second_mn=self.second_mn,
        )


class ScenarioError(LabError):
    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


def _table(file: str, doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ScenarioError(file, name, "must be a table")
    for key in table:
        if key not in _TABLES[name]:
            raise ScenarioError(file, f"{name}.{key}", "unknown key")
    return table


def _choice(file: str, key: str, value: Any, choices: tuple[str, ...], optional: bool) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or value not in choices:
        raise ScenarioError(file, key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def parse_scenario(text: str, file: str) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(file, "-", f"not valid TOML: {exc}") from None
    for key in doc:
        if key not in _TABLES[""]:
            raise ScenarioError(file, key, "unknown key")
    name = doc.get("name")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ScenarioError(file, "name", "required: a name without spaces")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(file, "description", "must be a string")
    topo = _table(file, doc, "topology")
    steps = _table(file, doc, "steps")
    expect = _table(file, doc, "expect")
    profiles = tuple(FIREWALLS)
    access = _choice(file, "topology.access", topo.get("access", "ipv6"), ACCESS, False)
    firewall = _choice(file, "topology.firewall", topo.get("firewall", "open"), profiles, False)
    cn = _choice(file, "topology.cn", topo.get("cn", "plain"), CN_KINDS, False)
    cn_firewall = _choice(file, "topology.cn_firewall", topo.get("cn_firewall"), profiles, True)
    move_to = _choice(file, "topology.move_to", topo.get("move_to"), profiles, True)
    second_mn = _choice(file, "topology.second_mn", topo.get("second_mn"), profiles, True)
    restart_ha = steps.get("restart_ha", False)
    if not isinstance(restart_ha, bool):
        raise ScenarioError(file, "steps.restart_ha", "must be true or false")
    if "mn_ha" not in expect:
        raise ScenarioError(file, "expect.mn_ha", "required: the MN-HA path the run must end on")
    mn_ha = _choice(file, "expect.mn_ha", expect["mn_ha"], MN_HA_PATHS, False)
    mn_cn = _choice(file, "expect.mn_cn", expect.get("mn_cn"), MN_CN_PATHS, True)
    # Expectations the topology cannot meet (DESIGN §2: native paths need native IPv6).
    if access == "ipv4" and mn_ha == "T-native":
        raise ScenarioError(file, "expect.mn_ha", "T-native needs IPv6 access, not ipv4")
    if access == "ipv4" and mn_cn in ("D-native", "T-native"):
        raise ScenarioError(file, "expect.mn_cn", f"{mn_cn} needs IPv6 access, not ipv4")
    if mn_cn in ("D-native", "D-udp") and cn == "plain" and not second_mn:
        raise ScenarioError(file, "expect.mn_cn", f'{mn_cn} needs cn = "mipnode"')
    if mn_cn == "D-native" and access == "ipv6-nat66":
        raise ScenarioError(file, "expect.mn_cn", "D-native is never used through a NAT66")
    if move_to and access != "ipv6":
        raise ScenarioError(file, "topology.move_to", "movement scenarios need ipv6 access")
    if second_mn and cn_firewall:
        raise ScenarioError(file, "topology.second_mn", "cannot be combined with cn_firewall")
    return Scenario(
        name=name,
        description=description,
        access=access,
        firewall=firewall,
        expect_mn_ha=mn_ha,
        cn=cn,
        cn_firewall=cn_firewall,
        expect_mn_cn=mn_cn,
        restart_ha=restart_ha,
        move_to=move_to,
        second_mn=second_mn,
    )


def load_scenario(path: str) -> Scenario:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(path, "-", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(path, "-", "not UTF-8 text") from None
    return parse_scenario(text, path)


def builtin_scenarios() -> tuple[Scenario, ...]:
    """The scenarios shipped in the package (mipnode/lab/scenarios/*.toml), in lab order."""
    folder = resources.files("mipnode.lab") / "scenarios"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            sc = parse_scenario(entry.read_text(encoding="utf-8"), f"built-in {entry.name}")
            found[sc.name] = sc
    rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return tuple(sorted(found.values(), key=lambda s: (rank.get(s.name, len(rank)), s.name)))
