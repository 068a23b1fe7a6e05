"""What the mobile node shows: `mipnode status|paths|bindings` views of a node core (pure).

Read-only functions over a :class:`~mipnode.core.mobile_node.MobileNode`; the daemon adds its
own counters and serialises with :func:`~mipnode.core.views.to_json` (keys: docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from ice.checklist import CandidatePair
from mipnode.core.direct_paths import Change
from mipnode.core.ipv4_networks import text
from mipnode.core.mobile_node import MobileNode
from mipnode.core.views import (
    BindingView,
    ChangeView,
    Endpoint,
    PairView,
    PathView,
    PeerView,
    SelectedView,
    address_text,
    ms,
    posix,
)


@dataclass(frozen=True, slots=True)
class AccessView:
    interface: str | None
    ipv6: str | None
    ipv4: str | None


@dataclass(frozen=True, slots=True)
class NatView:
    ipv6: bool
    ipv4: bool


@dataclass(frozen=True, slots=True)
class CandidateView:
    """One home pair as `mipnode status` lists it."""

    kind: str
    family: str
    remote: Endpoint
    state: str
    rtt_ms: float | None
    mapped: Endpoint | None
    checks_sent: int
    checks_answered: int


@dataclass(frozen=True, slots=True)
class CorrespondentView:
    cn: str
    path: str | None
    since: float | None
    route_optimization: str | None
    care_of: str | None
    sequence: int | None
    lifetime_remaining_s: float | None
    direct_udp: PeerView | None


@dataclass(frozen=True, slots=True)
class HostFlowView:
    """A mobile router's flow from a host behind it to a correspondent it offered direct
    paths to on the host's behalf (core/mn_hosts.py)."""

    host: str
    cn: str
    path: str | None
    since: float | None
    direct_udp: PeerView


@dataclass(frozen=True, slots=True)
class MnStatus:
    role: str
    home_address: str
    home_agent: str
    state: str
    access: AccessView
    registration_ms: float | None
    nat: NatView
    handover_ms: float | None
    rtt_ms: float | None
    last_rejection: int | None
    diagnosis: str | None
    diagnosis_since: float | None
    bindings: list[BindingView]
    candidates: list[CandidateView]
    correspondents: list[CorrespondentView]
    mobile_network_flows: list[HostFlowView]
    core: dict[str, int]
    uptime_s: float
    protection: str  # "esp" (keyed or not yet: see esp_keyed) or "none"
    esp_keyed: bool
    home_prefixes: list[str]  # what the home agent advertised (RFC 6275 §11.4.3)


def binding(node: MobileNode, now: float) -> BindingView | None:
    pair = node.home_pair or node.registering_on
    if node.state == "registering":
        pair = node.registering_on or pair
    if pair is None or node.state not in ("registered", "registering", "deregistering"):
        return None
    return BindingView(
        hoa=str(node.config.home_address),
        coa=address_text(node.registration.care_of),
        path=PathView(pair.kind, Endpoint.of(pair.local), Endpoint.of(pair.remote)),
        sequence=node.registration.sequence,
        lifetime_remaining_s=round(node.registration.lifetime_remaining(now), 1),
        state=node.state,
        # What this binding asks the home agent to route to us besides the home address:
        # a mobile router's networks (RFC 3963) and the IPv4 home address it gave (RFC 5555).
        mobile_network_prefixes=tuple(text(p) for p in node.config.mobile_network_prefixes),
        ipv4_home_address=None if node.ipv4_home_address is None else str(node.ipv4_home_address),
    )


def changes(node: MobileNode, items: Iterable[Change]) -> list[ChangeView]:
    return [ChangeView(posix(c.at, node.wall_offset), c.old, c.new, c.reason) for c in items]


def home_peer(node: MobileNode) -> PeerView:
    """The home agent as a peer of `mipnode paths`: its pairs and the selected one."""
    pairs: list[PairView] = []
    selected: SelectedView | None = None
    if node.home is not None:
        for pair, snap in node.home.snapshots():
            local, remote = Endpoint.of(pair.local), Endpoint.of(pair.remote)
            pairs.append(
                PairView(
                    pair.kind,
                    local,
                    remote,
                    str(snap.state),
                    ms(snap.rtt_s),
                    snap.checks_sent,
                    snap.checks_answered,
                )
            )
            if snap.selected:
                rtt = ms(node.keepalive_rtt_s or snap.rtt_s)
                since = posix(node.home_since, node.wall_offset)
                selected = SelectedView(pair.kind, local, remote, rtt, since)
    ha = str(node.config.home_agent)
    return PeerView(ha, "home-agent", selected, pairs, changes(node, node.home_changes))


def correspondent_peer(node: MobileNode, cn: IPv6Address) -> PeerView:
    kind = node.correspondent_path(cn)
    access = node.access
    coa = None if access is None or access.ipv6 is None else Endpoint(str(access.ipv6))
    ro_state = None if node.d_native is None else node.d_native.state(cn)
    ready = None if node.d_native is None else node.d_native.ready_since(cn)
    state = "succeeded" if ready is not None else (ro_state or "off")
    pairs = [PairView("D-native", coa, Endpoint(str(cn)), state, None, None, None)]
    if node.direct is not None:
        pairs += [PairView.of_ice(p) for p in node.direct.pairs(cn)]
    selected: SelectedView | None = None
    sel = None if node.direct is None else node.direct.selected(cn)
    if kind == "D-native":
        selected = SelectedView(
            "D-native", coa, Endpoint(str(cn)), None, posix(ready, node.wall_offset)
        )
    elif kind == "D-udp" and sel is not None and node.direct is not None:
        selected = _d_udp(sel, posix(node.direct.since(cn), node.wall_offset))
    else:
        selected = _home(node)
    log = list(node.ro_changes.get(cn, ()))
    if node.direct is not None:
        log += node.direct.changes(cn)
    log.sort(key=lambda c: c.at)
    return PeerView(str(cn), "correspondent", selected, pairs, changes(node, log))


