"""Scenario files: every lab scenario, built-in or the user's, is a small TOML file.

The format is documented with examples in docs/lab.md; in short::

    name, description, tc          what it is (tc: the RFC 4487 test case, reference §5.5)
    [topology]                     access, firewall, cn, cn_firewall, ha_firewall, move_to,
                                   second_mn, access_mtu, ha_udp_ports, protection, attacker,
                                   ha_nodes
    [nft]                          inline rulesets per firewall node (fw, fw2, fw3, fwc, fwh)
    [sysctl.NODE]                  per-namespace sysctls ("net.netfilter.nf_conntrack_checksum")
    [[timeline]]                   steps: wait, move, block, unblock, restart-ha, restart-mn,
                                   wait-for-path, attack (restart-ha: keep_state; attack:
                                   kind, count, rate, seconds, latency_ratio); in a cluster
                                   kill-ha-holder, stop-ha-holder, cut-ha-holder,
                                   restore-ha-link, kill-etcd (count,
                                   leader), start-etcd, wait-health (state), wait-records,
                                   capture-bu, replay-bu
    [traffic]                      initiator, ping_count, tcp_bytes, stream, udp_rate_pps,
                                   udp_seconds
    [expect]                       mn_ha, mn_ha_port, mn_cn, first_data_ms, handover_gap_ms,
                                   tcp_survives, udp_loss_pct, udp_max_gap_ms, ha_restart_ms,
                                   ha_answered_to_traffic_ms, diagnosis, diagnosis_within_s

Errors name the file, the key and the problem (like the daemons' configuration files), and an
expectation the topology cannot meet is an error before anything is built. nft text is
checked by nft itself (``check_rulesets``, needs root) before the lab builds anything.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from mipnode.lab import attack, topology
from mipnode.lab.netns import LabError, RunRecord
from mipnode.lab.topology import FIREWALLS, NAT44_PROFILES, Topology

ACCESS = ("ipv6", "ipv6-nat66", "ipv4")
CN_KINDS = ("plain", "mipnode")
PROTECTIONS = ("esp", "none")
MN_HA_PATHS = ("T-native", "T-udp", "none")
MN_CN_PATHS = ("D-native", "D-udp", "T-native", "T-udp")
INITIATORS = ("both", "mn", "cn")
_SINGLE_STEPS = (
    "wait",
    "move",
    "block",
    "unblock",
    "restart-ha",
    "restart-mn",
    "wait-for-path",
    "attack",
)
# Steps that need a cluster of home agents (topology.ha_nodes > 1; lab/cluster.py).
CLUSTER_STEPS = (
    "kill-ha-holder",
    "stop-ha-holder",
    "cut-ha-holder",
    "restore-ha-link",
    "kill-etcd",
    "start-etcd",
    "wait-health",
    "wait-records",
    "capture-bu",
    "replay-bu",
)
STEP_KINDS: tuple[str, ...] = _SINGLE_STEPS + CLUSTER_STEPS
HEALTH_STATES = ("ok", "degraded")
ATTACKS = attack.KINDS  # what an attack step's kind may be (lab/attack.py)
# What a block step can drop; nft's own names (`meta l4proto ...`), "all" for every protocol,
# and "ipv4-in-ipv6" for protocol 4 (RFC 2473; its /etc/protocols name varies).
BLOCK_PROTOCOLS = (
    "all",
    "udp",
    "tcp",
    "ipv6",
    "ipv4-in-ipv6",
    "mobility-header",
    "ipv6-icmp",
    "icmp",
    "esp",
)
# Names usable in a block step's `between`, with the address they stand for.
BLOCK_NAMES = {
    "ha": topology.HA_ADDRESS,
    "ha4": topology.HA_CORE4,
    "hoa": topology.HOA,
    "cn": topology.CN_ADDRESS,
    "cn4": topology.CN_ADDRESS4,
    "mn_b": topology.MN_LAN6_B,
    "mn2": topology.MN2_LAN6,
    "dev": topology.DEVICE,
    "hoa4": topology.IPV4_HOA,
    "dev4": topology.DEVICE4,
}
FIREWALL_NODES = {
    "fw": "firewall",
    "fw2": "move_to",
    "fw3": "second_mn",
    "fwc": "cn_firewall",
    "fwh": "ha_firewall",
}
CUSTOM = "custom"  # the profile name of a firewall whose ruleset is inline nft text
SYSCTL_KEY = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")
# Source NAT in inline nft text: the statement words, outside comments and quoted strings.
_NFT_SOURCE_NAT = re.compile(r"\b(masquerade|snat)\b")
_NFT_COMMENTS_AND_STRINGS = re.compile(r'#[^\n]*|"[^"\n]*"')
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
    "ha-restart-no-cache",
    "ro-open",
    "direct-mn-behind-fw",
    "udp-only-to-ha",
    "two-mns-behind-fw",
    "ro-cn-behind-fw",
)
_TABLES = {
    "": {"name", "description", "tc", "topology", "nft", "sysctl", "timeline", "traffic", "expect"},
    "topology": {
        "access",
        "firewall",
        "cn",
        "cn_firewall",
        "ha_firewall",
        "move_to",
        "second_mn",
        "access_mtu",
        "ha_udp_ports",
        "protection",
        "attacker",
        "ha_nodes",
        "mobile_network",
        "ipv4_home",
    },
    "traffic": {"initiator", "ping_count", "tcp_bytes", "stream", "udp_rate_pps", "udp_seconds"},
    "expect": {
        "mn_ha",
        "mn_ha_port",
        "mn_cn",
        "first_data_ms",
        "handover_gap_ms",
        "tcp_survives",
        "udp_loss_pct",
        "udp_max_gap_ms",
        "ha_restart_ms",
        "ha_answered_to_traffic_ms",
        "diagnosis",
        "diagnosis_within_s",
    },
}
_STEP_KEYS = {
    "wait": {"seconds"},
    "move": set(),
    "block": {"on", "proto", "between"},
    "unblock": {"on", "proto", "between"},
    "restart-ha": {"keep_state"},
    "restart-mn": set(),
    "wait-for-path": {"mn_ha", "mn_cn", "within_s"},
    "attack": {"kind", "count", "rate", "seconds", "latency_ratio"},
    "kill-ha-holder": set(),
    "stop-ha-holder": set(),
    "cut-ha-holder": set(),
    "restore-ha-link": set(),
    "kill-etcd": {"count", "leader"},
    "start-etcd": set(),
    "wait-health": {"state"},
    "wait-records": set(),
    "capture-bu": set(),
    "replay-bu": set(),
}


@dataclass(frozen=True)
class Step:
    """One timeline step; ``do`` says which, the other fields belong to some kinds only."""

    do: str
    seconds: float = 0.0  # wait
    on: str = "fw"  # block/unblock: the firewall node
    proto: str = "all"  # block/unblock
    between: tuple[str, str] | None = None  # block/unblock: both directions between the two
    mn_ha: str | None = None  # wait-for-path
    mn_cn: str | None = None  # wait-for-path
    within_s: float = 10.0  # wait-for-path
    keep_state: bool = True  # restart-ha: False deletes the HA's binding cache file first
    kind: str = ""  # attack: what lab.attack sends
    count: int = 1  # attack: rounds (when seconds is 0)
    rate: float = 0.0  # attack: rounds per second (0: as fast as it can)
    latency_ratio: float | None = None  # attack: the data path's p99 under it / unloaded p99
    leader: bool = False  # kill-etcd: the leader first
    state: str = "ok"  # wait-health: what every home agent of the cluster must report

    def describe(self) -> str:
        if self.do == "wait":
            return f"wait {self.seconds:g} s"
        if self.do in ("block", "unblock"):
            pair = " <-> ".join(self.between) if self.between else "any"
            return f"{self.do} {self.proto} on {self.on} ({pair})"
        if self.do == "wait-for-path":
            want = ", ".join(
                f"{k}={v}" for k, v in (("MN-HA", self.mn_ha), ("MN-CN", self.mn_cn)) if v
            )
            return f"wait for {want} within {self.within_s:g} s"
        if self.do == "restart-ha" and not self.keep_state:
            return "restart-ha without its binding cache"
        if self.do == "attack":
            how = f"{self.rate:g}/s for {self.seconds:g} s" if self.seconds else f"x{self.count}"
            return f"attack {self.kind} {how}"
        if self.do == "kill-etcd":
            return f"kill-etcd {self.count}{' (the leader first)' if self.leader else ''}"
        if self.do == "wait-health":
            return f"wait until every home agent is {self.state}"
        return self.do


@dataclass(frozen=True)
class Traffic:
    initiator: str = "both"  # who opens flows: "both", "mn" (MN->CN only), "cn" (CN->HoA only)
    ping_count: int = 5  # each way that the initiator allows; 0 for none
    tcp_bytes: int = 1_000_000  # a TCP transfer checked with SHA-256; 0 for none
    stream: bool = False  # a TCP stream running through the whole timeline
    udp_rate_pps: int = 0  # UDP datagrams per second through the timeline (or udp_seconds)
    udp_seconds: float = 3.0  # how long the UDP flow runs when there is no timeline


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    access: str  # "ipv6" | "ipv6-nat66" | "ipv4"
    firewall: str  # key of topology.FIREWALLS, or CUSTOM with nft["fw"]
    expect_mn_ha: str  # "T-native" | "T-udp" | "none" (with an expected diagnosis)
    cn: str = "plain"  # "plain" (no mipnode) | "mipnode"
    cn_firewall: str | None = None  # profile for a firewall in front of the CN
    expect_mn_cn: str | None = None  # checked when set
    move_to: str | None = None  # firewall profile of a second access network to move to
    second_mn: str | None = None  # firewall profile in front of a second MN (MN-to-MN paths)
    ha_firewall: str | None = None  # firewall profile in front of the HA (RFC 4487 §5.3)
    access_mtu: int | None = None  # MTU of the MN's first access link
    ha_udp_ports: tuple[int, ...] | None = None  # the HA's UDP ports (None: the default 4191)
    protection: str = "esp"  # the MN's and the HA's protection ("none": plain RFC 6275)
    attacker: bool = False  # an off-path `atk` node on the core (attack steps)
    mobile_network: bool = False  # the MN is a mobile router for a host `dev` (RFC 3963)
    ipv4_home: bool = False  # the MN gets an IPv4 home address; traffic runs over IPv4
    ha_nodes: int = 1  # home agents; more than one: a cluster on etcd
    tc: str | None = None  # RFC 4487 test case (reference/protocol.md §5.5)
    nft: dict[str, str] = field(default_factory=dict)  # firewall node -> inline nft text
    sysctl: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> key -> value
    timeline: tuple[Step, ...] = ()
    traffic: Traffic = Traffic()
    expect_first_data_ms: float | None = None
    expect_handover_gap_ms: float | None = None
    expect_tcp_survives: bool | None = None
    expect_udp_loss_pct: float | None = None
    expect_udp_max_gap_ms: float | None = None  # the longest blackhole the UDP flow may see
    expect_ha_restart_ms: float | None = None
    # The new HA's first answer on its control socket to traffic through it (a restart-ha step).
    expect_ha_answered_to_traffic_ms: float | None = None
    expect_mn_ha_port: int | None = None  # the HA UDP port of the MN's home path (T-udp)
    expect_diagnosis: str | None = None  # the MN's status diagnosis must start with this
    expect_diagnosis_within_s: float = 15.0
    source: str = ""  # the file it came from

    @property
    def restart_ha(self) -> bool:
        return any(s.do == "restart-ha" for s in self.timeline)

    @property
    def moves(self) -> bool:
        return any(s.do == "move" for s in self.timeline)

    @property
    def stream(self) -> bool:
        """A TCP stream runs through the timeline (and must survive it)."""
        return self.traffic.stream

    def build(self, record: RunRecord, workdir: Path) -> Topology:
        return topology.build(
            record,
            workdir,
            access=self.access,
            firewall=self.firewall,
            cn_firewall=self.cn_firewall,
            second_access=self.move_to,
            second_mn=self.second_mn,
            ha_firewall=self.ha_firewall,
            nft=self.nft,
            sysctls=self.sysctl,
            access_mtu=self.access_mtu,
            ha_udp_ports=self.ha_udp_ports,
            protection=self.protection,
            attacker=self.attacker,
            ha_nodes=self.ha_nodes,
            mobile_network=self.mobile_network,
            ipv4_home=self.ipv4_home,
        )

    def nodes(self) -> tuple[str, ...]:
        return topology.plan(
            self.cn_firewall,
            self.move_to,
            self.second_mn,
            self.ha_firewall,
            self.attacker,
            self.ha_nodes,
            self.mobile_network,
        )[0]


class ScenarioError(LabError):
    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


class _Reader:
    """Typed access to one file's values; every problem names the file and the key."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(self.file, key, problem)

    def table(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise self.fail(name, "must be a table")
        for key in table:
            if name in _TABLES and key not in _TABLES[name]:
                raise self.fail(f"{name}.{key}", "unknown key")
        return table

    def choice(self, key: str, value: Any, choices: tuple[str, ...], optional: bool) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, key: str, value: Any, low: float, high: float) -> float:
        # bool is an int in Python; `true` is not a number in a scenario file.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(key, f"{value!r} must be a number from {low:g} to {high:g}")
        return float(value)

    def integer(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"{value!r} must be a whole number from {low} to {high}")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def ports(self, key: str, value: Any) -> tuple[int, ...]:
        """UDP ports as the daemons take them (docs/configuration.md, ``udp_ports``): 1 to 8
        distinct ports, none of them 4500 (ESP-in-UDP, RFC 3948)."""
        if not isinstance(value, list) or not 1 <= len(value) <= 8:
            raise self.fail(key, "must be a list of 1 to 8 UDP ports")
        ports = tuple(self.integer(f"{key}[{i}]", p, 1, 65535) for i, p in enumerate(value))
        if len(set(ports)) != len(ports):
            raise self.fail(key, "a port is listed twice")
        if 4500 in ports:
            raise self.fail(key, "4500 is ESP-in-UDP (RFC 3948); the daemons refuse it")
        return ports


