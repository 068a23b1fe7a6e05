"""The lab topology (RFC 4487 §5 model, reference/protocol.md §5.3), built with iproute2 and nft.

```
 mn ──lan── fw ──wan/core── core ──── ha   (home prefix 2001:db8:1::/64 routed to the HA)
                              └────── cn   (plain IPv6 host, no mipnode)
```

The firewall router ``fw`` carries the scenario's nftables ruleset in its own table.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from mipnode.lab.netns import CHILDREN, LabError, RunRecord, run

HOME_PREFIX = "2001:db8:1::/64"
HA_ADDRESS = "2001:db8:1::1"
HOA = "2001:db8:1::100"
CN_ADDRESS = "2001:db8:c::2"
CN_ADDRESS4 = "198.18.0.2"  # benchmarking range (RFC 2544): never routed beyond the lab
MN_LAN6 = "2001:db8:a::2"
FW_LAN6 = "2001:db8:a::1"
MN_LAN6_B = "2001:db8:b::2"  # the second access network, to move to
HOA2 = "2001:db8:1::200"  # a second mobile node, on its own access network behind fw3
MN2_LAN6 = "2001:db8:d::2"
SPI2 = 1001
FW_LAN6_B = "2001:db8:b::1"
MN_LAN4 = "10.0.4.2"
FW_LAN4 = "10.0.4.1"
HA_CORE4 = "203.0.113.2"
SPI = 1000

NODES = ("mn", "fw", "core", "ha", "cn")


def plan(
    cn_firewall: str | None, second_access: str | None, second_mn: str | None = None
) -> tuple[tuple[str, ...], tuple[tuple[str, str, str, str], ...]]:
    """Namespaces and veth links (node a, ifname in a, node b, ifname in b) of a topology.

    Optional parts: a second access network ``mn --eth1-- fw2 -- core`` to move to, and a
    firewall in front of the CN (RFC 4487 §5.2) ``core -- fwc -- cn``.
    """
    nodes = ["mn", "fw", "core", "ha"]
    links = [
        ("mn", "eth0", "fw", "lan"),
        ("fw", "wan", "core", "to-fw"),
        ("core", "to-ha", "ha", "eth0"),
    ]
    if second_access:
        nodes.append("fw2")
        links += [("mn", "eth1", "fw2", "lan"), ("fw2", "wan", "core", "to-fw2")]
    if second_mn:
        nodes += ["fw3", "mn2"]
        links += [("mn2", "eth0", "fw3", "lan"), ("fw3", "wan", "core", "to-fw3")]
    if cn_firewall:
        nodes.append("fwc")
        links += [("core", "to-fwc", "fwc", "wan"), ("fwc", "lan", "cn", "eth0")]
    else:
        links.append(("core", "to-cn", "cn", "eth0"))
    nodes.append("cn")
    return tuple(nodes), tuple(links)


FIREWALLS = {
    "open": "",
    # P1: generic stateful firewall, outbound allowed, established back in (protocol.md §5.4).
    "stateful": """
table inet mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
    iifname "lan" accept
  }
}
""",
    # P1 that also drops IPv6-in-IPv6 (protocol 41) both ways: T-native cannot work.
    "stateful-no41": """
table inet mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    meta l4proto ipv6 counter drop
    ct state established,related accept
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
    iifname "lan" accept
  }
}
""",
    # P1, and UDP only to the home agent (RFC 4487 §5.1 style UDP filtering, TC-03-like): no
    # direct UDP path can exist; T and D-native are what is left to try.
    "stateful-udp-ha-only": """
table inet mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    meta l4proto udp ip6 daddr != 2001:db8:1::1 ip6 saddr != 2001:db8:1::1 counter drop
    ct state established,related accept
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
    iifname "lan" accept
  }
}
""",
    # IPv6 access network with unique local addresses behind NAT66 masquerade (TC-14).
    "nat66": """
table ip6 mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
    iifname "lan" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "wan" masquerade
  }
}
""",
    # IPv4-only access network behind NAT44 masquerade (DSMIPv6 scenario 2, TC-12).
    # The same with destination-dependent mappings (a new port per destination).
    "nat44-random": """
table ip mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "wan" masquerade fully-random
  }
}
""",
    "nat44": """
