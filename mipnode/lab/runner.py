"""Run lab scenarios: build the topology, start real daemons, drive real traffic, judge."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mipnode.lab import cluster, timeline, topology
from mipnode.lab.capture import LinkCaptures
from mipnode.lab.netns import LabError, RunRecord, run
from mipnode.lab.report import repeat_summary, report_table, summary_table
from mipnode.lab.scenario_files import Scenario, builtin_scenarios
from mipnode.lab.status import correspondent_path, daemon_status, log_tail, wait_for
from mipnode.lab.topology import CN_ADDRESS, HOA, Topology

__all__ = [
    "BY_NAME",
    "SCENARIOS",
    "Scenario",
    "comparison",
    "correspondent_path",
    "daemon_status",
    "ping",
    "repeat_summary",
    "report_table",
    "run_scenario",
    "start_daemons",
    "summary_table",
    "tcp_transfer",
    "wait_for",
]

REGISTRATION_TIMEOUT_S = timeline.REGISTRATION_TIMEOUT_S
HOME_SETTLE_S = 5.0  # from the first registration to the path the firewalls leave
TCP_BYTES = 1_000_000
TCP_PORT = 5001
SCENARIOS = builtin_scenarios()
BY_NAME = {s.name: s for s in SCENARIOS}
D_NATIVE_WAIT_S = 10.0
STAYS_ON_T_WAIT_S = 4.0  # watching for a flap away from T, when the peer runs mipnode
PLAIN_CN_WAIT_S = 1.0  # a CN without mipnode cannot offer a direct path: a short look
# Defaults when a scenario sets no budget of its own (issue 3: the HA restart; issue 4: a
# handover within 3 s).
HA_RESTART_BUDGET_MS = 2000.0
HANDOVER_GAP_BUDGET_MS = 3000.0


class FirstData:
    """Pings the home address from the CN every 50 ms from the moment the MN starts: the first
    answer is the time to first data (registration, firewall priming and routing included)."""

    def __init__(self, t: Topology) -> None:
        self.started = time.monotonic()
        self.first: float | None = None
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", t.ns("cn"), "ping", "-6", "-n", "-i", "0.05", "-w", "30", HOA],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.answered = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "bytes from" in line:
                self.first = time.monotonic()
                self.answered.set()
                break
        self.proc.kill()

    def result_ms(self, timeout: float) -> float | None:
        self.answered.wait(timeout)
        self.stop()
        return None if self.first is None else round((self.first - self.started) * 1000, 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_home_network(t: Topology, *, cn_mipnode: bool) -> Path:
    """Write the configurations, start the HA (and the CN daemon) and wait until they answer;
    returns the MN's configuration file."""
    if t.ha_nodes > 1:
        cluster.start_etcd(t)
    _, mn_cfg = topology.write_configs(t)
    for node in topology.ha_node_names(t.ha_nodes):
        t.spawn(node, ["ha", "--config", str(t.workdir / f"{node}.toml")], f"{node}.log")
    for node in topology.ha_node_names(t.ha_nodes):
        if not wait_for(lambda n=node: daemon_status(t, n), 10):
            raise LabError(f"home agent {node} did not start: {log_tail(t, f'{node}.log')}")
    if t.ha_nodes > 1 and not wait_for(lambda: cluster.holder(t), 10):
        raise LabError(f"no home agent of the cluster took the address: {cluster.states(t)}")
    if cn_mipnode:
        cn_cfg = topology.write_cn_config(t)
        t.spawn("cn", ["cn", "--config", str(cn_cfg)], "cn.log")
        if not wait_for(lambda: daemon_status(t, "cn"), 10):
            raise LabError(f"correspondent node did not start: {log_tail(t, 'cn.log')}")
    return mn_cfg


