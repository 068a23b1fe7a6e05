"""What `mipnode status|paths|bindings` show, as typed values (pure).

The daemons answer the control socket with these objects; :func:`to_json` turns them into the
stable JSON of docs/cli.md (field names are the JSON keys; ``from_`` is written ``from``). Times
are POSIX seconds: cores run on monotonic time and convert with the wall-clock offset they were
given at start (:func:`posix`), so a view never reads a clock either.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from ipaddress import IPv6Address
from typing import Any

from ice.checklist import CandidatePair
from mipnode.core.transmit import NATIVE_PORT, TransportAddress
from mipnode.core.types import Via


def to_json(value: Any) -> Any:
    """Dataclasses, lists, tuples and dicts of them, as JSON-able values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name.rstrip("_"): to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def posix(monotonic: float | None, wall_offset: float) -> float | None:
    """A core's monotonic time as POSIX seconds, rounded for people (None stays None)."""
    return None if monotonic is None else round(monotonic + wall_offset, 3)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int | None = None

    @classmethod
    def of(cls, address: TransportAddress) -> Endpoint:
        """A transport address; the T-native "port" 0 is shown as none."""
        return cls(address[0], None if address[1] == NATIVE_PORT else address[1])


@dataclass(frozen=True, slots=True)
class PathView:
    kind: str
    local: Endpoint | None
    remote: Endpoint | None


@dataclass(frozen=True, slots=True)
class SelectedView:
    kind: str
    local: Endpoint | None
    remote: Endpoint | None
    rtt_ms: float | None
    since: float | None


@dataclass(frozen=True, slots=True)
class PairView:
    kind: str
    local: Endpoint | None
    remote: Endpoint | None
    state: str
    rtt_ms: float | None
    checks_sent: int | None
    checks_answered: int | None
    local_type: str | None = None  # ICE candidate types of a D-udp pair (host, srflx, prflx)
    remote_type: str | None = None

    @classmethod
    def of_ice(cls, p: CandidatePair) -> PairView:
        """A D-udp pair of an ICE agent."""
        return cls(
            p.kind,
            Endpoint.of(p.local.base),
            Endpoint.of(p.remote.address),
            str(p.state),
            ms(p.rtt_s),
            p.checks_sent,
            p.checks_answered,
            p.local.kind.value,
            p.remote.kind.value,
        )


@dataclass(frozen=True, slots=True)
class ChangeView:
    at: float | None
    from_: str | None
    to: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class PeerView:
    """One entry of `mipnode paths --json`."""

    peer: str
    role: str
    selected: SelectedView | None
    pairs: list[PairView]
    changes: list[ChangeView]


@dataclass(frozen=True, slots=True)
class BindingView:
    hoa: str
    coa: str | None
    path: PathView
    sequence: int | None
    lifetime_remaining_s: float
    state: str
    mobile_network_prefixes: tuple[str, ...] = ()  # a mobile router's (RFC 3963), HA side
    ipv4_home_address: str | None = None  # given by the HA (RFC 5555), HA side


def address_text(addr: IPv6Address | None) -> str | None:
    """IPv4-mapped care-of addresses (an IPv4 access network) print as ``::ffff:a.b.c.d``."""
    if addr is None:
        return None
    mapped = addr.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(addr)


def via_path(via: Via, local: TransportAddress | None = None) -> PathView:
    """The path view of a binding's :class:`~mipnode.core.types.Via` (HA and CN side)."""
    port = via.remote[1] if len(via.remote) > 1 else None
    return PathView(
        via.kind,
        None if local is None else Endpoint.of(local),
        Endpoint(str(via.remote[0]), port if isinstance(port, int) else None),
    )
