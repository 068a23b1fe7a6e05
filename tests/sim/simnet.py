"""A seeded, virtual-time network around the real node cores (DESIGN §9, simulated-network tier).

Nothing here touches a socket or a clock: :class:`SimNet` owns ``now`` and one event heap, and
every random choice (loss, duplication, reordering, jitter, NAT ports, and the randomness each
node core is given: ICE credentials, transaction ids, tie-breakers, BU sequence numbers) comes
from one ``random.Random(seed)``, so a seed replays exactly. The topology is the RFC 4487 one::

    MN --access link-- [middlebox] --\\               /-- [middlebox] --access link-- CN or MN 2
                                      +--- core ---+
    MN moved --access-- [middlebox] --/   (rules)   \\-- home: HA (and the home addresses)

* A :class:`Site` is an access network: an access link (:class:`LinkProfile`: latency, jitter,
  loss, duplication, reordering) and, per address family, an optional :class:`Middlebox` at its
  edge. The core is one more link; ``SimNet.rules`` are drop rules in the core (a blackholing
  router: "kill the direct path", "drop protocol 41").
* A :class:`Packet` is a UDP datagram (``proto="udp"``: a socket's payload, ports are real),
  an IPv6-in-IPv6 packet (``"41"``: ports 0, ``data`` is the inner packet) or a plain IPv6
  packet (``"ip6"``: ports 0, ``data`` is the whole packet: Mobility Headers between a home
  address and a correspondent, data relayed by the home agent, D-native packets with a Home
  Address option or a type 2 routing header). It crosses the source access link, the source
  middlebox (outbound), the core, the destination middlebox (inbound) and the destination
  access link; each crossing is its own event, so middlebox state is looked at when the packet
  is really there.
* :class:`Middlebox` is Linux conntrack: outbound creates an entry, inbound passes only on a
  matching live entry; every packet refreshes it. UDP: 30 s while unreplied, 120 s once a
  reply was seen and the entry is older than 2 s (assured). Protocol 41 and the Mobility Header
  (and anything else without a conntrack helper): the generic timeout, 600 s. ICMPv6 echo:
  30 s, keyed by the identifier. Plain IPv6 packets are keyed by addresses, upper protocol and
  ports, read behind the extension headers (as ``ipv6_skip_exthdr`` does). A packet with a Home
  Address option or a type 2 routing header and a checksummed upper layer (UDP, TCP, ICMPv6) is
  conntrack-invalid at a stateful middlebox and dropped (its checksum names the home address,
  not the header's: RFC 4487 §5.1), so D-native works only without a middlebox on the way.
  With NAT44 (UDP) it also translates: endpoint-independent mapping (``masquerade``) or
  address-and-port-dependent mapping (``masquerade fully-random``), endpoint-independent or
  address-and-port-dependent filtering.
* The nodes are the real cores, each wrapped in what its daemon's driver does and nothing more
  (tests/core/nodenet.py shows the same glue): :class:`HomeAgentHost` (``HomeAgentNode``; the
  driver's ingress filter, forwarding of reverse-tunnelled packets, tunnelling of packets to
  bound home addresses, restart with or without the persisted cache), :class:`MobileHost`
  (``MobileNode``; the forwarding table from ``ForwardingChanged``, tunnel delivery, the
  D-udp and D-native data plane, the tap, movement, restart) and :class:`CorrespondentHost`
  (``CorrespondentNode``; its tap for Mobility Headers and Home Address options, the kernel's
  echo replies to D-native probes, D-udp data). Each node may run data flows (one small UDP
  packet every ``interval``) to its peer.
* Oracles, read from the wire and from the cores' events and inspection methods, never from
  re-implemented state (:class:`Session`, one per node and peer): every datagram of data on a
  direct pair must follow a two-way authenticated exchange on exactly that 5-tuple within
  ``dead_after_s`` (a request of ours, its success response on the same 5-tuple with a
  MESSAGE-INTEGRITY that verifies with a password the peer advertised in an offer or answer we
  received); the D-udp path log with times (from ``ForwardingChanged`` /
  ``CnForwardingChanged``); every check sent; the home path log (``MobileNode.home_changes``)
  and the default route (``ForwardingChanged(None, ...)``).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Literal

from aioice import stun as aioice_stun

from ice.agent import IceConfig
from ice.candidate import TransportAddress
from ice.checklist import CandidatePair
from mipnode.core.cn import CnCoreConfig
from mipnode.core.correspondent_node import CnForwardingChanged, CorrespondentNode
from mipnode.core.direct_paths import Change
from mipnode.core.ha import HaCoreConfig, SecurityAssociation
from mipnode.core.home_agent import HaForwardingChanged, HomeAgentNode, SendFromPort, SendVia
from mipnode.core.home_path import Access
from mipnode.core.mobile_node import (
    AccessRetired,
    ForwardingChanged,
    MobileNode,
    MobileNodeConfig,
    Notice,
    Route,
)
from mipnode.core.transmit import Deliver, SendHome, SendNative, SendUdp
from mipnode.core.types import Via
from mipnode.wire import mice
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH, NH_UDP, upper_layer_checksum
from mipnode.wire.mh import ExperimentalMessage, MhType, decode_mh_untrusted
from mipnode.wire.packets import (
    D_NATIVE_PROBE_IDENT,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    udp_in_ipv6,
)
from tunnels.ro import (
    add_home_address_option,
    add_type2_routing_header,
    remove_home_address_option_untrusted,
    remove_type2_routing_header_untrusted,
)

Address = TransportAddress
Proto = Literal["udp", "41", "ip6"]

HA_PORT = 4191  # DESIGN §2: T-udp to the HA
MN_PORT = 5000
CN_PORT = 6000
DATA_PORT = 9000  # the UDP port of the test's data flows (inside the IPv6 packets)

# Linux conntrack (nf_conntrack_proto_udp.c, _generic.c, _icmpv6.c)
UDP_UNREPLIED_S = 30.0
UDP_STREAM_S = 120.0
UDP_STREAM_AFTER_S = 2.0
GENERIC_TIMEOUT_S = 600.0
ICMP_TIMEOUT_S = 30.0

ICE = IceConfig()  # the D-udp agents' configuration (the cores use the defaults)
DEAD_AFTER_S = ICE.dead_after_s
TRAFFIC_REPORT_S = 1.0  # the MN driver reports destinations that carried data this often
WALL_OFFSET = 1_796_000_000.0  # POSIX time at virtual time 0 (RFC 4285 timestamps)
MAX_STEPS_AT_ONE_INSTANT = 20_000

NH_TCP = 6
NH_ROUTING = 43
NH_DSTOPTS = 60
_EXT_HEADERS = frozenset({0, NH_ROUTING, 44, NH_DSTOPTS})
_CHECKSUMMED = frozenset({NH_UDP, NH_TCP, NH_ICMPV6})
_HAO_TYPE = 201
_STUN_COOKIE = b"\x21\x12\xa4\x42"


def family(ip: str) -> int:
    return 6 if ":" in ip else 4


# -- links, packets -------------------------------------------------------------------------------


@dataclass
class LinkProfile:
    """One link crossing: ``latency_s`` + U(0, ``jitter_s``), lost with probability ``loss``,
    duplicated with ``duplicate`` (each copy its own delay), and with probability ``reorder``
    held back by up to ``reorder_extra_s`` more (so later packets overtake it)."""

    latency_s: float = 0.005
    jitter_s: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_extra_s: float = 0.080

    def calm(self) -> None:
        self.jitter_s = self.loss = self.duplicate = self.reorder = 0.0


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet on the wire (see the module docstring for ``proto``)."""

    src: Address
    dst: Address
    data: bytes
    origin: str
    proto: Proto = "udp"


Rule = Callable[[float, Packet], bool]
"""A drop rule: ``(now, packet) -> True`` drops it."""


def native_facts(pkt: bytes) -> tuple[int, int, int, bool]:
    """(upper protocol, source port, destination port, carries an HAO or RH2) of a plain IPv6
    packet, the way conntrack sees it (extension headers skipped; an echo's identifier stands
    for both ports)."""
    nh = pkt[6]
    off = 40
    mobile = False
    while nh in _EXT_HEADERS and off + 8 <= len(pkt):
        if nh == NH_ROUTING and pkt[off + 2] == 2:
            mobile = True
        elif nh == NH_DSTOPTS:
            end = off + (pkt[off + 1] + 1) * 8
            i = off + 2
            while i < end:
                if pkt[i] == 0:
                    i += 1
                    continue
                if pkt[i] == _HAO_TYPE:
                    mobile = True
                i += 2 + pkt[i + 1]
        nh, off = pkt[off], off + (8 if nh == 44 else (pkt[off + 1] + 1) * 8)
    sport = dport = 0
    if nh in (NH_UDP, NH_TCP) and off + 4 <= len(pkt):
        sport = int.from_bytes(pkt[off : off + 2], "big")
        dport = int.from_bytes(pkt[off + 2 : off + 4], "big")
    elif nh == NH_ICMPV6 and off + 6 <= len(pkt) and pkt[off] in (128, 129):
        sport = dport = int.from_bytes(pkt[off + 4 : off + 6], "big")
    return nh, sport, dport, mobile


# -- conntrack, firewalls and NAT -----------------------------------------------------------------

Mapping = Literal["endpoint-independent", "address-and-port-dependent"]
Filtering = Literal["endpoint-independent", "address-and-port-dependent"]
ConnKey = tuple[int, Address, Address]


@dataclass(slots=True)
class Conn:
    """One conntrack entry: ``inside`` talks to ``remote``, seen outside as ``outside``;
    ``proto`` is the upper protocol (17 UDP, 41, 135 MH, 58 ICMPv6, ...)."""

    inside: Address
    outside: Address
    remote: Address
    created: float
    expires: float
    seen_reply: bool = False
    assured: bool = False
    proto: int = NH_UDP

    def refresh(self, now: float, *, reply: bool) -> None:
        """Linux: UDP ``udp_packet`` (30 s; 120 s once replied and older than 2 s, the reply bit
        set after the refresh as the conntrack core does); ICMPv6 30 s; generic 600 s."""
        if self.proto == NH_UDP:
            if self.seen_reply and now - self.created >= UDP_STREAM_AFTER_S:
                self.expires = now + UDP_STREAM_S
                self.assured = True
            else:
                self.expires = now + UDP_UNREPLIED_S
        else:
            self.expires = now + _first_timeout(self.proto)
            if reply:
                self.assured = True
        if reply:
            self.seen_reply = True


