"""The correspondent node daemon: return routability and D-native route optimisation.

- Signalling: HoTI arrives from the home address (through the HA), CoTI from the care-of
  address, BUs from the care-of address with a Home Address option. An AF_PACKET tap on the
  access interface sees all of them; a raw MH socket is kept open only so the kernel does not
  answer MH with Parameter Problem, and an nft prerouting drop in our table `inet mipnode_cn`
  stops it from answering HAO packets (reference/linux.md §4).
- Data from a bound MN (CoA + HAO) is accepted only with a valid binding; its source becomes the
  HoA again and it is written into our TUN, so applications see the HoA. Each bound HoA/128 is
  routed into that TUN; a packet read from it leaves with a type 2 routing header to the CoA
  only when the MN itself sent D-native data on its flow lately (``mipnode.core.flows``): only
  those flows have state in a firewall in front of the MN (RFC 4487 §5.1). Other flows, e.g.
  a ping or a TCP connection this node starts, go the normal way, through the MN's HA.
- Never forward on an RH2, never act on an HAO without a binding (RFC 6275 §9.3.1).
"""

from __future__ import annotations

import logging
import secrets
import signal
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import trio

from mipnode.config import CnConfig
from mipnode.core.cn import (
    CnBindingAdded,
    CnBindingRemoved,
    CnBindingUpdated,
    CnCoreConfig,
    CorrespondentCore,
)
from mipnode.core.flows import FlowTable, flow_key_untrusted
from mipnode.core.types import OutgoingMh
from mipnode.drivers import netlink, rawio, sdnotify
from mipnode.drivers.control import serve_control
from mipnode.drivers.direct import DirectUdp
from mipnode.drivers.io import (
    HANDLER_ERRORS,
    IPPROTO_MH,
    Counters,
    TimerPump,
    drain_fd,
    drain_socket,
    open_raw,
    send_quietly,
    wall,
    write_quietly,
)
from mipnode.drivers.packets import (
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    ipv6_packet,
    is_d_native_probe,
)
from mipnode.drivers.routes import HostRoutes
from mipnode.drivers.tun import open_tun
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import build_packet_with_rh2
from mipnode.wire.mh import ExperimentalMessage, MhType, encode_mh
from tunnels.ro import (
    add_type2_routing_header,
    can_route_optimise,
    remove_home_address_option_untrusted,
)

log = logging.getLogger("mipnode.cn")

NH_MH = 135
NH_DSTOPTS = 60
KCN_BYTES = 20  # RFC 6275 §5.2.1: Kcn is 20 octets


