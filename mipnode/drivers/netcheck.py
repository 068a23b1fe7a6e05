"""The sockets of `mipnode netcheck`: send each probe of ``core/netcheck.py``, read what comes
back, hand the results to the core for the verdicts.

Bounded: every probe goes out at most three times (``SEND_AT_S``), everything is over after
``DEADLINE_S`` (earlier when every probe has been answered), then at most ``PMTU_PROBES`` path
MTU probes of ``PMTU_WAIT_S`` each. The sockets are this command's own (a daemon running next to
it keeps its own; a copy of our answers it may see on its raw sockets is a counted drop there).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address
from typing import Any

import trio

from ice import stun
from mipnode.config import MnConfig
from mipnode.core.esp_keys import inbound_spi, spi_tag
from mipnode.core.netcheck import (
    DEADLINE_S,
    ESP_SEND_AT_S,
    NO_ANSWER,
    PMTU_PROBES,
    PMTU_WAIT_S,
    SEND_AT_S,
    PathMtu,
    Probe,
    Report,
    pmtu_sizes,
    report,
)
from mipnode.drivers import pump
from mipnode.drivers.io import enable_error_queue, new_udp_socket, open_raw, read_error_queue
from mipnode.wire.auth4285 import verify_mh_authenticated
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_MH, NH_UDP
from mipnode.wire.mh import BindingRefreshRequest, decode_mh_untrusted
from mipnode.wire.packets import STUN_PORT, udp_in_ipv6

IPPROTO_ESP = 50
ESP_PROBE_OCTETS = 200  # larger than the BRR it draws (the HA never answers with more)
_ATTR_PADDING = 0x0026  # RFC 5780 §7.6: the home agent ignores it
IPV6_MTU_DISCOVER, IPV6_MTU, IPV6_DONTFRAG = 23, 24, 62  # linux/in6.h
IP_MTU_DISCOVER, IP_MTU = 10, 14  # linux/in.h
PMTUDISC_DO = 2
_ANY = IPv6Address("::")
# Which probes each socket sends: (path, family).
_SOCKET_PROBES = {
    "raw41": ("T-native", "IPv6"),
    "raw50": ("T-native-esp", "IPv6"),
    "IPv6": ("T-udp", "IPv6"),
    "IPv4": ("T-udp", "IPv4"),
}


@dataclass
class _Live:
    """A probe while it runs: what was sent when, and the first answer."""

    probe: Probe
    sent_at: list[float]
    answered_at: float | None = None
    dead: bool = False  # a send failed: no point in sending again

    def answer(self, now: float, sent_at: float, **fields: Any) -> None:
        if self.answered_at is None:
            self.answered_at = now
            rtt = round((now - sent_at) * 1000, 2)
            self.probe = replace(self.probe, rtt_ms=rtt, failure=None, **fields)

    def fail(self, words: str) -> None:
        if self.answered_at is None and self.probe.failure is None:
            self.probe = replace(self.probe, failure=words)


def source_address(family: int, destination: str, ifname: str | None) -> tuple[str | None, str]:
    """The address this host would send from toward ``destination`` (a route lookup, nothing
    sent), or None and why not."""
    name = "IPv6" if family == socket.AF_INET6 else "IPv4"
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:  # EAFNOSUPPORT: a kernel without IPv6 (ipv6.disable=1)
        return None, f"no {name} on this host"
    try:
        if ifname:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.connect((destination, 9))
        address = str(sock.getsockname()[0]).split("%")[0]
    except OSError as exc:
        return None, f"no {name} route from this host ({exc.strerror or exc})"
    finally:
        sock.close()
    if address in ("0.0.0.0", "::"):  # a route, but no address to send from
        return None, f"no {name} address on this host"
    return address, ""


def padded_request(transaction_id: bytes, octets: int) -> bytes:
    """A Binding request of ``octets`` (a multiple of 4), padded with PADDING; never shorter
    than the plain request."""
    request = stun.binding_request(transaction_id)
    pad = (octets - len(request) - 4) & ~3
    if pad < 0:
        return request
    body = request[20:] + _ATTR_PADDING.to_bytes(2, "big") + pad.to_bytes(2, "big") + bytes(pad)
    return request[:2] + len(body).to_bytes(2, "big") + request[4:20] + body


class Netcheck:
    def __init__(self, cfg: MnConfig, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.cfg = cfg
        self.random = random_bytes
        self.ha6 = str(cfg.home_agent)
        self.ha4 = str(cfg.home_agent_ipv4) if cfg.home_agent_ipv4 else None
        self.local6, why6 = source_address(socket.AF_INET6, self.ha6, cfg.interface)
        self.local4, why4 = (
            source_address(socket.AF_INET, self.ha4, cfg.interface)
            if self.ha4
            else (None, "the configuration names no IPv4 address of the home agent")
        )
        self.why = {"IPv6": why6, "IPv4": why4}
        self.live: list[_Live] = []
        self.pending: dict[bytes, tuple[_Live, float]] = {}  # STUN transaction -> probe
        self.sockets: dict[str, socket.socket] = {}
        self.done = trio.Event()

    # -- the plan ------------------------------------------------------------------------------

    def _add(self, path: str, family: str, remote: tuple[str, int] | None, local: Any) -> _Live:
        allowed = path.removesuffix("-esp") in self.cfg.paths
        live = _Live(Probe(path, family, remote, local, allowed=allowed), [])
        if local is None:
            live.fail(self.why[family])
        self.live.append(live)
        return live

    def plan(self) -> None:
        native_local = (self.local6, 0) if self.local6 else None
        self._add("T-native", "IPv6", (self.ha6, 0), native_local)
        if self.cfg.protection == "esp":
            self._add("T-native-esp", "IPv6", (self.ha6, 0), native_local)
        for family, ha, local, af in (
            ("IPv6", self.ha6, self.local6, socket.AF_INET6),
            ("IPv4", self.ha4, self.local4, socket.AF_INET),
        ):
            sock = None
            if local is not None and ha is not None:
                sock = new_udp_socket(af, self.cfg.interface)
                sock.bind(("::" if af == socket.AF_INET6 else "0.0.0.0", 0))
                enable_error_queue(sock)
                self.sockets[family] = sock
            for port in self.cfg.home_agent_udp_ports:
                ours = (local, sock.getsockname()[1]) if sock is not None and local else None
                self._add("T-udp", family, None if ha is None else (ha, port), ours)
        if self.local6:
            for name, proto in (("raw41", socket.IPPROTO_IPV6), ("raw50", IPPROTO_ESP)):
                if name == "raw50" and self.cfg.protection != "esp":
                    continue
                try:
                    raw = open_raw(proto, self.cfg.interface)
                except PermissionError:
                    for lv in self.live:
                        if lv.probe.path == _SOCKET_PROBES[name][0]:
                            lv.probe = replace(lv.probe, local=None)
                            lv.fail("not probed: a raw socket needs root or CAP_NET_RAW")
                    continue
                enable_error_queue(raw)
                self.sockets[name] = raw

    # -- sending -------------------------------------------------------------------------------

    def _send(self, live: _Live) -> None:
        p = live.probe
        now = pump.now()
        try:
            if p.path == "T-udp":
                tid = self.random(12)
                self.pending[tid] = (live, now)
                assert p.remote is not None
                self.sockets[p.family].sendto(stun.binding_request(tid), p.remote)
            elif p.path == "T-native":
                tid = self.random(12)
                self.pending[tid] = (live, now)
                request = stun.binding_request(tid)
                local = IPv6Address(self.local6 or "::")
                # From the STUN port, as a mobile node's own T-native check (home_path.form).
                inner = udp_in_ipv6(local, IPv6Address(self.ha6), STUN_PORT, STUN_PORT, request)
                self.sockets["raw41"].sendto(inner, (self.ha6, 0))
            else:
                # An SPI the HA could have given us (tagged with our home address, which it
                # cannot open: it has no such SA), so its answer is a BRR for that address.
                spi = inbound_spi(self.random(2), spi_tag(self.cfg.home_address))
                esp = spi.to_bytes(4, "big") + (1).to_bytes(4, "big")
                esp += self.random(ESP_PROBE_OCTETS - len(esp))
                self.sockets["raw50"].sendto(esp, (self.ha6, 0))
        except OSError as exc:
            live.fail(f"send failed: {exc.strerror or exc}")
            live.dead = True
            return
        live.sent_at.append(now)
        live.probe = replace(live.probe, sent=live.probe.sent + 1)

    async def _sender(self) -> None:
        start = pump.now()
        steps = sorted({(t, i) for i, lv in enumerate(self.live) for t in self._schedule(lv.probe)})
        for at, index in steps:
            delay = start + at - pump.now()
            if delay > 0:
                await pump.sleep(delay)
            live = self.live[index]
            if live.answered_at is None and live.probe.local is not None and not live.dead:
                self._send(live)

    @staticmethod
    def _schedule(p: Probe) -> tuple[float, ...]:
        return ESP_SEND_AT_S if p.path == "T-native-esp" else SEND_AT_S

    # -- receiving -----------------------------------------------------------------------------

    def _settled(self) -> None:
        if all(lv.answered_at is not None or lv.probe.local is None or lv.dead for lv in self.live):
            self.done.set()

    def _stun_answer(self, data: bytes) -> None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except BadPacket:
            return
        found = self.pending.get(msg.transaction_id)
        if found is None or msg.message_class != stun.Class.RESPONSE:
            return
        live, sent_at = found
        mapped = msg.attributes.get("XOR-MAPPED-ADDRESS")
        if mapped is not None:
            mapped = (str(mapped[0]), int(mapped[1]) if live.probe.path == "T-udp" else 0)
        live.answer(pump.now(), sent_at, mapped=mapped)
        self._settled()

    def _tunnelled(self, inner: bytes, outer_source: str) -> None:
        """An inner packet of protocol 41 from the home agent: a check's answer or a BRR."""
        ha = IPv6Address(self.ha6)
        if len(inner) < 48 or inner[0] >> 4 != 6 or inner[8:24] != ha.packed:
            return
        if IPv6Address(outer_source.split("%")[0]) != ha:
            return  # the tunnel's outer source must be the home agent as well
        if inner[6] == NH_UDP and inner[40:42] == STUN_PORT.to_bytes(2, "big"):
            self._stun_answer(inner[48:])
        elif inner[6] == NH_MH and inner[24:40] == self.cfg.home_address.packed:
            self._refresh_request(inner[40 : 40 + int.from_bytes(inner[4:6], "big")])

    def _refresh_request(self, mh: bytes) -> None:
        esp = next((lv for lv in self.live if lv.probe.path == "T-native-esp"), None)
        if esp is None or not esp.sent_at:
            return
        try:
            msg = decode_mh_untrusted(mh, _ANY, _ANY, verify_checksum=False)
        except BadPacket:
            return
        hoa = self.cfg.home_address
        # Signed over the home address, or over a care-of address the HA has bound (RFC 4285
        # §5): ours here, unless a daemon registered from elsewhere (then it is not verifiable).
        coas = [hoa] + ([IPv6Address(self.local6)] if self.local6 else [])
        if isinstance(msg, BindingRefreshRequest) and any(
            verify_mh_authenticated(mh, key=self.cfg.key, coa=c, hoa=hoa) for c in coas
        ):
            esp.answer(pump.now(), esp.sent_at[-1])
            self._settled()

    def _icmp(self, sock: socket.socket, name: str) -> None:
        """Name the ICMP errors the kernel queued for what ``name`` sent on the probes they
        answer ("administratively prohibited from 2001:db8::1")."""
        path, family = _SOCKET_PROBES[name]
        for error in read_error_queue(sock):
            for lv in self.live:
                p = lv.probe
                if p.path != path or p.family != family or p.remote is None:
                    continue
                if p.remote[0] != error.destination[0]:
                    continue
                if path != "T-udp" or p.remote[1] == error.destination[1]:
                    lv.fail(error.words)

    async def _receiver(self, name: str, sock: socket.socket) -> None:
        tsock = trio.socket.from_stdlib_socket(sock)
        while True:
            try:
                data, addr = await tsock.recvfrom(65535)
            except OSError:
                self._icmp(sock, name)
                continue
            if name == "raw41":
                self._tunnelled(data, addr[0])
            elif name in ("IPv6", "IPv4"):
                self._stun_answer(data)

    # -- path MTU --------------------------------------------------------------------------------

    async def path_mtu(self) -> PathMtu | None:
        target = next(
            (lv.probe for lv in self.live if lv.probe.path == "T-udp" and lv.answered_at),
            None,
        )
        if target is None or target.remote is None:
            return None
        v6 = target.family == "IPv6"
        af = socket.AF_INET6 if v6 else socket.AF_INET
        level, mtu_opt = (socket.IPPROTO_IPV6, IPV6_MTU) if v6 else (socket.IPPROTO_IP, IP_MTU)
        sock = new_udp_socket(af, self.cfg.interface)
        try:
            if v6:
                sock.setsockopt(level, IPV6_MTU_DISCOVER, PMTUDISC_DO)
                sock.setsockopt(level, IPV6_DONTFRAG, 1)
            else:
                sock.setsockopt(level, IP_MTU_DISCOVER, PMTUDISC_DO)
            enable_error_queue(sock)
            sock.connect(target.remote)
            return await self._pmtu_probes(sock, level, mtu_opt, target.family, 48 if v6 else 28)
        finally:
            sock.close()

    async def _pmtu_probes(
        self, sock: socket.socket, level: int, mtu_opt: int, family: str, headers: int
    ) -> PathMtu:
        tsock = trio.socket.from_stdlib_socket(sock)
        sizes = pmtu_sizes(sock.getsockopt(level, mtu_opt))
        sent, how = 0, ""
        while sizes and sent < PMTU_PROBES:
            size = sizes.pop(0)
            tid = self.random(12)
            request = padded_request(tid, size - headers)
            try:
                await tsock.send(request)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    return PathMtu(family, None, f"send failed: {exc.strerror}", sent)
                known = sock.getsockopt(level, mtu_opt)
                sizes = [s for s in pmtu_sizes(known) if s < size]
                how = f"this host knows a path MTU of {known}; "
                continue
            sent += 1
            if await self._pmtu_answer(tsock, sock, tid):
                octets = headers + len(request)
                return PathMtu(family, octets, f"{how}a probe of {octets} octets answered", sent)
            known = sock.getsockopt(level, mtu_opt)
            if known < size:
                how = f"Packet Too Big: {known}; "
                sizes = [s for s in pmtu_sizes(known) if s < size]
            else:
                how = f"{size} not answered; "
        return PathMtu(family, None, how + "no probe answered", sent)

    async def _pmtu_answer(self, tsock: Any, sock: socket.socket, tid: bytes) -> bool:
        with pump.time_limit(PMTU_WAIT_S):
            while True:
                try:
                    data = await tsock.recv(2048)
                except OSError:
                    read_error_queue(sock)  # a Packet Too Big: the kernel took its MTU
                    return False
                try:
                    msg = stun.parse_stun_untrusted(data)
                except BadPacket:
                    continue
                if msg.transaction_id == tid:
                    return True
        return False

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> Report:
        try:
            self.plan()
            async with trio.open_nursery() as nursery:
                for name, sock in self.sockets.items():
                    nursery.start_soon(self._receiver, name, sock)
                nursery.start_soon(self._sender)
                await pump.wait_for(self.done, DEADLINE_S)
                nursery.cancel_scope.cancel()
            for lv in self.live:
                if lv.probe.local is not None and lv.answered_at is None:
                    lv.fail(NO_ANSWER)
            mtu = await self.path_mtu()
        finally:
            for sock in self.sockets.values():
                sock.close()
        return report(
            home_agent=self.ha6,
            home_agent_ipv4=self.ha4,
            protection=self.cfg.protection,
            probes=tuple(lv.probe for lv in self.live),
            path_mtu=mtu,
        )


def run_netcheck(cfg: MnConfig) -> Report:
    return trio.run(Netcheck(cfg).run)
