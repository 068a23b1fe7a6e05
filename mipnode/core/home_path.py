"""The home path: T-native and T-udp to the home agent as one ICE check list (sans-IO).

Theory of operation (DESIGN §4: one engine for every path). The home agent is ICE-lite: it
answers Binding requests and never checks back. The mobile node checks one pair per way to
reach it from the current access network, each in exactly the form its data takes:

* ``T-native``: ``(care-of, 0) -> (HA, 0)``, the check inside IPv6-in-IPv6 (RFC 2473) as a UDP
  datagram to the home agent's STUN port 3478 (RFC 8489 §18.5);
* ``T-udp`` over IPv6 and over IPv4: ``(our address, socket port) -> (HA, port)`` for every port
  the home agent listens on (4191 by default; 443 passes web-only networks), the check as the
  UDP payload.

The checks are :class:`~ice.agent.IceAgent`'s (lite peer): pacing, the RTO ladder, selection
by kind then RTT with hysteresis, heartbeats every second on the selected pair, death after
2.5 s of silence, re-probes of the others every 12 s ± 20 % (2 s while nothing works) and flap
damping. Once the home agent has acknowledged a registration over a pair, that pair's checks
leave from the *home address* inside the tunnel (``HoA -> HA`` UDP to the STUN port, the data
form exactly): they prove the binding as well as the path, and a home agent that lost its
binding answers them with a Binding Refresh Request instead. On other pairs checks leave from
the care-of address (T-native) or as bare STUN (T-udp), which the home agent answers without a
binding.

The home agent's answer names the source it saw (XOR-MAPPED-ADDRESS): another address than
ours is a NAT (NAT44, or NAT66 where the observed IPv6 source is not the care-of address). A
T-native pair through a NAT66 is removed (its packets would carry the translated address,
which the binding does not name); T-udp answers give the server-reflexive candidates of D-udp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address

from ice import stun
from ice.agent import IceAgent, IceConfig, OutgoingDatagram
from ice.candidate import Candidate, CandidateType, candidate_priority
from ice.checklist import CandidatePair, PairState
from mipnode.core.mn_diagnosis import CheckFacts
from mipnode.core.transmit import NATIVE_PORT, SendHome, SendUdp, Transmit, TransportAddress
from mipnode.wire.errors import BadPacket
from mipnode.wire.packets import STUN_PORT, udp_in_ipv6

HOME_ICE = IceConfig(
    heartbeat_interval_s=1.0,
    dead_after_s=2.5,  # dead within 3 s of the last answer (DESIGN §4)
    max_transmissions=3,  # checks at 0, 0.5, 1.5 s; failed at 3.5 s
    reprobe_interval_s=12.0,  # back on a repaired better path within 30 s
    retry_unselected_s=2.0,  # an HA that comes back is found within seconds
    flap_holddown_s=15.0,  # a pair that dies twice soon after selection waits 15 s, 30 s, ...
)
DEFAULT_HA_PORT = 4191


@dataclass(frozen=True, slots=True)
class Access:
    """The access network as the driver opened it: addresses and our UDP sockets' ports."""

    ifname: str | None
    ipv6: IPv6Address | None
    ipv4: IPv4Address | None
    udp6_port: int | None = None
    udp4_port: int | None = None

    @property
    def udp_sockets(self) -> list[TransportAddress]:
        """Our UDP sockets as transport addresses, IPv6 first (the D-udp host candidates)."""
        out: list[TransportAddress] = []
        if self.ipv6 is not None and self.udp6_port:
            out.append((str(self.ipv6), self.udp6_port))
        if self.ipv4 is not None and self.udp4_port:
            out.append((str(self.ipv4), self.udp4_port))
        return out


@dataclass(frozen=True, slots=True)
class HomeTargets:
    """Where the home agent can be reached and which path kinds may be used."""

    ipv6: IPv6Address
    ipv4: IPv4Address | None = None
    ports: tuple[int, ...] = (DEFAULT_HA_PORT,)
    kinds: frozenset[str] = frozenset({"T-native", "T-udp"})


