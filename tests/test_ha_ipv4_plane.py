"""The home agent's IPv4 data plane for IPv4 home addresses (RFC 5555; drivers/ha_daemon.py) on
the real daemon object with its real SA table: IPv4 from the TUN to an IPv4 home address goes
sealed (Next Header 4) into that mobile node's tunnel, and an IPv4 packet opened under one
mobile node's SA is forwarded only when its source is that node's own IPv4 home address -- the
attack: a mobile node (it holds its own keys) sending with another's IPv4 home address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from mipnode.config import HaConfig, MobileNodeEntry
from mipnode.core.esp_keys import EspKeys
from mipnode.core.ipv4_networks import mapped
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


def daemon(protection: str = "esp") -> tuple[HomeAgentDaemon, Recorder]:
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
        protection=protection,
    )
    d = HomeAgentDaemon(config)
    rec = Recorder()
    d.raw50 = rec  # type: ignore[assignment]
    d.tun = rec  # type: ignore[assignment]
    d.esp.keyed(HOA.packed, EspKeys(SUITE_AES_GCM, OUT, TO_MN, IN, TO_HA), 0.0)
    d.routes[HOA.packed] = VIA
    d.ipv4.set(HOA.packed, V4)
    d.ipv4.set(HOA2.packed, V4_OTHER)
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


def clear_daemon() -> tuple[HomeAgentDaemon, Recorder, Recorder]:
    """Without protection (RFC 5555 §4.1 in clear): IPv4-in-IPv6 on T-native."""
    d, rec = daemon("none")
    d.esp.forget(HOA.packed)
    raw4, raw41 = Recorder(), Recorder()
    d.raw4, d.raw41 = raw4, raw41  # type: ignore[assignment]
    return d, rec, raw4


async def test_in_clear_ipv4_goes_as_ipv4_in_ipv6_and_its_own_comes_back_in() -> None:
    d, tun, raw4 = clear_daemon()
    down = ipv4(IPv4Address("198.18.0.2"), V4)
    d._from_tun(down)
    assert raw4.sent == [(down, (COA, 0))]  # protocol 4 to the care-of address, not 41
    up = ipv4(V4, IPv4Address("198.18.0.2"))
    d._from_raw4(up, (COA, 0))
    d._from_ipv4(up, Via("T-udp", (COA, 40000), 4191))  # not its binding's path
    assert tun.written == [up]
    assert d.drops["ingress_wrong_endpoint"] == 1


async def test_in_clear_an_ipv4_source_is_only_its_owners_on_its_path() -> None:
    """The attack: a node (or anyone) sends IPv4 with another node's IPv4 home address, or an
    address no binding has, through the tunnel."""
    d, tun, _ = clear_daemon()
    d._from_raw4(ipv4(V4_OTHER, IPv4Address("198.18.0.2")), (COA, 0))  # HOA2 is not bound
    d._from_raw4(ipv4(IPv4Address("192.0.2.77"), IPv4Address("198.18.0.2")), (COA, 0))
    d._from_raw4(b"\x45" + bytes(10), (COA, 0))
    assert tun.written == []
    assert d.drops["ingress_wrong_endpoint"] == 1  # HOA2's address, but not on HOA2's path
    assert d.drops["ingress_unbound_source"] == 1 and d.drops["ipv4_malformed"] == 1


async def test_under_protection_clear_ipv4_is_refused() -> None:
    d, rec = daemon()
    d._from_ipv4(ipv4(V4, IPv4Address("198.18.0.2")), VIA)
    assert rec.written == [] and d.drops["clear_data_refused"] == 1


LAN4 = IPv4Network("10.77.0.0/24")
DEV4 = IPv4Address("10.77.0.2")


def router_daemon(protection: str = "esp") -> tuple[HomeAgentDaemon, Recorder]:
    """HOA is a mobile router with the IPv4 network LAN4 registered (IPv4-mapped)."""
    d, rec = daemon(protection)
    d.prefixes4.set(HOA.packed, (mapped(LAN4),))
    return d, rec


async def test_ipv4_into_a_routers_network_goes_into_its_tunnel() -> None:
    d, rec = router_daemon()
    packet = ipv4(IPv4Address("198.18.0.2"), DEV4)
    d._from_tun(packet)
    ((sealed, addr),) = rec.sent
    assert addr == (COA, 0)
    assert EspInbound(SUITE_AES_GCM, OUT, TO_MN).open_untrusted(sealed) == (NH_IPV4, packet)
    d._from_tun(ipv4(IPv4Address("198.18.0.2"), IPv4Address("10.78.0.2")))  # nobody's
    assert len(rec.sent) == 1 and d.drops["tun_no_binding"] == 1


async def test_ipv4_from_a_routers_network_only_under_its_sa_and_on_its_path() -> None:
    """The attack: another mobile node (HOA2, its own keys) sends from the router's IPv4
    network; and the router's network in clear from another path."""
    d, rec = router_daemon()
    own = ipv4(DEV4, IPv4Address("198.18.0.2"))
    d._from_esp(EspOutbound(SUITE_AES_GCM, IN, TO_HA).seal(own, NH_IPV4) or b"", VIA)
    assert rec.written == [own]
    out2, in2 = 0x8001_0002, 0x8064_0002
    d.esp.keyed(HOA2.packed, EspKeys(SUITE_AES_GCM, out2, TO_MN, in2, TO_HA), 0.0)
    d.routes[HOA2.packed] = VIA
    d._from_esp(EspOutbound(SUITE_AES_GCM, in2, TO_HA).seal(own, NH_IPV4) or b"", VIA)
    assert rec.written == [own] and d.drops["esp_inner_source_not_owner"] == 1
    clear, tun, _ = clear_daemon()
    clear.prefixes4.set(HOA.packed, (mapped(LAN4),))
    clear._from_ipv4(own, Via("T-udp", (COA, 40000), 4191))
    clear._from_raw4(own, (COA, 0))
    assert tun.written == [own] and clear.drops["ingress_wrong_endpoint"] == 1


