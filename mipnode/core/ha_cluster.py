"""Which node of a home-agent cluster holds which home-agent address (issue 14), pure.

docs/internals.md "Home agents in a cluster on etcd" has the design; this core is its
membership and fencing part. No I/O, clock or randomness: ``now`` comes in, decisions come out.

Inputs (the driver's): announcements heard on the home link from peers (:meth:`heard`, only
those the driver authenticated), the address records etcd holds (:meth:`address_record`, from
a range at start and the watch after), the outcome of each claim it was asked to make
(:meth:`claim_done`), and whether this node's etcd lease was renewed (:meth:`etcd_renewed`,
:meth:`etcd_failed`). Outputs: what to announce (:meth:`announcement`, every ANNOUNCE_S),
and events: :class:`Claim` (a compare-and-swap of the address's key in etcd, to this node),
:class:`Hold` (configure the address on the home link and advertise it) and :class:`Release`
(remove it), :class:`Health` when the node's view of the cluster changes.

Rules:
- A peer silent for DEAD_AFTER_S is dead, if this node hears a majority of the members etcd
  lists (a node cut off from the link hears nobody, and must not take everything); without
  that majority, only once etcd dropped the peer's member key (its lease ended: in a cluster
  of two, the only proof there is). Each address held by a dead peer (as etcd says) is claimed
  by one survivor: of the live nodes that reach etcd, the one that comes first in the
  address's own order of node ids (a hash of address and id: the addresses of a dead node
  spread over the survivors instead of all landing on one).
- An address nobody holds in etcd is claimed the same way. Until START_GRACE_S after start a
  node claims nothing: it has not heard its peers yet.
- Only a successful claim makes a node hold an address (:class:`Hold`). A record naming another
  holder for an address this node holds releases it at once: etcd decides, the link follows.
- etcd not reached: a failed request, or no keep-alive answered for ETCD_STALE_S.
- etcd lost: while no live peer reports a working etcd either (a lost majority, or everyone cut
  off alike), nothing moves and every node keeps what it holds, reporting ``degraded``. If a
  live peer still reaches etcd, this node is the one cut off: it releases everything
  RELEASE_MARGIN_S before its lease can expire (LEASE_TTL_S after the keep-alive etcd last
  answered was sent), so before etcd deletes its keys and anyone can claim them -- but not
  before a peer has reached etcd for PEERS_BACK_S (see there: a majority that comes back
  renews every lease, and one node's keep-alive may simply be the last to be answered).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from mipnode.wire.cluster_announce import Announcement

ANNOUNCE_S = 0.1
DEAD_AFTER_S = 0.5
START_GRACE_S = 0.6
LEASE_TTL_S = 3.0
RELEASE_MARGIN_S = 0.2  # a node cut off from etcd lets go this long before its lease can end
# etcd counts as not reached once no keep-alive was answered for this long (the driver sends
# one every 0.5 s), whether or not a request has failed yet: nodes whose requests hang
# on different timers (a lost majority) then all say so well before any lease can end, so no
# holder takes its peers' stale "etcd works" for being the one cut off.
ETCD_STALE_S = 0.8
# A node that does not reach etcd while a live peer does lets go of what it holds before its
# lease can end, but never before that peer has reached etcd for PEERS_BACK_S: after a lost
# majority comes back, etcd's new leader renews every lease (it ends LEASE_TTL_S after the
# election at the earliest, and a peer's keep-alive is answered within ~1 s of the election),
# while one node's keep-alive may still be waiting on a member that lags. Safe while
# PEERS_BACK_S + 1 s + RELEASE_MARGIN_S <= LEASE_TTL_S.
PEERS_BACK_S = 1.0
CLAIM_RETRY_S = 0.5  # a claim whose answer did not come (etcd slow) is asked again


@dataclass(frozen=True, slots=True)
class Claim:
    """Compare-and-swap the address's key to this node, expecting ``revision`` (0: absent)."""

    address: IPv6Address
    revision: int


@dataclass(frozen=True, slots=True)
class Hold:
    address: IPv6Address


@dataclass(frozen=True, slots=True)
class Release:
    address: IPv6Address
    reason: str


@dataclass(frozen=True, slots=True)
class Health:
    state: str  # "ok" or "degraded"
    reason: str | None


@dataclass
class _Peer:
    heard_at: float
    etcd_ok: bool  # who holds what is etcd's word, never a peer's announcement


