"""The mobile node daemon: HoA on a TUN, registration with the HA over the best T path.

Path choice (first version of DESIGN §4): a STUN Binding check is sent on every T candidate in
exactly the form its data takes (inside IPv6-in-IPv6 for T-native, in UDP for T-udp); the most
preferred candidate whose check succeeds carries the home registration and all data. The HA
tunnel is then kept warm with echo keepalives in the same encapsulation; three unanswered
keepalives or a stuck registration start a new round of checks.
"""

from __future__ import annotations

import logging
import secrets
import signal
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import trio

from ice import stun
from mipnode.config import MnConfig
from mipnode.core.flows import (
    CN_OPENED_IDLE_S,
    FlowTable,
    flow_key_untrusted,
    opened_by_cn_untrusted,
)
from mipnode.core.mn import (
    BindingLost,
    Deregistered,
    MnCoreConfig,
    MobileNodeCore,
    Registered,
    RegistrationRejected,
)
from mipnode.core.mn_diagnosis import (
    UNREACHABLE,
    AccessFacts,
    CheckFacts,
    rejection_text,
    unacknowledged_text,
    unreachable_text,
)
from mipnode.core.mn_ro import (
    RoConfig,
    RouteOptimizationCore,
    RouteOptimizationEnded,
    RouteOptimizationExpired,
    RouteOptimizationFailed,
    RouteOptimized,
)
from mipnode.core.types import OutgoingMh, Via
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
    open_udp,
    send_quietly,
    wall,
    write_quietly,
)
from mipnode.drivers.logs import RateLimitedLog
from mipnode.drivers.packets import (
    D_NATIVE_PROBE_IDENT,
    ICMPV6_ECHO_REPLY,
    NH_ICMPV6,
    NH_UDP,
    address_text,
    echo_request,
    ipv6_packet,
    udp_in_ipv6,
    via_json,
)
from mipnode.drivers.tun import open_tun
from mipnode.wire.errors import BadPacket
from mipnode.wire.exthdr import build_packet_with_hao
from mipnode.wire.mh import (
    BindingError,
    ExperimentalMessage,
    MhType,
    decode_mh_untrusted,
    encode_mh,
)
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted
from tunnels.ro import (
    add_home_address_option,
    can_route_optimise,
    remove_type2_routing_header_untrusted,
)

log = logging.getLogger("mipnode.mn")

NH_MH = 135
PREFERENCE = {"T-native": 0, "T-udp": 1}  # DESIGN §2: T-native before T-udp
CHECK_RTO_S = (0.0, 0.5, 1.5)  # RFC 8445-style ladder from 500 ms, three transmissions
CHECK_GIVE_UP_S = 2.5  # one second after the last transmission
CHECK_RETRY_S = 2.0  # pause between rounds while no candidate works: an HA that returns is found
DIAGNOSIS_LOG_REPEAT_S = 30.0  # an unchanged diagnosis is logged again at most this often
KEEPALIVE_IDENT = 0x6D69  # "mi": tells our keepalive echo replies from the user's pings
KEEPALIVE_MISSES = 3
REGISTRATION_STUCK_S = 12.0
ACCESS_POLL_S = 0.25
MOVE_OVERLAP_S = 5.0  # the old access network's sockets stay open at most this long
PROBE_IDENT = D_NATIVE_PROBE_IDENT  # D-native probe echoes, told apart from the user's pings
PROBE_TRIES = 5
PROBE_INTERVAL_S = 0.2
PROBE_NONCES_KEPT = 8
D_NATIVE_HEARTBEAT_S = 0.5
D_NATIVE_DEAD_S = 2.0  # + one heartbeat period: back on T within 3 s (DESIGN §4)
RO_MAX_PEERS = 64  # correspondents route-optimised at once
RO_GIVE_UP_S = 20.0  # no binding after this long: not a mipnode CN, or blocked
RO_IDLE_S = 300.0  # no traffic for this long: end the binding
RO_RETRY_S = 300.0  # after a rejection or an unanswered probe
RO_RETRY_FAST_S = 2.0  # after a Binding Error 1 or an expiry (the CN lost our binding)
NH_ROUTING = 43


@dataclass
class Candidate:
    """One T path to the HA and the state of its connectivity check."""

    kind: str
    family: int
    remote: tuple[str, int | None]
    state: str = "waiting"
    checks_sent: int = 0
    checks_answered: int = 0
    rtt_ms: float | None = None
    mapped: tuple[str, int] | None = None
    send_error: str | None = None  # errno name of the last check that could not be sent
    txids: dict[bytes, float] = field(default_factory=dict)

    @property
    def via(self) -> Via:
        if self.kind == "T-native":
            return Via("T-native", (self.remote[0],))
        return Via("T-udp", (self.remote[0], int(self.remote[1] or 0)))

    @property
    def facts(self) -> CheckFacts:
        return CheckFacts(
            kind=self.kind,
            family=self.family,
            address=self.remote[0],
            port=self.remote[1],
            state=self.state,
            checks_sent=self.checks_sent,
            checks_answered=self.checks_answered,
            mapped=self.mapped[0] if self.mapped else None,
            send_error=self.send_error,
        )


