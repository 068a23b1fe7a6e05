"""The mobile node daemon: sockets, tasks and the data plane around the MobileNode core.

Every protocol decision is the node core's (mipnode/core/mobile_node.py); this module owns the
TUN with the home address, the sockets of each access network (mn_access.py, opened as the
netlink notifications that reveal movement say: mn_moves.py), the IPv4 home address and a
mobile router's networks (mn_sources.py), and a forwarding table the core's ``ForwardingChanged``
events rewrite. Per packet the data plane does one dict lookup and a send: a miss goes out on
the default route (the home path) and is reported to the core once per batch; packets that are
not plain data (signalling, answers to checks, ICMP errors, unproven RH2 packets) go to the
core. Under protection (DESIGN §3) what goes through the home agent is sealed with the SA the
core's ``EspKeyed`` installed (drivers/esp_plane.py), and only what the SA opened is delivered
from the home agent without the core looking at it.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
from functools import partial
from typing import Any

import trio

from mipnode.config import MnConfig
from mipnode.core.flows import CnOpenedFlows
from mipnode.core.mobile_node import (
    AccessRetired,
    DeregistrationDone,
    ForwardingChanged,
    Ipv4HomeAddressChanged,
    MobileNode,
    MobileNodeConfig,
    Notice,
)
from mipnode.core.transmit import Deliver, EspKeyed, SendHome, SendNative, SendUdp
from mipnode.drivers import mn_answer, mn_moves, netlink, pump, rawio, sdnotify
from mipnode.drivers.control import serve_control
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters, raw_destination, read_error_queue, send_quietly
from mipnode.drivers.metrics import serve_metrics
from mipnode.drivers.mn_access import AccessSockets
from mipnode.drivers.mn_sources import OwnSources
from mipnode.drivers.mn_table import ForwardingTable, Way
from mipnode.drivers.tun import open_daemon_tun
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_ICMPV6, NH_MH, NH_ROUTING
from mipnode.wire.packets import D_NATIVE_PROBE_IDENT, ICMPV6_ECHO_REPLY, is_echo
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted
from tunnels.ro import (
    add_home_address_option,
    can_route_optimise,
    remove_type2_routing_header_untrusted,
)

log = logging.getLogger("mipnode.mn")
TRAFFIC_REPORT_S = 1.0  # destinations that carried data go to the core at most this often
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class MobileNodeDaemon:
    def __init__(self, config: MnConfig) -> None:
        self.config = config
        self.hoa = config.home_address.packed
        self.own = OwnSources(config.networks)  # the IPv4 HoA, a router's networks
        self.ha = config.home_agent.packed
        self.ha_hosts = {str(config.home_agent)} | (
            {str(config.home_agent_ipv4)} if config.home_agent_ipv4 else set()
        )
        self.ha_ports = frozenset(config.home_agent_udp_ports)
        self.drops, self.counters = Counters(), Counters()
        self.ro = config.route_optimization
        self.node: MobileNode | None = None
        self.accesses: list[tuple[AccessSockets, trio.CancelScope]] = []
        self.fwd = ForwardingTable(protected=config.suite is not None, drops=self.drops)
        self.esp = EspSas()
        self.misses: set[bytes] = set()
        self.used: set[bytes] = set()
        self.reported_at = 0.0
        self.cn_opened = CnOpenedFlows()  # answered the way they came, never D-native
        self.deregistered = trio.Event()
        self.nft_table = rawio.table_name("mipnode_mn", config.tun_name)

    # -- setup -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        self.tun = open_daemon_tun(cfg.tun_name, cfg.tun_offloads, self.drops)
        hoa = str(cfg.home_address)
        await trio.to_thread.run_sync(
            netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [(hoa, 128)]
        )
        await self.own.start(cfg.tun_name, cfg.ipv4_mobile_network_prefixes)  # a router's
        changes = netlink.open_change_socket()  # before the first look: no change is missed
        info = await mn_moves.access_info(self)
        self.node = MobileNode(
            MobileNodeConfig(
                home_address=cfg.home_address,
                home_agent=cfg.home_agent,
                spi=cfg.spi,
                key=cfg.key,
                home_agent_ipv4=cfg.home_agent_ipv4,
                home_agent_ports=cfg.home_agent_udp_ports,
                paths=frozenset(cfg.paths),
                lifetime_s=cfg.lifetime_s,
                mobile_network_prefixes=cfg.networks,
                implicit_prefixes=cfg.prefix_registration == "implicit",
                ipv4_home_address=cfg.ipv4_home_address,
                route_optimization=cfg.route_optimization,
                keepalive_interval_s=cfg.keepalive_interval_s,
                suite=cfg.suite,
            ),
            now=pump.now(),
            random_bytes=secrets.token_bytes,
            wall_offset=pump.wall_offset(),
        )
        self.pump = pump.Pump(
            self.node, self._send, self._on_event, self.tun.flush, (self.counters,)
        )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await nursery.start(serve_control, cfg.control_socket, self.answer)
                if cfg.metrics_listen is not None:  # opt-in (drivers/metrics.py)
                    await nursery.start(serve_metrics, cfg.metrics_listen, self.answer)
                nursery.start_soon(self.pump.run)
                nursery.start_soon(mn_moves.watch, self, changes, info)
                # Everything that should keep the HoA goes into the TUN (lowest metric); our
                # outer sockets are bound to the access interface, so they never loop back.
                await trio.to_thread.run_sync(
                    lambda: netlink.replace_route("::/0", cfg.tun_name, metric=1)
                )
                drain_tun = partial(pump.drain_tun, pump=self.pump)
                nursery.start_soon(drain_tun, self.tun, self._from_tun, self._after_tun)
                log.info("mobile node ready hoa=%s ha=%s", hoa, cfg.home_agent)
                sdnotify.notify("READY=1")
                task_status.started()
        finally:
            changes.close()
            with trio.CancelScope(shield=True):
                if self.ro:
                    await trio.to_thread.run_sync(rawio.remove_table, self.nft_table)
                await self.own.stop()

    async def _serve_access(
        self, s: AccessSockets, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        a, p = s.access, self.pump
        self.fwd.add_access(s)
        try:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                async with trio.open_nursery() as n:
                    drain = partial(pump.drain_socket, pump=p, on_error=self._icmp)
                    n.start_soon(drain, s.raw41, self._raw_native((str(a.ipv6), 0)), p.flush)
                    n.start_soon(drain, s.raw50, self._raw_native((str(a.ipv6), 0), True), p.flush)
                    if s.raw4 is not None:
                        n.start_soon(drain, s.raw4, self._from_home4, p.flush)
                    n.start_soon(pump.drain_socket, s.raw_mh, self._from_raw_mh, p.flush)
                    for sock, lane, local in s.udp_ports():
                        pump.start_udp_drains(n, sock, lane, self._udp(local), p, self._icmp)
                    for tap in (t for t in (s.tap, s.tap_lane) if t is not None):
                        n.start_soon(drain, tap, self._from_tap, p.flush)
        finally:
            self.fwd.remove_access(s)
            s.close()

    # -- the data plane --------------------------------------------------------------------
    def _from_tun(self, pkt: bytes) -> None:
        if len(pkt) < 40 or pkt[0] >> 4 != 6 or pkt[8:24] != self.hoa:
            if not self.own.sent_by(pkt):  # e.g. the kernel's link-local MLD/RS on the TUN
                self.drops("tun_not_from_hoa")
            elif pkt[0] >> 4 == 4:  # the IPv4 home address's or network's: always by the HA
                own = pkt[12:16] == self.own.ipv4
                counter = "tunnelled_ipv4_to_ha" if own else "tunnelled_ipv4_from_mobile_network"
                self._to_home(pkt, counter, self.fwd.default4)
            elif not self._host_flow(pkt):  # a host behind the router: its flow's way
                self._to_home(pkt, "tunnelled_from_mobile_network", self.fwd.default)
            return
        dst = pkt[24:40]
        routes = self.fwd.routes.get(dst)
        if routes is None:
            self.misses.add(dst)
        elif routes:
            for sock, addr, care_of, counter, seal in routes:
                if care_of is None:
                    self._tunnel(sock, addr, seal, pkt)
                    self.used.add(dst)
                    self.counters.pending.append(counter)
                    return
                # D-native: only what can carry an HAO, and never a flow the CN opened.
                if not can_route_optimise(pkt):
                    continue
                if self.cn_opened.opened_by_cn(self.pump.now, pkt):
                    self.counters("cn_opened_flow_not_d_native")
                    continue
                send_quietly(sock, add_home_address_option(pkt, care_of), addr, self.drops)
                self.used.add(dst)
                self.counters.pending.append(counter)
                return
        self._to_home(pkt, "tunnelled_to_ha", self.fwd.default)

    def _host_flow(self, pkt: bytes) -> bool:
        """A host's packet on its flow's D-udp pair (core/mn_hosts.py; the key is source and
        destination, ``pkt[8:40]``); False: the home path takes it. A miss goes to the core
        once per batch, like the home address's."""
        key = pkt[8:40]
        routes = self.fwd.routes.get(key)
        if routes is None:
            if self.ro:
                self.misses.add(key)
            return False
        if not routes:
            return False
        sock, addr, _, _, seal = routes[0]
        self._tunnel(sock, addr, seal, pkt)
        self.used.add(key)
        self.counters.pending.append("d_udp_from_mobile_network")
        return True

    def _to_home(self, pkt: bytes, counter: str, default: Way | None) -> None:
        if default is None:
            self.drops("no_home_path")
            return
        self._tunnel(default[0], default[1], default[4], pkt)
        self.counters.pending.append(counter)

    def _tunnel(self, sock: socket.socket, addr: Any, seal: bytes | None, pkt: bytes) -> None:
        out = pkt if seal is None else self.esp.seal(seal, pkt, self.drops)
        if out is not None:
            self.fwd.send(sock, addr, out)

    def _after_tun(self) -> None:
        assert self.node is not None
        self.fwd.tx.flush()
        now = self.pump.stamp()
        if self.misses:
            for dst in self.misses:
                self.node.new_destination(now, dst)
            self.misses.clear()
        if self.esp.rekey_due:
            for owner in self.esp.rekey_due:
                if owner:
                    self.node.rekey_direct(now, owner)
                else:
                    self.node.request_rekey(now)
            self.esp.rekey_due.clear()
        if self.used and now - self.reported_at >= TRAFFIC_REPORT_S:
            self.reported_at = now
            self.node.traffic_seen(now, self.used)
            self.used = set()
        self.pump.flush()

    def _raw_native(self, local: tuple[str, int], esp: bool = False) -> Any:
        """T-native from the home agent: IPv6-in-IPv6, or (``esp``) ESP in tunnel mode."""
        remote = (str(self.config.home_agent), 0)

        def from_raw(data: bytes, addr: Any) -> None:
            if addr[0] not in self.ha_hosts:
                self.drops("raw50_not_from_ha" if esp else "raw41_not_from_ha")
            elif esp:
                self._from_esp(data, local, remote)
            else:
                self._from_home(data, local, remote)

        return from_raw

    def _from_home4(self, inner: bytes, addr: Any) -> None:
        """IPv4 in clear from the home agent (RFC 5555; protocol 4, or in UDP)."""
        from_ha = addr[0] in self.ha_hosts and (addr[1] == 0 or addr[1] in self.ha_ports)
        if reason := self.own.refuse_clear_ipv4(inner, from_ha, self.fwd):
            self.drops(reason)
        else:
            self._deliver(inner, "delivered_ipv4_from_ha")

    def _udp(self, local: tuple[str, int]) -> Any:
        def from_udp(data: bytes, addr: Any) -> None:
            if data[:1] and data[0] >> 4 == 6 and len(data) >= 40:
                if addr[0] in self.ha_hosts and addr[1] in self.ha_ports:
                    self._from_home(data, local, addr)
                    return
                if self.fwd.direct_clear_ok(data, addr, self.hoa, self.drops):
                    self._deliver(data, "d_udp_from_cn")
                return
            if data[:1] and data[0] >> 4 == 4:  # IPv4 in UDP, in clear
                self._from_home4(data, addr)
                return
            if data[:1] and data[0] & 0x80:  # ESP-in-UDP: SPIs have the top bit set
                if addr[0] in self.ha_hosts and addr[1] in self.ha_ports:
                    self._from_esp(data, local, addr)
                elif inner := self.fwd.open_direct(
                    self.esp, data, addr, self.hoa, self.pump.now, self.drops
                ):
                    self._deliver(inner, "d_udp_from_cn", True)
                return
            try:
                kind = classify_udp_payload_untrusted(data)
            except BadPacket as exc:
                self.drops(f"udp_{exc.reason}")
                return
            if kind is UdpPayloadKind.STUN and self.node is not None:
                host = addr[0].split("%", 1)[0]
                self.node.receive_udp(self.pump.now, data, local, (host, addr[1]))

        return from_udp

    def _from_esp(self, data: bytes, local: tuple[str, int], remote: Any) -> None:
        opened = self.esp.open(data, self.pump.now, self.drops)
        if opened is None:
            return
        if opened[1]:
            self.drops("esp_direct_sa_from_ha")  # a correspondent's SA never speaks for the HA
        elif opened[0][0] >> 4 != 4:
            self._from_home(opened[0], local, remote, True)
        elif self.own.addressed(opened[0]):  # to our IPv4 home address (RFC 5555)
            self._deliver(opened[0], "delivered_ipv4_from_ha")
        else:
            self.drops("ipv4_not_to_home_address")

    def _from_home(
        self, inner: bytes, local: tuple[str, int], remote: Any, sealed: bool = False
    ) -> None:
        """Tunnelled from the HA: data for the HoA to the TUN, the rest to the node core
        (``remote``: the HA's address as recvfrom gave it, a tuple is built only for the core).
        Under protection only what came sealed takes the fast way."""
        nh = inner[6] if len(inner) >= 41 else -1
        if (
            (sealed or not self.fwd.protected)
            and (inner[24:40] == self.hoa or self.own.addressed(inner))
            and nh != NH_MH
            and inner[8:24] != self.ha
            and not (nh == NH_ICMPV6 and inner[40] < 128)
        ):
            self._deliver(inner, "delivered_from_ha")  # sealed by the HA, not written by it
        elif self.node is not None:
            remote = (remote[0], remote[1])
            self.node.receive_tunnelled(self.pump.now, inner, local, remote, sealed)

    def _deliver(self, inner: bytes, counter: str, sealed: bool = False) -> None:
        if self.ro:
            self.cn_opened.note_untrusted(self.pump.now, inner)
        self.tun.write(inner, sealed)
        self.counters.pending.append(counter)

    def _from_tap(self, pkt: bytes, addr: Any) -> None:
        if rawio.is_outgoing(addr) or len(pkt) < 40 or self.node is None:
            return
        cn = pkt[8:24]
        if pkt[6] == NH_ROUTING and cn in self.fwd.d_native:  # proven D-native data: fast
            try:
                hoa, inner = remove_type2_routing_header_untrusted(pkt)
            except BadPacket as exc:
                self.drops(f"rh2_{exc.reason}")
                return
            if (
                hoa == self.hoa
                and inner[6] not in (NH_MH, 0, 43, 60)
                and not is_echo(inner, ICMPV6_ECHO_REPLY, D_NATIVE_PROBE_IDENT)
            ):
                self.tun.write(inner)
                self.counters.pending.append("d_native_from_cn")
                return
        self.node.receive_native(self.pump.now, pkt)

    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        self.counters("mh_seen_by_raw_socket")  # open only to keep the kernel quiet

    def _icmp(self, sock: socket.socket, code: int, owner: socket.socket | None = None) -> None:
        """What the network answered to a packet of ours (IPV6_RECVERR): to the core. A check
        lane's errors are its ``owner``'s (the kernel hashes errors to either socket)."""
        if self.node is None:
            return
        local = next((k for k, v in self.fwd.udp_by_local.items() if v is (owner or sock)), None)
        if local is None:
            local = next(((k, 0) for k, v in self.fwd.raw41_by_coa.items() if v is sock), None)
        for err in read_error_queue(sock):
            if local is not None:
                remote = err.destination if local[1] else (err.destination[0], 0)
                self.node.send_failed(self.pump.now, local, remote, err.words)

    # -- what the core asks for ------------------------------------------------------------
    def _send(self, out: object) -> None:
        if isinstance(out, SendHome) and out.local is not None and out.remote is not None:
            packet = self.esp.seal(b"", out.packet, self.drops) if out.protect else out.packet
            if packet is None:
                return
            if out.local[1] == 0:  # T-native: IPv6-in-IPv6, or ESP when sealed
                sock = self.fwd.native_socket(out.local[0], out.protect)
                self._send_on(sock, packet, (out.remote[0], 0), out)
            else:
                self._send_on(self.fwd.udp_by_local.get(out.local), packet, out.remote, out)
        elif isinstance(out, EspKeyed):
            self.esp.keyed(out.peer, out.keys, self.pump.now)
        elif isinstance(out, SendUdp):
            self._send_on(self.fwd.udp_by_local.get(out.local), out.payload, out.remote, out)
        elif isinstance(out, SendNative):
            sender = self.fwd.raw_sender()
            if sender is not None:
                send_quietly(sender, out.packet, raw_destination(out.packet[24:40]), self.drops)
        elif isinstance(out, Deliver):
            self.tun.write(out.packet)

    def _send_on(self, sock: socket.socket | None, data: bytes, addr: Any, out: Any) -> None:
        if sock is None:
            self.drops("tx_no_socket")
            return
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            self.drops("tx_would_block")
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "error")
            self.drops(f"tx_{reason.lower()}")
            if self.node is not None:
                self.node.send_failed(self.pump.now, out.local, out.remote or addr, reason)

    def _on_event(self, event: object) -> None:
        if isinstance(event, ForwardingChanged):
            self.fwd.apply(event)
            if event.dst and event.routes is None:
                self.esp.forget(event.dst)  # a D-udp pair's SAs go with its entry (bounded)
        elif isinstance(event, Notice):
            log.log(LEVELS.get(event.level, logging.ERROR), "%s", event.text)
        elif isinstance(event, AccessRetired):
            for sockets, scope in [e for e in self.accesses if e[0].access == event.access]:
                scope.cancel()
                self.accesses.remove((sockets, scope))
        elif isinstance(event, DeregistrationDone):
            self.deregistered.set()
        elif isinstance(event, Ipv4HomeAddressChanged):  # RFC 5555
            self.nursery.start_soon(self.own.apply_ipv4, self.config.tun_name, event.address)

    # -- shutdown and inspection -----------------------------------------------------------
    async def shutdown(self) -> None:
        """RFC 6275 §11.5.4-style goodbye: deregister (lifetime 0), wait briefly for the BA."""
        if self.node is None:
            return
        waiting = self.node.deregister(self.pump.stamp())
        self.pump.flush()
        if waiting and await pump.wait_for(self.deregistered, 2.0):
            log.info("deregistered from %s", self.config.home_agent)

    def answer(self, command: str) -> Any:
        return mn_answer.answer(self, command)


async def run_mobile_node(config: MnConfig) -> None:
    await pump.run_daemon(MobileNodeDaemon(config), "mobile node")
