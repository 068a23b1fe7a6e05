"""`mipnode ping PEER`: one probe on every candidate path to a peer, each in its own
encapsulation, and the round trip of each (sans-IO; the driver waits for the answers).

* The home agent: a check on every pair of the home path (``core/home_path.py``): T-native
  inside IPv6-in-IPv6 (or ESP once keyed), T-udp as the UDP payload, to each HA port and family.
* A correspondent (or another mobile node's home address): a check on every D-udp pair of its
  ICE agent (ESP-sealed like its data, ``core/direct_paths.py``), a D-native probe (an echo with
  a Home Address option, answered through a type 2 routing header, ``core/d_native.py``) when
  it holds our binding, and a check on the selected home pair for ``T``: the relayed path's leg
  to the home agent (the home agent's leg to the correspondent is not measured).

The probes are ordinary checks, answered like any other (a pair that answers may become
selected, one that does not is not failed for it); at most one round per call, started by root
through the control socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from ice.agent import Probe
from mipnode.core.transmit import TransportAddress
from mipnode.core.views import Endpoint, ms, to_json

if TYPE_CHECKING:
    from mipnode.core.mobile_node import MobileNode

PATH_KINDS = ("T-native", "T-udp", "T", "D-udp", "D-native")


@dataclass(frozen=True, slots=True)
class PingProbe:
    kind: str  # T-native, T-udp, T (a correspondent's relayed path), D-udp, D-native
    local: TransportAddress | None
    remote: TransportAddress | None
    source: str  # who answers for it: "home", "direct", "d-native"
    token: bytes  # the check's transaction id, or the D-native probe's nonce
    selected: bool  # data to this peer takes it now


@dataclass(frozen=True, slots=True)
class PingRound:
    peer: IPv6Address
    role: str  # "home-agent" | "correspondent"
    probes: tuple[PingProbe, ...]
    data_path: str | None  # the kind data to the peer takes now
    note: str | None = None  # why a path is missing


def start(node: MobileNode, now: float, peer: IPv6Address, kind: str | None) -> PingRound:
    """Send the round; ``kind`` keeps one path kind only."""
    wanted = None if kind is None else frozenset({kind})
    home = node.home
    home_sel = node.home_pair
    if peer == node.config.home_agent:
        probes = [] if home is None else home.agent.probe(now, wanted)
        data = home_sel.kind if home_sel is not None else None
        note = None if home is not None else "no access network: nothing to probe"
        return PingRound(peer, "home-agent", tuple(_ice(probes, "home")), data, note)
    out: list[PingProbe] = []
    note = None
    data = node.correspondent_path(peer) or (home_sel.kind if home_sel else None)
    if node.direct is not None and (kind is None or kind == "D-udp"):
        out += _ice(node.direct.probe(now, peer), "direct")
        if peer not in node.direct.peers:
            note = "no direct paths with this peer yet (they start with its first traffic)"
    if node.d_native is not None and (kind is None or kind == "D-native"):
        nonce = node.d_native.ping(now, peer)
        if nonce is not None:
            near = node.access.ipv6 if node.access is not None else None
            local = None if near is None else (str(near), 0)
            out.append(PingProbe("D-native", local, (str(peer), 0), "d-native", nonce, False))
    if home is not None and home_sel is not None and (kind is None or kind == "T"):
        pick = frozenset({home_sel.kind})
        for p in home.agent.probe(now, pick):
            if (p.pair.local.base, p.pair.remote.address) == (home_sel.local, home_sel.remote):
                out.append(
                    PingProbe("T", home_sel.local, home_sel.remote, "home", p.transaction_id, False)
                )
    selected = [
        PingProbe(p.kind, p.local, p.remote, p.source, p.token, p.kind == _kind_of(data))
        for p in out
    ]
    return PingRound(peer, "correspondent", tuple(selected), data, note)


def _kind_of(data: str | None) -> str | None:
    # Data to a correspondent over the home path reads as its pair's kind (T-native/T-udp).
    return "T" if data in ("T-native", "T-udp") else data


def _ice(probes: Iterable[Probe], source: str) -> list[PingProbe]:
    return [
        PingProbe(
            p.pair.kind,
            p.pair.local.base,
            p.pair.remote.address,
            source,
            p.transaction_id,
            p.pair.selected,
        )
        for p in probes
    ]


def result(node: MobileNode, peer: IPv6Address, probe: PingProbe) -> float | str | None:
    """Round trip (s), ``"error"`` or None (no answer yet)."""
    if probe.source == "home":
        return None if node.home is None else node.home.agent.probe_result(probe.token)
    if probe.source == "direct":
        return None if node.direct is None else node.direct.probe_result(peer, probe.token)
    return None if node.d_native is None else node.d_native.ping_result(probe.token)


def report(round_: PingRound, results: dict[int, float | str]) -> dict[str, Any]:
    """The round as `mipnode ping --json` shows it (docs/cli.md); ``results`` by probe index."""

    def outcome(got: float | str | None) -> str:
        if isinstance(got, float):
            return "answered"
        return "error response" if got == "error" else "no answer"

    def endpoint(ta: TransportAddress | None) -> Any:
        return None if ta is None else to_json(Endpoint.of(ta))

    return {
        "peer": str(round_.peer),
        "role": round_.role,
        "data_path": round_.data_path,
        "note": round_.note,
        "paths": [
            {
                "kind": p.kind,
                "local": endpoint(p.local),
                "remote": endpoint(p.remote),
                "selected": p.selected,
                "result": outcome(results.get(i)),
                "rtt_ms": ms(got) if isinstance(got := results.get(i), float) else None,
            }
            for i, p in enumerate(round_.probes)
        ],
    }
