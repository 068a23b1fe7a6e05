"""What the mobile node daemon answers on its control socket (`mipnode status|paths|bindings`):
the node core's views (core/mn_status.py) and the driver's own counters beside them."""

from __future__ import annotations

from typing import Any

from mipnode.core import mn_status
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
    return {"error": f"unknown command {command!r}"}