table ip mipnode_lab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "wan" masquerade
  }
}
""",
}


@dataclass
class Topology:
    record: RunRecord
    workdir: Path
    access: str  # "ipv6", "ipv6-nat66" or "ipv4"
    firewall: str
    cn_firewall: str | None = None
    second_access: str | None = None  # firewall profile of fw2, the network to move to
    second_mn: str | None = None  # firewall profile of fw3, in front of a second MN

    @property
    def nodes(self) -> tuple[str, ...]:
        return plan(self.cn_firewall, self.second_access, self.second_mn)[0]

    def ns(self, node: str) -> str:
        return self.record.ns(node)

    def sh(self, node: str, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        return run(
            ["ip", "netns", "exec", self.ns(node), *cmd], check=check, timeout=timeout
        ).stdout

    def spawn(self, node: str, args: list[str], log_name: str) -> int:
        """Start ``python -m mipnode.cli ARGS`` in ``node``; record its pid for teardown."""
        import subprocess

        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), sys.executable, "-m", "mipnode.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        CHILDREN[proc.pid] = proc
        self.record.daemons.append(proc.pid)
        self.record.save()
        return proc.pid


def _sysctls(t: Topology, node: str, router: bool) -> None:
    values = {
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
        "net.ipv6.conf.all.accept_ra": "0",
        "net.ipv6.conf.default.accept_ra": "0",
        "net.ipv6.conf.all.forwarding": "1" if router else "0",
        "net.ipv4.ip_forward": "1" if router else "0",
    }
    args = []
    for k, v in values.items():
        args += ["-w", f"{k}={v}"]
    t.sh(node, "sysctl", "-q", *args)


def build(
    record: RunRecord,
    workdir: Path,
    *,
    access: str,
    firewall: str,
    cn_firewall: str | None = None,
    second_access: str | None = None,
    second_mn: str | None = None,
) -> Topology:
    for name in (firewall, cn_firewall or "open", second_access or "open", second_mn or "open"):
        if name not in FIREWALLS:
            raise LabError(f"unknown firewall profile {name!r}")
    t = Topology(record, workdir, access, firewall, cn_firewall, second_access, second_mn)
    nodes, links = plan(cn_firewall, second_access, second_mn)
    for node in nodes:
        name = record.ns(node)
        record.namespaces.append(name)
        record.save()  # recorded before it exists, so a crash right after leaves no orphan
        run(["ip", "netns", "add", name])
        t.sh(node, "ip", "link", "set", "lo", "up")
        _sysctls(t, node, router=node in ("fw", "fw2", "fw3", "core", "fwc"))
    for a, ia, b, ib in links:
        run(
            [
                "ip",
                "-n",
                record.ns(a),
                "link",
                "add",
                ia,
                "type",
                "veth",
                "peer",
                "name",
                ib,
                "netns",
                record.ns(b),
            ]
        )
        for node, dev in ((a, ia), (b, ib)):
            # Software checksums on veths: captures then show the real on-wire checksums
            # instead of offload placeholders (reference/linux.md §6).
            if shutil.which("ethtool"):
                t.sh(node, "ethtool", "-K", dev, "tx", "off", check=False)
            t.sh(node, "ip", "link", "set", dev, "up")

    def addr(node: str, dev: str, cidr: str) -> None:
        extra = ["nodad"] if ":" in cidr else []
        t.sh(node, "ip", "addr", "add", cidr, "dev", dev, *extra)

    def route(node: str, *spec: str) -> None:
        family = "-6" if any(":" in s for s in spec) else "-4"
        t.sh(node, "ip", family, "route", "add", *spec)

    # Access network: IPv6 (scenarios a-c) or IPv4-only behind NAT44 (scenario d).
    if access == "ipv6":
        addr("mn", "eth0", f"{MN_LAN6}/64")
        addr("fw", "lan", f"{FW_LAN6}/64")
        route("mn", "default", "via", FW_LAN6, "dev", "eth0")
    elif access == "ipv6-nat66":
        # Unique local addresses, translated by fw (never routed beyond it).
        addr("mn", "eth0", "fd00:6::2/64")
        addr("fw", "lan", "fd00:6::1/64")
        route("mn", "default", "via", "fd00:6::1", "dev", "eth0")
    else:
        # An IPv4-only access network: the MN also loses its IPv6 link-local address.
        t.sh("mn", "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1")
        addr("mn", "eth0", f"{MN_LAN4}/24")
        addr("fw", "lan", f"{FW_LAN4}/24")
        route("mn", "default", "via", FW_LAN4, "dev", "eth0")
    addr("fw", "wan", "2001:db8:f1::2/64")
    addr("fw", "wan", "198.51.100.2/24")
    addr("core", "to-fw", "2001:db8:f1::1/64")
    addr("core", "to-fw", "198.51.100.1/24")
    addr("core", "to-ha", "2001:db8:f2::1/64")
    addr("core", "to-ha", "203.0.113.1/24")
    if second_access:
        # The network to move to: up, addressed, but without the MN's default route.
        addr("mn", "eth1", f"{MN_LAN6_B}/64")
        addr("fw2", "lan", f"{FW_LAN6_B}/64")
        addr("fw2", "wan", "2001:db8:f4::2/64")
        addr("core", "to-fw2", "2001:db8:f4::1/64")
        route("core", "2001:db8:b::/64", "via", "2001:db8:f4::2")
        route("fw2", "default", "via", "2001:db8:f4::1")
    if second_mn:
        addr("mn2", "eth0", f"{MN2_LAN6}/64")
        addr("fw3", "lan", "2001:db8:d::1/64")
        addr("fw3", "wan", "2001:db8:f5::2/64")
        addr("core", "to-fw3", "2001:db8:f5::1/64")
        route("mn2", "default", "via", "2001:db8:d::1", "dev", "eth0")
        route("core", "2001:db8:d::/64", "via", "2001:db8:f5::2")
        route("fw3", "default", "via", "2001:db8:f5::1")
    if cn_firewall:
        addr("core", "to-fwc", "2001:db8:f3::1/64")
        addr("fwc", "wan", "2001:db8:f3::2/64")
        addr("fwc", "lan", "2001:db8:c::1/64")
        route("core", "2001:db8:c::/64", "via", "2001:db8:f3::2")
        route("fwc", "default", "via", "2001:db8:f3::1")
    else:
        addr("core", "to-cn", "2001:db8:c::1/64")
        # A public IPv4 address too (a dual-stack CN): direct UDP from IPv4-only access.
        addr("core", "to-cn", "198.18.0.1/24")
        addr("cn", "eth0", f"{CN_ADDRESS4}/24")
        route("cn", "default", "via", "198.18.0.1")
    addr("ha", "eth0", "2001:db8:f2::2/64")
    addr("ha", "eth0", f"{HA_CORE4}/24")
    addr("cn", "eth0", f"{CN_ADDRESS}/64")
    route("fw", "default", "via", "2001:db8:f1::1")
    route("fw", "default", "via", "198.51.100.1")
    route("core", "2001:db8:a::/64", "via", "2001:db8:f1::2")
    route("core", HOME_PREFIX, "via", "2001:db8:f2::2")
    route("ha", "default", "via", "2001:db8:f2::1")
    route("ha", "default", "via", "203.0.113.1")
    route("cn", "default", "via", "2001:db8:c::1")
    profiles: tuple[tuple[str, str | None], ...] = (
        ("fw", firewall),
        ("fwc", cn_firewall),
        ("fw2", second_access),
        ("fw3", second_mn),
    )
    for node, profile in profiles:
        rules = FIREWALLS[profile] if profile else ""
        if rules:
            run(["ip", "netns", "exec", record.ns(node), "nft", "-f", "-"], input=rules)
    return t


def write_configs(t: Topology) -> tuple[Path, Path]:
    """Generate the HA and MN configuration files for this run (a fresh key every run)."""
    key, key2 = secrets.token_hex(20), secrets.token_hex(20)
    ha_cfg = t.workdir / "ha.toml"
    mn_cfg = t.workdir / "mn.toml"
    ha_cfg.write_text(
        f"""[ha]