def _profile(r: _Reader, key: str, value: Any, optional: bool) -> str | None:
    return r.choice(key, value, (*FIREWALLS, CUSTOM), optional)


def _block_address(r: _Reader, key: str, name: Any, access: str) -> str:
    if not isinstance(name, str):
        raise r.fail(key, "must be a node name or an address")
    if name == "mn":
        return topology.placeholders(access)["MN"]
    if name in BLOCK_NAMES:
        return BLOCK_NAMES[name]
    try:
        return str(ip_address(name))
    except ValueError:
        names = ", ".join(("mn", *BLOCK_NAMES))
        raise r.fail(key, f"{name!r} is neither an address nor one of {names}") from None


def _step(
    r: _Reader,
    i: int,
    raw: Any,
    access: str,
    firewalls: set[str],
    attacker: bool = False,
    ha_nodes: int = 1,
) -> Step:
    where = f"timeline[{i}]"
    if not isinstance(raw, dict):
        raise r.fail(where, "must be a table")
    do = r.choice(f"{where}.do", raw.get("do"), STEP_KINDS, False)
    for key in raw:
        if key != "do" and key not in _STEP_KEYS[do]:
            raise r.fail(f"{where}.{key}", f"unknown key for a {do} step")
    if do == "wait":
        if "seconds" not in raw:
            raise r.fail(f"{where}.seconds", "required for a wait step")
        return Step(do, seconds=r.number(f"{where}.seconds", raw["seconds"], 0, 120))
    if do in ("block", "unblock"):
        on = raw.get("on", "fw")
        if on not in firewalls:
            raise r.fail(
                f"{where}.on",
                f"{on!r} is not a firewall of this topology ({', '.join(sorted(firewalls))})",
            )
        proto = r.choice(f"{where}.proto", raw.get("proto", "all"), BLOCK_PROTOCOLS, False)
        between = raw.get("between")
        pair = None
        if between is not None:
            if not isinstance(between, list) or len(between) != 2:
                raise r.fail(f"{where}.between", "must be a list of two nodes or addresses")
            a = _block_address(r, f"{where}.between", between[0], access)
            b = _block_address(r, f"{where}.between", between[1], access)
            if ip_address(a).version != ip_address(b).version:
                raise r.fail(f"{where}.between", f"{a} and {b} are not the same IP version")
            pair = (a, b)
        return Step(do, on=on, proto=proto, between=pair)
    if do == "wait-for-path":
        mn_ha = r.choice(f"{where}.mn_ha", raw.get("mn_ha"), MN_HA_PATHS[:2], True)
        mn_cn = r.choice(f"{where}.mn_cn", raw.get("mn_cn"), MN_CN_PATHS, True)
        if mn_ha is None and mn_cn is None:
            raise r.fail(where, "a wait-for-path step needs mn_ha or mn_cn")
        within = r.number(f"{where}.within_s", raw.get("within_s", 10.0), 0.1, 120)
        return Step(do, mn_ha=mn_ha, mn_cn=mn_cn, within_s=within)
    if do == "restart-ha":
        keep = r.boolean(f"{where}.keep_state", raw.get("keep_state", True))
        return Step(do, keep_state=keep)
    if do in CLUSTER_STEPS and ha_nodes < 2:
        raise r.fail(where, f"a {do} step needs a cluster: topology.ha_nodes = 2 or more")
    if do == "kill-etcd":
        count = r.integer(f"{where}.count", raw.get("count", 1), 1, 3)
        return Step(do, count=count, leader=r.boolean(f"{where}.leader", raw.get("leader", False)))
    if do == "wait-health":
        state = r.choice(f"{where}.state", raw.get("state", "ok"), HEALTH_STATES, False)
        return Step(do, state=state)
    if do == "attack":
        if not attacker:
            raise r.fail(where, "an attack step needs topology.attacker = true")
        if access != "ipv6":
            raise r.fail(where, 'attacks forge the MN\'s care-of address: access = "ipv6" only')
        kind = r.choice(f"{where}.kind", raw.get("kind"), ATTACKS, False)
        ratio = raw.get("latency_ratio")
        return Step(
            do,
            kind=kind,
            count=r.integer(f"{where}.count", raw.get("count", 1), 1, 100_000),
            rate=r.number(f"{where}.rate", raw.get("rate", 0.0), 0, 100_000),
            seconds=r.number(f"{where}.seconds", raw.get("seconds", 0.0), 0, 60),
            latency_ratio=None
            if ratio is None
            else r.number(f"{where}.latency_ratio", ratio, 1, 100),
        )
    return Step(do)


