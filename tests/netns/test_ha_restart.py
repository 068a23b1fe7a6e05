"""HA restart with a persisted binding cache, on real namespaces (reference/testing.md C3, F5).

A BU is captured off the HA's wire while the MN registers; the HA is stopped (SIGTERM, and
kill -9) and started again with the same configuration. The binding must come back from
``state_dir``, CN -> HoA traffic must flow again within 2 s of the new HA being ready, and the
captured BU, re-injected byte for byte from the MN's namespace, must be refused without
touching the binding.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from mipnode.drivers.persist import STATE_FILE
from mipnode.lab import netns, runner
from mipnode.lab.topology import HA_ADDRESS, HOA, MN_LAN6
from mipnode.wire.auth4285 import unix_from_ntp
from mipnode.wire.mh import BindingUpdate, MesgId, decode_mh_untrusted

from .conftest import Lab, needs_root

pytestmark = [needs_root, pytest.mark.netns]

READY_BUDGET_S = 10.0
TRAFFIC_BUDGET_S = 2.0

# AF_PACKET capture on the HA's link: print every arriving IPv6-in-IPv6 packet whose inner
# packet is a Mobility Header of type 5 (BU), as hex, exactly as it was on the wire.
SNIFF_BU = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x86DD))
    s.bind((sys.argv[1], 0x86DD))
    s.settimeout(float(sys.argv[2]))
    print("ready", flush=True)
    try:
        while True:
            pkt, addr = s.recvfrom(65535)
            if addr[2] == 4:  # PACKET_OUTGOING
                continue
            if len(pkt) >= 88 and pkt[6] == 41 and pkt[46] == 135 and pkt[82] == 5:
                print(pkt.hex(), flush=True)
    except TimeoutError:
        pass
    """
)

# Re-inject a captured packet unchanged (outer header included) from the MN's access link.
REPLAY = textwrap.dedent(
    """
    import socket, sys
    pkt, dev = bytes.fromhex(sys.argv[1]), sys.argv[2]
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, 25, dev.encode())  # SO_BINDTODEVICE: not into the MN's TUN
    s.sendto(pkt, (socket.inet_ntop(socket.AF_INET6, pkt[24:40]), 0))
    """
)


