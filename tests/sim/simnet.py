"""A seeded, virtual-time network for the M-ICE path engine (DESIGN §9, simulated-network tier).

Nothing here touches a socket or a clock: :class:`SimNet` owns ``now`` and one event heap, and
every random choice (loss, duplication, reordering, jitter, NAT ports, ICE credentials,
transaction ids, tie-breakers) comes from one ``random.Random(seed)``, so a seed replays
exactly. The topology is the RFC 4487 one, reduced to what the ICE agent can see::

    MN --access link-- [middlebox] --\\               /-- [middlebox] --access link-- CN or MN 2
                                      +--- core ---+
    MN moved --access-- [middlebox] --/   (rules)   \\-- HA: STUN, bindings, relay, HoAs

* A :class:`Site` is an access network: an access link (:class:`LinkProfile`: latency, jitter,
  loss, duplication, reordering) and, per address family, an optional :class:`Middlebox` at its
  edge. The core is one more link; ``SimNet.rules`` are drop rules in the core (a blackholing
  router: "kill the direct path").
* A packet crosses the source access link, the source middlebox (outbound), the core, the
  destination middlebox (inbound) and the destination access link; each crossing is its own
  event, so firewall and NAT state is looked at when the packet is really there.
* :class:`Middlebox` is Linux conntrack for UDP: outbound creates a 5-tuple entry, 30 s while
  unreplied, 120 s once a reply was seen and the entry is older than 2 s (assured); every packet
  refreshes it; inbound passes only on a matching live entry. With NAT it also translates:
  endpoint-independent mapping (Linux ``masquerade``: the inside port keeps its outside port)
  or address-and-port-dependent mapping (``masquerade fully-random``: a new random port per
  destination), and endpoint-independent filtering (full cone) or address-and-port-dependent
  filtering (only the 5-tuple an inside host sent to).
* :class:`HomeAgent`: ICE-lite STUN responder on its UDP port (a Binding request at least as
  large as the answer gets the source it came from, like the real HA), binding cache
  HoA -> the MN's T-udp 5-tuple, and the relay of the signalling channel (offer/answer travel
  HoA <-> CN through it; to an MN through its tunnel).
* :class:`MipNode`: a mipnode MN or CN as its driver runs the pure :class:`~ice.agent.IceAgent`:
  gathering from the HA (host + server-reflexive, STUN retried until answered), registration
  with BU sequence numbers and 20 s refreshes (the conntrack keepalive), offers retransmitted on
  a 1-8 s backoff (the MN, controlling; one agent per peer) and answers (a CN or an MN,
  controlled; deferred until its own gathering is done), data every ``data_interval_s`` on the
  selected pair or else on T, an ICE restart when the controlling side's pair lost consent (the
  contract of ice/agent.py), and movement with make-before-break. It also keeps the oracles the
  tests assert on: every datagram of data on a direct pair must follow a two-way authenticated
  exchange on exactly that 5-tuple within ``dead_after_s`` (checked here from the wire, not by
  asking the agent), path changes with their times, and every check sent.

The signalling format is test-only (a JSON header and the real M-ICE TLVs of
``mipnode.wire.mice``); the checks are the agent's real STUN.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import ip_address
from typing import Literal

from aioice import stun as aioice_stun

from ice import stun
from ice.agent import (
    ConsentLost,
    IceAgent,
    IceConfig,
    IceEvent,
    PathLost,
    PathSelected,
    new_credentials,
)
from ice.candidate import Candidate, CandidateType, TransportAddress
from ice.config import Credentials
from mipnode.wire import mice

Address = TransportAddress

HA_PORT = 4191  # DESIGN §2: T-udp to the HA
SIG_PORT = 7777  # stands for the Mobility Header between HoA and CN (test-only)
MN_PORT = 5000
CN_PORT = 6000

# Linux conntrack UDP (nf_conntrack_proto_udp.c)
UDP_UNREPLIED_S = 30.0
UDP_STREAM_S = 120.0
UDP_STREAM_AFTER_S = 2.0

BU_REFRESH_S = 20.0  # below the 30 s unreplied UDP timeout (DESIGN §4, conntrack hygiene)
BINDING_LIFETIME_S = 60.0
GATHER_RTO_S = 0.5  # STUN to the HA: 0, 0.5, 1.5, 3.5, then every 4 s until answered
GATHER_RTO_MAX_S = 4.0
SIGNAL_RTO_S = 1.0  # offers and BUs: 1, 2, 4, 8, 8, ... s
SIGNAL_RTO_MAX_S = 8.0
RESTART_HOLDOFF_S = 10.0
MAX_STEPS_AT_ONE_INSTANT = 20_000


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
    src: Address
    dst: Address
    data: bytes
    origin: str


Rule = Callable[[float, Packet], bool]
"""A drop rule: ``(now, packet) -> True`` drops it."""


# -- conntrack, firewalls and NAT -----------------------------------------------------------------

Mapping = Literal["endpoint-independent", "address-and-port-dependent"]
Filtering = Literal["endpoint-independent", "address-and-port-dependent"]


@dataclass(slots=True)
class Conn:
    """One conntrack entry: ``inside`` talks to ``remote``, seen outside as ``outside``."""

    inside: Address
    outside: Address
    remote: Address
    created: float
    expires: float
    seen_reply: bool = False
    assured: bool = False

    def refresh(self, now: float, *, reply: bool) -> None:
        """Linux ``udp_packet``: 30 s; 120 s (assured) once replied and older than 2 s. The
        reply bit is set after the refresh, as the conntrack core does."""
        if self.seen_reply and now - self.created >= UDP_STREAM_AFTER_S:
            self.expires = now + UDP_STREAM_S
            self.assured = True
        else:
            self.expires = now + UDP_UNREPLIED_S
        if reply:
            self.seen_reply = True


class Middlebox:
    """An outbound-only stateful firewall for UDP, optionally a NAT (see the module docstring).

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
        self._by_inside: dict[tuple[Address, Address], Conn] = {}
        self._by_outside: dict[tuple[Address, Address], Conn] = {}
        self.drops: Counter[str] = Counter()

    # state

    def _live(self, conn: Conn | None, now: float) -> Conn | None:
        if conn is None:
            return None
        if conn.expires <= now:
            self._by_inside.pop((conn.inside, conn.remote), None)
            self._by_outside.pop((conn.outside, conn.remote), None)
            return None
        return conn

    def connections(self, now: float) -> list[Conn]:
        return [c for c in list(self._by_inside.values()) if self._live(c, now) is not None]

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

    def _add(self, now: float, inside: Address, outside: Address, remote: Address) -> Conn:
        conn = Conn(inside, outside, remote, now, now + UDP_UNREPLIED_S)
        self._by_inside[(inside, remote)] = conn
        self._by_outside[(outside, remote)] = conn
        return conn

    # packets

    def outbound(self, now: float, pkt: Packet) -> Packet | None:
        if any(rule(now, pkt) for rule in self.egress_rules):
            self.drops["egress_rule"] += 1
            return None
        conn = self._live(self._by_inside.get((pkt.src, pkt.dst)), now)
        if conn is None:
            outside = pkt.src if self.nat_ip is None else self._new_outside(now, pkt.src)
            conn = self._add(now, pkt.src, outside, pkt.dst)
        else:
            conn.refresh(now, reply=False)
        if conn.outside == pkt.src:
            return pkt
        return Packet(conn.outside, pkt.dst, pkt.data, pkt.origin)

    def inbound(self, now: float, pkt: Packet) -> Packet | None:
        conn = self._live(self._by_outside.get((pkt.dst, pkt.src)), now)
        if conn is None and self.nat_ip is not None and self.filtering == "endpoint-independent":
            inside = self._inside_of(now, pkt.dst)
            if inside is not None:  # full cone: anyone may use an existing mapping
                conn = self._add(now, inside, pkt.dst, pkt.src)
        if conn is None:
            self.drops["no_state"] += 1
            return None
        conn.refresh(now, reply=True)
        if conn.inside == pkt.dst:
            return pkt
        return Packet(pkt.src, conn.inside, pkt.data, pkt.origin)

    def _inside_of(self, now: float, outside: Address) -> Address | None:
        for conn in self.connections(now):
            if conn.outside == outside:
                return conn.inside
        return None

    # inspection without side effects

    def peek_outbound(self, now: float, src: Address, dst: Address) -> Address | None:
        conn = self._by_inside.get((src, dst))
        if conn is not None and conn.expires > now:
            return conn.outside
        if self.nat_ip is None:
            return src
        return None

    def peek_inbound(self, now: float, src: Address, dst: Address) -> Address | None:
        conn = self._by_outside.get((dst, src))
        if conn is not None and conn.expires > now:
            return conn.inside
        return None