address = "{HA_ADDRESS}"
home_prefix = "{HOME_PREFIX}"
udp_port = 4191
max_lifetime_s = 600
state_dir = "{t.workdir}"

[[mobile_node]]
home_address = "{HOA}"
spi = {SPI}
key = "{key}"
{_second_mn_entry(key2) if t.second_mn else ""}"""
    )
    if t.second_mn:
        (t.workdir / "mn2.toml").write_text(
            f"""[mn]
home_address = "{HOA2}"
home_agent = "{HA_ADDRESS}"
spi = {SPI2}
key = "{key2}"
lifetime_s = 600
interface = "eth0"
keepalive_interval_s = 5
"""
        )
    mn_cfg.write_text(
        f"""[mn]
home_address = "{HOA}"
home_agent = "{HA_ADDRESS}"
home_agent_ipv4 = "{HA_CORE4}"
spi = {SPI}
key = "{key}"
lifetime_s = 600
{"" if t.second_access else 'interface = "eth0"'}
keepalive_interval_s = 5
"""
    )
    for p in (ha_cfg, mn_cfg):
        os.chmod(p, 0o600)
    return ha_cfg, mn_cfg


def _second_mn_entry(key: str) -> str:
    return f"""
[[mobile_node]]
home_address = "{HOA2}"
spi = {SPI2}
key = "{key}"
"""


def write_cn_config(t: Topology) -> Path:
    cn_cfg = t.workdir / "cn.toml"
    cn_cfg.write_text(f'[cn]\naddresses = ["{CN_ADDRESS}"]\ninterface = "eth0"\n')
    return cn_cfg


def move_mn(t: Topology) -> None:
    """Move the MN to the second access network: its default route now goes through fw2. The
    old link stays up (make-before-break is possible); the daemon notices the new care-of
    address on its own."""
    t.sh("mn", "ip", "-6", "route", "replace", "default", "via", FW_LAN6_B, "dev", "eth1")
