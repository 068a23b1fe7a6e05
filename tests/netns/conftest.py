"""Real network namespaces with real daemons. Needs root; everything created is torn down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mipnode.lab import netns, runner, topology

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="needs root and nftables to build network namespaces",
)


@pytest.fixture(autouse=True)
def isolated_lab_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its run records apart, so it can never touch another lab's."""
    state = tmp_path / "lab-state"
    monkeypatch.setattr(netns, "STATE_DIR", state)
    monkeypatch.setenv("MIPNODE_LAB_STATE", str(state))
    return state


class Lab:
    def __init__(self, record: netns.RunRecord, t: topology.Topology, cn_mipnode: bool = False):
        self.record, self.t, self.cn_mipnode = record, t, cn_mipnode
        self.mn_status: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        self.mn_status = runner.start_daemons(self.t, cn_mipnode=self.cn_mipnode)
        return self.mn_status

    def status(self, node: str, command: str = "status") -> Any:
        answer = runner.daemon_status(self.t, node, command)
        assert answer is not None, f"{node} daemon does not answer"
        return answer


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Any]:
    records: list[netns.RunRecord] = []

    def factory(
        access: str = "ipv6",
        firewall: str = "open",
        start: bool = True,
        *,
        cn_mipnode: bool = False,
        cn_firewall: str | None = None,
        sysctls: dict[str, dict[str, str]] | None = None,
        protection: str = "esp",
        home_lan: bool = False,
    ) -> Lab:
        record = netns.RunRecord.new("run")
        records.append(record)
        workdir = tmp_path / f"lab-{record.run_id}"
        workdir.mkdir()
        t = topology.build(
            record,
            workdir,
            access=access,
            firewall=firewall,
            cn_firewall=cn_firewall,
            sysctls=sysctls,
            protection=protection,
            home_lan=home_lan,
        )
        lab = Lab(record, t, cn_mipnode)
        if start:
            lab.start()
        return lab

    yield factory
    for record in records:
        record.teardown()
    for record in records:
        left = [n for n in record.namespaces if n in netns.list_namespaces()]
        assert not left, f"namespaces left behind: {left}"
