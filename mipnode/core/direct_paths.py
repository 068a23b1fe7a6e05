"""D-udp with every peer: one ICE agent per peer, offers and answers, retries, restarts (sans-IO).

Theory of operation (DESIGN §2, §4). A node keeps one :class:`~ice.agent.IceAgent` per peer: on
a mobile node one controlling agent per correspondent it offers direct paths to, on a
correspondent (and on a mobile node answering another mobile node) one controlled agent per home
address that offered. The mobile node, the correspondent and the mobile node's correspondent role
all use this one engine; their node cores carry its messages.

* **Local candidates** are the node's UDP sockets (host candidates, :meth:`DirectPaths.
  set_local_candidates`) and, on a mobile node, the addresses the home agent saw them come from
  (server-reflexive candidates, learnt from the home path's checks on the same sockets).
  Offers wait for that gathering (:meth:`DirectPaths.gathering_done`, at most ``gather_wait_s``)
  so a peer behind a NAT can aim at our mapped address at once.
* **Offer and answer** carry credentials and candidates as M-ICE TLVs in an Experimental
  Mobility Header (MH 11, RFC 5096, :mod:`mipnode.wire.mice`). The node core addresses them
  (home address <-> correspondent, through the home agent, like HoTI/HoT). An offer is repeated
  every ``offer_retry_s`` until answered and a pair is checked, at most ``offer_tries`` times in
  a row, then again after ``OFFER_PAUSE_S``; every offer received is answered (the answer may
  have been lost). Offers are padded to OFFER_SIZE ("Bounds").
  An offer with another ufrag from a peer whose description we hold is an ICE restart (it
  moved, or lost consent): its agent starts afresh, even when we had offered too; a late copy
  of an earlier description (a ufrag it replaced) is ignored. While the current agent has a
  selected pair the restart is make-before-break: nothing authenticates an offer (anyone can
  forge the peer's address), so the new agent runs beside the old one (``_Peer.pending``, one
  at most) and replaces it only when it selects a pair, i.e. when the peer has proved it holds
  the password of our answer, which went to the peer's own address; or when the old pair dies.
  A forged offer thus costs a working pair nothing. Offers crossing ours (two mobile
  nodes starting at once) are taken as the answer, and a peer that repeats its crossing offer
  lacks ours: it gets our description again (at most once per ``offer_retry_s``); the role
  conflict of RFC 8445 §7.3.1.1 settles who yields.
* **Selection** is the agent's (two-way authenticated checks, heartbeats, death within 3 s,
  re-probes within 30 s). :class:`DirectPathChanged` tells the node core which pair, if any,
  data to a peer uses; without one it goes through the home agent.
* **Consent lost** on the controlling side means an ICE restart: new credentials, a new offer.
* **Bounds**: at most ``max_peers`` peers (each agent at most 100 pairs); a new peer beyond it is
  refused and counted. Amplification at most 1 (issue 12): until a peer that offered has proved
  it holds our password, its agent's checks may add up to no more octets than that peer's
  descriptions did (``_Peer.budget``); the rest are not sent (``checks_over_budget``). A forged
  offer naming someone else's addresses thus draws no more than it brought; a genuine peer
  proves itself with its first check, usually within a round trip of our answer.
* **Protection** (``suite``): every agent gets a fresh ephemeral X25519 key and inbound SPI, and
  every description it sends carries them (M-ICE KeyShare). With the peer's share the keys of
  the pair's ESP SAs follow (core/esp_keys.py ``derive_direct``) and ride on
  :class:`DirectPathChanged`; the private key is dropped at once. ``require_keys`` (a mobile
  node with protection) refuses a description without a usable share, so no clear D-udp path
  ever forms; an answerer adopts the offer's suite. An ICE restart rekeys.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from ice.agent import (
    ConsentLost,
    Credentials,
    IceAgent,
    IceConfig,
    OutgoingDatagram,
    PathLost,
    PathSelected,
    Probe,
    new_credentials,
)
from ice.candidate import Candidate, CandidateType, TransportAddress, transport_address
from ice.checklist import CandidatePair
from mipnode.core.esp_keys import DirectSide, Ephemeral, EspKeys, derive_direct, inbound_spi
from mipnode.wire import mice
from mipnode.wire.errors import BadPacket
from mipnode.wire.keyshare import KeyShare
from mipnode.wire.mh import ExperimentalMessage, ExperimentalOption, MobilityOption

RandomBytes = Callable[[int], bytes]

# Implementation constants
OFFER_RETRY_S = 1.0
OFFER_TRIES = 8
OFFER_PAUSE_S = 30.0  # a round of OFFER_TRIES unanswered: the next round this much later
GATHER_WAIT_S = 0.5  # an offer waits at most this long for our server-reflexive addresses
MAX_PEERS = 64  # agents at once (each up to 100 pairs)
MAX_CHANGES = 20  # per peer, the path change log shown by `mipnode paths`
OLD_UFRAGS = 8  # per peer, earlier ufrags of its descriptions (late copies are ignored)
MAX_REMOTE_CANDIDATES = 8  # per description: no peer makes us check dozens of addresses
NEW_PEERS_PER_S = 2.0  # peers created by offers, on average ...
NEW_PEERS_BURST = 16.0  # ... with this burst
ANSWERED_IDLE_S = 60.0  # a peer that offered, never got a pair and fell silent is forgotten
IPV6_MH_OVERHEAD = 40 + 8  # an offer's IPv6 and Mobility Header around its options
IPV6_UDP_OVERHEAD = 40 + 8  # a check's IPv6 and UDP headers around its STUN message
# An offer's size, padded: what the answering side may spend on checks before we prove
# ourselves (about eight). Inner packet of the tunnel to the HA: room for ESP-in-UDP over IPv6
# (~100 octets) under the 1,280 octets every IPv6 path carries.
OFFER_SIZE = 1100


@dataclass(frozen=True, slots=True)
class DirectPathChanged:
    """Data to ``peer`` now uses ``pair`` (``None``: back through the home agent)."""

    peer: IPv6Address
    pair: CandidatePair | None
    reason: str
    keys: EspKeys | None = field(default=None, repr=False, compare=False)  # seal with these


@dataclass(frozen=True, slots=True)
class Signalling:
    """An offer or answer for ``peer``; the node core sends it as an MH 11 packet."""

    peer: IPv6Address
    message: ExperimentalMessage


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a path change log (monotonic ``at``; views convert it for people)."""

    at: float
    old: str | None
    new: str | None
    reason: str


