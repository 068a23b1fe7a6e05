"""Direct paths a mobile router runs for the hosts behind it (sans-IO).

Theory of operation (docs/internals.md, "Direct paths for a mobile network"). The hosts on a
mobile router's network run nothing of ours; RFC 3963 routes all their traffic through the home
agent. When a host talks to a correspondent, the router offers that correspondent direct paths
*on the host's behalf*: one :class:`~mipnode.core.direct_paths.DirectPaths` per host, whose
offers leave through the home tunnel with the **host's address as their source** (the home
agent's ingress filter accepts sources inside the router's registered prefixes) and whose
answers come back to the host's address, which the home agent routes into the router's tunnel.

So a correspondent needs to know nothing about mobile networks: to it the host's address is a
peer like a mobile node's home address, with its own ICE agent, D-udp pair (between the
router's candidates and its own) and ESP keys. And the authorisation is the one a home address
has, at return-routability strength: an answer carries the correspondent's ICE password, the
agent selects no pair until the router has proved it holds that password, and the answer
reaches the router only because the home agent routes the host's prefix to it -- which the
home agent does only for prefixes the router's own security association may register (RFC 3963
§6.1). A router cannot get a direct path for an address the home agent does not route to it.

A flow is keyed by 32 octets, ``host ‖ correspondent`` (:func:`flow_key`): the router's
forwarding table, its SA table and this module use the same key, so a host's flows never mix
with the router's own (keyed by the correspondent's 16 octets).

Bounds: at most ``max_hosts`` hosts (each at most ``max_flows`` correspondents); for a host
only *answers* are taken, and only from a correspondent we offered to (nothing starts a host's
agent but the host's own traffic; the router answers no offer made to a host); a flow whose
checks selected no pair within ``give_up_s`` of its start (a correspondent that drops the
Mobility Header silently, or a firewall no pair crosses) ends (:meth:`HostPaths.gave_up`: the
node core keeps it on the home path for a while); a host without flows is forgotten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Network

from ice.agent import OutgoingDatagram
from ice.candidate import TransportAddress
from ice.checklist import CandidatePair
from mipnode.core.direct_paths import Change, DirectPathChanged, DirectPaths, Signalling
from mipnode.wire.mh import ExperimentalMessage

RandomBytes = Callable[[int], bytes]

# Implementation constants
MAX_HOSTS = 32  # hosts behind the router with direct paths at once
MAX_FLOWS_PER_HOST = 16  # correspondents per host
GIVE_UP_S = 45.0  # a flow with no pair selected this long after its start ends


def flow_key(host: bytes, cn: bytes) -> bytes:
    """The 32-octet key of a host's flow to a correspondent (also ``pkt[8:40]`` of its
    packets: source and destination are adjacent in the IPv6 header)."""
    return host + cn


def split_key(key: bytes) -> tuple[IPv6Address, IPv6Address]:
    return IPv6Address(key[:16]), IPv6Address(key[16:32])


class HostPaths:
    """Every host's :class:`DirectPaths` (module docstring)."""

    def __init__(
        self,
        networks: tuple[IPv6Network, ...],
        *,
        random_bytes: RandomBytes,
        suite: int | None,
        max_hosts: int = MAX_HOSTS,
        max_flows: int = MAX_FLOWS_PER_HOST,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.networks = networks
        self._random = random_bytes
        self._suite = suite
        self._max_hosts = max_hosts
        self._max_flows = max_flows
        self._give_up_s = give_up_s
        # (host, cn) -> when it must have selected a pair; gone at its first selection
        self._deadline: dict[tuple[IPv6Address, IPv6Address], float] = {}
        self._gave_up: list[tuple[IPv6Address, IPv6Address]] = []
        self._hosts: dict[IPv6Address, DirectPaths] = {}
        self._candidates: list[TransportAddress] = []
        self._gathering = False
        self._srflx: dict[TransportAddress, tuple[TransportAddress, str]] = {}
        self._gathered = False
        self._left: list[tuple[IPv6Address, DirectPathChanged]] = []  # of forgotten hosts
        self._counters: Counter[str] = Counter()

    def covers(self, address: IPv6Address) -> bool:
        """Whether ``address`` is in one of the router's networks."""
        return any(address in n for n in self.networks)

    # -- local candidates, as for the router's own DirectPaths ----------------------------------

    def set_local_candidates(
        self, now: float, hosts: list[TransportAddress], *, gathering: bool
    ) -> None:
        self._candidates, self._gathering = list(hosts), gathering
        self._srflx.clear()
        self._gathered = False
        for dp in self._hosts.values():
            dp.set_local_candidates(now, hosts, gathering=gathering)

    def add_server_reflexive(
        self, base: TransportAddress, mapped: TransportAddress, server: str
    ) -> None:
        self._srflx[base] = (mapped, server)
        for dp in self._hosts.values():
            dp.add_server_reflexive(base, mapped, server)

    def gathering_done(self, now: float) -> None:
        self._gathered = True
        for dp in self._hosts.values():
            dp.gathering_done(now)

    # -- flows -------------------------------------------------------------------------------

    def start(self, now: float, host: IPv6Address, cn: IPv6Address) -> bool:
        """The host sends to ``cn``: offer it direct paths for the host. False: not one of our
        hosts, no room, or no local candidate yet."""
        if not self.covers(host) or self.covers(cn):
            self._counters["start_not_a_host_flow"] += 1
            return False
        dp = self._hosts.get(host)
        if dp is None:
            if len(self._hosts) >= self._max_hosts:
                self._counters["start_refused_hosts"] += 1
                return False
            dp = self._new(now)
            self._hosts[host] = dp
        known = cn in dp.peers
        ok = dp.start(now, cn)
        if not ok:
            self._counters["start_refused_flows"] += 1
            self._forget_if_idle(host)
        elif not known:
            self._deadline[(host, cn)] = now + self._give_up_s
        return ok

    def stop(self, now: float, host: IPv6Address, cn: IPv6Address) -> None:
        self._deadline.pop((host, cn), None)
        dp = self._hosts.get(host)
        if dp is not None:
            dp.stop(now, cn)
            self._forget_if_idle(host)

    def gave_up(self) -> list[tuple[IPv6Address, IPv6Address]]:
        """Flows ended since the last call because no pair was selected in time."""
        out, self._gave_up = self._gave_up, []
        return out

    def restart(self, now: float, host: IPv6Address, cn: IPv6Address, reason: str) -> None:
        dp = self._hosts.get(host)
        if dp is not None:
            dp.restart(now, cn, reason)

    def resend_offers(self, now: float) -> int:
        return sum(dp.resend_offers(now) for dp in self._hosts.values())

    def receive_signalling(
        self, now: float, host: IPv6Address, cn: IPv6Address, msg: ExperimentalMessage
    ) -> None:
        """An answer from ``cn`` to ``host`` (through the home agent). Only from a
        correspondent we offered to for that host, and only an answer: nothing else starts or
        replaces an agent here."""
        dp = self._hosts.get(host)
        if dp is None or cn not in dp.peers:
            self._counters["drop_mice_not_offered"] += 1
            return
        dp.receive_signalling(now, cn, msg)  # an offer is refused there (answers_only)

    def receive_datagram(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        for dp in self._hosts.values():
            dp.receive_datagram(now, data, local, remote)

    # -- the five verbs' parts -----------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        for dp in self._hosts.values():
            dp.handle_timer(now)
        for (host, cn), at in list(self._deadline.items()):
            if at <= now:
                self.stop(now, host, cn)
                self._gave_up.append((host, cn))
        for host in list(self._hosts):
            self._forget_if_idle(host)  # a peer the engine forgot on its own

    def get_timer(self) -> float | None:
        times = [t for dp in self._hosts.values() if (t := dp.get_timer()) is not None]
        return min([*times, *self._deadline.values()], default=None)

    def datagrams_to_send(self, now: float) -> list[OutgoingDatagram]:
        return [d for dp in self._hosts.values() for d in dp.datagrams_to_send(now)]

    def signalling_to_send(self) -> list[tuple[IPv6Address, Signalling]]:
        return [(h, s) for h, dp in self._hosts.items() for s in dp.signalling_to_send()]

    def events(self) -> Iterator[tuple[IPv6Address, DirectPathChanged]]:
        left, self._left = self._left, []
        yield from left
        for host, dp in list(self._hosts.items()):
            while (event := dp.next_event()) is not None:
                if event.pair is not None:
                    self._deadline.pop((host, event.peer), None)
                yield host, event

    # -- inspection --------------------------------------------------------------------------

    def flows(self) -> list[tuple[IPv6Address, IPv6Address]]:
        """Every (host, correspondent) with an agent."""
        return [(h, cn) for h, dp in self._hosts.items() for cn in dp.peers]

    def paths(self, host: IPv6Address) -> DirectPaths | None:
        return self._hosts.get(host)

    def selected(self, host: IPv6Address, cn: IPv6Address) -> CandidatePair | None:
        dp = self._hosts.get(host)
        return None if dp is None else dp.selected(cn)

    def keyed(self, host: IPv6Address, cn: IPv6Address) -> bool:
        dp = self._hosts.get(host)
        return dp is not None and dp.keyed(cn)

    def since(self, host: IPv6Address, cn: IPv6Address) -> float | None:
        dp = self._hosts.get(host)
        return None if dp is None else dp.since(cn)

    def changes(self, host: IPv6Address, cn: IPv6Address) -> list[Change]:
        dp = self._hosts.get(host)
        return [] if dp is None else dp.changes(cn)

    def statistics(self) -> dict[str, int]:
        stats: Counter[str] = Counter(self._counters)
        for dp in self._hosts.values():
            stats.update(dp.statistics())
        stats["hosts"] = len(self._hosts)
        return dict(stats)

    # -- internals -------------------------------------------------------------------------------

    def _new(self, now: float) -> DirectPaths:
        """A host's engine, controlling, with the router's candidates as they stand now."""
        dp = DirectPaths(
            controlling=True,
            random_bytes=self._random,
            max_peers=self._max_flows,
            suite=self._suite,
            require_keys=self._suite is not None,
            answers_only=True,
        )
        if self._candidates:
            dp.set_local_candidates(now, self._candidates, gathering=self._gathering)
            for base, (mapped, server) in self._srflx.items():
                dp.add_server_reflexive(base, mapped, server)
            if self._gathered:
                dp.gathering_done(now)
        return dp

    def _forget_if_idle(self, host: IPv6Address) -> None:
        dp = self._hosts.get(host)
        if dp is not None and not dp.peers:
            # its last words (a stopped flow's "not D-udp any more") still go out
            self._left += [(host, e) for e in iter(dp.next_event, None)]
            del self._hosts[host]
