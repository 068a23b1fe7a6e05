"""`mipnode netcheck` from the mobile node's namespace of real lab topologies, with the home
agent running and no mobile node daemon: the verdicts on the open network, with the native
tunnel dropped (and a port rejected), behind NAT44 with destination-dependent mappings, behind
NAT66, and with the home agent behind a closed firewall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mipnode.lab import netns, runner, topology
from mipnode.lab.topology import _stateful

from .conftest import needs_root

pytestmark = needs_root


def netcheck(tmp_path: Path, human: bool = False, **build: Any) -> tuple[Any, int]:
    """Build a topology, start its home agent only, run netcheck where the MN would run."""
    record = netns.RunRecord.new("nc")
    try:
        t = topology.build(record, tmp_path, **({"access": "ipv6", "firewall": "open"} | build))
        mn_cfg = runner.start_home_network(t, cn_mipnode=False)
        command = [sys.executable, "-m", "mipnode.cli", "netcheck", "--config", str(mn_cfg)]
        done = subprocess.run(
            ["ip", "netns", "exec", t.ns("mn"), *command, *([] if human else ["--json"])],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        record.teardown()
    assert done.returncode in (0, 1), done.stderr
    return (done.stdout if human else json.loads(done.stdout)), done.returncode


def probes(answer: Any, path: str, family: str = "IPv6") -> list[dict[str, Any]]:
    return [p for p in answer["probes"] if p["path"] == path and p["family"] == family]


def test_open_network_picks_t_native_with_no_nat_and_full_mtu(tmp_path: Path) -> None:
    text, status = netcheck(tmp_path, human=True)
    assert status == 0
    assert "a daemon would pick T-native 2001:db8:a::2 -> 2001:db8:1::1" in text
    assert "nat  IPv6 none" in text
    assert "path MTU  IPv6 1500" in text
    assert "T-native (ESP)" in text and "failed" not in text.split("T-udp           IPv4")[0]


def test_native_tunnel_dropped_falls_to_t_udp_and_names_the_icmp_error(tmp_path: Path) -> None:
    rules = _stateful(
        before="meta l4proto { ipv6, esp } counter drop\n"
        "    udp dport 443 reject with icmpv6 type admin-prohibited"
    )
    answer, status = netcheck(
        tmp_path, firewall="stateful", nft={"fw": rules}, ha_udp_ports=(4191, 443), access_mtu=1280
    )
    assert status == 0
    (native,) = probes(answer, "T-native")
    (esp,) = probes(answer, "T-native-esp")
    assert not native["answered"] and native["failure"] == "no answer"
    assert native["packets_sent"] == 3  # bounded: three tries, then it gives up
    assert not esp["answered"]
    by_port = {p["remote"]["port"]: p for p in probes(answer, "T-udp")}
    assert by_port[4191]["usable"]
    assert "administratively prohibited from 2001:db8:a::1" in by_port[443]["failure"]
    assert answer["predicted"]["path"] == "T-udp"
    assert answer["predicted"]["remote"] == {"address": "2001:db8:1::1", "port": 4191}
    assert answer["path_mtu"]["mtu"] == 1280


def test_nat44_with_random_ports_is_address_and_port_dependent(tmp_path: Path) -> None:
    answer, status = netcheck(
        tmp_path, access="ipv4", firewall="nat44-random", ha_udp_ports=(4191, 443)
    )
    assert status == 0
    assert answer["nat"] == {"IPv6": None, "IPv4": "address-and-port-dependent"}
    mapped = {p["mapped"]["port"] for p in probes(answer, "T-udp", "IPv4")}
    assert len(mapped) == 2
    assert all("no IPv6 route" in p["failure"] for p in probes(answer, "T-udp"))
    assert answer["predicted"]["family"] == "IPv4"
    assert answer["packets_sent"] <= 2 + 4  # the IPv6 probes were never sent


def test_nat66_rules_out_t_native(tmp_path: Path) -> None:
    answer, status = netcheck(
        tmp_path, access="ipv6-nat66", firewall="nat66", ha_udp_ports=(4191, 443)
    )
    assert status == 0
    (native,) = probes(answer, "T-native")
    assert native["answered"] and not native["usable"]
    assert native["mapped"]["address"] == "2001:db8:f1::2" != native["local"]["address"]
    assert answer["nat"]["IPv6"].startswith("endpoint-independent or address-dependent")
    assert answer["predicted"]["path"] == "T-udp"


def test_home_agent_behind_a_closed_firewall_means_no_path(tmp_path: Path) -> None:
    answer, status = netcheck(tmp_path, ha_firewall="stateful")
    assert status == 1
    assert answer["predicted"] is None
    assert "answered none" in answer["reason"]
    assert answer["path_mtu"] is None
    # Bounded in packets: T-native 3, ESP 2, T-udp 3; no IPv4 address to send from.
    assert answer["packets_sent"] == 8