class Pinger:
    """``ping -D`` from the CN to the HoA every 50 ms; records when each reply arrived."""

    def __init__(self, lab: Lab) -> None:
        self.replies: list[float] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.t.ns("cn"), "ping", "-6", "-n", "-D", "-i", "0.05", HOA],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("[") and "bytes from" in line:
                self.replies.append(float(line[1 : line.index("]")]))

    def first_reply_after(self, t: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [r for r in self.replies if r > t]
            if later:
                return later[0]
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _ready_time(log: Path, timeout: float) -> float | None:
    """When the HA logged "home agent ready" (its own timestamp, ms resolution)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if "home agent ready" in line:
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    return stamp.timestamp()
        time.sleep(0.01)
    return None


def _ha_binding(lab: Lab) -> dict[str, object]:
    bindings = lab.status("ha", "bindings")["bindings"]
    assert len(bindings) == 1, bindings
    binding: dict[str, object] = bindings[0]
    return binding


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_bindings_survive_an_ha_restart_and_a_replayed_bu_is_refused(make_lab, stop) -> None:
    lab = make_lab(firewall="open", start=False)
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", lab.t.ns("ha"), sys.executable, "-c", SNIFF_BU, "eth0", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sniffer.stdout is not None
        assert sniffer.stdout.readline().strip() == "ready"
        lab.start()
        captured = bytes.fromhex(sniffer.stdout.readline().strip())
    finally:
        sniffer.terminate()
        sniffer.wait(timeout=5)
        if sniffer.stdout is not None:
            sniffer.stdout.close()
    # The capture is the MN's real BU: outer MN -> HA (protocol 41), inner HoA -> HA.
    assert IPv6Address(captured[8:24]) == IPv6Address(MN_LAN6)
    assert (IPv6Address(captured[48:64]), IPv6Address(captured[64:80])) == (
        IPv6Address(HOA),
        IPv6Address(HA_ADDRESS),
    )
    bu = decode_mh_untrusted(captured[80:], IPv6Address(HOA), IPv6Address(HA_ADDRESS))
    assert isinstance(bu, BindingUpdate)
    bu_time = unix_from_ntp(next(o.timestamp for o in bu.options if isinstance(o, MesgId)))

    before = _ha_binding(lab)
    assert before["coa"] == MN_LAN6 and before["path"]["kind"] == "T-native"  # type: ignore[index]
    state_file = lab.t.workdir / STATE_FILE
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600

    key = next(
        line.split('"')[1]
        for line in (lab.t.workdir / "ha.toml").read_text().splitlines()
        if line.startswith("key")
    )
    assert key not in state_file.read_text()  # bindings, never keys

    pinger = Pinger(lab)
    try:
        assert pinger.first_reply_after(0, 5) is not None  # traffic flows before the restart

        # -- stop the HA, start it again with the same configuration ---------------------
        # The MN is frozen meanwhile, so the restored HA's Binding Refresh Request cannot be
        # answered before the replay: only the restored state can refuse the replayed BU.
        mn = netns.CHILDREN[lab.record.daemons[1]]
        mn.send_signal(signal.SIGSTOP)
        try:
            old = netns.CHILDREN[lab.record.daemons[0]]
            old.send_signal(stop)
            assert old.wait(timeout=10) == (0 if stop == signal.SIGTERM else -stop)
            spawned_at = time.time()
            lab.t.spawn(
                "ha", ["ha", "--config", str(lab.t.workdir / "ha.toml")], "ha-restarted.log"
            )
            ready_at = _ready_time(lab.t.workdir / "ha-restarted.log", READY_BUDGET_S)
            assert ready_at is not None, (lab.t.workdir / "ha-restarted.log").read_text()
            # Inside the HA's 7 s timestamp window, or the test would prove nothing.
            replay_delay = time.time() - bu_time
            assert replay_delay < 6.0, f"replay {replay_delay:.1f} s after the BU: too late"
            _replay(lab, captured)
            refused = runner.wait_for(
                lambda: _core_when(lab, lambda c: c.get("rejected_144", 0) >= 1), 5
            )
            assert refused is not None, "the replayed BU was not refused"
            assert refused["timestamp_not_increasing"] == 1  # by the restored timestamp alone
            assert refused.get("accepted", 0) == 0
        finally:
            mn.send_signal(signal.SIGCONT)
        resumed_at = time.time()

        back_at = pinger.first_reply_after(resumed_at, TRAFFIC_BUDGET_S + 3)
        assert back_at is not None, "no CN -> HoA traffic after the restart"
        print(
            f"HA restart: spawn->ready {ready_at - spawned_at:.3f} s, replay "
            f"{replay_delay:.1f} s after the BU was sent, MN thawed -> traffic "
            f"{back_at - resumed_at:.3f} s"
        )
        assert back_at - resumed_at <= TRAFFIC_BUDGET_S  # the lab's ha-restart times the HA

        # -- the binding is back; the restored MN was asked to refresh and did ------------
        core = runner.wait_for(
            lambda: _core_when(lab, lambda c: c.get("refreshes", 0) >= 1), READY_BUDGET_S
        )
        assert core is not None, "the MN did not answer the BRR"
        assert core["restored"] == 1 and core["brr_sent"] >= 1
        assert lab.status("ha")["persistence"]["restored"] == 1
        after = _ha_binding(lab)
        for field in ("hoa", "coa", "path", "state"):
            assert after[field] == before[field], field
        mn_sequence = lab.status("mn")["bindings"][0]["sequence"]
        assert after["sequence"] == mn_sequence != bu.sequence  # the BRR-prompted refresh

        # The early replay was refused by the freshness check (RFC 4285: BA 144).
        assert core.get("rejected_144", 0) == 1 and core.get("accepted", 0) == core["refreshes"]

        # -- and once more now that the MN has refreshed: refused, binding untouched ------
        _replay(lab, captured)
        again = runner.wait_for(lambda: _core_when(lab, lambda c: c.get("rejected_144", 0) >= 2), 5)
        assert again is not None, "the second replay was not refused"
        assert again.get("accepted", 0) == core.get("accepted", 0)
        final = _ha_binding(lab)
        for field in ("hoa", "coa", "path", "state", "sequence"):
            assert final[field] == after[field], field
        assert pinger.first_reply_after(time.time(), 2) is not None  # still flowing
    finally:
        pinger.stop()


def _replay(lab: Lab, packet: bytes) -> None:
    lab.t.sh("mn", sys.executable, "-c", REPLAY, packet.hex(), "eth0")


def _core_when(lab: Lab, predicate: Callable[[dict[str, int]], bool]) -> dict[str, int] | None:
    core: dict[str, int] = lab.status("ha")["core"]
    return core if predicate(core) else None