def stateful_firewall(rng: random.Random, *, egress_rules: Iterable[Rule] = ()) -> Middlebox:
    """Outbound-only: inbound UDP only on a conntrack entry an inside host created."""
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
    """Egress rule: drop every UDP packet whose destination is not one of ``allowed_ips``."""
    allowed = frozenset(allowed_ips)

    def rule(now: float, pkt: Packet) -> bool:
        return pkt.dst[0] not in allowed

    return rule


# -- the network ----------------------------------------------------------------------------------


class Endpoint:
    """Something attached to the network: receives datagrams, may have a timer.

    Compared by identity (the network caches timers per endpoint)."""

    name: str = "?"

    def receive(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        raise NotImplementedError

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

    # scheduling

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action`` (a scripted event: it may touch any endpoint) at ``when``."""
        heapq.heappush(self._heap, (when, next(self._seq), action, True))

    def _hop(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action, False))

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

    def send(self, origin: Endpoint, src: Address, dst: Address, data: bytes) -> None:
        """``origin`` sends ``data`` from ``src`` (one of its addresses) to ``dst``."""
        site = self._site_of_ip.get(src[0])
        if site is None or site.hosts.get(src[0]) is not origin:
            self.violations.append(f"{self.now:.3f} {origin.name} sent from {src}, not its own")
            return
        self.stats["sent"] += 1
        pkt = Packet(src, dst, data, origin.name)
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
        endpoint.receive(self.now, pkt.dst, pkt.src, pkt.data)

    # inspection

    def translate(self, src: Address, dst: Address) -> tuple[Address, Address] | None:
        """How a packet from ``src`` to ``dst`` would arrive now, as (seen source, local
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


# -- signalling -----------------------------------------------------------------------------------


SignalKind = Literal["bu", "ba", "offer", "answer"]
_SIGNAL_MAGIC = b"\xfeSG"  # neither STUN (top bits 00) nor IPv6 (0x6_): DESIGN §3 demux


@dataclass(frozen=True, slots=True)
class Signal:
    """One message of the signalling channel: a BU/BA between MN and HA, or an offer/answer
    between two peers (credentials + candidates as M-ICE TLVs), relayed by the HA."""

    kind: SignalKind
    src: str  # the sender's identity: an MN's HoA or a CN's address
    dst: str
    generation: int = 0
    ice: bytes = b""

    def encode(self) -> bytes:
        header = json.dumps([self.kind, self.src, self.dst, self.generation]).encode()
        return _SIGNAL_MAGIC + len(header).to_bytes(2, "big") + header + self.ice

    @staticmethod
    def decode(data: bytes) -> Signal | None:
        if not data.startswith(_SIGNAL_MAGIC) or len(data) < 5:
            return None
        size = int.from_bytes(data[3:5], "big")
        kind, src, dst, generation = json.loads(data[5 : 5 + size])
        return Signal(kind, src, dst, generation, data[5 + size :])


def encode_offer(credentials: Credentials, candidates: Iterable[Candidate]) -> bytes:
    items: list[mice.MiceItem] = [mice.Credentials(credentials.ufrag, credentials.password)]
    for c in candidates:
        items.append(
            mice.Candidate(
                c.foundation, c.priority, str(c.kind), ip_address(c.address[0]), c.address[1]
            )
        )
    items.append(mice.EndOfCandidates())
    return mice.encode_mice(items)


def decode_offer(data: bytes) -> tuple[Credentials, list[Candidate]]:
    creds: Credentials | None = None
    candidates: list[Candidate] = []
    for item in mice.decode_mice_untrusted(data):
        if isinstance(item, mice.Credentials):
            creds = Credentials(item.ufrag, item.password)
        elif isinstance(item, mice.Candidate):
            address = (str(item.address), item.port)
            candidates.append(
                Candidate(
                    CandidateType(item.kind), address, address, item.priority, item.foundation
                )
            )
    assert creds is not None
    return creds, candidates


# -- the home agent -------------------------------------------------------------------------------


class HomeAgent(Endpoint):
    """ICE-lite STUN responder, binding cache, relay of the signalling channel."""

    def __init__(self, net: SimNet, site: Site, *, ip6: str, ip4: str, hoas: Iterable[str]) -> None:
        self.name = "ha"
        self.net = net
        self.ip6 = str(ip_address(ip6))
        self.ip4 = str(ip_address(ip4))
        self.hoas = [str(ip_address(h)) for h in hoas]
        self.bindings: dict[str, tuple[Address, Address, float]] = {}  # HoA -> (HA, CoA, expiry)
        self._bu_seq: dict[str, int] = {}
        self.stats: Counter[str] = Counter()
        for ip in (self.ip6, self.ip4, *self.hoas):
            net.attach(site, ip, self)

    def address(self, fam: int) -> Address:
        return (self.ip6, HA_PORT) if fam == 6 else (self.ip4, HA_PORT)

    def receive(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        if local[1] == HA_PORT and local[0] in (self.ip6, self.ip4):
            if stun.looks_like_stun(data):
                self._stun(local, remote, data)
                return
            sig = Signal.decode(data)
            if sig is None:
                self.stats["drop_unknown"] += 1
            elif sig.kind == "bu" and sig.generation <= self._bu_seq.get(sig.src, 0):
                self.stats["drop_stale_bu"] += 1
            elif sig.kind == "bu":
                self._bu_seq[sig.src] = sig.generation
                self.bindings[sig.src] = (local, remote, now + BINDING_LIFETIME_S)
                self.stats["bu"] += 1
                self.net.send(self, local, remote, Signal("ba", sig.dst, sig.src).encode())
            elif sig.kind in ("offer", "answer") and self._bound(now, sig.src) == remote:
                self._relay(now, sig)
            else:
                self.stats["drop_signal"] += 1
            return
        if local[1] == SIG_PORT and local[0] in (*self.hoas, self.ip4):  # CN -> HoA: tunnel
            sig = Signal.decode(data)
            if sig is not None and sig.dst in self.hoas:
                self._relay(now, sig)
                return
        # Anything else to a HoA would be traffic on the relayed candidate's address: the agent
        # must never check it nor send data there (the T path is the driver's, not a pair's).
        self.stats["unexpected"] += 1

    def _stun(self, local: Address, remote: Address, data: bytes) -> None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except Exception:
            self.stats["drop_stun"] += 1
            return
        if (
            msg.message_method != stun.Method.BINDING
            or msg.message_class != stun.Class.REQUEST
            or len(data) < stun.MIN_ANSWERED_REQUEST
        ):
            self.stats["drop_stun"] += 1
            return
        self.stats["stun_answered"] += 1
        self.net.send(self, local, remote, stun.binding_response(msg.transaction_id, remote))

    def _bound(self, now: float, hoa: str) -> Address | None:
        entry = self.bindings.get(hoa)
        if entry is None or entry[2] <= now:
            return None
        return entry[1]

    def _relay(self, now: float, sig: Signal) -> None:
        entry = self.bindings.get(sig.dst)
        if entry is not None and entry[2] > now:  # an MN of ours: through its tunnel
            self.stats["relayed_to_mn"] += 1
            self.net.send(self, entry[0], entry[1], sig.encode())
        elif sig.dst in self.hoas:
            self.stats["drop_unbound"] += 1
        else:  # a correspondent: plain IP from the HoA
            src_ip = sig.src if family(sig.dst) == 6 else self.ip4
            self.stats["relayed_to_cn"] += 1
            self.net.send(self, (src_ip, SIG_PORT), (sig.dst, SIG_PORT), sig.encode())


# -- a mipnode node (its driver around IceAgent) --------------------------------------------------


PathView = tuple[Address, Address] | None  # (local base, remote address) of the pair, None = T


@dataclass
class Session:
    """One ICE session with one peer, plus the oracles for it."""

    peer: str
    offerer: bool
    agent: IceAgent
    generation: int = 0
    answered: bool = False
    next_offer_at: float | None = None
    offer_rto_s: float = SIGNAL_RTO_S
    answer: Signal | None = None
    peer_generation: int = 0  # of the peer's offers to an offering session (crossing offers)
    last_restart_at: float = -1e9
    restart_pending: bool = False
    restart_timer: bool = False
    # oracles
    requests: dict[bytes, tuple[Address, Address]] = field(default_factory=dict)
    validated: dict[tuple[Address, Address], float] = field(default_factory=dict)
    check_times: list[float] = field(default_factory=list)
    path_log: list[tuple[float, PathView, str]] = field(default_factory=list)
    events: list[tuple[float, IceEvent]] = field(default_factory=list)
    data_direct: int = 0
    data_t: int = 0
    data_received: int = 0
    offers_sent: int = 0

    def path(self) -> PathView:
        pair = self.agent.selected_pair()
        return None if pair is None else (pair.local.base, pair.remote.address)


class MipNode(Endpoint):
    """A mipnode MN (``ha`` and ``hoa`` given) or CN, driving one IceAgent per peer."""

    def __init__(
        self,
        net: SimNet,
        name: str,
        *,
        ha: HomeAgent | None = None,
        hoa: str | None = None,
        config: IceConfig | None = None,
        data_interval_s: float = 0.2,
        port: int | None = None,
        rng_seed: int | None = None,
    ) -> None:
        self.name = name
        self.net = net
        self.ha = ha
        self.hoa = None if hoa is None else str(ip_address(hoa))
        self.config = config or IceConfig()
        self.data_interval_s = data_interval_s
        self.port = port or (MN_PORT if ha is not None else CN_PORT)
        self.rng = random.Random(net.rng.getrandbits(64) if rng_seed is None else rng_seed)
        self.tie_breaker = self.rng.getrandbits(64)
        self.hosts: list[Address] = []  # current host candidates (primary CoA first)
        self.srflx: dict[Address, Address] = {}  # base -> server-reflexive address
        self.sessions: dict[str, Session] = {}
        self.stats: Counter[str] = Counter()
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._gathering: dict[bytes, tuple[Address, int]] = {}  # txid -> (base, attempt)
        self._gather_pending: set[Address] = set()
        self.registered_coa: Address | None = None
        self._bu_coa: Address | None = None
        self._bu_rto = SIGNAL_RTO_S
        self._bu_token = 0
        self._pending_offers: list[str] = []
        self._deferred_offers: dict[str, tuple[Signal, Address]] = {}
        self._when_ready: list[Callable[[float], None]] = []
        self._retiring: set[Address] = set()
        self._next_data_at: float | None = None
        self._bu_seq = 0

    # identity

    @property
    def identity(self) -> str:
        if self.hoa is not None:
            return self.hoa
        return self.hosts[0][0]

    @property
    def is_mn(self) -> bool:
        return self.ha is not None

    # setup

    def attach(self, site: Site, *ips: str) -> None:
        for ip in ips:
            ip = str(ip_address(ip))
            self.net.attach(site, ip, self)
            self.hosts.append((ip, self.port))

    def start(self, now: float) -> None:
        """Begin: gather from the HA and register (MN), listen for offers (any), send data."""
        self._next_data_at = now + self.data_interval_s
        if self.is_mn:
            for base in self.hosts:
                self._gather(now, base)
            self._register(now, self.hosts[0])

    def connect(self, peer: str) -> None:
        """Offer an ICE session to ``peer`` (a HoA or CN address) once registered."""
        self._pending_offers.append(peer)
        self._progress(self.net.now)

    # timers

    def _later(self, when: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), action))

    def get_timer(self) -> float | None:
        deadlines = [s.agent.get_timer() for s in self.sessions.values()]
        times = [t for t in deadlines if t is not None]
        if self._timers:
            times.append(self._timers[0][0])
        if self._next_data_at is not None:
            times.append(self._next_data_at)
        for s in self.sessions.values():
            if s.next_offer_at is not None:
                times.append(s.next_offer_at)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action(now)
        for session in list(self.sessions.values()):
            tm = session.agent.get_timer()
            if tm is not None and tm <= now:
                session.agent.handle_timer(now)
                self._flush(now, session)
            if session.next_offer_at is not None and session.next_offer_at <= now:
                self._send_offer(now, session)
        if self._next_data_at is not None and self._next_data_at <= now:
            self._next_data_at = now + self.data_interval_s
            for session in self.sessions.values():
                self._send_data(now, session)

    # gathering (STUN to the HA) and registration

    def _gather(self, now: float, base: Address, attempt: int = 0) -> None:
        """STUN to the HA from ``base`` until it answers (the MN registers and offers only
        with every server-reflexive address it has, so the peer can aim at it)."""
        assert self.ha is not None
        if base not in self.hosts:
            return
        if attempt == 0:
            self._gather_pending.add(base)
        if base not in self._gather_pending:
            return
        txid = self.rng.randbytes(12)
        self._gathering[txid] = (base, attempt)
        self.net.send(self, base, self.ha.address(family(base[0])), stun.binding_request(txid))
        self.stats["gather_sent"] += 1
        wait = min(GATHER_RTO_S * 2**attempt, GATHER_RTO_MAX_S)
        self._later(now + wait, partial(self._gather, base=base, attempt=attempt + 1))

    def _gathered(self, now: float, data: bytes, local: Address) -> None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except Exception:
            self.stats["drop_ha_stun"] += 1
            return
        entry = self._gathering.pop(msg.transaction_id, None)
        mapped = msg.attributes.get("XOR-MAPPED-ADDRESS")
        if entry is None or entry[0] != local or mapped is None:
            self.stats["drop_ha_stun"] += 1
            return
        base = entry[0]
        mapped_address = (str(mapped[0]), int(mapped[1]))
        if mapped_address != base:
            self.srflx[base] = mapped_address
            for session in self.sessions.values():  # advertised at the next offer or answer
                if any(c.base == base for c in session.agent.local_candidates()):
                    session.agent.add_local_candidate(self._srflx_candidate(base))
        if base in self._gather_pending:
            self._gather_pending.discard(base)
            self._progress(now)

    def _srflx_candidate(self, base: Address) -> Candidate:
        assert self.ha is not None
        return Candidate.server_reflexive(
            self.srflx[base], base, server_ip=self.ha.address(family(base[0]))[0]
        )

    def _register(self, now: float, coa: Address) -> None:
        self._bu_coa = coa
        self._bu_rto = SIGNAL_RTO_S
        self._bu_token += 1
        self._send_bu(now, self._bu_token)

    def _send_bu(self, now: float, token: int) -> None:
        assert self.ha is not None and self.hoa is not None
        coa = self._bu_coa
        if token != self._bu_token or coa is None or coa not in self.hosts:
            return
        ha = self.ha.address(family(coa[0]))
        self._bu_seq += 1  # like RFC 6275 sequence numbers: a late old BU cannot win
        self.net.send(self, coa, ha, Signal("bu", self.hoa, ha[0], self._bu_seq).encode())
        self.stats["bu_sent"] += 1
        self._later(now + self._bu_rto, partial(self._send_bu, token=token))
        self._bu_rto = min(self._bu_rto * 2, SIGNAL_RTO_MAX_S)

    def _ba(self, now: float, local: Address) -> None:
        if local != self._bu_coa:
            return
        self.registered_coa = local
        self._bu_token += 1  # stop retransmitting; refresh later (keepalive)
        token = self._bu_token
        self._bu_rto = SIGNAL_RTO_S
        self._later(now + BU_REFRESH_S, partial(self._send_bu, token=token))
        self._progress(now)

    def _ready(self) -> bool:
        """A CN always; an MN once registered from its current CoA and done gathering."""
        if not self.is_mn:
            return True
        return (
            self.registered_coa is not None
            and self.registered_coa == self._bu_coa
            and not self._gather_pending
        )

    def _progress(self, now: float) -> None:
        if not self._ready():
            return
        actions, self._when_ready = self._when_ready, []
        for action in actions:
            action(now)
        deferred, self._deferred_offers = self._deferred_offers, {}
        for sig, remote in deferred.values():
            self._on_offer(now, sig, remote)
        pending, self._pending_offers = self._pending_offers, []
        for peer in pending:
            session = Session(peer, True, self._new_agent(True))
            self.sessions[peer] = session
            session.path_log.append((now, None, "start"))
            self._new_generation(now, session)

    # signalling

    def _signal_route(self) -> tuple[Address, Address] | None:
        """Where our signalling leaves from and goes to: the HA tunnel (MN) or none (CN)."""
        if self.ha is None or self.registered_coa is None:
            return None
        return self.registered_coa, self.ha.address(family(self.registered_coa[0]))

    def _send_signal(self, now: float, sig: Signal, reply_to: Address | None = None) -> None:
        route = self._signal_route()
        if route is not None:
            self.net.send(self, route[0], route[1], sig.encode())
        elif reply_to is not None:  # a CN answers where the offer came from (the HoA)
            ip = next(h[0] for h in self.hosts if family(h[0]) == family(reply_to[0]))
            self.net.send(self, (ip, SIG_PORT), reply_to, sig.encode())
        else:
            self.stats["signal_unroutable"] += 1

    def _local_candidates(self) -> list[Candidate]:
        bases = [b for b in self.hosts if b not in self._retiring]
        out = [Candidate.host(base) for base in bases]
        out += [self._srflx_candidate(b) for b in bases if b in self.srflx]
        if self.ha is not None and self.hoa is not None:
            coa = self.hosts[0]
            ha = self.ha.address(family(coa[0]))
            out.append(Candidate.relayed((self.hoa, self.port), coa, server_ip=ha[0]))
        return out

    def _new_agent(self, controlling: bool) -> IceAgent:
        agent = IceAgent(
            self.config,
            controlling=controlling,
            credentials=new_credentials(self.rng.randbytes),
            tie_breaker=self.tie_breaker,
            random_bytes=self.rng.randbytes,
        )
        for candidate in self._local_candidates():
            agent.add_local_candidate(candidate)
        return agent

    def _new_generation(self, now: float, session: Session) -> None:
        session.generation += 1
        session.answered = False
        session.offer_rto_s = SIGNAL_RTO_S
        session.requests.clear()
        session.validated.clear()
        self._send_offer(now, session)

    def _send_offer(self, now: float, session: Session) -> None:
        if session.answered:
            session.next_offer_at = None
            return
        agent = session.agent
        ice = encode_offer(agent.local_credentials, agent.local_candidates())
        sig = Signal("offer", self.identity, session.peer, session.generation, ice)
        self._send_signal(now, sig)
        session.offers_sent += 1
        session.next_offer_at = now + session.offer_rto_s
        session.offer_rto_s = min(session.offer_rto_s * 2, SIGNAL_RTO_MAX_S)

    def _on_signal(self, now: float, sig: Signal, remote: Address) -> None:
        if sig.kind == "ba":
            return
        if sig.dst != self.identity:
            self.stats["drop_signal_not_ours"] += 1
            return
        if sig.kind == "offer":
            self._on_offer(now, sig, remote)
        elif sig.kind == "answer":
            self._on_answer(now, sig)

    def _on_offer(self, now: float, sig: Signal, remote: Address) -> None:
        if not self._ready():  # answer with every candidate we will have (see _gather)
            self._deferred_offers[sig.src] = (sig, remote)
            self.stats["offer_deferred"] += 1
            return
        session = self.sessions.get(sig.src)
        if session is not None and session.offerer:
            self._on_crossing_offer(now, session, sig, remote)
            return
        if session is not None and sig.generation < session.generation:
            self.stats["drop_stale_offer"] += 1
            return
        if session is not None and sig.generation == session.generation:
            self.stats["offer_repeated"] += 1
            if session.answer is not None:
                self._send_signal(now, session.answer, reply_to=remote)
            return
        creds, candidates = decode_offer(sig.ice)
        if session is None:
            session = Session(sig.src, False, self._new_agent(False))
            self.sessions[sig.src] = session
            session.path_log.append((now, None, "start"))
        else:  # the offerer restarted: new credentials, same local candidates
            session.agent.restart(now, new_credentials(self.rng.randbytes))
            session.requests.clear()
            session.validated.clear()
        session.generation = sig.generation
        agent = session.agent
        agent.set_remote_credentials(creds)
        for candidate in candidates:
            agent.add_remote_candidate(candidate)
        agent.end_of_remote_candidates()
        ice = encode_offer(agent.local_credentials, agent.local_candidates())
        answer = Signal("answer", self.identity, sig.src, sig.generation, ice)
        session.answer = answer
        self._send_signal(now, answer, reply_to=remote)
        self._flush(now, session)

    def _on_crossing_offer(
        self, now: float, session: Session, sig: Signal, remote: Address
    ) -> None:
        """An offer from a peer we offered to: two MNs that started at once (the offers cross:
        each takes the other's offer as its description, both agents are controlling, and the
        ICE role conflict settles who yields), or that peer restarting ICE (new credentials)."""
        if sig.generation < session.peer_generation:
            self.stats["drop_stale_offer"] += 1
            return
        if sig.generation == session.peer_generation:
            self.stats["offer_repeated"] += 1
            if session.answer is not None:
                self._send_signal(now, session.answer, reply_to=remote)
            return
        agent = session.agent
        if agent.remote_credentials is not None:  # the peer restarted
            agent.restart(now, new_credentials(self.rng.randbytes))
            session.requests.clear()
            session.validated.clear()
            self.stats["restart_by_peer"] += 1
        else:
            self.stats["offers_crossed"] += 1
        session.peer_generation = sig.generation
        creds, candidates = decode_offer(sig.ice)
        agent.set_remote_credentials(creds)
        for candidate in candidates:
            agent.add_remote_candidate(candidate)
        agent.end_of_remote_candidates()
        session.answered = True
        session.next_offer_at = None
        ice = encode_offer(agent.local_credentials, agent.local_candidates())
        session.answer = Signal("answer", self.identity, sig.src, sig.generation, ice)
        self._send_signal(now, session.answer, reply_to=remote)
        self._flush(now, session)

    def _on_answer(self, now: float, sig: Signal) -> None:
        session = self.sessions.get(sig.src)
        if session is None or not session.offerer or sig.generation != session.generation:
            self.stats["drop_stale_answer"] += 1
            return
        if session.answered:
            return
        session.answered = True
        session.next_offer_at = None
        creds, candidates = decode_offer(sig.ice)
        agent = session.agent
        agent.set_remote_credentials(creds)
        for candidate in candidates:
            agent.add_remote_candidate(candidate)
        agent.end_of_remote_candidates()
        self._flush(now, session)

    def restart_ice(self, now: float, session: Session, reason: str) -> None:
        """Controlling side: ICE restart with new credentials, offered over the T path."""
        session.last_restart_at = now
        session.restart_pending = False
        session.agent.restart(now, new_credentials(self.rng.randbytes))
        self.stats[f"restart_{reason}"] += 1
        self._flush(now, session)
        self._new_generation(now, session)

    # receiving

    def receive(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        if self.ha is not None and remote == self.ha.address(family(remote[0])):
            if stun.looks_like_stun(data):
                self._gathered(now, data, local)
                return
            sig = Signal.decode(data)
            if sig is None:
                self.stats["drop_from_ha"] += 1
            elif sig.kind == "ba":
                self._ba(now, local)
            else:
                self._on_signal(now, sig, remote)
            return
        if local[1] == SIG_PORT:
            sig = Signal.decode(data)
            if sig is not None:
                self._on_signal(now, sig, remote)
            return
        if data[:1] and data[0] >> 4 == 6:
            self._data_received(local, remote)
            return
        session = self._session_for(data)
        if session is None:
            self.stats["drop_no_session"] += 1
            return
        self._observe_response(now, session, data, local, remote)
        session.agent.receive_datagram(now, data, local, remote)
        self._flush(now, session)

    def _session_for(self, data: bytes) -> Session | None:
        if len(self.sessions) == 1:
            return next(iter(self.sessions.values()))
        if len(data) < 20:
            return None
        tid = data[8:20]
        for session in self.sessions.values():
            if tid in session.requests:
                return session
        try:
            username = aioice_stun.parse_message(data).attributes.get("USERNAME", "")
        except Exception:
            return None
        ufrag = str(username).partition(":")[0]
        for session in self.sessions.values():
            if session.agent.local_credentials.ufrag == ufrag:
                return session
        return None

    def _data_received(self, local: Address, remote: Address) -> None:
        for session in self.sessions.values():
            path = session.path()
            if path is not None and path == (local, remote):
                session.data_received += 1
                return
        self.stats["data_received_elsewhere"] += 1

    # the oracle: two-way authenticated exchanges, seen from the wire

    def _observe_request(
        self, session: Session, data: bytes, local: Address, remote: Address
    ) -> None:
        if len(data) >= 20 and data[0:2] == b"\x00\x01":
            session.requests[data[8:20]] = (local, remote)
            session.check_times.append(self.net.now)

    def _observe_response(
        self, now: float, session: Session, data: bytes, local: Address, remote: Address
    ) -> None:
        """A Binding success from ``remote`` to ``local`` answering one of our checks on that
        5-tuple and signed with the peer's current password validates the 5-tuple."""
        if len(data) < 52 or data[0:2] != b"\x01\x01":
            return
        sent = session.requests.get(data[8:20])
        creds = session.agent.remote_credentials
        if sent != (local, remote) or creds is None:
            return
        # MESSAGE-INTEGRITY (24) then FINGERPRINT (8) end every answer the agent builds.
        if data[-32:-28] != b"\x00\x08\x00\x14":
            return
        mac = aioice_stun.message_integrity(data[:-32], creds.password.encode())
        if mac == data[-28:-8]:
            session.validated[(local, remote)] = now

    # sending

    def _flush(self, now: float, session: Session) -> None:
        agent = session.agent
        for dgram in agent.datagrams_to_send(now):
            if dgram.local not in self.hosts:
                self.stats["drop_no_local_address"] += 1
                continue
            self._observe_request(session, dgram.data, dgram.local, dgram.remote)
            self.net.send(self, dgram.local, dgram.remote, dgram.data)
        while (event := agent.next_event()) is not None:
            session.events.append((now, event))
            if isinstance(event, PathSelected):
                p = event.pair
                session.path_log.append((now, (p.local.base, p.remote.address), "selected"))
            elif isinstance(event, PathLost):
                if agent.selected_pair() is None:
                    session.path_log.append((now, None, event.reason))
            elif isinstance(event, ConsentLost) and agent.controlling:
                session.restart_pending = agent.selected_pair() is None
        if session.restart_pending:
            if agent.selected_pair() is not None:
                session.restart_pending = False
            elif now - session.last_restart_at >= RESTART_HOLDOFF_S:
                self.restart_ice(now, session, "consent")
            elif not session.restart_timer:
                session.restart_timer = True
                at = session.last_restart_at + RESTART_HOLDOFF_S
                self._later(at, partial(self._restart_timer, session=session))

    def _restart_timer(self, now: float, session: Session) -> None:
        session.restart_timer = False
        if self.sessions.get(session.peer) is session:
            self._flush(now, session)

    def _send_data(self, now: float, session: Session) -> None:
        agent = session.agent
        tm = agent.get_timer()
        if tm is not None and tm <= now:  # the owner runs the agent's timers first
            agent.handle_timer(now)
            self._flush(now, session)
        pair = agent.selected_pair()
        if pair is None:
            session.data_t += 1
            return
        key = (pair.local.base, pair.remote.address)
        if key[0] not in self.hosts:  # the address is gone (break-before-make): lost
            self.stats["data_no_local_address"] += 1
            session.data_t += 1
            return
        checked = session.validated.get(key)
        if checked is None or now - checked >= self.config.dead_after_s:
            self.net.violations.append(
                f"{now:.3f} {self.name}: data on {key}, last two-way check {checked}"
            )
        session.data_direct += 1
        self.net.send(self, key[0], key[1], b"\x60" + bytes(39))

    # movement (make-before-break, DESIGN §4)

    def move(
        self, site: Site, *ips: str, make_before_break: bool = True, linger_s: float = 1.0
    ) -> None:
        """Move to ``site`` with new CoAs ``ips``: gather and re-register from the new CoA
        first, then restart ICE with every peer we offered to (a new agent: the old CoAs must
        not stay candidates, and ``IceAgent`` cannot drop a local candidate). The old addresses
        go ``linger_s`` after that (make-before-break: the old path carries data until the new
        registration is in place), or at once (break-before-make)."""
        now = self.net.now
        old = list(self.hosts)
        new = [(str(ip_address(ip)), self.port) for ip in ips]
        for address in new:
            self.net.attach(site, address[0], self)
        self.hosts = new + old
        self._retiring.update(old)

        def release(t: float) -> None:
            for address in old:
                self.net.detach(address[0])
                self.srflx.pop(address, None)
                self._retiring.discard(address)
                if address in self.hosts:
                    self.hosts.remove(address)

        if not make_before_break:
            release(now)

        def ready(t: float) -> None:
            if make_before_break:
                self._later(t + linger_s, release)
            for session in self.sessions.values():
                if session.offerer:
                    self._rebuild(t, session)

        self._when_ready.append(ready)
        for base in new:
            self._gather(now, base)
        self._register(now, new[0])

    def _rebuild(self, now: float, session: Session) -> None:
        if session.agent.selected_pair() is not None:
            session.path_log.append((now, None, "moved"))
        session.agent = self._new_agent(True)
        self.stats["rebuilt_on_move"] += 1
        self._new_generation(now, session)


# -- measurements ---------------------------------------------------------------------------------


def max_rate(times: list[float], window_s: float = 1.0) -> int:
    """The most events in any window of ``window_s`` (sliding)."""
    best = start = 0
    for end in range(len(times)):
        while times[end] - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def agree(net: SimNet, a: Session, b: Session) -> bool:
    """Both on T, or both on the same 5-tuple as the network carries it now."""
    pa, pb = a.path(), b.path()
    if pa is None or pb is None:
        return pa is None and pb is None
    forward = net.translate(*pa)
    backward = net.translate(*pb)
    return forward == (pb[1], pb[0]) and backward == (pa[1], pa[0])


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

HA_IP6 = "2001:db8:ffff::1"
HA_IP4 = "198.51.100.1"
HOA_MN = "2001:db8:aaaa::1"
HOA_PEER = "2001:db8:aaaa::2"


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


@dataclass
class World:
    net: SimNet
    ha: HomeAgent
    mn: MipNode
    peer: MipNode
    mn_site: Site
    peer_site: Site
    home: Site

    def mn_session(self) -> Session | None:
        return self.mn.sessions.get(self.peer.identity)

    def peer_session(self) -> Session | None:
        return self.peer.sessions.get(self.mn.identity)

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


def build_world(
    seed: int,
    *,
    mn: SiteKind = "open",
    peer: SiteKind = "open",
    peer_role: PeerRole = "cn",
    families: str = "6",
    config: IceConfig | None = None,
    data_interval_s: float = 0.2,
    access: LinkProfile | None = None,
    core: LinkProfile | None = None,
    start: bool = True,
    crossing: bool = False,
) -> World:
    """MN (HoA ``HOA_MN``) in a ``mn`` site, a plain CN or a second MN in a ``peer`` site,
    one HA; the MN offers ICE to the peer once registered (and a second MN offers to the first
    at the same time when ``crossing``)."""
    net = SimNet(seed, core=core)
    home = net.add_site(Site("home", link=LinkProfile(latency_s=0.002)))
    ha = HomeAgent(net, home, ip6=HA_IP6, ip4=HA_IP4, hoas=[HOA_MN, HOA_PEER])
    mn_ips, mn_nat = site_addresses(1, mn, families)
    peer_ips, peer_nat = site_addresses(2, peer, families)
    mn_site = make_site(net, "mn-net", mn, mn_nat, access)
    peer_site = make_site(net, "peer-net", peer, peer_nat, access)
    mn_node = MipNode(net, "mn", ha=ha, hoa=HOA_MN, config=config, data_interval_s=data_interval_s)
    mn_node.attach(mn_site, *mn_ips)
    if peer_role == "mn":
        peer_node = MipNode(
            net, "peer", ha=ha, hoa=HOA_PEER, config=config, data_interval_s=data_interval_s
        )
    else:
        peer_node = MipNode(net, "peer", config=config, data_interval_s=data_interval_s)
    peer_node.attach(peer_site, *peer_ips)
    world = World(net, ha, mn_node, peer_node, mn_site, peer_site, home)
    if start:
        peer_node.start(net.now)
        mn_node.start(net.now)
        mn_node.connect(peer_node.identity)
        if crossing:
            assert peer_role == "mn", "only a mobile node offers"
            peer_node.connect(mn_node.identity)
    return world


# -- scripted faults and readings -----------------------------------------------------------------


def block_between(ip_a: str, ip_b: str) -> Rule:
    """A core rule dropping every packet between two addresses, both ways, any port."""
    ends = frozenset((ip_a, ip_b))

    def rule(now: float, pkt: Packet) -> bool:
        return pkt.src[0] in ends and pkt.dst[0] in ends and pkt.src[0] != pkt.dst[0]

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
    for t, path, _ in session.path_log:
        if t >= since and (path is not None) == direct:
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
