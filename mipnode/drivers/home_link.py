"""The home agent on a home link it shares with other nodes (``[ha] home_link``).

RFC 6275 assumes the home prefix is a link: other hosts hold addresses of it, and the home
agent answers there for its mobile nodes while they are away. This driver does the link's part;
the decisions are the core's (``core/dad.py``, ``core/ha.py``):

- **Duplicate Address Detection** before a first registration's BA (§10.3.1): for each address
  the core names, one Neighbor Solicitation from the unspecified address to its solicited-node
  group, sent whole through a packet socket (the kernel sends no ND from ``::`` for an address
  it does not hold). A Neighbor Advertisement for that address, or another node's DAD
  solicitation for it (RFC 4862 §5.4.3), is reported to the core, which refuses with 134;
  when RetransTimer (1 s) passes in silence, the core registers.
- **Proxy Neighbor Discovery** while a binding lasts (§10.4.1): the kernel's own proxy
  (``proxy_ndp`` on the link, one proxy entry per defended address) answers solicitations for
  the address with our link-layer address (Router flag clear) and defends it against others'
  DAD; we multicast an unsolicited Neighbor Advertisement with Override set to all nodes, up to
  three times a second apart (RFC 4861 §7.2.6), so the link's caches that still hold the mobile
  node's own link-layer address switch to us. The entries go when the binding does.
- **A mobile node back home** (§10.3.2, §11.5.5) de-registers with a BU from its home address
  on this link; the tap hands that to the core with the frame's source link-layer address, and
  the BA goes back to that address in a frame of its own: the home address may still resolve
  to us.

One packet socket on the link, with a kernel filter that passes only Neighbor Solicitations and
Advertisements and Mobility Headers to the home agent's address, never our own transmissions.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import trio

from mipnode.drivers import pump, rawio
from mipnode.drivers.logs import RateLimitedLog
from mipnode.drivers.netlink import NetlinkFailure, link_address
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH
from mipnode.wire.nd import (
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    UNSPECIFIED,
    dad_solicitation,
    multicast_mac,
    neighbor_message_untrusted,
    unsolicited_na,
)

log = logging.getLogger("mipnode.home_link")
ICMP6_FILTER = 1  # linux/icmpv6.h: which ICMPv6 types a raw socket receives
ALL_NODES = "ff02::1"
NA_COUNT = 3  # RFC 4861 §10: MAX_NEIGHBOR_ADVERTISEMENT
NA_INTERVAL_S = 1.0
PACKET_MR_ALLMULTI = 2
PACKET_ADD_MEMBERSHIP = 1
SOL_PACKET = 263


def tap_program(address: bytes) -> tuple[rawio.Insn, ...]:
    """Classic BPF for the home link's tap: Neighbor Advertisements and DAD solicitations (from
    the unspecified address; address resolution is the kernel's business, and on a busy LAN
    it would wake us for every host's), right after the IPv6 header as RFC 4861 sends them, and
    Mobility Headers to ``address``; never a packet we sent."""
    words = [int.from_bytes(address[i : i + 4], "big") for i in range(0, 16, 4)]
    match_address: list[tuple[Any, ...]] = []
    unspecified_source: list[tuple[Any, ...]] = []
    for i, word in enumerate(words):
        match_address += [(rawio.LDW, 0, 0, 24 + 4 * i), (rawio.JEQ, 0, "drop", word)]
        unspecified_source += [(rawio.LDW, 0, 0, 8 + 4 * i), (rawio.JEQ, 0, "drop", 0)]
    return rawio.assemble(
        [
            (rawio.LDB, 0, 0, 6),
            (rawio.JEQ, "icmp", 0, NH_ICMPV6),
            (rawio.JEQ, "mh", "drop", NH_MH),
            ("label", "icmp"),
            (rawio.LDB, 0, 0, 40),
            (rawio.JEQ, "incoming", 0, ICMPV6_NEIGHBOR_ADVERTISEMENT),
            (rawio.JEQ, 0, "drop", ICMPV6_NEIGHBOR_SOLICITATION),
            *unspecified_source,
            (rawio.JEQ, "incoming", "incoming", 0),  # (always) past the MH branch
            ("label", "mh"),
            *match_address,
            ("label", "incoming"),
            (rawio.LDW, 0, 0, rawio.SKF_AD_PKTTYPE),
            (rawio.JEQ, "drop", 0, rawio.PACKET_OUTGOING),
            (rawio.RET, 0, 0, 0xFFFF),
            ("label", "drop"),
            (rawio.RET, 0, 0, 0),
        ]
    )


def open_na_socket(index: int) -> socket.socket:
    """A raw ICMPv6 socket that sends NAs out of interface ``index`` with hop limit 255 (RFC
    4861 §7.1.2) and receives nothing (every type filtered out); the kernel fills in the
    checksum and, for all-nodes, a link-local source on that interface (RFC 6275 §10.4.1: "the
    home agent's IP address on the interface used")."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    except OSError:
        sock.close()
        raise
    return sock


def _proxied(ifname: str) -> list[IPv6Address]:
    """The kernel's proxy entries on ``ifname``."""
    proc = subprocess.run(
        ["ip", "-6", "neigh", "show", "proxy", "dev", ifname],
        capture_output=True,
        text=True,
        check=False,
    )
    out = []
    for line in proc.stdout.splitlines():
        try:
            out.append(IPv6Address(line.split()[0]))
        except (IndexError, ValueError):
            continue
    return out


def _proxy(op: str, address: str, ifname: str) -> None:
    """Add or delete the kernel's proxy entry for ``address`` on ``ifname`` (ip-neighbour(8))."""
    proc = subprocess.run(
        ["ip", "-6", "neigh", op, "proxy", address, "dev", ifname],
        capture_output=True,
        text=True,
        check=False,
    )
    benign = "No such" if op == "del" else "File exists"
    if proc.returncode != 0 and benign not in proc.stderr:
        raise NetlinkFailure(f"proxy {op} {address} dev {ifname}: {proc.stderr.strip()}")


def _sysctl(path: str, value: str | None = None) -> str:
    with open(path) as f:
        old = f.read().strip()
    if value is not None and value != old:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    return old


class HomeLink:
    """Open with :meth:`open` (root: a packet socket, sysctls), run :meth:`run` in a task,
    close with :meth:`close`, which removes every proxy entry it added."""

    def __init__(
        self,
        ifname: str,
        address: IPv6Address,
        prefix: IPv6Network,
        node: Any,
        drops: Any,
        counters: Any,
    ) -> None:
        self.ifname = ifname
        self.address = address.packed  # the home agent's: home-link BUs come to it
        self.prefix = prefix
        self.node = node  # core/home_agent.HomeAgentNode
        self.drops = drops
        self.counters = counters
        self.ratelog = RateLimitedLog()
        self.tap: socket.socket | None = None
        self.na: socket.socket | None = None
        self.index = 0
        self.mac = b""
        self._proxy_ndp_was: str | None = None
        self._defended: dict[IPv6Address, tuple[IPv6Address, ...]] = {}  # HoA -> addresses
        self._wanted: dict[IPv6Address, bool] = {}  # address -> proxy entry wanted
        self._present: set[IPv6Address] = set()  # proxy entries we added
        self._failed: dict[IPv6Address, bool] = {}  # proxy changes to try again
        self._na_left: dict[IPv6Address, int] = {}  # unsolicited NAs still to send
        self._changed = trio.Event()

    def open(self) -> None:
        self.index, self.mac = link_address(self.ifname)
        if len(self.mac) != 6:
            raise NetlinkFailure(f"home_link {self.ifname} has no Ethernet address")
        path = f"/proc/sys/net/ipv6/conf/{self.ifname}/proxy_ndp"
        self._proxy_ndp_was = _sysctl(path, "1")
        # A home agent killed without its clean stop left its entries: they would answer for
        # mobile nodes that may be back home by now. Ours are made again from the bindings.
        for address in _proxied(self.ifname):
            if address in self.prefix or address.is_link_local:
                _proxy("del", str(address), self.ifname)
                self.counters("stale_proxy_entries_removed")
        self.tap = rawio.open_tap(self.ifname, tap_program(self.address), deep=False)
        # DAD solicitations of other nodes go to solicited-node groups we never joined.
        mreq = self.index.to_bytes(4, "little") + PACKET_MR_ALLMULTI.to_bytes(2, "little")
        self.tap.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq + bytes(10))
        self.na = open_na_socket(self.index)

    def close(self) -> None:
        try:
            for address in list(self._present):
                try:
                    _proxy("del", str(address), self.ifname)
                except NetlinkFailure as exc:
                    log.error("%s", exc)
            self._present.clear()
            if self._proxy_ndp_was is not None:
                path = f"/proc/sys/net/ipv6/conf/{self.ifname}/proxy_ndp"
                try:
                    _sysctl(path, self._proxy_ndp_was)
                except OSError as exc:
                    log.error("%s not restored: %s", path, exc)
        finally:
            for sock in (self.tap, self.na):
                if sock is not None:
                    sock.close()

    # -- what the core asks for ------------------------------------------------------------
    def probe(self, target: IPv6Address) -> None:
        """One DAD solicitation for ``target`` (the core counts the wait)."""
        packet = dad_solicitation(target.packed)
        self._send(packet, multicast_mac(packet[24:40]), "dad_solicitations_sent")

    def send_to(self, packet: bytes, mac: bytes) -> None:
        """A whole IPv6 packet to the link-layer address ``mac``."""
        self._send(packet, mac, "home_link_answers_sent")

    def binding_changed(self, home_address: IPv6Address, defended: tuple[IPv6Address, ...]) -> None:
        """The addresses to answer for on the link for ``home_address`` (none: it ended)."""
        old = self._defended.pop(home_address, ())
        if defended:
            self._defended[home_address] = defended
        for address in old:
            if address not in defended:
                self._wanted[address] = False
        for address in defended:
            if address not in old:
                self._wanted[address] = True
        if self._wanted:
            self._changed.set()

    # -- the link --------------------------------------------------------------------------
    def receive(self, now: float, pkt: bytes, addr: Any) -> None:
        """One tapped packet: a neighbor message (a DAD conflict?) or a BU from home."""
        if rawio.is_outgoing(addr) or len(pkt) < 41:
            self.drops("home_link_unexpected")  # the kernel filter lets none of these by
            return
        sender = addr[4][:6] if len(addr) > 4 else b""
        if pkt[6] == NH_MH:
            self.node.receive_home_link_bu(now, pkt, sender)
            return
        if sender == self.mac:
            # Our own solicitation, looped back by a hairpinning bridge (RFC 7527 §1): not
            # another node.
            self.drops("home_link_nd_looped_back")
            return
        if not self.node.dad_pending:
            self.drops("home_link_nd_without_dad")  # nothing to compare it with
            return
        try:
            kind, source, target = neighbor_message_untrusted(pkt)
        except BadPacket as exc:
            self.drops(f"home_link_{exc.reason}")
            return
        if kind == ICMPV6_NEIGHBOR_SOLICITATION and source != UNSPECIFIED:
            self.drops("home_link_ns_not_dad")  # the kernel filter lets none of these by
            return
        # An advertisement for the target, or another node's DAD for it (RFC 4862 §5.4.3-4).
        self.node.dad_conflict(now, IPv6Address(target))

    async def run(self) -> None:
        """Apply proxy entries off the trio thread, and send the unsolicited NAs: the first
        as soon as its entry is in place, the others NA_INTERVAL_S apart (RFC 4861 §7.2.6),
        on the ticks of a quiet second; a change in between only pushes them later."""
        while True:
            if self._na_left or self._failed:  # something is due in a second
                with pump.time_limit(NA_INTERVAL_S):
                    await self._changed.wait()
            else:
                await self._changed.wait()
            tick = not self._changed.is_set()
            if not tick:
                self._changed = trio.Event()
            if tick and self._failed:  # try again what did not work a second ago
                self._wanted = {**self._failed, **self._wanted}
                self._failed = {}
            batch, self._wanted = self._wanted, {}
            for address, present in batch.items():
                await self._apply(address, present)
            if not tick:
                continue
            for address, left in list(self._na_left.items()):
                self._announce(address)
                if left > 1:
                    self._na_left[address] = left - 1
                else:
                    del self._na_left[address]

    async def _apply(self, address: IPv6Address, present: bool) -> None:
        try:
            await trio.to_thread.run_sync(
                _proxy, "add" if present else "del", str(address), self.ifname
            )
        except NetlinkFailure as exc:
            self._failed[address] = present
            self.drops("proxy_update_failed")
            self.ratelog(logging.ERROR, "proxy", "proxy entry not changed", error=exc)
            return
        if present:
            self._present.add(address)
            self._announce(address)
            self._na_left[address] = NA_COUNT - 1
        else:
            self._present.discard(address)
            self._na_left.pop(address, None)

    def _announce(self, address: IPv6Address) -> None:
        """RFC 6275 §10.4.1: Target the mobile node's address, our link-layer address, Router
        and Solicited clear, Override set, to all nodes."""
        if self.na is None:
            return
        packet = unsolicited_na(address.packed, self.mac, router=False)
        try:
            self.na.sendto(packet, (ALL_NODES, 0, 0, self.index))
            self.counters("proxy_na_sent")
        except OSError as exc:
            self.drops("na_send_failed")
            self.ratelog(logging.WARNING, "na", "neighbor advertisement not sent", error=exc)

    def _send(self, packet: bytes, mac: bytes, counter: str) -> None:
        if self.tap is None:
            self.drops("tx_no_socket")
            return
        try:
            self.tap.sendto(packet, (self.ifname, rawio.ETH_P_IPV6, 0, 0, mac))
            self.counters(counter)
        except OSError as exc:
            self.drops("home_link_send_failed")
            self.ratelog(logging.WARNING, "send", "home link frame not sent", error=exc)

    def status(self) -> dict[str, Any]:
        return {
            "interface": self.ifname,
            "defended": sorted(str(a) for a in self._present),
        }
