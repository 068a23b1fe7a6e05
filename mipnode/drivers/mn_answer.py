"""What the mobile node daemon answers on its control socket (`mipnode status|paths|bindings`):
the node core's views (core/mn_status.py) and the driver's own counters beside them."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from mipnode.core import mn_ping, mn_status
from mipnode.core.views import to_json
from mipnode.drivers import pump


def answer(daemon: Any, command: str) -> Any:
    """``daemon``: a drivers/mn_daemon.MobileNodeDaemon."""
    node = daemon.node
    if node is None:
        return {"error": "starting"}
    now = daemon.pump.stamp()
    if command == "bindings":
        return to_json(mn_status.bindings(node, now))
    if command == "paths":
        return to_json(mn_status.paths(node))
    if command == "status":
        out = to_json(mn_status.status(node, now))
        out.update(
            counters=dict(daemon.counters),
            drops=dict(daemon.drops),
            kernel_drops=daemon.fwd.kernel_drops(daemon.config.tun_name),
            offloads={**daemon.fwd.tx.status(), "tun": daemon.tun.status()},
            internal_errors=dict(pump.HANDLER_ERRORS),
        )
        cfg = daemon.config
        out["mobile_network_prefixes"] = [
            *map(str, cfg.mobile_network_prefixes),
            *map(str, cfg.ipv4_mobile_network_prefixes),
        ]
        v4 = node.ipv4_home_address
        out["ipv4_home_address"] = None if v4 is None else str(v4)
        return out
    if command.startswith("ping "):
        return _ping(daemon, command.split()[1:])
    return {"error": f"unknown command {command!r}"}


PING_WAIT_S = 1.0  # how long one round waits for its answers
PING_POLL_S = 0.02
_PINGING: set[int] = set()  # daemons (by id) with a round under way: one at a time


async def _ping(daemon: Any, words: list[str]) -> Any:
    """One round of `mipnode ping PEER [KIND]` (core/mn_ping.py): send, wait for the answers
    (at most PING_WAIT_S), report each path's round trip. One round at a time per daemon, so
    parallel clients cannot multiply the probes."""
    try:
        peer = IPv6Address(words[0])
    except (IndexError, ValueError):
        return {"error": "ping: the peer must be an IPv6 address"}
    kind = words[1] if len(words) > 1 else None
    node = daemon.node
    if why := mn_ping.kind_error(peer == node.config.home_agent, kind):
        return {"error": f"ping: {why}"}
    if id(daemon) in _PINGING:
        return {"error": "ping: another ping is running; try again in a second"}
    _PINGING.add(id(daemon))
    try:
        round_ = node.ping(daemon.pump.stamp(), peer, kind)
        daemon.pump.flush()
        results: dict[int, float | str] = {}
        with pump.time_limit(PING_WAIT_S):
            while len(results) < len(round_.probes):
                for i, probe in enumerate(round_.probes):
                    if i not in results and (got := probe.result()) is not None:
                        results[i] = got
                if len(results) < len(round_.probes):
                    await pump.sleep(PING_POLL_S)
    finally:
        _PINGING.discard(id(daemon))
    return mn_ping.report(round_, results)