def _d_udp(pair: CandidatePair, since: float | None) -> SelectedView:
    local, remote = Endpoint.of(pair.local.base), Endpoint.of(pair.remote.address)
    return SelectedView("D-udp", local, remote, ms(pair.rtt_s), since)


def _home(node: MobileNode) -> SelectedView | None:
    """The home pair as a correspondent's selected path (data goes through the HA)."""
    hp = node.home_pair
    if hp is None:
        return None
    return SelectedView(hp.kind, Endpoint.of(hp.local), Endpoint.of(hp.remote), None, None)


def host_flow(node: MobileNode, host: IPv6Address, cn: IPv6Address) -> HostFlowView:
    hosts = node.hosts
    kind = node.flow_path(host, cn)
    sel = None if hosts is None else hosts.selected(host, cn)
    selected, since = _home(node), None
    if kind == "D-udp" and sel is not None and hosts is not None:
        since = posix(hosts.since(host, cn), node.wall_offset)
        selected = _d_udp(sel, since)
    pairs = [] if hosts is None or (dp := hosts.paths(host)) is None else dp.pairs(cn)
    log = [] if hosts is None else hosts.changes(host, cn)
    peer = PeerView(
        str(cn), "correspondent", selected, [PairView.of_ice(p) for p in pairs], changes(node, log)
    )
    return HostFlowView(str(host), str(cn), kind, since, peer)


def paths(node: MobileNode) -> list[PeerView]:
    """DESIGN §8 `mipnode paths --json`: the home agent, then each correspondent."""
    return [home_peer(node), *(correspondent_peer(node, cn) for cn in node.correspondents())]


def correspondent(node: MobileNode, now: float, cn: IPv6Address) -> CorrespondentView:
    ro = None
    if node.d_native is not None:
        ro = next((b for b in node.d_native.bindings(now) if b.cn == cn), None)
    ready = None if node.d_native is None else node.d_native.ready_since(cn)
    direct = None
    if node.direct is not None and cn in node.direct.peers:
        direct = correspondent_peer(node, cn)
    kind = node.correspondent_path(cn)
    since = ready if kind == "D-native" else None
    if kind == "D-udp" and node.direct is not None:
        since = node.direct.since(cn)
    return CorrespondentView(
        cn=str(cn),
        path=kind,
        since=posix(since, node.wall_offset),
        route_optimization=None if ro is None else ro.state,
        care_of=None if ro is None else str(ro.care_of),
        sequence=None if ro is None else ro.sequence,
        lifetime_remaining_s=None if ro is None else round(ro.lifetime_remaining, 1),
        direct_udp=direct,
    )


def status(node: MobileNode, now: float) -> MnStatus:
    a = node.access
    nat66, nat44 = node.nat
    candidates = []
    if node.home is not None:
        for pair, snap, state in node.home.shown():
            mapped = node.home.mapped.get(pair.key)
            candidates.append(
                CandidateView(
                    pair.kind,
                    f"IPv{pair.family}",
                    Endpoint.of(pair.remote),
                    state,
                    ms(snap.rtt_s),
                    None if mapped is None else Endpoint.of(mapped),
                    snap.checks_sent,
                    snap.checks_answered,
                )
            )
    b = binding(node, now)
    first = node.first_registration_s
    return MnStatus(
        role="mn",
        home_address=str(node.config.home_address),
        home_agent=str(node.config.home_agent),
        state=node.state,
        access=AccessView(
            None if a is None else a.ifname,
            None if a is None or a.ipv6 is None else str(a.ipv6),
            None if a is None or a.ipv4 is None else str(a.ipv4),
        ),
        registration_ms=None if first is None else round(first * 1000, 1),
        nat=NatView(nat66, nat44),
        handover_ms=None if node.last_handover_s is None else round(node.last_handover_s * 1000, 1),
        rtt_ms=ms(node.keepalive_rtt_s),
        last_rejection=node.last_rejection,
        diagnosis=node.diagnosis,
        diagnosis_since=posix(node.diagnosis_since, node.wall_offset),
        bindings=[] if b is None else [b],
        candidates=candidates,
        correspondents=[correspondent(node, now, cn) for cn in node.correspondents()],
        mobile_network_flows=[host_flow(node, h, cn) for h, cn in node.host_flows()],
        core=node.statistics(),
        uptime_s=round(now - node.started_at, 1),
        protection="none" if node.config.suite is None else "esp",
        esp_keyed=node.keyed,
        home_prefixes=_home_prefixes(node),
    )


def _home_prefixes(node: MobileNode) -> list[str]:
    adv = node.home_prefixes.advertised
    return [] if adv is None else [str(info.prefix) for info in adv.prefixes]


def bindings(node: MobileNode, now: float) -> dict[str, Any]:
    b = binding(node, now)
    return {"role": "mn", "bindings": [] if b is None else [b]}
