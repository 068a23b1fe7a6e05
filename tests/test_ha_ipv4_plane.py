"""The home agent's IPv4 data plane for IPv4 home addresses (RFC 5555; drivers/ha_daemon.py) on
the real daemon object with its real SA table: IPv4 from the TUN to an IPv4 home address goes
sealed (Next Header 4) into that mobile node's tunnel, and an IPv4 packet opened under one
mobile node's SA is forwarded only when its source is that node's own IPv4 home address -- the
attack: a mobile node (it holds its own keys) sending with another's IPv4 home address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

from mipnode.config import HaConfig, MobileNodeEntry
from mipnode.core.esp_keys import EspKeys
from mipnode.core.types import Via
from mipnode.drivers.esp_plane import NH_IPV4
from mipnode.drivers.ha_daemon import HomeAgentDaemon
from tunnels.esp import SUITE_AES_GCM, EspInbound, EspOutbound, key_length

HA, HOA, HOA2 = (IPv6Address(f"2001:db8:1::{i}") for i in (1, 100, 101))
V4, V4_OTHER = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
COA = "2001:db8:a::2"
VIA = Via("T-native", (COA,))
OUT, IN = 0x8001_0001, 0x8064_0001
TO_MN, TO_HA = b"\x11" * key_length(SUITE_AES_GCM), b"\x22" * key_length(SUITE_AES_GCM)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.written: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> int:
        self.sent.append((data, addr))
        return len(data)

    def write(self, packet: bytes, checked: bool = False) -> None:
        self.written.append(packet)


def ipv4(src: IPv4Address, dst: IPv4Address) -> bytes:
    return bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]) + src.packed + dst.packed + bytes(8)


def daemon() -> tuple[HomeAgentDaemon, Recorder]:
    config = HaConfig(
        path="ha.toml",
        address=HA,
        home_prefix=IPv6Network("2001:db8:1::/64"),
        udp_ports=(4191,),
        max_lifetime_s=3600,
        tun_name="mip-ha-test",
        tun_mtu=1400,
        mobile_nodes=(
            MobileNodeEntry(HOA, 1000, bytes(20)),
            MobileNodeEntry(HOA2, 1001, bytes(range(20))),
        ),
        control_socket="@mipnode-ha-test",
        state_dir=None,
    )
    d = HomeAgentDaemon(config)
    rec = Recorder()
    d.raw50 = rec  # type: ignore[assignment]
    d.tun = rec  # type: ignore[assignment]
    d.esp.keyed(HOA.packed, EspKeys(SUITE_AES_GCM, OUT, TO_MN, IN, TO_HA), 0.0)
    d.routes[HOA.packed] = VIA
    d.ipv4_owner = {V4.packed: HOA.packed, V4_OTHER.packed: HOA2.packed}
    return d, rec


async def test_ipv4_to_an_ipv4_home_address_goes_sealed_into_its_tunnel() -> None:
    d, rec = daemon()
    packet = ipv4(IPv4Address("198.18.0.2"), V4)
    d._from_tun(packet)
    ((sealed, addr),) = rec.sent
    assert addr == (COA, 0)
    assert EspInbound(SUITE_AES_GCM, OUT, TO_MN).open_untrusted(sealed) == (NH_IPV4, packet)


async def test_only_the_sas_own_ipv4_home_address_is_forwarded() -> None:
    d, rec = daemon()
    mn = EspOutbound(SUITE_AES_GCM, IN, TO_HA)
    own = ipv4(V4, IPv4Address("198.18.0.2"))
    d._from_esp(mn.seal(own, NH_IPV4) or b"", VIA)
    assert rec.written == [own]
    spoofed = ipv4(V4_OTHER, IPv4Address("198.18.0.2"))  # another node's address
    d._from_esp(mn.seal(spoofed, NH_IPV4) or b"", VIA)
    assert rec.written == [own]
    assert d.drops["esp_inner_source_not_owner"] == 1
