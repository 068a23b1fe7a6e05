"""`mipnode lab [run|up|down|list]`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from mipnode.lab import html_report, runner
from mipnode.lab.netns import LabError, RunRecord, pid_alive, remove_leftovers
from mipnode.lab.progress import Progress
from mipnode.lab.scenario_files import check_rulesets, load_scenario

REQUIRED_TOOLS = ("ip", "nft", "ping", "ethtool", "unshare", "sysctl")


def _fail(message: str) -> int:
    print(f"mipnode lab: {message}", file=sys.stderr)
    return 2


def _preflight(tools: tuple[str, ...] = REQUIRED_TOOLS) -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces, veth links and nftables rules)"
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        need = "iproute2, nftables, iputils-ping, ethtool, util-linux, procps, iperf3"
        return f"missing tools: {', '.join(missing)} (install {need})"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (the kernel needs TUN support)"
    return None


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _scenarios(names: list[str] | None) -> list[runner.Scenario]:
    """Built-in scenarios by name, or the user's scenario files by path (docs/lab.md)."""
    if not names:
        return list(runner.SCENARIOS)
    out = []
    for n in names:
        if n in runner.BY_NAME:
            out.append(runner.BY_NAME[n])
        elif n.endswith(".toml") or os.sep in n or os.path.exists(n):
            out.append(load_scenario(n))
        else:
            known = ", ".join(runner.BY_NAME)
            raise LabError(f"unknown scenario {n!r} (built-in: {known}; or a .toml file)")
    return out


def run_lab_command(args: argparse.Namespace) -> int:
    run_id, everything = getattr(args, "run_id", None), getattr(args, "all", False)
    if args.action != "down" and (run_id or everything):
        return _fail("a run id and --all go only with `mipnode lab down`")
    if args.action == "list":
        for s in runner.SCENARIOS:
            print(
                f"{s.name:22} {s.tc or '-':6} MN-HA {s.expect_mn_ha:9} "
                f"MN-CN {s.expect_mn_cn or '-':9} {s.description}"
            )
        return 0
    if args.action == "down":
        if not run_id and not everything:
            return _fail(f"down needs a run id or --all; {_known(RunRecord.load_all())}")
        if run_id and everything:
            return _fail("down takes a run id or --all, not both")
        problem = _preflight()
        if problem:
            return _fail(problem)
        return _down(run_id, everything)
    if args.repeat < 1:
        return _fail("--repeat must be at least 1")
    try:
        scenarios = _scenarios(args.scenario)  # file errors before any privilege check
    except LabError as exc:
        return _fail(str(exc))
    problem = _preflight()
    if problem:
        return _fail(problem)
    try:
        for sc in scenarios:
            check_rulesets(sc)  # nft judges inline rules before anything is built
    except LabError as exc:
        return _fail(str(exc))
    pcap_root = Path(args.pcap).resolve() if args.pcap else None
    report_dir = Path(args.report).resolve() if args.report and args.action == "run" else None
    if report_dir is not None:
        try:
            report_dir.mkdir(parents=True, exist_ok=True)  # before an hour of runs, not after
        except OSError as exc:
            return _fail(f"--report {args.report}: {exc.strerror or exc}")
    report_problem: str | None = None
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        removed = remove_leftovers()
        if removed and not args.json:
            print(f"removed leftovers of earlier lab runs: {', '.join(removed)}")
        if args.action == "up":
            return _up(scenarios[0] if args.scenario else runner.BY_NAME["stateful-fw"])
        results = []
        progress = Progress(len(scenarios) * args.repeat)
        for run_no in range(1, args.repeat + 1):
            for sc in scenarios:
                if not args.json:
                    again = f" (run {run_no}/{args.repeat})" if args.repeat > 1 else ""
                    print(f"running {sc.name}{again}: {sc.description} ...", flush=True)
                started = time.monotonic()
                pcaps = None
                if pcap_root is not None:
                    pcaps = pcap_root / (sc.name + (f"-run{run_no}" if args.repeat > 1 else ""))
                result = runner.run_scenario(sc, pcap_dir=pcaps)
                result["run"] = run_no
                if args.compare_protection and sc.protection == "esp":
                    # Right after it, the same scenario without protection: its throughput
                    # and paths are reported next to the protected run's (never its verdict).
                    plain = runner.run_scenario(dataclasses.replace(sc, protection="none"))
                    result["unprotected"] = runner.comparison(plain)
                results.append(result)
                # On stderr with --json, so the report on stdout stays one JSON document.
                line = progress.done(result, time.monotonic() - started)
                print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
                if report_dir is not None:
                    # After every run, so a long run interrupted still leaves its report.
                    report_problem = _write_report(results, report_dir)
    except LabError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("mipnode lab: interrupted; everything this run created was removed", file=sys.stderr)
        if report_dir is not None and results and report_problem is None:
            print(f"report of the finished runs: {report_dir / 'index.html'}", file=sys.stderr)
        return 130
    passed = sum(r["passed"] for r in results)
    summary = runner.repeat_summary(results) if args.repeat > 1 else None
    if args.json:
        doc: dict[str, object] = {
            "scenarios": results,
            "passed": passed,
            "failed": len(results) - passed,
        }
        if summary is not None:
            doc["repeat"] = args.repeat
            doc["summary"] = summary
        print(json.dumps(doc, indent=2))
    else:
        print(runner.report_table(results))
        if summary is not None:
            print(runner.summary_table(summary))
    if report_dir is not None:
        if report_problem is not None:
            return _fail(report_problem)
        where = report_dir / "index.html"
        print(f"HTML report: {where}", file=sys.stderr if args.json else sys.stdout)
    return 0 if passed == len(results) else 1