def _first_timeout(proto: int) -> float:
    if proto == NH_UDP:
        return UDP_UNREPLIED_S
    if proto == NH_ICMPV6:
        return ICMP_TIMEOUT_S
    return GENERIC_TIMEOUT_S


class Middlebox:
    """An outbound-only stateful firewall, optionally a NAT44 (see the module docstring).

    ``egress_rules`` drop outbound packets before they create state (e.g. "UDP only to the HA").
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        nat_ip: str | None = None,
        mapping: Mapping = "endpoint-independent",
        filtering: Filtering = "address-and-port-dependent",
        egress_rules: Iterable[Rule] = (),
        name: str = "fw",
    ) -> None:
        self.rng = rng
        self.nat_ip = nat_ip
        self.mapping = mapping
        self.filtering = filtering
        self.egress_rules = list(egress_rules)
        self.name = name
        self._by_inside: dict[ConnKey, Conn] = {}
        self._by_outside: dict[ConnKey, Conn] = {}
        self.drops: Counter[str] = Counter()

    # state

    def _live(self, conn: Conn | None, now: float) -> Conn | None:
        if conn is None:
            return None
        if conn.expires <= now:
            self._by_inside.pop((conn.proto, conn.inside, conn.remote), None)
            self._by_outside.pop((conn.proto, conn.outside, conn.remote), None)
            return None
        return conn

    def connections(self, now: float, proto: int | None = NH_UDP) -> list[Conn]:
        """Live entries of ``proto`` (``None``: all)."""
        return [
            c
            for c in list(self._by_inside.values())
            if (proto is None or c.proto == proto) and self._live(c, now) is not None
        ]

    def flush(self) -> None:
        """Forget every entry (a reboot of the box, a conntrack flush)."""
        self._by_inside.clear()
        self._by_outside.clear()

    def _mapped_port(self, now: float, inside: Address) -> int | None:
        """Endpoint-independent mapping: the outside port ``inside`` already has, if any."""
        for conn in self.connections(now):
            if conn.inside == inside:
                return conn.outside[1]
        return None

    def _port_free(self, now: float, port: int) -> bool:
        return all(c.outside[1] != port for c in self.connections(now))

    def _new_outside(self, now: float, inside: Address) -> Address:
        assert self.nat_ip is not None
        if self.mapping == "endpoint-independent":
            port = self._mapped_port(now, inside)
            if port is not None:
                return (self.nat_ip, port)
            if self._port_free(now, inside[1]):
                return (self.nat_ip, inside[1])
        while True:
            port = self.rng.randrange(1024, 65536)
            if self._port_free(now, port):
                return (self.nat_ip, port)

    def _add(
        self, now: float, inside: Address, outside: Address, remote: Address, proto: int = NH_UDP
    ) -> Conn:
        conn = Conn(inside, outside, remote, now, now + _first_timeout(proto), proto=proto)
        self._by_inside[(proto, inside, remote)] = conn
        self._by_outside[(proto, outside, remote)] = conn
        return conn

    @staticmethod
    def _tuple(pkt: Packet) -> tuple[int, Address, Address] | None:
        """(protocol, source, destination) as conntrack keys it; None: invalid (dropped)."""
        if pkt.proto == "udp":
            return NH_UDP, pkt.src, pkt.dst
        if pkt.proto == "41":
            return 41, pkt.src, pkt.dst
        nh, sport, dport, mobile = native_facts(pkt.data)
        if mobile and nh in _CHECKSUMMED:
            return None
        return nh, (pkt.src[0], sport), (pkt.dst[0], dport)

    # packets

    def outbound(self, now: float, pkt: Packet) -> Packet | None:
        if any(rule(now, pkt) for rule in self.egress_rules):
            self.drops["egress_rule"] += 1
            return None
        key = self._tuple(pkt)
        if key is None:
            self.drops["invalid"] += 1
            return None
        proto, src, dst = key
        conn = self._live(self._by_inside.get((proto, src, dst)), now)
        if conn is None:
            nat = self.nat_ip is not None and proto == NH_UDP
            outside = self._new_outside(now, src) if nat else src
            conn = self._add(now, src, outside, dst, proto)
        else:
            conn.refresh(now, reply=False)
        if conn.outside == src:
            return pkt
        return Packet(conn.outside, pkt.dst, pkt.data, pkt.origin, pkt.proto)

    def inbound(self, now: float, pkt: Packet) -> Packet | None:
        key = self._tuple(pkt)
        if key is None:
            self.drops["invalid"] += 1
            return None
        proto, src, dst = key
        conn = self._live(self._by_outside.get((proto, dst, src)), now)
        if (
            conn is None
            and proto == NH_UDP
            and self.nat_ip is not None
            and self.filtering == "endpoint-independent"
        ):
            inside = self._inside_of(now, dst)
            if inside is not None:  # full cone: anyone may use an existing mapping
                conn = self._add(now, inside, dst, src)
        if conn is None:
            self.drops["no_state"] += 1
            return None
        conn.refresh(now, reply=True)
        if conn.inside == dst:
            return pkt
        return Packet(pkt.src, conn.inside, pkt.data, pkt.origin, pkt.proto)

    def _inside_of(self, now: float, outside: Address) -> Address | None:
        for conn in self.connections(now):
            if conn.outside == outside:
                return conn.inside
        return None

    # inspection without side effects (UDP)

    def peek_outbound(self, now: float, src: Address, dst: Address) -> Address | None:
        conn = self._by_inside.get((NH_UDP, src, dst))
        if conn is not None and conn.expires > now:
            return conn.outside
        if self.nat_ip is None:
            return src
        return None

    def peek_inbound(self, now: float, src: Address, dst: Address) -> Address | None:
        conn = self._by_outside.get((NH_UDP, dst, src))
        if conn is not None and conn.expires > now:
            return conn.inside
        return None


def stateful_firewall(rng: random.Random, *, egress_rules: Iterable[Rule] = ()) -> Middlebox:
    """Outbound-only: inbound only on a conntrack entry an inside host created."""
    return Middlebox(rng, egress_rules=egress_rules, name="fw")


def nat44(
    rng: random.Random,
    external_ip: str,
    *,
    mapping: Mapping = "endpoint-independent",
    filtering: Filtering = "address-and-port-dependent",
) -> Middlebox:
    return Middlebox(rng, nat_ip=external_ip, mapping=mapping, filtering=filtering, name="nat")


def udp_only_to(allowed_ips: Iterable[str]) -> Rule:
    """Egress rule: drop every UDP datagram whose destination is not one of ``allowed_ips``."""
    allowed = frozenset(allowed_ips)

    def rule(now: float, pkt: Packet) -> bool:
        return pkt.proto == "udp" and pkt.dst[0] not in allowed

    return rule


# -- the network ----------------------------------------------------------------------------------


class Endpoint:
    """Something attached to the network: receives packets, may have a timer.

    Compared by identity (the network caches timers per endpoint)."""

    name: str = "?"

    def receive(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        raise NotImplementedError

    def receive_packet(self, now: float, pkt: Packet) -> None:
        self.receive(now, pkt.dst, pkt.src, pkt.data)

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


@dataclass
class Site:
    name: str
    link: LinkProfile = field(default_factory=LinkProfile)
    v4: Middlebox | None = None
    v6: Middlebox | None = None
    hosts: dict[str, Endpoint] = field(default_factory=dict)

    def middlebox(self, ip: str) -> Middlebox | None:
        return self.v6 if family(ip) == 6 else self.v4


class SimNet:
    """Sites, their middleboxes, a core with drop rules, endpoints, one virtual clock."""

    def __init__(self, seed: int, *, core: LinkProfile | None = None, start: float = 0.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = start
        self.core = core or LinkProfile(latency_s=0.010)
        self.sites: dict[str, Site] = {}
        self.rules: list[Rule] = []
        self.endpoints: list[Endpoint] = []
        self.stats: Counter[str] = Counter()
        self.violations: list[str] = []
        self._site_of_ip: dict[str, Site] = {}  # where an inside address lives
        self._public: dict[str, Site] = {}  # routable address -> site (host or NAT outside)
        self._heap: list[tuple[float, int, Callable[[], object], bool]] = []
        self._timer_cache: dict[Endpoint, float | None] = {}
        self._dirty: set[Endpoint] = set()
        self._seq = itertools.count()

    # topology

    def add_site(self, site: Site) -> Site:
        self.sites[site.name] = site
        for box in (site.v4, site.v6):
            if box is not None and box.nat_ip is not None:
                self._public[box.nat_ip] = site
        return site

    def add_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint not in self.endpoints:
            self.endpoints.append(endpoint)
            # Timers are handled in the order endpoints joined (a set's order would follow
            # id() hashes and make a seed replay differently from one run to the next).
            self._timer_cache[endpoint] = None
            self._dirty.add(endpoint)

    def attach(self, site: Site, ip: str, endpoint: Endpoint) -> None:
        ip = str(ip_address(ip))
        site.hosts[ip] = endpoint
        self._site_of_ip[ip] = site
        box = site.middlebox(ip)
        if box is None or box.nat_ip is None:
            self._public[ip] = site
        self.add_endpoint(endpoint)

    def detach(self, ip: str) -> None:
        site = self._site_of_ip.pop(ip, None)
        if site is not None:
            site.hosts.pop(ip, None)
            if self._public.get(ip) is site:
                del self._public[ip]

    def owner(self, ip: str) -> Endpoint | None:
        site = self._site_of_ip.get(ip)
        return None if site is None else site.hosts.get(ip)

    def site_of(self, ip: str) -> Site | None:
        return self._site_of_ip.get(ip)

    # scheduling

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action`` (a scripted event: it may touch any endpoint) at ``when``."""
        heapq.heappush(self._heap, (when, next(self._seq), action, True))

    def _hop(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action, False))

    def touch(self, endpoint: Endpoint) -> None:
        """``endpoint``'s timer may have changed (asked again before the next step)."""
        self._dirty.add(endpoint)

    def run_until(self, t: float) -> None:
        """Advance to ``t``: deliveries, scheduled actions and endpoint timers, in time order.

        Endpoint timers are cached and asked again only after the endpoint was touched (a
        delivery, its timer, a scheduled action); an endpoint whose timer stays due without
        anything happening would spin, which fails the run (a timer contract violation).
        """
        cache = self._timer_cache
        dirty = self._dirty
        dirty.update(self.endpoints)
        same_instant = 0
        while True:
            for endpoint in dirty:
                cache[endpoint] = endpoint.get_timer()
            dirty.clear()
            nxt = self._heap[0][0] if self._heap else None
            for tm in cache.values():
                if tm is not None and (nxt is None or tm < nxt):
                    nxt = tm
            if nxt is None or nxt > t:
                self.now = max(self.now, t)
                return
            if nxt <= self.now:
                same_instant += 1
                if same_instant > MAX_STEPS_AT_ONE_INSTANT:
                    raise AssertionError(f"seed {self.seed}: no progress at t={self.now!r}")
            else:
                same_instant = 0
                self.now = nxt
            while self._heap and self._heap[0][0] <= self.now:
                _, _, action, scripted = heapq.heappop(self._heap)
                action()
                if scripted:
                    dirty.update(self.endpoints)
            for endpoint, tm in list(cache.items()):
                if tm is not None and tm <= self.now:
                    endpoint.handle_timer(self.now)
                    dirty.add(endpoint)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # packets

    def send(
        self, origin: Endpoint, src: Address, dst: Address, data: bytes, proto: Proto = "udp"
    ) -> None:
        """``origin`` sends ``data`` from ``src`` (one of its addresses) to ``dst``."""
        site = self._site_of_ip.get(src[0])
        if site is None or site.hosts.get(src[0]) is not origin:
            self.violations.append(f"{self.now:.3f} {origin.name} sent from {src}, not its own")
            return
        self.stats["sent"] += 1
        pkt = Packet(src, dst, data, origin.name, proto)
        if dst[0] in site.hosts:  # same access network
            self._cross(site.link, partial(self._deliver, pkt))
            return
        self._cross(site.link, partial(self._egress, site, pkt))

    def _cross(self, link: LinkProfile, action: Callable[[], None]) -> None:
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            self.stats["lost"] += 1
            return
        copies = 2 if link.duplicate and rng.random() < link.duplicate else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            delay = link.latency_s
            if link.jitter_s:
                delay += rng.uniform(0.0, link.jitter_s)
            if link.reorder and rng.random() < link.reorder:
                delay += rng.uniform(0.0, link.reorder_extra_s)
                self.stats["reordered"] += 1
            self._hop(self.now + delay, action)

    def _egress(self, site: Site, pkt: Packet) -> None:
        box = site.middlebox(pkt.src[0])
        out = pkt if box is None else box.outbound(self.now, pkt)
        if out is None:
            self.stats["dropped_middlebox"] += 1
            return
        if any(rule(self.now, out) for rule in self.rules):
            self.stats["dropped_rule"] += 1
            return
        self._cross(self.core, partial(self._ingress, out))

    def _ingress(self, pkt: Packet) -> None:
        site = self._public.get(pkt.dst[0])
        if site is None:
            self.stats["dropped_no_route"] += 1
            return
        box = site.middlebox(pkt.dst[0])
        inside = pkt if box is None else box.inbound(self.now, pkt)
        if inside is None:
            self.stats["dropped_middlebox"] += 1
            return
        self._cross(site.link, partial(self._deliver, inside))

    def _deliver(self, pkt: Packet) -> None:
        endpoint = self.owner(pkt.dst[0])
        if endpoint is None:
            self.stats["dropped_no_host"] += 1
            return
        self.stats["delivered"] += 1
        self._dirty.add(endpoint)
        endpoint.receive_packet(self.now, pkt)

    # inspection

    def translate(self, src: Address, dst: Address) -> tuple[Address, Address] | None:
        """How a UDP datagram from ``src`` to ``dst`` would arrive now, as (seen source, local
        destination), from the middleboxes' current state; ``None``: it would not."""
        site = self._site_of_ip.get(src[0])
        if site is None:
            return None
        if dst[0] in site.hosts:
            return src, dst
        box = site.middlebox(src[0])
        seen = src if box is None else box.peek_outbound(self.now, src, dst)
        if seen is None:
            return None
        far = self._public.get(dst[0])
        if far is None:
            return None
        box = far.middlebox(dst[0])
        local = dst if box is None else box.peek_inbound(self.now, seen, dst)
        if local is None:
            return None
        return seen, local


