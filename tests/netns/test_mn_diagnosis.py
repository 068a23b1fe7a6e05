"""TC-07 (RFC 4487 §5.3): a mobile node that reaches its home agent on no T path says so.

Only the MN runs at first, so nothing answers its checks: `mipnode status` must carry a
``diagnosis`` naming every candidate within a bounded time. Then the HA starts, and the MN, which
keeps checking, must find it, register, and clear the diagnosis. The access network is made
dual-stack here so all three T candidates (T-native, T-udp over IPv6 and over IPv4) are tried.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mipnode.lab import runner, topology
from mipnode.lab.topology import FW_LAN4, HA_ADDRESS, HA_CORE4, MN_LAN4

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]

DIAGNOSIS_WITHIN_S = 15.0  # generous: measured ~3 s (two check rounds fit in 9 s)
REGISTER_WITHIN_S = 30.0
LOG_REPEAT_S = 30.0  # mn_daemon.DIAGNOSIS_LOG_REPEAT_S
REGISTRATION_STUCK_S = 12.0  # mn_daemon.REGISTRATION_STUCK_S


def _add_ipv4_access(t: topology.Topology) -> None:
    """Give the IPv6 access network IPv4 too (routed, no NAT): a third T candidate."""
    t.sh("mn", "ip", "addr", "add", f"{MN_LAN4}/24", "dev", "eth0")
    t.sh("fw", "ip", "addr", "add", f"{FW_LAN4}/24", "dev", "lan")
    t.sh("mn", "ip", "-4", "route", "add", "default", "via", FW_LAN4, "dev", "eth0")
    t.sh("core", "ip", "-4", "route", "add", "10.0.4.0/24", "via", "198.51.100.2")


def test_unreachable_home_agent_is_diagnosed_and_found_when_it_starts(make_lab: Any) -> None:
    lab = make_lab(start=False)
    _add_ipv4_access(lab.t)
    ha_cfg, mn_cfg = topology.write_configs(lab.t)
    spawned = time.time()
    lab.t.spawn("mn", ["mn", "--config", str(mn_cfg)], "mn.log")

    def diagnosed() -> dict[str, Any] | None:
        s = runner.daemon_status(lab.t, "mn")
        return s if s and s.get("diagnosis") else None

    status = runner.wait_for(diagnosed, DIAGNOSIS_WITHIN_S, 0.1)
    assert status is not None, (lab.t.workdir / "mn.log").read_text()
    text = status["diagnosis"]
    assert text.startswith("home agent unreachable: "), text
    for name in (
        f"T-native {HA_ADDRESS}",
        f"T-udp [{HA_ADDRESS}]:4191",
        f"T-udp {HA_CORE4}:4191",
    ):
        assert name in text, text
    assert "no answer from" in text and "RFC 4487" in text, text
    assert "\n" not in text
    assert status["state"] != "registered"
    assert spawned <= status["diagnosis_since"] <= spawned + DIAGNOSIS_WITHIN_S
    print(f"diagnosis {status['diagnosis_since'] - spawned:.2f} s after spawn: {text}")

    # The HA comes up: the MN must find it again and clear the diagnosis.
    ha_started = time.monotonic()
    lab.t.spawn("ha", ["ha", "--config", str(ha_cfg)], "ha.log")

    def recovered() -> dict[str, Any] | None:
        s = runner.daemon_status(lab.t, "mn")
        if not s or s["state"] != "registered" or s["diagnosis"] is not None:
            return None
        # Whichever way answers first carries the registration; T-native, the better kind,
        # takes over as soon as its check is answered too (DESIGN §4 upgrades).
        return s if s["bindings"][0]["path"]["kind"] == "T-native" else None

    status = runner.wait_for(recovered, REGISTER_WITHIN_S, 0.2)
    assert status is not None, (lab.t.workdir / "mn.log").read_text()
    assert status["diagnosis_since"] is None
    print(f"registered {time.monotonic() - ha_started:.2f} s after the HA was started")

    # One log line per new text, an unchanged one again at most every LOG_REPEAT_S.
    log_text = (lab.t.workdir / "mn.log").read_text()
    lines = [ln for ln in log_text.splitlines() if "WARNING home agent unreachable: " in ln]
    assert 1 <= len(lines) <= 1 + (time.time() - spawned) // LOG_REPEAT_S, lines
    assert "diagnosis cleared" in log_text


def test_a_wrong_key_is_diagnosed_from_the_unauthenticated_answers(make_lab: Any) -> None:
    """The HA answers the checks, but the MN's key differs: the HA drops the BUs without an
    answer (issue 12: never a signed 146 to an unauthenticated packet); the diagnosis names
    the key among the likely causes."""
    lab = make_lab(start=False)
    ha_cfg, mn_cfg = topology.write_configs(lab.t)
    key = next(ln for ln in mn_cfg.read_text().splitlines() if ln.startswith("key = "))
    mn_cfg.write_text(mn_cfg.read_text().replace(key, f'key = "{"00" * 20}"'))
    lab.t.spawn("ha", ["ha", "--config", str(ha_cfg)], "ha.log")
    assert runner.wait_for(lambda: runner.daemon_status(lab.t, "ha"), 10)
    lab.t.spawn("mn", ["mn", "--config", str(mn_cfg)], "mn.log")

    def diagnosed() -> dict[str, Any] | None:
        s = runner.daemon_status(lab.t, "mn")
        return s if s and s.get("diagnosis") else None

    # REGISTRATION_STUCK_S (12 s) of retransmissions come first.
    status = runner.wait_for(diagnosed, REGISTRATION_STUCK_S + DIAGNOSIS_WITHIN_S, 0.2)
    assert status is not None, (lab.t.workdir / "mn.log").read_text()
    text = status["diagnosis"]
    assert text.startswith("home agent does not acknowledge the binding update: "), text
    assert f"no Binding Acknowledgement within 12 s over T-native {HA_ADDRESS}" in text, text
    assert "the MN-HA key differs" in text, text
    assert status["state"] == "registering"