@dataclass
class _Record:
    holder: str | None
    revision: int


@dataclass
class ClusterMembership:
    node: str
    serves: tuple[IPv6Address, ...]  # the addresses this cluster serves (configured on all)
    started_at: float
    peers: dict[str, _Peer] = field(default_factory=dict)
    records: dict[IPv6Address, _Record] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)  # nodes whose member key etcd holds
    held: set[IPv6Address] = field(default_factory=set)
    claiming: dict[IPv6Address, float] = field(default_factory=dict)  # address -> asked at
    renewed_at: float | None = None  # last successful renewal of this node's etcd lease
    peers_ok_since: float | None = None  # since when a live peer has reached etcd, unbroken
    etcd_ok: bool = False
    etcd_reason: str = "etcd not reached yet"
    health: Health = field(default_factory=lambda: Health("degraded", "etcd not reached yet"))
    _events: list[Claim | Hold | Release | Health] = field(default_factory=list)

    # -- inputs ------------------------------------------------------------------------------
    def heard(self, now: float, announcement: Announcement) -> None:
        if announcement.node == self.node:
            return  # our own, looped back
        self.peers[announcement.node] = _Peer(now, announcement.etcd_ok)
        self._decide(now)

    def address_record(
        self, now: float, address: IPv6Address, holder: str | None, revision: int
    ) -> None:
        """etcd says ``holder`` holds ``address``: its key's mod_revision; or (None) that the
        key does not exist, as of ``revision`` (a delete event's, or the revision a range was
        read at)."""
        known = self.records.get(address)
        if known is not None and known.revision > revision:
            return  # an older view than we have
        self.records[address] = _Record(holder, revision)
        if holder != self.node and address in self.held:
            self.held.discard(address)
            self._events.append(Release(address, f"etcd names {holder or 'nobody'} as its holder"))
        self._decide(now)

    def member_record(self, now: float, node: str, present: bool) -> None:
        """etcd lists ``node`` as a member (its member key, bound to its lease) or no more."""
        if present:
            self.members.add(node)
        else:
            self.members.discard(node)
        self._decide(now)

    def claim_done(
        self, now: float, address: IPv6Address, ok: bool, holder: str | None, revision: int
    ) -> None:
        """The outcome of a :class:`Claim`: on failure, etcd's record as it is now."""
        known = self.records.get(address)
        if ok and known is not None and known.revision > revision:
            ok = False  # etcd has moved on since this answer: the newer record decides
        if ok:
            self.claiming.pop(address, None)
        else:
            self.claiming[address] = now  # etcd's record decides now; retried only later
        if ok and address not in self.held:
            self.held.add(address)
            self._events.append(Hold(address))
        self.address_record(now, address, self.node if ok else holder, revision)

    def etcd_renewed(self, now: float, sent_at: float) -> None:
        """The lease keep-alive sent at ``sent_at`` was answered: etcd renewed the lease no
        earlier than that, so it cannot expire before ``sent_at + LEASE_TTL_S``."""
        self.renewed_at = max(sent_at, self.renewed_at or sent_at)
        self.etcd_ok = True
        self._decide(now)

    def etcd_failed(self, now: float, reason: str) -> None:
        self.etcd_ok = False
        self.etcd_reason = reason
        self._decide(now)

    def handle_timer(self, now: float) -> None:
        self._decide(now)

    # -- outputs -----------------------------------------------------------------------------
    def get_timer(self, now: float) -> float:
        """When a decision may change next: a peer's death, the lease's end, the end of the
        start grace, a claim's retry; at most ANNOUNCE_S away (announcements are due)."""
        deadlines = [self.started_at + START_GRACE_S]
        deadlines += [p.heard_at + DEAD_AFTER_S for p in self.peers.values()]
        deadlines += [at + CLAIM_RETRY_S for at in self.claiming.values()]
        if self.renewed_at is not None and self.held:
            deadlines.append(self._lease_end())
        if self.peers_ok_since is not None and self.held:
            deadlines.append(self.peers_ok_since + PEERS_BACK_S)
        if self.renewed_at is not None and self.etcd_ok:
            deadlines.append(self._stale_at())
        return min([d for d in deadlines if d > now] + [now + ANNOUNCE_S])

    def announcement(self) -> Announcement:
        return Announcement(self.node, tuple(sorted(self.held)), self.etcd_ok)

    def next_event(self) -> Claim | Hold | Release | Health | None:
        return self._events.pop(0) if self._events else None

    def live(self, now: float) -> list[str]:
        """Live nodes, this one included, in id order."""
        alive = [n for n, p in self.peers.items() if now - p.heard_at < DEAD_AFTER_S]
        return sorted([self.node, *alive])

    # -- decisions -----------------------------------------------------------------------------
    def _decide(self, now: float) -> None:
        if self.etcd_ok and self.renewed_at is not None and now >= self._stale_at():
            # Keep-alives still in flight (a slow etcd) prove nothing.
            self.etcd_ok = False
            self.etcd_reason = f"no keep-alive answered for {ETCD_STALE_S:g} s"
        live = self.live(now)
        peers_reach_etcd = any(self.peers[n].etcd_ok for n in live if n != self.node)
        if not peers_reach_etcd:
            self.peers_ok_since = None
        elif self.peers_ok_since is None:
            self.peers_ok_since = now
        if not self.etcd_ok:
            cut_off = peers_reach_etcd  # others reach etcd: we are the one cut off
            if cut_off and self.held and now >= self._release_at():
                for address in sorted(self.held):
                    self._events.append(Release(address, "cut off from etcd: lease ending"))
                self.held.clear()
            why = self.etcd_reason
            reason = (
                f"cut off from etcd ({why}); peers still reach it"
                if cut_off
                else f"etcd unreachable ({why}): nothing moves until it is back"
            )
            self._set_health(Health("degraded", reason))
            return
        self._set_health(Health("ok", None))
        if now < self.started_at + START_GRACE_S:
            return
        # Who may claim: live nodes that reach etcd. Whether silence on the link means death:
        # only with a majority of the members heard (a node cut off from the link hears
        # nobody and must not take everything), or once etcd dropped the silent node's member
        # key (its lease ended: the only proof a cluster of two has).
        eligible = [n for n in live if n == self.node or self.peers[n].etcd_ok]
        quorum = 2 * len(live) > len(self.members | {self.node})
        for address in self.serves:
            if address in self.held:
                continue
            record = self.records.get(address)
            holder = record.holder if record is not None else None
            if not self._should_claim(address, holder, live, eligible, quorum):
                continue
            asked = self.claiming.get(address)
            if asked is not None and now < asked + CLAIM_RETRY_S:
                continue
            self.claiming[address] = now
            # The compare-and-swap expects the key's mod_revision, 0 when it does not exist.
            expected = record.revision if record is not None and record.holder else 0
            self._events.append(Claim(address, expected))

    def _should_claim(
        self,
        address: IPv6Address,
        holder: str | None,
        live: list[str],
        eligible: list[str],
        quorum: bool,
    ) -> bool:
        if holder == self.node:
            return True  # ours in etcd but not held here (we restarted): claim it again now
        if holder is not None and holder in live:
            return False
        if not quorum and (holder is None or holder in self.members):
            return False  # without a majority heard, silence proves nothing
        return first_for(address, eligible) == self.node

    def _release_at(self) -> float:
        """When a node cut off from etcd (while its peers reach it) lets go: before its lease
        can end, and not before its peers have reached etcd for PEERS_BACK_S."""
        lease_end = -math.inf if self.renewed_at is None else self._lease_end()
        assert self.peers_ok_since is not None
        return max(lease_end, self.peers_ok_since + PEERS_BACK_S)

    def _stale_at(self) -> float:
        assert self.renewed_at is not None
        return self.renewed_at + ETCD_STALE_S

    def _lease_end(self) -> float:
        """When a node cut off from etcd lets go: RELEASE_MARGIN_S before its lease can end."""
        assert self.renewed_at is not None
        return self.renewed_at + LEASE_TTL_S - RELEASE_MARGIN_S

    def _set_health(self, health: Health) -> None:
        if health != self.health:
            self.health = health
            self._events.append(health)


def first_for(address: IPv6Address, nodes: list[str]) -> str:
    """The node that takes ``address`` when its holder is gone: the first of ``nodes`` in an
    order of their own for each address (rendezvous hashing, so one dead node's addresses
    spread over the survivors and every node computes the same answer)."""
    return min(nodes, key=lambda n: hashlib.sha256(address.packed + n.encode()).digest())
