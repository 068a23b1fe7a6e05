"""A home network in memory for the node cores: a real MobileNode and a real HomeAgentNode.

Virtual time, no sockets. Between them a network that carries what the drivers would put on the
wire -- IPv6-in-IPv6 (protocol 41) and UDP over IPv6 or IPv4 -- with a latency, drop rules
(``(now, wire) -> True`` drops; a firewall that starts dropping protocol 41 is one line) and an
optional NAT44 for the mobile node's IPv4 address. The two "drivers" here do what the daemons'
fast paths do and nothing more: the home agent's ingress filter (an inner source is delivered
only when it is bound on the via it came on, else the node core hears of it), the mobile node's
forwarding table (``ForwardingChanged``) and its delivery of tunnelled data to the TUN.

With ``protected=True`` both nodes run with ESP (DESIGN §3): the registration keys the SAs,
the "drivers" hold them in the daemons' own SA table (drivers/esp_plane.py) and seal and open
exactly where the daemons do; T-native then carries protocol 50 besides 41 (BUs and checks in
clear), and clear data is refused both ways.

Data flows are counted where they arrive: :attr:`NodeNet.home_rx` (mobile node -> home network,
past the ingress filter) and :attr:`NodeNet.mn_rx` (home network -> mobile node, into its TUN).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

from mipnode.core.ha import HaCoreConfig, SecurityAssociation
from mipnode.core.home_agent import (
    HaForwardingChanged,
    HomeAgentNode,
    SendFromPort,
    SendVia,
    for_the_node_core,
)
from mipnode.core.home_path import Access
from mipnode.core.mobile_node import (
    AccessRetired,
    ForwardingChanged,
    MobileNode,
    MobileNodeConfig,
    Route,
)
from mipnode.core.transmit import Deliver, EspKeyed, SendHome, SendNative, SendUdp
from mipnode.core.types import Via
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH, NH_UDP
from mipnode.wire.packets import ipv6_packet

HA6 = IPv6Address("2001:db8:ffff::1")
HA4 = IPv4Address("198.51.100.1")
HOME = IPv6Network("2001:db8:aaaa::/64")
HOA = IPv6Address("2001:db8:aaaa::1")
CN = IPv6Address("2001:db8:cccc::1")
MN6 = IPv6Address("2001:db8:1::10")
MN4 = IPv4Address("10.1.0.10")
NAT4 = IPv4Address("203.0.113.1")
KEY = b"k" * 20
SPI = 300
START = 1000.0
WALL_OFFSET = 1_796_000_000.0 - START  # a POSIX clock in 2026 at START


@dataclass(frozen=True, slots=True)
class Wire:
    """One packet on the network: ``proto`` is "41", "50" or "udp"; ports are 0 for 41/50."""

    proto: str
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


Rule = Callable[[float, Wire], bool]


def drop_protocol_41(now: float, wire: Wire) -> bool:
    return wire.proto == "41"


def drop_esp(now: float, wire: Wire) -> bool:
    return wire.proto == "50"


def drop_udp_port(port: int) -> Rule:
    def rule(now: float, wire: Wire) -> bool:
        return wire.proto == "udp" and port in (wire.src[1], wire.dst[1])

    return rule


def drop_ipv4(now: float, wire: Wire) -> bool:
    return ":" not in wire.src[0]


def drop_all(now: float, wire: Wire) -> bool:
    return True


@dataclass
class NodeNet:
    now: float = START
    latency_s: float = 0.005
    loss: float = 0.0
    seed: int = 1
    ha_ports: tuple[int, ...] = (4191,)
    ipv4: bool = True
    nat44: bool = False
    mn_config: MobileNodeConfig | None = None
    rules: list[Rule] = field(default_factory=list)
    home_rx: list[float] = field(default_factory=list)
    mn_rx: list[float] = field(default_factory=list)
    log: list[tuple[float, str, Wire]] = field(default_factory=list)
    mn_routes: dict[bytes | None, tuple[Route, ...]] = field(default_factory=dict)
    ha_routes: dict[bytes, Via] = field(default_factory=dict)
    retired: list[Access] = field(default_factory=list)
    notices: list[tuple[float, str, str]] = field(default_factory=list)
    protected: bool = False
    ha_random: bool = True  # False: a home agent that cannot key ESP (protection off)
    mn_prefixes: tuple[IPv6Network, ...] = ()  # the SA's mobile network prefixes (a router)
    others: list[Any] = field(default_factory=list)  # more cores with timers (get/handle_timer)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.mn_esp, self.ha_esp = EspSas(keylog=""), EspSas(keylog="")
        self.mn_drops, self.ha_drops = Counters(), Counters()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.ha_up = True
        self.ha = self._new_ha()
        cfg = self.mn_config or MobileNodeConfig(
            home_address=HOA,
            home_agent=HA6,
            spi=SPI,
            key=KEY,
            home_agent_ipv4=HA4 if self.ipv4 else None,
            home_agent_ports=self.ha_ports,
            route_optimization=False,
            suite=1 if self.protected else None,
        )
        self.mn = MobileNode(
            cfg, now=self.now, random_bytes=self.rng.randbytes, wall_offset=WALL_OFFSET
        )
        self.access = Access("eth0", MN6, MN4 if self.ipv4 else None, 5000, 5001)
        self.mn.set_access(self.now, self.access)
        self._drain()

    # -- the home agent ------------------------------------------------------------------------

    def _new_ha(self) -> HomeAgentNode:
        return HomeAgentNode(
            HaCoreConfig(
                address=HA6,
                home_prefix=HOME,
                security_associations=(SecurityAssociation(SPI, KEY, HOA, self.mn_prefixes),),
                max_lifetime_s=600,
                refresh_requests=True,
                require_protection=self.protected,
            ),
            wall_offset=WALL_OFFSET,
            random_bytes=self.rng.randbytes if self.ha_random else None,
        )

    def restart_ha(self, *, down_s: float = 0.5) -> None:
        """The home agent dies and comes back ``down_s`` later without its binding cache."""
        self.ha_up = False
        self.ha_routes.clear()
        self.ha_esp = EspSas(keylog="")  # SAs die with the process

        def back() -> None:
            self.ha = self._new_ha()
            self.ha_up = True

        self.at(self.now + down_s, back)

    def _ha_receive(self, wire: Wire) -> None:
        if not self.ha_up:
            return
        if wire.proto == "41":
            self._ha_tunnel(wire.payload, Via("T-native", (wire.src[0],)))
        elif wire.proto == "50":
            self._ha_esp(wire.payload, Via("T-native", (wire.src[0],)))
        elif wire.payload[:1] and wire.payload[0] >> 4 == 6:
            via = Via("T-udp", wire.src, local_port=wire.dst[1])
            self._ha_tunnel(wire.payload, via)
        elif wire.payload[:1] and wire.payload[0] & 0x80:
            self._ha_esp(wire.payload, Via("T-udp", wire.src, local_port=wire.dst[1]))
        else:
            self.ha.receive_udp(self.now, wire.payload, wire.dst[1], wire.src)
        self._drain()

    def _ha_esp(self, data: bytes, via: Via) -> None:
        spi = int.from_bytes(data[:4], "big")
        if spi not in self.ha_esp.inbound:
            self.ha_drops("esp_unknown_spi")
            self.ha.unknown_spi(self.now, spi, via, len(data))
            return
        opened = self.ha_esp.open(data, self.now, self.ha_drops)
        if opened is None:
            return
        inner, owner = opened
        if inner[24:40] == HA6.packed and for_the_node_core(inner):
            self.ha.receive_tunnelled(self.now, inner, via, IPv6Address(owner))
        elif inner[8:24] == owner:
            self._ha_tunnel(inner, via, sealed=True)

    def _ha_tunnel(self, inner: bytes, via: Via, sealed: bool = False) -> None:
        """The HA daemon's fast path: signalling and checks to the node core, data through the
        ingress filter."""
        if not sealed and inner[24:40] == HA6.packed and for_the_node_core(inner):
            self.ha.receive_tunnelled(self.now, inner, via)
        elif not sealed and self.protected:
            self.ha_drops("clear_data_refused")
        elif self.ha_routes.get(inner[8:24]) == via:
            self.home_rx.append(self.now)
        else:
            self.ha.unbound_traffic(self.now, inner, via)

    # -- the mobile node -------------------------------------------------------------------------

    def _mn_receive(self, wire: Wire) -> None:
        if wire.proto == "41":
            self._mn_tunnel(wire.payload, (wire.dst[0], 0), (wire.src[0], 0))
        elif wire.proto == "50":
            opened = self.mn_esp.open(wire.payload, self.now, self.mn_drops)
            if opened is not None:
                self._mn_tunnel(opened[0], (wire.dst[0], 0), (wire.src[0], 0), sealed=True)
        elif wire.src[0] in (str(HA6), str(HA4)) and wire.payload[0] >> 4 == 6:
            self._mn_tunnel(wire.payload, wire.dst, wire.src)
        elif wire.src[0] in (str(HA6), str(HA4)) and wire.payload[0] & 0x80:
            opened = self.mn_esp.open(wire.payload, self.now, self.mn_drops)
            if opened is not None:
                self._mn_tunnel(opened[0], wire.dst, wire.src, sealed=True)
        else:
            self.mn.receive_udp(self.now, wire.payload, wire.dst, wire.src)
        self._drain()

    def _mn_tunnel(
        self, inner: bytes, local: tuple[str, int], remote: tuple[str, int], sealed: bool = False
    ) -> None:
        """The MN daemon's fast path: data for the HoA to the TUN, the rest to the node core."""
        nh = inner[6]
        control = (
            nh == NH_MH
            or inner[8:24] == HA6.packed
            or (nh == NH_ICMPV6 and len(inner) > 40 and inner[40] < 128)
        )
        if inner[24:40] == HOA.packed and not control and (sealed or not self.protected):
            self.mn_rx.append(self.now)
        else:
            self.mn.receive_tunnelled(self.now, inner, local, remote, sealed)

    # -- traffic -------------------------------------------------------------------------------

    def send_up(self) -> None:
        """One data packet HoA -> CN on the mobile node's default route."""
        routes = self.mn_routes.get(None)
        if not routes:
            return
        route = routes[0]
        pkt = ipv6_packet(HOA, CN, NH_UDP, b"\0" * 8 + b"data")
        self._mn_send(SendHome(pkt, route.local, route.remote, protect=self.protected))

    def send_down(self) -> None:
        """One data packet CN -> HoA through the home agent's binding."""
        via = self.ha_routes.get(HOA.packed)
        if via is None or not self.ha_up:
            return
        keyed = HOA if HOA.packed in self.ha_esp.outbound else None
        if self.protected and keyed is None:
            return  # the daemon drops it: esp_not_keyed
        self._ha_send(SendVia(via, ipv6_packet(CN, HOA, NH_UDP, b"\0" * 8 + b"data"), keyed))

    def flow(self, until: float, interval_s: float = 0.02) -> None:
        """A two-way flow of one packet each way every ``interval_s`` (50/s) until ``until``."""

        def tick() -> None:
            self.send_up()
            self.send_down()
            if self.now + interval_s <= until:
                self.at(self.now + interval_s, tick)

        self.at(self.now, tick)

    # -- the network ---------------------------------------------------------------------------

    def _mn_send(self, out: object) -> None:
        if isinstance(out, SendHome):
            assert out.local is not None and out.remote is not None
            packet = self.mn_esp.seal(b"", out.packet, self.mn_drops) if out.protect else out.packet
            if packet is None:
                return
            proto = ("50" if out.protect else "41") if out.local[1] == 0 else "udp"
            self._transmit("mn", Wire(proto, out.local, out.remote, packet))
        elif isinstance(out, EspKeyed):
            self.mn_esp.keyed(b"", out.keys, self.now)
        elif isinstance(out, SendUdp):
            self._transmit("mn", Wire("udp", out.local, out.remote, out.payload))
        elif isinstance(out, Deliver):
            self.mn_rx.append(self.now)
        elif isinstance(out, SendNative):
            pass  # no correspondent here

    def _ha_send(self, out: object) -> None:
        if isinstance(out, SendVia):
            via, packet = out.via, out.packet
            if out.protect is not None:
                sealed = self.ha_esp.seal(out.protect.packed, packet, self.ha_drops)
                if sealed is None:
                    return
                packet = sealed
            if via.kind == "T-native":
                proto = "41" if out.protect is None else "50"
                wire = Wire(proto, (str(HA6), 0), (str(via.remote[0]), 0), packet)
            else:
                ha = str(HA6) if ":" in str(via.remote[0]) else str(HA4)
                port = via.local_port or self.ha_ports[0]
                wire = Wire("udp", (ha, port), (str(via.remote[0]), int(via.remote[1])), packet)
            self._transmit("ha", wire)
        elif isinstance(out, SendFromPort):
            ha = str(HA6) if ":" in out.remote[0] else str(HA4)
            self._transmit("ha", Wire("udp", (ha, out.port), out.remote, out.payload))

    def _transmit(self, sender: str, wire: Wire) -> None:
        self.log.append((self.now, sender, wire))
        if self.nat44 and sender == "mn" and wire.src[0] == str(self.access.ipv4):
            wire = Wire(wire.proto, (str(NAT4), wire.src[1] + 10000), wire.dst, wire.payload)
        if any(rule(self.now, wire) for rule in self.rules):
            return
        if self.loss and self.rng.random() < self.loss:
            return
        if sender == "ha" and self.nat44 and wire.dst[0] == str(NAT4):
            wire = Wire(
                wire.proto, wire.src, (str(self.access.ipv4), wire.dst[1] - 10000), wire.payload
            )
        receive = self._mn_receive if sender == "ha" else self._ha_receive
        self.at(self.now + self.latency_s, lambda: receive(wire))

    def _drain(self) -> None:
        for out in self.mn.datagrams_to_send(self.now):
            self._mn_send(out)
        while (event := self.mn.next_event()) is not None:
            if isinstance(event, ForwardingChanged):
                if event.routes is None:
                    self.mn_routes.pop(event.dst, None)
                else:
                    self.mn_routes[event.dst] = event.routes
            elif isinstance(event, AccessRetired):
                self.retired.append(event.access)
            elif hasattr(event, "text"):
                self.notices.append((self.now, event.key, event.text))  # type: ignore[attr-defined]
        for out_ha in self.ha.datagrams_to_send(self.now):
            self._ha_send(out_ha)
        while (ha_event := self.ha.next_event()) is not None:
            assert isinstance(ha_event, HaForwardingChanged)
            if ha_event.via is None:
                self.ha_routes.pop(ha_event.home_address.packed, None)
                self.ha_esp.forget(ha_event.home_address.packed)
            else:
                self.ha_routes[ha_event.home_address.packed] = ha_event.via
                if ha_event.keys is not None:
                    self.ha_esp.keyed(
                        ha_event.home_address.packed, ha_event.keys, self.now, switch_on_proof=True
                    )

    # -- time ----------------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def run_until(self, t: float, *, max_steps: int = 2_000_000) -> None:
        for _ in range(max_steps):
            cores = (self.mn, self.ha, *self.others)
            timers = [x for x in (c.get_timer() for c in cores) if x is not None]
            nxt = min([*timers, *([self._queue[0][0]] if self._queue else [])], default=None)
            if nxt is None or nxt > t:
                self.now = max(self.now, t)
                return
            self.now = max(self.now, nxt)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, action = heapq.heappop(self._queue)
                action()
            mt = self.mn.get_timer()
            if mt is not None and mt <= self.now:
                self.mn.handle_timer(self.now)
            ht = self.ha.get_timer()
            if ht is not None and ht <= self.now:
                self.ha.handle_timer(self.now)
            for other in self.others:
                ot = other.get_timer()
                if ot is not None and ot <= self.now:
                    other.handle_timer(self.now)
            self._drain()
        raise AssertionError(f"no progress at t={self.now}")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- readings ------------------------------------------------------------------------------

    def home_kind(self) -> str | None:
        pair = self.mn.home_pair
        return None if pair is None else f"{pair.kind}/{pair.family}"

    def ha_via(self) -> Via | None:
        return self.ha_routes.get(HOA.packed)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an arrival."""
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in itertools.pairwise(points))
