"""A mobile router's IPv4 networks leave only through its tunnel (drivers/rawio.py
``install_forward_guard``): in real namespaces, a host behind a router whose IPv4 default
route points out of its uplink reaches the outside without the guard and not with it; removing
the guard's table restores forwarding (it is the daemon's own, deleted at exit)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import needs_root

pytestmark = needs_root


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture
def router() -> Iterator[dict[str, str]]:
    tag = f"fg{os.getpid() % 100000}"
    ns = {"r": f"{tag}r", "h": f"{tag}h", "o": f"{tag}o"}
    made: list[str] = []
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            made.append(name)
        sh(
            "ip",
            "-n",
            ns["h"],
            "link",
            "add",
            "h0",
            "type",
            "veth",
            "peer",
            "lan0",
            "netns",
            ns["r"],
        )
        sh(
            "ip",
            "-n",
            ns["o"],
            "link",
            "add",
            "o0",
            "type",
            "veth",
            "peer",
            "wan0",
            "netns",
            ns["r"],
        )
        sh("ip", "-n", ns["r"], "tuntap", "add", "mip0", "mode", "tun")  # the tunnel
        for node, dev, cidr in (
            ("h", "h0", "10.77.0.2/24"),
            ("r", "lan0", "10.77.0.1/24"),
            ("r", "wan0", "198.51.100.1/24"),
            ("o", "o0", "198.51.100.2/24"),
        ):
            sh("ip", "-n", ns[node], "addr", "add", cidr, "dev", dev)
            sh("ip", "-n", ns[node], "link", "set", dev, "up")
        sh("ip", "-n", ns["r"], "link", "set", "mip0", "up")
        sh("ip", "-n", ns["h"], "route", "add", "default", "via", "10.77.0.1")
        sh("ip", "-n", ns["o"], "route", "add", "default", "via", "198.51.100.1")
        sh("ip", "netns", "exec", ns["r"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield ns
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def reaches_outside(ns: dict[str, str]) -> bool:
    ping = ["ip", "netns", "exec", ns["h"], "ping", "-c", "1", "-W", "1", "198.51.100.2"]
    return subprocess.run(ping, capture_output=True).returncode == 0


def in_router(ns: dict[str, str], code: str) -> None:
    cmd = ["ip", "netns", "exec", ns["r"], sys.executable, "-c", code]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def test_a_routers_ipv4_network_is_forwarded_only_into_its_tunnel(router: dict[str, str]) -> None:
    assert reaches_outside(router)  # the leak the guard closes: out of the uplink
    in_router(
        router,
        "from mipnode.drivers import rawio; "
        "rawio.install_forward_guard('mipnode_mnfw_mip0', 'mip0', ('10.77.0.0/24',))",
    )
    assert not reaches_outside(router)
    in_router(router, "from mipnode.drivers import rawio; rawio.remove_table('mipnode_mnfw_mip0')")
    assert reaches_outside(router)
