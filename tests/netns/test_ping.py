"""`mipnode ping` through a running mobile node on live lab topologies: every path kind
answers in its own encapsulation (T-native and T-udp to the home agent; D-udp, D-native and
the T leg to a mipnode correspondent), a path a firewall closes says so, and the path data
takes is named."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from mipnode.lab import runner
from mipnode.lab.topology import CN_ADDRESS, HA_ADDRESS, HOME_PREFIX

from .conftest import needs_root

pytestmark = needs_root


def ping(lab: Any, peer: str, *args: str, human: bool = False) -> tuple[Any, int]:
    command = [sys.executable, "-m", "mipnode.cli", "ping", peer, *args]
    done = subprocess.run(
        ["ip", "netns", "exec", lab.t.ns("mn"), *command, *([] if human else ["--json"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode in (0, 1), done.stderr
    return (done.stdout if human else json.loads(done.stdout)), done.returncode


def by_kind(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["kind"]: p for p in answer["summary"]}


def test_home_agent_and_d_udp_correspondent_answer_on_every_path(make_lab: Any) -> None:
    lab = make_lab(firewall="stateful-strict", cn_mipnode=True)
    # After registering, the mobile node asked its home agent for the home prefixes (RFC 6275
    # §11.4.2, sealed in ESP) and took the answer.
    learned = runner.wait_for(lambda: lab.status("mn").get("home_prefixes") == [HOME_PREFIX], 5)
    assert learned, lab.status("mn").get("home_prefixes")
    answer, status = ping(lab, HA_ADDRESS, "-c", "2")
    assert status == 0 and answer["role"] == "home-agent" and answer["data_path"] == "T-native"
    paths = by_kind(answer)
    assert set(paths) == {"T-native", "T-udp"}
    assert paths["T-native"]["selected"] and paths["T-native"]["remote"]["port"] is None
    assert paths["T-udp"]["remote"] == {"address": HA_ADDRESS, "port": 4191}
    for p in paths.values():
        assert p["sent"] == 2 and p["answered"] == 2, p
        assert 0 < p["rtt_ms"]["min"] <= p["rtt_ms"]["median"] <= p["rtt_ms"]["max"]
    path, _ = runner.settle_correspondent_path(lab.t, "D-udp")
    assert path == "D-udp"
    text, status = ping(lab, CN_ADDRESS, human=True)
    assert status == 0
    assert f"ping {CN_ADDRESS} (correspondent), data takes D-udp" in text
    d_udp = next(line for line in text.splitlines() if line.strip().startswith("D-udp"))
    assert "selected" in d_udp and " ms" in d_udp
    assert "(to the home agent)" in text
    only, _ = ping(lab, CN_ADDRESS, "--path", "D-udp")
    assert [p["kind"] for p in only["summary"]] == ["D-udp"]
    assert only["summary"][0]["answered"] == 1


def test_a_closed_native_tunnel_reads_no_answer(make_lab: Any) -> None:
    lab = make_lab(firewall="stateful-no41")
    answer, status = ping(lab, HA_ADDRESS)
    assert status == 0 and answer["data_path"] == "T-udp"
    paths = by_kind(answer)
    assert paths["T-native"]["answered"] == 0
    assert paths["T-native"]["result"] == "no answer" and paths["T-native"]["rtt_ms"] is None
    assert paths["T-udp"]["answered"] == 1 and paths["T-udp"]["selected"]


def test_d_native_answers_through_its_routing_header(make_lab: Any) -> None:
    lab = make_lab(firewall="open", cn_mipnode=True, protection="none")
    path, _ = runner.settle_correspondent_path(lab.t, "D-native")
    assert path == "D-native"
    answer, status = ping(lab, CN_ADDRESS, "--path", "D-native", "-c", "2")
    assert status == 0 and answer["data_path"] == "D-native"
    (d_native,) = answer["summary"]
    assert d_native["kind"] == "D-native" and d_native["answered"] == 2
    assert d_native["remote"] == {"address": CN_ADDRESS, "port": None}
    text, status = ping(lab, "2001:db8:1::99", human=True)  # nobody we know: no direct state
    assert "no direct paths with this peer yet" in text


def test_a_path_kind_the_peer_cannot_have_is_refused(make_lab: Any) -> None:
    lab = make_lab(firewall="open")
    for peer, kind, said in (
        (CN_ADDRESS, "T-native", "a correspondent has no T-native path (T, D-udp, D-native)"),
        (HA_ADDRESS, "D-udp", "the home agent has no D-udp path (T-native, T-udp)"),
    ):
        command = [sys.executable, "-m", "mipnode.cli", "ping", peer, "--path", kind]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.t.ns("mn"), *command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1 and said in done.stderr, done.stderr
