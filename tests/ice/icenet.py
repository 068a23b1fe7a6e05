"""A tiny in-memory network for ICE agents (virtual time, seeded, no sockets).

``IceNet`` owns a virtual clock and a set of agents, each reachable at its local candidate
addresses. ``run_until(t)`` repeatedly advances to the earliest of the agents' timers and the
next delivery, delivers datagrams after ``latency(src, dst)`` seconds, and drops those a drop
rule rejects. Rules are callables ``(now, local, remote, data) -> bool`` (True = drop), so a
test can block a 5-tuple, one direction, or a time window. NAT is a rewrite map on sources.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.agent import (
    Credentials,
    IceAgent,
    IceConfig,
    IceEvent,
    new_credentials,
)
from ice.candidate import Candidate, TransportAddress

DropRule = Callable[[float, TransportAddress, TransportAddress, bytes], bool]
Latency = Callable[[float, TransportAddress, TransportAddress], float]


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def make_agent(
    *,
    controlling: bool,
    seed: int,
    config: IceConfig | None = None,
    tie_breaker: int | None = None,
    credentials: Credentials | None = None,
) -> IceAgent:
    rand = seeded_bytes(seed)
    return IceAgent(
        config or IceConfig(),
        controlling=controlling,
        credentials=credentials or new_credentials(rand),
        tie_breaker=tie_breaker if tie_breaker is not None else seed,
        random_bytes=rand,
    )


@dataclass
class Sent:
    at: float
    sender: str
    local: TransportAddress
    remote: TransportAddress
    data: bytes


@dataclass
class IceNet:
    now: float = 1000.0
    latency: Latency = field(default=lambda now, src, dst: 0.010)
    agents: dict[str, IceAgent] = field(default_factory=dict)
    owners: dict[TransportAddress, str] = field(default_factory=dict)
    rules: list[DropRule] = field(default_factory=list)
    nat: dict[TransportAddress, TransportAddress] = field(default_factory=dict)
    _unnat: dict[TransportAddress, TransportAddress] = field(default_factory=dict)
    events: dict[str, list[tuple[float, IceEvent]]] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    dropped: int = 0
    _queue: list[tuple[float, int, str, TransportAddress, TransportAddress, bytes]] = field(
        default_factory=list
    )
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, name: str, agent: IceAgent, *addresses: TransportAddress) -> None:
        self.agents[name] = agent
        self.events[name] = []
        for address in addresses:
            self.owners[address] = name
            agent.add_local_candidate(Candidate.host(address))

    def exchange(self, a: str, b: str) -> None:
        """Signal credentials and host candidates both ways (what the T path carries)."""
        x, y = self.agents[a], self.agents[b]
        x.set_remote_credentials(y.local_credentials)
        y.set_remote_credentials(x.local_credentials)
        for c in x.local_candidates():
            y.add_remote_candidate(c)
        for c in y.local_candidates():
            x.add_remote_candidate(c)

    def block(self, local: TransportAddress, remote: TransportAddress) -> DropRule:
        """Drop both directions between two addresses; returns the rule (remove to heal)."""

        def rule(now: float, src: TransportAddress, dst: TransportAddress, data: bytes) -> bool:
            return {src, dst} == {local, remote}

        self.rules.append(rule)
        return rule

    def add_nat(self, inside: TransportAddress, outside: TransportAddress) -> None:
        """Endpoint-independent NAT: ``inside`` appears as ``outside`` and is reachable there."""
        self.nat[inside] = outside
        self._unnat[outside] = inside

    def step(self) -> bool:
        """Advance to the next timer or delivery; False when nothing is scheduled."""
        deadlines = [t for a in self.agents.values() if (t := a.get_timer()) is not None]
        if self._queue:
            deadlines.append(self._queue[0][0])
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        while self._queue and self._queue[0][0] <= self.now:
            _, _, name, local, remote, data = heapq.heappop(self._queue)
            self.agents[name].receive_datagram(self.now, data, local, remote)
        for agent in self.agents.values():
            t = agent.get_timer()
            if t is not None and t <= self.now:
                agent.handle_timer(self.now)
        self.flush()
        return True

    def flush(self) -> None:
        for name, agent in self.agents.items():
            for dgram in agent.datagrams_to_send(self.now):
                self.log.append(Sent(self.now, name, dgram.local, dgram.remote, dgram.data))
                self._send(dgram.local, dgram.remote, dgram.data)
            while (event := agent.next_event()) is not None:
                self.events[name].append((self.now, event))

    def _send(self, src: TransportAddress, dst: TransportAddress, data: bytes) -> None:
        if any(rule(self.now, src, dst, data) for rule in self.rules):
            self.dropped += 1
            return
        dst = self._unnat.get(dst, dst)
        owner = self.owners.get(dst)
        if owner is None:
            self.dropped += 1
            return
        seen_src = self.nat.get(src, src)
        at = self.now + self.latency(self.now, src, dst)
        heapq.heappush(self._queue, (at, next(self._seq), owner, dst, seen_src, data))

    def inject(
        self, name: str, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        self.agents[name].receive_datagram(self.now, data, local, remote)
        self.flush()

    def run_until(self, t: float, *, max_steps: int = 200_000) -> None:
        for _ in range(max_steps):
            if self.now >= t:
                return
            nxt = [x for a in self.agents.values() if (x := a.get_timer()) is not None]
            if self._queue:
                nxt.append(self._queue[0][0])
            if not nxt or min(nxt) > t:
                self.now = t
                return
            self.step()
        raise AssertionError("simulation did not settle")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)
