"""`mipnode lab down` arguments: refused usage says so in one line, before anything is touched
(no root needed: these never get to the privilege check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mipnode.lab import netns

CLI = [sys.executable, "-m", "mipnode.cli", "lab"]


def _lab(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MIPNODE_LAB_STATE=str(state))
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, env=env)


def _record(state: Path, run_id: str, mode: str, scenario: str, pid: int) -> Path:
    """A run record as the lab writes it; its namespaces do not exist (none is ever made)."""
    rec = netns.RunRecord(run_id, pid, mode, [f"mipl-{run_id}-mn"], [], scenario, "")
    path = state / f"{run_id}.json"
    state.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec.__dict__))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_down_without_a_run_id_or_all_refuses_and_lists_what_the_lab_knows(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc = _lab(state, "down")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mipnode lab: down needs a run id or --all; the lab state knows no topology"
    ]
    files = [
        _record(state, "a1a1a1", "up", "stateful-fw", _dead_pid()),
        _record(state, "b2b2b2", "run", "open", os.getpid()),
        _record(state, "c3c3c3", "run", "killed", _dead_pid()),
    ]
    proc = _lab(state, "down")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "mipnode lab: down needs a run id or --all; known: a1a1a1 (up: stateful-fw), "
        f"b2b2b2 (running: open, pid {os.getpid()}), c3c3c3 (left over: killed)"
    ]
    assert all(f.exists() for f in files)  # a refused down touches nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("down", "a1a1a1", "--all"), "down takes a run id or --all, not both"),
        (("run", "a1a1a1"), "a run id and --all go only with `mipnode lab down`"),
        (("list", "a1a1a1"), "a run id and --all go only with `mipnode lab down`"),
        (("up", "--all"), "a run id and --all go only with `mipnode lab down`"),
    ],
)
def test_a_run_id_or_all_anywhere_else_is_refused(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    state = tmp_path / "state"
    record = _record(state, "a1a1a1", "up", "stateful-fw", _dead_pid())
    proc = _lab(state, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mipnode lab: {message}"]
    assert record.exists()
