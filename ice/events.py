"""What an :class:`~ice.agent.IceAgent` hands its driver: datagrams and events, pure."""

from __future__ import annotations

from dataclasses import dataclass

from ice.candidate import Candidate, TransportAddress
from ice.checklist import CandidatePair


@dataclass(frozen=True, slots=True)
class OutgoingDatagram:
    """A STUN datagram to send from ``local`` (a local base) to ``remote``.

    The driver sends it exactly like the data of that pair (same socket, same UDP 5-tuple),
    so checks and heartbeats share the data's fate. With several agents in one process the
    driver keeps the RFC 8445 §14.2 global rate (one new check per 5 ms) if it must.
    """

    data: bytes
    local: TransportAddress
    remote: TransportAddress


@dataclass(frozen=True, slots=True)
class PathSelected:
    """Data should now go on ``pair`` (``previous``: the pair it replaces, ``None`` = T)."""

    pair: CandidatePair
    previous: CandidatePair | None


@dataclass(frozen=True, slots=True)
class PathLost:
    """The selected pair is gone (``"timeout"``, ``"consent"``, ``"restart"``); unless a
    :class:`PathSelected` follows, data goes back to the T path."""

    pair: CandidatePair
    reason: str


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """A role conflict (RFC 8445 §7.3.1.1) made us ``controlling`` or controlled."""

    controlling: bool


@dataclass(frozen=True, slots=True)
class PeerReflexiveCandidate:
    """A remote peer-reflexive candidate learnt from a check (RFC 8445 §7.3.1.3)."""

    candidate: Candidate


@dataclass(frozen=True, slots=True)
class ConsentLost:
    """RFC 7675: no authenticated answer on ``pair`` for the consent timeout; it is silent now."""

    pair: CandidatePair


IceEvent = PathSelected | PathLost | RoleChanged | PeerReflexiveCandidate | ConsentLost