@dataclass(frozen=True, slots=True)
class HomePair:
    """One way to the home agent: what the pair's check list entry stands for."""

    kind: str  # T-native or T-udp
    family: int  # 6 or 4
    local: TransportAddress
    remote: TransportAddress

    @property
    def care_of(self) -> IPv6Address:
        """The care-of address a registration over this pair names (an IPv4 care-of address
        travels IPv4-mapped, RFC 5555 style)."""
        ip = ip_address(self.local[0])
        return ip if isinstance(ip, IPv6Address) else IPv6Address(f"::ffff:{ip}")

    @property
    def key(self) -> tuple[TransportAddress, TransportAddress]:
        return (self.local, self.remote)


class HomePath:
    """The home check list of one access network (a move builds a new one)."""

    def __init__(
        self,
        home_address: IPv6Address,
        targets: HomeTargets,
        access: Access,
        *,
        random_bytes: Callable[[int], bytes],
        config: IceConfig = HOME_ICE,
    ) -> None:
        self.access = access
        self._config = config
        self._hoa = home_address
        self._targets = targets
        self.agent = IceAgent.for_lite_peer(config, random_bytes=random_bytes)
        self.pairs: dict[tuple[TransportAddress, TransportAddress], HomePair] = {}
        self.removed: dict[tuple[TransportAddress, TransportAddress], HomePair] = {}
        self.nat66 = False
        self.nat44 = False
        self.mapped: dict[tuple[TransportAddress, TransportAddress], TransportAddress] = {}
        self.send_errors: dict[tuple[TransportAddress, TransportAddress], str] = {}
        self.registered_on: tuple[TransportAddress, TransportAddress] | None = None
        # Pairs taken out of the check list because they answered through a NAT66; shown (state
        # "nat") and named in the diagnosis, never checked or selected again on this network.
        self.through_nat: dict[tuple[TransportAddress, TransportAddress], CandidatePair] = {}
        for rank, pair in enumerate(_pairs(targets, access)):
            self.pairs[pair.key] = pair
            local_pref = max(0, 65535 - 64 * rank)
            self.agent.add_pair(
                _candidate(pair.local, local_pref, f"L{rank}"),
                _candidate(pair.remote, 65535, f"R{rank}"),
                pair.kind,
            )

    # -- sending -------------------------------------------------------------------------

    def form(self, out: OutgoingDatagram) -> Transmit:
        """A check of the agent in the form the data of its pair takes (module docstring)."""
        pair = self.pairs[(out.local, out.remote)]
        via_hoa = self.registered_on == pair.key
        if pair.kind == "T-native":
            src = self._hoa if via_hoa else pair.care_of
            inner = udp_in_ipv6(src, self._targets.ipv6, STUN_PORT, STUN_PORT, out.data)
            return SendHome(inner, pair.local, pair.remote)
        if via_hoa:
            inner = udp_in_ipv6(self._hoa, self._targets.ipv6, STUN_PORT, STUN_PORT, out.data)
            return SendHome(inner, pair.local, pair.remote)
        return SendUdp(pair.local, pair.remote, out.data)

    # -- receiving -----------------------------------------------------------------------

    def receive_answer(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> bool:
        """A STUN answer from the home agent on the pair ``local`` -> ``remote``. False when
        it is not one of our pairs. NAT is noted here (the mapped address)."""
        pair = self.pairs.get((local, remote))
        if pair is None:
            return False
        try:
            answer = stun.parse_lite_answer_untrusted(data)
        except BadPacket:
            answer = None
        if answer is not None and answer.mapped is not None:
            self.send_errors.pop(pair.key, None)  # it got through after all
            self._note_mapped(pair, answer.mapped)
            if pair.kind == "T-native" and self.nat66:
                # Through a NAT66: the HA would bind the translated address; never use it.
                snap = next((s for p, s in self.snapshots() if p.key == pair.key), None)
                if snap is not None:
                    self.through_nat[pair.key] = replace(
                        snap, state=PairState.FAILED, checks_answered=snap.checks_answered + 1
                    )
                self.agent.remove_pair(pair.local, pair.remote)
                self.removed[pair.key] = pair
                return True
        self.agent.receive_datagram(now, data, local, remote)
        return True

    def _note_mapped(self, pair: HomePair, mapped: tuple[str, int]) -> None:
        seen = (str(ip_address(mapped[0])), int(mapped[1]))
        self.mapped[pair.key] = seen
        # T-native checks carry our UDP port only inside the tunnel: compare addresses only.
        behind = ip_address(seen[0]) != ip_address(pair.local[0]) or (
            pair.kind != "T-native" and seen[1] != pair.local[1]
        )
        if behind and pair.family == 6:
            self.nat66 = True
        elif behind:
            self.nat44 = True

    def send_failed(self, local: TransportAddress, remote: TransportAddress, reason: str) -> None:
        """The driver could not send on the pair (an errno name, or what ICMP said)."""
        if (local, remote) in self.pairs:
            self.send_errors[(local, remote)] = reason

    # -- inspection ----------------------------------------------------------------------

    def selected(self) -> HomePair | None:
        sel = self.agent.selected_pair()
        return None if sel is None else self.pairs.get((sel.local.base, sel.remote.address))

    def snapshots(self) -> list[tuple[HomePair, CandidatePair]]:
        """Every pair of the check list, highest priority first."""
        out = []
        for snap in self.agent.pairs():
            pair = self.pairs.get((snap.local.base, snap.remote.address))
            if pair is not None:
                out.append((pair, snap))
        return out

    def shown(self) -> list[tuple[HomePair, CandidatePair, str]]:
        """What status shows: each pair with its state, those through a NAT66 as ``nat``."""
        out = [(p, s, str(s.state)) for p, s in self.snapshots()]
        out += [(self.removed[k], s, "nat") for k, s in self.through_nat.items()]
        return out

    def all_failed(self) -> bool:
        """No pair answers: each failed its last round of checks (or has sent more than one
        round unanswered while a re-probe runs). True without pairs too."""
        rounds = self._config.max_transmissions
        return all(
            not s.valid and (s.state is PairState.FAILED or s.checks_sent > rounds)
            for _, s in self.snapshots()
        )

    def _round(self, n: int) -> int:
        # The diagnosis speaks of the last round of checks: counts that grow with every re-check
        # would make a new text (and a new log line) every two seconds.
        return min(n, self._config.max_transmissions)

    def facts(self) -> list[CheckFacts]:
        """What the checks showed, pair by pair, for the diagnosis texts."""
        out = []
        for pair, snap, state in self.shown():
            mapped = self.mapped.get(pair.key)
            out.append(
                CheckFacts(
                    kind=pair.kind,
                    family=pair.family,
                    address=pair.remote[0],
                    port=None if pair.kind == "T-native" else pair.remote[1],
                    state=state,
                    checks_sent=self._round(snap.checks_sent),
                    checks_answered=self._round(snap.checks_answered),
                    mapped=None if mapped is None else mapped[0],
                    send_error=self.send_errors.get(pair.key),
                )
            )
        return out


def _pairs(targets: HomeTargets, access: Access) -> list[HomePair]:
    """Most preferred first: T-native, then T-udp over IPv6, then over IPv4, ports in order."""
    out: list[HomePair] = []
    v6 = None if access.ipv6 is None else str(access.ipv6)
    ha6 = str(targets.ipv6)
    if v6 is not None and "T-native" in targets.kinds:
        out.append(HomePair("T-native", 6, (v6, NATIVE_PORT), (ha6, NATIVE_PORT)))
    if "T-udp" in targets.kinds:
        if v6 is not None and access.udp6_port:
            out += [HomePair("T-udp", 6, (v6, access.udp6_port), (ha6, p)) for p in targets.ports]
        if access.ipv4 is not None and access.udp4_port and targets.ipv4 is not None:
            v4, ha4 = str(access.ipv4), str(targets.ipv4)
            out += [HomePair("T-udp", 4, (v4, access.udp4_port), (ha4, p)) for p in targets.ports]
    return out


def _candidate(address: TransportAddress, local_pref: int, foundation: str) -> Candidate:
    # Each pair its own foundation: all are checked at once, none waits frozen for another.
    return Candidate(
        CandidateType.HOST,
        address,
        address,
        candidate_priority(CandidateType.HOST, local_pref),
        foundation,
    )
