"""Candidate pairs and the check list (RFC 8445 §6.1.2), pure.

The check list holds at most ``max_pairs`` pairs (RFC 8445 §6.1.2.5 recommends 100), keyed by
(local base, remote address): a pair is a 5-tuple, so a server-reflexive local candidate never
forms a pair of its own (its pairs would be its base's, §6.1.2.4). Pairs with a relayed
candidate on either side stand for the T path: they are listed, in state ``relayed``, and never
checked.

States (§6.1.2.6) and the extra ``relayed``::

    frozen --> waiting --> in-progress --> succeeded
                  ^             |    \\          |
                  |             v     '------> failed
                  '---- (triggered / re-probe) --'

A new pair starts ``waiting`` when no other pair of its foundation is waiting or in progress,
else ``frozen``; a success unfreezes the pairs of its foundation (§7.2.5.3.3). The next ordinary
check goes to the highest-priority waiting pair, else the highest-priority frozen one (§6.1.4.2).
``valid`` is kept apart from the state: a valid pair being re-probed is ``in-progress`` and still
valid until that check fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from ice.candidate import Candidate, CandidateType, TransportAddress, pair_priority

# Implementation constants
MAX_PAIRS = 100  # RFC 8445 §6.1.2.5


class PairState(StrEnum):
    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RELAYED = "relayed"  # the T path: shown, never checked


PairKey = tuple[TransportAddress, TransportAddress]


@dataclass(frozen=True, slots=True)
class CandidatePair:
    """Snapshot of one pair, for events and inspection.

    Attributes:
        local, remote: the candidates; data and checks go from ``local.base`` to
            ``remote.address``.
        state: see the module docstring.
        priority: RFC 8445 §6.1.2.3 pair priority for the agent's current role.
        valid: a check on it succeeded (two-way authenticated) and none failed since.
        nominated: the controlling side put USE-CANDIDATE on it (we did, or the peer did).
        selected: the agent's selected pair (data goes here instead of the T path).
        rtt_s: smoothed round-trip time of its checks, ``None`` before the first answer.
        last_response_at: when the last authenticated answer arrived.
        consent_expires_at: RFC 7675 deadline (last answer + consent timeout).
        consent_lost: consent expired; nothing is sent on it until an ICE restart.
        checks_sent: requests sent on it (checks, retransmissions, heartbeats).
        checks_answered: authenticated success responses received on it.
        mapped: our address as the peer saw it (XOR-MAPPED-ADDRESS of the last answer).
        kind: the path kind it stands for (DESIGN §2): ``"D-udp"`` for a checked direct pair,
            ``"T"`` for a relayed one, or what the owner named an explicit pair
            (:meth:`~ice.agent.IceAgent.add_pair`: ``"T-native"``, ``"T-udp"``).
    """

    local: Candidate
    remote: Candidate
    state: PairState
    priority: int
    foundation: str
    valid: bool = False
    nominated: bool = False
    selected: bool = False
    rtt_s: float | None = None
    last_response_at: float | None = None
    consent_expires_at: float | None = None
    consent_lost: bool = False
    checks_sent: int = 0
    checks_answered: int = 0
    mapped: TransportAddress | None = None
    kind: str = "D-udp"

    @property
    def relayed(self) -> bool:
        """A pair of the T path (a relayed candidate on either side)."""
        return is_relayed(self.local, self.remote)


def is_relayed(local: Candidate, remote: Candidate) -> bool:
    return CandidateType.RELAY in (local.kind, remote.kind)


def pair_key(local: Candidate, remote: Candidate) -> PairKey:
    return (local.base if local.kind is not CandidateType.RELAY else local.address, remote.address)


class Pair:
    """Mutable pair state owned by the check list (internal to ``ice``)."""

    __slots__ = (
        "checks_answered",
        "checks_sent",
        "consent_expires_at",
        "consent_lost",
        "flaps",
        "foundation",
        "holddown_until",
        "kind",
        "last_response_at",
        "local",
        "mapped",
        "nominated",
        "nominated_at",
        "priority",
        "remote",
        "rtt_s",
        "selected_at",
        "state",
        "transaction",
        "valid",
    )

    def __init__(
        self, local: Candidate, remote: Candidate, controlling: bool, kind: str | None = None
    ) -> None:
        self.local = local
        self.remote = remote
        relayed = is_relayed(local, remote)
        self.kind = kind or ("T" if relayed else "D-udp")
        self.foundation = f"{local.foundation}:{remote.foundation}"
        self.priority = 0
        self.set_role(controlling)
        self.state = PairState.RELAYED if relayed else PairState.FROZEN
        self.valid = False
        self.nominated = False
        self.nominated_at: float | None = None
        self.rtt_s: float | None = None
        self.last_response_at: float | None = None
        self.consent_expires_at: float | None = None
        self.consent_lost = False
        self.checks_sent = 0
        self.checks_answered = 0
        self.mapped: TransportAddress | None = None
        self.transaction: bytes | None = None  # the check in flight (not heartbeats)
        self.selected_at: float | None = None  # when it last became the selected pair
        self.flaps = 0  # deaths soon after being selected, in a row (flap damping)
        self.holddown_until = 0.0  # not selected again before this (flap damping)

    @property
    def key(self) -> PairKey:
        return pair_key(self.local, self.remote)

    @property
    def checkable(self) -> bool:
        return self.state is not PairState.RELAYED and not self.consent_lost

    def set_role(self, controlling: bool) -> None:
        """RFC 8445 §6.1.2.3: G is the controlling agent's candidate priority."""
        ours, theirs = self.local.priority, self.remote.priority
        self.priority = pair_priority(ours, theirs) if controlling else pair_priority(theirs, ours)

    def snapshot(self, selected: bool) -> CandidatePair:
        return CandidatePair(
            self.local,
            self.remote,
            self.state,
            self.priority,
            self.foundation,
            self.valid,
            self.nominated,
            selected,
            self.rtt_s,
            self.last_response_at,
            self.consent_expires_at,
            self.consent_lost,
            self.checks_sent,
            self.checks_answered,
            self.mapped,
            self.kind,
        )


