"""The sockets of one access network of a mobile node.

After a move the old network's sockets stay open until the node core retires them (the new
registration is in place, or MOVE_OVERLAP_S passed): make-before-break, DESIGN §4. Each network
has a raw IPv6-in-IPv6 socket (T-native in clear: BUs, checks before the first registration, and
everything with protection off), a raw ESP socket (T-native protected, next header 50), one UDP
socket per address family (T-udp to the home agent and D-udp to correspondents share it, so the
address the home agent sees is the server-reflexive candidate) with its check lane (a second
socket on the same port for STUN and clear signalling, drivers/check_lane.py), a raw MH socket
kept open only so the kernel does not answer Mobility Headers with Parameter Problem, and, with
route optimisation, an AF_PACKET tap and its check lane (drivers/rawio.py: route-optimisation
signalling and D-native probes in a queue of their own) and a raw sender for packets with a Home
Address option or a type 2 routing header. With an IPv4 home address (RFC 5555) a raw
IPv4-in-IPv6 socket (protocol 4) carries its packets on T-native in clear. Everything is bound
to the access interface so nothing loops back into the TUN.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from mipnode.core.home_path import Access
from mipnode.drivers import netlink, rawio
from mipnode.drivers.check_lane import open_lane
from mipnode.drivers.esp_plane import IPPROTO_ESP
from mipnode.drivers.io import enable_error_queue, open_raw, open_udp
from mipnode.wire.ipv6 import NH_MH


@dataclass
class AccessSockets:
    info: netlink.AccessInfo
    raw41: socket.socket
    raw50: socket.socket
    raw_mh: socket.socket
    udp6: socket.socket | None
    udp4: socket.socket | None
    tap: socket.socket | None
    raw_sender: socket.socket | None
    lanes: dict[socket.socket, socket.socket] = field(default_factory=dict)  # data -> lane
    raw4: socket.socket | None = None  # IPv4-in-IPv6 (an IPv4 home address, in clear)
    tap_lane: socket.socket | None = None  # the tap's check lane
    access: Access = field(init=False)

    def __post_init__(self) -> None:
        self.access = Access(
            self.info.ifname,
            self.info.ipv6,
            self.info.ipv4,
            None if self.udp6 is None else self.udp6.getsockname()[1],
            None if self.udp4 is None else self.udp4.getsockname()[1],
        )

    @classmethod
    def open(cls, info: netlink.AccessInfo, *, tap: bool, ipv4: bool = False) -> AccessSockets:
        ifname = info.ifname
        opened: list[socket.socket] = []
        raw4 = tap_lane = None
        try:
            if ipv4:
                raw4 = open_raw(socket.IPPROTO_IPIP, ifname)
                opened.append(raw4)
            raw41 = open_raw(socket.IPPROTO_IPV6, ifname)
            opened.append(raw41)
            raw50 = open_raw(IPPROTO_ESP, ifname)
            opened.append(raw50)
            raw_mh = open_raw(NH_MH, ifname)
            opened.append(raw_mh)
            udp6 = udp4 = None
            if info.ipv6 is not None:
                udp6 = open_udp(socket.AF_INET6, 0, ifname, address=str(info.ipv6))
                opened.append(udp6)
            if info.ipv4 is not None:
                udp4 = open_udp(socket.AF_INET, 0, ifname, address=str(info.ipv4))
                opened.append(udp4)
            lanes = {}
            for sock in (udp6, udp4):
                if sock is not None and (lane := open_lane(sock, ifname)) is not None:
                    lanes[sock] = lane
                    opened.append(lane)
            for sock in (raw41, raw50, raw4, udp6, udp4, *lanes.values()):
                if sock is not None:
                    enable_error_queue(sock)
            tap_sock = sender = None
            if tap:
                tap_sock, tap_lane = rawio.open_tap_pair(ifname)
                opened += [tap_sock, tap_lane]
                sender = rawio.open_raw_sender(ifname)
                opened.append(sender)
        except OSError:
            for sock in opened:
                sock.close()
            raise
        return cls(info, raw41, raw50, raw_mh, udp6, udp4, tap_sock, sender, lanes, raw4, tap_lane)

    def udp_ports(self) -> list[tuple[socket.socket, socket.socket | None, tuple[str, int]]]:
        """Each UDP socket with its check lane (None: refused) and its (address, port)."""
        a = self.access
        return [
            (sock, self.lanes.get(sock), (str(addr), port))
            for sock, addr, port in (
                (self.udp6, a.ipv6, a.udp6_port),
                (self.udp4, a.ipv4, a.udp4_port),
            )
            if sock is not None and addr is not None and port is not None
        ]

    def sockets(self) -> list[socket.socket]:
        found = [
            self.raw41,
            self.raw50,
            self.raw4,
            self.raw_mh,
            self.udp6,
            self.udp4,
            self.tap,
            self.tap_lane,
            self.raw_sender,
            *self.lanes.values(),
        ]
        return [s for s in found if s is not None]

    def by_name(self) -> dict[str, socket.socket]:
        """The receiving sockets, named for ``status`` (``eth0/udp6``...)."""
        named: dict[str, socket.socket | None] = {
            "raw41": self.raw41,
            "raw50": self.raw50,
            "raw4": self.raw4,
            "raw_mh": self.raw_mh,
            "udp6": self.udp6,
            "udp4": self.udp4,
            "tap": self.tap,
            "tap_checks": self.tap_lane,
        }
        for k, sock in (("udp6", self.udp6), ("udp4", self.udp4)):
            if sock is not None and sock in self.lanes:
                named[f"{k}_checks"] = self.lanes[sock]
        return {f"{self.info.ifname}/{k}": s for k, s in named.items() if s is not None}

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()