# -- wire readings (STUN, offers and answers) ------------------------------------------------------


def _stun_attribute(data: bytes, attr_type: int) -> bytes | None:
    i = 20
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    while i + 4 <= end:
        kind = int.from_bytes(data[i : i + 2], "big")
        size = int.from_bytes(data[i + 2 : i + 4], "big")
        if kind == attr_type:
            return data[i + 4 : i + 4 + size]
        i += 4 + ((size + 3) & ~3)
    return None


def is_stun(data: bytes) -> bool:
    return len(data) >= 20 and data[0] < 4 and data[4:8] == _STUN_COOKIE


def stun_username(data: bytes) -> str | None:
    value = _stun_attribute(data, 0x0006)
    return None if value is None else value.decode(errors="replace")


def stun_role(data: bytes) -> bool | None:
    """True: a check sent as ICE-CONTROLLING, False: ICE-CONTROLLED, None: neither."""
    if _stun_attribute(data, 0x802A) is not None:
        return True
    if _stun_attribute(data, 0x8029) is not None:
        return False
    return None


def signed_with(data: bytes, password: str) -> bool:
    """MESSAGE-INTEGRITY (24) then FINGERPRINT (8) end every answer the agents build."""
    if len(data) < 52 or data[-32:-28] != b"\x00\x08\x00\x14":
        return False
    return aioice_stun.message_integrity(data[:-32], password.encode()) == data[-28:-8]


def description_of(packet: bytes) -> tuple[IPv6Address, IPv6Address, mice.Credentials] | None:
    """(source, destination, credentials) of an offer or answer (MH 11 with M-ICE TLVs)."""
    if len(packet) < 46 or packet[6] != NH_MH or packet[42] != MhType.EXPERIMENTAL:
        return None
    src, dst = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
    plen = int.from_bytes(packet[4:6], "big")
    try:
        msg = decode_mh_untrusted(packet[40 : 40 + plen], src, dst)
        if not isinstance(msg, ExperimentalMessage):
            return None
        items = mice.mice_from_options_untrusted(msg.options)
    except BadPacket:
        return None
    creds = next((i for i in items if isinstance(i, mice.Credentials)), None)
    return None if creds is None else (src, dst, creds)


def echo_reply_of(request: bytes) -> bytes:
    """The kernel's answer to an ICMPv6 echo request without extension headers."""
    body = bytearray(request[40:])
    body[0] = ICMPV6_ECHO_REPLY
    body[2:4] = b"\0\0"
    src, dst = request[24:40], request[8:24]
    csum = upper_layer_checksum(src, dst, NH_ICMPV6, bytes(body))
    body[2:4] = csum.to_bytes(2, "big")
    return request[:8] + src + dst + bytes(body)


# -- sessions: what one node sees of one peer -----------------------------------------------------

PathView = tuple[Address, Address] | None  # (local base, remote address) of the pair, None = T


@dataclass
class Session:
    """One node's view of one peer: read from the wire and from the core, never kept by the
    test in its stead. ``path_log``: (time, D-udp pair or None, "start" | "selected" | "lost")
    from the node's forwarding events; ``check_times``: every D-udp request it sent to the
    peer; ``validated``: 5-tuple -> last two-way authenticated exchange seen on the wire."""

    host: NodeHost = field(repr=False)
    peer: str
    path_log: list[tuple[float, PathView, str]] = field(default_factory=list)
    check_times: list[float] = field(default_factory=list, repr=False)
    validated: dict[tuple[Address, Address], float] = field(default_factory=dict, repr=False)
    peer_passwords: set[str] = field(default_factory=set)
    local_ufrags: list[str] = field(default_factory=list)  # in the order advertised
    generations: list[float] = field(default_factory=list)  # when each one was first sent
    roles: list[tuple[float, bool]] = field(default_factory=list)  # role changes in our checks
    offers_sent: int = 0  # descriptions (offers or answers) sent to the peer
    descriptions_received: int = 0
    first_sent_at: float | None = None
    first_received_at: float | None = None
    data_direct: int = 0  # data sent on D-udp
    data_native: int = 0  # data sent D-native
    data_t: int = 0  # data sent through the home agent
    data_received: int = 0  # data received on the selected D-udp pair
    data_received_native: int = 0
    data_received_t: int = 0
    rx_times: list[float] = field(default_factory=list, repr=False)  # every data arrival
    losses: list[tuple[float, PathView, str]] = field(default_factory=list)  # (t, pair, why)

    @property
    def started(self) -> bool:
        return bool(self.path_log)

    @property
    def peer_address(self) -> IPv6Address:
        return IPv6Address(self.peer)

    @property
    def generation(self) -> int:
        """How many ICE generations (distinct credentials) we advertised to the peer."""
        return len(self.local_ufrags)

    @property
    def offered_first(self) -> bool:
        """We sent a description before we received one (an offer, not an answer)."""
        sent, got = self.first_sent_at, self.first_received_at
        return sent is not None and (got is None or sent < got)

    @property
    def controlling(self) -> bool | None:
        """Our ICE role as our latest check on the wire carried it."""
        return self.roles[-1][1] if self.roles else None

    def selected(self) -> CandidatePair | None:
        return self.host.selected(self.peer_address)

    def path(self) -> PathView:
        pair = self.selected()
        return None if pair is None else (pair.local.base, pair.remote.address)

    def pairs(self) -> list[CandidatePair]:
        return self.host.direct_pairs(self.peer_address)

    def agent_statistics(self) -> dict[str, int]:
        return self.host.agent_statistics(self.peer_address)

    def changes(self) -> list[Change]:
        return self.host.direct_changes(self.peer_address)

    def log_path(self, now: float, path: PathView) -> None:
        last = next((p for _, p, r in reversed(self.path_log) if r != "start"), None)
        if path != last:
            self.path_log.append((now, path, "selected" if path is not None else "lost"))
            if path is None:
                changes = self.changes()
                why = changes[-1].reason if changes and changes[-1].new is None else "?"
                self.losses.append((now, last, why))

    def pair_events(self) -> list[tuple[float, PathView, str]]:
        """(time, pair, "selected" | "died"): selections, and deaths by timeout (what flap
        damping counts), from the forwarding events and the engine's change reasons."""
        deaths = {(t, p) for t, p, why in self.losses if why.endswith("(timeout)")}
        out: list[tuple[float, PathView, str]] = []
        for t, path, reason in self.path_log:
            if reason == "selected":
                out.append((t, path, "selected"))
        out += [(t, p, "died") for t, p in deaths]
        out += [(t, None, "restart") for t in self.generations[1:]]  # a new agent, no history
        return sorted(out, key=lambda e: (e[0], e[2] == "selected"))

    def damped_until(self, config: IceConfig = ICE) -> float:
        """The latest time flap damping lets this agent take a pair back: the end of a
        hold-down plus one re-probe period (``reprobe_interval_s`` * (1 + jitter)); 0.0 when
        nothing was held down."""
        reprobe = config.reprobe_interval_s * (1 + config.reprobe_jitter)
        held = hold_downs(self.pair_events(), config)
        return max((until + reprobe for _, _, until in held), default=0.0)


