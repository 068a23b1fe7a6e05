"""The home agent daemon: binding cache core + TUN + T-native / T-udp tunnel endpoints.

Packet flow (DESIGN §2, §6):
- CN -> HoA: the kernel routes each bound HoA/128 into our TUN; we read the packet and send it
  to the binding's care-of endpoint, as IPv6-in-IPv6 (raw socket 41) or in UDP.
- MN -> CN: a tunnelled packet is decapsulated and written into the TUN, and the kernel forwards
  it, but only when its inner source is a bound HoA and its outer source is that binding's
  care-of address or UDP 5-tuple (ingress filter); everything else is dropped and counted.
- Signalling: MH packets addressed to the HA travel inside the same tunnel; STUN checks on the
  UDP port and inside IPv6-in-IPv6 are answered here (the HA is ICE-lite, DESIGN §4). BAs and
  Binding Refresh Requests leave the same way: inner HA -> HoA, on the binding's via.
- Persistence (``state_dir``): the binding cache is restored before the daemon reports ready
  (expired entries dropped, routes reinstalled, a BRR to every restored MN) and written again,
  atomically and off the trio thread, whenever the core's state changes (drivers/persist.py).
"""

from __future__ import annotations

import logging
import signal
import socket
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import trio

from ice import stun
from mipnode.config import HaConfig
from mipnode.core.ha import (
    BindingAdded,
    BindingRemoved,
    BindingUpdated,
    HaCoreConfig,
    HomeAgentCore,
    SecurityAssociation,
)
from mipnode.core.types import OutgoingMh, Via
from mipnode.drivers import netlink, persist, sdnotify
from mipnode.drivers.control import serve_control
from mipnode.drivers.io import (
    HANDLER_ERRORS,
    IPPROTO_MH,
    Counters,
    TimerPump,
    drain_fd,
    drain_socket,
    open_raw,
    open_udp,
    send_quietly,
    wall,
    write_quietly,
)
from mipnode.drivers.logs import RateLimitedLog
from mipnode.drivers.packets import address_text, ipv6_packet, udp_in_ipv6, via_json
from mipnode.drivers.routes import HostRoutes
from mipnode.drivers.tun import open_tun
from mipnode.wire.errors import BadPacket
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted

log = logging.getLogger("mipnode.ha")

NH_UDP = 17
VIA_CACHE_MAX = 4096
NH_MH = 135
# BRA in accepting BAs (issue 3): refresh after 3/4 of the granted lifetime, a little before the
# MN core's own 80 %, and well before the HA's BRR round (min(10 %, 30 s) before the expiry).
REFRESH_ADVICE_FRACTION = 0.75


