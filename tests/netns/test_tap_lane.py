"""The D-native check lane's kernel filter (drivers/rawio.py ``tap_program``), run by the kernel.

Packets built by scapy (an implementation independent of ours) go out of one end of a veth pair
in a namespace of this test's own, and a tap pair on the other end receives them: the lane must
get exactly route-optimisation signalling and mipnode's D-native probes, the data tap exactly the
rest of what a tap took before the lane existed, no packet both, and the lane's program none of
its own host's transmissions (on an ETH_P_ALL socket, which is handed them). The filter in
Python, ``steers_to_tap_lane`` (for the docs), must agree with the kernel on every packet.
Needs root.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.packet import Packet

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scapy's import-time deprecation warnings
    from scapy.layers.inet6 import (
        HAO,
        MIP6MH_BA,
        MIP6MH_BU,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrRouting,
    )

from mipnode.drivers.rawio import steers_to_tap_lane
from mipnode.wire.packets import D_NATIVE_PROBE_IDENT

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]
ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("tap_lane_probe.py")
COA, CN, HOA = "2001:db8:a::2", "2001:db8:c::2", "2001:db8:1::100"
IDENT = D_NATIVE_PROBE_IDENT


def rh2() -> Packet:
    return IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA])


def hao() -> Packet:
    return IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA)])


# (what it is, the packet, where it must go: "lane", "tap" or None for neither)
CASES = [
    ("CoT: a Mobility Header first", IPv6(src=CN, dst=COA) / MIP6MH_BA(), "lane"),
    ("BA in a type 2 routing header", IPv6(src=CN, dst=COA) / rh2() / MIP6MH_BA(), "lane"),
    ("probe answer", IPv6(src=CN, dst=COA) / rh2() / ICMPv6EchoReply(id=IDENT, seq=1), "lane"),
    ("another echo reply", IPv6(src=CN, dst=COA) / rh2() / ICMPv6EchoReply(id=1), "tap"),
    (
        "an echo request in an RH2",
        IPv6(src=CN, dst=COA) / rh2() / ICMPv6EchoRequest(id=IDENT),
        "tap",
    ),
    ("D-native TCP data", IPv6(src=CN, dst=COA) / rh2() / TCP(), "tap"),
    (
        "routing type 0",
        IPv6(src=CN, dst=COA) / IPv6ExtHdrRouting(type=0, addresses=[HOA]) / MIP6MH_BA(),
        "tap",
    ),
    ("BU with a HAO", IPv6(src=COA, dst=CN) / hao() / MIP6MH_BU(), "lane"),
    ("probe", IPv6(src=COA, dst=CN) / hao() / ICMPv6EchoRequest(id=IDENT, seq=2), "lane"),
    ("another echo request", IPv6(src=COA, dst=CN) / hao() / ICMPv6EchoRequest(id=7), "tap"),
    ("D-native UDP data", IPv6(src=COA, dst=CN) / hao() / UDP(), "tap"),
    ("plain UDP", IPv6(src=CN, dst=COA) / UDP(), None),
]


def _probe(namespace: str, wire: list[bytes], script: Path, *args: str) -> Any:
    """Run a probe script between the veth's ends; what its sockets received, by phase."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, str(script), "tla", "tlb", *args],
        input="\n".join(w.hex() for w in wire),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def namespace() -> Iterator[str]:
    ns = f"mipt-{secrets.token_hex(3)}-tap"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        for argv in (
            ["ip", "link", "add", "tla", "type", "veth", "peer", "name", "tlb"],
            ["ip", "link", "set", "tla", "up"],
            ["ip", "link", "set", "tlb", "up"],
        ):
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def test_the_kernel_steers_signalling_and_probes_to_the_lane_and_the_rest_to_the_tap(
    namespace: str,
) -> None:
    wire = []
    for label, (_, packet, _) in enumerate(CASES, start=1):
        packet[IPv6].fl = label
        wire.append(bytes(packet))
    seen = _probe(namespace, wire, PROBE)
    expected = {
        where: [n for n, (_, _, to) in enumerate(CASES, start=1) if to == where]
        for where in ("tap", "lane")
    }
    names = {n: what for n, (what, _, _) in enumerate(CASES, start=1)}
    got = {k: [names[n] for n in v] for k, v in seen["in"].items()}
    assert seen["in"] == {**expected, "all": expected["lane"]}, got
    for n, packet in enumerate(wire, start=1):
        assert steers_to_tap_lane(packet) == (CASES[n - 1][2] == "lane"), names[n]
    # Our own transmissions: a socket bound to ETH_P_IPV6 is never handed them on this kernel,
    # and the lane's program drops them where a socket is (ETH_P_ALL: "all").
    assert seen["out"] == {"tap": [], "lane": [], "all": []}, seen["out"]


# -- the home link's filter (drivers/home_link.py) ------------------------------------------------

HOME_LINK_PROBE = Path(__file__).with_name("home_link_filter_probe.py")
HA, HOST, TARGET = "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::c:1"
HOME_LINK_CASES = [
    ("an advertisement", IPv6(src=HOST, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=TARGET), True),
    (
        "a DAD solicitation, from ::",
        IPv6(src="::", dst="ff02::1:ff0c:1", hlim=255) / ICMPv6ND_NS(tgt=TARGET),
        True,
    ),
    (
        "address resolution, from a host",
        IPv6(src=HOST, dst="ff02::1:ff0c:1", hlim=255) / ICMPv6ND_NS(tgt=TARGET),
        False,
    ),
    ("a BU to the home agent", IPv6(src=TARGET, dst=HA) / MIP6MH_BU(), True),
    ("a BU to another host", IPv6(src=TARGET, dst=HOST) / MIP6MH_BU(), False),
    ("an echo request", IPv6(src=HOST, dst=HA) / ICMPv6EchoRequest(), False),
    ("UDP", IPv6(src=HOST, dst=HA) / UDP(), False),
]


def test_the_home_links_filter_passes_advertisements_dad_and_bus_to_us_only(
    namespace: str,
) -> None:
    """The kernel hands the home link's socket Neighbor Advertisements, DAD solicitations
    (from ::) and Mobility Headers to the home agent's address, nothing else -- not the LAN's
    address resolution -- and none of our own transmissions."""
    wire = []
    for label, (_, packet, _) in enumerate(HOME_LINK_CASES, start=1):
        packet[IPv6].fl = label
        wire.append(bytes(packet))
    # Label 0: the veths' own DAD solicitations for their link-local addresses, which the
    # filter rightly passes (DAD from ::); ours are labelled from 1.
    seen = {
        phase: {k: [n for n in v if n] for k, v in sockets.items()}
        for phase, sockets in _probe(namespace, wire, HOME_LINK_PROBE, HA).items()
    }
    expected = [n for n, (_, _, passes) in enumerate(HOME_LINK_CASES, start=1) if passes]
    names = {n: what for n, (what, _, _) in enumerate(HOME_LINK_CASES, start=1)}
    assert seen["in"] == {"tap": expected, "all": expected}, {
        k: [names[n] for n in v] for k, v in seen["in"].items()
    }
    assert seen["out"] == {"tap": [], "all": []}, seen["out"]
