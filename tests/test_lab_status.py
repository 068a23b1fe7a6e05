"""What the lab reads from the mobile node's status: the path to a correspondent."""

from __future__ import annotations

from typing import Any

import pytest

from mipnode.lab import status as lab_status
from mipnode.lab.status import NO_PATH, correspondent_path
from mipnode.lab.topology import CN_ADDRESS, HOA2

MN = {
    "role": "mn",
    "state": "registered",
    "bindings": [{"hoa": "2001:db8:1::100", "path": {"kind": "T-native"}}],
    "correspondents": [
        {"cn": HOA2, "path": "D-udp"},
        {"cn": CN_ADDRESS, "path": "D-native"},
    ],
}
T: Any = object()  # never asked: the status is given


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
