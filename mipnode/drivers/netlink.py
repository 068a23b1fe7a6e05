"""Link, address and route changes through pyroute2 (blocking; call via trio.to_thread).

Each function opens and closes its own ``IPRoute`` so it can run in any worker thread
(pyroute2 0.9 keeps a per-thread event loop; reference/linux.md §3).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from mipnode.wire.offload import MAX_SEGMENTS

RT_SCOPE_UNIVERSE = 0
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_NODAD = 0x02

log = logging.getLogger("mipnode.netlink")


class NetlinkFailure(Exception):
    pass


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetlinkFailure(f"no interface named {ifname}")
    return int(found[0])


# Packets the kernel routes into a TUN wait in a ring of txqueuelen packets until the daemon
# reads them; the default 500 overflows while a daemon seals a batch, and every packet dropped
# there is a TCP retransmission (tx_dropped of the TUN, in status as kernel_drops "tun").
TUN_TXQUEUELEN = 4000


def configure_tun(ifname: str, mtu: int, addresses: list[tuple[str, int]]) -> int:
    """Bring ``ifname`` up with ``mtu`` and the given addresses (no DAD); return its index."""
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        try:
            ipr.link(
                "set",
                index=idx,
                mtu=mtu,
                txqlen=TUN_TXQUEUELEN,
                # A TCP super-packet read from the TUN is cut into at most this many packets
                # (an application's tiny MSS would otherwise make a 64 KB one ~700).
                gso_max_segs=MAX_SEGMENTS,
                state="up",
            )
            for addr, plen in addresses:
                ipr.addr("add", index=idx, address=addr, prefixlen=plen, flags=IFA_F_NODAD)
        except NetlinkError as exc:
            raise NetlinkFailure(f"configuring {ifname}: {exc}") from None
        return idx


def replace_route(dst: str, ifname: str, *, metric: int = 1024, table: int = 254) -> None:
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        try:
            ipr.route("replace", dst=dst, oif=idx, priority=metric, table=table, family=family)
        except NetlinkError as exc:
            raise NetlinkFailure(f"route {dst} dev {ifname}: {exc}") from None


def delete_route(dst: str, ifname: str, *, metric: int = 1024, table: int = 254) -> None:
    with IPRoute() as ipr:
        try:
            idx = _index(ipr, ifname)
            family = socket.AF_INET6 if ":" in dst else socket.AF_INET
            ipr.route("del", dst=dst, oif=idx, priority=metric, table=table, family=family)
        except (NetlinkError, NetlinkFailure):
            pass  # already gone (e.g. the TUN vanished first)


@dataclass(frozen=True, slots=True)
class AccessInfo:
    """What the MN sees of its access network: the interface and its usable addresses."""

    ifname: str | None
    ipv6: IPv6Address | None
    ipv4: IPv4Address | None


def _default_ifname(ipr: IPRoute, family: int, exclude: str) -> str | None:
    best: tuple[int, str] | None = None
    for route in ipr.get_routes(family=family, table=254):
        if route.get("dst_len") != 0:
            continue
        oif = route.get_attr("RTA_OIF")
        if oif is None:
            continue
        links = ipr.get_links(oif)
        if not links:
            continue
        name = links[0].get_attr("IFLA_IFNAME")
        if name == exclude:
            continue
        prio = route.get_attr("RTA_PRIORITY") or 0
        if best is None or prio < best[0]:
            best = (prio, name)
    return best[1] if best else None


def access_info(ifname: str | None, exclude: str) -> AccessInfo:
    """The access interface (given, or the one holding a default route) and its addresses.

    The IPv6 care-of address is a global, non-deprecated, non-tentative address; the IPv4
    address may be private (behind NAT44 it is the only one the MN has).
    """
    with IPRoute() as ipr:
        name = ifname
        if name is None:
            name = _default_ifname(ipr, socket.AF_INET6, exclude) or _default_ifname(
                ipr, socket.AF_INET, exclude
            )
        if name is None:
            return AccessInfo(None, None, None)
        found = ipr.link_lookup(ifname=name)
        if not found:
            return AccessInfo(name, None, None)
        v6: IPv6Address | None = None
        v4: IPv4Address | None = None
        for a in ipr.get_addr(index=found[0]):
            text = a.get_attr("IFA_ADDRESS")
            if text is None:
                continue
            addr = ip_address(text)
            flags = a.get_attr("IFA_FLAGS") or a.get("flags", 0)
            if isinstance(addr, IPv6Address):
                if a.get("scope") != RT_SCOPE_UNIVERSE or flags & (
                    IFA_F_DEPRECATED | IFA_F_TENTATIVE
                ):
                    continue
                v6 = v6 or addr
            elif not addr.is_loopback:
                v4 = v4 or addr
        return AccessInfo(name, v6, v4)


# -- change notifications ---------------------------------------------------------------------

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
CHANGE_GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)


def open_change_socket() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to link, address and route changes: readable
    whenever something the access network depends on changed (movement, DESIGN §4)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, CHANGE_GROUPS))
    return sock


def drain_changes(sock: socket.socket) -> bool:
    """Read every pending notification; True when there was any (or some were lost: ENOBUFS
    means the kernel dropped notifications, so the caller must look again all the same)."""
    changed = False
    while True:
        try:
            if not sock.recv(65536):
                return changed
            changed = True
        except BlockingIOError:
            return changed
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            changed = True


def link_address(ifname: str) -> tuple[int, bytes]:
    """The index of ``ifname`` and its link-layer (Ethernet) address."""
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        try:
            (link,) = ipr.get_links(idx)
        except NetlinkError as exc:
            raise NetlinkFailure(f"{ifname}: {exc}") from None
        mac = link.get_attr("IFLA_ADDRESS") or ""
    return idx, bytes.fromhex(mac.replace(":", ""))


def hold_address(ifname: str, address: str, lifetime_s: int) -> None:
    """Put ``address`` (/128, or /32 for IPv4) on ``ifname`` (no DAD) for ``lifetime_s``, or
    renew it: the kernel removes it by itself when nobody renews it (a home agent of a cluster
    killed while holding its address lets go of it within ``lifetime_s``, docs/internals.md)."""
    _change_address(
        "replace",
        ifname,
        address,
        flags=IFA_F_NODAD,
        preferred_lft=lifetime_s,
        valid_lft=lifetime_s,
    )


def drop_address(ifname: str, address: str) -> None:
    """Take ``address`` (/128 or /32) off ``ifname``; nothing when it is not there."""
    _change_address("del", ifname, address, absent_ok=True)


def _change_address(
    op: str, ifname: str, address: str, *, absent_ok: bool = False, **extra: int
) -> None:
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        try:
            ipr.addr(op, index=idx, address=address, prefixlen=_host_length(address), **extra)
        except NetlinkError as exc:
            if not (absent_ok and exc.code == errno.EADDRNOTAVAIL):
                raise NetlinkFailure(f"address {address} on {ifname}: {exc}") from None


def _host_length(address: str) -> int:
    return 128 if ":" in address else 32


def enable_ipv6_forwarding() -> None:
    """net.ipv6.conf.all.forwarding = 1 (a home agent forwards for its mobile nodes, a mobile
    router for its networks); logged when it changes."""
    _sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding")


def enable_ipv4_forwarding() -> None:
    """net.ipv4.ip_forward = 1 (a home agent that gives IPv4 home addresses, RFC 5555)."""
    _sysctl_on("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward")


def _sysctl_on(path: str, name: str) -> None:
    with open(path) as f:
        if f.read().strip() == "1":
            return
    with open(path, "w") as f:
        f.write("1\n")
    log.info("enabled forwarding (%s=1)", name)


def set_tun_ipv4(ifname: str, old: str | None, new: str | None) -> None:
    """Replace ``old`` (a /32 on ``ifname``, and the IPv4 default route into it) by ``new``."""
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        try:
            if old is not None:
                with contextlib.suppress(NetlinkError):
                    ipr.addr("del", index=idx, address=old, prefixlen=32)
            if new is not None:
                ipr.addr("replace", index=idx, address=new, prefixlen=32)
                ipr.route("replace", dst="0.0.0.0/0", oif=idx, priority=1, family=socket.AF_INET)
            else:
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", dst="0.0.0.0/0", oif=idx, priority=1, family=socket.AF_INET)
        except NetlinkError as exc:
            raise NetlinkFailure(f"IPv4 home address {new} on {ifname}: {exc}") from None