def parse_scenario(text: str, file: str) -> Scenario:
    r = _Reader(file)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise r.fail("-", f"not valid TOML: {exc}") from None
    for key in doc:
        if key not in _TABLES[""]:
            raise r.fail(key, "unknown key")
    name = doc.get("name")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise r.fail("name", "required: a name without spaces")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise r.fail("description", "must be a string")
    tc = doc.get("tc")
    if tc is not None and (not isinstance(tc, str) or not re.fullmatch(r"TC-\d\d[a-z]?", tc)):
        raise r.fail("tc", f"{tc!r} is not a test case name like TC-07")
    topo = r.table(doc, "topology")
    traffic_t = r.table(doc, "traffic")
    expect = r.table(doc, "expect")
    access = r.choice("topology.access", topo.get("access", "ipv6"), ACCESS, False)
    cn = r.choice("topology.cn", topo.get("cn", "plain"), CN_KINDS, False)

    # Firewalls: a profile name per node, or inline nft text in [nft] (profile "custom").
    nft_t = r.table(doc, "nft")
    profiles: dict[str, str | None] = {}
    for node, key in FIREWALL_NODES.items():
        default = "open" if node == "fw" else None
        value = topo.get(key, CUSTOM if node in nft_t and key not in topo else default)
        profiles[node] = _profile(r, f"topology.{key}", value, node != "fw")
    nft: dict[str, str] = {}
    for node, rules in nft_t.items():
        if node not in FIREWALL_NODES:
            raise r.fail(f"nft.{node}", f"not a firewall node ({', '.join(FIREWALL_NODES)})")
        if not isinstance(rules, str) or not rules.strip():
            raise r.fail(f"nft.{node}", "must be nft ruleset text")
        if profiles[node] not in (None, CUSTOM):
            raise r.fail(
                f"nft.{node}",
                f"replaces a profile: set topology.{FIREWALL_NODES[node]} = "
                '"custom" or leave it out',
            )
        nft[node] = rules
    for node, key in FIREWALL_NODES.items():
        if profiles[node] == CUSTOM and node not in nft:
            raise r.fail(f"topology.{key}", f'"custom" needs the ruleset in nft.{node}')
    firewall = profiles["fw"]
    assert firewall is not None
    cn_firewall, move_to = profiles["fwc"], profiles["fw2"]
    second_mn, ha_firewall = profiles["fw3"], profiles["fwh"]
    mtu = topo.get("access_mtu")
    access_mtu = None if mtu is None else r.integer("topology.access_mtu", mtu, 1280, 9000)
    raw_ports = topo.get("ha_udp_ports")
    ha_udp_ports = None if raw_ports is None else r.ports("topology.ha_udp_ports", raw_ports)
    protection = r.choice("topology.protection", topo.get("protection", "esp"), PROTECTIONS, False)
    attacker = r.boolean("topology.attacker", topo.get("attacker", False))
    ha_nodes = r.integer("topology.ha_nodes", topo.get("ha_nodes", 1), 1, 5)
    mobile_network = r.boolean("topology.mobile_network", topo.get("mobile_network", False))
    ipv4_home = r.boolean("topology.ipv4_home", topo.get("ipv4_home", False))
    if ipv4_home and (ha_nodes > 1 or ha_firewall):
        raise r.fail("topology.ipv4_home", "with one home agent and no ha_firewall only")
    if mobile_network and (ha_nodes > 1 or ha_firewall):
        raise r.fail("topology.mobile_network", "with one home agent and no ha_firewall only")

    nodes = topology.plan(
        cn_firewall, move_to, second_mn, ha_firewall, attacker, ha_nodes, mobile_network
    )[0]
    sysctl_t = r.table(doc, "sysctl")
    sysctl: dict[str, dict[str, str]] = {}
    for node, values in sysctl_t.items():
        if node not in nodes:
            raise r.fail(f"sysctl.{node}", f"not a node of this topology ({', '.join(nodes)})")
        if not isinstance(values, dict):
            raise r.fail(f"sysctl.{node}", 'must be a table of "net.KEY" = value')
        sysctl[node] = {}
        for key, value in values.items():
            where = f'sysctl.{node}."{key}"'
            if not SYSCTL_KEY.match(key):
                raise r.fail(where, "only per-namespace net.* sysctls can be set")
            if isinstance(value, bool) or not isinstance(value, int | str) or " " in str(value):
                raise r.fail(where, "must be a number or a word")
            sysctl[node][key] = str(value)

    raw_timeline = doc.get("timeline", [])
    if not isinstance(raw_timeline, list):
        raise r.fail("timeline", "must be an array of tables ([[timeline]])")
    firewall_nodes = {n for n in FIREWALL_NODES if n in nodes}
    timeline = tuple(
        _step(r, i, s, access, firewall_nodes, attacker, ha_nodes)
        for i, s in enumerate(raw_timeline)
    )

    initiator = r.choice(
        "traffic.initiator",
        traffic_t.get("initiator", "cn" if cn_firewall else "both"),
        INITIATORS,
        False,
    )
    traffic = Traffic(
        initiator=initiator,
        ping_count=r.integer("traffic.ping_count", traffic_t.get("ping_count", 5), 0, 100),
        tcp_bytes=r.integer("traffic.tcp_bytes", traffic_t.get("tcp_bytes", 1_000_000), 0, 10**9),
        stream=r.boolean("traffic.stream", traffic_t.get("stream", bool(timeline))),
        udp_rate_pps=r.integer("traffic.udp_rate_pps", traffic_t.get("udp_rate_pps", 0), 0, 10_000),
        udp_seconds=r.number("traffic.udp_seconds", traffic_t.get("udp_seconds", 3.0), 0.1, 120),
    )

    diagnosis = expect.get("diagnosis")
    if diagnosis is not None and (not isinstance(diagnosis, str) or not diagnosis):
        raise r.fail("expect.diagnosis", "must be the text the MN's diagnosis starts with")
    if "mn_ha" not in expect:
        raise r.fail("expect.mn_ha", "required: the MN-HA path the run must end on (or none)")
    mn_ha = r.choice("expect.mn_ha", expect["mn_ha"], MN_HA_PATHS, False)
    mn_cn = r.choice("expect.mn_cn", expect.get("mn_cn"), MN_CN_PATHS, True)

    def budget(key: str, high: float) -> float | None:
        value = expect.get(key)
        return None if value is None else r.number(f"expect.{key}", value, 0, high)

    tcp_survives = expect.get("tcp_survives")
    if tcp_survives is not None:
        r.boolean("expect.tcp_survives", tcp_survives)
    mn_ha_port = expect.get("mn_ha_port")
    if mn_ha_port is not None:
        r.integer("expect.mn_ha_port", mn_ha_port, 1, 65535)
    sc = Scenario(
        name=name,
        description=description,
        tc=tc,
        access=access,
        firewall=firewall,
        expect_mn_ha=mn_ha,
        cn=cn,
        cn_firewall=cn_firewall,
        expect_mn_cn=mn_cn,
        move_to=move_to,
        second_mn=second_mn,
        ha_firewall=ha_firewall,
        access_mtu=access_mtu,
        ha_udp_ports=ha_udp_ports,
        protection=protection,
        attacker=attacker,
        ha_nodes=ha_nodes,
        mobile_network=mobile_network,
        ipv4_home=ipv4_home,
        nft=nft,
        sysctl=sysctl,
        timeline=timeline,
        traffic=traffic,
        expect_first_data_ms=budget("first_data_ms", 120_000),
        expect_handover_gap_ms=budget("handover_gap_ms", 120_000),
        expect_tcp_survives=tcp_survives,
        expect_udp_loss_pct=budget("udp_loss_pct", 100),
        expect_udp_max_gap_ms=budget("udp_max_gap_ms", 120_000),
        expect_ha_restart_ms=budget("ha_restart_ms", 120_000),
        expect_ha_answered_to_traffic_ms=budget("ha_answered_to_traffic_ms", 120_000),
        expect_mn_ha_port=mn_ha_port,
        expect_diagnosis=diagnosis,
        expect_diagnosis_within_s=budget("diagnosis_within_s", 120) or 15.0,
        source=file,
    )
    _check_meetable(r, sc)
    return sc