@dataclass
class Flow:
    """``dst`` gets one small UDP packet every ``interval_s`` from ``start`` until ``until``."""

    dst: str
    interval_s: float
    next_at: float
    until: float = float("inf")


class NodeHost(Endpoint):
    """What the MN, CN and HA drivers share here: addresses, flows, oracles, counters."""

    def __init__(self, net: SimNet, name: str) -> None:
        self.name = name
        self.net = net
        self.rng = random.Random(net.rng.getrandbits(64))
        self.sessions: dict[str, Session] = {}
        self.flows: list[Flow] = []
        self.stats: Counter[str] = Counter()
        self.notices: list[tuple[float, str, str]] = []
        self._requests: dict[bytes, tuple[str, Address, Address]] = {}  # txid -> peer, 5-tuple
        self._ufrag_peer: dict[str, str] = {}  # our ufrag -> the peer we advertised it to
        self._data: dict[tuple[str, str], bytes] = {}
        self.identity = ""

    # the peer view

    def session(self, peer: str, *, create: bool = False) -> Session | None:
        """Everything we saw of ``peer`` (data counters from the first packet on)."""
        s = self.sessions.get(peer)
        if s is None and create:
            s = self.sessions[peer] = Session(self, peer)
        return s

    def ice_session(self, peer: str) -> Session | None:
        """Our session with ``peer`` once ICE started: an offer or answer went either way."""
        s = self.sessions.get(peer)
        return s if s is not None and s.started else None

    def _ice_started(self, now: float, peer: str) -> Session:
        s = self.session(peer, create=True)
        assert s is not None
        if not s.started:
            s.path_log.append((now, None, "start"))
        return s

    def selected(self, peer: IPv6Address) -> CandidatePair | None:
        raise NotImplementedError

    def direct_pairs(self, peer: IPv6Address) -> list[CandidatePair]:
        raise NotImplementedError

    def agent_statistics(self, peer: IPv6Address) -> dict[str, int]:
        raise NotImplementedError

    def direct_changes(self, peer: IPv6Address) -> list[Change]:
        raise NotImplementedError

    # flows

    def start_flow(self, dst: str, *, interval_s: float, at: float, until: float = 1e18) -> Flow:
        flow = Flow(str(ip_address(dst)), interval_s, at, until)
        self.flows.append(flow)
        self.net.touch(self)
        return flow

    def _flows_due(self) -> float | None:
        return min((f.next_at for f in self.flows if f.next_at <= f.until), default=None)

    def _run_flows(self, now: float) -> None:
        for flow in self.flows:
            if flow.next_at <= now and flow.next_at <= flow.until:
                flow.next_at = max(flow.next_at + flow.interval_s, now)
                self.send_data(now, flow.dst)

    def send_data(self, now: float, dst: str) -> None:
        raise NotImplementedError

    def _data_packet(self, src: str, dst: str) -> bytes:
        pkt = self._data.get((src, dst))
        if pkt is None:
            pkt = udp_in_ipv6(
                IPv6Address(src), IPv6Address(dst), DATA_PORT, DATA_PORT, b"simnet data"
            )
            self._data[(src, dst)] = pkt
        return pkt

    # the oracle, from the wire

    def _saw_description_sent(self, now: float, packet: bytes) -> None:
        found = description_of(packet)
        if found is None:
            return
        _, dst, creds = found
        s = self._ice_started(now, str(dst))
        s.offers_sent += 1
        if s.first_sent_at is None:
            s.first_sent_at = now
        if creds.ufrag not in s.local_ufrags:
            s.local_ufrags.append(creds.ufrag)
            s.generations.append(now)
        self._ufrag_peer[creds.ufrag] = s.peer

    def _saw_description_received(self, now: float, packet: bytes) -> None:
        found = description_of(packet)
        if found is None:
            return
        src, _, creds = found
        s = self._ice_started(now, str(src))
        s.descriptions_received += 1
        if s.first_received_at is None:
            s.first_received_at = now
        s.peer_passwords.add(creds.password)

    def _saw_request(self, now: float, data: bytes, local: Address, remote: Address) -> None:
        """A D-udp STUN request of ours leaving ``local`` for ``remote``."""
        if len(data) < 20 or data[0:2] != b"\x00\x01":
            return
        username = stun_username(data) or ""
        peer = self._ufrag_peer.get(username.partition(":")[2])
        if peer is None:
            self.stats["check_for_unknown_peer"] += 1
            return
        s = self.sessions[peer]
        self._requests[data[8:20]] = (peer, local, remote)
        s.check_times.append(now)
        role = stun_role(data)
        if role is not None and (not s.roles or s.roles[-1][1] != role):
            s.roles.append((now, role))
        while len(self._requests) > 4096:
            self._requests.pop(next(iter(self._requests)))

    def _saw_response(self, now: float, data: bytes, local: Address, remote: Address) -> None:
        """A Binding success from ``remote`` to ``local`` answering one of our checks on that
        5-tuple and signed with a password the peer advertised validates the 5-tuple."""
        if len(data) < 52 or data[0:2] != b"\x01\x01":
            return
        sent = self._requests.get(data[8:20])
        if sent is None or sent[1:] != (local, remote):
            return
        s = self.sessions[sent[0]]
        if any(signed_with(data, pw) for pw in s.peer_passwords):
            s.validated[(local, remote)] = now

    def _check_validated(self, now: float, s: Session, key: tuple[Address, Address]) -> None:
        checked = s.validated.get(key)
        if checked is None or now - checked >= DEAD_AFTER_S:
            self.net.violations.append(
                f"{now:.3f} {self.name}: data on {key}, last two-way check {checked}"
            )

    def _count_rx(self, now: float, peer: str, kind: str) -> None:
        s = self.session(peer, create=True)
        assert s is not None
        s.rx_times.append(now)
        if kind == "D-udp":
            s.data_received += 1
        elif kind == "D-native":
            s.data_received_native += 1
        else:
            s.data_received_t += 1


# -- the home agent -------------------------------------------------------------------------------

HA_IP6 = "2001:db8:ffff::1"
HA_IP4 = "198.51.100.1"
HOME_PREFIX = IPv6Network("2001:db8:aaaa::/64")
HOA_MN = "2001:db8:aaaa::1"
HOA_PEER = "2001:db8:aaaa::2"
KEYS = {HOA_MN: (301, b"m" * 20), HOA_PEER: (302, b"p" * 20)}


