"""What the lab reads from the mobile node's status: the path to a correspondent."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mipnode.lab import status as lab_status
from mipnode.lab.status import NO_PATH, correspondent_path
from mipnode.lab.topology import CN_ADDRESS, DEVICE, HOA2

MN = {
    "role": "mn",
    "state": "registered",
    "bindings": [{"hoa": "2001:db8:1::100", "path": {"kind": "T-native"}}],
    "correspondents": [
        {"cn": HOA2, "path": "D-udp"},
        {"cn": CN_ADDRESS, "path": "D-native"},
    ],
}
T: Any = SimpleNamespace(mobile_network=False)  # the status is given


def test_a_listed_correspondent_has_the_path_the_mn_lists() -> None:
    assert correspondent_path(T, CN_ADDRESS, MN) == "D-native"
    assert correspondent_path(T, HOA2, MN) == "D-udp"


@pytest.mark.parametrize(
    "correspondents",
    [
        [],
        None,
        [{"cn": HOA2, "path": "D-udp"}],
        [{"cn": CN_ADDRESS, "path": None}],  # listed, but the MN has no path for it
    ],
)
def test_a_correspondent_the_mn_does_not_list_has_no_path_not_the_home_path(
    correspondents: list[dict[str, Any]] | None,
) -> None:
    status = dict(MN, correspondents=correspondents)
    assert correspondent_path(T, CN_ADDRESS, status) == NO_PATH == "none"
    del status["correspondents"]
    assert correspondent_path(T, CN_ADDRESS, status) == "none"


def test_an_mn_that_does_not_answer_gives_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_status, "daemon_status", lambda t, node, command="status": None)
    assert correspondent_path(T, CN_ADDRESS) is None
    assert correspondent_path(T, CN_ADDRESS, {}) is None
    monkeypatch.setattr(lab_status, "daemon_status", lambda t, node, command="status": MN)
    assert correspondent_path(T) == "D-native"


def test_behind_a_mobile_router_the_path_is_the_hosts_flow_not_the_routers_own() -> None:
    router: Any = SimpleNamespace(mobile_network=True, mn_host=lambda: ("dev", DEVICE))
    status = dict(
        MN,
        mobile_network_flows=[
            {"host": "2001:db8:aaaa:1::9", "cn": CN_ADDRESS, "path": "T-native"},
            {"host": DEVICE, "cn": CN_ADDRESS, "path": "D-udp"},
        ],
    )
    assert correspondent_path(router, CN_ADDRESS, status) == "D-udp"  # not the router's D-native
    assert correspondent_path(router, HOA2, status) == NO_PATH
    assert correspondent_path(router, CN_ADDRESS, MN) == NO_PATH  # the host's flow is unlisted
