"""`mipnode bench`'s human report (mipnode/lab/bench.py ``table``): every part of the JSON a
person reads, the control plane and the cluster included, from a document shaped as the JSON is
(docs/performance.md)."""

from __future__ import annotations

from typing import Any

from mipnode.lab.bench import table


def spread(median: float) -> dict[str, float]:
    return {"min": median * 0.9, "median": median, "max": median * 1.1}


DOC: dict[str, Any] = {
    "results": [
        {
            "path": "T-udp",
            "protection": "esp",
            "tcp_up_gbit_s": spread(1.38),
            "tcp_down_gbit_s": spread(1.24),
            "udp64_kpps": spread(52.6),
            "rtt_ms": spread(0.407),
            "cpu_pct": {"mn": 79.7, "ha": 70.4},
            "retransmits": 7,
            "ratio_to_kernel": {"tcp_up": 0.09, "tcp_down": 0.08, "udp64": 0.33},
        }
    ],
    "rounds": 3,
    "seconds": 3.0,
    "offloads": {"veth": {"tx-checksumming": "on"}},
    "control_plane": [
        {
            "mns": 100000,
            "bu_per_s": 29095.8,
            "refresh_per_s": 24082.0,
            "replay_reject_per_s": 53079.5,
            "bytes_per_binding": 975.5,
            "daemon_bytes_per_binding": {
                "none": {"python_bytes": 1078.9, "rss_bytes": 1230.1},
                "esp": {"python_bytes": 2227.2, "rss_bytes": 4756.4},
            },
        }
    ],
    "cluster": {
        "mns": 10000,
        "bu_per_s": 24394.8,
        "records_per_s": 5541.8,
        "visible_to_all_s": 1.804,
        "one_binding_visible_ms": {"min": 2.99, "median": 3.17, "max": 3.86},
    },
}


def test_the_report_shows_paths_control_plane_memory_and_cluster() -> None:
    lines = table(DOC).splitlines()
    (path,) = [line for line in lines if line.startswith("T-udp")]
    assert "1.38 (1.24-1.52)" in path and "80/70/-" in path
    (control,) = [line for line in lines if line.startswith("home agent")]
    assert "100,000 mobile nodes: 29,096 registrations/s" in control
    assert "core 976 B" in control
    assert "daemon none: 1,079 B (resident 1,230 B)" in control
    assert "daemon esp: 2,227 B (resident 4,756 B)" in control
    (cluster,) = [line for line in lines if line.startswith("cluster")]
    assert "5,542 records/s" in cluster and "3.2 ms (3.0-3.9)" in cluster


def test_a_bench_of_paths_alone_has_no_control_plane_lines() -> None:
    doc = {k: v for k, v in DOC.items() if k not in ("control_plane", "cluster")}
    text = table(doc)
    assert "home agent" not in text and "cluster" not in text
