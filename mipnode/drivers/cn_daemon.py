"""The correspondent node daemon: sockets, tasks and the data plane around CorrespondentNode.

- Signalling: HoTI arrives from the home address (through the HA), CoTI from the care-of
  address, BUs from the care-of address with a Home Address option, offers of direct paths
  (Experimental MH) from the home address. An AF_PACKET tap on the access interface sees all
  of them; a raw MH socket is kept open only so the kernel does not answer MH with Parameter
  Problem, and an nft prerouting drop in our own table stops it from answering HAO packets.
- Data from a bound MN (CoA + HAO) is accepted only with a valid binding; its source becomes the
  HoA again and it is written into our TUN, so applications see the HoA. Each HoA with a
  binding or a direct pair is routed into that TUN; a packet read from it leaves with a type 2
  routing header to the CoA only when the MN itself sent D-native data on its flow lately
  (``mipnode.core.flows``: only those flows have state in a firewall in front of the MN, RFC
  4487 §5.1), else on the selected D-udp pair, else the normal way, through the MN's HA.
- D-udp under protection (the MN's offer carried a key share): both ways ESP-in-UDP under the
  pair's SAs (drivers/esp_plane.py); clear packets for a keyed pair are refused.
- Never forward on an RH2, never act on an HAO without a binding (RFC 6275 §9.3.1).
"""

from __future__ import annotations

import logging
import secrets
import socket
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import trio

from mipnode.config import CnConfig
from mipnode.core.cn import CnCoreConfig
from mipnode.core.correspondent_node import (
    CnForwardingChanged,
    CorrespondentNode,
    binding_views,
)
from mipnode.core.flows import FlowTable, flow_key_untrusted
from mipnode.core.transmit import SendNative, SendUdp
from mipnode.core.views import (
    ChangeView,
    Endpoint,
    PairView,
    PeerView,
    SelectedView,
    ms,
    posix,
    to_json,
)
from mipnode.drivers import netlink, pump, rawio, sdnotify
from mipnode.drivers.batch_tx import BatchSender
from mipnode.drivers.check_lane import open_lane
from mipnode.drivers.control import serve_control
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import (
    Counters,
    kernel_drops,
    open_raw,
    open_udp,
    raw_destination,
    send_quietly,
)
from mipnode.drivers.metrics import serve_metrics
from mipnode.drivers.routes import HostRoutes
from mipnode.drivers.tun import open_daemon_tun
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_MH
from mipnode.wire.packets import ICMPV6_ECHO_REQUEST, echo_reply_to_untrusted, is_d_native_probe
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted
from tunnels.ro import (
    add_type2_routing_header,
    can_route_optimise,
    remove_home_address_option_untrusted,
)

log = logging.getLogger("mipnode.cn")
KCN_BYTES = 20  # RFC 6275 §5.2.1: Kcn is 20 octets
MAX_KEYED_PEERS = 256  # home addresses with D-udp SAs (4 x the ICE engine's peers)


