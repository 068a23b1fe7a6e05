"""Duplicate Address Detection before a first home registration (sans-IO).

RFC 6275 §10.3.1: before it returns a successful BA to a mobile node's first registration,
a home agent that serves a home link MUST make sure no other node there uses the home address
(and, when the BU has the L flag, the link-local address with the same interface identifier):
it runs Duplicate Address Detection (RFC 4862 §5.4) on the home link for them, and if that
fails it refuses the BU with status 134. The first-registration timer of RFC 6275 §13
(InitialBindackTimeoutFirstReg, 1.5 s) is what leaves time for it.

:class:`PendingDad` holds those registrations while they wait. It decides nothing about the
wire: the home agent core starts a run (its driver sends one Neighbor Solicitation from the
unspecified address per target), tells it of conflicts the driver saw (a Neighbor
Advertisement for a target, or another node's DAD solicitation for it, RFC 4862 §5.4.3 and
§5.4.4), and collects the runs whose wait is over. One run per home address; a newer BU for
the same address replaces the waiting one, with its own targets (:meth:`PendingDad.start`).
Bounded by the home addresses the home agent has security associations for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Generic, TypeVar

from mipnode.core.binding_cache import Deadlines

# RFC 4862 §5.1 defaults: DupAddrDetectTransmits 1, RetransTimer 1 s (RFC 4861 §10):
# one solicitation, and the address is taken when nothing answered within a second.
DAD_TRANSMITS = 1
RETRANS_TIMER_S = 1.0
DAD_WAIT_S = DAD_TRANSMITS * RETRANS_TIMER_S
LINK_LOCAL_PREFIX = IPv6Address("fe80::")
INTERFACE_ID_MASK = (1 << 64) - 1

RequestT = TypeVar("RequestT")


def link_local_of(home_address: IPv6Address) -> IPv6Address:
    """The link-local address with the home address's interface identifier (its low 64 bits):
    what a BU with the L flag asks the home agent to defend as well (RFC 6275 §6.1.7)."""
    return IPv6Address(int(LINK_LOCAL_PREFIX) | (int(home_address) & INTERFACE_ID_MASK))


def dad_targets(home_address: IPv6Address, link_local: bool) -> tuple[IPv6Address, ...]:
    """The addresses a registration's DAD covers, and the home agent then defends."""
    return (home_address, link_local_of(home_address)) if link_local else (home_address,)


@dataclass(slots=True)
class _Run(Generic[RequestT]):
    request: RequestT
    targets: tuple[IPv6Address, ...]


class PendingDad(Generic[RequestT]):
    """Registrations waiting for their DAD (module docstring)."""

    def __init__(self, wait_s: float = DAD_WAIT_S) -> None:
        self._wait_s = wait_s
        self._runs: dict[IPv6Address, _Run[RequestT]] = {}
        self._by_target: dict[IPv6Address, IPv6Address] = {}  # target -> its home address
        self._deadlines: Deadlines[IPv6Address] = Deadlines()

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, home_address: object) -> bool:
        return home_address in self._runs

    def start(
        self,
        now: float,
        home_address: IPv6Address,
        request: RequestT,
        targets: tuple[IPv6Address, ...],
    ) -> tuple[IPv6Address, ...]:
        """Hold ``request`` until DAD for ``targets`` is over; returns the targets that need a
        solicitation now. When a run for this home address is already under way the newer
        request takes the older one's place, with its own targets: one it drops is no longer
        probed, one it adds is, and the wait starts again so that the new one gets its full
        RetransTimer. Targets are unique to a home address: the link-local one has the home
        address's interface identifier, and the configuration takes a home link only with a
        prefix of /64 or longer."""
        run = self._runs.get(home_address)
        old = () if run is None else run.targets
        new = tuple(t for t in targets if t not in old)
        for target in old:
            if target not in targets:
                self._by_target.pop(target, None)
        for target in new:
            self._by_target[target] = home_address
        if run is None:
            self._runs[home_address] = _Run(request, targets)
        else:
            run.request, run.targets = request, targets
        if new:
            self._deadlines.schedule(home_address, now + self._wait_s)
        return new

    def conflict(self, target: IPv6Address) -> tuple[IPv6Address, RequestT] | None:
        """Another node uses ``target``: the run it belongs to ends (its home address and the
        waiting request), or ``None`` when no run is probing it."""
        home_address = self._by_target.get(target)
        if home_address is None:
            return None
        return home_address, self._end(home_address)

    def cancel(self, home_address: IPv6Address) -> RequestT | None:
        """End the run of ``home_address`` without a verdict (a de-registration came)."""
        return self._end(home_address) if home_address in self._runs else None

    def due(self, now: float) -> Iterator[tuple[IPv6Address, RequestT]]:
        """The runs whose wait is over without a conflict: the address is free."""
        for home_address in self._deadlines.due(now):
            yield home_address, self._end(home_address)

    def next_deadline(self) -> float | None:
        return self._deadlines.next_deadline()

    def _end(self, home_address: IPv6Address) -> RequestT:
        run = self._runs.pop(home_address)
        self._deadlines.cancel(home_address)
        for target in run.targets:
            self._by_target.pop(target, None)
        return run.request