class HomeAgentHost(NodeHost):
    """``HomeAgentNode`` and what the HA daemon does around it: UDP ports and protocol 41 in,
    the ingress filter (an inner source is forwarded only when bound on the via it came on,
    else the core hears of it), reverse-tunnelled packets out natively, packets to a bound home
    address into its tunnel, the persisted cache (:meth:`restart`)."""

    def __init__(
        self,
        net: SimNet,
        site: Site,
        *,
        ip6: str = HA_IP6,
        ip4: str = HA_IP4,
        hoas: Iterable[str] = (HOA_MN, HOA_PEER),
        ports: tuple[int, ...] = (HA_PORT,),
    ) -> None:
        super().__init__(net, "ha")
        self.ip6 = str(ip_address(ip6))
        self.ip4 = str(ip_address(ip4))
        self.hoas = [str(ip_address(h)) for h in hoas]
        self.ports = ports
        self._hoa_text = {IPv6Address(h).packed: h for h in self.hoas}
        self._hoas = frozenset(self.hoas)
        self._ha6_packed = IPv6Address(self.ip6).packed
        self.up = True
        self.node = self._new_node()
        self.routes: dict[bytes, Via] = {}  # the driver's table from HaForwardingChanged
        self.binding_log: list[tuple[float, str, Via | None]] = []
        self.restarts = 0
        self.identity = self.ip6
        for ip in (self.ip6, self.ip4, *self.hoas):
            net.attach(site, ip, self)

    def _new_node(self) -> HomeAgentNode:
        sas = tuple(
            SecurityAssociation(KEYS[h][0], KEYS[h][1], IPv6Address(h))
            for h in self.hoas
            if h in KEYS
        )
        return HomeAgentNode(
            HaCoreConfig(
                address=IPv6Address(self.ip6),
                home_prefix=HOME_PREFIX,
                security_associations=sas,
                max_lifetime_s=600,
                refresh_requests=True,
            ),
            wall_offset=WALL_OFFSET,
        )

    # inspection

    def via(self, hoa: str) -> Via | None:
        """The via the driver sends ``hoa``'s packets on (and accepts them from)."""
        return self.routes.get(IPv6Address(hoa).packed)

    def binding(self, hoa: str) -> object:
        return self.node.core.binding_for(IPv6Address(hoa))

    def address(self, fam: int) -> Address:
        return (self.ip6, self.ports[0]) if fam == 6 else (self.ip4, self.ports[0])

    # restart

    def restart(self, *, down_s: float, keep_cache: bool) -> None:
        """The daemon dies now and starts ``down_s`` later, with the cache it persisted after
        every change (``export_state``; restored with ``restore``) or without one."""
        state = self.node.core.export_state() if keep_cache else None
        self.up = False
        self.routes.clear()
        self.restarts += 1
        self.net.touch(self)

        def back() -> None:
            now = self.net.now
            self.node = self._new_node()
            self.up = True
            if state is not None:
                self.stats["restored"] += self.node.core.restore(now, state)
            self._drain(now)

        self.net.at(self.net.now + down_s, back)

    # the five verbs, driven

    def get_timer(self) -> float | None:
        return self.node.get_timer() if self.up else None

    def handle_timer(self, now: float) -> None:
        if not self.up:
            return
        t = self.node.get_timer()
        if t is not None and t <= now:
            self.node.handle_timer(now)
        self._drain(now)

    def receive_packet(self, now: float, pkt: Packet) -> None:
        if not self.up:
            self.stats["dropped_down"] += 1
            return
        if pkt.dst[0] in self._hoas:
            if pkt.proto == "ip6":
                self._to_home_address(pkt.data)
            else:  # a UDP datagram for a home address: someone used a relayed candidate
                self.stats["unexpected"] += 1
            return
        if pkt.proto == "41":
            self._tunnel(now, pkt.data, Via("T-native", (pkt.src[0],)))
        elif pkt.proto == "udp" and pkt.dst[1] in self.ports:
            data = pkt.data
            if data[:1] and data[0] >> 4 == 6:
                self._tunnel(now, data, Via("T-udp", pkt.src, local_port=pkt.dst[1]))
            else:
                self.node.receive_udp(now, data, pkt.dst[1], pkt.src)
        else:
            self.stats["drop_other"] += 1
        self._drain(now)

    def _tunnel(self, now: float, inner: bytes, via: Via) -> None:
        if len(inner) < 40:
            self.stats["drop_short"] += 1
            return
        if inner[24:40] == self._ha6_packed and inner[6] in (NH_MH, NH_UDP):
            self.node.receive_tunnelled(now, inner, via)
        elif self.routes.get(inner[8:24]) == via:
            self._forward(inner)
        else:
            self.node.unbound_traffic(now, inner, via)

    def _forward(self, inner: bytes) -> None:
        """Reverse-tunnelled, past the ingress filter: out natively from the home address."""
        src = self._hoa_text.get(inner[8:24])
        if src is None:
            self.stats["drop_not_a_home_address"] += 1
            return
        if inner[24:40] == self._ha6_packed:
            self._kernel(inner)
            return
        dst = str(IPv6Address(inner[24:40]))
        self.stats["forwarded"] += 1
        if len(inner) > 42 and inner[6] == NH_MH and inner[42] == MhType.EXPERIMENTAL:
            self.stats["forwarded_offers"] += 1
        self.net.send(self, (src, 0), (dst, 0), inner, "ip6")

    def _kernel(self, packet: bytes) -> None:
        """A reverse-tunnelled packet for the HA itself that is not the core's: the kernel
        answers echo requests (the MN's keepalives); the answer goes into the tunnel."""
        if packet[6] == NH_ICMPV6 and len(packet) >= 48 and packet[40] == ICMPV6_ECHO_REQUEST:
            self.stats["echo_answered"] += 1
            self._to_home_address(echo_reply_of(packet))
        else:
            self.stats["drop_for_ha"] += 1

    def _to_home_address(self, packet: bytes) -> None:
        via = self.routes.get(packet[24:40])
        if via is None:
            self.stats["drop_unbound"] += 1
            return
        self.stats["tunnelled"] += 1
        self._send_via(via, packet)

    def _send_via(self, via: Via, packet: bytes) -> None:
        if via.kind == "T-native":
            self.net.send(self, (self.ip6, 0), (str(via.remote[0]), 0), packet, "41")
            return
        remote = (str(via.remote[0]), int(via.remote[1]))
        ha = self.ip6 if family(remote[0]) == 6 else self.ip4
        self.net.send(self, (ha, via.local_port or self.ports[0]), remote, packet, "udp")

    def _drain(self, now: float) -> None:
        for out in self.node.datagrams_to_send(now):
            if isinstance(out, SendVia):
                self._send_via(out.via, out.packet)
            elif isinstance(out, SendFromPort):
                ha = self.ip6 if family(out.remote[0]) == 6 else self.ip4
                self.net.send(self, (ha, out.port), out.remote, out.payload, "udp")
        while (event := self.node.next_event()) is not None:
            assert isinstance(event, HaForwardingChanged)
            hoa = event.home_address.packed
            if event.via is None:
                self.routes.pop(hoa, None)
            else:
                self.routes[hoa] = event.via
            self.binding_log.append((now, str(event.home_address), event.via))


# -- the mobile node ------------------------------------------------------------------------------