class CorrespondentDaemon:
    def __init__(self, config: CnConfig) -> None:
        self.config = config
        self.drops, self.counters = Counters(), Counters()
        self.tx = BatchSender(self.drops)
        # HoA bytes -> CoA bytes for every binding: the whole per-packet state (a dict hit).
        self.care_of: dict[bytes, bytes] = {}
        # HoA bytes -> (socket, remote, sealed) of the selected D-udp pair.
        self.direct: dict[bytes, tuple[socket.socket, tuple[str, int], bool]] = {}
        self.esp = EspSas()  # the SAs of keyed D-udp pairs, owner = the HoA
        self.udp_by_local: dict[tuple[str, int], socket.socket] = {}
        self.lanes: dict[socket.socket, socket.socket] = {}  # a UDP socket -> its check lane
        # Flows each MN sends us D-native: only these may go back by RH2.
        self.flows = FlowTable()
        # One table per daemon instance (two CNs in one namespace must not share one).
        self.nft_table = rawio.table_name("mipnode_cn", config.tun_name)
        self.host_routes = HostRoutes(config.tun_name, self.drops)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        access = await trio.to_thread.run_sync(netlink.access_info, cfg.interface, cfg.tun_name)
        if access.ifname is None:
            raise netlink.NetlinkFailure("no access interface (set cn.interface)")
        addresses = cfg.addresses or ((access.ipv6,) if access.ipv6 else ())
        if not addresses:
            raise netlink.NetlinkFailure(f"no global IPv6 address on {access.ifname}")
        self.addresses = {a.packed for a in addresses}
        self.ifname = access.ifname
        self.node = CorrespondentNode(
            CnCoreConfig(addresses=tuple(addresses), max_lifetime_s=cfg.max_lifetime_s),
            kcn=secrets.token_bytes(KCN_BYTES),
            random_bytes=secrets.token_bytes,
            wall_offset=pump.wall_offset(),
        )
        self.tun = open_daemon_tun(cfg.tun_name, cfg.tun_offloads, self.drops)
        self.pump = p = pump.Pump(
            self.node, self._send, self._on_event, self.tun.flush, (self.counters,)
        )
        self.started_at = p.now
        await trio.to_thread.run_sync(netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [])
        self.raw_mh = open_raw(NH_MH)  # kept open: no Parameter Problem for MH
        # The tap's check lane keeps the MNs' BUs and D-native probes out of a data flood's
        # queue (drivers/rawio.py).
        self.tap, self.tap_lane = rawio.open_tap_pair(self.ifname)
        # Bound to the access interface: bypasses our own HoA/128 routes into the TUN.
        self.sender = rawio.open_raw_sender(self.ifname)
        # Direct UDP also on the access interface's IPv4 address, if any: a mobile node on an
        # IPv4-only network reaches us that way (IPv6 packets inside UDP/IPv4).
        direct_addrs: list[IPv4Address | IPv6Address] = list(addresses)
        if access.ipv4 is not None:
            direct_addrs.append(access.ipv4)
        for addr in direct_addrs:
            family = socket.AF_INET6 if isinstance(addr, IPv6Address) else socket.AF_INET
            sock = open_udp(family, 0, self.ifname, address=str(addr))
            self.udp_by_local[(str(addr), sock.getsockname()[1])] = sock
            if (lane := open_lane(sock, self.ifname)) is not None:
                self.lanes[sock] = lane  # checks from MNs: a queue a data flood cannot fill
        self.node.set_sockets(p.stamp(), list(self.udp_by_local))
        await trio.to_thread.run_sync(
            lambda: rawio.install_rx_drops(
                self.nft_table,
                dstopts=True,
                routing2=False,
                iifname=self.ifname,
                daddrs=tuple(str(a) for a in addresses),
            )
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.host_routes.run)
                nursery.start_soon(p.run)
                nursery.start_soon(
                    partial(pump.drain_tun, pump=p), self.tun, self._from_tun, self._after_tun
                )
                for sock, handle in (
                    (self.tap, self._from_tap),
                    (self.tap_lane, self._from_tap),
                    (self.raw_mh, self._from_raw_mh),
                ):
                    nursery.start_soon(partial(pump.drain_socket, pump=p), sock, handle, p.flush)
                for local, sock in self.udp_by_local.items():
                    lane = self.lanes.get(sock)
                    pump.start_udp_drains(nursery, sock, lane, self._udp(local), p)
                await nursery.start(serve_control, cfg.control_socket, self.answer)
                if cfg.metrics_listen is not None:  # opt-in (drivers/metrics.py)
                    await nursery.start(serve_metrics, cfg.metrics_listen, self.answer)
                log.info(
                    "correspondent node ready addresses=%s interface=%s",
                    ",".join(str(a) for a in addresses),
                    self.ifname,
                )
                sdnotify.notify("READY=1")
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(rawio.remove_table, self.nft_table)
            for sock in (self.raw_mh, self.tap, self.tap_lane, self.sender):
                sock.close()
            for sock in (*self.udp_by_local.values(), *self.lanes.values()):
                sock.close()

    # -- receive ---------------------------------------------------------------------------
    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        self.counters("mh_seen_by_raw_socket")  # the tap already delivered it

    def _from_tap(self, pkt: bytes, addr: Any) -> None:
        if rawio.is_outgoing(addr) or len(pkt) < 40:
            return
        if pkt[24:40] not in self.addresses:
            self.drops("tap_not_for_us")
            return
        now = self.pump.now
        nh = pkt[6]
        plen = int.from_bytes(pkt[4:6], "big")
        dst = pkt[24:40]  # an IPv6Address only for the core: data never needs one
        if nh == NH_MH:
            self.node.receive_mh(now, pkt[40 : 40 + plen], IPv6Address(pkt[8:24]), IPv6Address(dst))
            return
        if nh != NH_DSTOPTS:
            self.drops("tap_unexpected_header")
            return
        try:
            coa, hoa, inner = remove_home_address_option_untrusted(pkt)
        except BadPacket as exc:
            self.drops(f"hao_{exc.reason}")
            return
        if inner[6] == NH_MH:
            self.node.receive_mh(
                now, inner[40:], IPv6Address(coa), IPv6Address(dst), home_address=IPv6Address(hoa)
            )
            return
        # Data: only with a binding for exactly this (HoA, CoA) (RFC 6275 §9.3.1); on a miss
        # the core queues the rate-limited Binding Error 1 that tells the MN to stop.
        if self.care_of.get(hoa) != coa:
            self.node.home_address_unbound(
                now, IPv6Address(coa), IPv6Address(hoa), IPv6Address(dst)
            )
            self.drops("hao_without_binding")
            return
        if is_d_native_probe(inner, ICMPV6_ECHO_REQUEST):
            # Answered here, as the kernel would, not through the TUN: there the answer would
            # queue behind what we send the MN, and a flood would silence the very path the
            # probe vouches for (core/d_native.py ends it after 2 s without an answer).
            try:
                reply = echo_reply_to_untrusted(inner)
            except BadPacket as exc:
                self.drops(f"probe_{exc.reason}")
                return
            routed = add_type2_routing_header(reply, coa)
            send_quietly(self.sender, routed, raw_destination(coa), self.drops)
            self.counters.pending.append("d_native_probes_answered")
            return
        self.tun.write(inner)
        self.counters.pending.append("d_native_from_mn")
        self._record_flow(inner)

    def _udp(self, local: tuple[str, int]) -> Any:
        def from_udp(data: bytes, addr: Any) -> None:
            if data[:1] and data[0] >> 4 == 6 and len(data) >= 40:
                # The inner source is the HoA, and only its selected pair may speak for it.
                sel = self.direct.get(data[8:24])
                if sel is None or sel[1][0] != addr[0] or sel[1][1] != addr[1]:
                    self.drops("direct_not_from_selected_pair")
                elif sel[2]:
                    self.drops("clear_direct_refused")  # its pair is keyed: ESP only
                else:
                    self._from_direct(data)
                return
            if data[:1] and data[0] & 0x80:  # ESP-in-UDP (RFC 3948): SPIs have the top bit set
                entry = self.esp.inbound_sa(data, self.drops)
                if entry is None:
                    return
                sel = self.direct.get(entry.owner)
                if sel is None or sel[1][0] != addr[0] or sel[1][1] != addr[1]:
                    self.drops("direct_not_from_selected_pair")  # before any decryption
                    return
                opened = self.esp.open_with(entry, data, self.pump.now, self.drops)
                if opened is None:
                    return
                if opened[0][8:24] != opened[1]:
                    self.drops("esp_inner_source_not_owner")  # an SA speaks for its HoA only
                    return
                self._from_direct(opened[0], sealed=True)
                return
            try:
                kind = classify_udp_payload_untrusted(data)
            except BadPacket as exc:
                self.drops(f"direct_{exc.reason}")
                return
            if kind is UdpPayloadKind.STUN:
                host = addr[0].split("%", 1)[0]
                self.node.receive_udp(self.pump.now, data, local, (host, addr[1]))

        return from_udp

    def _from_direct(self, inner: bytes, sealed: bool = False) -> None:
        if inner[24:40] not in self.addresses:
            self.drops("direct_not_for_us")
        else:
            self.tun.write(inner, sealed)
            self.counters.pending.append("d_udp_from_mn")

    def _record_flow(self, inner: bytes) -> None:
        """The MN sent D-native on this flow: a firewall in front of it now holds state that
        admits the flow's RH2 packets back (RFC 4487 §5.1, I2/I4)."""
        try:
            key = flow_key_untrusted(inner, from_mn=True)
        except BadPacket as exc:
            self.counters(f"flow_unkeyed_{exc.reason}")  # delivered, never answered by RH2
            return
        self.flows.record(self.pump.now, key)

    def _from_tun(self, pkt: bytes) -> None:
        """Our packet to a HoA: D-native for a flow the MN sends D-native, else D-udp on the
        selected pair, else the normal way through the HA (DESIGN §2 preference)."""
        if len(pkt) < 40 or pkt[0] >> 4 != 6:
            self.drops("tun_not_ipv6")
            return
        dst = pkt[24:40]
        # Only our own packets take a direct path (the binding and the ICE pair are between
        # the MN and this node's addresses); anything else to the HoA goes through its HA.
        ours = pkt[8:24] in self.addresses
        coa = self.care_of.get(dst)
        new_flow = False
        if ours and coa is not None and can_route_optimise(pkt):
            if self._flow_is_d_native(pkt):  # probes are answered in _from_tap, not here
                routed = add_type2_routing_header(pkt, coa)
                send_quietly(self.sender, routed, raw_destination(coa), self.drops)
                self.counters.pending.append("d_native_to_mn")
                return
            new_flow = True
        sel = self.direct.get(dst) if ours else None
        if sel is not None:
            out = self.esp.seal(dst, pkt, self.drops) if sel[2] else pkt
            if out is not None:
                self.tx.add(sel[0], sel[1], out)
                self.counters.pending.append("d_udp_to_mn")
        else:
            send_quietly(self.sender, pkt, raw_destination(dst), self.drops)
            self.counters.pending.append("via_ha_new_flow" if new_flow else "plain_to_hoa")

    def _after_tun(self) -> None:
        self.tx.flush()  # D-udp: a batch per sendmsg
        self.pump.flush()

    def _flow_is_d_native(self, pkt: bytes) -> bool:
        try:
            key = flow_key_untrusted(pkt, from_mn=False)
        except BadPacket as exc:
            self.counters(f"flow_unkeyed_{exc.reason}")
            return False
        return self.flows.is_live(self.pump.now, key)

    # -- what the core asks for ------------------------------------------------------------
    def _send(self, out: object) -> None:
        if isinstance(out, SendNative):
            dst = IPv6Address(out.packet[24:40])
            send_quietly(self.sender, out.packet, (str(dst), 0), self.drops)
        elif isinstance(out, SendUdp):
            sock = self.udp_by_local.get(out.local)
            if sock is None:
                self.drops("direct_no_socket")
                return
            send_quietly(sock, out.payload, out.remote, self.drops)

    def _on_event(self, event: object) -> None:
        if not isinstance(event, CnForwardingChanged):
            return
        log.info("%s", event.text)
        hoa = event.home_address.packed
        old = self.care_of.get(hoa)
        if event.care_of is None:
            self.care_of.pop(hoa, None)
            self.flows.forget(hoa)
        else:
            if old != event.care_of.packed:
                # A new CoA, maybe behind another firewall: no flow has state there yet.
                self.flows.forget(hoa)
            self.care_of[hoa] = event.care_of.packed
        if event.keys is not None:
            self.esp.keyed(hoa, event.keys, self.pump.now)
            if len(self.esp.outbound) > MAX_KEYED_PEERS:
                # Bounded: SAs of home addresses without a pair now go (they are kept while a
                # pair is merely lost, because the same keys must never be installed twice).
                for owner in [o for o in self.esp.outbound if o not in self.direct]:
                    self.esp.forget(owner)
        sock = None if event.direct is None else self.udp_by_local.get(event.direct[0])
        if event.direct is None or sock is None:
            self.direct.pop(hoa, None)
        else:
            self.direct[hoa] = (sock, event.direct[1], event.sealed)
        # Replies to a HoA with a binding or a direct pair must come back through our TUN.
        if hoa in self.care_of or hoa in self.direct:
            self.host_routes.add(event.home_address)
        else:
            self.host_routes.remove(event.home_address)

    async def shutdown(self) -> None:
        """Bindings at a CN simply expire; nothing to send."""

    # -- inspection ------------------------------------------------------------------------
    def _peer(self, hoa: IPv6Address) -> PeerView:
        """DESIGN §8 `mipnode paths --json` entry of one home address talking to us."""
        node, now = self.node, self.pump.now
        coa = self.care_of.get(hoa.packed)
        # D-native is in use for the flows the MN sends that way (others: D-udp or T).
        flows = self.flows.live_flows(now, hoa.packed) if coa is not None else 0
        remote = None if coa is None else Endpoint(str(IPv6Address(coa)))
        state = "succeeded" if flows else "bound" if coa else "off"
        pairs = [PairView("D-native", None, remote, state, None, None, None)]
        pairs += [PairView.of_ice(p) for p in node.direct.pairs(hoa)]
        sel = node.selected(hoa)
        selected = None  # through the mobile node's home agent
        if flows:
            selected = SelectedView("D-native", None, remote, None, None)
        elif sel is not None:
            since = posix(node.direct.since(hoa), node.wall_offset)
            local, far = Endpoint.of(sel.local.base), Endpoint.of(sel.remote.address)
            selected = SelectedView("D-udp", local, far, ms(sel.rtt_s), since)
        changes = [
            ChangeView(posix(c.at, node.wall_offset), c.old, c.new, c.reason)
            for c in node.direct.changes(hoa)
        ]
        return PeerView(str(hoa), "mobile-node", selected, pairs, changes)

    def answer(self, command: str) -> Any:
        now = self.pump.stamp()
        bindings = to_json(binding_views(self.node, now))
        if command == "bindings":
            return {"role": "cn", "bindings": bindings}
        if command == "paths":
            return to_json([self._peer(hoa) for hoa in self.node.home_addresses()])
        if command == "status":
            return {
                "role": "cn",
                "addresses": sorted(str(IPv6Address(a)) for a in self.addresses),
                "interface": self.ifname,
                "uptime_s": round(now - self.started_at, 1),
                "bindings": bindings,
                "direct_udp": {str(h): to_json(self._peer(h)) for h in self.node.direct.peers},
                "counters": dict(self.counters),
                "d_native_flows": self.flows.statistics(now),
                "core": self.node.statistics(),
                "drops": dict(self.drops),
                "kernel_drops": kernel_drops(
                    {"tap": self.tap, "tap_checks": self.tap_lane, "raw_mh": self.raw_mh}
                    | {f"udp:{a}:{p}": s for (a, p), s in self.udp_by_local.items()}
                    | {
                        f"udp:{a}:{p}/checks": self.lanes[s]
                        for (a, p), s in self.udp_by_local.items()
                        if s in self.lanes
                    },
                    self.config.tun_name,
                ),
                "offloads": {**self.tx.status(), "tun": self.tun.status()},
                "internal_errors": dict(pump.HANDLER_ERRORS),
            }
        return {"error": f"unknown command {command!r}"}


async def run_correspondent(config: CnConfig) -> None:
    await pump.run_daemon(CorrespondentDaemon(config), "correspondent node")
