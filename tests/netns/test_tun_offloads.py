"""TUN offloads on real devices: TCP transfers checked by SHA-256 through two TUNs joined by the
daemons' own read, segmentation, coalescing and write code, with each offload on and off; UDP
super-packets (USO) cut into their datagrams; the fallback when the kernel refuses a feature.

Topology: namespaces A and B, TUN ``tb0`` in each. A has fd00:77::1 and 10.77.0.1, B has
fd00:77::2 and 10.77.0.2; each routes the other's addresses into its TUN, and
tests/netns/tun_bridge.py forwards between the two devices.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mipnode.drivers.tun import (
    ALL_OFFLOADS,
    TSO,
    TUN_F_CSUM,
    TUN_F_TSO_ECN,
)

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = Path(__file__).with_name("tun_bridge.py")
A6, B6, A4, B4 = "fd00:77::1", "fd00:77::2", "10.77.0.1", "10.77.0.2"
TRANSFER_BYTES = 4_000_000


class Pair:
    """Namespaces A and B and the bridge process between their TUNs."""

    def __init__(self, offloads: int, coalesce: bool = True) -> None:
        tag = secrets.token_hex(3)
        self.a, self.b = f"mipt-{tag}-a", f"mipt-{tag}-b"
        self.made: list[str] = []
        self.bridge: subprocess.Popen[str] | None = None
        try:
            self._build(offloads, coalesce)
        except BaseException:
            self.close()  # a failed setup leaves no namespace or bridge behind
            raise

    def _build(self, offloads: int, coalesce: bool) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            self.made.append(ns)
            self.sh(ns, "ip", "link", "set", "lo", "up")
        self.bridge = bridge = subprocess.Popen(
            [sys.executable, str(BRIDGE), self.a, self.b, hex(offloads), "1" if coalesce else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert bridge.stdout is not None and bridge.stdin is not None
        line = bridge.stdout.readline().strip()
        assert line == "created", (
            f"bridge: {line!r} {bridge.stderr.read() if bridge.stderr else ''}"
        )
        for ns, mine6, other6, mine4, other4 in (
            (self.a, A6, B6, A4, B4),
            (self.b, B6, A6, B4, A4),
        ):
            self.sh(ns, "ip", "link", "set", "tb0", "mtu", "1500", "up")
            self.sh(ns, "ip", "addr", "add", f"{mine6}/128", "dev", "tb0", "nodad")
            self.sh(ns, "ip", "-6", "route", "add", f"{other6}/128", "dev", "tb0")
            self.sh(ns, "ip", "addr", "add", f"{mine4}/32", "dev", "tb0")
            self.sh(ns, "ip", "-4", "route", "add", f"{other4}/32", "dev", "tb0")
        bridge.stdin.write("go\n")
        bridge.stdin.flush()
        assert bridge.stdout.readline().strip() == "ready"

    @staticmethod
    def sh(ns: str, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

    def py(self, ns: str, *argv: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            **kw,
        )

    def transfer(self, client_ns: str, server_ns: str, host: str, port: int) -> dict[str, Any]:
        """``TRANSFER_BYTES`` over TCP from ``client_ns`` to ``host`` in ``server_ns``; the
        server's SHA-256 of what arrived must match the client's."""
        server = self.py(server_ns, "-m", "mipnode.lab.traffic", "server", str(port))
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        client = self.py(
            client_ns, "-m", "mipnode.lab.traffic", "client", host, str(port), str(TRANSFER_BYTES)
        )
        out, err = client.communicate(timeout=60)
        server.communicate(timeout=10)
        return (
            json.loads(out.strip().splitlines()[-1]) if out.strip() else {"ok": False, "error": err}
        )

    def stop(self) -> dict[str, Any]:
        """Stop the bridge; its final statistics."""
        bridge = self.bridge
        assert bridge is not None and bridge.stdin is not None and bridge.stdout is not None
        bridge.stdin.close()
        out = bridge.stdout.read()
        bridge.wait(timeout=10)
        lines = out.strip().splitlines()
        assert lines, f"bridge printed nothing: {bridge.stderr.read() if bridge.stderr else ''}"
        return json.loads(lines[-1])

    def close(self) -> None:
        bridge = self.bridge
        if bridge is not None:
            if bridge.returncode is None:  # stop() was not reached
                bridge.kill()
                bridge.communicate()
            for pipe in (bridge.stdin, bridge.stdout, bridge.stderr):
                if pipe is not None:
                    pipe.close()
        for ns in self.made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


@pytest.fixture
def pair() -> Iterator[Any]:
    made: list[Pair] = []

    def factory(offloads: int, coalesce: bool = True) -> Pair:
        p = Pair(offloads, coalesce)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


OFFLOAD_SETS = {
    "plain": (0, True),  # no virtio-net header at all
    "csum": (TUN_F_CSUM, True),
    "tso": (TSO | TUN_F_TSO_ECN, True),
    "all": (ALL_OFFLOADS, True),
    "all-no-coalescing": (ALL_OFFLOADS, False),
}


@pytest.mark.parametrize("name", list(OFFLOAD_SETS))
def test_tcp_both_ways_over_ipv6_and_ipv4_arrives_intact(pair: Any, name: str) -> None:
    offloads, coalesce = OFFLOAD_SETS[name]
    p = pair(offloads, coalesce)
    for client, server, host, port in (
        (p.a, p.b, B6, 5001),
        (p.b, p.a, A6, 5002),
        (p.a, p.b, B4, 5003),
    ):
        result = p.transfer(client, server, host, port)
        assert result.get("ok"), f"{name}: {client} -> {host}: {result}"
    stats = p.stop()
    a, b = stats["a"], stats["b"]
    assert stats["drops"] == {}, stats
    assert a["vnet_header"] == bool(offloads)
    if offloads & TSO == TSO:
        # The sender's TUN handed out super-packets and they were cut up: the offload ran.
        assert a["gso_reads"] > 0 and a["gso_segments"] > 2 * a["gso_reads"], a
    else:
        assert a["gso_reads"] == 0, a
    if offloads & TUN_F_CSUM:
        assert a["checksums_completed"] + a["gso_reads"] > 0, a
    if offloads and coalesce:
        # The receiving TUN took merged runs: fewer writes than packets.
        assert b["writes"] < b["packets_written"], b
    else:
        assert b["writes"] == b["packets_written"], b


UDP_SEND = textwrap.dedent(
    """
    import socket, sys
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for burst in range(count):
        parts = [bytes([burst, i]) * 500 for i in range(8)]
        # One send of eight 1000-octet datagrams (UDP_SEGMENT): a USO super-packet to the TUN.
        segment = [(17, 103, (1000).to_bytes(2, sys.byteorder))]
        s.sendmsg([b"".join(parts)], segment, 0, (host, port))
    """
)

UDP_SINK = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE: all 160 fit if we are slow
    s.bind(("::", int(sys.argv[1])))
    s.settimeout(3)
    print("listening", flush=True)
    good = bad = 0
    try:
        while True:
            d = s.recv(4096)
            ok = len(d) == 1000 and d == bytes([d[0], d[1]]) * 500
            good, bad = good + ok, bad + (not ok)
    except TimeoutError:
        pass
    print(good, bad, flush=True)
    """
)


