"""D-native with correspondents: when to route-optimise, proving the path, giving it up (sans-IO).

Theory of operation (DESIGN §2, §4; RFC 6275 §11.6-§11.7). The return routability procedure
and the correspondent registrations are :class:`~mipnode.core.mn_ro.RouteOptimizationCore`'s;
this core decides *when* to run them and whether data may use the result:

* **Start** (:meth:`DNativePaths.want`): traffic to a new correspondent, while the home
  registration holds (the HoTI travels through the home agent), with native IPv6 and no NAT66
  (checksums and care-of tokens name the care-of address), at most ``max_peers`` at once.
  Multicast, link-local, loopback and our own
  or the home agent's addresses are never correspondents.
* **Proof**: a binding at the correspondent is not a path. Data moves to D-native only after an
  echo request sent in D-native form (a Home Address option from the care-of address) comes
  back in an RH2 with the random nonce it carried; up to ``probe_tries`` probes
  ``probe_interval_s`` apart. Unanswered (a firewall in front of us drops RH2 packets as
  conntrack-invalid, RFC 4487 §5.1) the binding is deleted, or the correspondent's replies
  would be lost, and D-native is not tried again for ``retry_s``.
* **Heartbeats**: every ``heartbeat_s`` a probe on each D-native path; silence for
  ``dead_after_s`` means back to the other paths (within 3 s, DESIGN §4), tried again after
  ``retry_fast_s``.
* **Ending**: no traffic for ``idle_s``, no binding within ``give_up_s`` (a plain host, or one
  that cannot be reached), a rejection, an expiry, a Binding Error (RFC 6275 §11.3.6: status 1
  means the correspondent lost our binding, try again soon), or an ICMPv6 Parameter Problem
  code 1 for our HoTI (RFC 6275 §11.3.5: it does not speak the Mobility Header; never again).
  :class:`DNativeEnded` tells the node core, which holds the back-off (it gates D-udp offers to
  the same correspondent too) and may stop the correspondent's direct UDP.

Outputs are complete IPv6 packets: :class:`~mipnode.core.transmit.SendNative` (from the care-of
address, with a Home Address option where needed) and :class:`~mipnode.core.transmit.SendHome`
(from the home address, through the home agent: HoTI and deletions).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from mipnode.core.mn_ro import (
    RoBinding,
    RoConfig,
    RouteOptimizationCore,
    RouteOptimizationEnded,
    RouteOptimizationExpired,
    RouteOptimizationFailed,
    RouteOptimized,
)
from mipnode.core.transmit import SendHome, SendNative, Transmit
from mipnode.core.types import OutgoingMh
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import build_packet_with_hao
from mipnode.wire.ipv6 import NH_MH
from mipnode.wire.mh import BindingError, MhType, decode_mh_untrusted
from mipnode.wire.packets import D_NATIVE_PROBE_IDENT, echo_request, ipv6_packet
from tunnels.ro import add_home_address_option

RandomBytes = Callable[[int], bytes]

# Implementation constants
MAX_PEERS = 64  # correspondents route-optimised at once
PROBE_TRIES = 5
PROBE_INTERVAL_S = 0.2
PROBE_NONCES_KEPT = 8
NONCE_BYTES = 16
HEARTBEAT_S = 0.5
DEAD_AFTER_S = 2.0  # + one heartbeat period: back on the other paths within 3 s (DESIGN §4)
GIVE_UP_S = 20.0  # no binding after this long: not a mipnode CN, or blocked
IDLE_S = 300.0  # no traffic for this long: end the binding
RETRY_S = 300.0  # after a rejection or an unanswered probe
RETRY_FAST_S = 2.0  # after a Binding Error 1 or an expiry (the CN lost our binding)
NEVER_S = 1e9  # a correspondent that does not speak the Mobility Header


@dataclass(frozen=True, slots=True)
class DNativeChanged:
    """Data to ``cn`` may use D-native now (``up``), or no longer."""

    cn: IPv6Address
    up: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DNativeEnded:
    """Route optimisation with ``cn`` ended; not worth trying again for ``retry_s``. ``quiet``
    when it never answered or we no longer talk to it (its direct UDP is pointless too)."""

    cn: IPv6Address
    reason: str
    retry_s: float
    quiet: bool


DNativeEvent = DNativeChanged | DNativeEnded


@dataclass(slots=True)
class _Peer:
    cn: IPv6Address
    started_at: float
    last_traffic: float
    ready_since: float | None = None  # D-native proven
    heard_at: float | None = None  # last probe answered
    probing: bool = False
    probes_sent: int = 0
    next_probe_at: float | None = None
    nonces: dict[bytes, float] = field(default_factory=dict)


class DNativePaths:
    """Route optimisation orchestration of a mobile node (see the module docstring)."""

    def __init__(
        self,
        home_address: IPv6Address,
        home_agent: IPv6Address,
        *,
        random_bytes: RandomBytes,
        initial_sequence: int,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self._hoa = home_address
        self._ha = home_agent
        self._random = random_bytes
        self._ro = RouteOptimizationCore(
            RoConfig(home_address=home_address),
            random_bytes=random_bytes,
            initial_sequence=initial_sequence,
        )
        self._max_peers = max_peers
        self._care_of: IPv6Address | None = None
        self._peers: dict[IPv6Address, _Peer] = {}
        self._probe_seq = 0
        self._pings: dict[bytes, float | None] = {}  # `mipnode ping`'s probes: nonce -> RTT
        self._next_tick: float | None = None
        self._out: list[Transmit] = []
        self._events: deque[DNativeEvent] = deque()
        self._counters: Counter[str] = Counter()

    # -- commands ----------------------------------------------------------------------------

    def set_care_of(self, now: float, care_of: IPv6Address | None) -> None:
        """A new care-of address (``None``: none usable for D-native, e.g. NAT66 or IPv4
        only). Bindings at correspondents name the old one: data goes back to the other paths
        until return routability and a probe succeed from the new one (RFC 6275 §11.7.2)."""
        if care_of == self._care_of:
            return
        self._care_of = care_of
        for p in self._peers.values():
            self._unready(p, "moved")
            p.probing, p.nonces = False, {}
            p.next_probe_at = None
            p.started_at = now  # return routability starts again: GIVE_UP_S from now
        if care_of is None:
            for cn in list(self._peers):
                self._end(now, cn, "no usable care-of address", RETRY_FAST_S, quiet=False)
            return
        for cn in self._peers:
            self._ro.start(now, cn, care_of)  # a move for the cores that run already
        self._flush_ro(now)

    def want(self, now: float, cn: IPv6Address, *, registered: bool) -> bool:
        """Traffic to ``cn`` that has no D-native path: start route optimisation if allowed.
        True when it runs (or ran already) with ``cn``."""
        if cn in self._peers:
            self._peers[cn].last_traffic = now
            return True
        if not registered or self._care_of is None or not is_correspondent(cn):
            return False
        if cn in (self._ha, self._hoa) or len(self._peers) >= self._max_peers:
            return False
        self._peers[cn] = _Peer(cn, now, now)
        self._ro.start(now, cn, self._care_of)
        self._counters["started"] += 1
        self._arm(now)
        self._flush_ro(now)
        return True

    def traffic_seen(self, now: float, cn: IPv6Address) -> None:
        """Data went to ``cn`` (the driver reports destinations in batches)."""
        p = self._peers.get(cn)
        if p is not None:
            p.last_traffic = now

    def stop_all(self, now: float) -> None:
        """Shutting down: delete every binding we hold at correspondents."""
        for cn in list(self._peers):
            self._end(now, cn, "shutdown", 0.0, quiet=False)

    # -- inputs ------------------------------------------------------------------------------

    def receive_mh(self, now: float, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """A HoT (to the home address), CoT (to the care-of address) or BA (through an RH2)."""
        self._ro.receive_datagram(now, data, src, dst)
        self._flush_ro(now)

    def receive_binding_error(
        self, now: float, cn: IPv6Address, mh: bytes, dst: IPv6Address
    ) -> None:
        """RFC 6275 §11.3.6: a Binding Error from ``cn`` to our care-of address."""
        try:
            msg = decode_mh_untrusted(mh, cn, dst)
        except BadPacket as exc:
            self._counters[f"drop_be_{exc.reason}"] += 1
            return
        if not isinstance(msg, BindingError) or cn not in self._peers:
            self._counters["drop_be_unexpected"] += 1
            return
        if msg.home_address != self._hoa:
            self._counters["drop_be_other_home_address"] += 1
            return
        status = int(msg.status)
        self._counters[f"binding_error_{status}"] += 1
        backoff = RETRY_FAST_S if status == 1 else RETRY_S  # 2: it does not speak our MH type
        self._end(now, cn, f"binding error {status}", backoff, quiet=False)

    def receive_mh_refused(self, now: float, cn: IPv6Address) -> None:
        """RFC 6275 §11.3.5: an ICMPv6 Parameter Problem (code 1) for our Mobility Header:
        ``cn`` does not support route optimisation; do not try it again."""
        self._counters["mh_refused"] += 1
        self._end(now, cn, "correspondent does not speak the Mobility Header", NEVER_S, quiet=True)

    def receive_probe_reply(self, now: float, cn: IPv6Address, nonce: bytes) -> bool:
        """An echo reply with our probe identifier arrived through an RH2 from ``cn``. True
        when it answered a probe of ours."""
        p = self._peers.get(cn)
        sent = None if p is None else p.nonces.pop(nonce, None)
        if p is None or sent is None:
            self._counters["drop_probe_reply_unexpected"] += 1
            return False
        if nonce in self._pings:
            self._pings[nonce] = now - sent
        p.heard_at = now
        if p.ready_since is None:
            if self._ro.state(cn) != "route-optimized":
                return True  # the binding went away meanwhile
            p.ready_since = now
            p.probing = False
            p.next_probe_at = None
            self._counters["ready"] += 1
            rtt_ms = (now - sent) * 1000
            self._events.append(
                DNativeChanged(cn, True, f"probe answered through an RH2 in {rtt_ms:.1f} ms")
            )
        return True

    # -- the five verbs --------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self._ro.handle_timer(now)
        self._flush_ro(now)
        for p in list(self._peers.values()):
            if p.next_probe_at is not None and p.next_probe_at <= now:
                self._probe_step(now, p)
        if self._next_tick is not None and self._next_tick <= now:
            self._tick(now)

    def get_timer(self) -> float | None:
        deadlines = [t for t in (self._ro.get_timer(), self._next_tick) if t is not None]
        deadlines += [p.next_probe_at for p in self._peers.values() if p.next_probe_at is not None]
        return min(deadlines, default=None)

    def transmissions(self) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> DNativeEvent | None:
        return self._events.popleft() if self._events else None

    # -- inspection ------------------------------------------------------------------------

    def ready_since(self, cn: IPv6Address) -> float | None:
        p = self._peers.get(cn)
        return None if p is None else p.ready_since

    def ready(self) -> list[IPv6Address]:
        return [cn for cn, p in self._peers.items() if p.ready_since is not None]

    def bindings(self, now: float) -> list[RoBinding]:
        return self._ro.bindings(now)

    def state(self, cn: IPv6Address) -> str | None:
        return self._ro.state(cn)

    def statistics(self) -> dict[str, int]:
        stats = {f"ro_{k}": v for k, v in self._ro.statistics().items()}
        stats.update(self._counters)
        stats["peers"] = len(self._peers)
        return stats

    # -- internals -------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        if self._next_tick is None:
            self._next_tick = now + HEARTBEAT_S

    def _tick(self, now: float) -> None:
        """Heartbeats on D-native paths and the janitor, every HEARTBEAT_S while any peer."""
        for cn, p in list(self._peers.items()):
            if p.ready_since is not None:
                heard = p.heard_at if p.heard_at is not None else p.ready_since
                if now - heard > DEAD_AFTER_S:
                    self._end(now, cn, "D-native silent", RETRY_FAST_S, quiet=False)
                    continue
                self._send_probe(now, p)
            if p.ready_since is not None or p.probing:
                if now - p.last_traffic > IDLE_S:
                    self._end(now, cn, "idle", 0.0, quiet=True)
            elif now - p.started_at > GIVE_UP_S:
                self._end(now, cn, "no answer", RETRY_S, quiet=True)
        self._next_tick = now + HEARTBEAT_S if self._peers else None

    def _flush_ro(self, now: float) -> None:
        for out in self._ro.datagrams_to_send(now):
            self._send_mh(out)
        while (event := self._ro.next_event()) is not None:
            if isinstance(event, RouteOptimized):
                p = self._peers.get(event.cn)
                if p is not None and p.ready_since is None and not p.probing:
                    p.probing, p.probes_sent = True, 0
                    p.next_probe_at = now
                    self._counters["probing"] += 1
            elif isinstance(event, RouteOptimizationFailed):
                self._end(now, event.cn, f"rejected {event.status}", RETRY_S, quiet=False)
            elif isinstance(event, RouteOptimizationExpired):
                self._end(now, event.cn, "binding expired", RETRY_FAST_S, quiet=False)
            elif isinstance(event, RouteOptimizationEnded):
                self._peers.pop(event.cn, None)

    def _send_mh(self, out: OutgoingMh) -> None:
        if out.care_of is not None and _is_deletion_bu(out.data):
            # A deletion must reach the CN even when the direct path is what died, so it goes
            # from the home address through the HA tunnel, without an HAO (RFC 6275 §11.5.4,
            # §9.5.1: a BU from the HoA deletes; its authenticator is over the HoA, §6.2.7).
            self._out.append(SendHome(ipv6_packet(out.src, out.dst, NH_MH, out.data)))
        elif out.care_of is not None:  # BU: from the CoA with a Home Address option
            self._out.append(
                SendNative(build_packet_with_hao(out.care_of, out.dst, out.src, NH_MH, out.data))
            )
        elif out.src == self._hoa:  # HoTI: through the HA tunnel
            self._out.append(SendHome(ipv6_packet(out.src, out.dst, NH_MH, out.data)))
        else:  # CoTI: natively from the CoA
            self._out.append(SendNative(ipv6_packet(out.src, out.dst, NH_MH, out.data)))

    def _probe_step(self, now: float, p: _Peer) -> None:
        if p.probes_sent >= PROBE_TRIES:
            p.next_probe_at = None
            # The CN holds a binding we cannot use (e.g. our firewall drops its RH2 packets as
            # conntrack-invalid, RFC 4487 §5.1): delete it, or its replies would be lost.
            self._end(now, p.cn, "probe unanswered", RETRY_S, quiet=False)
            return
        self._send_probe(now, p)
        p.probes_sent += 1
        p.next_probe_at = now + PROBE_INTERVAL_S

    def _send_probe(self, now: float, p: _Peer) -> bytes | None:
        """An echo request in D-native form (HAO out); its reply must come in an RH2. A random
        nonce in the payload ties the reply to this request (no forged upgrades)."""
        if self._care_of is None:
            return None
        nonce = self._random(NONCE_BYTES)
        p.nonces[nonce] = now
        while len(p.nonces) > PROBE_NONCES_KEPT:
            p.nonces.pop(next(iter(p.nonces)))
        self._probe_seq = (self._probe_seq + 1) & 0xFFFF
        probe = echo_request(self._hoa, p.cn, D_NATIVE_PROBE_IDENT, self._probe_seq, nonce)
        self._out.append(SendNative(add_home_address_option(probe, self._care_of.packed)))
        self._counters["probes_sent"] += 1
        return nonce

    def ping(self, now: float, cn: IPv6Address) -> bytes | None:
        """`mipnode ping`: one probe now to ``cn`` (a correspondent that holds our binding);
        its nonce, for :meth:`ping_result`, or None when there is no D-native pair to probe."""
        p = self._peers.get(cn)
        if p is None or self._ro.state(cn) != "route-optimized":
            return None
        nonce = self._send_probe(now, p)
        if nonce is not None:
            self._pings[nonce] = None
            while len(self._pings) > PROBE_NONCES_KEPT:
                self._pings.pop(next(iter(self._pings)))
        return nonce

    def ping_result(self, nonce: bytes) -> float | None:
        """The round trip (s) of a :meth:`ping` probe, None while no reply came."""
        return self._pings.get(nonce)

    def _unready(self, p: _Peer, reason: str) -> None:
        if p.ready_since is not None:
            p.ready_since = None
            p.heard_at = None
            self._events.append(DNativeChanged(p.cn, False, reason))

    def _end(
        self, now: float, cn: IPv6Address, reason: str, backoff_s: float, *, quiet: bool
    ) -> None:
        """Back to the other paths for ``cn``: end the binding there (a deletion BU, if the CN
        may hold one) and try again no sooner than ``backoff_s`` from now."""
        p = self._peers.pop(cn, None)
        if p is not None:
            self._unready(p, reason)
            self._ro.stop(now, cn)
        self._counters[f"ended_{reason.split(' (')[0].replace(' ', '_')}"] += 1
        self._events.append(DNativeEnded(cn, reason, backoff_s, quiet))
        self._flush_ro(now)


def is_correspondent(cn: IPv6Address) -> bool:
    """Addresses route optimisation can be tried with."""
    return not (cn.is_multicast or cn.is_link_local or cn.is_loopback or cn.is_unspecified)


def _is_deletion_bu(mh: bytes) -> bool:
    """A Binding Update with lifetime 0 (RFC 6275 §6.1.7: lifetime at octets 10-11)."""
    return len(mh) >= 12 and mh[2] == MhType.BU and mh[10:12] == b"\0\0"
