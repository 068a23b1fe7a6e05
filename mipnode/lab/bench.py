"""`mipnode bench`: throughput, packet rate, RTT and CPU of every path, with iperf3.

Every path kind is brought up in a lab topology of its own (a built-in scenario that selects
it), with protection on and off, beside one topology where no daemon runs and the kernel
forwards between the MN's care-of address and the CN: the baseline. All of them stay up for
the whole run and the measurements go round them in alternating rounds (the order rotates
each round), so a machine that slows down during the run slows every path alike.

Per path and round: iperf3 TCP HoA -> CN (``tcp_up``) and CN -> HoA (``tcp_down``, iperf3's
``-R``: the MN opens every connection, as a firewall in front of it requires), UDP with
64-byte payloads at full speed CN -> HoA (``udp64``: packets received per second), the RTT of
pings HoA -> CN, and the CPU of each daemon (``/proc/PID/stat``) while the TCP tests run.
The veths are set as a real host's interfaces are (checksum and segmentation offloads on; the
scenario lab turns transmit checksums off so its captures show real checksums) and reported.

Numbers are a benchmark, never a verdict: ``mipnode bench`` fails only when a path cannot be
set up or iperf3 cannot run. docs/performance.md says what each number means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipnode.lab import runner
from mipnode.lab.netns import LabError, RunRecord, run
from mipnode.lab.status import correspondent_path
from mipnode.lab.topology import CN_ADDRESS, HOA, MN_LAN6, Topology

# Path kind -> (built-in scenario that selects it, its MN-CN path).
PATHS: dict[str, tuple[str, str]] = {
    "T-native": ("stateful-fw", "T-native"),
    "T-udp": ("stateful-fw-no41", "T-udp"),
    "T-udp-v4": ("ipv4-nat44", "T-udp"),
    "D-udp": ("direct-mn-behind-fw", "D-udp"),
    "D-native": ("ro-open", "D-native"),
}
KERNEL = "kernel"
KERNEL_SCENARIO = "stateful-fw"  # the same links and firewall as T-native, no daemon
UNPROTECTED_ONLY = {"D-native", KERNEL}  # D-native carries no ESP (docs/internals.md)
ALL_PATHS = (*PATHS, KERNEL)
IPERF_PORT = 5201
PINGS = 50
BENCH_TOOLS = ("ip", "nft", "ping", "ethtool", "unshare", "sysctl", "iperf3")
FEATURES = ("tx-checksumming", "tcp-segmentation-offload", "generic-receive-offload")


@dataclass
class Stand:
    """One topology kept up for the whole benchmark."""

    path: str
    protection: str
    record: RunRecord
    t: Topology
    source: str  # the MN-side address iperf3 and ping bind to
    server: subprocess.Popen[str] | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    retransmits: int = 0
    socket_drops: int = 0  # what the daemons' sockets and TUNs dropped during TCP tests
    path_seen: list[str] = field(default_factory=list)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(key, []).append(value)


def configurations(paths: list[str], protections: list[str]) -> list[tuple[str, str]]:
    out = []
    for path in paths:
        for protection in protections:
            if path in UNPROTECTED_ONLY and protection != "none":
                continue
            if (path, protection) not in out:
                out.append((path, protection))
        if path in UNPROTECTED_ONLY and (path, "none") not in out:
            out.append((path, "none"))
    return out


def run_bench(
    paths: list[str],
    protections: list[str],
    *,
    seconds: float,
    rounds: int,
    say: Any = None,
) -> dict[str, Any]:
    """Bring every configuration up, measure ``rounds`` alternating rounds, tear down."""
    stands: list[Stand] = []
    try:
        for path, protection in configurations(paths, protections):
            if say:
                say(f"setting up {path} (protection {protection}) ...")
            stands.append(_stand_up(path, protection))
        offloads = _veth_features(stands[0].t) if stands else {}
        for n in range(rounds):
            order = stands[n % len(stands) :] + stands[: n % len(stands)]
            for stand in order:
                if say:
                    say(f"round {n + 1}/{rounds}: {stand.path} ({stand.protection}) ...")
                _measure(stand, seconds)
        kernel = next((s for s in stands if s.path == KERNEL), None)
        results = [_result(s, kernel) for s in stands]
    finally:
        for stand in stands:
            _stand_down(stand)
    return {"results": results, "rounds": rounds, "seconds": seconds, "offloads": offloads}


def _stand_up(path: str, protection: str) -> Stand:
    scenario_name, mn_cn = PATHS.get(path, (KERNEL_SCENARIO, ""))
    sc = runner.BY_NAME[scenario_name]
    if protection != sc.protection:
        sc = dataclasses.replace(sc, protection=protection)
    record = RunRecord.new("run")
    record.scenario = f"bench {path} {protection}"
    workdir = Path(tempfile.mkdtemp(prefix=f"mipnode-bench-{record.run_id}-"))
    record.workdir = str(workdir)
    record.save()
    try:
        t = sc.build(record, workdir)
        for a, ia, b, ib in t.links:
            # As a real host's interfaces are: checksums and segmentation offloaded.
            for node, dev in ((a, ia), (b, ib)):
                t.sh(node, "ethtool", "-K", dev, "tx", "on", "tso", "on", "gro", "on", check=False)
        stand = Stand(path, protection, record, t, MN_LAN6 if path == KERNEL else HOA)
        if path != KERNEL:
            runner.start_daemons(t, cn_mipnode=sc.cn == "mipnode")
            binding = runner.settled_binding(t, sc.expect_mn_ha)
            got = binding["path"]["kind"] if binding else None
            if got != sc.expect_mn_ha:
                raise LabError(f"bench {path}: the home path is {got}, not {sc.expect_mn_ha}")
            settled, _ = runner.settle_correspondent_path(
                t,
                mn_cn,
                from_cn=sc.traffic.initiator == "cn",
                peer=CN_ADDRESS,
                peer_runs_mipnode=sc.cn == "mipnode",
            )
            if settled != mn_cn:
                raise LabError(f"bench {path}: the MN-CN path is {settled}, not {mn_cn}")
        stand.server = _iperf_server(t)
        return stand
    except BaseException:
        record.teardown()
        raise


def _stand_down(stand: Stand) -> None:
    if stand.server is not None:
        stand.server.kill()
        with contextlib.suppress(subprocess.SubprocessError):
            stand.server.communicate(timeout=5)
    stand.record.teardown()
    runner.remove_workdir(Path(stand.t.workdir))


def _iperf_server(t: Topology) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", t.ns("cn"), "iperf3", "-s", "-p", str(IPERF_PORT), "--forceflush"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(5):  # its banner: a dashed line, then "Server listening on 5201 ..."
        line = proc.stdout.readline()
        if "listening" in line:
            return proc
        if not line:
            break
    proc.kill()
    raise LabError("iperf3 did not start in the CN (is iperf3 installed?)")


def _iperf(stand: Stand, seconds: float, *extra: str) -> dict[str, Any]:
    cmd = ["iperf3", "-c", CN_ADDRESS, "-B", stand.source, "-p", str(IPERF_PORT)]
    cmd += ["-t", f"{seconds:g}", "-J", *extra]
    proc = run(["ip", "netns", "exec", stand.t.ns("mn"), *cmd], check=False, timeout=seconds + 30)
    try:
        out: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr or proc.stdout).strip()[-200:] or "no output"}
    return out


def _measure(stand: Stand, seconds: float) -> None:
    before = _cpu_ticks(stand)
    drops_before = _socket_drops(stand)
    started = time.monotonic()
    for key, extra in (("tcp_up", ()), ("tcp_down", ("-R",))):
        report = _iperf(stand, seconds, *extra)
        end = report.get("end") or {}
        received = (end.get("sum_received") or {}).get("bits_per_second")
        stand.add(key, received / 1e9 if received else None)
        stand.retransmits += int((end.get("sum_sent") or {}).get("retransmits") or 0)
    wall = time.monotonic() - started
    stand.socket_drops += _socket_drops(stand) - drops_before
    for name, ticks in _cpu_ticks(stand).items():
        used = (ticks - before.get(name, ticks)) / os.sysconf("SC_CLK_TCK")
        stand.cpu.setdefault(name, []).append(100 * used / wall)
    report = _iperf(stand, seconds, "-R", "-u", "-l", "64", "-b", "0")
    total = (report.get("end") or {}).get("sum") or {}
    if total.get("seconds"):
        got = total.get("packets", 0) - total.get("lost_packets", 0)
        stand.add("udp64", got / total["seconds"] / 1000)
    stand.add("rtt", _rtt(stand))
    if stand.path != KERNEL:
        stand.path_seen.append(correspondent_path(stand.t, CN_ADDRESS) or "none")


def _socket_drops(stand: Stand) -> int:
    """What the kernel dropped so far at every daemon's sockets and TUN queue (their
    ``kernel_drops``): a full receive buffer or TUN queue, the only way a daemon loses a
    packet without counting it itself."""
    total = 0
    for node in stand.t.pids:
        status = runner.daemon_status(stand.t, node)
        if isinstance(status, dict):
            total += sum(int(v) for v in (status.get("kernel_drops") or {}).values())
    return total


def _rtt(stand: Stand) -> float | None:
    out = stand.t.sh(
        "mn",
        *("ping", "-6", "-n", "-c", str(PINGS), "-i", "0.01", "-W", "1"),
        *("-I", stand.source, CN_ADDRESS),
        check=False,
        timeout=30,
    )
    times = [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]
    return statistics.median(times) if times else None


def _cpu_ticks(stand: Stand) -> dict[str, int]:
    out = {}
    for name, pid in stand.t.pids.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = int(fields[11]) + int(fields[12])  # utime, stime (proc(5) 14, 15)
    return out


def _veth_features(t: Topology) -> dict[str, dict[str, str]]:
    a, ia, _, _ = t.links[0]
    out = t.sh(a, "ethtool", "-k", ia, check=False)
    found = {}
    for feature in FEATURES:
        m = re.search(rf"^{feature}: (\w+)", out, re.MULTILINE)
        found[feature] = m.group(1) if m else "unknown"
    return {"veth": found}


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def _result(stand: Stand, kernel: Stand | None) -> dict[str, Any]:
    out: dict[str, Any] = {"path": stand.path, "protection": stand.protection}
    for key, name in (
        ("tcp_up", "tcp_up_gbit_s"),
        ("tcp_down", "tcp_down_gbit_s"),
        ("udp64", "udp64_kpps"),
        ("rtt", "rtt_ms"),
    ):
        out[name] = spread(stand.samples.get(key, []))
    out["cpu_pct"] = {
        name: round(statistics.median(v), 1) for name, v in sorted(stand.cpu.items()) if v
    }
    out["retransmits"] = stand.retransmits
    if stand.path != KERNEL:
        out["tcp_socket_drops"] = stand.socket_drops
        out["paths_seen"] = sorted(set(stand.path_seen))
    if kernel is not None and stand is not kernel:
        ratio = {}
        for key in ("tcp_up", "tcp_down", "udp64"):
            mine, base = stand.samples.get(key), kernel.samples.get(key)
            if mine and base and statistics.median(base) > 0:
                ratio[key] = round(statistics.median(mine) / statistics.median(base), 3)
        out["ratio_to_kernel"] = ratio
    return out


def table(doc: dict[str, Any]) -> str:
    """The human report: one line per path, medians with min-max."""

    def cell(s: dict[str, float] | None, digits: int = 2) -> str:
        if s is None:
            return "-"
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"

    head = (
        f"{'path':10} {'prot':5} {'TCP up Gbit/s':20} {'TCP down Gbit/s':20} "
        f"{'UDP64 kpps':18} {'RTT ms':18} {'x kernel':9} {'CPU% mn/ha/cn':14} retx"
    )
    lines = [head]
    for r in doc["results"]:
        ratio = r.get("ratio_to_kernel", {})
        times = ratio.get("tcp_up")
        cpu = r["cpu_pct"]
        cpus = "/".join(f"{cpu[n]:.0f}" if n in cpu else "-" for n in ("mn", "ha", "cn"))
        lines.append(
            f"{r['path']:10} {r['protection']:5} {cell(r['tcp_up_gbit_s']):20} "
            f"{cell(r['tcp_down_gbit_s']):20} {cell(r['udp64_kpps'], 1):18} "
            f"{cell(r['rtt_ms'], 3):18} {f'{times:.2f}' if times else '-':9} {cpus:14} "
            f"{r['retransmits']}"
        )
    veth = doc.get("offloads", {}).get("veth")
    if veth:
        lines.append("veth: " + ", ".join(f"{k} {v}" for k, v in veth.items()))
    lines.append(f"{doc['rounds']} alternating rounds of {doc['seconds']:g} s per test")
    for c in doc.get("control_plane", []):
        daemon = c.get("daemon_bytes_per_binding", {})
        memory = "; ".join(
            f"daemon {p}: {m['python_bytes']:,.0f} B (resident {m['rss_bytes']:,.0f} B)"
            for p, m in daemon.items()
        )
        lines.append(
            f"home agent, {c['mns']:,} mobile nodes: {c['bu_per_s']:,.0f} registrations/s, "
            f"{c['refresh_per_s']:,.0f} refreshes/s, {c['replay_reject_per_s']:,.0f} replays "
            f"refused/s; a binding: core {c['bytes_per_binding']:,.0f} B"
            + (f"; {memory}" if memory else "")
        )
    cluster = doc.get("cluster")
    if cluster:
        one = cluster["one_binding_visible_ms"]
        lines.append(
            f"cluster, {cluster['mns']:,} mobile nodes: {cluster['bu_per_s']:,.0f} "
            f"registrations/s while writing, {cluster['records_per_s']:,.0f} records/s to etcd, "
            f"all at both standbys after {cluster['visible_to_all_s']:.2f} s; one binding "
            f"{one['median']:.1f} ms ({one['min']:.1f}-{one['max']:.1f})"
        )
    return "\n".join(lines)


CONTROL_BUDGET_S = 5.0  # per phase (register, refresh, replay) and size


def control_plane(sizes: list[int], say: Any = None) -> list[dict[str, Any]]:
    """The HA core timed in this process on ``sizes`` distinct mobile nodes, and what a
    binding costs the whole daemon (its core and its tables), keyed and not (benchdaemon)."""
    from mipnode import benchcontrol, benchdaemon

    out = []
    for n in sizes:
        if say:
            say(f"control plane: {n} mobile nodes ...")
        result: dict[str, Any] = benchcontrol.control_plane(n, CONTROL_BUDGET_S)
        result["daemon_bytes_per_binding"] = {
            protection: benchdaemon.daemon_bytes_per_binding(n, keyed=protection == "esp")
            for protection in ("none", "esp")
        }
        out.append(result)
    return out


def cluster_plane(n: int, say: Any = None) -> dict[str, Any]:
    """The binding cache of a home-agent cluster through a real etcd of three members started
    here on loopback (benchcluster's module docstring): one holder, two standbys, ``n``
    mobile nodes."""
    import trio

    from mipnode import benchcluster
    from mipnode.lab.etcd_cluster import start_cluster

    if say:
        say(f"cluster: {n} mobile nodes through a three-member etcd ...")
    with tempfile.TemporaryDirectory(prefix="mipnode-bench-etcd-") as workdir:
        etcd = start_cluster(Path(workdir), 3)
        try:
            return trio.run(benchcluster.cluster_plane, n, etcd.endpoints)
        finally:
            etcd.close()
