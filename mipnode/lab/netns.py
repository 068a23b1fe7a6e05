"""Namespaces, commands inside them, and the record of what a lab run created.

Every run gets a random id; its namespaces are named ``mipl-<id>-<node>`` and listed in a state
file under ``/run/mipnode-lab`` together with the lab's pid and the daemons it started. A later
run removes the leftovers of runs whose process is gone, and only those: nothing it did not
record is ever touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("MIPNODE_LAB_STATE", "/run/mipnode-lab"))
PREFIX = "mipl-"
# Daemons this process started, so teardown can reap them (no zombies, no ResourceWarning).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LabError(Exception):
    pass


def run(
    cmd: list[str], *, check: bool = True, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_daemon(pid: int) -> bool:
    """Guard against pid reuse: only signal a process that is really a mipnode daemon."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"mipnode" in cmdline


@dataclass
class RunRecord:
    run_id: str
    pid: int
    mode: str  # "run" (removed when the run ends) or "up" (kept until `lab down`)
    namespaces: list[str] = field(default_factory=list)
    daemons: list[int] = field(default_factory=list)
    scenario: str = ""
    workdir: str = ""

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, self.path)

    @classmethod
    def new(cls, mode: str) -> RunRecord:
        return cls(run_id=secrets.token_hex(3), pid=os.getpid(), mode=mode)

    @classmethod
    def load_all(cls) -> list[RunRecord]:
        out = []
        if STATE_DIR.is_dir():
            for p in sorted(STATE_DIR.glob("*.json")):
                with contextlib.suppress(ValueError, TypeError, OSError):
                    out.append(cls(**json.loads(p.read_text())))
        return out

    def ns(self, node: str) -> str:
        return f"{PREFIX}{self.run_id}-{node}"

    def teardown(self) -> None:
        """Stop our daemons, delete our namespaces, forget the run."""
        for pid in self.daemons:
            if pid_alive(pid) and _is_our_daemon(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for pid in self.daemons:
            while pid_alive(pid) and _is_our_daemon(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid) and _is_our_daemon(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self.daemons:
            child = CHILDREN.pop(pid, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)
        existing = set(list_namespaces())
        ours = f"{PREFIX}{self.run_id}-"
        for name in self.namespaces:
            # Only this run's names: a damaged or edited record cannot delete anyone else's.
            if name in existing and name.startswith(ours):
                run(["ip", "netns", "delete", name], check=False)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def list_namespaces() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def remove_leftovers() -> list[str]:
    """Tear down records of earlier runs whose lab process died (crash, SIGKILL)."""
    removed = []
    for rec in RunRecord.load_all():
        if rec.mode == "run" and not pid_alive(rec.pid):
            rec.teardown()
            removed.append(rec.run_id)
    return removed