class CorrespondentDaemon:
    def __init__(self, config: CnConfig) -> None:
        self.config = config
        self.drops = Counters()
        self.counters = Counters()
        self.started_at = wall()
        # HoA bytes -> CoA bytes for every binding: the whole per-packet state (a dict hit).
        self.care_of: dict[bytes, bytes] = {}
        # Flows each MN sends us D-native (on trio's clock): only these may go back by RH2.
        self.flows = FlowTable()
        self.answer_from: dict[bytes, IPv6Address] = {}  # HoA -> our address it offered to
        # D-udp: a controlled ICE agent per home address that offers direct paths.
        self.direct = DirectUdp(
            controlling=False,
            counters=self.counters,
            drops=self.drops,
            deliver=self._deliver_direct,
            send_signalling=self._send_mice,
            on_path_change=self._direct_changed,
        )
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
        self.core = CorrespondentCore(
            CnCoreConfig(addresses=tuple(addresses), max_lifetime_s=cfg.max_lifetime_s),
            kcn=secrets.token_bytes(KCN_BYTES),
            random_bytes=secrets.token_bytes,
        )
        self.timer = TimerPump(self.core.get_timer, self._on_timer)
        self.tun = open_tun(cfg.tun_name)
        await trio.to_thread.run_sync(netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [])
        self.raw_mh = open_raw(IPPROTO_MH)  # kept open: no Parameter Problem for MH
        self.tap = rawio.open_tap(self.ifname)
        # Bound to the access interface: bypasses our own HoA/128 routes into the TUN.
        self.sender = rawio.open_raw_sender(self.ifname)
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
                nursery.start_soon(drain_fd, self.tun, self._from_tun, self._flush)
                nursery.start_soon(drain_socket, self.tap, self._from_tap, self._flush)
                nursery.start_soon(drain_socket, self.raw_mh, self._from_raw_mh, self._flush)
                nursery.start_soon(self.timer.run)
                # Direct UDP also on the access interface's IPv4 address, if any: a mobile node
                # on an IPv4-only network reaches us that way (IPv6 packets inside UDP/IPv4).
                direct_addrs: list[IPv4Address | IPv6Address] = list(addresses)
                if access.ipv4 is not None:
                    direct_addrs.append(access.ipv4)
                await nursery.start(self.direct.serve, self.ifname, direct_addrs)
                await nursery.start(serve_control, cfg.control_socket, self.answer)
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

    # -- receive ---------------------------------------------------------------------------
    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        self.counters("mh_seen_by_raw_socket")  # the tap already delivered it

    def _from_tap(self, pkt: bytes, addr: Any) -> None:
        if rawio.is_outgoing(addr) or len(pkt) < 40:
            return
        if pkt[24:40] not in self.addresses:
            self.drops("tap_not_for_us")
            return
        nh = pkt[6]
        if nh == NH_MH and len(pkt) > 42 and pkt[42] == MhType.EXPERIMENTAL:
            self._on_mice(pkt)
            return
        if nh == NH_MH:
            plen = int.from_bytes(pkt[4:6], "big")
            self.core.receive_datagram(
                wall(), pkt[40 : 40 + plen], IPv6Address(pkt[8:24]), IPv6Address(pkt[24:40])
            )
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
            self.core.receive_datagram(
                wall(),
                inner[40:],
                IPv6Address(coa),
                IPv6Address(pkt[24:40]),
                home_address=IPv6Address(hoa),
            )
            return
        # Data: only with a binding for exactly this (HoA, CoA) (RFC 6275 §9.3.1).
        # The dict mirrors the core's cache (events keep it in step, expiry included); on a
        # miss the core decides and queues the rate-limited Binding Error 1 that tells the MN
        # to stop (e.g. after this CN restarted and lost its bindings).
        if self.care_of.get(hoa) != coa:
            self.core.check_home_address(
                wall(), IPv6Address(coa), IPv6Address(hoa), local=IPv6Address(pkt[24:40])
            )
            self.drops("hao_without_binding")
            return
        if not write_quietly(self.tun, inner, self.drops):
            return
        self.counters("d_native_from_mn")
        if not is_d_native_probe(inner, ICMPV6_ECHO_REQUEST):  # probes are answered anyway
            self._record_flow(inner)

    def _record_flow(self, inner: bytes) -> None:
        """The MN sent D-native on this flow: a firewall in front of it now holds state that
        admits the flow's RH2 packets back (RFC 4487 §5.1, I2/I4)."""
        try:
            key = flow_key_untrusted(inner, from_mn=True)
        except BadPacket as exc:
            self.counters(f"flow_unkeyed_{exc.reason}")  # delivered, but never answered by RH2
            return
        self.flows.record(trio.current_time(), key)

    def _flow_is_d_native(self, pkt: bytes) -> bool:
        try:
            key = flow_key_untrusted(pkt, from_mn=False)
        except BadPacket as exc:
            self.counters(f"flow_unkeyed_{exc.reason}")
            return False
        return self.flows.is_live(trio.current_time(), key)

    def _on_mice(self, pkt: bytes) -> None:
        """An offer of direct UDP paths from a home address (Experimental MH, via its HA)."""
        self.answer_from[pkt[8:24]] = IPv6Address(pkt[24:40])  # answer from where it came
        self.direct.on_signalling_packet(pkt)

    def _send_mice(self, hoa: IPv6Address, msg: ExperimentalMessage) -> None:
        """The answer goes to the home address the plain way (through the MN's HA)."""
        src = self.answer_from.get(hoa.packed) or IPv6Address(next(iter(self.addresses)))
        pkt = ipv6_packet(src, hoa, NH_MH, encode_mh(msg, src, hoa))
        send_quietly(self.sender, pkt, (str(hoa), 0), self.drops)

    def _deliver_direct(self, inner: bytes) -> None:
        if inner[24:40] not in self.addresses:
            self.drops("direct_not_for_us")
            return
        write_quietly(self.tun, inner, self.drops)

    def _direct_changed(self, hoa: IPv6Address, up: bool) -> None:
        """Replies to a HoA with a direct UDP pair must come back through our TUN."""
        if up:
            self.host_routes.add(hoa)
        elif hoa.packed not in self.care_of:
            self.host_routes.remove(hoa)

    def _from_tun(self, pkt: bytes) -> None:
        """A packet of ours to a HoA with a direct path: D-native (RH2 to the care-of address)
        for a flow the MN sends D-native, before D-udp (DESIGN §2 preference), else the normal
        way through the HA."""
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
            # Probe answers always (the MN's probe opened their way); other packets only on a
            # flow the MN sends D-native: the rest would be unsolicited at the CoA's firewall.
            if is_d_native_probe(pkt, ICMPV6_ECHO_REPLY) or self._flow_is_d_native(pkt):
                send_quietly(
                    self.sender,
                    add_type2_routing_header(pkt, coa),
                    (str(IPv6Address(coa)), 0),
                    self.drops,
                )
                self.counters("d_native_to_mn")
                return
            new_flow = True
        if ours and self.direct.send(dst, pkt):
            self.counters("d_udp_to_mn")
        else:
            send_quietly(self.sender, pkt, (str(IPv6Address(dst)), 0), self.drops)
            self.counters("via_ha_new_flow" if new_flow else "plain_to_hoa")

    # -- send --------------------------------------------------------------------------------
    def _send_mh(self, out: OutgoingMh) -> None:
        if out.care_of is not None:
            pkt = build_packet_with_rh2(out.src, out.care_of, out.dst, NH_MH, out.data)
            target = out.care_of
        else:
            pkt = ipv6_packet(out.src, out.dst, NH_MH, out.data)
            target = out.dst
        send_quietly(self.sender, pkt, (str(target), 0), self.drops)

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        now = wall()
        for out in self.core.datagrams_to_send(now):
            self._send_mh(out)
        while (event := self.core.next_event()) is not None:
            self._on_event(event)
        self.timer.kick()

    def _on_event(self, event: object) -> None:
        if isinstance(event, CnBindingAdded | CnBindingUpdated):
            b = event.binding
            if self.care_of.get(b.home_address.packed) != b.care_of_address.packed:
                # A new CoA, maybe behind another firewall: no flow has state there yet.
                self.flows.forget(b.home_address.packed)
            self.care_of[b.home_address.packed] = b.care_of_address.packed
            log.info(
                "binding hoa=%s coa=%s lifetime=%ss seq=%d",
                b.home_address,
                b.care_of_address,
                b.lifetime_s,
                b.sequence,
            )
            if isinstance(event, CnBindingAdded):
                self.host_routes.add(b.home_address)
        elif isinstance(event, CnBindingRemoved):
            self.care_of.pop(event.home_address.packed, None)
            self.flows.forget(event.home_address.packed)
            log.info("binding removed hoa=%s reason=%s", event.home_address, event.reason)
            if event.home_address.packed not in self.direct.selected:
                self.host_routes.remove(event.home_address)

    # -- inspection --------------------------------------------------------------------------
    def _paths(self) -> list[dict[str, Any]]:
        """DESIGN §8 `mipnode paths --json`, one entry per home address talking to us."""
        peers = []
        now = trio.current_time()
        for hoa in dict.fromkeys([*self.care_of, *self.direct.peers]):
            direct = self.direct.describe(hoa) or {"selected": None, "pairs": [], "changes": []}
            coa = self.care_of.get(hoa)
            # D-native is in use for the flows the MN sends that way (others: D-udp or T).
            d_native_flows = self.flows.live_flows(now, hoa) if coa is not None else 0
            d_native = {
                "kind": "D-native",
                "local": None,
                "remote": None if coa is None else {"address": str(IPv6Address(coa)), "port": None},
                "state": "succeeded" if d_native_flows else "bound" if coa else "off",
                "rtt_ms": None,
                "checks_sent": None,
                "checks_answered": None,
            }
            if d_native_flows:
                selected: dict[str, Any] | None = {
                    "kind": "D-native",
                    "local": None,
                    "remote": d_native["remote"],
                    "rtt_ms": None,
                    "since": None,
                }
            elif direct["selected"] is not None:
                selected = direct["selected"]
            else:
                selected = {
                    "kind": "T",
                    "local": None,
                    "remote": None,
                    "rtt_ms": None,
                    "since": None,
                }  # through the MN's home agent
            peers.append(
                {
                    "peer": str(IPv6Address(hoa)),
                    "role": "mobile-node",
                    "selected": selected,
                    "pairs": [d_native, *direct["pairs"]],
                    "changes": direct["changes"],
                }
            )
        return peers

    def answer(self, command: str) -> Any:
        now = wall()
        bindings = [
            {
                "hoa": str(b.home_address),
                "coa": str(b.care_of_address),
                "path": {
                    "kind": "D-native",
                    "local": None,
                    "remote": {"address": str(b.care_of_address), "port": None},
                },
                "sequence": b.sequence,
                "lifetime_remaining_s": max(0, round(b.expires_at - now, 1)),
                "state": "registered",
                "nonce_indices": {"home": b.home_nonce_index, "care_of": b.care_of_nonce_index},
            }
            for b in self.core.bindings()
        ]
        if command == "bindings":
            return {"role": "cn", "bindings": bindings}
        if command == "paths":
            return self._paths()
        if command == "status":
            return {
                "role": "cn",
                "addresses": sorted(str(IPv6Address(a)) for a in self.addresses),
                "interface": self.ifname,
                "uptime_s": round(now - self.started_at, 1),
                "bindings": bindings,
                "direct_udp": {
                    str(IPv6Address(hoa)): self.direct.describe(hoa) for hoa in self.direct.peers
                },
                "counters": dict(self.counters),
                "d_native_flows": self.flows.statistics(trio.current_time()),
                "core": self.core.statistics(),
                "drops": dict(self.drops),
                "internal_errors": dict(HANDLER_ERRORS),
            }
        return {"error": f"unknown command {command!r}"}


async def run_correspondent(config: CnConfig) -> None:
    daemon = CorrespondentDaemon(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("correspondent node stopping")
                sdnotify.notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                break
