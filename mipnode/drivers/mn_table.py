"""The mobile node's forwarding table: the node core's ``ForwardingChanged`` events, as sockets.

Per packet the daemon does one dict lookup here (DESIGN §5): destination (or, for a host behind
a mobile router, its flow: source ‖ destination, core/mn_hosts.py) -> the ways to try, in
the order the core gave (D-native first, then D-udp; empty: the default), each a pre-built
``(socket, address, care-of or None, counter, seal)``; ``seal`` names the owner of the ESP SA
that seals the packet (``b""``: the home agent's, and T-native then uses the raw ESP socket
instead of IPv6-in-IPv6; a correspondent's address, or a host's flow: its keyed D-udp pair) or
is ``None``
(clear); a miss means the default way, the home pair. The table
also knows the open sockets of every access network (a move keeps two for a while), and which
remote may speak for a correspondent on D-udp and which correspondents' RH2 data is proven.
"""

from __future__ import annotations

import socket
from typing import Any

from mipnode.core.mobile_node import ForwardingChanged, Route
from mipnode.drivers.batch_tx import BatchSender
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters, kernel_drops, send_quietly
from mipnode.drivers.mn_access import AccessSockets

# socket, address, care-of, counter, seal (the SA owner, or None)
Way = tuple[socket.socket, Any, bytes | None, str, bytes | None]


