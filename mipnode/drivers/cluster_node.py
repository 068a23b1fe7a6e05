"""One home agent's part in a cluster on etcd (issue 14): the driver around the pure
:class:`~mipnode.core.ha_cluster.ClusterMembership` and the binding records' replicator.

docs/internals.md, "Home agents in a cluster on etcd", has the design. This driver owns:
- the node's etcd lease (kept alive every KEEPALIVE_S; each answer tells the core how long the
  lease surely lasts) and its member key ``/mipnode/<name>/members/<node id>`` bound to it;
- two followers, of the member keys and of the address records
  ``/mipnode/<name>/addresses/<address>`` (value: the holder's node id, bound to its lease),
  and the claims (a compare-and-swap on an address record) the core asks for;
- the announcements on the home link: every ANNOUNCE_S to ff02::1 on ``home_link``, UDP port
  ``announce_port``, authenticated with the cluster key (wire/cluster_announce.py); what is
  heard, authentic and fresh goes to the core;
- the home-agent address on the home link while this node holds it: added for
  ADDRESS_LIFETIME_S and renewed every ADDRESS_RENEW_S, so a node killed while holding it
  loses it within seconds without anyone's help, and an unsolicited Neighbor Advertisement
  (Override) so the home link's router sends to this node at once (wire/nd.py);
- the binding records (drivers/ha_replication.py): every node follows them (replay state, and
  a copy to serve from); the holder writes what its core changed, and adopts every record when
  it takes the address over;
- a clean stop (:meth:`ClusterNode.leave`): the bindings' ESP SAs to the successor
  (drivers/sa_handover.py), the address record rewritten to name it, service until it holds
  the address, its final replay windows, then off the link.

The data plane is not here: the HA daemon serves the bindings its core has, and the core has
bindings only while this node holds the address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import math
import socket
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import trio

from mipnode.config import ClusterConfig
from mipnode.core.ha import HomeAgentCore
from mipnode.core.ha_cluster import (
    ANNOUNCE_S,
    LEASE_TTL_S,
    Claim,
    ClusterMembership,
    Health,
    Hold,
    Release,
    first_for,
)
from mipnode.drivers import netlink, pump
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.etcd import Etcd, EtcdError, KeyValue, Put
from mipnode.drivers.etcd_follow import Follower
from mipnode.drivers.ha_replication import Replicator
from mipnode.drivers.home_link import open_na_socket
from mipnode.drivers.io import Counters
from mipnode.drivers.logs import RateLimitedLog
from mipnode.drivers.sa_handover import SaHandover
from mipnode.drivers.startup import ClusterUnavailable
from mipnode.wire.arp import arp_announcement
from mipnode.wire.cluster_announce import (
    MAX_NODES,
    Announcement,
    Freshness,
    decode_announcement_untrusted,
    encode_announcement,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.nd import unsolicited_na

log = logging.getLogger("mipnode.cluster")
KEEPALIVE_S = 0.5  # a sixth of the lease: several answers may be lost before it ends
KEEPALIVE_TIMEOUT_S = 0.5  # a keep-alive without an answer by then: try the next member
RETRY_AFTER_FAILURE_S = 0.05
ADDRESS_LIFETIME_S = 3  # the kernel drops the address this long after its last renewal
ADDRESS_RENEW_S = 1.0
NA_COUNT = 3  # RFC 4861 §7.2.6: up to MAX_NEIGHBOR_ADVERTISEMENT unsolicited NAs
HANDOVER_WAIT_S = 2.0  # a clean stop waits this long for its successor to hold the address
REFRESH_BATCH_S = 1.0  # a refresh's record waits at most this long for company
WRITE_RETRY_S = 0.5  # records etcd did not take are tried again this often
ANNOUNCE_MAX = 2048
HEAR_BATCH = 64  # announcements read per wake-up
ALL_NODES = "ff02::1"


class ClusterNode:
    def __init__(
        self,
        cfg: ClusterConfig,
        address: IPv6Address,
        core: HomeAgentCore,
        flush: Callable[[], None],
        *,
        store: Any = None,
        esp: EspSas | None = None,
    ) -> None:
        self.cfg = cfg
        self.address = address
        self.core = core
        self._flush = flush  # the HA pump's: what adopting or releasing queued goes out
        self.etcd = store or Etcd(
            cfg.etcd_endpoints,
            timeout_s=cfg.etcd_timeout_s,
            ca_file=cfg.etcd_ca_file,
            cert_file=cfg.etcd_cert_file,
            key_file=cfg.etcd_key_file,
            username=cfg.etcd_username,
            password=cfg.etcd_password,
        )
        root = f"/mipnode/{cfg.name}/"
        self.member_key = f"{root}members/{cfg.node_id}".encode()
        self.address_key = f"{root}addresses/{address}".encode()
        # Started (its grace begins) only once etcd's members and address records are loaded
        # and the link is heard: until then it knows too little to claim anything.
        self.membership = ClusterMembership(cfg.node_id, (address,), math.inf)
        # The announcements' MAC key names the cluster: two clusters sharing a link and a key
        # never count each other's nodes as their own.
        self.announce_key = hmac.new(
            cfg.key, b"mipnode cluster " + cfg.name.encode(), "sha256"
        ).digest()
        self.members = Follower(
            self.etcd, f"{root}members/".encode(), self._member_put, self._member_gone
        )
        self.addresses = Follower(
            self.etcd, f"{root}addresses/".encode(), self._address_put, self._address_gone
        )
        self.replicator = Replicator(self.etcd, cfg.name, core.observe_replica)
        self.freshness = Freshness()
        self.drops = Counters()
        self.counters = Counters()
        self.ratelog = RateLimitedLog()
        self.lease = 0
        self.holding = False
        self._wake = trio.Event()
        # Hold and release, from the core's events: unbounded so that a slow netlink call
        # never makes the decision loop fail; the core emits one per change of what it holds.
        self._link_ops: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]] = (
            trio.open_memory_channel(math.inf)
        )
        self._claims: tuple[trio.MemorySendChannel[Claim], trio.MemoryReceiveChannel[Claim]] = (
            trio.open_memory_channel(8)
        )
        self._urgent: set[IPv6Address] = set()  # created, moved, deleted: written at once
        self._lazy: dict[IPv6Address, float] = {}  # refreshed: written within REFRESH_BATCH_S
        self._write_wanted = trio.Event()
        self.pending_writes = 0  # records waiting for etcd (it did not take them yet)
        self.handing_over = False  # stopping: the address goes to a peer, make before break
        self.handed = False  # ... and the successor holds it and has our last windows
        self.on_link = False  # the address is on the home link and the router was told
        self._left = trio.Event()
        self._successor_id: str | None = None
        self._successor_holds = trio.Event()
        self.link_index = 0
        self.link_mac = b"\x00" * 6
        self.esp = esp  # the daemon's ESP SAs (protection on): handed over at a clean stop
        self.sas: SaHandover | None = None
        self.peer_links: dict[str, str] = {}  # node id: the link-local address it announces from

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Reach etcd, take a lease and register as a member; the link's address and MAC.

        Raises:
            ClusterUnavailable: one line naming the endpoints and what went wrong.
        """
        endpoints = ", ".join(self.cfg.etcd_endpoints)
        try:
            self.link_index, self.link_mac = await trio.to_thread.run_sync(
                netlink.link_address, self.cfg.home_link
            )
        except netlink.NetlinkFailure as exc:
            raise ClusterUnavailable(f"[ha.cluster] home_link: {exc}") from None
        if len(self.link_mac) != 6:
            raise ClusterUnavailable(
                f"[ha.cluster] home_link: {self.cfg.home_link} is not an Ethernet link "
                "(the address moves by Neighbor Discovery and ARP)"
            )
        try:
            status = await self.etcd.status()
            await self._join()
        except EtcdError as exc:
            raise ClusterUnavailable(f"etcd unreachable at {endpoints}: {exc}") from None
        if self.esp is not None:
            self.sas = SaHandover(
                self.cfg,
                self.esp,
                self.link_index,
                self.counters,
                self.drops,
                allowed=lambda peer: peer in self.peer_links.values(),
            )
        log.info(
            "cluster %s: node %s joined etcd at %s (revision %d, lease %x)",
            self.cfg.name,
            self.cfg.node_id,
            status.endpoint,
            status.revision,
            self.lease,
        )

    async def _join(self) -> None:
        sent_at = pump.now()
        self.lease, _ = await self.etcd.grant(int(LEASE_TTL_S))
        value = json.dumps({"node": self.cfg.node_id, "address": str(self.address)}).encode()
        await self.etcd.put(self.member_key, value, lease=self.lease)
        self.membership.etcd_renewed(pump.now(), sent_at)
        self._decided()

    # -- run -----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        announce = _announce_socket(self.cfg.home_link, self.link_index, self.cfg.announce_port)
        na = open_na_socket(self.link_index)
        arp = _arp_socket(self.cfg.home_link) if self.cfg.ipv4_address is not None else None
        with announce, na, arp or contextlib.nullcontext():
            async with trio.open_nursery() as nursery:
                if self.sas is not None:
                    await nursery.start(self.sas.serve)
                nursery.start_soon(self.replicator.run)
                nursery.start_soon(self.members.run)
                nursery.start_soon(self.addresses.run)
                for follower in (self.replicator.follower, self.members, self.addresses):
                    await follower.loaded.wait()  # a takeover serves from the records
                nursery.start_soon(self._keepalive)
                nursery.start_soon(self._hear, announce)
                nursery.start_soon(self._link_worker, na, arp)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._claimer)
                nursery.start_soon(self._decide_and_announce, announce)
                self.membership.started_at = pump.now()
                task_status.started()

    async def _decide_and_announce(self, sock: socket.socket) -> None:
        next_announce = pump.now()
        while True:
            now = pump.now()
            self.membership.handle_timer(now)
            self._decided()
            if now >= next_announce:
                self._announce(sock)
                next_announce = now + ANNOUNCE_S
            deadline = min(self.membership.get_timer(now), next_announce)
            await pump.wait_for(self._wake, max(0.0, deadline - now))
            self._wake = trio.Event()

    def _said(self) -> Announcement:
        """What we announce: the core's, but an address counts as held only once it is on
        the link and the router was told (a peer handing it to us lets go when it hears it)."""
        said = self.membership.announcement()
        if not self.on_link:
            said = dataclasses.replace(said, holds=())
        return said

    def _announce(self, sock: socket.socket) -> None:
        data = encode_announcement(self._said(), self.announce_key, int(pump.posix_time() * 1000))
        try:
            sock.sendto(data, (ALL_NODES, self.cfg.announce_port, 0, self.link_index))
        except OSError as exc:
            self.drops("announce_send_failed")
            self.ratelog(logging.WARNING, "announce", "announcement not sent", error=exc)

    async def _hear(self, sock: socket.socket) -> None:
        """Announcements, at most HEAR_BATCH a wake-up (a flood must not hold the thread).
        Only from link-local sources: a router never forwards those, so nothing off the home
        link gets as far as the MAC check."""
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(HEAR_BATCH):
                try:
                    data, source = sock.recvfrom(ANNOUNCE_MAX)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                if not source[0].startswith("fe80:"):
                    self.drops("announce_not_link_local")
                    continue
                self._heard(data, source[0].split("%")[0])
            self._decided()
            await trio.lowlevel.checkpoint()

    def _heard(self, data: bytes, source: str) -> None:
        try:
            announcement, sent_ms = decode_announcement_untrusted(data, self.announce_key)
        except BadPacket as exc:
            self.drops(f"announce_{exc.reason}")
            return
        if announcement.node == self.cfg.node_id:
            return
        if not self.freshness.accept(announcement.node, sent_ms, int(pump.posix_time() * 1000)):
            self.drops("announce_stale")
            return
        self.counters("announcements_heard")
        self.membership.heard(pump.now(), announcement)
        self.peer_links.pop(announcement.node, None)
        self.peer_links[announcement.node] = source  # where its SAs go at a hand-over
        if len(self.peer_links) > MAX_NODES:
            del self.peer_links[next(iter(self.peer_links))]
        if announcement.node == self._successor_id and self.address in announcement.holds:
            self._successor_holds.set()

    async def _keepalive(self) -> None:
        pause = KEEPALIVE_S
        while True:
            await pump.sleep(pause)
            pause = KEEPALIVE_S
            sent_at = pump.now()
            try:
                if self.lease == 0:
                    await self._join()
                    continue
                timeout = min(KEEPALIVE_TIMEOUT_S, self.cfg.etcd_timeout_s)
                ttl = await self.etcd.keepalive(self.lease, timeout)
            except EtcdError as exc:
                # The next one goes to the next member at once: after etcd's majority comes
                # back, one member may lag, and the core lets go of the address if its peers
                # reach etcd for PEERS_BACK_S while this node does not.
                self.membership.etcd_failed(pump.now(), str(exc))
                self._decided()
                # A keep-alive that hung gets its successor at once (on the next member); one
                # that failed at once (no route: this node's link is down) waits the usual
                # interval, or a cut-off node would try twenty times a second.
                hung = pump.now() - sent_at >= KEEPALIVE_TIMEOUT_S / 2
                pause = RETRY_AFTER_FAILURE_S if hung else KEEPALIVE_S
                continue
            if ttl <= 0:  # it ended while etcd did not hear from us: our keys are gone
                self.lease = 0
                self.membership.etcd_failed(pump.now(), "the lease had ended")
            else:
                self.membership.etcd_renewed(pump.now(), sent_at)
            self._decided()

    # -- etcd's records ------------------------------------------------------------------------
    def _member_put(self, kv: KeyValue) -> None:
        self.membership.member_record(pump.now(), _last(kv.key), True)
        self._decided()

    def _member_gone(self, key: bytes, revision: int) -> None:
        self.membership.member_record(pump.now(), _last(key), False)
        self._decided()

    def _address_put(self, kv: KeyValue) -> None:
        address = IPv6Address(_last(kv.key))  # ValueError: counted as malformed
        holder = kv.value.decode(errors="replace")
        self.membership.address_record(pump.now(), address, holder, kv.mod_revision)
        self._decided()

    def _address_gone(self, key: bytes, revision: int) -> None:
        try:
            address = IPv6Address(_last(key))
        except ValueError:
            return
        self.membership.address_record(pump.now(), address, None, revision)
        self._decided()

    # -- the core's decisions ------------------------------------------------------------------
    def _decided(self) -> None:
        while (event := self.membership.next_event()) is not None:
            if isinstance(event, Claim):
                self._claim_soon(event)
            elif isinstance(event, Hold):
                self._link_ops[0].send_nowait(("hold", event.address))
            elif isinstance(event, Release):
                log.warning("cluster: releasing %s: %s", event.address, event.reason)
                self._link_ops[0].send_nowait(("release", event.address))
            elif isinstance(event, Health):
                self._health(event)
        self._wake.set()

    def _claim_soon(self, claim: Claim) -> None:
        try:
            self._claims[0].send_nowait(claim)
        except trio.WouldBlock:
            self.drops("claims_backlogged")  # the core asks again after CLAIM_RETRY_S

    async def _claimer(self) -> None:
        """Each claim: a compare-and-swap of the address record to this node, bound to our
        lease; the outcome (etcd's record when another node won) goes back to the core."""
        async for claim in self._claims[1]:
            if self.lease == 0:
                continue  # a record with no lease would never expire; the core asks again
            key = self.address_key
            try:
                result = await self.etcd.txn(
                    {key: claim.revision},
                    [Put(key, self.cfg.node_id.encode(), lease=self.lease)],
                )
            except EtcdError as exc:
                # Outcome unknown: the watch brings the record if it was written (naming us,
                # the core claims again and holds), and the core retries otherwise.
                self.counters("claims_unanswered")
                self.ratelog(logging.WARNING, "claim", "claim not answered", error=exc)
                continue
            now = pump.now()
            if result.succeeded:
                self.counters("claims_won")
                self.membership.claim_done(now, claim.address, True, None, result.revision)
            else:
                self.counters("claims_lost")
                current = result.current[0] if result.current else None
                holder = current.value.decode(errors="replace") if current else None
                revision = current.mod_revision if current else result.revision
                self.membership.claim_done(now, claim.address, False, holder, revision)
            self._decided()

    def _health(self, health: Health) -> None:
        if health.state == "ok":
            log.info("cluster: healthy")
        else:
            log.warning("cluster: degraded: %s", health.reason)

    # -- holding the address on the link -------------------------------------------------------
    async def _link_worker(self, na: socket.socket, arp: socket.socket | None) -> None:
        """Hold and release in the order decided (netlink blocks: a thread each); while
        holding, renew the address (and send the next NA) every ADDRESS_RENEW_S."""
        nas_left = 0
        ops = self._link_ops[1]
        while True:
            op = "renew"
            with pump.time_limit(ADDRESS_RENEW_S):
                op, _ = await ops.receive()
            if op == "hold":
                # The address first, and the router told at once: the BRRs that adopting
                # sends ask for BUs, which must reach this node, not the dead one.
                self.holding = True
                await self._set_address(True)
                self._send_na(na, arp)
                nas_left = NA_COUNT - 1
                self._adopt()
                self.on_link = True
                continue
            if op == "leave":
                # A clean stop: off the link from here, never renewed again.
                self.on_link = False
                if self.holding:
                    self.holding = False
                    await self._set_address(False)
                self._left.set()
                return
            elif op == "renew" and self.holding:
                await self._set_address(True)
            elif op == "release" and self.handing_over:
                continue  # serve until the successor holds the address (leave())
            elif op == "release":
                self.on_link = False
                await self._set_address(False)
                self._release()
                nas_left = 0
                continue
            if self.holding and nas_left > 0:
                nas_left -= 1
                self._send_na(na, arp)

    async def _set_address(self, present: bool) -> None:
        """The home-agent address (and the cluster's IPv4 address) on the home link, or off."""
        link = self.cfg.home_link
        addresses = [str(self.address)]
        if self.cfg.ipv4_address is not None:
            addresses.append(str(self.cfg.ipv4_address))
        for address in addresses:
            try:
                if present:
                    await trio.to_thread.run_sync(
                        netlink.hold_address, link, address, ADDRESS_LIFETIME_S
                    )
                else:
                    await trio.to_thread.run_sync(netlink.drop_address, link, address)
            except (netlink.NetlinkFailure, OSError) as exc:
                self.drops("address_change_failed")
                self.ratelog(logging.ERROR, "address", "address not changed", error=exc)

    def _send_na(self, sock: socket.socket, arp: socket.socket | None) -> None:
        """Tell the home link's neighbors the address is here now: an unsolicited NA with
        Override (RFC 4861 §7.2.6), and an ARP announcement for the IPv4 address (RFC 5227)."""
        packet = unsolicited_na(self.address.packed, self.link_mac, router=True)
        try:
            sock.sendto(packet, (ALL_NODES, 0, 0, self.link_index))
            self.counters("unsolicited_na_sent")
        except OSError as exc:
            self.drops("na_send_failed")
            self.ratelog(logging.WARNING, "na", "neighbor advertisement not sent", error=exc)
        if arp is None or self.cfg.ipv4_address is None:
            return
        try:
            arp.send(arp_announcement(self.cfg.ipv4_address.packed, self.link_mac))
            self.counters("arp_announcements_sent")
        except OSError as exc:
            self.drops("arp_send_failed")
            self.ratelog(logging.WARNING, "arp", "ARP announcement not sent", error=exc)

    def _adopt(self) -> None:
        """Serve every record; with the SAs a stopping holder handed us where we have them
        (the mobile node goes on as it was), else the core asks for a new registration."""
        now = pump.now()
        adopted = keyed = 0
        for hoa in list(self.replicator.records):
            state = None if self.sas is None else self.sas.take(IPv6Address(hoa).packed, now)
            try:
                served = self.core.adopt_replica(
                    now, self.replicator.record(hoa), keyed=state is not None
                )
            except ValueError:
                self.drops("adopt_malformed")
                continue
            adopted += served
            if served and state is not None and self.esp is not None:
                if self.esp.restore(state, now):
                    keyed += 1
                else:  # keyed here already: cannot happen for a binding just adopted
                    self.core.request_refresh(IPv6Address(hoa))
        if self.sas is not None:
            self.sas.forget_parked()  # for bindings gone since: no use, and keys
        self._flush()
        self.counters("adopted_with_sas", keyed)
        log.info(
            "cluster: holding %s; serving %d replicated bindings (%d with handed-over SAs)",
            self.address,
            adopted,
            keyed,
        )

    def _release(self) -> None:
        self.holding = False
        self._urgent.clear()
        self._lazy.clear()
        served = self.core.release_all()
        self._flush()
        log.warning("cluster: gave up %s; %d bindings no longer served here", self.address, served)

    # -- writing this node's records -----------------------------------------------------------
    def changed(self, urgent: set[IPv6Address]) -> None:
        """After the HA pump's flush: what the core changed; ``urgent`` (created, moved or
        deleted) is written at once, the rest (refreshes) within REFRESH_BATCH_S."""
        changed = self.core.take_changed()
        if not self.holding or not changed:
            return
        now = pump.now()
        for hoa in changed:
            if hoa in urgent:
                self._urgent.add(hoa)
            else:
                self._lazy.setdefault(hoa, now)
        self._write_wanted.set()

    async def _writer(self) -> None:
        while True:
            await self._write_wanted.wait()
            self._write_wanted = trio.Event()
            if not self._urgent and self._lazy:
                due = min(self._lazy.values()) + REFRESH_BATCH_S
                await pump.wait_for(self._write_wanted, max(0.0, due - pump.now()))
            hoas = self._urgent | set(self._lazy)
            self._urgent.clear()
            self._lazy.clear()
            if not hoas or not self.holding:
                continue
            fence = self._fence()
            if fence is None:
                continue  # etcd does not (yet) name us as the holder: nothing of ours to write
            records = {str(h): self._record(h) for h in hoas}
            try:
                lost = await self.replicator.write_many(records, fence)
            except EtcdError as exc:
                # Outcome unknown or refused (etcd lost its majority): the bindings are served
                # meanwhile, and their records written again, as they are then, once etcd
                # answers (a compare-and-swap: if the first attempt did land, the retry loses
                # the race and the watch shows the record).
                self.drops("record_write_failed")
                self.ratelog(logging.WARNING, "write", "binding records not written", error=exc)
                self._urgent |= hoas
                self.pending_writes = len(self._urgent)
                await pump.sleep(WRITE_RETRY_S)
                self._write_wanted.set()
                continue
            if lost and self.replicator.fenced:
                # Another node claimed the address since (we were cut off): its records stand,
                # ours are history; the core releases once the watch brings its claim.
                self.drops("record_write_fenced", len(lost))
                self.ratelog(
                    logging.WARNING,
                    "fenced",
                    "binding records not written: another node holds the address now",
                )
            elif lost:
                # Our own earlier write whose outcome was unknown did land (only the holder
                # writes, fenced by its claim): etcd's answer updated the revision we expect;
                # write again what the core holds now, or a record the mobile node has since
                # changed would stay.
                self.drops("record_write_raced", len(lost))
                self._urgent |= {IPv6Address(h) for h in lost}
                self._write_wanted.set()
            self.pending_writes = len(self._urgent) + len(self._lazy)

    def _fence(self) -> tuple[bytes, int] | None:
        """The address record of our claim, as etcd's revision of it: every write of ours
        requires it unchanged. None when etcd's record does not name us."""
        record = self.membership.records.get(self.address)
        if record is None or record.holder != self.cfg.node_id:
            return None
        return self.address_key, record.revision

    def _record(self, hoa: IPv6Address) -> dict[str, Any] | None:
        record = self.core.replication_record(hoa)
        if record is None:
            return None
        return {**record, "owner": self.cfg.node_id}

    # -- a clean stop --------------------------------------------------------------------------
    async def leave(self) -> None:
        """Planned stop. Holding the address: hand it to the live peer that would take it
        (its record rewritten to name that peer, who claims it on its own lease) and keep
        serving until that peer announces it holds the address (it has put it on its link,
        told the router and adopted the bindings), at most HANDOVER_WAIT_S: make before break.
        Then the address comes off and the lease ends, so nothing waits for our silence."""
        if self.holding and (successor := self._successor()) is not None:
            handed = await self._hand_over(successor)
            log.info(
                "cluster: %s %s to %s",
                "handed" if handed else "could not hand",
                self.address,
                successor,
            )
        self._link_ops[0].send_nowait(("leave", None))
        await pump.wait_for(self._left, ADDRESS_LIFETIME_S)
        if self.lease:
            with pump.time_limit(self.cfg.etcd_timeout_s), contextlib.suppress(EtcdError):
                await self.etcd.revoke(self.lease)

    def _successor(self) -> str | None:
        m = self.membership
        now = pump.now()
        peers = [n for n in m.live(now) if n != self.cfg.node_id and m.peers[n].etcd_ok]
        return first_for(self.address, peers) if peers else None

    async def _hand_over(self, successor: str) -> bool:
        self.handing_over = True  # a Release from now on leaves the address and bindings be
        self._successor_holds = trio.Event()
        self._successor_id = successor
        await self._send_sas(successor, final=False)  # before the record: it adopts with them
        key = self.address_key
        try:
            # No lease: the successor's claim binds the record to its own.
            result = await self.etcd.txn(
                {key: self.addresses.known.get(key, 0)}, [Put(key, successor.encode())]
            )
        except EtcdError as exc:
            log.warning("cluster: hand-over of %s not written: %s", self.address, exc)
            return False
        if not result.succeeded:
            return False
        held = await pump.wait_for(self._successor_holds, HANDOVER_WAIT_S)
        if held:  # what we opened meanwhile is a replay there too; we open nothing more
            await self._send_sas(successor, final=True)
            self.handed = True
        return held

    async def _send_sas(self, successor: str, *, final: bool) -> None:
        """Our SAs (``final``: our inbound windows) to ``successor``; a failure only costs
        each mobile node a new registration, as after a crash."""
        peer = self.peer_links.get(successor)
        if self.sas is None or peer is None:
            return
        try:
            sent = await self.sas.send(peer, successor, final=final)
        except Exception as exc:  # whatever it was, the stop goes on: the address must go
            self.drops("sa_transfer_failed")
            log.warning("cluster: SAs not handed to %s: %s", successor, exc)
            return
        log.info(
            "cluster: %s of %d bindings handed to %s",
            "windows" if final else "SAs",
            sent,
            successor,
        )

    @property
    def serving(self) -> bool:
        """Whether the daemon answers for the address: held, and not handed over yet (after
        the final windows an ESP packet we cannot open must not make us send a BRR)."""
        return self.holding and not self.handed

    # -- inspection ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        m = self.membership
        now = pump.now()
        return {
            "name": self.cfg.name,
            "node": self.cfg.node_id,
            "state": m.health.state,
            "reason": m.health.reason,
            "holds": [str(a) for a in sorted(m.held)],
            "address": str(self.address),
            "ipv4_address": None if self.cfg.ipv4_address is None else str(self.cfg.ipv4_address),
            "live": m.live(now),
            "members": sorted(m.members | {self.cfg.node_id}),
            "holders": {str(a): r.holder for a, r in sorted(m.records.items())},
            "etcd": {
                "endpoints": [_without_userinfo(e) for e in self.cfg.etcd_endpoints],
                "reachable": m.etcd_ok,
                "revision": max(
                    f.revision for f in (self.replicator, self.addresses, self.members)
                ),
                "lease": f"{self.lease:x}",
                "error": self.replicator.error or self.addresses.error or self.members.error,
            },
            "replicas": len(self.replicator.records),
            "pending_writes": self.pending_writes,
            "replication": self.replicator.counters,
            "counters": dict(self.counters),
            "drops": dict(self.drops),
        }

    def replica_views(self) -> list[dict[str, Any]]:
        """Every binding record etcd holds, as ``mipnode bindings`` lists them."""
        out = []
        for hoa in sorted(self.replicator.records):
            record = self.replicator.record(hoa) or {}
            binding = record.get("binding") or {}
            out.append(
                {
                    "home_address": hoa,
                    "owner": record.get("owner"),
                    "care_of_address": binding.get("care_of_address"),
                    "sequence": binding.get("sequence"),
                    "via": binding.get("via"),
                    "state": binding.get("state"),
                    "expires_at": binding.get("expires_at"),
                }
            )
        return out


def _without_userinfo(url: str) -> str:
    """A URL as status shows it: never a ``user:password@`` it may carry."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2]


def _last(key: bytes) -> str:
    return key.rsplit(b"/", 1)[-1].decode(errors="replace")


def _announce_socket(link: str, index: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    return sock


def _arp_socket(link: str) -> socket.socket:
    """A packet socket that sends whole Ethernet frames on ``link`` and receives nothing
    (protocol 0)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setblocking(False)
        sock.bind((link, 0))
    except OSError:
        sock.close()
        raise
    return sock