class MobileHost(NodeHost):
    """``MobileNode`` and what the MN daemon does around it (mipnode/drivers/mn_daemon.py): the
    forwarding table (``ForwardingChanged``: per destination the routes to try, and the default
    route), misses reported with ``new_destination``, destinations that carried direct data
    reported every second with ``traffic_seen``, tunnelled data delivered straight to the TUN
    (the rest to the core), D-udp data accepted only from the selected pair, the tap on the
    care-of address (fast path for proven D-native data), and sockets per access network that
    close at ``AccessRetired``."""

    def __init__(
        self,
        net: SimNet,
        name: str,
        *,
        ha: HomeAgentHost,
        hoa: str,
        port: int = MN_PORT,
    ) -> None:
        super().__init__(net, name)
        self.ha = ha
        self.hoa = str(ip_address(hoa))
        self.identity = self.hoa
        self.hoa_packed = IPv6Address(self.hoa).packed
        self.port = port
        self.config = MobileNodeConfig(
            home_address=IPv6Address(self.hoa),
            home_agent=IPv6Address(ha.ip6),
            spi=KEYS[self.hoa][0],
            key=KEYS[self.hoa][1],
            home_agent_ipv4=IPv4Address(ha.ip4),
            home_agent_ports=ha.ports,
        )
        self._ha_ips = {ha.ip6, ha.ip4}
        self.ha_packed = IPv6Address(ha.ip6).packed
        self._ha_ports = set(ha.ports)
        self.node: MobileNode | None = None
        self.access: Access | None = None
        self.accesses: list[tuple[Access, Site]] = []  # open sockets (current last)
        self.retired: list[tuple[float, Access]] = []
        self.table: dict[bytes, tuple[Route, ...]] = {}
        self.default: Route | None = None
        self.default_log: list[tuple[float, Route | None]] = []
        self.home_log: list[Change] = []  # MobileNode.home_changes, followed
        self._home_seen: Change | None = None
        # (time, home pair key or None) whenever HomePath.selected() changes
        self.home_selected_log: list[tuple[float, tuple[Address, Address] | None]] = []
        self._used: set[bytes] = set()
        self._reported_at = -1e9
        self._misses: list[bytes] = []
        self._text: dict[bytes, str] = {}
        self._held: set[str] = set()
        self.restarts = 0

    # addresses and access networks

    @property
    def hosts(self) -> list[Address]:
        """Our UDP sockets (the current access network's first)."""
        out: list[Address] = []
        for access, _ in reversed(self.accesses):
            out += [a for a in access.udp_sockets if a not in out]
        return out

    def held_ips(self) -> set[str]:
        return self._held

    def outside_ips(self) -> set[str]:
        """Our addresses as the core sees them: ours, or our NAT's outside address."""
        out = set()
        for access, site in self.accesses:
            for ip in _ips(access):
                box = site.middlebox(ip)
                out.add(box.nat_ip if box is not None and box.nat_ip is not None else ip)
        return out

    def srflx(self) -> dict[Address, Address]:
        """base -> the address the home agent saw (the home path's T-udp answers)."""
        node = self._core()
        if node.home is None:
            return {}
        return {
            pair.local: node.home.mapped[key]
            for key, pair in node.home.pairs.items()
            if pair.kind == "T-udp" and key in node.home.mapped
        }

    def _access_for(self, site: Site, ips: Iterable[str]) -> Access:
        v6 = v4 = None
        for ip in ips:
            if family(ip) == 6:
                v6 = IPv6Address(ip)
            else:
                v4 = IPv4Address(ip)
        name = f"eth{len(self.accesses) + len(self.retired)}"
        return Access(name, v6, v4, self.port if v6 else None, self.port if v4 else None)

    def attach(self, site: Site, *ips: str) -> None:
        """Plug into ``site`` with addresses ``ips`` (before :meth:`start`)."""
        access = self._access_for(site, ips)
        for ip in _ips(access):
            self.net.attach(site, ip, self)
        self.accesses.append((access, site))
        self._held = {ip for a, _ in self.accesses for ip in _ips(a)}
        self.access = access

    def start(self, now: float) -> None:
        self.node = MobileNode(
            self.config, now=now, random_bytes=self.rng.randbytes, wall_offset=WALL_OFFSET
        )
        assert self.access is not None
        self.node.set_access(now, self.access)
        self._drain(now)

    def restart(self, now: float) -> None:
        """The daemon starts again: a new core (no state), the same home address and access
        network; the driver's table starts empty."""
        for s in self.sessions.values():
            if s.started:
                s.log_path(now, None)
        self.table.clear()
        self.default = None
        self.default_log.append((now, None))
        self._home_seen = None
        if self.home_selected_log and self.home_selected_log[-1][1] is not None:
            self.home_selected_log.append((now, None))
        self.restarts += 1
        self.start(now)
        self.net.touch(self)

    def move(self, site: Site, *ips: str, make_before_break: bool = True) -> None:
        """Move to ``site`` with new addresses ``ips``. Make-before-break: the old access
        network's sockets stay until the core retires them; break-before-make: they are gone
        before the core hears of the new one."""
        now = self.net.now
        new = self._access_for(site, ips)
        if not make_before_break:
            for access, _ in list(self.accesses):
                self._close(now, access)
        for ip in _ips(new):
            self.net.attach(site, ip, self)
        self.accesses.append((new, site))
        self._held = {ip for a, _ in self.accesses for ip in _ips(a)}
        self.access = new
        self._core().set_access(now, new)
        self._drain(now)
        self.net.touch(self)

    def _close(self, now: float, access: Access) -> None:
        if all(a != access for a, _ in self.accesses):
            return  # closed already (break-before-make)
        self.accesses = [(a, s) for a, s in self.accesses if a != access]
        self._held = {ip for a, _ in self.accesses for ip in _ips(a)}
        for ip in _ips(access):
            if ip not in self._held:
                self.net.detach(ip)
        self.retired.append((now, access))

    # inspection of the core

    def _core(self) -> MobileNode:
        assert self.node is not None, "not started"
        return self.node

    def selected(self, peer: IPv6Address) -> CandidatePair | None:
        direct = self._core().direct
        return None if direct is None else direct.selected(peer)

    def direct_pairs(self, peer: IPv6Address) -> list[CandidatePair]:
        direct = self._core().direct
        return [] if direct is None else direct.pairs(peer)

    def agent_statistics(self, peer: IPv6Address) -> dict[str, int]:
        direct = self._core().direct
        return {} if direct is None else direct.agent_statistics(peer)

    def direct_changes(self, peer: IPv6Address) -> list[Change]:
        direct = self._core().direct
        return [] if direct is None else direct.changes(peer)

    def direct_statistics(self) -> dict[str, int]:
        direct = self._core().direct
        return {} if direct is None else direct.statistics()

    def home_kind(self) -> str | None:
        pair = self._core().home_pair
        return None if pair is None else f"{pair.kind}/{pair.family}"

    def home_selections(self) -> list[tuple[float, tuple[Address, Address]]]:
        """Every selection of the home check list (time, pair key), from ``HomePath.selected``."""
        return [(t, k) for t, k in self.home_selected_log if k is not None]

    @property
    def registered(self) -> bool:
        return self.node is not None and self.node.state == "registered"

    # the five verbs, driven

    def get_timer(self) -> float | None:
        if self.node is None:
            return None
        core = self.node.get_timer()
        flows = self._flows_due()
        if core is None:
            return flows
        return core if flows is None or core < flows else flows

    def handle_timer(self, now: float) -> None:
        node = self._core()
        t = node.get_timer()
        if t is not None and t <= now:
            node.handle_timer(now)
        self._run_flows(now)
        self._after_batch(now)

    def receive_packet(self, now: float, pkt: Packet) -> None:
        if self.node is None or pkt.dst[0] not in self.held_ips():
            self.stats["drop_not_ours"] += 1
            return
        data = pkt.data
        if pkt.proto == "41":
            if pkt.src[0] in self._ha_ips:
                self._from_home(now, data, (pkt.dst[0], 0), (pkt.src[0], 0))
            else:
                self.stats["drop_41_not_from_ha"] += 1
        elif pkt.proto == "udp":
            self._udp(now, data, pkt.dst, pkt.src)
        else:
            self._from_tap(now, data)
        self._after_batch(now)

    def _udp(self, now: float, data: bytes, local: Address, remote: Address) -> None:
        if data[:1] and data[0] >> 4 == 6 and len(data) >= 40:
            if remote[0] in self._ha_ips and remote[1] in self._ha_ports:
                self._from_home(now, data, local, remote)
                return
            routes = self.table.get(data[8:24])
            way = next((r for r in routes or () if r.kind == "D-udp"), None)
            if way is None or way.remote != remote or data[24:40] != self.hoa_packed:
                self.stats["drop_direct_not_from_selected_pair"] += 1
                return
            self._count_rx(now, self._ip(data[8:24]), "D-udp")
            return
        if not is_stun(data):
            self.stats["drop_udp_not_stun"] += 1
            return
        self._saw_response(now, data, local, remote)
        self._core().receive_udp(now, data, local, remote)

    def _from_home(self, now: float, inner: bytes, local: Address, remote: Address) -> None:
        """Tunnelled from the HA: data for the HoA to the TUN, the rest to the node core."""
        nh = inner[6] if len(inner) >= 41 else -1
        if (
            inner[24:40] == self.hoa_packed
            and nh != NH_MH
            and inner[8:24] != self.ha_packed
            and not (nh == NH_ICMPV6 and inner[40] < 128)
        ):
            self._count_rx(now, self._ip(inner[8:24]), "T")
            return
        if nh == NH_MH:
            self._saw_description_received(now, inner)
        self._core().receive_tunnelled(now, inner, local, remote)

    def _from_tap(self, now: float, pkt: bytes) -> None:
        if len(pkt) < 40:
            return
        cn = pkt[8:24]
        if pkt[6] == NH_ROUTING and any(r.kind == "D-native" for r in self.table.get(cn, ())):
            try:
                hoa, inner = remove_type2_routing_header_untrusted(pkt)
            except BadPacket:
                self.stats["drop_rh2"] += 1
                return
            probe_reply = (
                inner[6] == NH_ICMPV6
                and len(inner) >= 48
                and inner[40] == ICMPV6_ECHO_REPLY
                and int.from_bytes(inner[44:46], "big") == D_NATIVE_PROBE_IDENT
            )
            if hoa == self.hoa_packed and inner[6] not in (NH_MH, 0, 43, 60) and not probe_reply:
                self._count_rx(now, self._ip(cn), "D-native")
                return
        self._core().receive_native(now, pkt)

    # the data plane

    def send_data(self, now: float, dst: str) -> None:
        if self.node is None:
            return
        pkt = self._data_packet(self.hoa, dst)
        dst_b = pkt[24:40]
        s = self.session(dst, create=True)
        assert s is not None
        routes = self.table.get(dst_b)
        if routes is None:
            self._misses.append(dst_b)
        else:
            for route in routes:
                if route.kind == "D-native" and route.care_of is not None:
                    if self._send(
                        route.local,
                        route.remote,
                        add_home_address_option(pkt, route.care_of),
                        "ip6",
                    ):
                        s.data_native += 1
                        self._used.add(dst_b)
                        return
                elif route.kind == "D-udp":
                    self._check_validated(now, s, (route.local, route.remote))
                    if self._send(route.local, route.remote, pkt, "udp"):
                        s.data_direct += 1
                        self._used.add(dst_b)
                        return
        route = self.default
        if route is None:
            self.stats["data_no_home_path"] += 1
            return
        if self._send(route.local, route.remote, pkt, "41" if route.local[1] == 0 else "udp"):
            s.data_t += 1

    def _send(self, local: Address, remote: Address, data: bytes, proto: Proto) -> bool:
        """Send on the socket of ``local`` (``proto`` "41"/"ip6": the raw sockets of its
        address); False when the driver has no such socket."""
        ip = local[0]
        if ip not in self.held_ips():
            if any(ip in _ips(a) for _, a in self.retired):
                self.stats["tx_closed_socket"] += 1  # the access network is gone
            else:
                self.net.violations.append(
                    f"{self.net.now:.3f} {self.name}: the core sends from {local}, not an address "
                    f"of any access network it was given"
                )
            return False
        if proto != "udp":
            local, remote = (ip, 0), (remote[0], 0)
        self.net.send(self, local, remote, data, proto)
        return True

    def _after_batch(self, now: float) -> None:
        """What the daemon does after each batch: misses and traffic to the core, then flush."""
        node = self._core()
        if self._misses:
            misses, self._misses = self._misses, []
            for dst in dict.fromkeys(misses):
                node.new_destination(now, dst)
        if self._used and now - self._reported_at >= TRAFFIC_REPORT_S:
            self._reported_at = now
            node.traffic_seen(now, self._used)
            self._used = set()
        self._drain(now)

    def _drain(self, now: float) -> None:
        node = self._core()
        for _ in range(64):
            outs = node.datagrams_to_send(now)
            events = []
            while (event := node.next_event()) is not None:
                events.append(event)
            if not outs and not events:
                break
            for out in outs:
                self._transmit(now, out)
            for event in events:
                self._on_event(now, event)
        self._follow_home_changes()

    def _transmit(self, now: float, out: object) -> None:
        if isinstance(out, SendHome):
            assert out.local is not None and out.remote is not None
            if out.packet[6] == NH_MH:
                self._saw_description_sent(now, out.packet)
            self._send(out.local, out.remote, out.packet, "41" if out.local[1] == 0 else "udp")
        elif isinstance(out, SendUdp):
            if out.remote[0] not in self._ha_ips:
                self._saw_request(now, out.payload, out.local, out.remote)
            self._send(out.local, out.remote, out.payload, "udp")
        elif isinstance(out, SendNative):
            pkt = out.packet
            self._send((self._ip(pkt[8:24]), 0), (self._ip(pkt[24:40]), 0), pkt, "ip6")
        elif isinstance(out, Deliver):
            self.stats["delivered_by_core"] += 1
            pkt = out.packet
            if pkt[6] == NH_UDP:
                self._count_rx(now, self._ip(pkt[8:24]), "D-native")

    def _on_event(self, now: float, event: object) -> None:
        if isinstance(event, ForwardingChanged):
            if event.dst is None:
                self.default = event.routes[0] if event.routes else None
                self.default_log.append((now, self.default))
                return
            if event.routes is None:
                self.table.pop(event.dst, None)
            else:
                self.table[event.dst] = event.routes
            s = self.ice_session(self._ip(event.dst))
            if s is not None:
                way = next((r for r in event.routes or () if r.kind == "D-udp"), None)
                s.log_path(now, None if way is None else (way.local, way.remote))
        elif isinstance(event, AccessRetired):
            self._close(now, event.access)
        elif isinstance(event, Notice):
            self.notices.append((now, event.key, event.text))

    def _follow_home_changes(self) -> None:
        home = self._core().home
        pair = None if home is None else home.selected()
        key = None if pair is None else pair.key
        last = self.home_selected_log[-1][1] if self.home_selected_log else None
        if key != last:
            self.home_selected_log.append((self.net.now, key))
        changes = self._core().home_changes
        if not changes or changes[-1] is self._home_seen:
            return
        new = list(changes)
        if self._home_seen is not None:
            for i in range(len(new) - 1, -1, -1):
                if new[i] is self._home_seen:
                    new = new[i + 1 :]
                    break
        self.home_log += new
        self._home_seen = changes[-1]

    def _ip(self, packed: bytes) -> str:
        text = self._text.get(packed)
        if text is None:
            text = self._text[packed] = str(IPv6Address(packed))
        return text