def _write_report(results: list[dict[str, object]], directory: Path) -> str | None:
    """Write DIR/index.html; None, or why it could not be written."""
    try:
        html_report.write(results, directory, written=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    except OSError as exc:
        return f"cannot write the HTML report into {directory}: {exc.strerror or exc}"
    return None


def _up(sc: runner.Scenario) -> int:
    record = RunRecord.new("up")
    record.scenario = sc.name
    workdir = Path(tempfile.mkdtemp(prefix=f"mipnode-lab-{record.run_id}-"))
    record.workdir = str(workdir)
    record.save()
    try:
        t = sc.build(record, workdir)
        if sc.expect_diagnosis is not None:
            # No path can exist here: the lab stays up with the MN saying why.
            result = runner.new_result(sc)
            runner.diagnosis_case(t, sc, result)
            state = f"MN diagnosis: {result['observed']['mn_diagnosis']}"
        else:
            status = runner.start_daemons(t, cn_mipnode=sc.cn == "mipnode")
            state = f"MN-HA path {status['bindings'][0]['path']['kind']}"
    except BaseException:
        record.teardown()
        raise
    print(f"lab up: run id {record.run_id}, scenario {sc.name} ({sc.description}); {state}")
    for node in t.nodes:
        print(f"  {node:5} ip netns exec {record.ns(node)} bash")
    print(f"  inspect: ip netns exec {record.ns('mn')} mipnode status --json")
    print(f"  logs and configs: {workdir}")
    print(f"  remove it: mipnode lab down {record.run_id}")
    return 0


def _running(r: RunRecord) -> bool:
    """A `mipnode lab` run still going: it removes its own topology when it ends."""
    return r.mode == "run" and pid_alive(r.pid)


def _describe(r: RunRecord) -> str:
    if r.mode == "up":
        return f"{r.run_id} (up: {r.scenario})"
    if _running(r):
        return f"{r.run_id} (running: {r.scenario}, pid {r.pid})"
    return f"{r.run_id} (left over: {r.scenario})"


def _known(records: list[RunRecord]) -> str:
    if not records:
        return "the lab state knows no topology"
    return "known: " + ", ".join(_describe(r) for r in records)


def _down(run_id: str | None, everything: bool) -> int:
    """Remove the topology ``run_id`` (or, ``everything``, every one `lab up` left and every
    left-over of a killed run). Only what a run record names is touched (RunRecord.teardown);
    a run still going is left to its own process."""
    records = RunRecord.load_all()
    if everything:
        targets = [r for r in records if not _running(r)]
    else:
        matches = [r for r in records if r.run_id == run_id]
        if not matches:
            return _fail(f"no lab topology {run_id!r}; {_known(records)}")
        if _running(matches[0]):
            return _fail(
                f"{_describe(matches[0])} belongs to a running `mipnode lab`, which removes it "
                "when it ends"
            )
        targets = matches[:1]
    for r in targets:
        r.teardown()
        print(f"removed lab {r.run_id} ({r.scenario})")
    if everything:
        if not targets:
            print("no lab topology is up")
        for r in records:
            if _running(r):
                print(f"left alone: {_describe(r)}, which removes it when it ends")
    return 0


def run_bench_command(args: argparse.Namespace) -> int:
    """`mipnode bench`: docs/performance.md."""
    from mipnode.lab import bench

    paths = args.path or list(bench.ALL_PATHS)
    unknown = [p for p in paths if p not in bench.ALL_PATHS]
    if unknown:
        return _fail(f"unknown path {unknown[0]!r} (known: {', '.join(bench.ALL_PATHS)})")
    if args.rounds < 1 or not 0.5 <= args.seconds <= 60:
        return _fail("--rounds must be at least 1 and --seconds within 0.5-60")
    sizes = [n for n in (args.control_mns or [10_000, 100_000]) if n > 0]
    if any(n > 1_000_000 for n in sizes):
        return _fail("--control-mns is at most 1000000")
    if not 0 <= args.cluster_mns <= 100_000:
        return _fail("--cluster-mns is 0 to 100000")
    protections = ["esp", "none"] if args.protection == "both" else [args.protection]
    problem = _preflight(bench.BENCH_TOOLS)
    if problem:
        return _fail(problem)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    try:
        remove_leftovers()
        doc = bench.run_bench(paths, protections, seconds=args.seconds, rounds=args.rounds, say=say)
        doc["control_plane"] = bench.control_plane(sizes, say=say)
        if args.cluster_mns:
            doc["cluster"] = bench.cluster_plane(args.cluster_mns, say=say)
    except LabError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("mipnode bench: interrupted; everything it created was removed", file=sys.stderr)
        return 130
    print(json.dumps(doc, indent=2) if args.json else bench.table(doc))
    return 0
