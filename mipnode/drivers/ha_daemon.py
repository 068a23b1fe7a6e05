"""The home agent daemon: sockets, tasks and the data plane around the HomeAgentNode core.

Packet flow (DESIGN §2, §6):
- CN -> HoA: the kernel routes each bound HoA/128 into our TUN; we read the packet and send it
  to the binding's via, as IPv6-in-IPv6 (raw socket 41) or in UDP from the port it registered
  over.
- MN -> CN: a tunnelled packet is written into the TUN (the kernel forwards it) only when its
  inner source is a home address bound on exactly the via it arrived on (ingress filter);
  anything else goes to the core, which answers a home address of ours with a rate-limited
  Binding Refresh Request (it may have lost its state, or a NAT moved the mobile node).
- Signalling and checks to the HA itself (Mobility Headers, STUN on our UDP ports, bare or in
  the tunnel) go to the core (the HA is ICE-lite, DESIGN §4).
- Protection (DESIGN §3, drivers/esp_plane.py): each binding's registration keyed a pair of ESP
  SAs. Data for a home address is sealed with its SA and leaves as ESP-in-UDP (T-udp) or as
  IPv6 next header 50 (T-native, raw socket 50); ESP that arrives is opened by SPI, and its inner
  source must be the home address whose SA opened it, bound on that via. With protection on, the
  only clear tunnelled packets taken are those to the HA itself (BUs, checks); clear data is
  dropped (``clear_data_refused``). ESP under an SPI we hold no SA for (we restarted) is
  reported to the core, which asks that mobile node to register again.
- Persistence (``state_dir``): the binding cache is restored before the daemon reports ready
  (expired entries dropped, routes reinstalled, a BRR to every restored MN) and written again,
  atomically and off the trio thread, whenever the core's state changes (drivers/persist.py).
"""

from __future__ import annotations

import logging
import secrets
import socket
from functools import partial
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import trio

from mipnode.config import HaConfig
from mipnode.core.ha import HaCoreConfig, SecurityAssociation
from mipnode.core.home_agent import (
    HaForwardingChanged,
    HomeAgentNode,
    SendFromPort,
    SendNative,
    SendOnLink,
    SendSolicitation,
    SendVia,
    binding_views,
    for_the_node_core,
    path_views,
)
from mipnode.core.ipv4_networks import split
from mipnode.core.token_bucket import TokenBucket
from mipnode.core.types import Via
from mipnode.core.views import to_json
from mipnode.drivers import netlink, persist, pump, rawio, sdnotify
from mipnode.drivers.batch_tx import BatchSender
from mipnode.drivers.check_lane import open_lane
from mipnode.drivers.control import serve_control
from mipnode.drivers.esp_plane import IPPROTO_ESP, EspSas
from mipnode.drivers.ha_ipv4 import Ipv4Homes
from mipnode.drivers.ha_native import NativeSignalling
from mipnode.drivers.home_link import HomeLink
from mipnode.drivers.io import (
    Counters,
    kernel_drops,
    open_raw,
    open_udp,
    send_quietly,
)
from mipnode.drivers.logs import RateLimitedLog
from mipnode.drivers.metrics import serve_metrics
from mipnode.drivers.prefix_table import PrefixTable
from mipnode.drivers.routes import HostRoutes
from mipnode.drivers.startup import ClusterUnavailable
from mipnode.drivers.tun import Tun, open_daemon_tun
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_MH
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted
from tunnels.esp import MIN_PACKET_LENGTH, spi_of

log = logging.getLogger("mipnode.ha")
VIA_CACHE_MAX = 4096
# BRA in accepting BAs (issue 3): refresh after 3/4 of the granted lifetime, a little before the
# MN core's own 80 %, and well before the HA's BRR round (min(10 %, 30 s) before the expiry).
REFRESH_ADVICE_FRACTION = 0.75
# Clear Mobility Headers to the HA from outside any binding's path, verified per second (and at
# once): every one costs a parse and an HMAC on the thread that forwards. Genuine ones are rare
# (a first registration, a move: one BU, retransmitted after 1, 2, 4 s).
UNBOUND_MH_PER_S = 500.0
UNBOUND_MH_BURST = 16.0