@dataclass(slots=True)
class _Peer:
    address: IPv6Address  # the correspondent (MN side) or the home address (CN side)
    agent: IceAgent
    offered: bool  # we started it (controlling, offer sent) rather than answered
    answered: bool = False
    offers_sent: int = 0
    next_offer_at: float | None = None
    pending_offer: bool = False  # waiting for gathering before the first offer
    replied_at: float | None = None  # our description last sent back to a repeated one
    heard_at: float = 0.0  # its last description
    old_ufrags: deque[str] = field(default_factory=lambda: deque(maxlen=OLD_UFRAGS))
    since: float | None = None  # when the selected pair was selected
    changes: deque[Change] = field(default_factory=lambda: deque(maxlen=MAX_CHANGES))
    ephemeral: Ephemeral | None = None  # this agent's X25519 key, until the peer's share came
    share: KeyShare | None = None  # ours, in every description of this agent
    keys: EspKeys | None = field(default=None, repr=False)  # once both shares are known
    keys_told: bool = False  # handed out once: installing an SA twice would reuse its nonces
    pending: _Peer | None = None  # a restart's new agent, until its peer proves itself
    budget: int | None = None  # octets its checks may still send unproven (None: no limit)


class DirectPaths:
    """Every peer's ICE agent, the signalling that feeds them, and the selected pairs."""

    def __init__(
        self,
        *,
        controlling: bool,
        random_bytes: RandomBytes,
        config: IceConfig | None = None,
        max_peers: int = MAX_PEERS,
        offer_retry_s: float = OFFER_RETRY_S,
        offer_tries: int = OFFER_TRIES,
        suite: int | None = None,
        require_keys: bool = False,
        answers_only: bool = False,
    ) -> None:
        """``suite``: key every pair for ESP with this suite (None: no key exchange);
        ``require_keys``: refuse descriptions without a usable key share (module docstring);
        ``answers_only``: take no offer, only answers to ours (a mobile router's agents for
        the hosts behind it, core/mn_hosts.py)."""
        self._answers_only = answers_only
        self._suite = suite
        self._require_keys = require_keys and suite is not None
        self._controlling = controlling
        self._random = random_bytes
        self._config = config or IceConfig()
        self._max_peers = max_peers
        self._offer_retry_s = offer_retry_s
        self._offer_tries = offer_tries
        self._peers: dict[IPv6Address, _Peer] = {}
        self._hosts: list[Candidate] = []
        self._srflx: dict[TransportAddress, Candidate] = {}
        self._gathering_until: float | None = None
        self._signalling: list[Signalling] = []
        self._bucket = NEW_PEERS_BURST
        self._bucket_at: float | None = None
        self._events: deque[DirectPathChanged] = deque()
        self._counters: Counter[str] = Counter()
        self._size = 0  # octets of the description being handled (receive_signalling)

    # -- local candidates ------------------------------------------------------------------

    def set_local_candidates(
        self, now: float, hosts: list[TransportAddress], *, gathering: bool = False
    ) -> None:
        """Our UDP sockets, most preferred first. A move replaces them: every peer gets an ICE
        restart with the new ones, offered by us (a peer that had offered to us, another mobile
        node, learns our new candidates at once instead of after its consent runs out).

        ``gathering``: server-reflexive addresses may still come (:meth:`add_server_reflexive`);
        offers wait for :meth:`gathering_done` or ``GATHER_WAIT_S``.
        """
        self._hosts = [
            Candidate.host(transport_address(*h), local_pref=65535 - 256 * rank)
            for rank, h in enumerate(hosts)
        ]
        self._srflx.clear()
        self._gathering_until = now + GATHER_WAIT_S if gathering else None
        for p in list(self._peers.values()):
            p.offered = True
            self._restart(now, p, "moved")

    def add_server_reflexive(
        self, base: TransportAddress, mapped: TransportAddress, server: str
    ) -> None:
        """The home agent saw our socket ``base`` as ``mapped``: a server-reflexive candidate,
        advertised in every offer and answer from now on (RFC 8445 §5.1.1.2)."""
        host = next((h for h in self._hosts if h.address == transport_address(*base)), None)
        if host is None or transport_address(*mapped) == host.address:
            return
        srflx = Candidate.server_reflexive(
            transport_address(*mapped),
            host.address,
            server_ip=server,
            local_pref=(host.priority >> 8) & 0xFFFF,
        )
        if self._srflx.get(host.address) == srflx:
            return
        self._srflx[host.address] = srflx
        for p in self._peers.values():
            p.agent.add_local_candidate(srflx)

    def gathering_done(self, now: float) -> None:
        """Every server-reflexive address we will learn is known: send waiting offers now."""
        if self._gathering_until is not None:
            self._gathering_until = None
            self._send_pending_offers(now)

    # -- commands --------------------------------------------------------------------------

    def start(self, now: float, peer: IPv6Address) -> bool:
        """Offer direct paths to ``peer`` (controlling). False: no room or no local candidate."""
        if peer in self._peers:
            return True
        if len(self._peers) >= self._max_peers or not self._hosts:
            self._counters["start_refused"] += 1
            return False
        p = _Peer(peer, self._new_agent(self._controlling), offered=True)
        self._arm(p)
        self._peers[peer] = p
        self._counters["peers_started"] += 1
        p.pending_offer = True
        self._send_pending_offers(now)
        return True

    def stop(self, now: float, peer: IPv6Address) -> None:
        """Forget ``peer``; data to it goes through the home agent again."""
        p = self._peers.pop(peer, None)
        if p is not None and p.agent.selected_pair() is not None:
            self._change(now, p, None, "stopped")

    def restart(self, now: float, peer: IPv6Address, reason: str) -> None:
        """An ICE restart toward ``peer`` (new credentials, new keys), as the offerer."""
        p = self._peers.get(peer)
        if p is not None:
            p.offered = True
            self._restart(now, p, reason)

    def resend_offers(self, now: float) -> int:
        """Offers not answered yet, again now (after a move the first offer can leave before
        the home agent knows the new care-of address; its ingress filter rightly drops it)."""
        resent = 0
        for p in self._peers.values():
            if p.offered and not p.answered and not p.pending_offer:
                self._send_offer(now, p)
                resent += 1
        return resent

    # -- the five verbs --------------------------------------------------------------------

    def receive_signalling(self, now: float, peer: IPv6Address, msg: ExperimentalMessage) -> None:
        self._size = IPV6_MH_OVERHEAD + _size(msg.options)
        self._receive_signalling(now, peer, msg)

    def _receive_signalling(self, now: float, peer: IPv6Address, msg: ExperimentalMessage) -> None:
        """An offer from ``peer``, or the answer to ours (a mobile node answers offers of other
        mobile nodes like a correspondent). Rules (issue 12, module docstring): an answer
        counts only for the offer it names (AnswerTo our current ufrag); an answer is never
        answered; new peers from offers come within a budget."""
        try:
            items = mice.mice_from_options_untrusted(msg.options)
        except BadPacket as exc:
            self._drop(f"mice_{exc.reason}")
            return
        creds = next((i for i in items if isinstance(i, mice.Credentials)), None)
        if creds is None:
            self._drop("mice_without_credentials")
            return
        answer_to = next((i.ufrag for i in items if isinstance(i, mice.AnswerTo)), None)
        p = self._peers.get(peer)
        if answer_to is not None:
            self._on_answer(now, p, creds, answer_to, items)
        elif self._answers_only:
            self._drop("mice_offer_to_host")
        elif self._require_keys and not any(isinstance(i, KeyShare) for i in items):
            self._drop("mice_without_key_share")  # never a clear D-udp path (no agent either)
        else:
            self._on_offer(now, peer, p, creds, items)

    def _on_answer(
        self,
        now: float,
        p: _Peer | None,
        creds: mice.Credentials,
        answer_to: str,
        items: tuple[mice.MiceItem, ...],
    ) -> None:
        if p is None or not p.offered or answer_to != p.agent.local_credentials.ufrag:
            # Not the offer we have outstanding: forged (an off-path sender never saw our
            # ufrag), or late (it answers an offer a restart replaced). Never answered back.
            self._drop("mice_unmatched_answer")
            return
        remote = p.agent.remote_credentials
        if remote is not None and remote.ufrag != creds.ufrag:
            self._drop("mice_second_answer")  # the first answer to this offer stands
            return
        if remote is None and not self._take(p, creds, items):
            return
        p.answered = True
        if p.agent.selected_pair() is not None:
            p.next_offer_at = None
        # else the offer goes on at its pace until a pair is selected: each copy lets the
        # answering side's unproven agent check as many more octets ("Bounds"), which a peer
        # behind a firewall of its own needs to open it toward us.
        p.heard_at = now
        self._pump(now, p)

    def _on_offer(
        self,
        now: float,
        peer: IPv6Address,
        p: _Peer | None,
        creds: mice.Credentials,
        items: tuple[mice.MiceItem, ...],
    ) -> None:
        if p is not None and creds.ufrag in p.old_ufrags:
            self._drop("mice_stale")  # an earlier description of the peer, late or repeated
            return
        remote = None if p is None else p.agent.remote_credentials
        pend = None if p is None else p.pending
        if pend is not None and _remote_ufrag(pend) == creds.ufrag:
            p = pend  # the restart we are answering beside the working pair, offered again
            remote = p.agent.remote_credentials
        if p is not None and remote is not None and remote.ufrag == creds.ufrag:
            if p.budget is not None:
                p.budget += self._size  # it spent these octets: its checks may spend as many
            # The same offer again: our answer was lost. Answer it again, once per retry period.
            if p.replied_at is None or now - p.replied_at >= self._offer_retry_s:
                p.replied_at = now
                self._send_description(p, answer_to=creds.ufrag)
            p.heard_at = now
            return
        if p is not None and remote is not None and p.agent.selected_pair() is not None:
            self._answer_beside(now, p, creds, items)  # make-before-break (module docstring)
            return
        if p is None or remote is not None:
            # A new peer, or an ICE restart of a known one (another ufrag: it moved).
            if p is None and not self._may_add_peer(now):
                return
            old: deque[str] = deque(maxlen=OLD_UFRAGS)
            if p is not None:
                old = p.old_ufrags
                _retire_remote(p)
                self.stop(now, peer)
            p = _Peer(peer, self._new_agent(controlling=False), offered=False)
            self._arm(p)
            p.budget = self._size
            p.old_ufrags = old
            self._peers[peer] = p
            self._counters["peers_answered"] += 1
        # else: the peer's offer crossing ours (two mobile nodes starting at once): it is the
        # peer's description for our agent too; the role conflict of RFC 8445 §7.3.1.1 settles
        # who yields, once the peer has proved it holds our password (ice/agent.py).
        if not self._take(p, creds, items):
            return
        p.heard_at = now
        p.replied_at = now
        self._send_description(p, answer_to=creds.ufrag)
        self._pump(now, p)

    def _answer_beside(
        self, now: float, p: _Peer, creds: mice.Credentials, items: tuple[mice.MiceItem, ...]
    ) -> None:
        """A restart offered while ``p``'s pair works: a new agent beside the old one."""
        if p.pending is not None:
            self._counters["restart_pending_replaced"] += 1
        pend = _Peer(p.address, self._new_agent(controlling=False), offered=False)
        self._arm(pend)
        pend.budget = self._size
        p.pending = None
        if not self._take(pend, creds, items):
            return
        pend.heard_at = pend.replied_at = now
        p.pending = pend
        self._counters["restart_pending"] += 1
        self._send_description(pend, answer_to=creds.ufrag)
        self._pump_pending(now, p)

    def _pump_pending(self, now: float, p: _Peer) -> None:
        """The pending agent's events: its first selected pair makes it the peer's agent."""
        pend = p.pending
        if pend is None or self._peers.get(p.address) is not p:
            return
        while (event := pend.agent.next_event()) is not None:
            if isinstance(event, PathSelected):
                self._promote(now, p, pend)
                self._change(
                    now,
                    pend,
                    event.pair,
                    f"{_ta(event.pair.local.base)} -> {_ta(event.pair.remote.address)} "
                    "checked (restart)",
                )
                return

    def _promote(self, now: float, p: _Peer, pend: _Peer) -> None:
        """``pend`` replaces ``p`` (the restart is genuine, or the old pair is gone)."""
        _retire_remote(p)
        pend.old_ufrags, pend.changes = p.old_ufrags, p.changes
        p.pending = None
        self._peers[p.address] = pend
        self._counters["restarts_taken"] += 1

    def _take(self, p: _Peer, creds: mice.Credentials, items: tuple[mice.MiceItem, ...]) -> bool:
        """The peer's credentials and candidates into its agent (the first description only)."""
        share = next((i for i in items if isinstance(i, KeyShare)), None)
        if not self._key(p, creds, share):
            return False
        agent = p.agent
        try:
            agent.set_remote_credentials(Credentials(creds.ufrag, creds.password))
        except ValueError:
            self._drop("mice_bad_credentials")
            return False
        added = 0
        for item in items:
            if not isinstance(item, mice.Candidate):
                continue
            if added == MAX_REMOTE_CANDIDATES:
                self._counters["mice_candidates_cut"] += 1
            elif self._add_remote(p, item):
                added += 1
        if any(isinstance(i, mice.EndOfCandidates) for i in items):
            agent.end_of_remote_candidates()
        return True

    def _key(self, p: _Peer, creds: mice.Credentials, theirs: KeyShare | None) -> bool:
        """The pair's ESP keys from the peer's share (module docstring); False: refused."""
        p.keys, p.keys_told = None, False
        ours = p.share
        if ours is None or p.ephemeral is None:
            return True  # no protection here: the pair carries data in clear
        if theirs is None:
            if self._require_keys:
                self._drop("mice_without_key_share")
                return False
            return True
        if theirs.suite != ours.suite:
            if p.offered:
                if self._require_keys:
                    self._drop("mice_other_suite")
                    return False
                return True
            ours = p.share = KeyShare(theirs.suite, ours.spi, ours.public)  # the offer's suite
        shared = p.ephemeral.shared(theirs.public)
        if shared is None:
            self._drop("mice_low_order_key")
            return False
        local = p.agent.local_credentials
        p.keys = derive_direct(
            shared=shared,
            ours=DirectSide(ours, local.ufrag, local.password),
            theirs=DirectSide(theirs, creds.ufrag, creds.password),
        )
        p.ephemeral = None  # forward secrecy: the private key is not needed any more
        self._counters["keyed"] += 1
        return True

    def _arm(self, p: _Peer) -> None:
        """A fresh key share for ``p``'s new agent (protection on)."""
        if self._suite is None:
            return
        p.ephemeral = Ephemeral(self._random(32))
        r = self._random(4)
        spi = inbound_spi(r[:2], int.from_bytes(r[2:], "big"))  # 31 random bits
        p.share = KeyShare(self._suite, spi, p.ephemeral.public)
        p.keys, p.keys_told = None, False

    def _may_add_peer(self, now: float) -> bool:
        """Unsolicited offers create state only within budget: MAX_PEERS at once, and new ones
        at most NEW_PEERS_PER_S on average (a burst of NEW_PEERS_BURST)."""
        if len(self._peers) >= self._max_peers:
            self._drop("mice_too_many_peers")
            return False
        if self._bucket_at is not None:
            refill = (now - self._bucket_at) * NEW_PEERS_PER_S
            self._bucket = min(NEW_PEERS_BURST, self._bucket + max(0.0, refill))
        self._bucket_at = now
        if self._bucket < 1:
            self._drop("mice_new_peer_rate")
            return False
        self._bucket -= 1
        return True

    def receive_datagram(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        """A STUN datagram on one of our sockets: the USERNAME names the agent; agents drop
        what is not theirs."""
        for p in list(self._peers.values()):
            p.agent.receive_datagram(now, data, local, remote)
            if p.pending is not None:
                p.pending.agent.receive_datagram(now, data, local, remote)
                self._pump_pending(now, p)
            self._pump(now, p)

    def handle_timer(self, now: float) -> None:
        if self._gathering_until is not None and now >= self._gathering_until:
            self.gathering_done(now)
        for p in list(self._peers.values()):
            if not p.offered and now >= p.heard_at + ANSWERED_IDLE_S:
                if p.agent.selected_pair() is None:
                    self.stop(now, p.address)  # frees its slot for peers that talk
                    self._counters["answered_peers_expired"] += 1
                    continue
                p.heard_at = now  # in use: look again a period later
            t = p.agent.get_timer()
            if t is not None and t <= now:
                p.agent.handle_timer(now)
            pend = p.pending
            if pend is not None and now >= pend.heard_at + ANSWERED_IDLE_S:
                p.pending = None  # never proved itself: a forged offer, or a peer that gave up
                self._counters["restart_pending_expired"] += 1
            elif pend is not None:
                t = pend.agent.get_timer()
                if t is not None and t <= now:
                    pend.agent.handle_timer(now)
                self._pump_pending(now, p)
            if p.next_offer_at is not None and p.next_offer_at <= now:
                if p.offers_sent < self._offer_tries:
                    self._send_offer(now, p)
                else:  # another round later: every copy of our description may have been lost
                    p.offers_sent = 0
                    p.next_offer_at = now + OFFER_PAUSE_S
                    self._counters["offers_unanswered"] += 1
            self._pump(now, p)

    def get_timer(self) -> float | None:
        deadlines = [self._gathering_until] if self._gathering_until is not None else []
        for p in self._peers.values():
            t = p.agent.get_timer()
            if t is not None:
                deadlines.append(t)
            if p.next_offer_at is not None:
                deadlines.append(p.next_offer_at)
            if not p.offered:  # a peer that offered, got no pair and fell silent is forgotten
                deadlines.append(p.heard_at + ANSWERED_IDLE_S)
            if p.pending is not None:
                deadlines.append(p.pending.heard_at + ANSWERED_IDLE_S)
                t = p.pending.agent.get_timer()
                if t is not None:
                    deadlines.append(t)
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list[OutgoingDatagram]:
        """STUN checks, heartbeats and answers of every agent."""
        out: list[OutgoingDatagram] = []
        for p in self._peers.values():
            out += self._within_budget(p, p.agent.datagrams_to_send(now))
            if p.pending is not None:
                out += self._within_budget(p.pending, p.pending.agent.datagrams_to_send(now))
        return out

    def _within_budget(self, p: _Peer, out: list[OutgoingDatagram]) -> list[OutgoingDatagram]:
        """What ``p``'s agent may send: all of it once the peer is proven, else what its
        descriptions paid for (module docstring, "Bounds")."""
        if p.budget is None or not out:
            return out
        if p.agent.peer_proven:
            p.budget = None
            return out
        kept = []
        for d in out:
            size = len(d.data) + IPV6_UDP_OVERHEAD
            if size <= p.budget:
                p.budget -= size
                kept.append(d)
            else:
                self._counters["checks_over_budget"] += 1
        return kept

    def signalling_to_send(self) -> list[Signalling]:
        """Offers and answers queued since the last call."""
        out, self._signalling = self._signalling, []
        return out

    def next_event(self) -> DirectPathChanged | None:
        return self._events.popleft() if self._events else None

    # -- inspection ------------------------------------------------------------------------

    @property
    def peers(self) -> list[IPv6Address]:
        return list(self._peers)

    def selected(self, peer: IPv6Address) -> CandidatePair | None:
        p = self._peers.get(peer)
        return None if p is None else p.agent.selected_pair()

    def pairs(self, peer: IPv6Address) -> list[CandidatePair]:
        p = self._peers.get(peer)
        return [] if p is None else p.agent.pairs()

    def offer_ufrag(self, peer: IPv6Address) -> str | None:
        """The ufrag of our description for ``peer`` (what an answer must name)."""
        p = self._peers.get(peer)
        return None if p is None else p.agent.local_credentials.ufrag

    def keyed(self, peer: IPv6Address) -> bool:
        """Whether the pairs with ``peer`` carry ESP (both shares known)."""
        p = self._peers.get(peer)
        return p is not None and p.keys is not None

    def since(self, peer: IPv6Address) -> float | None:
        p = self._peers.get(peer)
        return None if p is None else p.since

    def changes(self, peer: IPv6Address) -> list[Change]:
        p = self._peers.get(peer)
        return [] if p is None else list(p.changes)

    def probe(self, now: float, peer: IPv6Address) -> tuple[IceAgent | None, list[Probe], str]:
        """`mipnode ping`: one check now on the pairs with ``peer`` (IceAgent.probe), the agent
        that will hold the answers (a restart may replace the peer's meanwhile), or why none."""
        p = self._peers.get(peer)
        if p is None:
            return None, [], "no direct paths with this peer yet (they start with its traffic)"
        if p.budget is not None and not p.agent.peer_proven:
            # Its checks spend a budget until it proves our password: probes must not use it.
            return None, [], "the peer has not proven itself yet: its pairs are not probed"
        return p.agent, p.agent.probe(now), ""

    def agent_statistics(self, peer: IPv6Address) -> dict[str, int]:
        p = self._peers.get(peer)
        return {} if p is None else p.agent.statistics()

    def statistics(self) -> dict[str, int]:
        stats = dict(self._counters)
        stats["peers"] = len(self._peers)
        stats["selected"] = sum(p.agent.selected_pair() is not None for p in self._peers.values())
        return stats

    # -- internals -------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _new_agent(self, controlling: bool) -> IceAgent:
        agent = IceAgent(
            self._config,
            controlling=controlling,
            credentials=new_credentials(self._random),
            tie_breaker=int.from_bytes(self._random(8), "big"),
            random_bytes=self._random,
        )
        for c in self._hosts:
            agent.add_local_candidate(c)
        for c in self._srflx.values():
            agent.add_local_candidate(c)
        return agent

    def _restart(self, now: float, p: _Peer, reason: str) -> None:
        """RFC 8445 §9 restart with our current candidates: a new agent, a new offer."""
        if p.agent.selected_pair() is not None:
            self._change(now, p, None, reason)
        _retire_remote(p)
        p.pending = None
        p.agent = self._new_agent(self._controlling)
        self._arm(p)
        p.answered, p.offers_sent, p.next_offer_at = False, 0, None
        p.pending_offer = True
        self._counters["ice_restarts"] += 1
        self._send_pending_offers(now)

    def _send_pending_offers(self, now: float) -> None:
        if self._gathering_until is not None and now < self._gathering_until:
            return
        for p in self._peers.values():
            if p.pending_offer:
                p.pending_offer = False
                self._send_offer(now, p)

    def _send_offer(self, now: float, p: _Peer) -> None:
        self._send_description(p)
        p.next_offer_at = now + self._offer_retry_s

    def _send_description(self, p: _Peer, *, answer_to: str | None = None) -> None:
        """Our credentials and candidates: an offer, or (``answer_to``) the answer to one."""
        creds = p.agent.local_credentials
        items: list[mice.MiceItem] = [mice.Credentials(creds.ufrag, creds.password)]
        if answer_to is not None:
            items.append(mice.AnswerTo(answer_to))
        for c in p.agent.local_candidates():
            items.append(
                mice.Candidate(
                    c.foundation, c.priority, c.kind.value, ip_address(c.address[0]), c.address[1]
                )
            )
        items.append(mice.EndOfCandidates())
        if p.share is not None:
            items.append(p.share)
        p.offers_sent += 1
        self._counters["descriptions_sent"] += 1
        options = mice.mice_options(items)
        if answer_to is None:
            # An offer pays for the checks it asks of the other side ("Bounds"): padded, as
            # QUIC pads its Initial, to OFFER_SIZE octets of IPv6 packet.
            options += mice.padding_options(OFFER_SIZE - IPV6_MH_OVERHEAD - _size(options))
        self._signalling.append(Signalling(p.address, ExperimentalMessage(options)))

    def _add_remote(self, p: _Peer, item: mice.Candidate) -> bool:
        addr = item.address
        if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local:
            # Nothing a peer elsewhere can be reached at; checks there would only aim our
            # packets where the sender of the description chose (issue 12: amplification).
            self._drop("mice_unusable_candidate")
            return False
        try:
            address = transport_address(str(item.address), item.port)
            cand = Candidate(
                CandidateType(item.kind), address, address, item.priority, item.foundation
            )
            p.agent.add_remote_candidate(cand)
        except (ValueError, TypeError):
            self._drop("mice_bad_candidate")
            return False
        return True

    def _pump(self, now: float, p: _Peer) -> None:
        """Turn the agent's events into ours (and restarts)."""
        while (event := p.agent.next_event()) is not None:
            if self._peers.get(p.address) is not p:
                continue
            if isinstance(event, PathSelected):
                pair = event.pair
                self._change(
                    now, p, pair, f"{_ta(pair.local.base)} -> {_ta(pair.remote.address)} checked"
                )
            elif isinstance(event, PathLost):
                if p.agent.selected_pair() is None:
                    self._change(now, p, None, f"selected pair lost ({event.reason})")
                    if p.pending is not None:  # the old pair is gone: the restart takes over
                        self._promote(now, p, p.pending)
                        return
            elif isinstance(event, ConsentLost) and p.offered:
                # RFC 7675: that pair may not carry our traffic again without an ICE restart.
                self._restart(now, p, "consent lost")

    def _change(self, now: float, p: _Peer, pair: CandidatePair | None, reason: str) -> None:
        if pair is not None and p.answered:
            p.next_offer_at = None  # answered and checked: no more copies of our offer
        old = p.changes[-1].new if p.changes else None
        new = "D-udp" if pair is not None else None
        p.since = now if pair is not None else None
        p.changes.append(Change(now, old, new, reason))
        keys = p.keys if pair is not None and not p.keys_told else None
        p.keys_told = p.keys_told or keys is not None
        self._events.append(DirectPathChanged(p.address, pair, reason, keys))


def _size(options: tuple[MobilityOption, ...]) -> int:
    """Octets of a description's M-ICE options on the wire (the rest is ours to ignore)."""
    return sum(2 + len(o.data) for o in options if isinstance(o, ExperimentalOption))


def _remote_ufrag(p: _Peer) -> str | None:
    creds = p.agent.remote_credentials
    return None if creds is None else creds.ufrag


def _retire_remote(p: _Peer) -> None:
    """The peer's current description is replaced: a late copy of it must not count again."""
    creds = p.agent.remote_credentials
    if creds is not None and creds.ufrag not in p.old_ufrags:
        p.old_ufrags.append(creds.ufrag)


def _ta(address: TransportAddress) -> str:
    ip = ip_address(address[0])
    host = f"[{ip}]" if isinstance(ip, IPv6Address) else str(IPv4Address(ip))
    return f"{host}:{address[1]}"