def start_daemons(
    t: Topology, *, cn_mipnode: bool = False, probe_first_data: bool = False
) -> dict[str, Any]:
    """Start HA (and the CN daemon) then MN; return the MN's status once registered (with
    ``first_data_ms`` when probed)."""
    mn_cfg = start_home_network(t, cn_mipnode=cn_mipnode)
    t.spawn("mn", ["mn", "--config", str(mn_cfg)], "mn.log")
    prober = FirstData(t) if probe_first_data else None
    try:

        def registered() -> dict[str, Any] | None:
            s = daemon_status(t, "mn")
            return s if s and s.get("state") == "registered" else None

        status = wait_for(registered, REGISTRATION_TIMEOUT_S, 0.1)
        if status is None:
            last = daemon_status(t, "mn") or {}
            said = last.get("diagnosis") or f"mobile node state {last.get('state', 'unknown')}"
            raise LabError(
                f"not registered after {REGISTRATION_TIMEOUT_S:.0f} s: {said}; "
                f"{log_tail(t, 'mn.log')}"
            )
        if prober is not None:
            status["first_data_ms"] = prober.result_ms(REGISTRATION_TIMEOUT_S)
    finally:
        if prober is not None:
            prober.stop()
    if t.second_mn:
        t.spawn("mn2", ["mn", "--config", str(t.workdir / "mn2.toml")], "mn2.log")
        if not wait_for(
            lambda: (daemon_status(t, "mn2") or {}).get("state") == "registered",
            REGISTRATION_TIMEOUT_S,
            0.2,
        ):
            raise LabError(f"second mobile node did not register: {log_tail(t, 'mn2.log')}")
    return status


def ping(t: Topology, node: str, target: str, count: int = 5) -> dict[str, Any]:
    out = t.sh(
        node,
        "ping",
        "-4" if "." in target else "-6",
        "-n",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        "2",
        target,
        check=False,
        timeout=30,
    )
    received = re.search(r"(\d+) received", out)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    got = int(received.group(1)) if received else 0
    return {"sent": count, "received": got, "rtt_ms": float(rtt.group(1)) if rtt else None}


def settle_correspondent_path(
    t: Topology,
    expected: str,
    *,
    from_cn: bool = False,
    peer: str = CN_ADDRESS,
    peer_runs_mipnode: bool = True,
) -> tuple[str | None, list[str]]:
    """Drive first traffic to the CN, then watch the MN-CN path settle.

    Expecting D-native: wait until it is reached. Expecting a T path: keep watching for a
    while and record every path seen, so a flap to D-native and back is caught.
    """
    # The MN starts return routability with the first packets it sends to the CN (replies
    # included, when the CN starts the conversation).
    node, address = t.mn_host()  # the home address, or a host behind a mobile router
    if from_cn:
        ping(t, "cn", address, count=2)
    else:
        ping(t, node, peer, count=2)
    seen: list[str] = []
    if expected.startswith("D-"):
        watch = D_NATIVE_WAIT_S
    else:
        watch = STAYS_ON_T_WAIT_S if peer_runs_mipnode else PLAIN_CN_WAIT_S
    deadline = time.monotonic() + watch
    path = None
    while time.monotonic() < deadline:
        path = correspondent_path(t, peer)
        if path and (not seen or seen[-1] != path):
            seen.append(path)
        if expected.startswith("D-") and path == expected:
            break
        time.sleep(0.2)
    return path, seen


