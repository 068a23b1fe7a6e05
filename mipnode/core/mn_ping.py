"""`mipnode ping PEER`: one probe on every candidate path to a peer, each in its own
encapsulation, and the round trip of each (sans-IO; the driver waits for the answers).

* The home agent: a check on the pairs of the home path (``core/home_path.py``): T-native
  inside IPv6-in-IPv6 (or ESP once keyed), T-udp as the UDP payload, to each HA port and family.
* A correspondent (or another mobile node's home address): a check on the D-udp pairs of its
  ICE agent (ESP-sealed like its data, ``core/direct_paths.py``), a D-native probe (an echo with
  a Home Address option, answered through a type 2 routing header, ``core/d_native.py``) while
  it holds our binding, and ``T``: a check on the selected home pair, the relayed path's leg to
  the home agent (the home agent's leg to the correspondent is not measured).

The probes are ordinary checks, answered like any other (a pair that answers may become
selected, one that does not is not failed for it); at most ``MAX_PROBES_PER_CALL`` pairs per
agent per round (``ice/agent.py``), rounds started by root through the control socket one at a
time. Each probe keeps the agent that sent it, so an ICE restart or a move during the wait
cannot mix up or lose its answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address
from statistics import median
from typing import TYPE_CHECKING, Any

from ice.agent import IceAgent, Probe
from mipnode.core.transmit import TransportAddress
from mipnode.core.views import Endpoint, ms, to_json

if TYPE_CHECKING:
    from mipnode.core.d_native import DNativePaths
    from mipnode.core.mobile_node import MobileNode

HOME_KINDS = ("T-native", "T-udp")
PEER_KINDS = ("T", "D-udp", "D-native")
PATH_KINDS = HOME_KINDS + PEER_KINDS


@dataclass(frozen=True, slots=True)
class PingProbe:
    kind: str  # T-native, T-udp, T (a correspondent's relayed path), D-udp, D-native
    local: TransportAddress | None
    remote: TransportAddress | None
    token: bytes  # the check's transaction id, or the D-native probe's nonce
    selected: bool  # data to this peer takes it now
    agent: IceAgent | None = field(default=None, compare=False)  # who holds the answer
    d_native: DNativePaths | None = field(default=None, compare=False)

    def result(self) -> float | str | None:
        """Round trip (s), ``"error"`` (an error response) or None (no answer yet)."""
        if self.agent is not None:
            return self.agent.probe_result(self.token)
        return None if self.d_native is None else self.d_native.ping_result(self.token)


@dataclass(frozen=True, slots=True)
class PingRound:
    peer: IPv6Address
    role: str  # "home-agent" | "correspondent"
    probes: tuple[PingProbe, ...]
    data_path: str | None  # the kind data to the peer takes now
    note: str | None = None  # why a path is missing


def kind_error(is_home_agent: bool, kind: str | None) -> str | None:
    """Why ``kind`` is no path to this peer (None: it is, or no kind was asked for)."""
    if kind is None:
        return None
    kinds = HOME_KINDS if is_home_agent else PEER_KINDS
    if kind in kinds:
        return None
    peer = "the home agent" if is_home_agent else "a correspondent"
    return f"{peer} has no {kind} path ({', '.join(kinds)})"


def start(node: MobileNode, now: float, peer: IPv6Address, kind: str | None) -> PingRound:
    """Send the round; ``kind`` keeps one path kind only (see :func:`kind_error`)."""
    home, home_sel = node.home, node.home_pair
    if peer == node.config.home_agent:
        probes = [] if home is None else home.agent.probe(now, _kinds(kind))
        data = home_sel.kind if home_sel is not None else None
        note = None if home is not None else "no access network: nothing to probe"
        out = [_ice(p, p.pair.kind, p.pair.selected, home.agent) for p in probes if home]
        return PingRound(peer, "home-agent", tuple(out), data, note)
    data = node.correspondent_path(peer)
    relayed = data in HOME_KINDS  # data to the correspondent goes through the home agent
    out, notes = [], []
    if node.direct is not None and kind in (None, "D-udp"):
        agent, checks, why = node.direct.probe(now, peer)
        out += [_ice(p, "D-udp", p.pair.selected, agent) for p in checks]
        notes += [why] if why else []
    if node.d_native is not None and kind in (None, "D-native"):
        nonce = node.d_native.ping(now, peer)
        if nonce is not None:
            near = None if node.access is None or node.access.ipv6 is None else node.access.ipv6
            local = None if near is None else (str(near), 0)
            selected = data == "D-native"
            remote = (str(peer), 0)
            out.append(
                PingProbe("D-native", local, remote, nonce, selected, d_native=node.d_native)
            )
    if home is not None and home_sel is not None and kind in (None, "T"):
        only = (home_sel.local, home_sel.remote)
        out += [_ice(p, "T", relayed, home.agent) for p in home.agent.probe(now, None, only)]
    return PingRound(peer, "correspondent", tuple(out), data, "; ".join(notes) or None)


def _kinds(kind: str | None) -> frozenset[str] | None:
    return None if kind is None else frozenset({kind})


def _ice(p: Probe, kind: str, selected: bool, agent: IceAgent | None) -> PingProbe:
    return PingProbe(
        kind, p.pair.local.base, p.pair.remote.address, p.transaction_id, selected, agent
    )


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


def summary(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path over the rounds of `mipnode ping`: sent, answered, min/median/max RTT."""
    by_path: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # in first-seen order
    for r in rounds:
        for p in r.get("paths", []):
            key = (str(p.get("kind")), repr(p.get("local")), repr(p.get("remote")))
            by_path.setdefault(key, []).append(p)
    out = []
    for probes in by_path.values():
        rtts = sorted(p["rtt_ms"] for p in probes if p.get("rtt_ms") is not None)
        latest = probes[-1]
        spread = None
        if rtts:
            spread = {"min": rtts[0], "median": round(median(rtts), 2), "max": rtts[-1]}
        out.append(
            {
                "kind": latest.get("kind"),
                "local": latest.get("local"),
                "remote": latest.get("remote"),
                "selected": latest.get("selected"),
                "sent": len(probes),
                "answered": len(rtts),
                "rtt_ms": spread,
                "result": latest.get("result"),
            }
        )
    return out
