"""`mipnode lab up/down` and cleanup after a killed run, through the real CLI."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mipnode.lab import netns

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]

CLI = [sys.executable, "-m", "mipnode.cli"]


def _lab(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "lab", *args], capture_output=True, text=True, timeout=timeout)


def _ours(state: Path) -> list[str]:
    """Namespaces named in this test's run records (never anyone else's)."""
    names = []
    for p in state.glob("*.json"):
        names += json.loads(p.read_text())["namespaces"]
    return names


def test_lab_up_holds_a_topology_that_status_can_inspect_then_down_removes_it(
    isolated_lab_state: Path,
) -> None:
    try:
        up = _lab("up", "-s", "open")
        assert up.returncode == 0, up.stderr
        match = re.search(r"ip netns exec (mipl-\w+-mn) mipnode status --json", up.stdout)
        assert match, up.stdout
        ns = match.group(1)
        created = _ours(isolated_lab_state)
        assert ns in created and ns in netns.list_namespaces()
        status = subprocess.run(
            ["ip", "netns", "exec", ns, *CLI, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert status.returncode == 0, status.stderr
        binding = json.loads(status.stdout)["bindings"][0]
        assert binding["state"] == "registered" and binding["path"]["kind"] == "T-native"
    finally:
        down = _lab("down")
    assert down.returncode == 0, down.stderr
    assert not set(created) & set(netns.list_namespaces())
    assert not list(isolated_lab_state.glob("*.json"))


def test_a_killed_run_is_cleaned_up_by_the_next_lab_command(isolated_lab_state: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "lab", "-s", "open"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        record = None
        while time.monotonic() < deadline:
            records = netns.RunRecord.load_all()
            if records and len(records[0].daemons) == 2:  # HA and MN both started
                record = records[0]
                break
            time.sleep(0.1)
        assert record is not None, "the lab run never started its daemons"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert set(record.namespaces) <= set(netns.list_namespaces())  # left behind
        cleanup = _lab("down")
        assert cleanup.returncode == 0, cleanup.stderr
        assert record.run_id in cleanup.stdout
        assert not set(record.namespaces) & set(netns.list_namespaces())
        for pid in record.daemons:
            deadline = time.monotonic() + 5
            while netns.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not netns.pid_alive(pid), f"daemon {pid} survived cleanup"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for rec in netns.RunRecord.load_all():
            rec.teardown()


def test_a_user_scenario_file_runs_repeatedly_with_a_summary(
    isolated_lab_state: Path, tmp_path: Path
) -> None:
    scenario = tmp_path / "my-firewall.toml"
    scenario.write_text(
        'name = "my-firewall"\ndescription = "a user scenario"\n\n[topology]\n'
        'access = "ipv6"\nfirewall = "stateful-no41"\n\n[expect]\nmn_ha = "T-udp"\n'
    )
    proc = _lab("-s", str(scenario), "--repeat", "2", "--json", timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["name"], r["run"], r["passed"]) for r in report["scenarios"]] == [
        ("my-firewall", 1, True),
        ("my-firewall", 2, True),
    ]
    (summary,) = report["summary"]
    assert (summary["runs"], summary["passed"], report["repeat"]) == (2, 2, 2)
    assert summary["registration_ms"]["min"] <= summary["registration_ms"]["max"]
