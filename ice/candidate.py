"""ICE candidates, their priorities and foundations (RFC 8445 §5.1), pure.

A candidate is a transport address (IP text, port) the agent can be reached at. mipnode uses
four kinds:

* ``host``: an address of a local interface (the MN's CoA, a CN address);
* ``srflx``: the address a NAT maps a host candidate to, learnt by the driver from the HA's
  STUN answers (DESIGN §4); advertised, never paired: its pairs would be the same 5-tuples as
  its base's (RFC 8445 §6.1.2.4);
* ``prflx``: learnt from a check (the source of an authenticated request from an unknown
  address, RFC 8445 §7.3.1.3);
* ``relay``: the T path through the home agent (DESIGN §2: "the relayed candidate"). The agent
  shows pairs with it but never STUN-checks them: with no selected pair the driver sends on T.

Priorities follow RFC 8445 §5.1.2.1 with the type preferences of DESIGN §2 (direct paths before
the T path): host 126, prflx 110, srflx 100, relay 0. The local preference distinguishes
interfaces and address families (:func:`local_preference`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address

TransportAddress = tuple[str, int]
"""(IP address as text, UDP port). IPv6 text is kept canonical (see :func:`transport_address`)."""

# Specification constants (RFC 8445 §5.1.2.1)
MAX_LOCAL_PREFERENCE = 65535
MAX_COMPONENT = 256
MAX_PRIORITY = 2**31 - 1


class CandidateType(StrEnum):
    HOST = "host"
    SRFLX = "srflx"
    PRFLX = "prflx"
    RELAY = "relay"


TYPE_PREFERENCE: dict[CandidateType, int] = {
    CandidateType.HOST: 126,
    CandidateType.PRFLX: 110,
    CandidateType.SRFLX: 100,
    CandidateType.RELAY: 0,
}


def transport_address(ip: str, port: int) -> TransportAddress:
    """A :data:`TransportAddress` with the IP in canonical text form.

    Raises:
        ValueError: not an IP address, or the port is outside 0-65535.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return (str(ip_address(ip)), port)


def is_ipv6(address: TransportAddress) -> bool:
    return ":" in address[0]


def candidate_priority(
    kind: CandidateType | str, local_pref: int = MAX_LOCAL_PREFERENCE, component: int = 1
) -> int:
    """RFC 8445 §5.1.2.1: 2^24 * type preference + 2^8 * local preference + (256 - component).

    Raises:
        ValueError: ``local_pref`` outside 0-65535 or ``component`` outside 1-256.
    """
    if not 0 <= local_pref <= MAX_LOCAL_PREFERENCE:
        raise ValueError("local preference must be in 0..65535")
    if not 1 <= component <= MAX_COMPONENT:
        raise ValueError("component must be in 1..256")
    type_pref = TYPE_PREFERENCE[CandidateType(kind)]
    return (type_pref << 24) + (local_pref << 8) + (256 - component)


def local_preference(interface_rank: int = 0, *, ipv6: bool = True) -> int:
    """A local preference per interface: rank 0 is the most preferred interface.

    RFC 8445 §5.1.2.1 leaves the value to the agent; 65535 for a single-homed host. mipnode
    gives each interface a block of 256 values (the driver ranks them, e.g. wired, then Wi-Fi,
    then cellular) and, within an interface, puts IPv6 before IPv4 (RFC 8421 §4 lets dual-stack
    hosts prefer a family; DESIGN §2 measures RTT anyway).

    Raises:
        ValueError: ``interface_rank`` outside 0-255.
    """
    if not 0 <= interface_rank <= 255:
        raise ValueError("interface rank must be in 0..255")
    return MAX_LOCAL_PREFERENCE - 256 * interface_rank - (0 if ipv6 else 128)


def pair_priority(controlling: int, controlled: int) -> int:
    """RFC 8445 §6.1.2.3: 2^32*MIN(G,D) + 2*MAX(G,D) + (G>D ? 1 : 0).

    ``controlling`` (G) and ``controlled`` (D) are the candidate priorities of the controlling
    and the controlled agent's candidate in the pair.
    """
    g, d = controlling, controlled
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


def foundation(kind: CandidateType | str, base_ip: str, server_ip: str | None = None) -> str:
    """RFC 8445 §5.1.1.3: equal for candidates with the same type, base IP, server and transport.

    Eight hex digits (ice-chars, RFC 8839 §5.1) of a hash over those four (transport is UDP).
    """
    key = f"{CandidateType(kind)}|udp|{ip_address(base_ip)}|{server_ip or ''}"
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate (RFC 8445 §5.1).

    Attributes:
        kind: the candidate type.
        address: where the candidate receives.
        base: the local address that sends for it (RFC 8445 §5.1.1.3); for a host candidate
            the address itself; for a remote candidate the agent does not look at it.
        priority: RFC 8445 §5.1.2.1 priority (1..2^31-1).
        foundation: RFC 8445 §5.1.1.3 foundation (1-32 ice-chars).
        component: always 1 for mipnode (one data stream, one component).
    """

    kind: CandidateType
    address: TransportAddress
    base: TransportAddress
    priority: int
    foundation: str
    component: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", CandidateType(self.kind))
        object.__setattr__(self, "address", transport_address(*self.address))
        object.__setattr__(self, "base", transport_address(*self.base))
        if not 1 <= self.priority <= MAX_PRIORITY:
            raise ValueError("candidate priority must be in 1..2^31-1")
        if not 1 <= len(self.foundation) <= 32:
            raise ValueError("foundation must be 1-32 characters")
        if not 1 <= self.component <= MAX_COMPONENT:
            raise ValueError("component must be in 1..256")

    @classmethod
    def host(
        cls, address: TransportAddress, *, local_pref: int = MAX_LOCAL_PREFERENCE
    ) -> Candidate:
        """A host candidate with the RFC priority for ``local_pref`` and its foundation."""
        return cls(
            CandidateType.HOST,
            address,
            address,
            candidate_priority(CandidateType.HOST, local_pref),
            foundation(CandidateType.HOST, address[0]),
        )

    @classmethod
    def server_reflexive(
        cls,
        address: TransportAddress,
        base: TransportAddress,
        *,
        server_ip: str,
        local_pref: int = MAX_LOCAL_PREFERENCE,
    ) -> Candidate:
        """A server-reflexive candidate learnt through the STUN server at ``server_ip``."""
        return cls(
            CandidateType.SRFLX,
            address,
            base,
            candidate_priority(CandidateType.SRFLX, local_pref),
            foundation(CandidateType.SRFLX, base[0], server_ip),
        )

    @classmethod
    def relayed(
        cls,
        address: TransportAddress,
        base: TransportAddress,
        *,
        server_ip: str,
        local_pref: int = MAX_LOCAL_PREFERENCE,
    ) -> Candidate:
        """The relayed candidate: the T path through the home agent at ``server_ip``."""
        return cls(
            CandidateType.RELAY,
            address,
            base,
            candidate_priority(CandidateType.RELAY, local_pref),
            foundation(CandidateType.RELAY, base[0], server_ip),
        )

    @property
    def ipv6(self) -> bool:
        return is_ipv6(self.address)


def can_pair(local: Candidate, remote: Candidate) -> bool:
    """Same component and address family (RFC 8445 §6.1.2.2)."""
    return local.component == remote.component and local.ipv6 == remote.ipv6