class HomeAgentDaemon:
    def __init__(self, config: HaConfig) -> None:
        self.config = config
        self.core = HomeAgentCore(
            HaCoreConfig(
                address=config.address,
                home_prefix=config.home_prefix,
                security_associations=tuple(
                    SecurityAssociation(m.spi, m.key, m.home_address) for m in config.mobile_nodes
                ),
                max_lifetime_s=config.max_lifetime_s,
                refresh_advice_fraction=REFRESH_ADVICE_FRACTION,
                refresh_requests=True,
            )
        )
        self.ha_bytes = config.address.packed
        self.drops = Counters()
        self.counters = Counters()
        self.ratelog = RateLimitedLog()
        # Fast path: inner HoA bytes -> the Via its packets must arrive on / leave by.
        self.routes: dict[bytes, Via] = {}
        self._vias: dict[tuple[str, str, int], Via] = {}
        self.host_routes = HostRoutes(config.tun_name, self.drops)
        self.started_at = wall()
        self.timer = TimerPump(self.core.get_timer, self._on_timer)
        self.writer: persist.StateWriter | None = None
        self.saved_version = self.core.state_version
        self.restored = 0

    # -- setup -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        _enable_forwarding()
        self.tun = open_tun(cfg.tun_name)
        await trio.to_thread.run_sync(
            netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [(str(cfg.address), 128)]
        )
        # The whole home prefix goes into the TUN: a packet for a home address without a
        # binding is dropped and counted here instead of bouncing between the HA and the
        # router that routes the prefix to it. Bound HoAs also get their own /128 route.
        await trio.to_thread.run_sync(
            lambda: netlink.replace_route(str(cfg.home_prefix), cfg.tun_name)
        )
        self.raw41 = open_raw(
            socket.IPPROTO_IPV6, address=str(cfg.address)
        )  # protocol 41: IPv6-in-IPv6 (RFC 2473)
        # Kept open so the kernel does not answer MH with Parameter Problem (reference E10).
        self.raw_mh = open_raw(IPPROTO_MH)
        self.udp6 = open_udp(socket.AF_INET6, cfg.udp_port, address=str(cfg.address))
        self.udp4 = open_udp(socket.AF_INET, cfg.udp_port)
        if cfg.state_dir is not None:
            await self._restore(cfg.state_dir)
        async with trio.open_nursery() as nursery:
            if self.writer is not None:
                nursery.start_soon(self.writer.run)
            nursery.start_soon(self.host_routes.run)
            nursery.start_soon(drain_fd, self.tun, self._from_tun, self._flush)
            nursery.start_soon(drain_socket, self.raw41, self._from_raw41, self._flush)
            nursery.start_soon(drain_socket, self.raw_mh, self._from_raw_mh, self._flush)
            nursery.start_soon(drain_socket, self.udp6, self._from_udp, self._flush)
            nursery.start_soon(drain_socket, self.udp4, self._from_udp, self._flush)
            nursery.start_soon(self.timer.run)
            await nursery.start(serve_control, cfg.control_socket, self.answer)
            log.info(
                "home agent ready address=%s home_prefix=%s udp_port=%d mobile_nodes=%d "
                "restored=%d",
                cfg.address,
                cfg.home_prefix,
                cfg.udp_port,
                len(cfg.mobile_nodes),
                self.restored,
            )
            sdnotify.notify("READY=1")
            task_status.started()

    async def _restore(self, state_dir: str) -> None:
        """Load the binding cache; a missing, unreadable or corrupt file means start empty."""
        try:
            path = await trio.to_thread.run_sync(persist.prepare_state_dir, state_dir)
        except OSError as exc:
            # Keep serving; the writer keeps trying (and logging) until the directory works.
            path = Path(state_dir) / persist.STATE_FILE
            log.error(
                "state_dir %s unusable (%s); bindings may not survive a restart", state_dir, exc
            )
        self.writer = persist.StateWriter(path)
        try:
            state = await trio.to_thread.run_sync(persist.read_state, path)
            if state is None:
                log.info("no binding cache at %s; starting empty", path)
                return
            self.restored = self.core.restore(wall(), state)
        except (persist.StateFileError, ValueError) as exc:
            kept = await trio.to_thread.run_sync(persist.set_aside, path)
            log.error("binding cache %s unusable (%s); starting empty, kept as %s", path, exc, kept)
            return
        log.info(
            "binding cache restored from %s: bindings=%d %s",
            path,
            self.restored,
            {k: v for k, v in self.core.statistics().items() if k.startswith("restore")},
        )
        self._flush()  # reinstall routes, send the BRRs, rewrite the file without expired entries

    # -- receive paths -----------------------------------------------------------------
    def _from_tun(self, pkt: bytes) -> None:
        """Kernel-routed packet toward a HoA: tunnel it to the binding's care-of endpoint."""
        if len(pkt) < 40 or pkt[0] >> 4 != 6:
            self.drops("tun_not_ipv6")
            return
        via = self.routes.get(pkt[24:40])
        if via is None:
            self.drops("tun_no_binding")
            return
        self._send_via(via, pkt)
        self.counters("tunnelled_to_mn")

    def _via(self, kind: str, addr: Any) -> Via:
        """The Via of a source address, from a small cache: no per-packet allocation (and no
        Via validation) for the endpoints of live bindings (DESIGN §5 data-plane rule)."""
        key = (kind, addr[0], addr[1] if kind == "T-udp" else 0)
        via = self._vias.get(key)
        if via is None:
            if len(self._vias) >= VIA_CACHE_MAX:
                self._vias.clear()  # spoofed sources must not grow it without bound
            remote = (_host(addr[0]), addr[1]) if kind == "T-udp" else (_host(addr[0]),)
            via = self._vias[key] = Via(kind, remote)
        return via

    def _from_raw41(self, inner: bytes, addr: Any) -> None:
        self._from_tunnel(inner, self._via("T-native", addr))

    def _from_udp(self, data: bytes, addr: Any) -> None:
        try:
            kind = classify_udp_payload_untrusted(data)
        except BadPacket as exc:
            self.drops(f"udp_{exc.reason}")
            return
        if kind is UdpPayloadKind.IPV6:
            self._from_tunnel(data, self._via("T-udp", addr))
        else:
            self._answer_stun(data, (_host(addr[0]), addr[1]), None)

    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        # Native (untunnelled) MH: mipnode MNs signal inside the tunnel; count and drop.
        self.drops("native_mh_unsupported")

    def _from_tunnel(self, inner: bytes, via: Via) -> None:
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self.drops("tunnel_not_ipv6")
            return
        if inner[24:40] == self.ha_bytes:
            nh = inner[6]
            if nh == NH_MH:
                self._signalling(inner, via)
                return
            if nh == NH_UDP and self._maybe_check(inner, via):
                return
        # Ingress filter (DESIGN §6): inner source must be a bound HoA arriving on its binding.
        bound = self.routes.get(inner[8:24])
        if bound is None or bound != via:
            reason = "ingress_unbound_source" if bound is None else "ingress_wrong_endpoint"
            self.drops(reason)
            self.ratelog(
                logging.WARNING,
                reason,
                "dropped tunnelled packet",
                inner_src=IPv6Address(inner[8:24]),
                outer=via.remote,
            )
            return
        if not write_quietly(self.tun, inner, self.drops):
            return
        self.counters("forwarded_from_mn")

    def _signalling(self, inner: bytes, via: Via) -> None:
        plen = int.from_bytes(inner[4:6], "big")
        if 40 + plen > len(inner):
            self.drops("mh_truncated")
            return
        self.core.receive_datagram(
            wall(), inner[40 : 40 + plen], IPv6Address(inner[8:24]), IPv6Address(inner[24:40]), via
        )

    def _maybe_check(self, inner: bytes, via: Via) -> bool:
        """A STUN check inside IPv6-in-IPv6 to our UDP port: a T-native connectivity check."""
        if len(inner) < 48 or int.from_bytes(inner[42:44], "big") != self.config.udp_port:
            return False
        payload = inner[48:]
        if not stun.looks_like_stun(payload):
            return False
        src = IPv6Address(inner[8:24])
        sport = int.from_bytes(inner[40:42], "big")
        # The mapped address is the outer source: what the network in between let through.
        self._answer_stun(payload, (via.remote[0], sport), (via, src, sport))
        return True

    def _answer_stun(
        self, data: bytes, mapped: tuple[str, int], tunnel: tuple[Via, IPv6Address, int] | None
    ) -> None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except BadPacket as exc:
            self.drops(f"stun_{exc.reason}")
            return
        if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
            self.drops("stun_not_binding_request")
            return
        response = stun.binding_response(msg.transaction_id, mapped)
        if len(response) > len(data):
            # Unauthenticated requests from anywhere: never answer with more bytes than came
            # in, or the HA becomes an amplifier toward spoofed sources (DESIGN §4).
            self.drops("stun_request_smaller_than_answer")
            return
        self.counters("checks_answered")
        if tunnel is None:
            sock = self.udp6 if ":" in mapped[0] else self.udp4
            send_quietly(sock, response, mapped, self.drops)
        else:
            via, src, sport = tunnel
            pkt = udp_in_ipv6(self.config.address, src, self.config.udp_port, sport, response)
            self._send_via(via, pkt)

    # -- send paths --------------------------------------------------------------------
    def _send_via(self, via: Via, pkt: bytes) -> None:
        if via.kind == "T-native":
            send_quietly(self.raw41, pkt, (via.remote[0], 0), self.drops)
        else:
            host, port = via.remote[0], via.remote[1]
            sock = self.udp6 if ":" in str(host) else self.udp4
            send_quietly(sock, pkt, (host, port), self.drops)

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        now = wall()
        for out in self.core.datagrams_to_send(now):
            self._send_mh(out)
        while (event := self.core.next_event()) is not None:
            self._on_event(event)
        if self.writer is not None and self.core.state_version != self.saved_version:
            self.saved_version = self.core.state_version
            self.writer.submit(self.core.export_state())
        self.timer.kick()

    def _send_mh(self, out: OutgoingMh) -> None:
        if out.via is None:
            self.drops("mh_without_path")
            return
        self._send_via(out.via, ipv6_packet(out.src, out.dst, NH_MH, out.data))

    def _on_event(self, event: object) -> None:
        if isinstance(event, BindingAdded | BindingUpdated):
            b = event.binding
            self.routes[b.home_address.packed] = b.via
            log.info(
                "binding hoa=%s coa=%s path=%s lifetime=%ss seq=%d",
                b.home_address,
                b.care_of_address,
                b.via.kind,
                b.lifetime_s,
                b.sequence,
            )
            if isinstance(event, BindingAdded):
                self.host_routes.add(b.home_address)
        elif isinstance(event, BindingRemoved):
            self.routes.pop(event.home_address.packed, None)
            log.info("binding removed hoa=%s reason=%s", event.home_address, event.reason)
            self.host_routes.remove(event.home_address)

    # -- inspection --------------------------------------------------------------------
    def answer(self, command: str) -> Any:
        now = wall()
        bindings: list[dict[str, Any]] = [
            {
                "hoa": str(b.home_address),
                "coa": address_text(b.care_of_address),
                "path": via_json(b.via, local=None),
                "sequence": b.sequence,
                "lifetime_remaining_s": max(0, round(b.expires_at - now, 1)),
                "state": b.state,
            }
            for b in self.core.bindings()
        ]
        if command == "bindings":
            return {"role": "ha", "bindings": bindings}
        if command == "paths":
            return [
                {
                    "peer": b["hoa"],
                    "role": "mobile-node",
                    "selected": dict(b["path"], rtt_ms=None, since=None),
                    "pairs": [
                        dict(
                            b["path"],
                            state="succeeded",
                            rtt_ms=None,
                            checks_sent=None,
                            checks_answered=None,
                        )
                    ],
                    "changes": [],
                }
                for b in bindings
            ]
        if command == "status":
            return {
                "role": "ha",
                "address": str(self.config.address),
                "home_prefix": str(self.config.home_prefix),
                "udp_port": self.config.udp_port,
                "uptime_s": round(now - self.started_at, 1),
                "bindings": bindings,
                "counters": dict(self.counters),
                "core": self.core.statistics(),
                "drops": dict(self.drops),
                "internal_errors": dict(HANDLER_ERRORS),
                "persistence": self._persistence_status(),
            }
        return {"error": f"unknown command {command!r}"}

    def _persistence_status(self) -> dict[str, Any] | None:
        w = self.writer
        if w is None:
            return None
        return {
            "state_file": str(w.path),
            "restored": self.restored,
            "writes": w.writes,
            "write_failures": w.failures,
            "last_error": w.last_error,
            "last_write_ms": w.last_write_ms,
        }


def _host(addr: str) -> str:
    return addr.split("%", 1)[0]


def _enable_forwarding() -> None:
    path = "/proc/sys/net/ipv6/conf/all/forwarding"
    with open(path) as f:
        if f.read().strip() == "1":
            return
    with open(path, "w") as f:
        f.write("1\n")
    log.info("enabled IPv6 forwarding (net.ipv6.conf.all.forwarding=1)")


async def run_home_agent(config: HaConfig) -> None:
    daemon = HomeAgentDaemon(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("home agent stopping")
                sdnotify.notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                break
