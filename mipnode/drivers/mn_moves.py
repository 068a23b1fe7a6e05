"""How the mobile node daemon follows its access networks (DESIGN §4): netlink notifications
of address, route and link changes, the access network they leave, and its sockets opened and
handed to the node core. The daemon's data plane serves those sockets (``_serve_access``)."""

from __future__ import annotations

import socket
from typing import Any

import trio

from mipnode.drivers import netlink, rawio
from mipnode.drivers.mn_access import AccessSockets


async def access_info(daemon: Any) -> netlink.AccessInfo:
    """``daemon``: a drivers/mn_daemon.MobileNodeDaemon (so for every function here)."""
    cfg = daemon.config
    return await trio.to_thread.run_sync(netlink.access_info, cfg.interface, cfg.tun_name)


async def watch(daemon: Any, changes: socket.socket, info: netlink.AccessInfo) -> None:
    """Use each new access network that can reach the home agent, as netlink reports it."""
    current: netlink.AccessInfo | None = None
    while True:
        usable = info.ipv6 is not None or (
            info.ipv4 is not None and daemon.config.home_agent_ipv4 is not None
        )
        if info != current and (usable or current is None):
            current = info
            await use(daemon, info)
        await trio.lowlevel.wait_readable(changes)
        if netlink.drain_changes(changes):
            info = await access_info(daemon)


async def use(daemon: Any, info: netlink.AccessInfo) -> None:
    """Open the access network's sockets, serve them, and tell the node core."""
    if daemon.ro and info.ipv6 is not None:
        # RH2 replies and CoTs come to the care-of address; the kernel must not answer them.
        await trio.to_thread.run_sync(
            lambda: rawio.install_rx_drops(
                daemon.nft_table,
                dstopts=False,
                routing2=True,
                iifname=info.ifname,
                daddrs=(str(info.ipv6),),
            )
        )
    cfg = daemon.config  # RFC 5555 without protection: IPv4-in-IPv6 (protocol 4)
    ipv4 = cfg.ipv4_home_address is not None and cfg.suite is None
    sockets = AccessSockets.open(info, tap=daemon.ro and info.ipv6 is not None, ipv4=ipv4)
    scope = await daemon.nursery.start(daemon._serve_access, sockets)
    daemon.accesses.append((sockets, scope))
    assert daemon.node is not None
    daemon.node.set_access(daemon.pump.stamp(), sockets.access)
    daemon.pump.flush()
