"""D-udp: direct UDP paths between a mobile node and its correspondents (DESIGN §2, §4).

One :class:`DirectUdp` per daemon owns the UDP sockets of the direct paths and one ICE agent
(ice/agent.py) per peer: on the MN one controlling agent per correspondent, on the CN one
controlled agent per home address that made an offer. Offer and answer (ICE credentials and
candidates, mipnode's M-ICE TLVs) travel in Experimental Mobility Headers (MH 11, RFC 5096)
between the HoA and the CN, i.e. through the home agent, like HoTI/HoT.

Data for a peer leaves on the agent's selected pair only (a two-way authenticated check proved
it, ice/agent.py); with no selected pair the caller sends on the T path. UDP payloads are whole
IPv6 packets or STUN (DESIGN §3 demultiplexing); an IPv6 packet is delivered only when it
arrives from the selected pair's remote address and carries that peer's address as its inner
source (the HoA on the CN side, the CN on the MN side).
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import trio

from ice import stun
from ice.agent import (
    ConsentLost,
    Credentials,
    IceAgent,
    IceConfig,
    PathLost,
    PathSelected,
    new_credentials,
)
from ice.candidate import Candidate, CandidateType, TransportAddress, transport_address
from mipnode.drivers.io import Counters, drain_socket, open_udp, send_quietly, wall
from mipnode.wire import mice
from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import ExperimentalMessage, decode_mh_untrusted
from tunnels.demux import UdpPayloadKind, classify_udp_payload_untrusted

log = logging.getLogger("mipnode.direct")

OFFER_RETRY_S = 1.0
GATHER_WAIT_S = 0.5  # for the HA's answers giving our server-reflexive addresses
OFFER_TRIES = 8
MAX_PEERS = 64  # agents at once (each up to 100 pairs)
TIE_BREAKER_BITS = 64

SendSignalling = Callable[[IPv6Address, ExperimentalMessage], None]


@dataclass
class Peer:
    address: IPv6Address  # the CN (MN side) or the HoA (CN side)
    agent: IceAgent
    offered: bool = False  # we started it (controlling, offer sent) rather than answered
    answered: bool = False
    offers_sent: int = 0
    selected_remote: TransportAddress | None = None
    selected_sock: socket.socket | None = None
    since: float | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)


class DirectUdp:
    def __init__(
        self,
        *,
        controlling: bool,
        counters: Counters,
        drops: Counters,
        deliver: Callable[[bytes], None],
        send_signalling: SendSignalling,
        on_path_change: Callable[[IPv6Address, bool], None] = lambda peer, up: None,
    ) -> None:
        self.controlling = controlling
        self.counters, self.drops = counters, drops
        self.deliver = deliver
        self.send_signalling = send_signalling
        self.on_path_change = on_path_change
        self.config = IceConfig()
        self.peers: dict[bytes, Peer] = {}
        self.sockets: dict[TransportAddress, socket.socket] = {}
        self.local_candidates: list[Candidate] = []
        # Fast path: peer address bytes -> (socket, remote) of the selected pair.
        self.selected: dict[bytes, tuple[socket.socket, TransportAddress]] = {}
        self._changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._gathering: dict[bytes, tuple[TransportAddress, TransportAddress]] = {}
        self._gathered: dict[TransportAddress, tuple[TransportAddress, str]] = {}
        self._gather_done = trio.Event()

    # -- sockets -------------------------------------------------------------------------------
    async def serve(
        self,
        ifname: str | None,
        addresses: list[IPv4Address | IPv6Address],
        stun_servers: dict[int, TransportAddress] | None = None,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open one UDP socket per local address (host candidates), learn each socket's
        server-reflexive address from the HA (``stun_servers`` by address family: 6 or 4), and
        serve them until this task's cancel scope is cancelled (a move: the caller starts a new
        one)."""
        opened: list[tuple[TransportAddress, socket.socket]] = []
        for addr in addresses:
            family = socket.AF_INET6 if isinstance(addr, IPv6Address) else socket.AF_INET
            sock = open_udp(family, 0, ifname, address=str(addr))
            opened.append((transport_address(str(addr), sock.getsockname()[1]), sock))
        self.sockets = dict(opened)
        hosts = [
            Candidate.host(local, local_pref=65535 - 256 * rank)
            for rank, (local, _) in enumerate(opened)
        ]
        self.local_candidates = hosts
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for local, sock in opened:
                        nursery.start_soon(
                            drain_socket, sock, self._receiver(local, sock), self._flush
                        )
                    mapped = await self._gather(opened, stun_servers or {})
                    srflx = []
                    for host in hosts:
                        found = mapped.get(host.address)
                        if found is not None and found[0] != host.address:  # behind a NAT
                            srflx.append(
                                Candidate.server_reflexive(
                                    found[0],
                                    host.address,
                                    server_ip=found[1],
                                    local_pref=host_pref(host),
                                )
                            )
                    self.local_candidates = hosts + srflx
                    task_status.started(scope)
                    nursery.start_soon(self._timers)
                    nursery.start_soon(self._offer_retries)
        finally:
            for _, sock in opened:
                sock.close()

    async def _gather(
        self,
        opened: list[tuple[TransportAddress, socket.socket]],
        servers: dict[int, TransportAddress],
    ) -> dict[TransportAddress, tuple[TransportAddress, str]]:
        """One padded Binding request per socket to the HA (RFC 8445 §5.1.1.2: the answer's
        XOR-MAPPED-ADDRESS is the server-reflexive candidate); wait at most GATHER_WAIT_S."""
        self._gathering.clear()
        self._gathered = {}
        done = trio.Event()
        self._gather_done = done
        for local, sock in opened:
            server = servers.get(6 if ":" in local[0] else 4)
            if server is None:
                continue
            txid = secrets.token_bytes(12)
            self._gathering[txid] = (local, server)
            send_quietly(sock, stun.binding_request(txid), server, self.drops)
        if self._gathering:
            with trio.move_on_after(GATHER_WAIT_S):
                await done.wait()
        self._gathering.clear()
        return dict(self._gathered)

    def _on_gather_answer(self, data: bytes, remote: TransportAddress) -> bool:
        if not self._gathering:
            return False
        try:
            msg = stun.parse_stun_untrusted(data)
        except BadPacket:
            return False
        entry = self._gathering.get(msg.transaction_id)
        if entry is None or entry[1] != remote:
            return False
        del self._gathering[msg.transaction_id]
        mapped = msg.attributes.get("XOR-MAPPED-ADDRESS")
        if mapped:
            self._gathered[entry[0]] = (
                transport_address(str(mapped[0]), int(mapped[1])),
                remote[0],
            )
        if not self._gathering:
            self._gather_done.set()
        return True

    # -- peers and signalling -------------------------------------------------------------------
    def _new_agent(self, controlling: bool) -> IceAgent:
        agent = IceAgent(
            self.config,
            controlling=controlling,
            credentials=new_credentials(secrets.token_bytes),
            tie_breaker=secrets.randbits(TIE_BREAKER_BITS),
            random_bytes=secrets.token_bytes,
        )
        for c in self.local_candidates:
            agent.add_local_candidate(c)
        return agent

    def start(self, peer: IPv6Address) -> bool:
        """MN side: offer direct paths to correspondent ``peer``."""
        key = peer.packed
        if key in self.peers:
            return True
        if len(self.peers) >= MAX_PEERS or not self.local_candidates:
            return False
        self.peers[key] = Peer(peer, self._new_agent(controlling=True), offered=True)
        self._send_description(self.peers[key])
        self._kick()
        return True

    def resend_offers(self) -> int:
        """Offers not answered yet, again now. After a move the first offer can leave before
        the home agent knows the new care-of address, and its ingress filter rightly drops
        the tunnelled packet; the caller calls this once the new registration is acknowledged
        instead of waiting for the next retry (OFFER_RETRY_S)."""
        resent = 0
        for p in self.peers.values():
            if p.offered and not p.answered:
                self._send_description(p)
                resent += 1
        return resent

    def stop(self, peer: IPv6Address) -> None:
        p = self.peers.pop(peer.packed, None)
        if p is not None and self.selected.pop(peer.packed, None) is not None:
            self.on_path_change(peer, False)

    def _description(self, agent: IceAgent) -> ExperimentalMessage:
        creds = agent.local_credentials
        items: list[mice.MiceItem] = [mice.Credentials(creds.ufrag, creds.password)]
        for c in agent.local_candidates():
            items.append(
                mice.Candidate(
                    c.foundation, c.priority, c.kind.value, ip_address(c.address[0]), c.address[1]
                )
            )
        items.append(mice.EndOfCandidates())
        return ExperimentalMessage(options=mice.mice_options(items))

    def _send_description(self, p: Peer) -> None:
        p.offers_sent += 1
        self.counters("ice_descriptions_sent")
        self.send_signalling(p.address, self._description(p.agent))

    def on_signalling_packet(self, pkt: bytes) -> None:
        """An IPv6 packet (no extension headers) carrying an Experimental MH from a peer."""
        plen = int.from_bytes(pkt[4:6], "big")
        src, dst = IPv6Address(pkt[8:24]), IPv6Address(pkt[24:40])
        try:
            msg = decode_mh_untrusted(pkt[40 : 40 + plen], src, dst)
        except BadPacket as exc:
            self.drops(f"mice_{exc.reason}")
            return
        if not isinstance(msg, ExperimentalMessage):
            self.drops("mice_not_experimental")
            return
        self.on_signalling(src, msg)

    def on_signalling(self, peer: IPv6Address, msg: ExperimentalMessage) -> None:
        """An answer to our offer, or an offer from ``peer`` (a mobile node answers offers of
        other mobile nodes like a correspondent, DESIGN §4 / issue 4)."""
        try:
            items = mice.mice_from_options_untrusted(msg.options)
        except BadPacket as exc:
            self.drops(f"mice_{exc.reason}")
            return
        creds = next((i for i in items if isinstance(i, mice.Credentials)), None)
        if creds is None:
            self.drops("mice_without_credentials")
            return
        key = peer.packed
        p = self.peers.get(key)
        if p is not None and p.offered:
            # The answer to our offer -- or the peer's own offer crossing ours (two mobile
            # nodes starting at once): either way its description; if both agents are
            # controlling, the ICE role conflict (487, tie-breakers) settles who yields.
            pass
        else:
            new_offer = p is None or (
                p.agent.remote_credentials is not None
                and p.agent.remote_credentials.ufrag != creds.ufrag
            )
            if new_offer:
                if p is None and len(self.peers) >= MAX_PEERS:
                    self.drops("mice_too_many_peers")
                    return
                if p is not None:  # an ICE restart from the peer (it moved): start afresh
                    self.stop(peer)
                p = Peer(peer, self._new_agent(controlling=False))
                self.peers[key] = p
            assert p is not None
            self._send_description(p)  # answer (again: offers are repeated until answered)
        if p.agent.remote_credentials is None:
            try:
                p.agent.set_remote_credentials(Credentials(creds.ufrag, creds.password))
            except ValueError:
                self.drops("mice_bad_credentials")
                return
            for item in items:
                if isinstance(item, mice.Candidate):
                    self._add_remote(p, item)
            if any(isinstance(i, mice.EndOfCandidates) for i in items):
                p.agent.end_of_remote_candidates()
        p.answered = True
        self._kick()

    def _add_remote(self, p: Peer, item: mice.Candidate) -> None:
        try:
            kind = CandidateType(item.kind)
            address = transport_address(str(item.address), item.port)
            cand = Candidate(kind, address, address, item.priority, item.foundation)
            p.agent.add_remote_candidate(cand)
        except (ValueError, TypeError):
            self.drops("mice_bad_candidate")

    # -- data ------------------------------------------------------------------------------------
    def send(self, peer: bytes, pkt: bytes) -> bool:
        """Send ``pkt`` on the selected direct pair of ``peer``; False: use the T path."""
        sel = self.selected.get(peer)
        if sel is None:
            return False
        send_quietly(sel[0], pkt, sel[1], self.drops)
        return True

    def _receiver(
        self, local: TransportAddress, sock: socket.socket
    ) -> Callable[[bytes, Any], None]:
        def from_direct_udp(data: bytes, addr: Any) -> None:
            remote = transport_address(addr[0].split("%", 1)[0], addr[1])
            try:
                kind = classify_udp_payload_untrusted(data)
            except BadPacket as exc:
                self.drops(f"direct_{exc.reason}")
                return
            if kind is UdpPayloadKind.STUN:
                if self._on_gather_answer(data, remote):
                    return
                now = trio.current_time()
                # The check's USERNAME names the agent; agents drop what is not theirs.
                for p in self.peers.values():
                    p.agent.receive_datagram(now, data, local, remote)
                return
            if len(data) < 40:
                self.drops("direct_truncated")
                return
            # The inner source is the peer (the CN on the MN, the HoA on the CN), and only the
            # selected pair's remote may speak for it: no spoofed inner sources.
            sel = self.selected.get(data[8:24])
            if sel is None or sel[1] != remote:
                self.drops("direct_not_from_selected_pair")
                return
            self.deliver(data)
            self.counters("d_udp_received")

        return from_direct_udp

    # -- timers and events ----------------------------------------------------------------------
    def _kick(self) -> None:
        self._changed.set()

    async def _timers(self) -> None:
        while True:
            deadlines = [t for p in self.peers.values() if (t := p.agent.get_timer()) is not None]
            self._changed = trio.Event()
            if not deadlines:
                await self._changed.wait()
                continue
            with trio.move_on_at(min(deadlines)):
                await self._changed.wait()
                continue
            now = trio.current_time()
            for p in list(self.peers.values()):
                t = p.agent.get_timer()
                if t is not None and t <= now:
                    p.agent.handle_timer(now)
            self._flush()

    async def _offer_retries(self) -> None:
        """The offer rides the T path, which can lose it: repeat until answered."""
        while True:
            await trio.sleep(OFFER_RETRY_S)
            for p in list(self.peers.values()):
                if p.offered and not p.answered and p.offers_sent < OFFER_TRIES:
                    self._send_description(p)

    def _flush(self) -> None:
        now = trio.current_time()
        for p in list(self.peers.values()):
            for out in p.agent.datagrams_to_send(now):
                sock = self.sockets.get(out.local)
                if sock is None:
                    self.drops("direct_no_socket")
                    continue
                send_quietly(sock, out.data, out.remote, self.drops)
            while (event := p.agent.next_event()) is not None:
                self._on_event(p, event, now)
        self._kick()

    def _on_event(self, p: Peer, event: object, now: float) -> None:
        key = p.address.packed
        if isinstance(event, PathSelected):
            pair = event.pair
            sock = self.sockets.get(pair.local.base)
            if sock is None:
                return
            had = key in self.selected
            self.selected[key] = (sock, pair.remote.address)
            p.selected_remote, p.selected_sock, p.since = pair.remote.address, sock, wall()
            self._log_change(
                p,
                "T" if event.previous is None else "D-udp",
                "D-udp",
                f"{pair.local.base} -> {pair.remote.address} checked",
            )
            if not had:
                self.on_path_change(p.address, True)
        elif isinstance(event, ConsentLost) and p.offered:
            # RFC 7675: the pair may not carry our traffic again without an ICE restart: new
            # credentials, a new offer through the HA, fresh checks (the peer starts afresh).
            p.agent.restart(now, new_credentials(secrets.token_bytes))
            p.answered, p.offers_sent = False, 0
            self.counters("ice_restarts")
            self._send_description(p)
        elif isinstance(event, PathLost) and self.selected.pop(key, None) is not None:
            p.selected_remote = p.selected_sock = None
            self._log_change(p, "D-udp", "T", f"selected pair lost ({event.reason})")
            self.on_path_change(p.address, False)

    def _log_change(self, p: Peer, old: str, new: str, reason: str) -> None:
        log.info("path to %s: %s -> %s (%s)", p.address, old, new, reason)
        p.changes.append({"at": round(wall(), 3), "from": old, "to": new, "reason": reason})
        del p.changes[:-20]  # a bounded log

    # -- inspection --------------------------------------------------------------------------------
    def describe(self, peer: bytes) -> dict[str, Any] | None:
        p = self.peers.get(peer)
        if p is None:
            return None
        pairs = []
        for pair in p.agent.pairs():
            pairs.append(
                {
                    "kind": pair.kind,
                    "local": _ta(pair.local.base),
                    "remote": _ta(pair.remote.address),
                    "local_type": pair.local.kind.value,
                    "remote_type": pair.remote.kind.value,
                    "state": str(pair.state),
                    "rtt_ms": None if pair.rtt_s is None else round(pair.rtt_s * 1000, 2),
                    "checks_sent": pair.checks_sent,
                    "checks_answered": pair.checks_answered,
                    "selected": pair.selected,
                }
            )
        sel = p.agent.selected_pair()
        return {
            "selected": None
            if sel is None
            else {
                "kind": "D-udp",
                "local": _ta(sel.local.base),
                "remote": _ta(sel.remote.address),
                "rtt_ms": None if sel.rtt_s is None else round(sel.rtt_s * 1000, 2),
                "since": p.since,
            },
            "pairs": pairs,
            "changes": list(p.changes),
            "statistics": p.agent.statistics(),
        }


def host_pref(host: Candidate) -> int:
    """The local preference a host candidate was given (its priority's middle 16 bits)."""
    return (host.priority >> 8) & 0xFFFF


def _ta(addr: TransportAddress) -> dict[str, Any]:
    return {"address": addr[0], "port": addr[1]}
