"""The home agent's native signalling: Binding Updates sent the RFC 6275 way, natively from the
care-of address with a Home Address option (§6.3, §11.7.1), and their answers with a type 2
routing header (§6.4, §9.5.4).

A Linux kernel without Mobile IPv6 discards a packet with a Home Address option and answers
it with a Parameter Problem (code 2, the option's type is unknown to it). So, as the
correspondent daemon does: an AF_PACKET tap sees such packets to the home agent's address, an
nft prerouting drop in a table of our own keeps the kernel from answering them, and a raw
IPPROTO_RAW socket sends the answers whole. mipnode's own mobile node tunnels its BUs and
never needs this; it is what lets a standard mobile node register.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from mipnode.drivers import rawio
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_ICMPV6, NH_MH
from mipnode.wire.prefix_discovery import ICMPV6_MOBILE_PREFIX_SOLICITATION
from tunnels.ro import remove_home_address_option_untrusted


class NativeSignalling:
    """Open with :meth:`open` (needs root: AF_PACKET, nft), close with :meth:`close`."""

    def __init__(
        self, address: bytes, table: str, node: Any, drops: Any, admit: Callable[[], bool]
    ) -> None:
        self.address = address  # the home agent's, packed
        self.table = table
        self.node = node  # core/home_agent.HomeAgentNode
        self.drops = drops
        self.admit = admit  # the daemon's budget for unbound signalling (one HMAC each)
        self.tap: socket.socket | None = None
        self.sender: socket.socket | None = None

    def open(self, address_text: str) -> None:
        # The kernel filter passes only what comes in to our address with a destination
        # options header first: data and our own answers never wake the daemon.
        self.tap = rawio.open_tap(None, rawio.destination_options_filter(self.address))
        self.sender = rawio.open_raw_sender(None)
        # Only Mobility Headers and ICMPv6 behind the header: a tunnel packet with an
        # encapsulation limit option (RFC 2473 §5.1) must still reach the protocol-41 socket.
        # Every such ICMPv6 message goes, not only Mobile Prefix Solicitations (nft does not
        # read the type behind the header); to our address it comes only with a Home Address
        # option, which the kernel would answer with a Parameter Problem.
        rawio.install_rx_drops(
            self.table,
            dstopts=True,
            routing2=False,
            daddrs=(address_text,),
            l4proto=(NH_MH, NH_ICMPV6),
        )

    def close(self) -> None:
        for sock in (self.tap, self.sender):
            if sock is not None:
                sock.close()
        rawio.remove_table(self.table)

    def receive(self, now: float, pkt: bytes, addr: Any) -> None:
        """One tapped packet: a natively sent BU to us goes to the core, the rest is not ours."""
        if (
            rawio.is_outgoing(addr)
            or len(pkt) < 40
            or pkt[24:40] != self.address
            or pkt[6] != NH_DSTOPTS
        ):
            self.drops("native_tap_unexpected")  # the kernel filter lets none of these by
            return
        try:
            care_of, home_address, inner = remove_home_address_option_untrusted(pkt)
        except BadPacket as exc:
            self.drops(f"native_hao_{exc.reason}")
            return
        plen = int.from_bytes(inner[4:6], "big")
        if (
            inner[6] == NH_ICMPV6
            and len(inner) > 40
            and inner[40] == ICMPV6_MOBILE_PREFIX_SOLICITATION
        ):
            # §6.7: from the care-of address with a Home Address option; the core answers only
            # a home address bound there.
            if not self.admit():
                return  # counted by the daemon (unbound_mh_rate_limited)
            message = inner[40 : 40 + plen]
            self.node.receive_native_prefix_solicitation(
                now, message, care_of, home_address, len(pkt)
            )
            return
        if inner[6] != NH_MH:
            self.drops("native_hao_not_mh")  # §9.3.1: only a BU may bring an HAO unbound
            return
        if not self.admit():
            return  # counted by the daemon (unbound_mh_rate_limited)
        mh_at = 40 + len(pkt) - len(inner)  # the MH in the packet as it came (behind the option)
        self.node.receive_native_bu(now, inner[40 : 40 + plen], care_of, home_address, pkt, mh_at)

    def send(self, packet: bytes) -> None:
        if self.sender is None:
            self.drops("tx_no_socket")
            return
        try:
            self.sender.sendto(packet, (str(socket.inet_ntop(socket.AF_INET6, packet[24:40])), 0))
        except BlockingIOError:
            self.drops("tx_would_block")
        except OSError:
            self.drops("tx_native_failed")
