"""Run lab scenarios: build the topology, start real daemons, drive real traffic, judge."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mipnode.lab import topology
from mipnode.lab.netns import CHILDREN, LabError, RunRecord, run
from mipnode.lab.scenario_files import Scenario, builtin_scenarios
from mipnode.lab.topology import CN_ADDRESS, HOA, Topology

REGISTRATION_TIMEOUT_S = 25.0
TCP_BYTES = 1_000_000
TCP_PORT = 5001


SCENARIOS = builtin_scenarios()
D_NATIVE_WAIT_S = 10.0
HA_RESTART_BUDGET_S = 2.0  # issue 3: traffic resumes within 2 s of the HA starting
STAYS_ON_T_WAIT_S = 4.0
BY_NAME = {s.name: s for s in SCENARIOS}


def daemon_status(t: Topology, node: str, command: str = "status") -> Any:
    """The daemon's JSON answer (an object; a list for `paths`), or None if it does not answer."""
    proc = run(
        ["ip", "netns", "exec", t.ns(node), sys.executable, "-m", "mipnode.cli", command, "--json"],
        check=False,
        timeout=10,
    )
    if proc.returncode != 0:
        return None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        return None
    return answer if isinstance(answer, dict | list) else None


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _log_tail(t: Topology, name: str, lines: int = 5) -> str:
    try:
        text = (t.workdir / name).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def start_daemons(t: Topology, *, cn_mipnode: bool = False) -> dict[str, Any]:
    """Start HA (and the CN daemon) then MN; return the MN's status once registered."""
    ha_cfg, mn_cfg = topology.write_configs(t)
    t.spawn("ha", ["ha", "--config", str(ha_cfg)], "ha.log")
    if not wait_for(lambda: daemon_status(t, "ha"), 10):
        raise LabError(f"home agent did not start: {_log_tail(t, 'ha.log')}")
    if cn_mipnode:
        cn_cfg = topology.write_cn_config(t)
        t.spawn("cn", ["cn", "--config", str(cn_cfg)], "cn.log")
        if not wait_for(lambda: daemon_status(t, "cn"), 10):
            raise LabError(f"correspondent node did not start: {_log_tail(t, 'cn.log')}")
    t.spawn("mn", ["mn", "--config", str(mn_cfg)], "mn.log")

    def registered() -> dict[str, Any] | None:
        s = daemon_status(t, "mn")
        return s if s and s.get("state") == "registered" else None

    status = wait_for(registered, REGISTRATION_TIMEOUT_S, 0.2)
    if status is None:
        last = daemon_status(t, "mn")
        state = last.get("state") if last else "not answering"
        raise LabError(
            f"home agent unreachable: mobile node state {state} after "
            f"{REGISTRATION_TIMEOUT_S:.0f} s; {_log_tail(t, 'mn.log')}"
        )
    if t.second_mn:
        t.spawn("mn2", ["mn", "--config", str(t.workdir / "mn2.toml")], "mn2.log")
        if not wait_for(
            lambda: (daemon_status(t, "mn2") or {}).get("state") == "registered",
            REGISTRATION_TIMEOUT_S,
            0.2,
        ):
            raise LabError(f"second mobile node did not register: {_log_tail(t, 'mn2.log')}")
    return status