def test_udp_super_packets_are_cut_into_their_datagrams(pair: Any) -> None:
    p = pair(ALL_OFFLOADS)
    sink = p.py(p.b, "-c", UDP_SINK, "6000")
    assert sink.stdout is not None
    assert sink.stdout.readline().strip() == "listening"
    sender = p.py(p.a, "-c", UDP_SEND, B6, "6000", "20")
    _, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    out, _ = sink.communicate(timeout=30)
    good, bad = map(int, out.split())
    stats = p.stop()
    assert bad == 0
    assert good == 160, f"{good} of 160 datagrams arrived: {stats}"
    a = stats["a"]
    if {"uso4", "uso6"} <= set(a["features"]):
        assert a["gso_reads"] > 0, a  # the kernel handed over UDP super-packets
    else:
        assert a["refused"], a  # an old kernel: USO refused, said so


def test_a_refused_offload_falls_back_to_what_the_kernel_takes(pair: Any) -> None:
    """TUNSETOFFLOAD fails with EINVAL on any bit the kernel does not know: ask for one more
    than all, and the device comes up with the next set down, says what was refused, and
    carries data."""
    unknown = 0x4000  # no TUN_F_* flag (linux/if_tun.h)
    p = pair(ALL_OFFLOADS | unknown)
    result = p.transfer(p.a, p.b, B6, 5004)
    stats = p.stop()
    assert result.get("ok"), result
    a = stats["a"]
    assert a["vnet_header"] is True
    assert a["features"] == ["csum", "tso4", "tso6", "tso_ecn"], a
    assert {"uso4", "uso6"} <= set(a["refused"]), a
    assert a["gso_reads"] > 0, a
