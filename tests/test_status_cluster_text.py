"""`mipnode status` (human) on a node of a home-agent cluster: what it holds, who is alive,
how etcd is, in words; a degraded node says why."""

from __future__ import annotations

from typing import Any

import pytest

from mipnode.cli import print_status


def ha_status(cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "ha",
        "address": "2001:db8:1::1",
        "home_prefix": "2001:db8:1::/64",
        "udp_port": 4191,
        "uptime_s": 12.0,
        "protection": "esp",
        "bindings": [],
        "drops": {},
        "cluster": cluster,
    }


def cluster(**changes: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "lab",
        "node": "ha2",
        "state": "ok",
        "reason": None,
        "holds": ["2001:db8:1::1"],
        "address": "2001:db8:1::1",
        "live": ["ha", "ha2", "ha3"],
        "members": ["ha", "ha2", "ha3"],
        "holders": {"2001:db8:1::1": "ha2"},
        "etcd": {"reachable": True, "revision": 118},
        "replicas": 1,
        "pending_writes": 0,
    }
    c.update(changes)
    return c


def test_the_holder_says_what_it_holds(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(ha_status(cluster()))
    out = capsys.readouterr().out
    assert "  cluster lab  node ha2  ok  holds 2001:db8:1::1\n" in out
    assert "nodes alive ha, ha2, ha3 of ha, ha2, ha3  etcd reachable at revision 118" in out
    assert "None" not in out


def test_a_degraded_standby_names_the_holder_and_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_status(
        ha_status(
            cluster(
                node="ha3",
                state="degraded",
                reason="etcd unreachable (no answer): nothing moves until it is back",
                holds=[],
                etcd={"reachable": False, "revision": 118},
                pending_writes=2,
            )
        )
    )
    out = capsys.readouterr().out
    assert "holds nothing (standby; 2001:db8:1::1 held by ha2)" in out
    assert "  ! etcd unreachable (no answer): nothing moves until it is back\n" in out
    assert "etcd not reached at revision 118  records 1  (2 waiting for etcd)" in out
