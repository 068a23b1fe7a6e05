"""`mipnode lab [run|up|down|list]`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from mipnode.lab import runner
from mipnode.lab.netns import LabError, RunRecord, remove_leftovers

REQUIRED_TOOLS = ("ip", "nft", "ping", "ethtool")


def _fail(message: str) -> int:
    print(f"mipnode lab: {message}", file=sys.stderr)
    return 2


def _preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces, veth links and nftables rules)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        need = "iproute2, nftables, iputils-ping, ethtool"
        return f"missing tools: {', '.join(missing)} (install {need})"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (the kernel needs TUN support)"
    return None


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _scenarios(names: list[str] | None) -> list[runner.Scenario]:
    if not names:
        return list(runner.SCENARIOS)
    unknown = [n for n in names if n not in runner.BY_NAME]
    if unknown:
        known = ", ".join(runner.BY_NAME)
        raise LabError(f"unknown scenario {unknown[0]!r} (known: {known})")
    return [runner.BY_NAME[n] for n in names]


def run_lab_command(args: argparse.Namespace) -> int:
    if args.action == "list":
        for s in runner.SCENARIOS:
            print(f"{s.name:18} expect MN-HA {s.expect_mn_ha:9} {s.description}")
        return 0
    problem = _preflight()
    if problem:
        return _fail(problem)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        removed = remove_leftovers()
        if removed and not args.json:
            print(f"removed leftovers of earlier lab runs: {', '.join(removed)}")
        if args.action == "down":
            return _down()
        scenarios = _scenarios(args.scenario)
        if args.action == "up":
            return _up(scenarios[0] if args.scenario else runner.BY_NAME["stateful-fw"])
        results = []
        for sc in scenarios:
            if not args.json:
                print(f"running {sc.name}: {sc.description} ...", flush=True)
            results.append(runner.run_scenario(sc))
    except LabError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("mipnode lab: interrupted; everything this run created was removed", file=sys.stderr)
        return 130
    passed = sum(r["passed"] for r in results)
    if args.json:
        print(
            json.dumps(
                {"scenarios": results, "passed": passed, "failed": len(results) - passed}, indent=2
            )
        )
    else:
        print(runner.report_table(results))
    return 0 if passed == len(results) else 1


def _up(sc: runner.Scenario) -> int:
    record = RunRecord.new("up")
    record.scenario = sc.name
    workdir = Path(tempfile.mkdtemp(prefix=f"mipnode-lab-{record.run_id}-"))
    record.workdir = str(workdir)
    record.save()
    try:
        t = sc.build(record, workdir)
        status = runner.start_daemons(t, cn_mipnode=sc.cn == "mipnode")
    except BaseException:
        record.teardown()
        raise
    kind = status["bindings"][0]["path"]["kind"]
    print(f"lab {record.run_id} is up: scenario {sc.name} ({sc.description}); MN-HA path {kind}")
    for node in t.nodes:
        print(f"  {node:5} ip netns exec {record.ns(node)} bash")
    print(f"  inspect: ip netns exec {record.ns('mn')} mipnode status --json")
    print(f"  logs and configs: {workdir}")
    print("  remove it: mipnode lab down")
    return 0


def _down() -> int:
    records = [r for r in RunRecord.load_all() if r.mode == "up"]
    for r in records:
        r.teardown()
        print(f"removed lab {r.run_id} ({r.scenario})")
    if not records:
        print("no lab topology is up")
    return 0