def _check_meetable(r: _Reader, sc: Scenario) -> None:
    """Expectations the topology cannot meet (DESIGN §2: native paths need native IPv6)."""
    mn_ha, mn_cn, access = sc.expect_mn_ha, sc.expect_mn_cn, sc.access
    if (mn_ha == "none") != (sc.expect_diagnosis is not None):
        raise r.fail(
            "expect.diagnosis" if mn_ha == "none" else "expect.mn_ha",
            'mn_ha = "none" and an expected diagnosis go together',
        )
    if mn_ha == "none" and (mn_cn or sc.timeline):
        raise r.fail("expect.mn_cn" if mn_cn else "timeline", "nothing to check without an HA path")
    if access == "ipv4" and mn_ha == "T-native":
        raise r.fail("expect.mn_ha", "T-native needs IPv6 access, not ipv4")
    if access == "ipv4" and mn_cn in ("D-native", "T-native"):
        raise r.fail("expect.mn_cn", f"{mn_cn} needs IPv6 access, not ipv4")
    if access == "ipv4" and not _translates_ipv4(sc):
        what = "the ruleset" if sc.firewall == CUSTOM else repr(sc.firewall)
        raise r.fail(
            "nft.fw" if sc.firewall == CUSTOM else "topology.firewall",
            f'{what} does no NAT44, which access = "ipv4" needs: the core has no route back '
            f"to the MN's private {topology.placeholders('ipv4')['VISITED']} (use "
            f"{', '.join(NAT44_PROFILES)}, or nft with masquerade or snat)",
        )
    if mn_cn in ("D-native", "D-udp") and sc.cn == "plain" and not sc.second_mn:
        raise r.fail("expect.mn_cn", f'{mn_cn} needs cn = "mipnode"')
    if mn_cn == "D-native" and access == "ipv6-nat66":
        raise r.fail("expect.mn_cn", "D-native is never used through a NAT66")
    if sc.move_to and access != "ipv6":
        raise r.fail("topology.move_to", "movement scenarios need ipv6 access")
    if sc.second_mn and sc.cn_firewall:
        raise r.fail("topology.second_mn", "cannot be combined with cn_firewall")
    if sc.ha_firewall and sc.second_mn:
        raise r.fail("topology.ha_firewall", "cannot be combined with second_mn")
    if sc.ha_nodes > 1 and sc.ha_firewall:
        raise r.fail("topology.ha_nodes", "a cluster cannot be combined with ha_firewall yet")
    if sc.ha_nodes > 1 and sc.restart_ha:
        raise r.fail("topology.ha_nodes", "restart-ha restarts one home agent: not in a cluster")
    for i, step in enumerate(sc.timeline):
        if step.do == "move" and not sc.move_to:
            raise r.fail(f"timeline[{i}].do", "a move needs topology.move_to")
        if step.do == "wait-for-path" and step.mn_cn and sc.expect_mn_cn is None:
            raise r.fail(f"timeline[{i}].mn_cn", "needs expect.mn_cn (an MN-CN pair to watch)")
        if step.do == "wait-for-path" and step.mn_cn in ("D-native", "D-udp") and sc.cn == "plain":
            raise r.fail(f"timeline[{i}].mn_cn", f'{step.mn_cn} needs cn = "mipnode"')
        restarted = any(s.do == "restart-mn" for s in sc.timeline[:i])
        if step.do == "wait-for-path" and step.mn_cn and restarted and not _flows(sc):
            # A new MN process knows no correspondent until traffic to it crosses its tunnel.
            raise r.fail(
                f"timeline[{i}].mn_cn",
                "after restart-mn the MN knows the CN only from traffic: set "
                "traffic.udp_rate_pps or traffic.stream",
            )
    if sc.expect_handover_gap_ms is not None and not (sc.moves and sc.stream):
        raise r.fail("expect.handover_gap_ms", "needs a move step and traffic.stream")
    if sc.expect_tcp_survives is not None and not sc.stream:
        raise r.fail("expect.tcp_survives", "needs traffic.stream")
    for key, value in (
        ("udp_loss_pct", sc.expect_udp_loss_pct),
        ("udp_max_gap_ms", sc.expect_udp_max_gap_ms),
    ):
        if value is not None and not sc.traffic.udp_rate_pps:
            raise r.fail(f"expect.{key}", "needs traffic.udp_rate_pps")
    for key, value in (
        ("ha_restart_ms", sc.expect_ha_restart_ms),
        ("ha_answered_to_traffic_ms", sc.expect_ha_answered_to_traffic_ms),
    ):
        if value is not None and not sc.restart_ha:
            raise r.fail(f"expect.{key}", "needs a restart-ha step")
    if sc.expect_mn_ha_port is not None:
        if mn_ha != "T-udp":
            raise r.fail("expect.mn_ha_port", 'needs mn_ha = "T-udp" (T-native has no port)')
        ports = sc.ha_udp_ports or topology.DEFAULT_HA_UDP_PORTS
        if sc.expect_mn_ha_port not in ports:
            raise r.fail(
                "expect.mn_ha_port",
                f"{sc.expect_mn_ha_port} is not one of the HA's UDP ports "
                f"({', '.join(map(str, ports))}; set topology.ha_udp_ports)",
            )


