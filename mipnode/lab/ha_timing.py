"""Timing a home agent that comes back or takes over, by its own view of itself and by a
ping that must cross its tunnel: a restarted HA (lab/timeline.py, ``restart-ha``) and the node
of a cluster that takes the home-agent address over (lab/cluster.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mipnode.lab.topology import HOA, Topology

HA_RESTART_TIMEOUT_S = 10.0
# What the HA daemon counts for the data it relays (docs/cli.md, HA `status` "counters"): a
# packet routed to a home address and tunnelled to the MN, and one tunnelled from the MN and
# delivered. The new process starts them from nothing.
HA_RELAY_COUNTERS = ("tunnelled_to_mn", "forwarded_from_mn")
# The probe's far end: the core router, a plain host on every topology's path to the home
# prefix. It runs no mipnode, so the MN has no direct path to it (no return routability, no
# ICE): its packets to and from the home address can only go through the home agent.
PROBE_NODE = "core"
PROBE_ADDRESS = "2001:db8:f1::1"  # the core's address towards fw, present in every topology


def _has_binding(status: dict[str, Any], hoa: str) -> bool:
    return any(
        b.get("hoa") == hoa and b.get("state", "registered") == "registered"
        for b in status.get("bindings") or []
    )


def _binding_keys(status: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The registered bindings (a deregistered entry lingers 10 s and is not restored)."""
    bindings = (status or {}).get("bindings") or []
    return [
        (b["hoa"], b["coa"], b["path"]["kind"])
        for b in bindings
        if b.get("state", "registered") == "registered"
    ]


def _relayed(status: dict[str, Any] | None) -> dict[str, int]:
    counters = (status or {}).get("counters") or {}
    return {k: int(counters.get(k, 0)) for k in HA_RELAY_COUNTERS}


def await_home_agent(
    ha_status: Callable[[], dict[str, Any] | None],
    probe: Callable[[], bool],
    *,
    hoa: str = HOA,
    timeout: float = HA_RESTART_TIMEOUT_S,
    interval: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Time a freshly started home agent, from this call, by its own view of itself.

    ``ha_status`` asks the new HA over its control socket (None while it does not answer);
    ``probe`` sends one ping through it and says whether it was answered (it bounds its own
    wait). Readiness is the first answer on the control socket, never a sleep. Traffic counts
    as back (``resumed_ms``) once the HA reports a registered binding for ``hoa`` AND a probe
    was answered AND both relay counters grew since the HA's first answer: the ping went to
    the MN through the HA's tunnel and its answer came back through it. A ping answer alone
    proves nothing about the HA when a direct path carries it (a correspondent running mipnode
    reaches the MN without the HA), and counters alone may be other traffic.
    """
    started = clock()

    def since() -> float:
        return round((clock() - started) * 1000, 1)

    answered_ms = binding_ms = resumed_ms = None
    baseline: dict[str, int] = {}
    last: dict[str, Any] | None = None
    sent = received = 0
    while clock() - started < timeout:
        status = ha_status()
        if status is None:  # not started yet, or not listening yet
            sleep(interval)
            continue
        last = status
        if answered_ms is None:
            answered_ms = since()
            baseline = _relayed(status)
        if not _has_binding(status, hoa):
            sleep(interval)
            continue
        if binding_ms is None:
            binding_ms = since()
        answered = probe()
        sent += 1
        received += answered
        after = ha_status()
        if after is not None:
            last = after
        grew = all(_relayed(after)[k] > baseline[k] for k in HA_RELAY_COUNTERS)
        if answered and after is not None and grew and _has_binding(after, hoa):
            resumed_ms = since()
            break
        sleep(interval)  # an unreachable probe may fail at once: no busy loop of pings
    relayed = _relayed(last)
    return {
        "resumed_ms": resumed_ms,
        "ha_answered_ms": answered_ms,
        "ha_binding_ms": binding_ms,
        "probe_pings": {"sent": sent, "received": received},
        "ha_relayed": {k: relayed[k] - baseline.get(k, 0) for k in HA_RELAY_COUNTERS},
        "bindings_after": _binding_keys(last),
    }


def ha_restart_probe(initiator: str) -> tuple[str, str, str]:
    """(node, source address or "", target) of the ping that must pass the restarted HA: from
    the core to the home address, or, when only the MN may start flows (a firewall in front of
    the HA admits nothing else), from the home address to the core."""
    if initiator == "mn":
        return "mn", HOA, PROBE_ADDRESS
    return PROBE_NODE, "", HOA


def ping_probe(t: Topology, initiator: str) -> tuple[Callable[[], bool], str]:
    """One ping that must pass the home agent (:func:`ha_restart_probe`), and how it reads."""
    node, source, target = ha_restart_probe(initiator)
    ping = ["ping", "-6", "-n", "-c", "1", "-W", "0.2", *(["-I", source] if source else [])]

    def probe() -> bool:
        return " 1 received" in t.sh(node, *ping, target, check=False)

    return probe, f"{node} {source} -> {target}" if source else f"{node} -> {target}"