class ForwardingTable:
    def __init__(self, protected: bool = False, drops: Counters | None = None) -> None:
        self.protected = protected
        self.drops = Counters() if drops is None else drops
        self.tx = BatchSender(self.drops)  # UDP ways: sent a batch at a time (flush_tx)
        self.routes: dict[bytes, tuple[Way, ...]] = {}
        self.default: Way | None = None
        self.default4: Way | None = None  # the same for IPv4 (RFC 5555): protocol 4 on T-native
        self.direct_from: dict[bytes, tuple[str, int]] = {}  # CN (or flow) -> its D-udp remote
        self.direct_sealed: set[bytes] = set()  # CNs (flows) whose D-udp pair is ESP only
        self.d_native: set[bytes] = set()  # CNs whose RH2 data is delivered at once
        self.udp_by_local: dict[tuple[str, int], socket.socket] = {}
        self.raw41_by_coa: dict[str, socket.socket] = {}
        self.raw50_by_coa: dict[str, socket.socket] = {}
        self.raw4_by_coa: dict[str, socket.socket] = {}
        self.accesses: list[AccessSockets] = []

    def add_access(self, s: AccessSockets) -> None:
        a = s.access
        self.accesses.append(s)
        if a.ipv6 is not None:
            self.raw41_by_coa[str(a.ipv6)] = s.raw41
            self.raw50_by_coa[str(a.ipv6)] = s.raw50
            if s.raw4 is not None:
                self.raw4_by_coa[str(a.ipv6)] = s.raw4
        for sock, _, local in s.udp_ports():
            self.udp_by_local[local] = sock

    def remove_access(self, s: AccessSockets) -> None:
        if s in self.accesses:
            self.accesses.remove(s)
        mine = s.sockets()
        for key in [k for k, v in self.udp_by_local.items() if v in mine]:
            del self.udp_by_local[key]
        for coa in [k for k, v in self.raw41_by_coa.items() if v in mine]:
            del self.raw41_by_coa[coa]
            self.raw50_by_coa.pop(coa, None)
            self.raw4_by_coa.pop(coa, None)

    def send(self, sock: socket.socket, addr: Any, packet: bytes) -> None:
        """One packet out on a way: over UDP (a port) queued for the batch's end, on a raw
        socket at once."""
        if addr[1]:
            self.tx.add(sock, addr, packet)
        else:
            send_quietly(sock, packet, addr, self.drops)

    def kernel_drops(self, tun: str) -> dict[str, int]:
        """What the kernel dropped at the sockets of every open access network and at the TUN
        (``status``)."""
        return kernel_drops({k: v for s in self.accesses for k, v in s.by_name().items()}, tun)

    def raw_sender(self) -> socket.socket | None:
        """The newest access network's sender of HAO / plain IPv6 packets."""
        for s in reversed(self.accesses):
            if s.raw_sender is not None:
                return s.raw_sender
        return None

    def apply(self, event: ForwardingChanged) -> None:
        if event.dst is None:
            route = event.routes[0] if event.routes else None
            self.default = None if route is None else self.way(route)
            self.default4 = self.default
            if route is not None and route.local[1] == 0 and not self.protected:
                sock = self.raw4_by_coa.get(route.local[0])  # IPv4-in-IPv6 (RFC 2473)
                self.default4 = (
                    None if sock is None else (sock, (route.remote[0], 0), None, "", None)
                )
            return
        dst = event.dst
        self.direct_from.pop(dst, None)
        self.direct_sealed.discard(dst)
        self.d_native.discard(dst)
        if event.routes is None:
            self.routes.pop(dst, None)
            return
        ways = []
        for route in event.routes:
            way = self.way(route, dst)
            if way is None:
                continue
            ways.append(way)
            if route.kind == "D-udp":
                self.direct_from[dst] = route.remote
                if route.sealed:
                    self.direct_sealed.add(dst)
            elif route.kind == "D-native":
                self.d_native.add(dst)
        self.routes[dst] = tuple(ways)

    def way(self, route: Route, dst: bytes = b"") -> Way | None:
        if route.kind == "D-native":
            sender = self.raw_sender()
            if sender is None:
                return None
            return (sender, (route.remote[0], 0), route.care_of, "d_native_to_cn", None)
        home = route.kind != "D-udp"
        counter = "tunnelled_to_ha" if home else "d_udp_to_cn"
        sealed = self.protected if home else route.sealed
        seal = (b"" if home else dst) if sealed else None  # the SA owner: HA b"", or the CN
        if route.local[1] == 0:  # T-native: the raw socket of that care-of (41, or 50 sealed)
            sock = self.native_socket(route.local[0], seal is not None)
            return None if sock is None else (sock, (route.remote[0], 0), None, counter, seal)
        sock = self.udp_by_local.get(route.local)
        return None if sock is None else (sock, route.remote, None, counter, seal)

    def native_socket(self, care_of: str, sealed: bool) -> socket.socket | None:
        return (self.raw50_by_coa if sealed else self.raw41_by_coa).get(care_of)

    # -- what may arrive on a D-udp pair -------------------------------------------------------
    def direct_clear_ok(self, data: bytes, addr: Any, hoa: bytes, drops: Counters) -> bool:
        """A clear IPv6 packet on UDP: only from the correspondent's selected pair, to us (or
        to a host whose flow with it has that pair), and only while that pair is not keyed
        (then it must come sealed)."""
        key = data[8:24] if data[24:40] == hoa else data[24:40] + data[8:24]
        sel = self.direct_from.get(key)
        if sel is None or sel[0] != addr[0] or sel[1] != addr[1]:
            drops("direct_not_from_selected_pair")
            return False
        if key in self.direct_sealed:
            drops("clear_direct_refused")
            return False
        return True

    def open_direct(
        self, esp: EspSas, data: bytes, addr: Any, hoa: bytes, now: float, drops: Counters
    ) -> bytes | None:
        """ESP on a D-udp pair: the inner packet if that correspondent's SA opened it, it came
        from its selected pair, and it goes from the correspondent to us (a flow's SA: to that
        host); else None (counted).
        """
        entry = esp.inbound_sa(data, drops)
        if entry is None:
            return None
        sel = self.direct_from.get(entry.owner)
        if sel is None or sel[0] != addr[0] or sel[1] != addr[1]:
            drops("direct_not_from_selected_pair")  # before any decryption work
            return None
        opened = esp.open_with(entry, data, now, drops)
        if opened is None:
            return None
        inner, owner = opened
        if len(owner) == 32:  # a host's flow: host ‖ correspondent
            src, dst = owner[16:], owner[:16]
        else:
            src, dst = owner, hoa
        if inner[8:24] != src or inner[24:40] != dst:
            drops("esp_direct_wrong_addresses")
            return None
        return inner