def _flows(sc: Scenario) -> bool:
    """Whether background flows run through the timeline (the TCP stream or the UDP flow)."""
    return sc.stream or bool(sc.traffic.udp_rate_pps)


def _translates_ipv4(sc: Scenario) -> bool:
    """Whether ``fw`` does source NAT for the MN's IPv4 access network: a NAT44 profile, or
    inline nft with a masquerade or snat statement (nft itself checks the rest)."""
    if sc.firewall != CUSTOM:
        return sc.firewall in NAT44_PROFILES
    rules = _NFT_COMMENTS_AND_STRINGS.sub(" ", sc.nft.get("fw", ""))
    return _NFT_SOURCE_NAT.search(rules) is not None


def check_rulesets(sc: Scenario) -> None:
    """Let nft judge every inline ruleset before anything is built (needs root)."""
    for node, rules in sc.nft.items():
        problem = topology.check_ruleset(sc.access, rules)
        if problem:
            raise ScenarioError(sc.source or sc.name, f"nft.{node}", f"nft rejects it: {problem}")


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
    # By RFC 4487 test case (reference/protocol.md §5.5), then the order above; extras last.
    return tuple(
        sorted(
            found.values(),
            key=lambda s: (s.tc or "TC-99", rank.get(s.name, len(rank)), s.name),
        )
    )