def ipv6_posing(v4: IPv4Address) -> bytes:
    """An IPv6 packet whose source carries ``v4`` where an IPv4 header has its source
    (octets 12-15): what a check of those octets alone would take for IPv4 from ``v4``."""
    src = IPv6Address(b"\x26\x20\x00\x00" + v4.packed + bytes(8))
    return (
        b"\x60"
        + bytes(3)
        + (8).to_bytes(2, "big")
        + bytes([17, 64])
        + src.packed
        + (IPv6Address("2001:db8:dddd::1").packed + bytes(8))
    )


async def test_protocol_4_carrying_ipv6_is_refused_whatever_its_octets_say() -> None:
    """The attack: a node with an IPv4 home address sends IPv6 with a spoofed source as
    protocol 4 (or IPv4-in-UDP) on its own path; the TUN would read it as IPv6."""
    d, tun, _ = clear_daemon()
    posing = ipv6_posing(V4)
    assert posing[12:16] == V4.packed
    d._from_raw4(posing, (COA, 0))
    d._from_ipv4(posing, VIA)
    assert tun.written == [] and d.drops["ipv4_malformed"] == 2


async def test_an_ipv6_source_mapping_a_routers_ipv4_network_is_not_the_routers() -> None:
    """IPv4 networks live in their own table: an IPv6 packet from ::ffff:10.77.0.2 under the
    router's SA is not from the router's networks."""
    d, rec = router_daemon()
    inner = ipv6_posing(DEV4)
    inner = inner[:8] + IPv6Address(f"::ffff:{DEV4}").packed + inner[24:]
    d._from_esp(EspOutbound(SUITE_AES_GCM, IN, TO_HA).seal(inner, 41) or b"", VIA)
    assert rec.written == [] and d.drops["esp_inner_source_not_owner"] == 1
