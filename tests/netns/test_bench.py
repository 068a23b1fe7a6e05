"""`mipnode bench`: a short smoke of the benchmark (structure and sanity, never timing).

iperf3 is the independent oracle: its own counters, read from its JSON, say what crossed the
daemons; the bench only arranges the runs and reports them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from mipnode.lab import netns

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (tools/install.sh)"),
]

SPREAD = {"min", "median", "max"}


def _bench(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "mipnode.cli", "bench", "--json", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_a_short_bench_reports_every_asked_path_next_to_the_kernel() -> None:
    doc = _bench(
        *("--path", "T-udp", "--path", "kernel", "--protection", "esp"),
        *("--seconds", "1", "--rounds", "2", "--control-mns", "300", "--cluster-mns", "200"),
    )
    assert doc["rounds"] == 2
    got = {(r["path"], r["protection"]): r for r in doc["results"]}
    # The kernel is measured without protection whatever was asked: it has none.
    assert set(got) == {("T-udp", "esp"), ("kernel", "none")}
    for r in got.values():
        for key in ("tcp_up_gbit_s", "tcp_down_gbit_s", "udp64_kpps", "rtt_ms"):
            assert set(r[key]) == SPREAD, (key, r)
            assert 0 < r[key]["min"] <= r[key]["median"] <= r[key]["max"], (key, r)
        assert isinstance(r["retransmits"], int) and r["retransmits"] >= 0
    tudp, kernel = got[("T-udp", "esp")], got[("kernel", "none")]
    # The daemons carried the traffic (their CPU moved) and the path held.
    assert set(tudp["cpu_pct"]) == {"mn", "ha"} and min(tudp["cpu_pct"].values()) > 0
    assert tudp["paths_seen"] == ["T-udp"]
    assert isinstance(tudp["tcp_socket_drops"], int) and tudp["tcp_socket_drops"] >= 0
    assert kernel["cpu_pct"] == {} and "tcp_socket_drops" not in kernel
    assert set(tudp["ratio_to_kernel"]) == {"tcp_up", "tcp_down", "udp64"}
    assert doc["offloads"]["veth"]["tx-checksumming"] == "on"
    (control,) = doc["control_plane"]
    assert control["mns"] == 300
    for key in ("bu_per_s", "refresh_per_s", "replay_reject_per_s", "bytes_per_binding"):
        assert control[key] > 0, control
    daemon = control["daemon_bytes_per_binding"]
    assert set(daemon) == {"none", "esp"}
    # The daemon holds its core's bytes and more; a keyed binding also its ESP SAs.
    assert daemon["none"]["python_bytes"] > control["bytes_per_binding"], control
    assert daemon["esp"]["python_bytes"] > daemon["none"]["python_bytes"], control
    cluster = doc["cluster"]
    assert (cluster["mns"], cluster["standbys"]) == (200, 2)
    # Batched: at most 64 records a transaction, and never one transaction per record.
    assert 4 <= cluster["transactions"] <= 100, cluster
    for key in (
        "bu_per_s",
        "records_per_s",
        "visible_to_all_s",
        "refresh_records_per_s",
        "load_s",
        "standby_bytes_per_binding",
    ):
        assert cluster[key] > 0, cluster
    assert cluster["holder_bytes_per_binding"] > cluster["standby_bytes_per_binding"]
    # Everything it built is gone.
    assert netns.RunRecord.load_all() == []


def test_an_unknown_path_is_refused_before_anything_is_built() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mipnode.cli", "bench", "--path", "T-carrier-pigeon"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unknown path 'T-carrier-pigeon'" in proc.stderr
