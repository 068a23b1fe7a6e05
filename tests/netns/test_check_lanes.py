"""Heartbeats of a D-udp pair under a data flood that overflows the receiving daemon's socket
(issue 13: "heartbeats and checks that a data flood cannot starve"). Real namespaces, real
daemons, iperf3 as the flood; needs root.

iperf3 sends 64-octet UDP datagrams in two streams as fast as it can from the CN to the home
address: the CN's daemon carries them over D-udp faster than the MN's daemon can open and
deliver them, so the MN's data socket overflows (7,000-20,000 drops in 12 s here; one stream
left it at 150-900 once the MN's delivery got cheaper, too close to no overflow at all). The
checks on the pair travel on the same 5-tuple (DESIGN §3) but the kernel steers them into the
port's check lane (drivers/check_lane.py), whose queue the flood cannot fill: every heartbeat
sent during the flood is answered. Measured without the lane
on the same machine: 6 of 22 heartbeats lost in a 20 s flood, and their RTT 45-53 ms of
queueing instead of 3-5 ms.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from mipnode.lab import runner
from mipnode.lab.status import correspondent_path, wait_for
from mipnode.lab.topology import CN_ADDRESS, HOA

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed"),
]
FLOOD_S = 12
PORT = "5399"


def d_udp_pair(lab: Any) -> dict[str, Any]:
    (peer,) = [p for p in lab.status("mn", "paths") if p["peer"] == CN_ADDRESS]
    assert peer["selected"]["kind"] == "D-udp", peer
    (pair,) = [p for p in peer["pairs"] if p["kind"] == "D-udp" and p["state"] == "succeeded"]
    return dict(pair)


def flood_the_home_address(lab: Any, streams: int) -> None:
    """iperf3 from the CN to the home address: 64-octet UDP datagrams in ``streams`` streams, as
    fast as it can, for FLOOD_S."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.t.ns("mn"), "iperf3", "-s", "-1", "-B", HOA, "-p", PORT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    flood = ["iperf3", "-c", HOA, "-p", PORT, "-u", "-b", "0", "-l", "64", "-P", str(streams)]
    try:
        for _ in range(20):  # the server needs a moment to listen
            done = subprocess.run(
                ["ip", "netns", "exec", lab.t.ns("cn"), *flood, "-t", str(FLOOD_S)],
                capture_output=True,
                text=True,
                timeout=FLOOD_S + 30,
                check=False,
            )
            if "unable to connect" not in done.stderr + done.stdout:
                break
        assert done.returncode == 0, done.stderr + done.stdout
    finally:
        server.kill()
        server.wait()


def test_heartbeats_get_through_a_flood_that_overflows_the_data_socket(make_lab: Any) -> None:
    lab = make_lab(firewall="stateful", cn_mipnode=True)
    runner.ping(lab.t, "cn", HOA, count=2)
    assert wait_for(lambda: correspondent_path(lab.t) == "D-udp", 20), "no D-udp pair"
    before, status = d_udp_pair(lab), lab.status("mn")
    lanes_before = status["offloads"]["lane_datagrams"]
    assert status["offloads"]["check_lanes"] >= 1
    flood_the_home_address(lab, streams=2)
    after, status = d_udp_pair(lab), lab.status("mn")
    drops = status["kernel_drops"]
    # The flood did what it is for: the MN's data socket overflowed...
    assert drops["eth0/udp6"] > 1000, drops
    # ...and the lane did not, and carried the checks.
    assert drops["eth0/udp6_checks"] == 0, drops
    sent = after["checks_sent"] - before["checks_sent"]
    answered = after["checks_answered"] - before["checks_answered"]
    assert sent >= FLOOD_S // 3, (before, after)  # heartbeats went on during the flood
    assert answered >= sent - 1, (before, after)  # the last one may still be on its way
    assert status["offloads"]["lane_datagrams"] - lanes_before >= answered
    assert correspondent_path(lab.t) == "D-udp"


def test_d_native_probes_are_answered_through_a_flood_that_overflows_the_cn_tun(
    make_lab: Any,
) -> None:
    """The D-native path's probes (an echo request with a Home Address option every 0.5 s,
    core/d_native.py) under a flood from the CN to the home address that overflows the CN's TUN
    queue. The CN's daemon answers them itself (drivers/cn_daemon.py): answered by the kernel,
    the reply queued in that TUN behind the flood and was dropped with it, so 2 s of silence
    ended the path in the middle of the flood (measured: "D-native silent", the MN moved to
    D-udp and back). The MN's probes arrive through the tap's lane (drivers/rawio.py)."""
    lab = make_lab(firewall="open", cn_mipnode=True, protection="none")
    runner.ping(lab.t, "cn", HOA, count=2)
    assert wait_for(lambda: correspondent_path(lab.t) == "D-native", 25), "no D-native path"
    before, cn_before = lab.status("mn"), lab.status("cn")
    flood_the_home_address(lab, streams=1)
    after, cn_after = lab.status("mn"), lab.status("cn")
    # The flood did what it is for: the CN's TUN queue overflowed.
    assert cn_after["kernel_drops"]["tun"] - cn_before["kernel_drops"]["tun"] > 10_000
    core = after["core"]
    assert not [k for k in core if k.startswith("d_native_ended")], core
    sent = core["d_native_probes_sent"] - before["core"]["d_native_probes_sent"]
    answered = cn_after["counters"].get("d_native_probes_answered", 0) - cn_before["counters"].get(
        "d_native_probes_answered", 0
    )
    assert sent >= FLOOD_S, (before["core"], core)  # every 0.5 s, the flood went on
    assert answered >= sent - 1, (sent, answered)  # the last one may still be on its way
    assert after["kernel_drops"]["eth0/tap_checks"] == 0
    assert correspondent_path(lab.t) == "D-native"
