"""A daemon whose TUN device is deleted under it stops with one clear line, not a traceback
(issue 12, local and robustness holes). Real namespaces and daemons; needs root."""

from __future__ import annotations

from typing import Any

import pytest

from mipnode.lab import netns, runner
from mipnode.lab.topology import HOA

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]


def test_a_deleted_tun_stops_the_mobile_node_with_one_line(make_lab: Any) -> None:
    lab = make_lab(firewall="stateful")
    mn_pid = lab.t.pids["mn"]
    child = netns.CHILDREN[mn_pid]
    assert runner.ping(lab.t, "cn", HOA, count=1)["received"] == 1
    lab.t.sh("mn", "ip", "link", "del", "mip0")
    assert child.wait(timeout=15) != 0
    lab.record.daemons.remove(mn_pid)
    log = (lab.t.workdir / "mn.log").read_text()
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("mipnode: the TUN device went away"), log
