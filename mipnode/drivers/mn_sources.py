"""Which packets through the mobile node's TUN are its own besides its home address's: those
of its IPv4 home address (RFC 5555) and, for a mobile router, of the networks behind it
(RFC 3963). Both go to the home agent on the home path and come back from it; the data plane
asks here only when a packet is not the home address's (the common case costs nothing)."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import trio

from mipnode.core.ipv4_networks import MAPPED_HEAD, split
from mipnode.drivers import netlink, rawio
from mipnode.drivers.mn_table import ForwardingTable
from mipnode.drivers.prefix_table import PrefixTable

log = logging.getLogger("mipnode.mn")


class OwnSources:
    def __init__(self, networks: tuple[IPv6Network, ...]) -> None:
        nets6, nets4 = split(networks)  # one table per family (core/ipv4_networks.py)
        self.networks = PrefixTable()
        self.networks.set(b"\x01", nets6)
        self.networks4 = PrefixTable()  # IPv4-mapped
        self.networks4.set(b"\x01", nets4)
        self.ipv4: bytes | None = None  # the IPv4 home address, once the home agent gave one
        self.guard: str | None = None  # the nft table keeping IPv4 networks in the tunnel

    def sent_by(self, pkt: bytes) -> bool:
        """A packet from the TUN (not from the home address) the home agent should get."""
        if pkt[0] >> 4 == 4:
            return len(pkt) >= 20 and self._ipv4_ours(pkt[12:16])
        return bool(self.networks) and len(pkt) >= 40 and bool(self.networks.owner_of(pkt[8:24]))

    def addressed(self, inner: bytes) -> bool:
        """A packet from the home agent for one of them (the kernel delivers or forwards it)."""
        if inner[0] >> 4 == 4:
            return len(inner) >= 20 and self._ipv4_ours(inner[16:20])
        return bool(self.networks) and bool(self.networks.owner_of(inner[24:40]))

    def _ipv4_ours(self, address: bytes) -> bool:
        """The IPv4 home address, or inside a router's IPv4 network (IPv4-mapped in the
        prefix table, core/ipv4_networks.py)."""
        if address == self.ipv4:
            return True
        return bool(self.networks4) and bool(self.networks4.owner_of(MAPPED_HEAD + address))

    def refuse_clear_ipv4(self, inner: bytes, from_ha: bool, fwd: ForwardingTable) -> str | None:
        """Why an IPv4 packet in clear (protocol 4, or UDP) is not delivered: only from the
        home agent, only without protection, only to the IPv4 home address; None: it is."""
        if not from_ha:
            return "ipv4_not_from_ha"
        if fwd.protected:
            return "clear_ipv4_refused"
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return "ipv4_malformed"
        if not self.addressed(inner):
            return "ipv4_not_to_home_address"
        return None

    async def start(self, tun_name: str, ipv4_networks: tuple[IPv4Network, ...]) -> None:
        """A mobile router forwards for its networks; its IPv4 networks' packets only ever
        into the tunnel (rawio.install_forward_guard)."""
        if self.networks:
            await trio.to_thread.run_sync(netlink.enable_ipv6_forwarding)
        if ipv4_networks:
            self.guard = rawio.table_name("mipnode_mnfw", tun_name)
            sources = tuple(map(str, ipv4_networks))
            await trio.to_thread.run_sync(
                rawio.install_forward_guard, self.guard, tun_name, sources
            )
            await trio.to_thread.run_sync(netlink.enable_ipv4_forwarding)

    async def stop(self) -> None:
        if self.guard is not None:
            await trio.to_thread.run_sync(rawio.remove_table, self.guard)

    async def apply_ipv4(self, tun_name: str, address: IPv4Address | None) -> None:
        """The IPv4 home address on the TUN as a /32 with the IPv4 default route into it (so
        IPv4 applications use it; the daemon's own sockets are bound to the access link), or
        gone with its route. Failures are logged: IPv6 goes on either way."""
        old, self.ipv4 = self.ipv4, None if address is None else address.packed
        try:
            await trio.to_thread.run_sync(
                netlink.set_tun_ipv4,
                tun_name,
                None if old is None else str(IPv4Address(old)),
                None if address is None else str(address),
            )
        except (netlink.NetlinkFailure, OSError) as exc:
            log.error("IPv4 home address %s not on %s: %s", address, tun_name, exc)
