"""The mobile node as one pure state machine: registration, every path, the forwarding table.

Theory of operation (DESIGN §4-§5). :class:`MobileNode` owns

* the home registration (:class:`~mipnode.core.mn.MobileNodeCore`: BU/BA, RFC 4285),
* the home path (:class:`~mipnode.core.home_path.HomePath`: T-native and T-udp as one ICE check
  list against the ICE-lite home agent),
* D-udp with correspondents (:class:`~mipnode.core.direct_paths.DirectPaths`: one ICE agent per
  peer; the mobile node's correspondent role for other mobile nodes is the same engine),
* D-native (:class:`~mipnode.core.d_native.DNativePaths`: return routability, probes),

and turns what they decide into a forwarding table the driver applies per packet
(:class:`ForwardingChanged`): for every destination the routes to try in order of DESIGN §2
preference (``ice.score.PATH_KIND_RANK``, the one place it is defined), and a default route --
the selected home pair -- for everything else. A packet to a destination without an entry is a
miss: the driver sends it on the default route and tells the core once
(:meth:`MobileNode.new_destination`), which may start D-udp and D-native with it and installs an
entry (possibly empty: "use the default") that expires when the question is worth asking again.

The home path decides where the registration goes: a newly selected home pair carries a new BU
at once (make-before-break after a move: data stays on the old pair until the home agent
acknowledges the new one), the pair's heartbeats prove it every second, and when it dies the
best pair still answering takes data and registration together. An acknowledged registration is
also an authenticated answer on its pair (``IceAgent.path_confirmed``). Keepalives (an echo to
the home agent from the home address every ``keepalive_interval_s`` and right after each BA)
keep NATs and conntrack fresh and measure the RTT through the tunnel.

Protection (DESIGN §3). With ``suite`` set, every registration keys a new pair of ESP SAs
(core/esp_keys.py) and :class:`EspKeyed` hands them to the driver, which seals everything it
sends through the home agent and opens what comes back. Binding Updates too (RFC 6275 §5.1
protects them with ESP, and a firewall that passes only ESP must carry the refreshes of a
T-native registration), but every other one goes in clear: a home agent that lost its SAs
hears the next transmission, which RFC 4285 authenticates on its own. Checks before the first
registration run in clear; from the first BA on, the home path's checks and heartbeats go
sealed, so a pair whose protected form does not cross the firewalls (ESP dropped) dies like any
dead pair and the next one takes over. What arrives from the home agent in clear then reaches
this core only if it is authenticated on its own (a BA or BRR with the MN-HA authenticator, a
check answer with STUN integrity); clear data, offers and return-routability messages are
dropped (``drop_clear_from_home_agent``): an off-path sender can forge the home agent's outer
address, not its SA.

Everything is driven by ``now`` (monotonic seconds) and injected randomness; wall time enters
only as ``wall_offset`` for RFC 4285 timestamps and for the POSIX times views show.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from ice.candidate import TransportAddress
from ice.score import PATH_KIND_RANK
from mipnode.core import mn_ping
from mipnode.core.d_native import (
    DNativeChanged,
    DNativeEnded,
    DNativePaths,
    is_correspondent,
)
from mipnode.core.direct_paths import Change, DirectPathChanged, DirectPaths
from mipnode.core.home_path import Access, HomePair, HomePath, HomeTargets
from mipnode.core.ipv4_networks import ipv6_only
from mipnode.core.mn import (
    BindingLost,
    Deregistered,
    MnCoreConfig,
    MobileNodeCore,
    Registered,
    RegistrationRejected,
)
from mipnode.core.mn_diagnosis import (
    UNREACHABLE,
    AccessFacts,
    rejection_text,
    unacknowledged_text,
    unreachable_text,
)
from mipnode.core.mn_hosts import HostPaths, flow_key, split_key
from mipnode.core.mn_prefixes import HomePrefixes
from mipnode.core.transmit import (
    NATIVE_PORT,
    Deliver,
    EspKeyed,
    SendHome,
    SendUdp,
    Transmit,
)
from mipnode.core.views import (
    address_text,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_HOPOPTS, NH_ICMPV6, NH_MH, NH_ROUTING, NH_UDP
from mipnode.wire.mh import ExperimentalMessage, MhType, decode_mh_untrusted, encode_mh
from mipnode.wire.packets import (
    D_NATIVE_PROBE_IDENT,
    ICMPV6_ECHO_REPLY,
    ICMPV6_PARAMETER_PROBLEM,
    KEEPALIVE_IDENT,
    STUN_PORT,
    echo_request,
    ipv6_packet,
)
from mipnode.wire.prefix_discovery import ICMPV6_MOBILE_PREFIX_ADVERTISEMENT
from tunnels.ro import remove_type2_routing_header_untrusted

RandomBytes = Callable[[int], bytes]

# Implementation constants
REGISTRATION_STUCK_S = 12.0  # checks answered but no BA for this long: say so
REJECTION_RETRY_S = 60.0  # after a refusal, register again this much later
MOVE_OVERLAP_S = 5.0  # the old access network's sockets stay open at most this long
DEST_TTL_S = 60.0  # a destination entry without a direct path is reconsidered this often
MAX_DESTINATIONS = 4096  # forwarding table entries (the oldest empty one goes first)
DIRECT_IDLE_S = 300.0  # no traffic for this long: stop offering direct paths to a peer
HOST_RETRY_S = 600.0  # a host's flow refused or never answered: offered again this much later
KEEPALIVE_PAYLOAD = b"mipnode keepalive".ljust(64, b".")  # >= a BRR: amplification <= 1
MAX_CHANGES = 20
DIAGNOSIS_REPEAT_S = 30.0  # an unchanged diagnosis is told again at most this often


@dataclass(frozen=True, slots=True)
class MobileNodeConfig:
    home_address: IPv6Address
    home_agent: IPv6Address
    spi: int
    key: bytes = field(repr=False)
    home_agent_ipv4: IPv4Address | None = None
    home_agent_ports: tuple[int, ...] = (4191,)
    paths: frozenset[str] = frozenset({"T-native", "T-udp"})
    lifetime_s: int = 600
    route_optimization: bool = True
    keepalive_interval_s: float = 15.0
    suite: int | None = None  # ESP suite (tunnels.esp) keyed by every registration; None: off
    mobile_network_prefixes: tuple[IPv6Network, ...] = ()  # a mobile router's (RFC 3963)
    implicit_prefixes: bool = False  # the HA knows them: the BUs name none
    ipv4_home_address: IPv4Address | None = None  # RFC 5555: asked for (0.0.0.0: any); None: off


@dataclass(frozen=True, slots=True)
class Route:
    """One way to send data: a path kind and its endpoints (``care_of`` for D-native)."""

    kind: str
    local: TransportAddress
    remote: TransportAddress
    care_of: bytes | None = None
    sealed: bool = False  # D-udp: ESP under the SA of EspKeyed(peer=dst)


@dataclass(frozen=True, slots=True)
class ForwardingChanged:
    """Install ``routes`` for ``dst`` (``None``: the default route, i.e. the home path):
    16 octets, a destination of the home address's traffic, or 32, a flow ``host ‖ destination``
    of a host behind a mobile router (core/mn_hosts.py ``flow_key``). ``routes`` are tried in
    order; an empty tuple means "the default"; ``None`` removes the entry (the next packet is a
    miss again)."""

    dst: bytes | None
    routes: tuple[Route, ...] | None


@dataclass(frozen=True, slots=True)
class AccessRetired:
    """The old access network's sockets may close (the new registration is in place)."""

    access: Access


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line (``level``: info, warning, error); ``key`` groups repeats."""

    level: str
    key: str
    text: str


@dataclass(frozen=True, slots=True)
class Ipv4HomeAddressChanged:
    """The home agent gave an IPv4 home address (RFC 5555), another, or none (``None``): the
    driver puts it on the TUN, with the IPv4 default route into it."""

    address: IPv4Address | None


@dataclass(frozen=True, slots=True)
class DeregistrationDone:
    confirmed: bool


MobileNodeEvent = (
    ForwardingChanged | AccessRetired | Notice | DeregistrationDone | Ipv4HomeAddressChanged
)


class MobileNode:
    """The mobile node's node core (module docstring); five verbs plus its inputs."""

    def __init__(
        self,
        config: MobileNodeConfig,
        *,
        now: float,
        random_bytes: RandomBytes,
        wall_offset: float = 0.0,
    ) -> None:
        self.config = config
        self._random = random_bytes
        self.wall_offset = wall_offset
        self._hoa = config.home_address
        self._hoa_bytes = config.home_address.packed
        self._ha = config.home_agent
        self._ha_bytes = config.home_agent.packed
        self._targets = HomeTargets(
            config.home_agent, config.home_agent_ipv4, config.home_agent_ports, config.paths
        )
        self.registration = MobileNodeCore(
            MnCoreConfig(
                home_address=config.home_address,
                home_agent=config.home_agent,
                spi=config.spi,
                key=config.key,
                lifetime_s=config.lifetime_s,
                suite=config.suite,
                mobile_network_prefixes=config.mobile_network_prefixes,
                implicit_prefixes=config.implicit_prefixes,
                ipv4_home_address=config.ipv4_home_address,
            ),
            initial_sequence=self._rand16(),
            wall_offset=wall_offset,
            random_bytes=random_bytes,
        )
        self.keyed = False  # a registration keyed ESP SAs (protection on)
        self.ipv4_home_address: IPv4Address | None = None  # given by the home agent (RFC 5555)
        self._bu_in_clear = False  # the next BU goes in clear (every other one once keyed)
        self.direct: DirectPaths | None = None
        self.d_native: DNativePaths | None = None
        self.hosts: HostPaths | None = None  # a mobile router's direct paths for its hosts
        self._networks = ipv6_only(config.mobile_network_prefixes)  # hosts with direct paths
        if config.route_optimization and self._networks:
            self.hosts = HostPaths(self._networks, random_bytes=random_bytes, suite=config.suite)
        if config.route_optimization:
            self.direct = DirectPaths(
                controlling=True,
                random_bytes=random_bytes,
                suite=config.suite,
                require_keys=config.suite is not None,
            )
            self.d_native = DNativePaths(
                config.home_address,
                config.home_agent,
                random_bytes=random_bytes,
                initial_sequence=self._rand16(),
            )
        self.started_at = now
        self.access: Access | None = None
        self.home: HomePath | None = None
        self._retiring: tuple[Access, float] | None = None
        self._home_pair: HomePair | None = None  # the default route (kept after a death)
        self._registering_on: HomePair | None = None
        self._registering_since: float | None = None
        self._bad_auth_seen = 0
        self._retry_registration_at: float | None = None
        self.home_changes: deque[Change] = deque(maxlen=MAX_CHANGES)  # shown by `paths`
        self.home_since: float | None = None
        self.ro_changes: dict[IPv6Address, deque[Change]] = {}
        self.diagnosis: str | None = None
        self.diagnosis_since: float | None = None
        self._diagnosis_told = 0.0
        self.last_rejection: int | None = None
        self.first_registration_s: float | None = None
        self.moved_at: float | None = None
        self.last_handover_s: float | None = None
        self._keepalive_seq = 0
        self._keepalive_at: float | None = None
        self._keepalives: dict[int, float] = {}
        self.keepalive_rtt_s: float | None = None
        self._deregistering = False
        # Destinations: bytes -> routes installed; default entries expire (heap of deadlines).
        self._dests: OrderedDict[bytes, tuple[Route, ...]] = OrderedDict()
        self._dest_expiry: dict[bytes, float] = {}
        self._dest_heap: list[tuple[float, bytes]] = []
        self._last_traffic: dict[bytes, float] = {}
        self._backoff: dict[bytes, float] = {}
        self._out: list[Transmit] = []
        # (home check list, its mapped addresses) once gathering was done: _settle asks after
        # every input, and re-adding the same server-reflexive candidates costs per packet.
        self._gathered_from: tuple[HomePath, dict[object, TransportAddress]] | None = None
        self._events: deque[MobileNodeEvent] = deque()
        self._counters: Counter[str] = Counter()
        self.home_prefixes = HomePrefixes(self._hoa, self._ha)  # RFC 6275 §11.4 (mn_prefixes)

    # -- commands ----------------------------------------------------------------------------

    def set_access(self, now: float, access: Access) -> None:
        """The access network (first call), or a new one (movement, DESIGN §4): check the home
        agent from it, register over its best pair (the old one keeps carrying data until the
        home agent acknowledges), restart ICE with every correspondent, route-optimise anew."""
        old = self.access
        if old == access:
            return
        self.access = access
        if old is not None:
            self._counters["movements"] += 1
            self.moved_at = now
            if self._retiring is not None:  # moved again before the last move settled
                self._events.append(AccessRetired(self._retiring[0]))
            self._retiring = (old, now + MOVE_OVERLAP_S)
            self._notice(
                "info",
                "movement",
                f"movement: {_access_text(old)} -> {_access_text(access)}",
            )
        self.home = HomePath(self._hoa, self._targets, access, random_bytes=self._random)
        if not self.home.pairs:
            self._set_diagnosis(now, unreachable_text([], self._access_facts()))
        gathering = any(p.kind == "T-udp" for p in self.home.pairs.values())
        if self.direct is not None:
            self.direct.set_local_candidates(now, access.udp_sockets, gathering=gathering)
        if self.hosts is not None:
            self.hosts.set_local_candidates(now, access.udp_sockets, gathering=gathering)
        if self.d_native is not None:
            self.d_native.set_care_of(now, access.ipv6)
        self._settle(now)

    def deregister(self, now: float) -> bool:
        """Shutting down (RFC 6275 §11.5.4-style goodbye): delete the bindings at
        correspondents and at the home agent. False when there is nothing to deregister."""
        self._deregistering = True
        if self.d_native is not None:
            self.d_native.stop_all(now)
        state = self.registration.state
        if state not in ("registered", "registering") or self._home_pair is None:
            self._settle(now)
            return False
        self.registration.deregister(now)
        self._settle(now)
        return True

    # -- inputs ------------------------------------------------------------------------------

    def receive_udp(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        """A STUN datagram on one of our UDP sockets (the driver demultiplexed DESIGN §3)."""
        if self.home is not None and self.home.receive_answer(now, data, local, remote):
            pass
        elif self.direct is not None:
            self.direct.receive_datagram(now, data, local, remote)
            if self.hosts is not None:
                self.hosts.receive_datagram(now, data, local, remote)
        else:
            self._drop("udp_stun_unexpected")
        self._settle(now)

    def receive_tunnelled(
        self,
        now: float,
        inner: bytes,
        local: TransportAddress,
        remote: TransportAddress,
        protected: bool = False,
    ) -> None:
        """An inner packet from the home agent on the home pair ``local`` <- ``remote`` that
        the driver's fast path did not deliver itself: signalling, answers to checks and
        keepalives, ICMPv6 errors, and anything unusual; ``protected``: it came in ESP."""
        if protected or self.config.suite is None or self._authenticated_alone(inner):
            self._tunnelled(now, inner, local, remote)
        else:
            self._drop("clear_from_home_agent")
        self._settle(now)

    def ping(self, now: float, peer: IPv6Address, kind: str | None = None) -> mn_ping.PingRound:
        """`mipnode ping`: one probe on every candidate path to ``peer`` (core/mn_ping.py)."""
        round_ = mn_ping.start(self, now, peer, kind)
        self._settle(now)
        return round_

    def request_rekey(self, now: float) -> None:
        """The driver's outbound SA nears the end of its sequence numbers: register again on
        the same pair now, which keys a new one (DESIGN §3)."""
        if self.registration.state == "registered" and self._home_pair is not None:
            self._counters["rekeys_for_sequence"] += 1
            self._register_on(now, self._home_pair)
            self._settle(now)

    def rekey_direct(self, now: float, owner: bytes) -> None:
        """The driver's SA of the D-udp pair ``owner`` names (a correspondent, or a host's
        flow: ``ForwardingChanged.dst``) nears the end of its sequence numbers: an ICE restart
        brings new descriptions, new shares, new keys."""
        self._counters["direct_rekeys_for_sequence"] += 1
        if len(owner) == 32 and self.hosts is not None:
            host, cn = split_key(owner)
            self.hosts.restart(now, host, cn, "esp rekey")
        elif len(owner) == 16 and self.direct is not None:
            self.direct.restart(now, IPv6Address(owner), "esp rekey")
        self._settle(now)

    def receive_native(self, now: float, pkt: bytes) -> None:
        """A packet to our care-of address the driver's tap saw: a Care-of Test, a Binding
        Error, or something carrying a type 2 routing header (a BA or a probe answer from a
        correspondent, or data before its D-native path is proven)."""
        self._native(now, pkt)
        self._settle(now)

    def new_destination(self, now: float, dst: bytes) -> None:
        """The data plane has no entry for ``dst`` (a destination, or a host's flow: see
        :class:`ForwardingChanged`): decide its routes once."""
        if dst not in self._dests:
            self._counters["destinations_seen"] += 1
            self._maybe_start(now, dst)
            self._install(now, dst)
        self._settle(now)

    def traffic_seen(self, now: float, dsts: set[bytes]) -> None:
        """Destinations with a direct route that carried data since the last report."""
        for dst in dsts:
            self._last_traffic[dst] = now
            if self.d_native is not None and len(dst) == 16:
                cn = IPv6Address(dst)
                self.d_native.traffic_seen(now, cn)
                if self.d_native.ready_since(cn) is None:
                    self._maybe_start(now, dst)  # D-native may be back: it is the better path
        self._settle(now)

    def send_failed(
        self, now: float, local: TransportAddress, remote: TransportAddress, reason: str
    ) -> None:
        """The driver could not send on ``local`` -> ``remote`` (an errno name), or the network
        answered with an ICMP error (its words); the diagnosis names it."""
        if self.home is not None:
            self.home.send_failed(local, remote, reason)
        self._counters["send_failures"] += 1

    # -- the five verbs ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.registration.handle_timer(now)
        if self.home is not None:
            self.home.agent.handle_timer(now)
        if self.direct is not None:
            self.direct.handle_timer(now)
        if self.hosts is not None:
            self.hosts.handle_timer(now)
        if self.d_native is not None:
            self.d_native.handle_timer(now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._send_keepalive(now)
        if self._retiring is not None and now >= self._retiring[1]:
            self._retire()
        if self._retry_registration_at is not None and now >= self._retry_registration_at:
            self._retry_registration_at = None
            self._register_on(now, None if self.home is None else self.home.selected())
        self._check_stuck(now)
        self._check_unreachable(now)
        while self._dest_heap and self._dest_heap[0][0] <= now:
            at, dst = heapq.heappop(self._dest_heap)
            if self._dest_expiry.get(dst) == at:
                self._forget_destination(dst)
        self._settle(now)

    def get_timer(self) -> float | None:
        deadlines = [
            self.registration.get_timer(),
            None if self.home is None else self.home.agent.get_timer(),
            None if self.direct is None else self.direct.get_timer(),
            None if self.hosts is None else self.hosts.get_timer(),
            None if self.d_native is None else self.d_native.get_timer(),
            self._keepalive_at,
            None if self._retiring is None else self._retiring[1],
            self._retry_registration_at,
            self._stuck_at(),
            self._dest_heap[0][0] if self._dest_heap else None,
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> MobileNodeEvent | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> dict[str, int]:
        stats = dict(self._counters)
        stats.update({f"registration_{k}": v for k, v in self.registration.statistics().items()})
        if self.home is not None:
            stats.update({f"home_{k}": v for k, v in self.home.agent.statistics().items()})
        if self.direct is not None:
            stats.update({f"direct_{k}": v for k, v in self.direct.statistics().items()})
        if self.d_native is not None:
            stats.update({f"d_native_{k}": v for k, v in self.d_native.statistics().items()})
        if self.hosts is not None:
            stats.update({f"hosts_{k}": v for k, v in self.hosts.statistics().items()})
        stats["destinations"] = len(self._dests)
        return stats

    # -- inspection ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.registration.state

    @property
    def home_pair(self) -> HomePair | None:
        """The home pair data and signalling use (the last selected one while none answers)."""
        return self._home_pair

    @property
    def registering_on(self) -> HomePair | None:
        """The home pair the registration under way (or the last one) went over."""
        return self._registering_on

    @property
    def nat(self) -> tuple[bool, bool]:
        """(NAT66, NAT44) as the home agent's answers showed."""
        return (False, False) if self.home is None else (self.home.nat66, self.home.nat44)

    def correspondent_path(self, cn: IPv6Address) -> str | None:
        """The kind of path data to ``cn`` takes now (None: no home path either)."""
        routes = self._dests.get(cn.packed)
        if routes:
            return routes[0].kind
        return None if self._home_pair is None else self._home_pair.kind

    def correspondents(self) -> list[IPv6Address]:
        """Every destination the node sends to (bounded), direct ones first."""
        direct = [] if self.direct is None else self.direct.peers
        known = [IPv6Address(d) for d in self._dests if len(d) == 16]
        return list(dict.fromkeys([*direct, *known]))

    def host_flows(self) -> list[tuple[IPv6Address, IPv6Address]]:
        """A mobile router's flows (host, correspondent) it offered direct paths for."""
        return [] if self.hosts is None else self.hosts.flows()

    def flow_path(self, host: IPv6Address, cn: IPv6Address) -> str | None:
        """The kind of path a host's data to ``cn`` takes now (None: no home path either)."""
        routes = self._dests.get(flow_key(host.packed, cn.packed))
        if routes:
            return routes[0].kind
        return None if self._home_pair is None else self._home_pair.kind

    # -- home path -----------------------------------------------------------------------------

    def _home_changed(self, now: float) -> None:
        """The home agent's check list selected another pair, or lost its selected one."""
        assert self.home is not None
        pair = self.home.selected()
        old = self._home_pair
        if pair is None:
            if old is not None:
                self._log_home(now, old.kind, None, "selected home pair lost")
            self._notice("warning", "home-path", "home path lost: no pair answers; checking all")
            return
        registering = self._registering_on
        if (
            old is not None
            and old.key == pair.key
            and (registering is None or registering.key == pair.key)
        ):
            return  # a BU started on another pair would be acknowledged for that pair: redo it
        snap = self.home.agent.selected_pair()
        rtt = "" if snap is None or snap.rtt_s is None else f" in {snap.rtt_s * 1000:.1f} ms"
        self._log_home(
            now,
            None if old is None else old.kind,
            pair.kind,
            f"check answered over IPv{pair.family}{rtt}",
        )
        self._notice(
            "info",
            "home-path",
            f"home path {pair.kind} over IPv{pair.family} to {_ta(pair.remote)} "
            f"(was {old.kind if old else 'none'})",
        )
        if self.diagnosis is not None and self.diagnosis.startswith(UNREACHABLE):
            self._set_diagnosis(now, None)  # answers again; a rejection stays until registered
        self._register_on(now, pair)

    def _register_on(self, now: float, pair: HomePair | None) -> None:
        if pair is None or self._deregistering:
            return
        self._registering_on = pair
        self._registering_since = now
        self._bad_auth_seen = self.registration.statistics().get("drop_bad_auth", 0)
        self._retry_registration_at = None
        self.registration.register(now, pair.care_of)

    def _on_ipv4(self, event: Registered) -> None:
        """RFC 5555 §3.2.1: what the home agent said of the IPv4 home address we asked for."""
        if event.ipv4_home_address != self.ipv4_home_address:
            self.ipv4_home_address = event.ipv4_home_address
            self._events.append(Ipv4HomeAddressChanged(event.ipv4_home_address))
        if event.ipv4_home_address is None:
            self._notice(
                "warning",
                "ipv4",
                f"home agent gave no IPv4 home address: status {event.ipv4_status}"
                " (RFC 5555 §3.2.1); IPv6 goes on",
            )

    def _log_home(self, now: float, old: str | None, new: str | None, reason: str) -> None:
        self.home_changes.append(Change(now, old, new, reason))
        self.home_since = now if new is not None else None

    def _on_registered(self, now: float, event: Registered) -> None:
        if event.ipv4_status is not None:
            self._on_ipv4(event)
        if event.keys is not None:
            # Before anything else is sent: the keepalive below already goes sealed.
            self.keyed = True
            self._bu_in_clear = False  # the next exchange starts sealed
            self._counters["esp_rekeys"] += 1
            self._out.append(EspKeyed(event.keys))  # in order with what it seals
        pair = self._registering_on
        if pair is None or self.home is None:
            return
        first = self.first_registration_s is None
        if first:
            self.first_registration_s = now - self.started_at
        self.home.registered_on = pair.key
        self.home.agent.path_confirmed(now, pair.local, pair.remote)
        changed = self._home_pair is None or self._home_pair.key != pair.key
        self._home_pair = pair
        self._registering_since = None
        self.last_rejection = None
        self._set_diagnosis(now, None)
        if changed:
            self._events.append(
                ForwardingChanged(None, (Route(pair.kind, pair.local, pair.remote),))
            )
        if (
            self.moved_at is not None
            and self.access is not None
            and (pair.local[0] in (str(self.access.ipv6), str(self.access.ipv4)))
        ):
            self.last_handover_s = now - self.moved_at
            self.moved_at = None
            self._notice(
                "info", "handover", f"handover done in {self.last_handover_s * 1000:.1f} ms"
            )
            self._retire()
            if self.direct is not None and self.direct.resend_offers(now):
                self._counters["offers_resent_after_handover"] += 1
            if self.hosts is not None and self.hosts.resend_offers(now):
                self._counters["host_offers_resent_after_handover"] += 1
        self._notice(
            "info" if changed or first else "debug",
            "registered",
            f"registered hoa={self._hoa} coa={address_text(event.care_of)} path={pair.kind} "
            f"lifetime={event.lifetime_s}s seq={event.sequence}",
        )
        if changed or first:
            # Destinations refused while we were not registered are asked about again.
            for dst, routes in list(self._dests.items()):
                if not routes:
                    self._forget_destination(dst)
        # A reverse-tunnelled packet right after each BA keeps the access firewall's state for
        # the home agent's packets fresh (DESIGN §4 conntrack hygiene).
        self._send_keepalive(now)
        if changed or first or self.home_prefixes.due(now):
            self._solicit_prefixes(now, force=changed or first)

    def _solicit_prefixes(self, now: float, *, force: bool) -> None:
        """A Mobile Prefix Solicitation to the home agent (core/mn_prefixes.py)."""
        message = self.home_prefixes.solicit(now, self._rand16(), force=force)
        if message is not None:
            self._send_home(ipv6_packet(self._hoa, self._ha, NH_ICMPV6, message))
            self._counters["prefix_solicitations_sent"] += 1

    def _prefix_advertisement(self, now: float, message: bytes) -> None:
        """RFC 6275 §11.4.3: take the answer to our latest solicitation; solicit again after
        an unsolicited one."""
        before = self.home_prefixes.advertised
        result = self.home_prefixes.receive_untrusted(now, message)
        if result == "unsolicited":
            self._counters["prefix_advertisements_unsolicited"] += 1
            self._solicit_prefixes(now, force=False)
            return
        if result != "taken":
            self._drop(result)
            return
        self._counters["prefix_advertisements_taken"] += 1
        adv = self.home_prefixes.advertised
        assert adv is not None
        listed = ", ".join(str(info.prefix) for info in adv.prefixes)
        if adv.holds_home_address or (before is not None and before.prefixes == adv.prefixes):
            self._notice("debug", "home_prefixes", f"home agent advertises {listed}")
        else:  # told when the list changes, not at every answer
            self._notice(
                "warning",
                "home_prefixes",
                f"home agent advertises {listed}; home address {self._hoa} is in none of them "
                "(the home network was renumbered, or the configuration is wrong)",
            )

    def _retire(self) -> None:
        if self._retiring is not None:
            self._events.append(AccessRetired(self._retiring[0]))
            self._retiring = None

    def _check_stuck(self, now: float) -> None:
        """Checks answered but no BA for REGISTRATION_STUCK_S: say why it may be."""
        at = self._stuck_at()
        pair = self._registering_on
        if at is None or now < at or pair is None or self.home is None:
            return
        bad_auth = self.registration.statistics().get("drop_bad_auth", 0)
        facts = next(
            (f for f in self.home.facts() if (f.kind, f.address) == (pair.kind, pair.remote[0])),
            None,
        )
        if facts is not None:
            self._set_diagnosis(
                now,
                unacknowledged_text(facts, REGISTRATION_STUCK_S, bad_auth - self._bad_auth_seen),
            )
        self._bad_auth_seen = bad_auth
        self._registering_since = now

    def _stuck_at(self) -> float | None:
        if self.registration.state != "registering" or self._registering_since is None:
            return None
        return self._registering_since + REGISTRATION_STUCK_S

    # -- keepalives ----------------------------------------------------------------------------

    def _send_keepalive(self, now: float) -> None:
        self._keepalive_at = now + self.config.keepalive_interval_s
        if self.registration.state != "registered" or self._home_pair is None:
            return
        self._keepalive_seq = (self._keepalive_seq + 1) & 0xFFFF
        self._keepalives[self._keepalive_seq] = now
        while len(self._keepalives) > 8:
            self._keepalives.pop(next(iter(self._keepalives)))
        probe = echo_request(
            self._hoa, self._ha, KEEPALIVE_IDENT, self._keepalive_seq, KEEPALIVE_PAYLOAD
        )
        self._send_home(probe)
        self._counters["keepalives_sent"] += 1

    # -- receiving -----------------------------------------------------------------------------

    def _tunnelled(
        self, now: float, inner: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self._drop("tunnel_not_ipv6")
            return
        src, dst, nh = inner[8:24], inner[24:40], inner[6]
        plen = int.from_bytes(inner[4:6], "big")
        payload = inner[40 : 40 + plen]
        from_ha = src == self._ha_bytes
        if dst == self._hoa_bytes:
            if nh == NH_MH:
                self._mh_to_home(now, payload, src, local, remote)
                return
            if (
                from_ha
                and nh == NH_UDP
                and len(payload) >= 8
                and self.home is not None
                and int.from_bytes(payload[:2], "big") == STUN_PORT
            ):
                self.home.receive_answer(now, payload[8:], local, remote)
                return
            if nh == NH_ICMPV6 and len(payload) >= 8:
                if from_ha and payload[0] == ICMPV6_MOBILE_PREFIX_ADVERTISEMENT:
                    self._prefix_advertisement(now, payload)
                    return
                if (
                    from_ha
                    and payload[0] == ICMPV6_ECHO_REPLY
                    and (int.from_bytes(payload[4:6], "big") == KEEPALIVE_IDENT)
                ):
                    self._keepalive_reply(now, int.from_bytes(payload[6:8], "big"))
                    return
                if payload[0] == ICMPV6_PARAMETER_PROBLEM and self._mh_refused(now, src, payload):
                    return
            self._out.append(Deliver(inner))
            return
        if self._networks and any(IPv6Address(dst) in n for n in self._networks):
            self._to_host(now, inner, src, dst, payload)
            return
        coa = None if self.access is None or self.access.ipv6 is None else self.access.ipv6.packed
        if (
            from_ha
            and dst == coa
            and nh == NH_UDP
            and len(payload) >= 8
            and self.home is not None
            and self.home.receive_answer(now, payload[8:], local, remote)
        ):
            return
        self._drop("tunnel_wrong_destination")

    def _to_host(self, now: float, inner: bytes, src: bytes, dst: bytes, payload: bytes) -> None:
        """From the home agent to a host behind this router, and not plain data: an answer to
        an offer we made on the host's behalf, a refusal of one (core/mn_hosts.py), or anything
        else for the host itself (ICMP errors, say: the kernel forwards it)."""
        nh = inner[6]
        host, peer = IPv6Address(dst), IPv6Address(src)
        mice = nh == NH_MH and len(payload) > 2 and payload[2] == MhType.EXPERIMENTAL
        if self.hosts is not None and mice:
            try:
                msg = decode_mh_untrusted(payload, peer, host)
            except BadPacket as exc:
                self._drop(f"host_mice_{exc.reason}")
                return
            if isinstance(msg, ExperimentalMessage):
                self.hosts.receive_signalling(now, host, peer, msg)
            else:
                self._drop("host_mice_not_experimental")
            return
        if (
            self.hosts is not None
            and nh == NH_ICMPV6
            and len(payload) >= 48
            and payload[0] == ICMPV6_PARAMETER_PROBLEM
            and self._host_offer_refused(now, payload, src, dst)
        ):
            return
        self._out.append(Deliver(inner))

    def _host_offer_refused(self, now: float, icmp: bytes, src: bytes, host: bytes) -> bool:
        """A Parameter Problem (code 1) for an offer made on ``host``'s behalf: that
        correspondent does not speak the Mobility Header (RFC 6275 §11.3.5)."""
        invoking = _refused_mh(icmp, host, src)
        if invoking is None or len(invoking) < 43 or invoking[42] != MhType.EXPERIMENTAL:
            return False
        if self.hosts is None:
            return False
        host_a, cn = IPv6Address(host), IPv6Address(src)
        if (host_a, cn) not in self.hosts.flows() or self.hosts.selected(host_a, cn):
            return False  # not ours, or a working pair unauthenticated ICMP must not end
        self._counters["correspondent_refused_mh_for_host"] += 1
        self.hosts.stop(now, host_a, cn)
        self._host_flow_ended(now, flow_key(host, src))
        return True

    def _host_flow_ended(self, now: float, key: bytes) -> None:
        """A host's flow that will not get a direct path (refused, or never answered): its
        entry stays on the home path until ``HOST_RETRY_S`` from now, so the host's next
        packets do not start it again."""
        self._backoff[key] = now + HOST_RETRY_S
        while len(self._backoff) > MAX_DESTINATIONS:
            self._backoff.pop(next(iter(self._backoff)))
        self._dests.pop(key, None)  # reinstalled with the back-off as its expiry
        self._install(now, key)

    def _authenticated_alone(self, inner: bytes) -> bool:
        """A clear packet from the home agent that needs no ESP to be believed (module
        docstring): MH from the home agent (BA, BRR: MN-HA authenticator) and check answers
        (STUN integrity) from its STUN port."""
        if len(inner) < 48 or inner[8:24] != self._ha_bytes:
            return False
        coa = None if self.access is None or self.access.ipv6 is None else self.access.ipv6.packed
        if inner[24:40] not in (self._hoa_bytes, coa):  # never a host's (core/mn_hosts.py)
            return False
        nh = inner[6]
        return nh == NH_MH or (nh == NH_UDP and int.from_bytes(inner[40:42], "big") == STUN_PORT)

    def _mh_to_home(
        self,
        now: float,
        mh: bytes,
        src: bytes,
        local: TransportAddress,
        remote: TransportAddress,
    ) -> None:
        peer = IPv6Address(src)
        if src == self._ha_bytes:
            refreshes = self.registration.brr_refreshes
            self.registration.receive_datagram(now, mh, self._ha, self._hoa)
            if self.registration.brr_refreshes != refreshes:
                # An authenticated BRR: the home agent asks us to register, typically because
                # it cannot open our ESP (it restarted): this BU goes in clear first.
                self._bu_in_clear = True
            return
        if len(mh) > 2 and mh[2] == MhType.EXPERIMENTAL:
            if self.direct is None:
                self._drop("mice_without_route_optimization")
                return
            try:
                msg = decode_mh_untrusted(mh, peer, self._hoa)
            except BadPacket as exc:
                self._drop(f"mice_{exc.reason}")
                return
            if not isinstance(msg, ExperimentalMessage):
                self._drop("mice_not_experimental")
                return
            self.direct.receive_signalling(now, peer, msg)
            return
        if self.d_native is not None:
            self.d_native.receive_mh(now, mh, peer, self._hoa)
        else:
            self._drop("mh_unexpected")

    def _mh_refused(self, now: float, src: bytes, icmp: bytes) -> bool:
        """RFC 6275 §11.3.5: Parameter Problem code 1 pointing at the Next Header of a packet
        we sent with a Mobility Header (a HoTI or an offer): ``src`` does not speak MH."""
        if _refused_mh(icmp, self._hoa_bytes, src) is None:
            return False
        cn = IPv6Address(src)
        self._counters["correspondent_refused_mh"] += 1
        if self.d_native is not None:
            self.d_native.receive_mh_refused(now, cn)
        if self.direct is not None:
            self.direct.stop(now, cn)
        self._notice(
            "info", "mh-refused", f"{cn} does not speak the Mobility Header: no direct paths"
        )
        return True

    def _keepalive_reply(self, now: float, seq: int) -> None:
        sent = self._keepalives.pop(seq, None)
        if sent is not None:
            self.keepalive_rtt_s = now - sent
            self._keepalives.clear()

    def _native(self, now: float, pkt: bytes) -> None:
        if self.access is None or self.access.ipv6 is None or len(pkt) < 40:
            self._drop("native_unexpected")
            return
        coa = self.access.ipv6
        if pkt[24:40] != coa.packed:
            self._drop("native_not_for_coa")
            return
        nh = pkt[6]
        cn = IPv6Address(pkt[8:24])
        plen = int.from_bytes(pkt[4:6], "big")
        if nh == NH_MH:  # CoT or Binding Error
            mh = pkt[40 : 40 + plen]
            if self.d_native is None:
                self._drop("native_mh_without_route_optimization")
            elif len(mh) > 2 and mh[2] == MhType.BE:
                self.d_native.receive_binding_error(now, cn, mh, coa)
            else:
                self.d_native.receive_mh(now, mh, cn, coa)
            return
        if nh != NH_ROUTING:
            self._drop("native_unexpected_header")
            return
        try:
            hoa, inner = remove_type2_routing_header_untrusted(pkt)
        except BadPacket as exc:
            self._drop(f"rh2_{exc.reason}")
            return
        if hoa != self._hoa_bytes:
            # RFC 6275 §11.3.3: the RH2 must carry our own home address; never forward.
            self._drop("rh2_not_our_home_address")
            return
        if inner[6] in (NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS):
            self._drop("rh2_inner_extension_header")  # nothing we know to deliver
            return
        if self.d_native is None:
            self._drop("rh2_without_route_optimization")
            return
        if inner[6] == NH_MH:  # BA from the correspondent
            self.d_native.receive_mh(now, inner[40:], cn, self._hoa)
            return
        if (
            inner[6] == NH_ICMPV6
            and len(inner) >= 64
            and inner[40] == ICMPV6_ECHO_REPLY
            and int.from_bytes(inner[44:46], "big") == D_NATIVE_PROBE_IDENT
        ):
            self.d_native.receive_probe_reply(now, cn, inner[48:64])
            return
        if self.d_native.ready_since(cn) is None:
            self._drop("rh2_without_binding")
            return
        self._out.append(Deliver(inner))

    # -- destinations and the forwarding table ---------------------------------------------

    def _maybe_start(self, now: float, dst: bytes) -> None:
        """Traffic to a correspondent: offer it direct UDP paths and try return routability
        (RFC 6275 §11.6), once registered (both travel through the home agent)."""
        if self.direct is None or self.d_native is None:
            return
        if self.registration.state != "registered" or self._backoff.get(dst, 0.0) > now:
            return
        if len(dst) == 32:  # a host behind this router (core/mn_hosts.py)
            host, cn = split_key(dst)
            ok = self.hosts is not None and is_correspondent(cn) and cn != self._ha
            if ok and self.hosts is not None and self.hosts.start(now, host, cn):
                self._last_traffic.setdefault(dst, now)  # idle counts from the start
            return
        cn = IPv6Address(dst)
        if not is_correspondent(cn) or cn in (self._ha, self._hoa):
            return
        self.d_native.want(now, cn, registered=True)
        self.direct.start(now, cn)

    def _routes(self, dst: bytes) -> tuple[Route, ...]:
        """The routes to ``dst`` in DESIGN §2 order (D-native before D-udp)."""
        if len(dst) == 32:  # a host's flow: D-udp only (core/mn_hosts.py)
            host, peer = split_key(dst)
            sel = None if self.hosts is None else self.hosts.selected(host, peer)
            if sel is None or self.hosts is None:
                return ()
            sealed = self.hosts.keyed(host, peer)
            return (Route("D-udp", sel.local.base, sel.remote.address, None, sealed),)
        cn = IPv6Address(dst)
        routes: list[Route] = []
        coa = None if self.access is None else self.access.ipv6
        # D-native carries plain packets (an HAO, an RH2: what an RFC 6275 correspondent reads);
        # under protection data takes sealed D-udp instead (docs/internals.md, "Direct paths
        # under protection"). Return routability still runs: it tells a correspondent that
        # speaks the Mobility Header from one that does not.
        native = self.config.suite is None and self.d_native is not None
        if native and coa is not None and self.d_native and self.d_native.ready_since(cn):
            routes.append(
                Route("D-native", (str(coa), NATIVE_PORT), (str(cn), NATIVE_PORT), coa.packed)
            )
        if self.direct is not None:
            sel = self.direct.selected(cn)
            if sel is not None:
                sealed = self.direct.keyed(cn)
                routes.append(Route("D-udp", sel.local.base, sel.remote.address, None, sealed))
        routes.sort(key=lambda r: PATH_KIND_RANK[r.kind])
        return tuple(routes)

    def _install(self, now: float, dst: bytes) -> None:
        routes = self._routes(dst)
        if self._dests.get(dst) == routes and dst in self._dests:
            return
        self._dests[dst] = routes
        self._dests.move_to_end(dst)
        if routes:
            self._dest_expiry.pop(dst, None)
        else:
            backoff = self._backoff.get(dst, 0.0)
            at = backoff if backoff > now else now + DEST_TTL_S
            self._dest_expiry[dst] = at
            heapq.heappush(self._dest_heap, (at, dst))
        self._events.append(ForwardingChanged(dst, routes))
        while len(self._dests) > MAX_DESTINATIONS:
            oldest = next((d for d, r in self._dests.items() if not r), None)
            if oldest is None:
                break
            self._forget_destination(oldest)

    def _forget_destination(self, dst: bytes) -> None:
        if self._dests.pop(dst, None) is not None:
            self._dest_expiry.pop(dst, None)
            self._last_traffic.pop(dst, None)
            self._events.append(ForwardingChanged(dst, None))

    def _ro_log(self, now: float, cn: IPv6Address, up: bool, reason: str) -> None:
        other = (
            "D-udp"
            if self.direct is not None and self.direct.selected(cn)
            else (None if self._home_pair is None else self._home_pair.kind)
        )
        log = self.ro_changes.setdefault(cn, deque(maxlen=MAX_CHANGES))
        log.append(
            Change(now, other, "D-native", reason) if up else Change(now, "D-native", other, reason)
        )
        while len(self.ro_changes) > MAX_DESTINATIONS:
            self.ro_changes.pop(next(iter(self.ro_changes)))

    def _direct_idle(self, now: float) -> None:
        if self.direct is None:
            return
        for cn in self.direct.peers:
            last = self._last_traffic.get(cn.packed)
            if last is not None and now - last > DIRECT_IDLE_S:
                self.direct.stop(now, cn)
                self._last_traffic.pop(cn.packed, None)
        for host, cn in self.host_flows():
            key = flow_key(host.packed, cn.packed)
            last = self._last_traffic.get(key)
            if last is not None and now - last > DIRECT_IDLE_S and self.hosts is not None:
                self.hosts.stop(now, host, cn)
                self._last_traffic.pop(key, None)

    # -- plumbing ----------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        """Drain every part's output and events until nothing moves (each may start another)."""
        for _ in range(16):
            moved = False
            if self.home is not None:
                for out in self.home.agent.datagrams_to_send(now):
                    self._out.append(self._protected(self.home.form(out)))
                    moved = True
                changed = False
                while self.home.agent.next_event() is not None:
                    changed = True
                if changed:
                    self._home_changed(now)
                    moved = True
                if self.direct is not None and self._gathered(now):
                    self.direct.gathering_done(now)
                    if self.hosts is not None:
                        self.hosts.gathering_done(now)
                if self.home.nat66 and self.d_native is not None:
                    # DESIGN §4: no native path through a NAT66 (checksums and care-of tokens
                    # name an address the translator rewrites).
                    self.d_native.set_care_of(now, None)
            for mh in self.registration.datagrams_to_send(now):
                self._send_home(ipv6_packet(mh.src, mh.dst, NH_MH, mh.data))
                moved = True
            while (event := self.registration.next_event()) is not None:
                self._on_registration_event(now, event)
                moved = True
            if self.d_native is not None:
                for t in self.d_native.transmissions():
                    if isinstance(t, SendHome):
                        self._send_home(t.packet)
                    else:
                        self._out.append(t)
                    moved = True
                while (d_event := self.d_native.next_event()) is not None:
                    self._on_d_native_event(now, d_event)
                    moved = True
            if self.direct is not None:
                for dgram in self.direct.datagrams_to_send(now):
                    self._out.append(SendUdp(dgram.local, dgram.remote, dgram.data))
                    moved = True
                for sig in self.direct.signalling_to_send():
                    self._send_home(
                        ipv6_packet(
                            self._hoa, sig.peer, NH_MH, encode_mh(sig.message, self._hoa, sig.peer)
                        )
                    )
                    moved = True
                while (p_event := self.direct.next_event()) is not None:
                    self._on_direct_event(now, p_event)
                    moved = True
            if self.hosts is not None and self._host_output(now):
                moved = True
            if not moved:
                break
        self._direct_idle(now)

    def _host_output(self, now: float) -> bool:
        """What the hosts' direct paths send and decide (core/mn_hosts.py): offers leave
        through the home agent from the host's address."""
        assert self.hosts is not None
        moved = False
        for dgram in self.hosts.datagrams_to_send(now):
            self._out.append(SendUdp(dgram.local, dgram.remote, dgram.data))
            moved = True
        for host, sig in self.hosts.signalling_to_send():
            mh = encode_mh(sig.message, host, sig.peer)
            self._send_home(ipv6_packet(host, sig.peer, NH_MH, mh))
            moved = True
        for host, event in self.hosts.events():
            self._on_direct_event(now, event, host)
            moved = True
        for host, cn in self.hosts.gave_up():
            self._counters["host_flows_unanswered"] += 1
            self._host_flow_ended(now, flow_key(host.packed, cn.packed))
            moved = True
        return moved

    def _gathered(self, now: float) -> bool:
        """Every T-udp pair of the home check list answered or failed once (so D-udp knows
        every server-reflexive address it will learn from the home agent)."""
        if self.home is None or self.direct is None:
            return False
        if self._gathered_from == (self.home, self.home.mapped):
            return True  # done for this access network, and no address learnt since
        for pair, snap in self.home.snapshots():
            if pair.kind != "T-udp":
                continue
            mapped = self.home.mapped.get(pair.key)
            if mapped is not None:
                self.direct.add_server_reflexive(pair.local, mapped, pair.remote[0])
                if self.hosts is not None:
                    self.hosts.add_server_reflexive(pair.local, mapped, pair.remote[0])
            elif snap.checks_answered == 0 and str(snap.state) != "failed":
                return False
        self._gathered_from = (self.home, dict(self.home.mapped))
        return True

    def _on_registration_event(self, now: float, event: object) -> None:
        if isinstance(event, Registered):
            self._on_registered(now, event)
        elif isinstance(event, RegistrationRejected):
            self.last_rejection = int(event.status)
            self._registering_since = None
            self._retry_registration_at = now + REJECTION_RETRY_S
            self._set_diagnosis(now, rejection_text(self.last_rejection), level="error")
        elif isinstance(event, BindingLost):
            self._notice("warning", "binding-lost", "binding expired without a refresh")
            self._registering_since = now
        elif isinstance(event, Deregistered):
            self._events.append(DeregistrationDone(event.confirmed))

    def _on_d_native_event(self, now: float, event: object) -> None:
        if isinstance(event, DNativeChanged):
            self._ro_log(now, event.cn, event.up, event.reason)
            self._notice(
                "info",
                "d-native",
                f"path to {event.cn}: {'D-native' if event.up else 'not D-native'} "
                f"({event.reason})",
            )
            self._install(now, event.cn.packed)
        elif isinstance(event, DNativeEnded):
            dst = event.cn.packed
            self._backoff[dst] = now + event.retry_s
            while len(self._backoff) > MAX_DESTINATIONS:
                self._backoff.pop(next(iter(self._backoff)))
            # D-udp is pointless only with a peer that never answered our offer (it has no
            # pairs): one that did speaks M-ICE, e.g. another mobile node, which never answers
            # return routability, and whose direct path may just be down for a while.
            talks = self.direct is not None and bool(self.direct.pairs(event.cn))
            if self.direct is not None and (event.reason == "idle" or (event.quiet and not talks)):
                self.direct.stop(now, event.cn)
            if dst in self._dests:
                self._install(now, dst)

    def _on_direct_event(
        self, now: float, event: DirectPathChanged, host: IPv6Address | None = None
    ) -> None:
        """A D-udp pair selected or lost: with ``host``, for that host's flow."""
        whose = "" if host is None else f" for {host}"
        self._notice(
            "info",
            "d-udp",
            f"path to {event.peer}{whose}: {'D-udp' if event.pair else 'not D-udp'} "
            f"({event.reason})",
        )
        dst = event.peer.packed if host is None else flow_key(host.packed, event.peer.packed)
        if event.keys is not None:
            self._out.append(EspKeyed(event.keys, dst))  # before the route that seals with it
        if event.pair is not None or dst in self._dests:
            self._install(now, dst)

    def _send_home(self, packet: bytes) -> None:
        """An inner packet through the home agent: on the selected home pair, else on the one
        data uses (it may still carry; nothing better is known)."""
        pair = None if self.home is None else self.home.selected()
        pair = pair or self._home_pair
        if pair is None:
            self._drop("no_home_path")
            return
        self._out.append(self._protected(SendHome(packet, pair.local, pair.remote)))

    def _protected(self, out: Transmit) -> Transmit:
        """Seal what goes through the home agent once keyed; Binding Updates alternate, sealed
        first (module docstring: a firewall passing only ESP, a home agent without SAs)."""
        if not self.keyed or not isinstance(out, SendHome):
            return out
        p = out.packet
        if len(p) >= 40 and p[6] == NH_MH and p[24:40] == self._ha_bytes:
            clear, self._bu_in_clear = self._bu_in_clear, not self._bu_in_clear
            if clear:
                self._counters["bu_sent_clear"] += 1
                return out
        return SendHome(p, out.local, out.remote, protect=True)

    def _set_diagnosis(self, now: float, text: str | None, level: str = "warning") -> None:
        """Why registration does not work (None: it does); told once, repeated rarely."""
        if text == self.diagnosis:
            if text is not None and now - self._diagnosis_told >= DIAGNOSIS_REPEAT_S:
                self._diagnosis_told = now
                since = now - (self.diagnosis_since or now)
                self._notice(level, "diagnosis", f"{text} (for {since:.0f} s)")
            return
        if text is None:
            self._notice("info", "diagnosis", f"diagnosis cleared (was: {self.diagnosis})")
            self.diagnosis_since = None
        else:
            self._notice(level, "diagnosis", text)
            self.diagnosis_since = now
        self.diagnosis = text
        self._diagnosis_told = now

    def _check_unreachable(self, now: float) -> None:
        """No home pair answers (RFC 4487 §5.3): say what was sent and what came back."""
        if self.home is None or self._deregistering:
            return
        if self.home.selected() is None and self.home.all_failed():
            self._set_diagnosis(now, unreachable_text(self.home.facts(), self._access_facts()))

    def _access_facts(self) -> AccessFacts:
        a = self.access
        if a is None:
            return AccessFacts(None, None, None)
        return AccessFacts(
            a.ifname,
            None if a.ipv6 is None else str(a.ipv6),
            None if a.ipv4 is None else str(a.ipv4),
        )

    def _notice(self, level: str, key: str, text: str) -> None:
        self._events.append(Notice(level, key, text))

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _rand16(self) -> int:
        return int.from_bytes(self._random(2), "big")


def _refused_mh(icmp: bytes, sender: bytes, peer: bytes) -> bytes | None:
    """The invoking packet of a Parameter Problem code 1 (RFC 4443 §3.4) about a Mobility
    Header ``sender`` sent to ``peer``, or None: the answer of a node without the Mobility
    Header (RFC 6275 §11.3.5)."""
    invoking = icmp[8:]
    if icmp[1] != 1 or len(invoking) < 40 or invoking[6] != NH_MH:
        return None
    if invoking[8:24] != sender or invoking[24:40] != peer:
        return None
    return invoking


def _ta(address: TransportAddress) -> str:
    if address[1] == NATIVE_PORT:
        return address[0]
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"


def _access_text(a: Access) -> str:
    return f"{a.ifname} coa6={a.ipv6} addr4={a.ipv4}"