def tcp_transfer(
    t: Topology, *, from_cn: bool = False, to_second_mn: bool = False
) -> dict[str, Any]:
    """A TCP stream of TCP_BYTES between the MN's HoA and the CN, checked with SHA-256.

    MN -> CN by default; CN -> HoA when the CN sits behind a firewall that admits only what the
    CN starts (RFC 4487 §5.2).
    """
    host, host_address = t.mn_host()
    server_node, client_node, target = (
        (host, "cn", host_address) if from_cn else ("cn", host, t.cn_address())
    )
    if to_second_mn:
        server_node, client_node, target = ("mn2", "mn", topology.HOA2)
    server = timeline.traffic_process(t, server_node, "server", str(TCP_PORT))
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "listening": the readiness probe, no fixed sleep
        proc = run(
            [
                "ip",
                "netns",
                "exec",
                t.ns(client_node),
                sys.executable,
                "-m",
                "mipnode.lab.traffic",
                "client",
                target,
                str(TCP_PORT),
                str(TCP_BYTES),
            ],
            check=False,
            timeout=60,
        )
        try:
            result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result = {"ok": False, "error": proc.stderr.strip()[-200:]}
        result["direction"] = "cn->mn" if from_cn else "mn->cn"
        return result
    finally:
        server.kill()
        server.communicate()


def new_result(sc: Scenario) -> dict[str, Any]:
    return {
        "name": sc.name,
        "tc": sc.tc,
        "description": sc.description,
        "passed": False,
        "expected": {
            "mn_ha": sc.expect_mn_ha,
            "mn_ha_port": sc.expect_mn_ha_port,
            "mn_cn": sc.expect_mn_cn,
            "first_data_ms": sc.expect_first_data_ms,
            "handover_gap_ms": sc.expect_handover_gap_ms,
            "tcp_survives": sc.expect_tcp_survives,
            "udp_loss_pct": sc.expect_udp_loss_pct,
            "udp_max_gap_ms": sc.expect_udp_max_gap_ms,
            "ha_answered_to_traffic_ms": sc.expect_ha_answered_to_traffic_ms,
            "mn_diagnosis": sc.expect_diagnosis,
        },
        "observed": {"mn_ha": None, "mn_ha_port": None, "mn_cn": None, "mn_diagnosis": None},
        "timings_ms": {
            "registration": None,
            "first_data": None,
            "rtt_via_ha": None,
        },
        "traffic": {},
        "timeline": [],
        # What happened when, for the HTML report (docs/lab.md): times in ms since started_at.
        "history": {
            "started_at": None,
            "timeline_ms": None,
            "ended_ms": None,
            "mn_ha": [],
            "mn_cn": [],
            "stream": None,
            "udp": None,
        },
        "diagnosis": None,
        # Lab runs are real time on real sockets: nothing to seed. The run id names every
        # namespace of the run (and its pcap directory).
        "seed": None,
        "run_id": None,
    }


def comparison(plain: dict[str, Any]) -> dict[str, Any]:
    """What a run without protection measured, to stand next to the protected run's."""
    tcp = plain["traffic"].get("tcp") or {}
    return {
        "mn_ha": plain["observed"]["mn_ha"],
        "mn_cn": plain["observed"]["mn_cn"],
        "rtt_ms": plain["timings_ms"].get("rtt_via_ha"),
        "tcp_mbit_s": tcp.get("mbit_s") if tcp.get("ok") else None,
        "passed": plain["passed"],
    }


def run_scenario(
    sc: Scenario, *, keep_logs: bool = False, pcap_dir: Path | None = None
) -> dict[str, Any]:
    record = RunRecord.new("run")
    record.scenario = sc.name
    workdir = Path(tempfile.mkdtemp(prefix=f"mipnode-lab-{record.run_id}-"))
    record.workdir = str(workdir)
    record.save()
    result = new_result(sc)
    result["run_id"] = record.run_id
    history = result["history"]
    history["started_at"] = round(time.time(), 3)
    captures = None
    t: Topology | None = None
    try:
        t = sc.build(record, workdir)
        if pcap_dir is not None:
            captures = LinkCaptures(pcap_dir)
            captures.start_for_links(t)
            t.esp_keylog = pcap_dir / "esp-keys.txt"  # so the pcaps decrypt (docs/lab.md)
        problems = (
            diagnosis_case(t, sc, result)
            if sc.expect_diagnosis is not None
            else _connectivity_case(t, sc, result)
        )
        result["passed"] = not problems
        result["diagnosis"] = "; ".join(problems) or None
    except LabError as exc:
        result["diagnosis"] = str(exc)
    except (subprocess.SubprocessError, OSError, KeyError, IndexError, ValueError) as exc:
        # One broken scenario must not end the run or lose the report of the others.
        result["diagnosis"] = f"lab error: {type(exc).__name__}: {exc}"
    finally:
        if t is not None and sc.expect_diagnosis is None:
            # Also when the run broke off: how far the paths got is part of why.
            _record_paths(t, history, timeline.peer_address(sc, t))
        history["ended_ms"] = round((time.time() - history["started_at"]) * 1000, 1)
        if captures is not None:  # before the teardown: a capture needs its namespace
            result["pcaps"] = [str(p) for p in captures.stop()]
            result["pcap_stats"] = captures.stats
        record.teardown()
        if result["passed"] and not keep_logs:
            remove_workdir(workdir)
        else:
            result["logs"] = str(workdir)
    return result