class MobileNodeDaemon:
    def __init__(self, config: MnConfig) -> None:
        self.config = config
        self.hoa = config.home_address
        self.hoa_bytes = config.home_address.packed
        self.ha = config.home_agent
        self.ha_bytes = config.home_agent.packed
        self.ha_text = str(config.home_agent)
        self.udp_candidates: dict[tuple[str, int | None], Candidate] = {}  # remote -> T-udp
        self.core = MobileNodeCore(
            MnCoreConfig(
                home_address=config.home_address,
                home_agent=config.home_agent,
                spi=config.spi,
                key=config.key,
                lifetime_s=config.lifetime_s,
            ),
            initial_sequence=secrets.randbelow(65536),
        )
        self.drops = Counters()
        self.counters = Counters()
        self.ratelog = RateLimitedLog()
        self.timer = TimerPump(self.core.get_timer, self._on_timer)
        self.access = netlink.AccessInfo(None, None, None)
        self.candidates: list[Candidate] = []
        self.path: Candidate | None = None
        self.coa: IPv6Address | None = None
        self.registered_at: float | None = None
        self.registration_started: float | None = None
        self.first_registration_ms: float | None = None
        self.started_at = wall()
        self.keepalive_seq = 0
        self.keepalive_outstanding: dict[int, float] = {}
        self.keepalive_rtt_ms: float | None = None
        self.reselect = trio.Event()
        self.deregistered = trio.Event()
        self.last_rejection: int | None = None
        # Why there is no working registration (mn_diagnosis), None while things are fine.
        self.diagnosis: str | None = None
        self.diagnosis_since: float | None = None  # POSIX time the current text first appeared
        self._diagnosis_logged = 0.0
        self._bad_auth_seen = 0  # BAs failing authentication before this registration attempt
        # Route optimisation (D-native) with correspondents: RR and BU in a pure core; data
        # moves to D-native only after a probe in that form came back (ro_ready).
        self.ro: RouteOptimizationCore | None = None
        if config.route_optimization:
            self.ro = RouteOptimizationCore(
                RoConfig(home_address=config.home_address),
                random_bytes=secrets.token_bytes,
                initial_sequence=secrets.randbelow(65536),
            )
            self.ro_timer = TimerPump(self.ro.get_timer, self._on_ro_timer)
        self.ro_peers: dict[bytes, float] = {}  # CN -> when we last sent it traffic
        self.ro_started_at: dict[bytes, float] = {}
        self.ro_backoff: dict[bytes, float] = {}  # CN -> no new attempt before
        self.ro_ready: dict[bytes, float] = {}  # CN -> D-native since (POSIX time)
        self.ro_heard: dict[bytes, float] = {}  # CN -> last D-native echo answered (trio time)
        self.probes: dict[bytes, dict[bytes, float]] = {}  # CN -> nonce -> sent (trio time)
        # Flows correspondents opened through the tunnel or D-udp: answered that way, never
        # D-native (mipnode.core.flows; trio time).
        self.cn_opened = FlowTable(idle_s=CN_OPENED_IDLE_S)
        self.coarse_now = wall()
        self.probe_seq = 0
        self.nat66 = False  # the access network translates IPv6 (observed source != CoA)
        self.nat44 = False
        self.path_changes: list[dict[str, Any]] = []  # T path to the HA: bounded log
        self.path_since: float | None = None
        self.ro_changes: dict[bytes, list[dict[str, Any]]] = {}  # per CN: D-native changes
        # D-udp: direct UDP pairs to correspondents, checked by an ICE agent per CN (DESIGN §4).
        self.direct: DirectUdp | None = None
        if config.route_optimization:
            self.direct = DirectUdp(
                controlling=True,
                counters=self.counters,
                drops=self.drops,
                deliver=self._deliver_direct,
                send_signalling=self._send_mice,
            )
        self._direct_scope: trio.CancelScope | None = None
        self.tap_enabled = False
        self.nft_table = rawio.table_name("mipnode_mn", config.tun_name)
        self._nursery: trio.Nursery
        self._access_scope: trio.CancelScope
        self._retire_access: trio.CancelScope | None = None
        self.moved_at: float | None = None
        self.last_handover_ms: float | None = None

    # -- setup -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        self.tun = open_tun(cfg.tun_name)
        await trio.to_thread.run_sync(
            netlink.configure_tun, cfg.tun_name, cfg.tun_mtu, [(str(self.hoa), 128)]
        )
        async with trio.open_nursery() as nursery:
            # `mipnode status` answers (with a diagnosis) while we still wait for a network.
            await nursery.start(serve_control, cfg.control_socket, self.answer)
            await self._run_on_access(task_status)
            nursery.cancel_scope.cancel()

    async def _run_on_access(self, task_status: trio.TaskStatus[None]) -> None:
        cfg = self.config
        self.access = await self._wait_for_access()
        # Everything that should keep the HoA goes into the TUN (lowest metric); our own outer
        # sockets are bound to the access interface, so they never loop back into it.
        await trio.to_thread.run_sync(lambda: netlink.replace_route("::/0", cfg.tun_name, metric=1))
        if self.ro is not None:
            # RH2 replies and CoTs come to the care-of address natively (reference/linux.md §4).
            await self._install_rx_drops()
            self.tap_enabled = True
        try:
            await self._run_tasks(task_status)
        finally:
            if self.tap_enabled:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(rawio.remove_table, self.nft_table)

    async def _run_tasks(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._access_scope = await nursery.start(self._serve_access, self.access.ifname)
            await self._serve_direct()
            if self.ro is not None:
                nursery.start_soon(self.ro_timer.run)
                nursery.start_soon(self._d_native_heartbeats)
            nursery.start_soon(drain_fd, self.tun, self._from_tun, self._flush)
            nursery.start_soon(self.timer.run)
            nursery.start_soon(self._path_manager)
            nursery.start_soon(self._keepalive_loop)
            nursery.start_soon(self._watch_access)
            log.info(
                "mobile node ready hoa=%s ha=%s access=%s coa6=%s addr4=%s",
                self.hoa,
                self.ha,
                self.access.ifname,
                self.access.ipv6,
                self.access.ipv4,
            )
            sdnotify.notify("READY=1")
            task_status.started()

    async def _install_rx_drops(self) -> None:
        """The kernel must not reject the RH2 packets our tap takes: drop them in prerouting,
        but only those for our care-of address on the access interface."""
        acc = self.access
        await trio.to_thread.run_sync(
            lambda: rawio.install_rx_drops(
                self.nft_table,
                dstopts=False,
                routing2=True,
                iifname=acc.ifname,
                daddrs=(str(acc.ipv6),) if acc.ipv6 else (),
            )
        )

    async def _serve_access(
        self, ifname: str | None, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Open the outer sockets on ``ifname``, make them current, and drain them until this
        task's cancel scope is cancelled (after a move, once the new access network works)."""
        raw41 = open_raw(socket.IPPROTO_IPV6, ifname)
        raw_mh = open_raw(IPPROTO_MH, ifname)  # kept open: no Parameter Problem for MH
        udp6 = open_udp(socket.AF_INET6, 0, ifname)
        udp4 = open_udp(socket.AF_INET, 0, ifname)
        socks = [raw41, raw_mh, udp6, udp4]
        tap = None
        if self.tap_enabled:
            tap = rawio.open_tap(ifname)
            self.raw_sender = rawio.open_raw_sender(ifname)
            socks += [tap, self.raw_sender]
        self.raw41, self.raw_mh, self.udp6, self.udp4 = raw41, raw_mh, udp6, udp4
        try:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain_socket, raw41, self._from_raw41, self._flush)
                    nursery.start_soon(drain_socket, raw_mh, self._from_raw_mh, self._flush)
                    nursery.start_soon(drain_socket, udp6, self._from_udp, self._flush)
                    nursery.start_soon(drain_socket, udp4, self._from_udp, self._flush)
                    if tap is not None:
                        nursery.start_soon(drain_socket, tap, self._from_tap, self._flush)
        finally:
            for sock in socks:
                sock.close()

    async def _watch_access(self) -> None:
        """Movement (DESIGN §4): a new care-of address, interface or IPv4 address means a new
        access network. Re-register over the best T path there first; the old sockets keep
        receiving until that registration is acknowledged (make-before-break)."""
        while True:
            await trio.sleep(ACCESS_POLL_S)
            info = await trio.to_thread.run_sync(
                netlink.access_info, self.config.interface, self.config.tun_name
            )
            usable = info.ipv6 is not None or (
                info.ipv4 is not None and self.config.home_agent_ipv4 is not None
            )
            if info == self.access or not usable:
                continue
            log.info(
                "movement: access %s coa6=%s addr4=%s -> %s coa6=%s addr4=%s",
                self.access.ifname,
                self.access.ipv6,
                self.access.ipv4,
                info.ifname,
                info.ipv6,
                info.ipv4,
            )
            self.counters("movements")
            self.moved_at = wall()
            old_scope = self._access_scope
            self.access = info
            if self.tap_enabled:
                await self._install_rx_drops()
            self._access_scope = await self._nursery.start(self._serve_access, info.ifname)
            await self._serve_direct()
            self._retire_access = old_scope
            self._nursery.start_soon(self._retire_after, old_scope, MOVE_OVERLAP_S)
            # Bindings at correspondents point at the old care-of address: back to the tunnel
            # until return routability and a probe succeed from the new one.
            self.ro_ready.clear()
            self.ro_heard.clear()
            self.probes.clear()
            if self.ro is not None and info.ipv6 is not None:
                self.ro.move(wall(), info.ipv6)
            self.reselect.set()

    async def _serve_direct(self) -> None:
        """(Re)open the direct-path sockets on the current access network. After a move every
        correspondent gets an ICE restart: new credentials, new candidates, a new offer."""
        if self.direct is None:
            return
        peers = [IPv6Address(cn) for cn in self.direct.peers]
        if self._direct_scope is not None:
            self._direct_scope.cancel()
            for cn in peers:
                self.direct.stop(cn)
        addrs: list[IPv4Address | IPv6Address] = [
            a for a in (self.access.ipv6, self.access.ipv4) if a is not None
        ]
        servers = {6: (str(self.ha), self.config.home_agent_udp_port)}
        if self.config.home_agent_ipv4 is not None:
            servers[4] = (str(self.config.home_agent_ipv4), self.config.home_agent_udp_port)
        self._direct_scope = await self._nursery.start(
            self.direct.serve, self.access.ifname, addrs, servers
        )
        for cn in peers:
            self.direct.start(cn)

    def _deliver_direct(self, inner: bytes) -> None:
        if inner[24:40] != self.hoa_bytes:
            self.drops("direct_not_for_hoa")
            return
        self._note_cn_opened(inner)
        write_quietly(self.tun, inner, self.drops)

    def _note_cn_opened(self, inner: bytes) -> None:
        """A TCP SYN or echo request from a correspondent, not by RH2: answer its flow the same
        way. From the care-of address the answer would be the first packet of the flow our
        firewall sees, and invalid to it (RFC 4487 §5.1; mipnode.core.flows)."""
        if self.ro is None:
            return
        try:
            key = opened_by_cn_untrusted(inner)
        except BadPacket:
            return  # delivered all the same: the kernel judges it
        if key is not None:
            self.cn_opened.record(trio.current_time(), key)

    def _cn_opened(self, pkt: bytes) -> bool:
        """True (and the flow refreshed) for our packet on a flow a correspondent opened."""
        if not self.cn_opened:
            return False
        try:
            key = flow_key_untrusted(pkt, from_mn=True)
        except BadPacket:
            return False
        now = trio.current_time()
        if not self.cn_opened.is_live(now, key):
            return False
        self.cn_opened.record(now, key)
        self.counters("cn_opened_flow_not_d_native")
        return True

    def _send_mice(self, cn: IPv6Address, msg: ExperimentalMessage) -> None:
        """Offers travel HoA -> CN through the HA tunnel, like a HoTI (DESIGN §3)."""
        self._send_on_path(ipv6_packet(self.hoa, cn, NH_MH, encode_mh(msg, self.hoa, cn)))

    async def _retire_after(self, scope: trio.CancelScope, delay: float) -> None:
        with trio.move_on_after(delay):
            while self._retire_access is scope:
                await trio.sleep(0.05)
        scope.cancel()

    async def _wait_for_access(self) -> netlink.AccessInfo:
        while True:
            info = await trio.to_thread.run_sync(
                netlink.access_info, self.config.interface, self.config.tun_name
            )
            if info.ipv6 is not None or (info.ipv4 is not None and self.config.home_agent_ipv4):
                return info
            # Logged once per new text: "no access network", or an IPv4 one we cannot use.
            self._set_diagnosis(unreachable_text([], _access_facts(info, self.config.interface)))
            await trio.sleep(ACCESS_POLL_S)

    # -- path selection ----------------------------------------------------------------
    def _make_candidates(self) -> list[Candidate]:
        cfg, acc = self.config, self.access
        out: list[Candidate] = []
        if acc.ipv6 is not None and "T-native" in cfg.paths:
            out.append(Candidate("T-native", 6, (str(self.ha), None)))
        if acc.ipv6 is not None and "T-udp" in cfg.paths:
            out.append(Candidate("T-udp", 6, (str(self.ha), cfg.home_agent_udp_port)))
        if acc.ipv4 is not None and cfg.home_agent_ipv4 and "T-udp" in cfg.paths:
            out.append(Candidate("T-udp", 4, (str(cfg.home_agent_ipv4), cfg.home_agent_udp_port)))
        return out

    async def _path_manager(self) -> None:
        while True:
            chosen = await self._run_checks()
            if chosen is None:
                # Say why (RFC 4487 §5.3), then keep trying: an HA that comes back is found.
                self._set_diagnosis(self._unreachable_diagnosis())
                await trio.sleep(CHECK_RETRY_S)
                continue
            # A fresh event first: _select may ask for another round at once.
            self.reselect = trio.Event()
            self._select(chosen)
            await self.reselect.wait()

    def _unreachable_diagnosis(self) -> str:
        return unreachable_text(
            [c.facts for c in self.candidates], _access_facts(self.access, self.config.interface)
        )

    def _set_diagnosis(self, text: str | None, level: int = logging.WARNING) -> None:
        """Record why registration does not work (None: it does). A new text is logged at
        once; the same text again at most every DIAGNOSIS_LOG_REPEAT_S."""
        now = wall()
        if text == self.diagnosis:
            if text is not None and now - self._diagnosis_logged >= DIAGNOSIS_LOG_REPEAT_S:
                self._diagnosis_logged = now
                since = now - (self.diagnosis_since or now)
                log.log(level, "%s (for %.0f s)", text, since)
            return
        if text is None:
            log.info("diagnosis cleared (was: %s)", self.diagnosis)
            self.diagnosis_since = None
        else:
            log.log(level, "%s", text)
            self.diagnosis_since = now
        self.diagnosis = text
        self._diagnosis_logged = now

    async def _run_checks(self) -> Candidate | None:
        self.candidates = self._make_candidates()
        self.udp_candidates = {c.remote: c for c in self.candidates if c.kind == "T-udp"}
        self.nat66 = self.nat44 = False
        if not self.candidates:
            return None
        start = trio.current_time()
        for c in self.candidates:
            c.state = "in-progress"
        # Pace the transmissions (Ta >= 20 ms, DESIGN §4) and follow the RTO ladder.
        for step, at in enumerate(CHECK_RTO_S):
            await trio.sleep_until(start + at)
            for c in self.candidates:
                if c.state == "in-progress":
                    self._send_check(c)
                    await trio.sleep(0.02)
            decided = self._decide()
            if decided is not None or step == len(CHECK_RTO_S) - 1:
                break
        deadline = start + CHECK_GIVE_UP_S
        while (chosen := self._decide()) is None and trio.current_time() < deadline:
            await trio.sleep(0.01)
        for c in self.candidates:
            if c.state == "in-progress":
                c.state = "failed"
        return chosen if chosen is not None else self._decide()

    def _decide(self) -> Candidate | None:
        """The most preferred candidate whose check succeeded, once every better one failed."""
        for c in sorted(self.candidates, key=lambda c: (PREFERENCE[c.kind], -c.family)):
            if c.state == "succeeded":
                return c
            if c.state in ("in-progress", "waiting"):
                return None
        return None

    def _send_check(self, c: Candidate) -> None:
        txid = secrets.token_bytes(12)
        c.txids[txid] = trio.current_time()
        c.checks_sent += 1
        c.send_error = None

        def send_failed(reason: str) -> None:
            self.drops(reason)
            c.send_error = reason.removeprefix("tx_").upper()  # tx_enetunreach -> ENETUNREACH

        request = stun.binding_request(txid)
        if c.kind == "T-native":
            if self.access.ipv6 is None:  # moved to an IPv4-only network meanwhile
                c.state = "failed"
                return
            sport = self.udp6.getsockname()[1]
            pkt = udp_in_ipv6(
                self.access.ipv6, self.ha, sport, self.config.home_agent_udp_port, request
            )
            send_quietly(self.raw41, pkt, (str(self.ha), 0), send_failed)
        else:
            sock = self.udp6 if c.family == 6 else self.udp4
            send_quietly(sock, request, c.remote, send_failed)

    def _on_check_response(self, c: Candidate, data: bytes) -> None:
        try:
            msg = stun.parse_stun_untrusted(data)
        except BadPacket as exc:
            self.drops(f"stun_{exc.reason}")
            return
        sent = c.txids.pop(msg.transaction_id, None)
        if sent is None or msg.message_class != stun.Class.RESPONSE:
            self.drops("stun_unexpected")
            return
        c.checks_answered += 1
        c.rtt_ms = round((trio.current_time() - sent) * 1000, 2)
        mapped = msg.attributes.get("XOR-MAPPED-ADDRESS")
        c.mapped = (str(mapped[0]), int(mapped[1])) if mapped else None
        local = self._local(c)
        behind_nat = False
        if c.mapped is not None:
            # T-native checks carry our UDP port only inside the tunnel: compare addresses.
            behind_nat = ip_address(c.mapped[0]) != ip_address(local[0]) or (
                c.kind != "T-native" and c.mapped[1] != local[1]
            )
        if behind_nat:
            # The HA saw another source than ours: a NAT (NAT44, or NAT66 where the observed
            # source differs from the claimed CoA). DESIGN §4: avoid native paths through it.
            if c.family == 6:
                self.nat66 = True
            else:
                self.nat44 = True
        if c.state == "in-progress":
            c.state = "nat" if behind_nat and c.kind == "T-native" else "succeeded"

    def _select(self, c: Candidate) -> None:
        previous = self.path
        # Alt-CoA carries an IPv6 address; an IPv4 care-of address travels IPv4-mapped.
        v6, v4 = self.access.ipv6, self.access.ipv4
        coa = v6 if c.family == 6 else (IPv6Address(f"::ffff:{v4}") if v4 else None)
        if coa is None:  # the access network changed under the check: check again
            self.reselect.set()
            return
        self.path = c
        self.coa = coa
        self.path_changes.append(
            {
                "at": round(wall(), 3),
                "from": previous.kind if previous else None,
                "to": c.kind,
                "reason": f"check answered over IPv{c.family} in {c.rtt_ms} ms",
            }
        )
        del self.path_changes[:-20]
        self.path_since = wall()
        if self.diagnosis is not None and self.diagnosis.startswith(UNREACHABLE):
            # The HA answers again. A rejection or an unanswered BU stays until registered.
            self._set_diagnosis(None)
        log.info(
            "path selected kind=%s family=IPv%d remote=%s rtt_ms=%s previous=%s",
            c.kind,
            c.family,
            c.remote,
            c.rtt_ms,
            previous.kind if previous else None,
        )
        now = wall()
        self.registration_started = now
        self._bad_auth_seen = self.core.statistics().get("drop_bad_auth", 0)
        self.core.register(now, self.coa)
        self._flush()

    # -- receive paths -----------------------------------------------------------------
    def _from_tun(self, pkt: bytes) -> None:
        if len(pkt) < 40 or pkt[0] >> 4 != 6:
            self.drops("tun_not_ipv6")
            return
        if pkt[8:24] != self.hoa_bytes:
            self.drops("tun_source_not_hoa")  # e.g. the kernel's link-local MLD/RS on the TUN
            return
        if self.path is None:
            self.drops("tun_no_path")
            return
        dst = pkt[24:40]
        # Best proven path first (DESIGN §2): D-native, then D-udp, then the T path.
        if (
            dst in self.ro_ready
            and can_route_optimise(pkt)
            and self.access.ipv6 is not None
            and not self._cn_opened(pkt)
        ):
            self.ro_peers[dst] = self.coarse_now
            send_quietly(
                self.raw_sender,
                add_home_address_option(pkt, self.access.ipv6.packed),
                (str(IPv6Address(dst)), 0),
                self.drops,
            )
            self.counters("d_native_to_cn")
            return
        if self.direct is not None and self.direct.send(dst, pkt):
            self.counters("d_udp_to_cn")
            if dst in self.ro_peers:
                self.ro_peers[dst] = self.coarse_now
            elif self.tap_enabled:
                self._maybe_start_ro(dst)  # D-native may be back: it is the better path
            return
        if dst in self.ro_peers:
            self.ro_peers[dst] = self.coarse_now
        elif self.tap_enabled:
            self._maybe_start_ro(dst)
        self._send_on_path(pkt)
        self.counters("tunnelled_to_ha")

    def _from_raw41(self, inner: bytes, addr: Any) -> None:
        if addr[0] != self.ha_text and addr[0].split("%", 1)[0] != self.ha_text:
            self.drops("raw41_not_from_ha")
            return
        self._from_tunnel(inner, "T-native")

    def _from_udp(self, data: bytes, addr: Any) -> None:
        cand = self.udp_candidates.get((addr[0].split("%", 1)[0], addr[1]))
        if cand is None:
            self.drops("udp_not_from_ha")
            return
        try:
            kind = classify_udp_payload_untrusted(data)
        except BadPacket as exc:
            self.drops(f"udp_{exc.reason}")
            return
        if kind is UdpPayloadKind.IPV6:
            self._from_tunnel(data, "T-udp")
        else:
            self._on_check_response(cand, data)

    def _from_raw_mh(self, data: bytes, addr: Any) -> None:
        # Kept open only so the kernel does not answer MH with Parameter Problem; CoTs and
        # Binding Errors reach us through the tap, everything else comes in the tunnel.
        self.counters("mh_seen_by_raw_socket")

    def _from_tunnel(self, inner: bytes, kind: str) -> None:
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self.drops("tunnel_not_ipv6")
            return
        dst = inner[24:40]
        nh = inner[6]
        if dst == self.hoa_bytes:
            if (
                nh == NH_MH
                and len(inner) > 42
                and inner[42] == MhType.EXPERIMENTAL
                and self.direct is not None
            ):
                self.direct.on_signalling_packet(inner)  # a CN's answer, or another MN's offer
                return
            if nh == NH_MH and inner[8:24] != self.ha_bytes and self.ro is not None:
                plen = int.from_bytes(inner[4:6], "big")
                self.ro.receive_datagram(
                    wall(), inner[40 : 40 + plen], IPv6Address(inner[8:24]), self.hoa
                )
                return
            if inner[8:24] == self.ha_bytes:
                if nh == NH_MH:
                    plen = int.from_bytes(inner[4:6], "big")
                    self.core.receive_datagram(wall(), inner[40 : 40 + plen], self.ha, self.hoa)
                    return
                if nh == NH_ICMPV6 and self._maybe_keepalive_reply(inner):
                    return
            self._note_cn_opened(inner)
            if not write_quietly(self.tun, inner, self.drops):
                return
            self.counters("delivered_from_ha")
            return
        if (
            self.access.ipv6 is not None
            and dst == self.access.ipv6.packed
            and nh == NH_UDP
            and len(inner) >= 48
        ):
            cand = next((c for c in self.candidates if c.kind == kind == "T-native"), None)
            if cand is not None and stun.looks_like_stun(inner[48:]):
                self._on_check_response(cand, inner[48:])
                return
        self.drops("tunnel_wrong_destination")

    def _maybe_keepalive_reply(self, inner: bytes) -> bool:
        if len(inner) < 48 or inner[40] != ICMPV6_ECHO_REPLY:
            return False
        if int.from_bytes(inner[44:46], "big") != KEEPALIVE_IDENT:
            return False
        sent = self.keepalive_outstanding.pop(int.from_bytes(inner[46:48], "big"), None)
        if sent is not None:
            self.keepalive_rtt_ms = round((trio.current_time() - sent) * 1000, 2)
            self.keepalive_outstanding.clear()  # any answer proves the path is alive
        return True

    # -- send paths --------------------------------------------------------------------
    def _send_on_path(self, pkt: bytes) -> None:
        c = self.path
        if c is None:
            self.drops("no_path")
            return
        if c.kind == "T-native":
            send_quietly(self.raw41, pkt, (str(self.ha), 0), self.drops)
        else:
            send_quietly(self.udp6 if c.family == 6 else self.udp4, pkt, c.remote, self.drops)

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        now = self.coarse_now = wall()
        for out in self.core.datagrams_to_send(now):
            self._send_on_path(ipv6_packet(out.src, out.dst, NH_MH, out.data))
        while (event := self.core.next_event()) is not None:
            self._on_event(event, now)
        if self.ro is not None:
            for out in self.ro.datagrams_to_send(now):
                self._send_ro_mh(out)
            while (ro_event := self.ro.next_event()) is not None:
                self._on_ro_event(ro_event)
            self.ro_timer.kick()
        if (
            self.core.state == "registering"
            and self.registration_started is not None
            and now - self.registration_started > REGISTRATION_STUCK_S
        ):
            log.warning(
                "registration stuck on %s; checking paths again",
                self.path.kind if self.path else None,
            )
            bad_auth = self.core.statistics().get("drop_bad_auth", 0)
            if self.path is not None:
                self._set_diagnosis(
                    unacknowledged_text(
                        self.path.facts, REGISTRATION_STUCK_S, bad_auth - self._bad_auth_seen
                    )
                )
            self._bad_auth_seen = bad_auth
            self.registration_started = now
            self.reselect.set()
        self.timer.kick()

    def _on_event(self, event: object, now: float) -> None:
        if isinstance(event, Registered):
            if self.moved_at is not None and event.care_of == self.coa:
                self.last_handover_ms = round((now - self.moved_at) * 1000, 1)
                log.info("handover done in %s ms (care-of %s)", self.last_handover_ms, self.coa)
                self.moved_at = None
                self._retire_access = None  # the old sockets may go now
                if self.direct is not None and self.direct.resend_offers():
                    self.counters("offers_resent_after_handover")
            if self.first_registration_ms is None:
                self.first_registration_ms = round((now - self.started_at) * 1000, 1)
            self.registered_at = now
            self.last_rejection = None
            self._set_diagnosis(None)
            log.info(
                "registered hoa=%s coa=%s path=%s lifetime=%ss seq=%d",
                self.hoa,
                self.coa,
                self.path.kind if self.path else None,
                event.lifetime_s,
                event.sequence,
            )
            # A reverse-tunnelled packet right after each BA keeps the access firewall's
            # HA->CoA protocol-41 state fresh (DESIGN §4 conntrack hygiene).
            self._send_keepalive()
        elif isinstance(event, RegistrationRejected):
            self.last_rejection = int(event.status)
            self._set_diagnosis(rejection_text(self.last_rejection), logging.ERROR)
        elif isinstance(event, BindingLost):
            log.warning("binding expired without a refresh; checking paths again")
            self.reselect.set()
        elif isinstance(event, Deregistered):
            self.deregistered.set()

    # -- route optimisation (D-native) ------------------------------------------------------
    def _maybe_start_ro(self, dst: bytes) -> None:
        """Traffic to a new correspondent: offer it direct UDP paths and try return routability
        with it (RFC 6275 §11.6), once registered with the HA (the offer and the HoTI travel
        through the HA), within bounds."""
        if self.ro is None or self.core.state != "registered":
            return
        now = self.coarse_now
        if self.ro_backoff.get(dst, 0.0) > now or len(self.ro_peers) >= RO_MAX_PEERS:
            return
        cn = IPv6Address(dst)
        if cn.is_multicast or cn.is_link_local or cn.is_loopback or cn.is_unspecified:
            return
        if cn in (self.ha, self.hoa):
            return
        self.ro_peers[dst] = now
        self.ro_started_at[dst] = now
        # D-native needs native IPv6 without a NAT66 (checksums, CoA-bound tokens).
        if self.access.ipv6 is not None and not self.nat66:
            self.ro.start(now, cn, self.access.ipv6)
        if self.direct is not None:
            self.direct.start(cn)

    def _drop_ro(self, cn: bytes, why: str, backoff_s: float) -> None:
        """Back to the HA tunnel for ``cn``: end the binding there (a deletion BU, if the CN may
        hold one) and try again no sooner than ``backoff_s`` from now, on new traffic."""
        was_ready = self.ro_ready.pop(cn, None) is not None
        self.ro_heard.pop(cn, None)
        self.probes.pop(cn, None)
        self.ro_peers.pop(cn, None)
        self.ro_started_at.pop(cn, None)
        self.ro_backoff[cn] = self.coarse_now + backoff_s
        if self.ro is not None:
            self.ro.stop(self.coarse_now, IPv6Address(cn))
        if self.direct is not None and (
            why == "idle" or (why == "no answer" and cn not in self.direct.selected)
        ):
            self.direct.stop(IPv6Address(cn))  # no mipnode there, or no longer talking
        self.counters(f"d_native_dropped_{why.replace(' ', '_')}")
        if was_ready:
            self._ro_change(cn, False, why)
        log.info(
            "route optimisation with %s ended%s (%s); next attempt in %.0f s",
            IPv6Address(cn),
            ", D-native left" if was_ready else "",
            why,
            backoff_s,
        )

    def _ro_change(self, cn: bytes, to_d_native: bool, reason: str) -> None:
        other = (
            "D-udp"
            if self.direct and cn in self.direct.selected
            else (self.path.kind if self.path else None)
        )
        frm, to = (other, "D-native") if to_d_native else ("D-native", other)
        log_ = self.ro_changes.setdefault(cn, [])
        log_.append({"at": round(wall(), 3), "from": frm, "to": to, "reason": reason})
        del log_[:-20]

    def _send_ro_mh(self, out: OutgoingMh) -> None:
        if out.care_of is not None and _is_deletion_bu(out.data):
            # A deletion must reach the CN even when the direct path is what died, so it goes
            # from the home address through the HA tunnel, without an HAO (RFC 6275 §11.5.4,
            # §9.5.1: a BU from the HoA deletes; its authenticator is over the HoA, §6.2.7).
            self._send_on_path(ipv6_packet(out.src, out.dst, NH_MH, out.data))
            return
        if out.care_of is not None:  # BU: from the CoA with a Home Address option
            pkt = build_packet_with_hao(out.care_of, out.dst, out.src, NH_MH, out.data)
            send_quietly(self.raw_sender, pkt, (str(out.dst), 0), self.drops)
        elif out.src == self.hoa:  # HoTI: through the HA tunnel
            self._send_on_path(ipv6_packet(out.src, out.dst, NH_MH, out.data))
        else:  # CoTI: natively from the CoA
            send_quietly(
                self.raw_sender,
                ipv6_packet(out.src, out.dst, NH_MH, out.data),
                (str(out.dst), 0),
                self.drops,
            )

    def _on_ro_timer(self, now: float) -> None:
        if self.ro is None:
            return
        self.ro.handle_timer(now)
        self._flush()

    def _on_ro_event(self, event: object) -> None:
        if isinstance(event, RouteOptimized):
            cn = event.cn.packed
            if cn not in self.ro_ready and cn not in self.probes:
                log.info(
                    "route optimisation with %s: binding accepted (care-of %s, %ss); probing",
                    event.cn,
                    event.care_of,
                    event.lifetime_s,
                )
                self.probes[cn] = {}
                self._nursery.start_soon(self._probe, event.cn)
        elif isinstance(event, RouteOptimizationFailed):
            self._drop_ro(event.cn.packed, f"rejected {event.status}", RO_RETRY_S)
        elif isinstance(event, RouteOptimizationExpired):
            self._drop_ro(event.cn.packed, "binding expired", RO_RETRY_FAST_S)
        elif isinstance(event, RouteOptimizationEnded):
            self.ro_peers.pop(event.cn.packed, None)

    def _send_echo(self, cn: IPv6Address) -> bool:
        """An echo request in D-native form (HAO out); its reply must come in an RH2. A random
        nonce in the payload ties the reply to this request (no forged upgrades)."""
        coa = self.access.ipv6
        pending = self.probes.setdefault(cn.packed, {})
        if coa is None:
            return False
        nonce = secrets.token_bytes(16)
        pending[nonce] = trio.current_time()
        while len(pending) > PROBE_NONCES_KEPT:
            pending.pop(next(iter(pending)))
        self.probe_seq = (self.probe_seq + 1) & 0xFFFF
        probe = echo_request(self.hoa, cn, PROBE_IDENT, self.probe_seq, nonce)
        send_quietly(
            self.raw_sender, add_home_address_option(probe, coa.packed), (str(cn), 0), self.drops
        )
        return True

    async def _probe(self, cn: IPv6Address) -> None:
        """Move to D-native only when an echo sent that way comes back that way."""
        for _ in range(PROBE_TRIES):
            if cn.packed not in self.probes or cn.packed in self.ro_ready:
                return
            if not self._send_echo(cn):
                return
            await trio.sleep(PROBE_INTERVAL_S)
        if cn.packed in self.probes and cn.packed not in self.ro_ready:
            # The CN holds a binding we cannot use (e.g. our firewall drops its RH2 packets as
            # conntrack-invalid, reference E4): delete it, or its replies would be lost.
            self._drop_ro(cn.packed, "probe unanswered", RO_RETRY_S)
            self._flush()

    async def _d_native_heartbeats(self) -> None:
        """Keep proving each D-native path in its data form; silence for D_NATIVE_DEAD_S means
        back to the tunnel (DESIGN §4: fallback within 3 s)."""
        while True:
            await trio.sleep(D_NATIVE_HEARTBEAT_S)
            now = trio.current_time()
            for cn in list(self.ro_ready):
                if now - self.ro_heard.get(cn, now) > D_NATIVE_DEAD_S:
                    self._drop_ro(cn, "D-native silent", RO_RETRY_FAST_S)
                else:
                    self._send_echo(IPv6Address(cn))
            self._ro_janitor()
            self._flush()  # deletion BUs queued by _drop_ro leave now, not with the next packet

    def _ro_janitor(self) -> None:
        """Forget correspondents that never answer (a plain host would get a CoTI every 32 s,
        learning our care-of address) and those we no longer talk to."""
        now = self.coarse_now
        for cn, last in list(self.ro_peers.items()):
            if cn in self.ro_ready or cn in self.probes:
                if now - last > RO_IDLE_S:
                    self._drop_ro(cn, "idle", 0.0)
            elif now - self.ro_started_at.get(cn, now) > RO_GIVE_UP_S:
                self._drop_ro(cn, "no answer", RO_RETRY_S)

    def _on_binding_error(self, pkt: bytes) -> None:
        """RFC 6275 §11.3.6: Binding Error 1 from a CN means it has no binding for our HAO
        packets (it restarted, or the binding expired): back to the tunnel, retry soon."""
        plen = int.from_bytes(pkt[4:6], "big")
        try:
            msg = decode_mh_untrusted(
                pkt[40 : 40 + plen], IPv6Address(pkt[8:24]), IPv6Address(pkt[24:40])
            )
        except BadPacket as exc:
            self.drops(f"be_{exc.reason}")
            return
        cn = pkt[8:24]
        if not isinstance(msg, BindingError) or cn not in self.ro_peers:
            self.drops("be_unexpected")
            return
        if msg.home_address != self.hoa:
            self.drops("be_other_home_address")
            return
        self.counters(f"binding_error_{int(msg.status)}")
        if int(msg.status) == 1:
            self._drop_ro(cn, "binding error 1", RO_RETRY_FAST_S)
        else:  # 2: the CN does not speak the MH type we sent
            self._drop_ro(cn, f"binding error {int(msg.status)}", RO_RETRY_S)

    def _from_tap(self, pkt: bytes, addr: Any) -> None:
        if rawio.is_outgoing(addr) or len(pkt) < 40 or self.access.ipv6 is None:
            return
        if pkt[24:40] != self.access.ipv6.packed:
            self.drops("tap_not_for_coa")
            return
        nh = pkt[6]
        if nh == NH_MH:  # CoT or a Binding Error, to the care-of address
            if len(pkt) > 42 and pkt[42] == MhType.BE:
                self._on_binding_error(pkt)
            elif self.ro is not None:
                plen = int.from_bytes(pkt[4:6], "big")
                self.ro.receive_datagram(
                    wall(), pkt[40 : 40 + plen], IPv6Address(pkt[8:24]), self.access.ipv6
                )
            return
        if nh != NH_ROUTING:
            self.drops("tap_unexpected_header")
            return
        try:
            hoa, inner = remove_type2_routing_header_untrusted(pkt)
        except BadPacket as exc:
            self.drops(f"rh2_{exc.reason}")
            return
        if hoa != self.hoa_bytes:
            # RFC 6275 §11.3.3: the RH2 must carry our own home address; never forward.
            self.drops("rh2_not_our_home_address")
            return
        if inner[6] in (0, NH_ROUTING, 60):
            self.drops("rh2_inner_extension_header")  # nothing we know to deliver
            return
        cn = inner[8:24]
        if inner[6] == NH_MH and self.ro is not None:  # BA from the CN
            self.ro.receive_datagram(wall(), inner[40:], IPv6Address(cn), self.hoa)
            return
        if inner[6] == NH_ICMPV6 and self._maybe_probe_reply(inner):
            return
        if cn not in self.ro_ready:
            self.drops("rh2_without_binding")
            return
        if not write_quietly(self.tun, inner, self.drops):
            return
        self.counters("d_native_from_cn")

    def _maybe_probe_reply(self, inner: bytes) -> bool:
        if len(inner) < 64 or inner[40] != ICMPV6_ECHO_REPLY:
            return False
        if int.from_bytes(inner[44:46], "big") != PROBE_IDENT:
            return False
        cn = inner[8:24]
        sent = self.probes.get(cn, {}).pop(inner[48:64], None)
        if sent is None:
            self.drops("probe_reply_unexpected")
            return True
        self.ro_heard[cn] = trio.current_time()
        if cn not in self.ro_ready:
            if self.ro is None or self.ro.state(IPv6Address(cn)) != "route-optimized":
                return True  # the binding went away meanwhile
            self.ro_ready[cn] = wall()
            self._ro_change(cn, True, "probe answered through an RH2")
            log.info(
                "path to %s: D-native (probe answered through an RH2, %.1f ms)",
                IPv6Address(cn),
                (trio.current_time() - sent) * 1000,
            )
        return True

    # -- keepalives ----------------------------------------------------------------------
    async def _keepalive_loop(self) -> None:
        while True:
            await trio.sleep(self.config.keepalive_interval_s)
            if self.core.state != "registered" or self.path is None:
                continue
            if len(self.keepalive_outstanding) >= KEEPALIVE_MISSES:
                log.warning(
                    "%d keepalives unanswered on %s; checking paths again",
                    KEEPALIVE_MISSES,
                    self.path.kind,
                )
                self.keepalive_outstanding.clear()
                self.reselect.set()
                continue
            self._send_keepalive()

    def _send_keepalive(self) -> None:
        self.keepalive_seq = (self.keepalive_seq + 1) & 0xFFFF
        self.keepalive_outstanding[self.keepalive_seq] = trio.current_time()
        self._send_on_path(
            echo_request(
                self.hoa, self.ha, KEEPALIVE_IDENT, self.keepalive_seq, b"mipnode keepalive"
            )
        )

    async def shutdown(self) -> None:
        """RFC 6275 §11.5.4-style goodbye: deregister (lifetime 0) and wait briefly for the BA."""
        if self.ro is not None:
            for cn in list(self.ro_ready):
                self.ro.stop(wall(), IPv6Address(cn))
            self.ro_ready.clear()
        if self.core.state not in ("registered", "registering") or self.path is None:
            self._flush()
            return
        self.core.deregister(wall())
        self._flush()
        with trio.move_on_after(2.0):
            await self.deregistered.wait()
            log.info("deregistered from %s", self.ha)

    # -- inspection --------------------------------------------------------------------
    def _local(self, c: Candidate) -> tuple[str, int | None]:
        if c.kind == "T-native":
            return (str(self.access.ipv6), None)
        sock = self.udp6 if c.family == 6 else self.udp4
        addr = self.access.ipv6 if c.family == 6 else self.access.ipv4
        return (str(addr), sock.getsockname()[1])

    def _paths(self, now: float) -> list[dict[str, Any]]:
        """DESIGN §8 `mipnode paths --json`: per peer the selected path, every candidate pair
        and a bounded log of changes. Peers: the HA (T paths), then each correspondent."""
        t_selected = None
        if self.path is not None:
            local = self._local(self.path)
            t_selected = {
                "kind": self.path.kind,
                "local": {"address": local[0], "port": local[1]},
                "remote": {"address": self.path.remote[0], "port": self.path.remote[1]},
                "rtt_ms": self.keepalive_rtt_ms or self.path.rtt_ms,
                "since": self.path_since,
            }
        peers: list[dict[str, Any]] = [
            {
                "peer": str(self.ha),
                "role": "home-agent",
                "selected": t_selected,
                "pairs": [
                    {
                        "kind": c.kind,
                        "local": dict(zip(("address", "port"), self._local(c), strict=True)),
                        "remote": {"address": c.remote[0], "port": c.remote[1]},
                        "state": c.state,
                        "rtt_ms": c.rtt_ms,
                        "checks_sent": c.checks_sent,
                        "checks_answered": c.checks_answered,
                    }
                    for c in self.candidates
                ],
                "changes": list(self.path_changes),
            }
        ]
        for corr in self._correspondents(now):
            cn = IPv6Address(corr["cn"]).packed
            direct = corr["direct_udp"] or {"selected": None, "pairs": [], "changes": []}
            selected: dict[str, Any] | None
            if corr["path"] == "D-native":
                selected = {
                    "kind": "D-native",
                    "local": {"address": str(self.access.ipv6), "port": None},
                    "remote": {"address": corr["cn"], "port": None},
                    "rtt_ms": None,
                    "since": corr["since"],
                }
            elif corr["path"] == "D-udp":
                selected = direct["selected"]
            else:
                selected = dict(t_selected, since=None) if t_selected else None
            d_native = {
                "kind": "D-native",
                "local": {"address": str(self.access.ipv6), "port": None},
                "remote": {"address": corr["cn"], "port": None},
                "state": "succeeded"
                if corr["path"] == "D-native"
                else corr["route_optimization"] or "off",
                "rtt_ms": None,
                "checks_sent": None,
                "checks_answered": None,
            }
            peers.append(
                {
                    "peer": corr["cn"],
                    "role": "correspondent",
                    "selected": selected,
                    "pairs": [d_native, *direct["pairs"]],
                    "changes": sorted(
                        self.ro_changes.get(cn, []) + direct["changes"], key=lambda c: c["at"]
                    ),
                }
            )
        return peers

    def _correspondents(self, now: float) -> list[dict[str, Any]]:
        """Per correspondent: the path its traffic takes now, and the RO binding behind it."""
        bindings = {b.cn.packed: b for b in self.ro.bindings(now)} if self.ro else {}
        direct_peers = list(self.direct.peers) if self.direct else []
        out = []
        for cn in dict.fromkeys([*bindings, *direct_peers]):
            b = bindings.get(cn)
            ready = self.ro_ready.get(cn)
            direct = self.direct.describe(cn) if self.direct else None
            udp = direct["selected"] if direct else None
            path: str | None
            since: float | None
            if ready:
                path, since = "D-native", ready
            elif udp:
                path, since = "D-udp", udp["since"]
            else:
                path, since = (self.path.kind if self.path else None), None
            out.append(
                {
                    "cn": str(IPv6Address(cn)),
                    "path": path,
                    "since": since,
                    "route_optimization": b.state if b else None,
                    "care_of": str(b.care_of) if b and b.care_of else None,
                    "sequence": b.sequence if b else None,
                    "lifetime_remaining_s": round(b.lifetime_remaining, 1) if b else None,
                    "direct_udp": direct,
                }
            )
        return out

    def answer(self, command: str) -> Any:
        now = wall()
        binding = None
        if self.path is not None and self.core.state in (
            "registered",
            "registering",
            "deregistering",
        ):
            binding = {
                "hoa": str(self.hoa),
                "coa": address_text(self.coa),
                "path": via_json(self.path.via, self._local(self.path)),
                "sequence": self.core.sequence,
                "lifetime_remaining_s": round(self.core.lifetime_remaining(now), 1),
                "state": self.core.state,
            }
        bindings = [binding] if binding else []
        if command == "bindings":
            return {"role": "mn", "bindings": bindings}
        if command == "paths":
            return self._paths(now)
        if command == "status":
            return {
                "role": "mn",
                "home_address": str(self.hoa),
                "home_agent": str(self.ha),
                "state": self.core.state,
                "access": {
                    "interface": self.access.ifname,
                    "ipv6": str(self.access.ipv6) if self.access.ipv6 else None,
                    "ipv4": str(self.access.ipv4) if self.access.ipv4 else None,
                },
                "registration_ms": self.first_registration_ms,
                "nat": {"ipv6": self.nat66, "ipv4": self.nat44},
                "handover_ms": self.last_handover_ms,
                "rtt_ms": self.keepalive_rtt_ms,
                "last_rejection": self.last_rejection,
                "diagnosis": self.diagnosis,
                "diagnosis_since": None
                if self.diagnosis_since is None
                else round(self.diagnosis_since, 3),
                "bindings": bindings,
                "candidates": [
                    {
                        "kind": c.kind,
                        "family": f"IPv{c.family}",
                        "remote": {"address": c.remote[0], "port": c.remote[1]},
                        "state": c.state,
                        "rtt_ms": c.rtt_ms,
                        "mapped": None
                        if c.mapped is None
                        else {"address": c.mapped[0], "port": c.mapped[1]},
                        "checks_sent": c.checks_sent,
                        "checks_answered": c.checks_answered,
                    }
                    for c in self.candidates
                ],
                "correspondents": self._correspondents(now),
                "counters": dict(self.counters),
                "core": self.core.statistics(),
                "drops": dict(self.drops),
                "internal_errors": dict(HANDLER_ERRORS),
                "uptime_s": round(now - self.started_at, 1),
            }
        return {"error": f"unknown command {command!r}"}


def _access_facts(info: netlink.AccessInfo, interface: str | None) -> AccessFacts:
    return AccessFacts(
        info.ifname or interface,
        str(info.ipv6) if info.ipv6 else None,
        str(info.ipv4) if info.ipv4 else None,
    )


def _is_deletion_bu(mh: bytes) -> bool:
    """A Binding Update with lifetime 0 (RFC 6275 §6.1.7: lifetime at octets 10-11)."""
    return len(mh) >= 12 and mh[2] == MhType.BU and mh[10:12] == b"\0\0"


async def run_mobile_node(config: MnConfig) -> None:
    daemon = MobileNodeDaemon(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("mobile node stopping")
                sdnotify.notify("STOPPING=1")
                await daemon.shutdown()
                nursery.cancel_scope.cancel()
                break