def ping(t: Topology, node: str, target: str, count: int = 5) -> dict[str, Any]:
    out = t.sh(
        node,
        "ping",
        "-6",
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


def correspondent_path(t: Topology, peer: str = CN_ADDRESS) -> str | None:
    """The path the MN's traffic to ``peer`` (the CN, or the second MN's HoA) takes now."""
    status = daemon_status(t, "mn") or {}
    for c in status.get("correspondents", []):
        if c["cn"] == peer:
            return str(c["path"])
    return status["bindings"][0]["path"]["kind"] if status.get("bindings") else None


def settle_correspondent_path(
    t: Topology, expected: str, *, from_cn: bool = False, peer: str = CN_ADDRESS
) -> tuple[str | None, list[str]]:
    """Drive first traffic to the CN, then watch the MN-CN path settle.

    Expecting D-native: wait until it is reached. Expecting a T path: keep watching for a
    while and record every path seen, so a flap to D-native and back is caught.
    """
    # The MN starts return routability with the first packets it sends to the CN (replies
    # included, when the CN starts the conversation).
    if from_cn:
        ping(t, "cn", HOA, count=2)
    else:
        ping(t, "mn", peer, count=2)
    seen: list[str] = []
    deadline = time.monotonic() + (
        D_NATIVE_WAIT_S if expected.startswith("D-") else STAYS_ON_T_WAIT_S
    )
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
    server_node, client_node, target = ("mn", "cn", HOA) if from_cn else ("cn", "mn", CN_ADDRESS)
    if to_second_mn:
        server_node, client_node, target = ("mn2", "mn", topology.HOA2)
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            t.ns(server_node),
            sys.executable,
            "-m",
            "mipnode.lab.traffic",
            "server",
            str(TCP_PORT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


STREAM_SECONDS = 6.0
MOVE_AFTER_S = 2.0
HANDOVER_GAP_BUDGET_MS = 3000.0


def stream_across_a_move(t: Topology) -> dict[str, Any]:
    """A TCP stream MN -> CN; MOVE_AFTER_S into it the MN moves to the second access network.
    Returns the stream's verdict, its longest pause (the handover gap seen by the application)
    and what the MN and HA report after the move."""

    def traffic(node: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", t.ns(node), sys.executable, "-m", "mipnode.lab.traffic", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    server = traffic("cn", "stream-server", str(TCP_PORT + 1))
    client = None
    try:
        assert server.stdout is not None
        server.stdout.readline()  # listening
        client = traffic("mn", "stream-client", CN_ADDRESS, str(TCP_PORT + 1), str(STREAM_SECONDS))
        time.sleep(MOVE_AFTER_S)  # a timeline step: the stream runs, then the MN moves
        topology.move_mn(t)

        def moved() -> dict[str, Any] | None:
            s = daemon_status(t, "mn")
            if s is None or s.get("handover_ms") is None or not s["bindings"]:
                return None
            return s if s["bindings"][0]["coa"] == topology.MN_LAN6_B else None

        after = wait_for(moved, 10, 0.1) or daemon_status(t, "mn") or {}
        out, _ = client.communicate(timeout=STREAM_SECONDS + 30)
        try:
            stream: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            stream = {"ok": False, "error": "no report from the stream client"}
        ha = (daemon_status(t, "ha", "bindings") or {}).get("bindings", [])
        return {
            "stream": stream,
            "handover_ms": after.get("handover_ms"),
            "mn_coa_after": (after.get("bindings") or [{}])[0].get("coa"),
            "ha_coa_after": ha[0]["coa"] if ha else None,
        }
    finally:
        for proc in (server, client):
            if proc is not None:
                proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


def restart_home_agent(t: Topology) -> dict[str, Any]:
    """SIGTERM the HA, start it again with the same configuration, and measure how long after
    the new process starts a ping from the CN reaches the home address again."""
    old = t.record.daemons[0]
    child = CHILDREN.get(old)
    if child is None:
        raise LabError("home agent process not found")
    before = (daemon_status(t, "ha", "bindings") or {}).get("bindings", [])
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=10)
    t.record.daemons.remove(old)
    started = time.monotonic()
    t.spawn("ha", ["ha", "--config", str(t.workdir / "ha.toml")], "ha.log")
    resumed = None
    while time.monotonic() - started < 10:
        out = t.sh("cn", "ping", "-6", "-n", "-c", "1", "-W", "0.2", HOA, check=False)
        if " 1 received" in out:
            resumed = time.monotonic() - started
            break
    after = (daemon_status(t, "ha", "bindings") or {}).get("bindings", [])
    return {
        "resumed_ms": None if resumed is None else round(resumed * 1000, 1),
        "bindings_before": [(b["hoa"], b["coa"], b["path"]["kind"]) for b in before],
        "bindings_after": [(b["hoa"], b["coa"], b["path"]["kind"]) for b in after],
    }


def run_scenario(sc: Scenario, *, keep_logs: bool = False) -> dict[str, Any]:
    record = RunRecord.new("run")
    record.scenario = sc.name
    workdir = Path(tempfile.mkdtemp(prefix=f"mipnode-lab-{record.run_id}-"))
    record.workdir = str(workdir)
    record.save()
    result: dict[str, Any] = {
        "name": sc.name,
        "description": sc.description,
        "passed": False,
        "expected": {"mn_ha": sc.expect_mn_ha, "mn_cn": sc.expect_mn_cn},
        "observed": {"mn_ha": None, "mn_cn": None},
        "timings_ms": {"registration": None, "first_data": None, "rtt_via_ha": None},
        "traffic": {},
        "diagnosis": None,
        "seed": None,
    }
    try:
        t = sc.build(record, workdir)
        status = start_daemons(t, cn_mipnode=sc.cn == "mipnode")
        # The MN's partner for MN-CN checks: the CN, or the second MN's home address.
        peer = topology.HOA2 if sc.second_mn else CN_ADDRESS
        binding = status["bindings"][0]
        result["observed"]["mn_ha"] = binding["path"]["kind"]
        result["timings_ms"]["registration"] = status.get("registration_ms")
        ha = daemon_status(t, "ha", "bindings") or {}
        ha_kinds = [b["path"]["kind"] for b in ha.get("bindings", []) if b["hoa"] == HOA]
        cn_paths: list[str] = []
        if sc.expect_mn_cn is not None:
            settled, cn_paths = settle_correspondent_path(
                t, sc.expect_mn_cn, from_cn=sc.cn_firewall is not None, peer=peer
            )
            result["observed"]["mn_cn"] = settled
        # Traffic the CN starts first: through a stateful firewall this only works when the
        # MN has primed the firewall's state for the path (scenario b).
        first = time.monotonic()
        cn_ping = ping(t, "cn", HOA)
        if cn_ping["received"]:
            result["timings_ms"]["first_data"] = round((time.monotonic() - first) * 1000, 1)
        # A firewall in front of the CN admits only what the CN starts: no MN-initiated traffic.
        cn_only = sc.cn_firewall is not None
        mn_ping = None if cn_only else ping(t, "mn", peer, count=3)
        tcp = tcp_transfer(t, from_cn=cn_only, to_second_mn=sc.second_mn is not None)
        result["timings_ms"]["rtt_via_ha"] = cn_ping["rtt_ms"]
        restart = restart_home_agent(t) if sc.restart_ha else None
        move = stream_across_a_move(t) if sc.move_to else None
        if move is not None:
            result["traffic"]["move"] = move
            result["timings_ms"]["handover"] = move["handover_ms"]
            result["timings_ms"]["handover_gap"] = move["stream"].get("max_gap_ms")
        if restart is not None:
            result["traffic"]["ha_restart"] = restart
            result["timings_ms"]["ha_restart_to_traffic"] = restart["resumed_ms"]
        if sc.expect_mn_cn is not None:
            after = correspondent_path(t, peer)  # the path must hold through the traffic
            if after != result["observed"]["mn_cn"]:
                cn_paths.append(f"{after} (after traffic)")
            result["observed"]["mn_cn_changes"] = cn_paths
        result["traffic"].update({"ping_cn_to_hoa": cn_ping, "ping_hoa_to_cn": mn_ping, "tcp": tcp})
        problems = []
        if result["observed"]["mn_ha"] != sc.expect_mn_ha:
            problems.append(f"MN-HA path {result['observed']['mn_ha']}, expected {sc.expect_mn_ha}")
        if sc.expect_mn_cn is not None and (
            result["observed"]["mn_cn"] != sc.expect_mn_cn
            or (len(cn_paths) > 1 and not sc.expect_mn_cn.startswith("D-"))
            or any(c.endswith("(after traffic)") for c in cn_paths)
        ):
            problems.append(
                f"MN-CN path {' -> '.join(cn_paths) or None}, expected {sc.expect_mn_cn}"
            )
        if move is not None:
            if not move["stream"].get("ok"):
                problems.append(f"TCP stream did not survive the move: {move['stream']}")
            if (
                move["mn_coa_after"] != topology.MN_LAN6_B
                or move["ha_coa_after"] != move["mn_coa_after"]
            ):
                problems.append(
                    f"after the move MN care-of {move['mn_coa_after']}, "
                    f"HA binding {move['ha_coa_after']}"
                )
            gap = move["stream"].get("max_gap_ms")
            if gap is not None and gap > HANDOVER_GAP_BUDGET_MS:
                problems.append(f"handover gap {gap} ms (budget {HANDOVER_GAP_BUDGET_MS:.0f})")
        if restart is not None:
            if restart["bindings_after"] != restart["bindings_before"]:
                problems.append(
                    f"after the HA restart its bindings are "
                    f"{restart['bindings_after']}, before {restart['bindings_before']}"
                )
            resumed = restart["resumed_ms"]
            if resumed is None or resumed > HA_RESTART_BUDGET_S * 1000:
                problems.append(
                    f"traffic resumed {resumed} ms after the HA restart "
                    f"(budget {HA_RESTART_BUDGET_S * 1000:.0f} ms)"
                )
        nodes = ["mn", "ha"] + (["cn"] if sc.cn == "mipnode" else [])
        for node in nodes + (["mn2"] if sc.second_mn else []):
            answer = daemon_status(t, node)
            if answer is None:
                problems.append(f"{node} daemon no longer answers: {_log_tail(t, node + '.log')}")
            elif answer.get("internal_errors"):
                problems.append(f"{node} daemon hit internal errors: {answer['internal_errors']}")
        if ha_kinds != [result["observed"]["mn_ha"]]:
            problems.append(f"HA reports {ha_kinds or 'no binding'} for {HOA}")
        if cn_ping["received"] < cn_ping["sent"] - 1:
            problems.append(f"ping CN->HoA {cn_ping['received']}/{cn_ping['sent']}")
        if mn_ping is not None and mn_ping["received"] < mn_ping["sent"] - 1:
            problems.append(f"ping HoA->CN {mn_ping['received']}/{mn_ping['sent']}")
        if not tcp.get("ok"):
            problems.append(f"TCP transfer failed: {tcp.get('error', 'digest mismatch')}")
        result["passed"] = not problems
        result["diagnosis"] = "; ".join(problems) or None
    except LabError as exc:
        result["diagnosis"] = str(exc)
    except (subprocess.SubprocessError, OSError, KeyError, IndexError, ValueError) as exc:
        # One broken scenario must not end the run or lose the report of the others.
        result["diagnosis"] = f"lab error: {type(exc).__name__}: {exc}"
    finally:
        record.teardown()
        if result["passed"] and not keep_logs:
            with contextlib.suppress(OSError):
                for p in workdir.iterdir():
                    p.unlink()
                workdir.rmdir()
        else:
            result["logs"] = str(workdir)
    return result


def report_table(results: list[dict[str, Any]]) -> str:
    """One line per scenario: observed path (expected in brackets when it differs)."""

    def path(r: dict[str, Any], pair: str) -> str:
        observed, expected = r["observed"][pair], r["expected"][pair]
        if expected is None:
            return "-"
        return str(observed) if observed == expected else f"{observed} [{expected}]"

    header = (
        f"{'scenario':20} {'MN-HA path':10} {'MN-CN path':10} {'register':>8} "
        f"{'RTT CN-MN':>10} {'TCP 1 MB':>11}  result"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        reg = r["timings_ms"]["registration"]
        rtt = r["timings_ms"]["rtt_via_ha"]
        tcp = r["traffic"].get("tcp", {})
        tcp_text = f"{tcp['mbit_s']} Mb/s" if tcp.get("ok") else "failed" if tcp else "-"
        lines.append(
            f"{r['name']:20} {path(r, 'mn_ha'):10} {path(r, 'mn_cn'):10} "
            f"{(str(round(reg)) + ' ms') if reg is not None else '-':>8} "
            f"{(str(rtt) + ' ms') if rtt is not None else '-':>10} {tcp_text:>11}  "
            f"{'PASS' if r['passed'] else 'FAIL'}"
        )
        gap = r["timings_ms"].get("handover_gap")
        if gap is not None:
            lines.append(
                f"    moved: re-registered in {r['timings_ms'].get('handover')} ms, "
                f"TCP stream survived, longest pause {gap} ms"
            )
        restart = r["timings_ms"].get("ha_restart_to_traffic")
        if restart is not None:
            lines.append(f"    HA restarted: bindings restored, traffic back {restart} ms later")
        if r["diagnosis"]:
            lines.append(f"    {r['diagnosis']}")
        if not r["passed"] and r.get("logs"):
            lines.append(f"    logs: {r['logs']}")
    passed = sum(r["passed"] for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def repeat_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario over all runs: pass count and the spread of the main timings."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    out = []
    for name, runs in by_name.items():
        entry: dict[str, Any] = {
            "name": name,
            "runs": len(runs),
            "passed": sum(r["passed"] for r in runs),
        }
        for key in ("registration", "rtt_via_ha", "handover_gap", "ha_restart_to_traffic"):
            values = sorted(v for r in runs if (v := r["timings_ms"].get(key)) is not None)
            if values:
                entry[key + "_ms"] = {
                    "min": values[0],
                    "median": values[len(values) // 2],
                    "max": values[-1],
                }
        out.append(entry)
    return out


def summary_table(summary: list[dict[str, Any]]) -> str:
    lines = [f"{'scenario':20} {'passed':>8}  registration ms (min / median / max)"]
    for e in summary:
        reg = e.get("registration_ms")
        spread = f"{reg['min']:.0f} / {reg['median']:.0f} / {reg['max']:.0f}" if reg else "-"
        lines.append(f"{e['name']:20} {e['passed']:>3}/{e['runs']:<4}  {spread}")
    return "\n".join(lines)