def remove_workdir(workdir: Path) -> None:
    """A run's configurations and logs, once nobody needs them (left alone on any error)."""
    shutil.rmtree(workdir, ignore_errors=True)  # etcd's data directories too


def diagnosis_case(t: Topology, sc: Scenario, result: dict[str, Any]) -> list[str]:
    """No path can exist (RFC 4487 §5.3, TC-07): the MN must say so, in bounded time."""
    mn_cfg = start_home_network(t, cn_mipnode=sc.cn == "mipnode")
    started = time.monotonic()
    t.spawn("mn", ["mn", "--config", str(mn_cfg)], "mn.log")

    def said_something() -> dict[str, Any] | None:
        s = daemon_status(t, "mn")
        return s if s and (s.get("diagnosis") or s.get("state") == "registered") else None

    status = wait_for(said_something, sc.expect_diagnosis_within_s, 0.1) or {}
    said = status.get("diagnosis")
    result["observed"]["mn_diagnosis"] = said
    result["timings_ms"]["diagnosis"] = (
        round((time.monotonic() - started) * 1000, 1) if said else None
    )
    bindings = status.get("bindings") or []
    result["observed"]["mn_ha"] = bindings[0]["path"]["kind"] if bindings else "none"
    assert sc.expect_diagnosis is not None
    problems = []
    if status.get("state") == "registered":
        problems.append(f"the MN registered over {result['observed']['mn_ha']}; expected none")
    elif not said:
        problems.append(
            f"no diagnosis from the MN within {sc.expect_diagnosis_within_s:g} s "
            f"(state {(daemon_status(t, 'mn') or {}).get('state')})"
        )
    elif not said.startswith(sc.expect_diagnosis):
        problems.append(f"MN diagnosis {said!r}, expected {sc.expect_diagnosis!r}...")
    problems += _daemons_healthy(t, sc)
    return problems


def _daemons_healthy(t: Topology, sc: Scenario) -> list[str]:
    problems = []
    nodes = ["mn", *cluster.running_home_agents(t)] + (["cn"] if sc.cn == "mipnode" else [])
    for node in nodes + (["mn2"] if sc.second_mn else []):
        answer = daemon_status(t, node)
        if answer is None:
            problems.append(f"{node} daemon no longer answers: {log_tail(t, node + '.log')}")
        elif answer.get("internal_errors"):
            problems.append(f"{node} daemon hit internal errors: {answer['internal_errors']}")
    return problems