class HomeAgentDaemon:
    tun: Tun  # opened by run()

    def __init__(self, config: HaConfig) -> None:
        self.config = config
        self.node = HomeAgentNode(
            HaCoreConfig(
                address=config.address,
                home_prefix=config.home_prefix,
                security_associations=tuple(
                    SecurityAssociation(
                        m.spi,
                        m.key,
                        m.home_address,
                        m.networks,  # a router's IPv4 ones IPv4-mapped (core/ipv4_networks)
                        m.ipv4_home_address,
                    )
                    for m in config.mobile_nodes
                ),
                max_lifetime_s=config.max_lifetime_s,
                # RFC 6275 §10.3.1: no Binding Refresh Advice from a cache that survives a
                # restart (state_dir) or a node (a cluster): the advice exists for volatile ones.
                refresh_advice_fraction=None
                if config.state_dir is not None or config.cluster is not None
                else REFRESH_ADVICE_FRACTION,
                refresh_requests=True,
                require_protection=config.protection == "esp",
                ipv4_home_prefix=config.ipv4_home_prefix,
                home_link=config.home_link is not None,
            ),
            wall_offset=pump.wall_offset(),
            random_bytes=secrets.token_bytes,
        )
        self.protected = config.protection == "esp"
        self.esp = EspSas()
        self.ha_bytes = config.address.packed
        self.drops, self.counters = Counters(), Counters()
        self.tx = BatchSender(self.drops)  # T-udp data from the TUN: a batch per sendmsg
        self.ratelog = RateLimitedLog()
        # The forwarding table: inner HoA bytes -> the via its packets leave by / must arrive on.
        self.routes: dict[bytes, Via] = {}
        # Mobile routers' prefixes -> their home address (RFC 3963): looked up on a miss only.
        self.prefixes = PrefixTable()
        self.prefixes4 = PrefixTable()  # and their IPv4 networks, IPv4-mapped (ipv4_networks)
        self.ipv4 = Ipv4Homes()  # IPv4 home addresses (RFC 5555) -> their mobile node
        self.raw4: socket.socket | None = None  # IPv4-in-IPv6 (T-native without protection)
        self.unbound_mh = TokenBucket(UNBOUND_MH_PER_S, UNBOUND_MH_BURST)
        self._vias: dict[tuple[str, str, int, int], Via] = {}
        self.udp: dict[tuple[int, int], socket.socket] = {}  # (family, port) -> socket
        self.lanes: dict[socket.socket, socket.socket] = {}  # a UDP socket -> its check lane
        self.host_routes = HostRoutes(config.tun_name, self.drops)
        self.pump = pump.Pump(
            self.node, self._send, self._on_event, self._after_flush, (self.counters,)
        )
        self.started_at = self.pump.now
        self.writer: persist.StateWriter | None = None
        self.saved_version = self.node.core.state_version
        self.restored = 0
        self.cluster: Any = None  # drivers/cluster_node.ClusterNode with [ha.cluster]
        self._moved: set[IPv6Address] = set()  # bindings created, moved or removed this batch
        if config.cluster is not None:
            esp = self.esp if self.protected else None  # SAs move at a clean stop
            self.cluster = _cluster_node(config, self.node.core, self.pump.flush, esp)
        self.home_link: HomeLink | None = None  # drivers/home_link.py, with [ha] home_link
        if config.home_link is not None:
            self.home_link = HomeLink(
                config.home_link,
                config.address,
                config.home_prefix,
                self.node,
                self.drops,
                self.counters,
            )

    # -- setup -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        netlink.enable_ipv6_forwarding()
        self.tun = open_daemon_tun(cfg.tun_name, cfg.tun_offloads, self.drops)
        await trio.to_thread.run_sync(
            netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [(str(cfg.address), 128)]
        )
        # The whole home prefix goes into the TUN: a packet for a home address without a
        # binding is dropped and counted here instead of bouncing between the HA and the
        # router that routes the prefix to it. Bound HoAs also get their own /128 route.
        # On a home link (drivers/home_link.py) the prefix is the link's: only the /128s.
        if self.home_link is None:
            await trio.to_thread.run_sync(
                lambda: netlink.replace_route(str(cfg.home_prefix), cfg.tun_name)
            )
        if cfg.ipv4_home_prefix is not None or any(
            m.ipv4_mobile_network_prefixes for m in cfg.mobile_nodes
        ):  # RFC 5555: IPv4 home addresses, routers' IPv4 networks
            netlink.enable_ipv4_forwarding()
        if cfg.ipv4_home_prefix is not None:
            await trio.to_thread.run_sync(
                lambda: netlink.replace_route(str(cfg.ipv4_home_prefix), cfg.tun_name)
            )
        self.raw41 = open_raw(socket.IPPROTO_IPV6, address=str(cfg.address))  # RFC 2473
        self.raw50 = open_raw(IPPROTO_ESP, address=str(cfg.address))  # T-native protected
        if cfg.ipv4_home_prefix is not None and not self.protected:
            # RFC 5555 §4.1: IPv4 in the IPv6 tunnel, in clear (under protection: in ESP)
            self.raw4 = open_raw(socket.IPPROTO_IPIP, address=str(cfg.address))
        # Kept open so the kernel does not answer MH with Parameter Problem (reference E10).
        self.raw_mh = open_raw(NH_MH)
        for port in cfg.udp_ports:
            self.udp[(6, port)] = open_udp(socket.AF_INET6, port, address=str(cfg.address))
            self.udp[(4, port)] = open_udp(socket.AF_INET, port, **self._ipv4_bind())
        for sock in self.udp.values():
            if (lane := open_lane(sock)) is not None:
                self.lanes[sock] = lane  # checks from MNs: a queue a data flood cannot fill
        if cfg.state_dir is not None:
            await self._restore(cfg.state_dir)
        if self.cluster is not None:
            await self.cluster.start()  # etcd unreachable: one line, and no daemon
        # BUs sent the RFC way (care-of source, Home Address option): drivers/ha_native.py.
        table = rawio.table_name("mipnode_ha", cfg.tun_name)
        self.native = NativeSignalling(
            cfg.address.packed, table, self.node, self.drops, lambda: self._admits_mh(False)
        )
        try:
            await trio.to_thread.run_sync(self.native.open, str(cfg.address))
            if self.home_link is not None:
                await trio.to_thread.run_sync(self.home_link.open)
            await self._serve(task_status)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self.native.close)
                finally:
                    if self.home_link is not None:  # its proxy entries, proxy_ndp
                        await trio.to_thread.run_sync(self.home_link.close)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        cfg, p = self.config, self.pump
        async with trio.open_nursery() as nursery:
            if self.writer is not None:
                nursery.start_soon(self.writer.run)
            nursery.start_soon(self.host_routes.run)
            nursery.start_soon(p.run)
            nursery.start_soon(
                partial(pump.drain_tun, pump=p), self.tun, self._from_tun, self._after_tun
            )
            nursery.start_soon(_drain, self.raw41, self._from_raw41, p)
            nursery.start_soon(_drain, self.raw50, self._from_raw50, p)
            if self.raw4 is not None:
                nursery.start_soon(_drain, self.raw4, self._from_raw4, p)
            nursery.start_soon(_drain, self.raw_mh, self._from_raw_mh, p)
            assert self.native.tap is not None
            nursery.start_soon(_drain, self.native.tap, self._from_native, p)
            if self.home_link is not None and self.home_link.tap is not None:
                nursery.start_soon(self.home_link.run)
                nursery.start_soon(_drain, self.home_link.tap, self._from_home_link, p)
            for (_, port), sock in self.udp.items():
                pump.start_udp_drains(nursery, sock, self.lanes.get(sock), self._udp(port), p)
            if self.cluster is not None:
                await nursery.start(self.cluster.run)
            await nursery.start(serve_control, cfg.control_socket, self.answer)
            if cfg.metrics_listen is not None:  # opt-in (drivers/metrics.py)
                await nursery.start(serve_metrics, cfg.metrics_listen, self.answer)
            log.info(
                "home agent ready address=%s home_prefix=%s udp_ports=%s mobile_nodes=%d "
                "restored=%d protection=%s",
                cfg.address,
                cfg.home_prefix,
                ",".join(map(str, cfg.udp_ports)),
                len(cfg.mobile_nodes),
                self.restored,
                cfg.protection,
            )
            if not self.protected:
                log.warning(
                    "protection = none: tunnelled data is neither encrypted nor authenticated"
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
            self.restored = self.node.core.restore(self.pump.stamp(), state)
        except Exception as exc:  # whatever is wrong with the file, the HA starts (DESIGN §5)
            kept = await trio.to_thread.run_sync(persist.set_aside, path)
            log.error("binding cache %s unusable (%s); starting empty, kept as %s", path, exc, kept)
            return
        log.info(
            "binding cache restored from %s: bindings=%d %s",
            path,
            self.restored,
            {k: v for k, v in self.node.statistics().items() if k.startswith("restore")},
        )
        self.pump.flush()  # reinstall routes, send the BRRs, rewrite without expired entries

    # -- the data plane --------------------------------------------------------------------
    def _from_tun(self, pkt: bytes) -> None:
        """Kernel-routed packet toward a HoA (or into a mobile router's prefix): tunnel it to
        the binding's via."""
        hoa = pkt[24:40]
        via = self.routes.get(hoa) if len(pkt) >= 40 else None
        if via is None:  # only a miss asks the other tables, each for its own IP version
            if pkt[0] >> 4 == 4:  # to an IPv4 home address (RFC 5555) or IPv4 network
                hoa = self.ipv4.owner_of(pkt[16:20], self.prefixes4)
            elif self.prefixes and len(pkt) >= 40:  # into a mobile router's network
                hoa = self.prefixes.owner_of(hoa) or b""
            via = self.routes.get(hoa) if hoa else None
        if via is None:
            self.drops("tun_no_binding")
            return
        if hoa in self.esp.outbound:
            sealed = self.esp.seal(hoa, pkt, self.drops)
            if sealed is None:
                return
            self._send_sealed(via, sealed, batched=True)
        elif self.protected:
            self.drops("esp_not_keyed")  # restored after a restart: the MN registers again
            return
        else:
            self._send_via(via, pkt, batched=True)
        self.counters.pending.append("tunnelled_to_mn")

    def _after_tun(self) -> None:
        """After a batch from the TUN: what it queued for UDP goes out; SAs that passed their
        soft limit get a BRR (rekey)."""
        self.tx.flush()
        while self.esp.rekey_due:
            self.node.request_rekey(self.pump.now, IPv6Address(self.esp.rekey_due.pop()))
        self.pump.flush()

    def _via(self, kind: str, addr: Any, local_port: int) -> Via:
        """The Via of a source, from a small cache: no per-packet allocation or validation for
        the endpoints of live bindings (DESIGN §5 data-plane rule)."""
        key = (kind, addr[0], addr[1] if kind == "T-udp" else 0, local_port)
        via = self._vias.get(key)
        if via is None:
            if len(self._vias) >= VIA_CACHE_MAX:
                self._vias.clear()  # spoofed sources must not grow it without bound
            host = addr[0].split("%", 1)[0]
            remote = (host, addr[1]) if kind == "T-udp" else (host,)
            via = self._vias[key] = Via(kind, remote, local_port if kind == "T-udp" else None)
        return via

    def _from_raw41(self, inner: bytes, addr: Any) -> None:
        if len(inner) >= 40 and inner[6] == NH_MH and inner[24:40] == self.ha_bytes:
            # A forged-BU flood costs what each packet costs before it is refused: admit it
            # before the Via lookup, which allocates for every new (spoofed) source.
            bound = self.routes.get(inner[8:24])
            on_binding = (
                bound is not None and bound.kind == "T-native" and bound.remote[0] == addr[0]
            )
            if not self._admits_mh(on_binding):
                return
            self._from_tunnel(inner, self._via("T-native", addr, 0), mh_admitted=True)
            return
        self._from_tunnel(inner, self._via("T-native", addr, 0))

    def _admits_mh(self, on_binding: bool) -> bool:
        """Signalling must not starve forwarding (issue 12): a clear Mobility Header that does
        not come on its home address's binding (a first registration, a move, or a forgery
        from anywhere) is verified only within UNBOUND_MH_PER_S; one on its binding's path,
        or sealed by its SA, always is."""
        if on_binding or self.unbound_mh.take(self.pump.now):
            return True
        self.drops("unbound_mh_rate_limited")
        return False

    def _from_raw50(self, data: bytes, addr: Any) -> None:
        self._from_esp(data, self._via("T-native", addr, 0))

    def _from_raw4(self, data: bytes, addr: Any) -> None:
        self._from_ipv4(data, self._via("T-native", addr, 0))

    def _from_ipv4(self, inner: bytes, via: Via) -> None:
        """An IPv4 packet in clear from a tunnel (ha_ipv4.py): only without protection, and
        only from an IPv4 home address on its binding's path."""
        owner = self.ipv4.owner_of(inner[12:16], self.prefixes4) if len(inner) >= 20 else b""
        if self.protected or owner in self.esp.outbound:
            self.drops("clear_data_refused")
        elif reason := self.ipv4.refusal(inner, via, self.routes, owner):
            self.drops(reason)
        else:
            self.tun.write(inner)
            self.counters.pending.append("forwarded_ipv4_from_mn")

    def _udp(self, port: int) -> Any:
        def from_udp(data: bytes, addr: Any) -> None:
            if data[:1] and data[0] >> 4 == 6:
                self._from_tunnel(data, self._via("T-udp", addr, port))
                return
            if data[:1] and data[0] >> 4 == 4:  # an IPv4 home address's, in clear (RFC 5555)
                self._from_ipv4(data, self._via("T-udp", addr, port))
                return
            if data[:1] and data[0] & 0x80:  # ESP: our SPIs have the top bit set (DESIGN §3)
                self._from_esp(data, self._via("T-udp", addr, port))
                return
            try:
                kind = classify_udp_payload_untrusted(data)
            except BadPacket as exc:
                self.drops(f"udp_{exc.reason}")
                return
            if kind is UdpPayloadKind.STUN and not self._standby("stun"):
                self.node.receive_udp(self.pump.now, data, port, (addr[0].split("%")[0], addr[1]))

        return from_udp

    def _from_native(self, pkt: bytes, addr: Any) -> None:
        if self._standby("native_mh"):  # the tap's filter passes only BUs' kind of packet
            return
        self.native.receive(self.pump.now, pkt, addr)

    def _from_home_link(self, pkt: bytes, addr: Any) -> None:
        assert self.home_link is not None
        if len(pkt) > 6 and pkt[6] == NH_MH and not self._admits_mh(False):  # an HMAC each
            return
        self.home_link.receive(self.pump.now, pkt, addr)

    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        # Native (untunnelled) MH: mipnode MNs signal inside the tunnel; count and drop. On a
        # home link, a mobile node back home signals from its home address: the link's packet
        # socket took that one (drivers/home_link.py).
        if self.home_link is not None and _in(addr[0], self.config.home_prefix):
            return
        self.drops("native_mh_unsupported")

    def _from_esp(self, data: bytes, via: Via) -> None:
        entry = self.esp.inbound_sa(data, self.drops)
        if entry is None:
            if len(data) >= MIN_PACKET_LENGTH and not self._standby("esp"):  # we restarted?
                self.node.unknown_spi(self.pump.now, spi_of(data), via, len(data))
            return
        opened = self.esp.open_with(entry, data, self.pump.now, self.drops)
        if opened is None:
            return
        inner, owner = opened
        if inner[0] >> 4 == 4:  # from an IPv4 home address (RFC 5555): its owner's only,
            source = self.ipv4.owner_of(inner[12:16], self.prefixes4)
            if reason := self.ipv4.refusal(inner, via, self.routes, source, owner):
                self.drops(reason)
            else:
                self.tun.write(inner, True)
                self.counters.pending.append("forwarded_ipv4_from_mn")
            return
        if inner[24:40] == self.ha_bytes and for_the_node_core(inner):
            self.node.receive_tunnelled(self.pump.now, inner, via, IPv6Address(owner))
            return
        if inner[8:24] != owner and (
            not self.prefixes or self.prefixes.owner_of(inner[8:24]) != owner
        ):  # an SA speaks for its own home address (and a router's for its prefixes) only
            self.drops("esp_inner_source_not_owner")
            return
        self._from_tunnel(inner, via, sealed=True)

    def _from_tunnel(
        self, inner: bytes, via: Via, sealed: bool = False, mh_admitted: bool = False
    ) -> None:
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self.drops("tunnel_not_ipv6")
            return
        if not sealed and inner[24:40] == self.ha_bytes and for_the_node_core(inner):
            if self._standby("signalling"):
                return
            if (
                inner[6] == NH_MH
                and not mh_admitted
                and not self._admits_mh(self.routes.get(inner[8:24]) == via)
            ):
                return
            self.node.receive_tunnelled(self.pump.now, inner, via)
            return
        if not sealed and (self.protected or inner[8:24] in self.esp.outbound):
            self.drops("clear_data_refused")
            return
        # Ingress filter (DESIGN §6): inner source must be a bound HoA arriving on its binding,
        # or inside the prefixes of a mobile router arriving on the router's (RFC 3963 §6).
        bound = self.routes.get(inner[8:24])
        if bound is None and self.prefixes:
            router = self.prefixes.owner_of(inner[8:24])
            bound = None if router is None else self.routes.get(router)
        if bound != via:
            reason = "ingress_unbound_source" if bound is None else "ingress_wrong_endpoint"
            self.drops(reason)
            self.ratelog(
                logging.WARNING,
                reason,
                "dropped tunnelled packet",
                inner_src=IPv6Address(inner[8:24]),
                outer=via.remote,
            )
            if not self._standby("data"):
                self.node.unbound_traffic(self.pump.now, inner, via)
            return
        self.tun.write(inner, sealed)
        self.counters.pending.append("forwarded_from_mn")

    def _ipv4_bind(self) -> dict[str, Any]:
        """Where the IPv4 UDP sockets listen: everywhere, or (a cluster with an IPv4 address)
        on that address, held or not, so answers leave from the address mobile nodes (and
        their NATs' mappings) know, not from this node's own."""
        cluster = self.config.cluster
        if cluster is None or cluster.ipv4_address is None:
            return {}
        return {"address": str(cluster.ipv4_address), "freebind": True}

    def _standby(self, what: str) -> bool:
        """A node of a cluster that does not hold the home-agent address answers nothing
        sent to it (it reaches a standby only by a stale neighbor entry, or on purpose): a BU
        it took would make a binding nobody replicates, a BRR would ask the MN to register
        with a node that does not serve it. Counted as ``standby_<what>``."""
        if self.cluster is None or self.cluster.serving:
            return False
        self.drops(f"standby_{what}")
        return True

    # -- what the core asks for ------------------------------------------------------------
    def _send(self, out: object) -> None:
        if isinstance(out, SendVia):
            if out.protect is None:
                self._send_via(out.via, out.packet)
            elif (sealed := self.esp.seal(out.protect.packed, out.packet, self.drops)) is not None:
                self._send_sealed(out.via, sealed)
        elif isinstance(out, SendFromPort):
            sock = self.udp.get((6 if ":" in out.remote[0] else 4, out.port))
            if sock is not None:
                send_quietly(sock, out.payload, out.remote, self.drops)
        elif isinstance(out, SendNative):
            self.native.send(out.packet)
        elif self.home_link is None:
            self.drops("tx_no_home_link")
        elif isinstance(out, SendOnLink):
            self.home_link.send_to(out.packet, out.link_address)
        elif isinstance(out, SendSolicitation):
            self.home_link.probe(out.target)

    def _send_via(self, via: Via, pkt: bytes, batched: bool = False) -> None:
        """``pkt`` to ``via``; ``batched`` (data from the TUN): over UDP, at the batch's end."""
        if via.kind == "T-native":  # IPv6-in-IPv6, or IPv4-in-IPv6 (RFC 2473)
            sock = self.raw4 if pkt[0] >> 4 == 4 else self.raw41
            if sock is None:
                self.drops("tx_no_socket")
            else:
                send_quietly(sock, pkt, (via.remote[0], 0), self.drops)
            return
        host = str(via.remote[0])
        sock = self.udp.get((6 if ":" in host else 4, via.local_port or self.config.udp_port))
        if sock is None:
            self.drops("tx_no_socket")
            return
        if batched:
            self.tx.add(sock, (host, via.remote[1]), pkt)
        else:
            send_quietly(sock, pkt, (host, via.remote[1]), self.drops)

    def _send_sealed(self, via: Via, esp: bytes, batched: bool = False) -> None:
        if via.kind == "T-native":
            send_quietly(self.raw50, esp, (via.remote[0], 0), self.drops)
        else:
            self._send_via(via, esp, batched)

    def _on_event(self, event: object) -> None:
        if not isinstance(event, HaForwardingChanged):
            return
        log.info("%s", event)  # formatted only if the line is written
        if self.home_link is not None:  # proxy ND for what the binding defends, or none
            defended = () if event.binding is None else event.binding.defended
            self.home_link.binding_changed(event.home_address, defended)
        if self.cluster is not None and (
            event.added or self.routes.get(event.home_address.packed) != event.via
        ):
            self._moved.add(event.home_address)  # its record is written at once
        prefixes = () if event.binding is None else event.binding.prefixes
        given = None if event.binding is None else event.binding.ipv4_home_address
        self.ipv4.set(event.home_address.packed, None if event.via is None else given)
        nets6, nets4 = split(prefixes)  # one table per family (core/ipv4_networks.py)
        added, removed = self.prefixes.set(event.home_address.packed, nets6)
        added4, removed4 = self.prefixes4.set(event.home_address.packed, nets4)
        for prefix in (*removed, *removed4):
            self.host_routes.remove(prefix)
        for prefix in (*added, *added4):
            self.host_routes.add(prefix)
        if event.via is None:
            self.routes.pop(event.home_address.packed, None)
            self.esp.forget(event.home_address.packed)
            self.host_routes.remove(event.home_address)
            return
        self.routes[event.home_address.packed] = event.via
        if event.keys is not None:
            self.esp.keyed(
                event.home_address.packed, event.keys, self.pump.now, switch_on_proof=True
            )
        if event.added:
            self.host_routes.add(event.home_address)

    def _after_flush(self) -> None:
        self.tun.flush()  # what the batch forwarded from mobile nodes, merged where it can be
        self._persist()
        if self.cluster is not None:
            self.cluster.changed(self._moved)
            self._moved.clear()

    def _persist(self) -> None:
        core = self.node.core
        if self.writer is not None and core.state_version != self.saved_version:
            self.saved_version = core.state_version
            self.writer.submit(core.export_state)  # made when its write comes

    async def shutdown(self) -> None:
        """Bindings outlive the daemon (state_dir, or etcd in a cluster) or expire at the MNs:
        nothing to send. A node of a cluster gives its address up and ends its lease, so
        another takes over at once."""
        if self.cluster is not None:
            await self.cluster.leave()

    # -- inspection ------------------------------------------------------------------------
    def answer(self, command: str) -> Any:
        now = self.pump.stamp()
        bindings = to_json(binding_views(self.node, now))
        if command == "bindings":
            if self.cluster is None:
                return {"role": "ha", "bindings": bindings}
            for b in bindings:
                b["owner"] = self.config.cluster.node_id  # type: ignore[union-attr]
            return {"role": "ha", "bindings": bindings, "records": self.cluster.replica_views()}
        if command == "paths":
            return to_json(path_views(self.node, now))
        if command == "status":
            return {
                "role": "ha",
                "address": str(self.config.address),
                "home_prefix": str(self.config.home_prefix),
                "udp_port": self.config.udp_port,
                "udp_ports": list(self.config.udp_ports),
                "protection": self.config.protection,
                "uptime_s": round(now - self.started_at, 1),
                "bindings": bindings,
                "counters": dict(self.counters),
                "core": self.node.statistics(),
                "drops": {**self.drops, **self.node.drops},
                "kernel_drops": kernel_drops(self._sockets(), self.config.tun_name),
                "offloads": {**self.tx.status(), "tun": self.tun.status()},
                "internal_errors": dict(pump.HANDLER_ERRORS),
                "persistence": self._persistence_status(),
                "cluster": None if self.cluster is None else self.cluster.status(),
                "home_link": None if self.home_link is None else self.home_link.status(),
            }
        return {"error": f"unknown command {command!r}"}

    def _sockets(self) -> dict[str, socket.socket]:
        named = {"raw41": self.raw41, "raw50": self.raw50, "raw_mh": self.raw_mh}
        if self.raw4 is not None:
            named["raw4"] = self.raw4
        for (family, port), sock in self.udp.items():
            named[f"udp{family}:{port}"] = sock
            if sock in self.lanes:
                named[f"udp{family}:{port}/checks"] = self.lanes[sock]
        return named

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


def _cluster_node(config: HaConfig, core: Any, flush: Any, esp: EspSas | None) -> Any:
    """The cluster driver; it needs etcd's client, the ``mipnode[cluster]`` extra."""
    try:
        from mipnode.drivers.cluster_node import ClusterNode
    except ImportError as exc:
        raise ClusterUnavailable(
            f"[ha.cluster] needs etcd's client ({exc.name} is missing): "
            "pip install 'mipnode[cluster]'"
        ) from None
    assert config.cluster is not None
    return ClusterNode(config.cluster, config.address, core, flush, esp=esp)


def _in(host: str, prefix: IPv6Network) -> bool:
    try:
        return IPv6Address(host.split("%", 1)[0]) in prefix
    except ValueError:
        return False


async def _drain(sock: socket.socket, handle: Any, p: pump.Pump, gro: bool = False) -> None:
    await pump.drain_socket(sock, handle, p.flush, pump=p, gro=gro)


async def run_home_agent(config: HaConfig) -> None:
    await pump.run_daemon(HomeAgentDaemon(config), "home agent")