class CheckList:
    """The pairs of one agent, ordered by priority, with the freezing rules of §6.1.2.6."""

    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        self.max_pairs = max_pairs
        self._pairs: dict[PairKey, Pair] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self._pairs.values())

    def get(self, key: PairKey) -> Pair | None:
        return self._pairs.get(key)

    def clear(self) -> None:
        self._pairs.clear()

    def by_priority(self) -> list[Pair]:
        return sorted(self._pairs.values(), key=lambda p: p.priority, reverse=True)

    def add(self, pair: Pair, protected: Pair | None = None) -> bool:
        """Insert ``pair`` (False when it exists or the list is full of pairs worth keeping).

        At the cap the lowest-priority pair that is not valid, not nominated, not being checked
        and not ``protected`` (the selected pair) makes room, if it ranks below ``pair``.
        """
        if pair.key in self._pairs:
            return False
        if len(self._pairs) >= self.max_pairs:
            victim = self._eviction_candidate(protected)
            if victim is None or victim.priority >= pair.priority:
                return False
            del self._pairs[victim.key]
        if pair.state is PairState.FROZEN and not self._foundation_active(pair.foundation):
            pair.state = PairState.WAITING
        self._pairs[pair.key] = pair
        return True

    def remove(self, pair: Pair) -> None:
        self._pairs.pop(pair.key, None)

    def next_ordinary(self) -> Pair | None:
        """§6.1.4.2: the highest-priority waiting pair, else the highest-priority frozen one."""
        for state in (PairState.WAITING, PairState.FROZEN):
            ready = [
                p
                for p in self._pairs.values()
                if p.state is state and p.transaction is None and not p.consent_lost
            ]
            if ready:
                return max(ready, key=lambda p: p.priority)
        return None

    def unfreeze(self, foundation: str) -> None:
        """§7.2.5.3.3: a success unfreezes the frozen pairs of the same foundation."""
        for pair in self._pairs.values():
            if pair.state is PairState.FROZEN and pair.foundation == foundation:
                pair.state = PairState.WAITING

    def count(self, *states: PairState) -> int:
        return sum(p.state in states for p in self._pairs.values())

    def _foundation_active(self, foundation: str) -> bool:
        return any(
            p.foundation == foundation and p.state in (PairState.WAITING, PairState.IN_PROGRESS)
            for p in self._pairs.values()
        )

    def _eviction_candidate(self, protected: Pair | None) -> Pair | None:
        victims = [
            p
            for p in self._pairs.values()
            if p is not protected and not p.valid and not p.nominated and p.transaction is None
        ]
        return min(victims, key=lambda p: p.priority, default=None)