def _ips(access: Access) -> list[str]:
    return [str(a) for a in (access.ipv6, access.ipv4) if a is not None]


# -- the correspondent ----------------------------------------------------------------------------


class CorrespondentHost(NodeHost):
    """``CorrespondentNode`` and what the CN daemon does around it: the tap hands it every
    Mobility Header to us (``home_address`` from a Home Address option), D-udp STUN to it, data
    with a Home Address option delivered only from the bound care-of address (the kernel answers
    D-native probes, whose replies leave with a type 2 routing header), data on D-udp accepted
    only from the selected pair; our own flows go on the selected D-udp pair, else the plain way
    (through the home agent: flows the CN opens never use D-native)."""

    def __init__(
        self, net: SimNet, name: str, *, ip6: str, sockets: Iterable[Address] = ()
    ) -> None:
        super().__init__(net, name)
        self.ip6 = str(ip_address(ip6))
        self.identity = self.ip6
        self.sockets = list(sockets)
        self.node = CorrespondentNode(
            CnCoreConfig(addresses=(IPv6Address(self.ip6),)),
            kcn=self.rng.randbytes(20),
            random_bytes=self.rng.randbytes,
            wall_offset=WALL_OFFSET,
        )
        self.care_of: dict[bytes, bytes] = {}
        self.direct: dict[bytes, tuple[Address, Address]] = {}
        self._ip6_packed = IPv6Address(self.ip6).packed
        self._text: dict[bytes, str] = {}
        self.started = False

    @property
    def hosts(self) -> list[Address]:
        return list(self.sockets)

    def attach(self, site: Site, *ips: str) -> None:
        self.net.attach(site, self.ip6, self)
        for ip in ips:
            if ip != self.ip6:
                self.net.attach(site, ip, self)

    def start(self, now: float) -> None:
        self.node.set_sockets(now, self.sockets)
        self.started = True
        self._drain(now)

    # inspection

    def selected(self, peer: IPv6Address) -> CandidatePair | None:
        return self.node.selected(peer)

    def direct_pairs(self, peer: IPv6Address) -> list[CandidatePair]:
        return self.node.direct.pairs(peer)

    def agent_statistics(self, peer: IPv6Address) -> dict[str, int]:
        return self.node.direct.agent_statistics(peer)

    def direct_changes(self, peer: IPv6Address) -> list[Change]:
        return self.node.direct.changes(peer)

    def direct_statistics(self) -> dict[str, int]:
        return self.node.direct.statistics()

    # the five verbs, driven

    def get_timer(self) -> float | None:
        core = self.node.get_timer()
        flows = self._flows_due()
        if core is None:
            return flows
        return core if flows is None or core < flows else flows

    def handle_timer(self, now: float) -> None:
        t = self.node.get_timer()
        if t is not None and t <= now:
            self.node.handle_timer(now)
        self._run_flows(now)
        self._drain(now)

    def receive_packet(self, now: float, pkt: Packet) -> None:
        if pkt.proto == "udp":
            data = pkt.data
            if data[:1] and data[0] >> 4 == 6 and len(data) >= 40:
                sel = self.direct.get(data[8:24])
                if sel is None or sel != (pkt.dst, pkt.src) or data[24:40] != self._ip6_packed:
                    self.stats["drop_direct_not_from_selected_pair"] += 1
                else:
                    self._count_rx(now, self._ip(data[8:24]), "D-udp")
            elif is_stun(data):
                self._saw_response(now, data, pkt.dst, pkt.src)
                self.node.receive_udp(now, data, pkt.dst, pkt.src)
            else:
                self.stats["drop_udp"] += 1
        elif pkt.proto == "ip6":
            self._tap(now, pkt.data)
        else:
            self.stats["drop_41"] += 1
        self._drain(now)

    def _tap(self, now: float, pkt: bytes) -> None:
        if pkt[24:40] != self._ip6_packed:
            self.stats["drop_not_for_us"] += 1
            return
        nh = pkt[6]
        plen = int.from_bytes(pkt[4:6], "big")
        src, dst = IPv6Address(pkt[8:24]), IPv6Address(pkt[24:40])
        if nh == NH_MH:
            self._saw_description_received(now, pkt)
            self.node.receive_mh(now, pkt[40 : 40 + plen], src, dst)
            return
        if nh == NH_DSTOPTS:
            try:
                coa, hoa, inner = remove_home_address_option_untrusted(pkt)
            except BadPacket:
                self.stats["drop_hao"] += 1
                return
            if inner[6] == NH_MH:
                self.node.receive_mh(
                    now, inner[40:], IPv6Address(coa), dst, home_address=IPv6Address(hoa)
                )
                return
            if self.care_of.get(hoa) != coa:
                self.node.home_address_unbound(now, IPv6Address(coa), IPv6Address(hoa), dst)
                self.stats["drop_hao_without_binding"] += 1
                return
            if (
                inner[6] == NH_ICMPV6
                and len(inner) >= 48
                and inner[40] == ICMPV6_ECHO_REQUEST
                and int.from_bytes(inner[44:46], "big") == D_NATIVE_PROBE_IDENT
            ):
                self._echo_reply(inner, coa)
                return
            self._count_rx(now, self._ip(hoa), "D-native")
            return
        if nh == NH_UDP:  # data from a home address, the plain way (through its HA)
            self._count_rx(now, self._ip(pkt[8:24]), "T")
            return
        self.stats["drop_tap_unexpected"] += 1

    def _echo_reply(self, request: bytes, coa: bytes) -> None:
        """The kernel answers the probe; the TUN path sends probe answers by RH2."""
        body = bytearray(request[40:])
        body[0] = ICMPV6_ECHO_REPLY
        body[2:4] = b"\0\0"
        src, dst = request[24:40], request[8:24]
        csum = upper_layer_checksum(src, dst, NH_ICMPV6, bytes(body))
        body[2:4] = csum.to_bytes(2, "big")
        reply = request[:8] + src + dst + bytes(body)
        pkt = add_type2_routing_header(reply, coa)
        self.stats["probes_answered"] += 1
        self.net.send(self, (self.ip6, 0), (self._ip(coa), 0), pkt, "ip6")

    # the data plane

    def send_data(self, now: float, dst: str) -> None:
        pkt = self._data_packet(self.ip6, dst)
        s = self.session(dst, create=True)
        assert s is not None
        way = self.direct.get(pkt[24:40])
        if way is not None:
            self._check_validated(now, s, way)
            self.net.send(self, way[0], way[1], pkt, "udp")
            s.data_direct += 1
            return
        self.net.send(self, (self.ip6, 0), (dst, 0), pkt, "ip6")
        s.data_t += 1

    def _drain(self, now: float) -> None:
        node = self.node
        for _ in range(64):
            outs = node.datagrams_to_send(now)
            events = []
            while (event := node.next_event()) is not None:
                events.append(event)
            if not outs and not events:
                break
            for out in outs:
                if isinstance(out, SendUdp):
                    self._saw_request(now, out.payload, out.local, out.remote)
                    self.net.send(self, out.local, out.remote, out.payload, "udp")
                elif isinstance(out, SendNative):
                    pkt = out.packet
                    if pkt[6] == NH_MH:
                        self._saw_description_sent(now, pkt)
                    dst = self._ip(pkt[24:40])
                    self.net.send(self, (self._ip(pkt[8:24]), 0), (dst, 0), pkt, "ip6")
            for event in events:
                assert isinstance(event, CnForwardingChanged)
                hoa = event.home_address.packed
                if event.care_of is None:
                    self.care_of.pop(hoa, None)
                else:
                    self.care_of[hoa] = event.care_of.packed
                if event.direct is None:
                    self.direct.pop(hoa, None)
                else:
                    self.direct[hoa] = event.direct
                s = self.ice_session(str(event.home_address))
                if s is not None:
                    s.log_path(now, event.direct)

    def _ip(self, packed: bytes) -> str:
        text = self._text.get(packed)
        if text is None:
            text = self._text[packed] = str(IPv6Address(packed))
        return text


# -- measurements ---------------------------------------------------------------------------------


