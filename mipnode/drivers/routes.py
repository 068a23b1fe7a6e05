"""Host routes for bound home addresses (and a mobile router's prefixes, RFC 3963), kept in
sync off the trio thread.

Binding changes only record the wanted state (add or remove HoA/128, or a prefix) in a dict;
one worker
applies the newest wish per address with pyroute2. Nothing blocks and nothing queues without
bound: a burst of binding churn for one address costs one route change, and a flood across many
addresses costs one entry each (capped by the core's binding cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network

import trio

from mipnode.core.ipv4_networks import text
from mipnode.drivers import netlink

log = logging.getLogger("mipnode.routes")


class HostRoutes:
    def __init__(self, tun_name: str, count: Callable[[str], None]) -> None:
        self.tun_name = tun_name
        self.count = count
        self._wanted: dict[str, bool] = {}  # destination ("HoA/128" or a prefix): present
        self._changed = trio.Event()

    def add(self, destination: IPv6Address | IPv6Network) -> None:
        self._wanted[_route(destination)] = True
        self._changed.set()

    def remove(self, destination: IPv6Address | IPv6Network) -> None:
        self._wanted[_route(destination)] = False
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            batch, self._wanted = self._wanted, {}
            for hoa, present in batch.items():
                fn = netlink.replace_route if present else netlink.delete_route
                try:
                    await trio.to_thread.run_sync(fn, hoa, self.tun_name)
                except netlink.NetlinkFailure as exc:
                    self.count("route_update_failed")
                    log.error("route %s %s failed: %s", "add" if present else "del", hoa, exc)


def _route(destination: IPv6Address | IPv6Network) -> str:
    """The route's text; a router's IPv4 network (IPv4-mapped) as the IPv4 route it is."""
    if isinstance(destination, IPv6Address):
        return f"{destination}/128"
    return text(destination)