def _connectivity_case(t: Topology, sc: Scenario, result: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    initiator = sc.traffic.initiator
    status = start_daemons(t, cn_mipnode=sc.cn == "mipnode", probe_first_data=initiator != "mn")
    peer = timeline.peer_address(sc, t)
    # Under protection the home path settles after the first registration: the checks before
    # it run in clear, the ones after it sealed, so a firewall that drops ESP moves it from
    # T-native to T-udp and one that drops only protocol 41 from T-udp to T-native (within
    # about a second). Wait for the expected kind on both ends, at most HOME_SETTLE_S.
    binding = settled_binding(t, sc.expect_mn_ha) or status["bindings"][0]
    result["observed"]["mn_ha"] = binding["path"]["kind"]
    result["observed"]["mn_ha_port"] = home_port(binding)
    result["timings_ms"]["registration"] = status.get("registration_ms")
    result["timings_ms"]["first_data"] = status.get("first_data_ms")
    ha = daemon_status(t, cluster.serving(t), "bindings") or {}
    ha_kinds = [b["path"]["kind"] for b in ha.get("bindings", []) if b["hoa"] == HOA]
    cn_paths: list[str] = []
    if sc.expect_mn_cn is not None:
        settled, cn_paths = settle_correspondent_path(
            t,
            sc.expect_mn_cn,
            from_cn=initiator == "cn",
            peer=peer,
            peer_runs_mipnode=sc.cn == "mipnode" or sc.second_mn is not None,
        )
        result["observed"]["mn_cn"] = settled

    # Pings each way the scenario's firewalls let a flow start, then a checked TCP transfer.
    count = sc.traffic.ping_count
    host, host_address = t.mn_host()  # the home address, or a host behind a mobile router
    cn_ping = ping(t, "cn", host_address, count) if count and initiator != "mn" else None
    mn_ping = ping(t, host, peer, count) if count and initiator != "cn" else None
    rtt_ping = cn_ping or mn_ping
    result["timings_ms"]["rtt_via_ha"] = rtt_ping["rtt_ms"] if rtt_ping else None
    tcp = (
        tcp_transfer(t, from_cn=initiator == "cn", to_second_mn=sc.second_mn is not None)
        if sc.traffic.tcp_bytes
        else None
    )
    result["traffic"].update({"ping_cn_to_hoa": cn_ping, "ping_hoa_to_cn": mn_ping, "tcp": tcp})

    problems += _run_timeline(t, sc, result, peer)

    if sc.expect_mn_cn is not None:
        # The path must hold through the traffic; a timeline may move it, to where it says.
        after = correspondent_path(t, peer)
        if after != result["observed"]["mn_cn"]:
            cn_paths.append(f"{after} (at the end)")
        result["observed"]["mn_cn_changes"] = cn_paths
        flapped = not sc.timeline and (
            (len(cn_paths) > 1 and not sc.expect_mn_cn.startswith("D-"))
            or after != result["observed"]["mn_cn"]
        )
        if result["observed"]["mn_cn"] != sc.expect_mn_cn or flapped:
            problems.append(
                f"MN-CN path {' -> '.join(cn_paths) or None}, expected {sc.expect_mn_cn}"
            )
        elif after != _final_mn_cn(sc):
            problems.append(f"MN-CN path {after} at the end, expected {_final_mn_cn(sc)}")
    if result["observed"]["mn_ha"] != sc.expect_mn_ha:
        problems.append(f"MN-HA path {result['observed']['mn_ha']}, expected {sc.expect_mn_ha}")
    port = result["observed"]["mn_ha_port"]
    if sc.expect_mn_ha_port is not None and port != sc.expect_mn_ha_port:
        problems.append(f"MN-HA path to the HA's UDP port {port}, expected {sc.expect_mn_ha_port}")
    first_data = result["timings_ms"]["first_data"]
    if sc.expect_first_data_ms is not None and (
        first_data is None or first_data > sc.expect_first_data_ms
    ):
        problems.append(f"first data after {first_data} ms (budget {sc.expect_first_data_ms:g})")
    problems += _daemons_healthy(t, sc)
    if t.mobile_network:
        problems += _mobile_network_routed(t, result, direct=sc.expect_mn_cn == "D-udp")
    if t.ipv4_home:
        problems += _ipv4_home_used(t, result)
    if ha_kinds != [result["observed"]["mn_ha"]]:
        problems.append(f"HA reports {ha_kinds or 'no binding'} for {HOA}")
    for name, p in (("CN->HoA", cn_ping), ("HoA->CN", mn_ping)):
        if p is not None and p["received"] < p["sent"] - 1:
            problems.append(f"ping {name} {p['received']}/{p['sent']}")
    if tcp is not None and not tcp.get("ok"):
        problems.append(f"TCP transfer failed: {tcp.get('error', 'digest mismatch')}")
    return problems


def _mobile_network_routed(t: Topology, result: dict[str, Any], *, direct: bool) -> list[str]:
    """A mobile router's network must be registered at the home agent and its host's traffic
    must have crossed the router's tunnel (not some way around it); with ``direct``, its
    traffic must also have left on the D-udp pair the router checked for it."""
    ha = daemon_status(t, cluster.serving(t), "bindings") or {}
    routed = [b.get("mobile_network_prefixes") for b in ha.get("bindings", []) if b["hoa"] == HOA]
    counters = (daemon_status(t, "mn") or {}).get("counters") or {}
    sent = counters.get("tunnelled_from_mobile_network", 0)
    sent += counters.get("tunnelled_ipv4_from_mobile_network", 0)
    sent_direct = counters.get("d_udp_from_mobile_network", 0)
    own = [b.get("mobile_network_prefixes") for b in _mn_bindings(t)]
    result["observed"]["mobile_network"] = {
        "ha_routes": routed,
        "router_tunnelled": sent,
        "router_direct": sent_direct,
    }
    problems = []
    expected = [topology.MOBILE_NETWORK, *([topology.MOBILE_NETWORK4] if t.ipv4_home else [])]
    for who, seen in (("HA", routed), ("router", own)):
        if seen != [expected]:
            problems.append(f"{who} binding routes {seen}, expected {expected}")
    if not sent:
        problems.append("nothing from the mobile network went through the router's tunnel")
    if direct and not sent_direct:
        problems.append("nothing from the mobile network left on the router's D-udp pair")
    return problems


def _ipv4_home_used(t: Topology, result: dict[str, Any]) -> list[str]:
    """The MN was given its IPv4 home address (RFC 5555) and its IPv4 traffic crossed the
    tunnel to the home agent."""
    mn = daemon_status(t, "mn") or {}
    given = mn.get("ipv4_home_address")
    counters = mn.get("counters") or {}  # the MN's own, or (a router) its network's
    sent = counters.get(
        "tunnelled_ipv4_from_mobile_network" if t.mobile_network else "tunnelled_ipv4_to_ha", 0
    )
    ha = daemon_status(t, cluster.serving(t), "bindings") or {}
    views = [b.get("ipv4_home_address") for b in ha.get("bindings", []) if b["hoa"] == HOA]
    views += [b.get("ipv4_home_address") for b in _mn_bindings(t)]
    result["observed"]["ipv4_home"] = {"address": given, "tunnelled": sent}
    problems = []
    if given != topology.IPV4_HOA or views != [topology.IPV4_HOA] * 2:
        problems.append(
            f"the MN's IPv4 home address is {given} (bindings: HA, MN {views}), "
            f"expected {topology.IPV4_HOA}"
        )
    if not sent:
        problems.append("no IPv4 packet went through the tunnel to the home agent")
    return problems


def _mn_bindings(t: Topology) -> list[dict[str, Any]]:
    return list((daemon_status(t, "mn", "bindings") or {}).get("bindings") or [])


def home_port(binding: dict[str, Any]) -> int | None:
    """The HA's UDP port the MN's home path uses (its status ``path.remote.port``; None for
    T-native, which has no port)."""
    remote = (binding.get("path") or {}).get("remote") or {}
    port = remote.get("port")
    return port if isinstance(port, int) else None


def _final_mn_ha(sc: Scenario) -> str:
    """The MN-HA path a run must end on: the last one a timeline waited for, else expect.mn_ha."""
    for step in reversed(sc.timeline):
        if step.do == "wait-for-path" and step.mn_ha:
            return step.mn_ha
    return sc.expect_mn_ha


def _final_mn_cn(sc: Scenario) -> str | None:
    """The MN-CN path a run must end on: the last one a timeline waited for, else expect.mn_cn."""
    for step in reversed(sc.timeline):
        if step.do == "wait-for-path" and step.mn_cn:
            return step.mn_cn
    return sc.expect_mn_cn


def _run_timeline(t: Topology, sc: Scenario, result: dict[str, Any], peer: str) -> list[str]:
    """The timeline's steps with the scenario's background flows; then traffic must still flow."""
    problems: list[str] = []
    stream = timeline.start_stream(t, sc, peer) if sc.stream else None
    udp = timeline.start_udp(t, sc, peer) if sc.traffic.udp_rate_pps else None
    history = result["history"]
    try:
        started = time.monotonic()
        history["timeline_ms"] = round((time.time() - history["started_at"]) * 1000, 1)
        for step in sc.timeline:
            entry: dict[str, Any] = {"at_ms": round((time.monotonic() - started) * 1000, 1)}
            if step.do == "restart-mn":
                _record_paths(t, history, peer, restarting=True)  # the new MN starts a new log
            entry.update(timeline.run_step(t, step, peer, sc.traffic.initiator))
            result["timeline"].append(entry)
            if "problem" in entry:
                problems.append(entry["problem"])
            if step.do == "move":
                result["timings_ms"]["handover"] = entry["handover_ms"]
            if step.do == "restart-ha":
                problems += _restart_budgets(sc, entry, result)
            if step.do == "restart-mn":
                result["timings_ms"]["mn_restart_to_registration"] = entry["registered_ms"]
        if udp is not None and not sc.timeline:
            time.sleep(sc.traffic.udp_seconds)  # a flow of the configured length
    finally:
        reports = [f.finish() if f is not None else (None, None) for f in (stream, udp)]
    history["stream"] = timeline.over_time(reports[0][1], history["started_at"])
    history["udp"] = timeline.over_time(reports[1][1], history["started_at"])
    if stream is not None:
        report = timeline.stream_report(reports[0][0])
        result["traffic"]["stream"] = report
        gap = report.get("max_gap_ms")
        if sc.moves:
            result["timings_ms"]["handover_gap"] = gap
        survives = sc.expect_tcp_survives if sc.expect_tcp_survives is not None else True
        if survives and not report.get("ok"):
            problems.append(f"TCP stream did not survive the timeline: {report}")
        if not survives and report.get("ok"):
            problems.append("the TCP stream survived; the scenario expected it to break")
        budget: float | None = sc.expect_handover_gap_ms
        if budget is None and sc.moves:
            budget = HANDOVER_GAP_BUDGET_MS
        if budget is not None and gap is not None and gap > budget:
            problems.append(f"longest pause in the stream {gap} ms (budget {budget:g})")
    if udp is not None:
        report = timeline.udp_report(*reports[1])
        result["traffic"]["udp"] = report
        loss_limit = sc.expect_udp_loss_pct
        if not report["ok"]:
            problems.append(f"UDP flow: {report['error']}")
        elif loss_limit is not None and report["loss_pct"] > loss_limit:
            problems.append(f"UDP loss {report['loss_pct']} % (budget {loss_limit:g} %)")
        gap_limit = sc.expect_udp_max_gap_ms
        if report["ok"] and gap_limit is not None and report["max_gap_ms"] > gap_limit:
            problems.append(f"UDP flow paused {report['max_gap_ms']} ms (budget {gap_limit:g})")
    if sc.timeline:
        # Whatever the timeline did, the home address must be reachable at its end.
        host, host_address = t.mn_host()
        node, target = ("cn", host_address) if sc.traffic.initiator != "mn" else (host, peer)
        after = ping(t, node, target, 3)
        result["traffic"]["ping_after_timeline"] = after
        if not after["received"]:
            problems.append(f"no traffic after the timeline: ping {node} -> {target} 0/3")
    # Every run ends on the home path it expects (a path that settled and then flapped away
    # during the traffic is a failure too), on the MN and on the HA alike.
    bindings = (daemon_status(t, "mn") or {}).get("bindings") or []
    end = bindings[0]["path"]["kind"] if bindings else None
    ha_end = [
        b["path"]["kind"]
        for b in (daemon_status(t, cluster.serving(t), "bindings") or {}).get("bindings", [])
        if b["hoa"] == HOA
    ]
    result["observed"]["mn_ha_at_end"] = end
    if end != _final_mn_ha(sc) or ha_end != [end]:
        problems.append(
            f"MN-HA path {end} at the end (the HA's binding: {ha_end}), expected {_final_mn_ha(sc)}"
        )
    return problems


def _record_paths(
    t: Topology, history: dict[str, Any], peer: str, *, restarting: bool = False
) -> None:
    """Add the MN's path log to ``history`` (what an earlier read of it holds stays: a
    restarted MN's log starts empty). ``restarting``: the MN is about to stop, so its paths
    end now."""
    now = round((time.time() - history["started_at"]) * 1000, 1)
    for lane, changes in timeline.path_changes(t, peer, history["started_at"]).items():
        known = history[lane]
        known += [c for c in changes if c not in known]
        known.sort(key=lambda c: c["at_ms"])
        if restarting and known and known[-1]["to"] is not None:
            known.append(
                {"at_ms": now, "from": known[-1]["to"], "to": None, "reason": "restart-mn"}
            )


def settled_binding(t: Topology, expected: str | None) -> dict[str, Any] | None:
    """The MN's binding once the MN and the HA both hold it on ``expected`` (or the last one
    seen, after HOME_SETTLE_S)."""
    last: list[dict[str, Any]] = []

    def settled() -> dict[str, Any] | None:
        bindings = (daemon_status(t, "mn", "bindings") or {}).get("bindings") or []
        if not bindings:
            return None
        last[:] = bindings[:1]
        if bindings[0]["path"]["kind"] != expected:
            return None
        ha = (daemon_status(t, cluster.serving(t), "bindings") or {}).get("bindings", [])
        kinds = [b["path"]["kind"] for b in ha if b["hoa"] == HOA]
        return bindings[0] if kinds == [expected] else None

    return wait_for(settled, HOME_SETTLE_S, 0.1) or (last[0] if last else None)


def _restart_budgets(sc: Scenario, entry: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """A restart-ha step's timings against the scenario's budgets: HA start to traffic
    (``ha_restart_ms``; 2000 ms when the scenario sets neither budget) and the new HA's first
    answer to traffic (``ha_answered_to_traffic_ms``). No traffic at all is the step's own
    problem, with its evidence."""
    resumed, after_answer = entry["resumed_ms"], entry.get("answered_to_traffic_ms")
    result["timings_ms"]["ha_restart_to_traffic"] = resumed
    result["timings_ms"]["ha_answered_to_traffic"] = after_answer
    limit = sc.expect_ha_restart_ms
    if limit is None and sc.expect_ha_answered_to_traffic_ms is None:
        limit = HA_RESTART_BUDGET_MS
    problems = []
    if limit is not None and resumed is not None and resumed > limit:
        problems.append(
            f"traffic through the HA resumed {resumed} ms after its restart (budget {limit:g})"
        )
    limit = sc.expect_ha_answered_to_traffic_ms
    if limit is not None and after_answer is not None and after_answer > limit:
        problems.append(
            f"traffic through the HA resumed {after_answer} ms after the new HA first answered "
            f"(budget {limit:g})"
        )
    return problems