def max_rate(times: list[float], window_s: float = 1.0) -> int:
    """The most events in any window of ``window_s`` (sliding)."""
    best = start = 0
    for end in range(len(times)):
        while times[end] - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an arrival."""
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in itertools.pairwise(points))


def agree(net: SimNet, a: Session, b: Session) -> bool:
    """Both on T, or both on the same 5-tuple as the network carries it now."""
    pa, pb = a.path(), b.path()
    if pa is None or pb is None:
        return pa is None and pb is None
    forward = net.translate(*pa)
    backward = net.translate(*pb)
    return forward == (pb[1], pb[0]) and backward == (pa[1], pa[0])


def holddown_s(flaps: int, config: IceConfig = ICE) -> float:
    """``IceConfig.flap_*`` as documented: a selected pair that dies within ``flap_window_s``
    of being selected a second time in a row is held down ``flap_holddown_s``, doubled for
    every further such death, at most ``flap_holddown_max_s`` (the first death is free;
    ``flap_holddown_s = 0`` turns damping off)."""
    if flaps < 2 or config.flap_holddown_s <= 0:
        return 0.0
    return min(config.flap_holddown_s * 2 ** (flaps - 2), config.flap_holddown_max_s)


def hold_downs(
    events: Iterable[tuple[float, PathView, str]], config: IceConfig = ICE
) -> list[tuple[PathView, float, float]]:
    """(pair, death time, held down until) for every death that flap damping holds down;
    ``events`` are (time, pair, "selected" | "died" | "restart") in time order (an ICE restart
    is a new agent: its pairs have no flap history)."""
    selected_at: dict[PathView, float] = {}
    flaps: dict[PathView, int] = {}
    out: list[tuple[PathView, float, float]] = []
    for t, pair, what in events:
        if what == "restart":
            selected_at.clear()
            flaps.clear()
        elif what == "selected":
            selected_at[pair] = t
        elif pair in selected_at:
            if t - selected_at[pair] >= config.flap_window_s:
                flaps[pair] = 0
                continue
            flaps[pair] = flaps.get(pair, 0) + 1
            hold = holddown_s(flaps[pair], config)
            if hold > 0:
                out.append((pair, t, t + hold))
    return out


# -- worlds: the scenario topologies --------------------------------------------------------------

SiteKind = Literal["open", "fw", "nat-eim", "nat-easy", "nat-hard", "udp-blocked"]
"""An access network: ``open`` (public, no middlebox), ``fw`` (outbound-only stateful firewall
for both families), ``nat-*`` (NAT44 for IPv4 and a stateful firewall for IPv6; ``eim``:
endpoint-independent mapping and filtering, ``easy``: endpoint-independent mapping and
address-and-port-dependent filtering (Linux ``masquerade``), ``hard``: address-and-port-dependent
mapping (``masquerade fully-random``)), ``udp-blocked`` (stateful firewall dropping all UDP that
is not for the HA)."""

SITE_KINDS: tuple[SiteKind, ...] = ("open", "fw", "nat-eim", "nat-easy", "nat-hard", "udp-blocked")
PeerRole = Literal["cn", "mn"]


def site_addresses(index: int, kind: SiteKind, families: str) -> tuple[list[str], str | None]:
    """Host addresses (IPv6 first) of site number ``index`` and its NAT's outside address."""
    nat = kind.startswith("nat-")
    ips: list[str] = []
    if "6" in families:
        ips.append(f"2001:db8:{index:x}::10")
    if "4" in families:
        ips.append(f"10.{index}.0.10" if nat else f"192.0.2.{index}")
    return ips, (f"203.0.113.{index}" if nat else None)


def make_site(
    net: SimNet, name: str, kind: SiteKind, nat_ip: str | None, link: LinkProfile | None = None
) -> Site:
    rng = net.rng
    rules = [udp_only_to([HA_IP6, HA_IP4])] if kind == "udp-blocked" else []
    v6 = None if kind == "open" else stateful_firewall(rng, egress_rules=rules)
    v4: Middlebox | None
    if kind == "open":
        v4 = None
    elif kind in ("fw", "udp-blocked"):
        v4 = stateful_firewall(rng, egress_rules=rules)
    else:
        assert nat_ip is not None
        if kind == "nat-eim":
            v4 = nat44(rng, nat_ip, filtering="endpoint-independent")
        elif kind == "nat-easy":
            v4 = nat44(rng, nat_ip)
        else:
            v4 = nat44(rng, nat_ip, mapping="address-and-port-dependent")
    return net.add_site(Site(name, link=link or LinkProfile(), v4=v4, v6=v6))


def _box_kind(kind: SiteKind, fam: str) -> str:
    if kind == "udp-blocked":
        return "blocked"
    if kind == "open":
        return "none"
    if kind == "fw" or fam == "6":
        return "fw"
    return kind.removeprefix("nat-")


def _family_direct(a: str, b: str) -> bool:
    if "blocked" in (a, b):
        return False
    if "hard" in (a, b):  # only a peer that accepts an unknown port can learn its prflx
        other = b if a == "hard" else a
        return other in ("none", "eim")
    return True  # open, firewalls, EIM NATs: simultaneous checks punch through


def direct_possible(mn: SiteKind, peer: SiteKind, peer_role: PeerRole, families: str) -> bool:
    """Whether a D-udp pair can exist: the expectation table of the scenarios."""
    if peer_role == "cn" and peer != "open":
        return False  # the offer travels HoA -> CN as plain IP: a middlebox drops it
    return any(_family_direct(_box_kind(mn, f), _box_kind(peer, f)) for f in families)


def native_possible(mn: SiteKind, peer: SiteKind, peer_role: PeerRole, families: str) -> bool:
    """Whether D-native can carry the MN's data: a CN, IPv6, and no middlebox on either side
    (a stateful one drops HAO and RH2 packets as conntrack-invalid)."""
    return peer_role == "cn" and "6" in families and mn == "open" and peer == "open"


CN_IP6 = "2001:db8:2::10"


@dataclass
class World:
    net: SimNet
    ha: HomeAgentHost
    mn: MobileHost
    peer: MobileHost | CorrespondentHost
    mn_site: Site
    peer_site: Site
    home: Site

    def mn_session(self) -> Session | None:
        return self.mn.ice_session(self.peer.identity)

    def peer_session(self) -> Session | None:
        return self.peer.ice_session(self.mn.identity)

    def paths(self) -> tuple[PathView, PathView]:
        a, b = self.mn_session(), self.peer_session()
        return (None if a is None else a.path(), None if b is None else b.path())

    def agree(self) -> bool:
        a, b = self.mn_session(), self.peer_session()
        if a is None or b is None:
            return (a is None or a.path() is None) and (b is None or b.path() is None)
        return agree(self.net, a, b)

    def sessions(self) -> list[Session]:
        return [s for s in (self.mn_session(), self.peer_session()) if s is not None]

    def registered(self) -> bool:
        return self.mn.registered and self.ha.via(self.mn.hoa) is not None


def build_world(
    seed: int,
    *,
    mn: SiteKind = "open",
    peer: SiteKind = "open",
    peer_role: PeerRole = "cn",
    families: str = "6",
    data_interval_s: float = 0.2,
    access: LinkProfile | None = None,
    core: LinkProfile | None = None,
    start: bool = True,
    crossing: bool = False,
    peer_delay_s: float = 3.0,
) -> World:
    """MN (HoA ``HOA_MN``) in a ``mn`` site, a CN or a second MN in a ``peer`` site, one HA.

    Both run a data flow to the other (every ``data_interval_s``); the MN's starts at once, so
    the MN offers direct paths once registered. The peer's flow starts ``peer_delay_s`` later
    (a second MN would otherwise offer too), at once when ``crossing`` (two MNs offering at
    the same time). A CN always has its IPv6 address (signalling and the plain way) and a D-udp
    socket per family of the world."""
    net = SimNet(seed, core=core)
    home = net.add_site(Site("home", link=LinkProfile(latency_s=0.002)))
    ha = HomeAgentHost(net, home)
    mn_ips, mn_nat = site_addresses(1, mn, families)
    peer_ips, peer_nat = site_addresses(2, peer, families)
    mn_site = make_site(net, "mn-net", mn, mn_nat, access)
    peer_site = make_site(net, "peer-net", peer, peer_nat, access)
    mn_node = MobileHost(net, "mn", ha=ha, hoa=HOA_MN)
    mn_node.attach(mn_site, *mn_ips)
    peer_node: MobileHost | CorrespondentHost
    if peer_role == "mn":
        peer_node = MobileHost(net, "peer", ha=ha, hoa=HOA_PEER)
        peer_node.attach(peer_site, *peer_ips)
    else:
        sockets = [(ip, CN_PORT) for ip in peer_ips if family(ip) == 4]
        sockets.insert(0, (CN_IP6, CN_PORT))
        peer_node = CorrespondentHost(net, "peer", ip6=CN_IP6, sockets=sockets)
        peer_node.attach(peer_site, *[ip for ip in peer_ips if family(ip) == 4])
    world = World(net, ha, mn_node, peer_node, mn_site, peer_site, home)
    if start:
        peer_node.start(net.now)
        mn_node.start(net.now)
        mn_node.start_flow(peer_node.identity, interval_s=data_interval_s, at=net.now)
        delay = 0.0 if crossing else peer_delay_s
        peer_node.start_flow(mn_node.identity, interval_s=data_interval_s, at=net.now + delay)
    return world


# -- scripted faults and readings -----------------------------------------------------------------


def block_between(ip_a: str, ip_b: str, proto: Proto | None = None) -> Rule:
    """A core rule dropping every packet (of ``proto``, or any) between two addresses, both
    ways, any port."""
    ends = frozenset((ip_a, ip_b))

    def rule(now: float, pkt: Packet) -> bool:
        return (
            (proto is None or pkt.proto == proto)
            and pkt.src[0] in ends
            and pkt.dst[0] in ends
            and pkt.src[0] != pkt.dst[0]
        )

    return rule


def core_ends(net: SimNet, session: Session) -> tuple[str, str] | None:
    """The two addresses the core sees on the selected pair of ``session``."""
    path = session.path()
    if path is None:
        return None
    seen = net.translate(*path)
    if seen is None:
        return None
    return seen[0][0], path[1][0]


def kill_selected_path(world: World) -> Rule:
    session = world.mn_session()
    assert session is not None
    ends = core_ends(world.net, session)
    assert ends is not None, "no direct path to kill"
    rule = block_between(*ends)
    world.net.rules.append(rule)
    return rule


def first_change(session: Session, since: float, *, direct: bool) -> float | None:
    """When ``session`` first went to a direct pair (``direct``) or to T at or after ``since``."""
    for t, path, reason in session.path_log:
        if t >= since and reason != "start" and (path is not None) == direct:
            return t
    return None


def selections(session: Session) -> list[tuple[float, PathView]]:
    return [(t, p) for t, p, reason in session.path_log if reason == "selected"]


def move_mn(world: World, kind: SiteKind, families: str, *, make_before_break: bool = True) -> Site:
    """Move the MN of ``world`` to a new access network of ``kind`` (a new site number)."""
    index = len(world.net.sites)
    ips, nat_ip = site_addresses(index, kind, families)
    site = make_site(world.net, f"mn-net-{index}", kind, nat_ip)
    world.mn.move(site, *ips, make_before_break=make_before_break)
    world.mn_site = site
    return site
