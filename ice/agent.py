"""The M-ICE agent: connectivity checks and path selection between MN and CN (sans-IO).

Theory of operation (DESIGN §4, reference/ice.md §0.5 and §3.7). The agent checks direct UDP
pairs (D-udp) and picks the one data should use; the T path through the home agent is the
relayed candidate, never checked: while :meth:`IceAgent.selected_pair` is ``None`` the driver
sends on T. Data flows on T from the first packet; a direct pair takes over only after a
two-way authenticated check on exactly that 5-tuple.

* **Checks** (RFC 8445 §7.2): Binding requests with USERNAME, PRIORITY, the role attribute with
  our tie-breaker, MESSAGE-INTEGRITY and FINGERPRINT, built and parsed by :mod:`ice.stun`. One
  new transaction per ``ta_s`` (the pacer; retransmissions and answers are not paced); the next
  one is a heartbeat when due, else a triggered check (FIFO, §7.3.1.4), else a re-probe, else
  the best waiting/frozen pair (§6.1.4.2). A check is retransmitted on the RTO ladder ``rto``,
  ``2 rto``, ``4 rto``, ... (each capped at ``rto_max_s``) with ``rto = max(rto_initial_s,
  ta_s * (waiting + in-progress))`` (§14.3 without N, as libnice): ``max_transmissions`` sends,
  and the check fails one RTO after the last (defaults: sends at 0, 0.5, 1.5, 3.5 s, failure at
  7.5 s, where RFC 8489's Rc = 7 / Rm = 16 would wait 39.5 s). RTT samples come only from
  transactions answered before any retransmission (Karn); they are smoothed with ``rtt_alpha``
  (RFC 6298's 1/8).
* **Answers are authenticated both ways**: a request must carry our ufrag first in USERNAME (and
  the peer's second once known) and verify with our password; a response must verify with the
  peer's password, match a transaction of ours, and come from the address the check went to and
  arrive where it left from (§7.2.5.2.1), else the check fails. Anything else is dropped and
  counted (``drop_<reason>`` in :meth:`IceAgent.statistics`); nothing unauthenticated changes
  state, and bytes that are not STUN never raise.
* **Proof** (issue 12): an answer to our check is signed with the password the peer's
  description brought, which any sender of a description can make up. So no pair is selected
  until the peer has proved it holds *our* password, by a check of its own that verifies with
  it (checks, answers and role switches go on: a role alone selects nothing, and behind an
  address-dependent NAT a 487 may be the first thing we hear). A forged offer thus gets no
  path, and an off-path sender, who never sees our description, cannot prove anything.
* **Roles** (§7.3.1.1, §7.2.5.1): the MN is controlling. A request with the same role as ours is
  answered 487 when our tie-breaker is greater or equal, else we switch. A 487 answer switches
  us (unless we already switched since that check was sent) and re-triggers the check.
* **Selection — Tailscale's model, not "nominate once"** (reference/ice.md §0.5): the
  controlling agent selects the best *fresh* valid pair (an authenticated answer within
  ``dead_after_s``) by :mod:`ice.score` (kind, then smoothed RTT) and replaces the selected pair
  only when another beats it by the hysteresis margin. It sends USE-CANDIDATE on every check
  and heartbeat of the pair it selects; the controlled agent selects the pair most recently
  nominated once its own check on it has succeeded (a USE-CANDIDATE on a pair it has not
  validated triggers a check first), so the two follow each other without an ICE restart.
* **Heartbeats**: a Binding request on the selected pair every ``heartbeat_interval_s``, by both
  agents; each is consent (RFC 7675) and an RTT sample. They leave like any datagram of that pair
  (same local base, same remote 5-tuple), so they share the data's fate. No authenticated answer
  for ``dead_after_s`` → :class:`PathLost` (``"timeout"``), the pair fails, the selection falls
  to another fresh valid pair or to ``None`` (T), and every other pair is re-probed at once.
* **Re-probes**: every ``reprobe_interval_s`` ± ``reprobe_jitter`` (injected randomness) every
  pair that is not selected, not being checked and not out of consent gets a new check, so a
  recovered or better path is found again without an ICE restart (within 30 s).
* **Consent** (RFC 7675 §5.1) is tracked on every pair that has carried data (been selected):
  ``consent_timeout_s`` after its last authenticated answer it loses consent:
  :class:`ConsentLost`, and the agent sends nothing on it any more (no data, heartbeats, checks
  or triggered checks; answers after expiry do not restore it) until :meth:`restart`. With the
  defaults such a pair stopped carrying data long before (``dead_after_s``) and was re-probed
  meanwhile: a path back within 30 s is taken again without a restart; one silent for longer
  needs an ICE restart (a controlling driver restarts with new credentials over the T path).
  Pairs that never carried data are only ever checked, so they are re-probed forever.
* **Budgets**: at most ``max_pairs`` pairs (the lowest-priority unchecked pair makes room for a
  better one); no data and no heartbeats on a pair that is not valid and fresh; pacing never
  below 20 ms; amplification <= 1: the agent answers only authenticated requests, with one
  datagram no larger than the request. A minimal valid request has a header (20), USERNAME of
  at least "abcd:efgh" (16), PRIORITY (8), MESSAGE-INTEGRITY (24) and FINGERPRINT (8): 76
  octets; the largest answer, a success with an IPv6 XOR-MAPPED-ADDRESS or a 487, is 76
  octets. Each answer is compared with its request anyway (``amplification_suppressed``). A
  triggered check is at most one per pair at a time and goes through the pacer; a peer's
  check on a pair we are still checking for the first time cancels our check (§7.3.1.4:
  its answer still counts) so a check lost at a stateful firewall is repeated at once.

* **Lite peers** (:meth:`IceAgent.for_lite_peer`): the home path is a check list too (DESIGN
  §4), against the ICE-lite home agent, which answers plain Binding requests and never checks
  back. Such an agent has no credentials; its owner adds each pair explicitly with its path
  kind (:meth:`IceAgent.add_pair`: ``T-native``, ``T-udp``), its checks are unsigned padded
  Binding requests (:func:`ice.stun.binding_request`) and an answer counts when it matches a
  transaction of ours (96 random bits, RFC 8489 §5) on the same 5-tuple. Everything else --
  pacing, the RTO ladder, heartbeats, death, re-probes, selection by kind then RTT with
  hysteresis -- is the same code as for a full agent. Requests from a lite peer are dropped.
* **Flap damping** (``flap_*`` in :class:`IceConfig`): a selected pair that dies soon after it
  was selected, a second time in a row, is held down before it is selected again, longer each
  time, while the peer is reachable another way; a path that dies once comes back at its next
  re-probe. ``retry_unselected_s`` re-checks faster while nothing is selected (a lite agent's
  check list has no T path behind it).
* **Confirmation** (:meth:`IceAgent.path_confirmed`): an authenticated message that arrived on a
  pair (the home agent's Binding Acknowledgement on the home path) proves it as an answer to a
  check would.

Events (:meth:`IceAgent.next_event`): :class:`PathSelected`, :class:`PathLost`,
:class:`RoleChanged`, :class:`PeerReflexiveCandidate`, :class:`ConsentLost`.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from ice import stun
from ice.candidate import (
    TYPE_PREFERENCE,
    Candidate,
    CandidateType,
    TransportAddress,
    can_pair,
    foundation,
    transport_address,
)
from ice.checklist import CandidatePair, CheckList, Pair, PairState, pair_key
from ice.config import (
    TIE_BREAKER_MAX,
    TRANSACTION_ID_LENGTH,
    Credentials,
    IceConfig,
    new_credentials,
)
from ice.events import (
    ConsentLost,
    IceEvent,
    OutgoingDatagram,
    PathLost,
    PathSelected,
    PeerReflexiveCandidate,
    RoleChanged,
)
from ice.score import PathScore, is_better, path_score
from mipnode.wire.errors import BadPacket

__all__ = [
    "CandidatePair",
    "ConsentLost",
    "Credentials",
    "IceAgent",
    "IceConfig",
    "IceEvent",
    "OutgoingDatagram",
    "PairState",
    "PathLost",
    "PathSelected",
    "PeerReflexiveCandidate",
    "Probe",
    "RoleChanged",
    "new_credentials",
]


MAX_PROBES_PER_CALL = 8  # pairs one `mipnode ping` round checks (the selected one first)
MAX_PROBES = 64  # probe results kept (`mipnode ping` reads its own within a second)


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe :meth:`IceAgent.probe` sent: its transaction and the pair it went on."""

    transaction_id: bytes
    pair: CandidatePair


@dataclass(slots=True)
class _Transaction:
    transaction_id: bytes
    pair: Pair
    data: bytes
    heartbeat: bool
    controlling: bool  # our role when it was sent (stale 487s are ignored)
    use_candidate: bool
    sent_at: float
    next_at: float  # next retransmission, or when it fails / is forgotten
    rto_s: float
    transmissions: int = 1
    # Cancelled for a triggered check (§7.3.1.4): no retransmission and no failure when it
    # times out, but its answer still counts.
    cancelled: bool = False


class IceAgent:
    """A full ICE agent for one peer (one data stream, one component), sans-IO."""

    def __init__(
        self,
        config: IceConfig,
        *,
        controlling: bool,
        credentials: Credentials,
        tie_breaker: int,
        random_bytes: Callable[[int], bytes],
        lite_peer: bool = False,
    ) -> None:
        if not 0 <= tie_breaker <= TIE_BREAKER_MAX:
            raise ValueError("tie_breaker must be a 64-bit unsigned integer")
        if lite_peer and not controlling:
            raise ValueError("an agent checking a lite peer is controlling")
        self._config = config
        self._lite = lite_peer
        # The peer proved it holds our password (a check signed with it arrived): until then
        # nothing is selected, whatever answers our checks got --
        # answers are signed with the password a description brought, which anyone can make
        # up (issue 12). A lite peer has no password of ours to prove: its answers match our
        # transaction ids instead.
        self._peer_proven = lite_peer
        self._controlling = controlling
        self._local_credentials = credentials
        self._remote_credentials: Credentials | None = None
        self._tie_breaker = tie_breaker
        self._random_bytes = random_bytes
        self._local: list[Candidate] = []
        self._remote: dict[TransportAddress, Candidate] = {}
        self._end_of_candidates = False
        self._checklist = CheckList(config.max_pairs)
        self._transactions: dict[bytes, _Transaction] = {}
        self._triggered: deque[Pair] = deque()
        self._reprobes: deque[Pair] = deque()
        self._selected: Pair | None = None
        self._next_heartbeat_at: float | None = None
        self._next_reprobe_at: float | None = None
        # `mipnode ping`: transaction id -> round trip (s), "error", or None while unanswered.
        self._probes: OrderedDict[bytes, float | str | None] = OrderedDict()
        self._last_new_transaction_at = -math.inf
        self._now = 0.0
        self._outgoing: list[OutgoingDatagram] = []
        self._events: deque[IceEvent] = deque()
        self._counters: Counter[str] = Counter()

    @classmethod
    def for_lite_peer(cls, config: IceConfig, *, random_bytes: Callable[[int], bytes]) -> IceAgent:
        """An agent checking an ICE-lite peer without credentials (see the module docstring):
        add its pairs with :meth:`add_pair`."""
        return cls(
            config,
            controlling=True,
            credentials=new_credentials(random_bytes),
            tie_breaker=0,
            random_bytes=random_bytes,
            lite_peer=True,
        )

    # -- configuration and signalling -------------------------------------------------------

    @property
    def controlling(self) -> bool:
        return self._controlling

    @property
    def local_credentials(self) -> Credentials:
        return self._local_credentials

    @property
    def peer_proven(self) -> bool:
        """The peer has shown it holds our password (a check of its own verified with it)."""
        return self._peer_proven

    @property
    def remote_credentials(self) -> Credentials | None:
        return self._remote_credentials

    def local_candidates(self) -> list[Candidate]:
        return list(self._local)

    def remote_candidates(self) -> list[Candidate]:
        return list(self._remote.values())

    def add_local_candidate(self, candidate: Candidate) -> None:
        """Add one of our candidates (host, srflx or relay) and pair it with the remote ones.

        Server-reflexive candidates are kept for advertising only: their pairs would be their
        base's (RFC 8445 §6.1.2.4).

        Raises:
            ValueError: a peer-reflexive candidate (those are learnt, not added).
        """
        if candidate.kind is CandidateType.PRFLX:
            raise ValueError("local peer-reflexive candidates are not added by hand")
        if any(c.address == candidate.address and c.kind == candidate.kind for c in self._local):
            return
        self._local.append(candidate)
        if candidate.kind is CandidateType.SRFLX:
            return
        for remote in self._remote.values():
            self._pair(candidate, remote)

    def set_remote_credentials(self, credentials: Credentials) -> None:
        """The peer's ufrag and password (from its offer or answer); checks start after this."""
        self._remote_credentials = credentials

    def add_remote_candidate(self, candidate: Candidate) -> None:
        """Add a candidate the peer signalled and pair it with ours (trickle, RFC 8838).

        A signalled candidate replaces a peer-reflexive one learnt for the same address.
        Candidates after :meth:`end_of_remote_candidates` are ignored until a restart.
        """
        if self._end_of_candidates:
            self._counters["remote_candidate_after_end"] += 1
            return
        known = self._remote.get(candidate.address)
        if known is not None:
            if known.kind is CandidateType.PRFLX and candidate.kind is not CandidateType.PRFLX:
                self._replace_remote(known, candidate)
            return
        if len(self._remote) >= self._config.max_pairs:
            self._counters["remote_candidate_limit"] += 1
            return
        self._remote[candidate.address] = candidate
        for local in self._pairable_locals():
            self._pair(local, candidate)

    def add_pair(self, local: Candidate, remote: Candidate, kind: str) -> bool:
        """Check exactly ``local`` -> ``remote`` as a path of ``kind`` (a DESIGN §2 name).

        For lite peers, whose pairs the owner knows (the home candidates); no automatic pairing
        follows. False when the pair exists or the check list is full.
        """
        if not any(c.address == local.address and c.kind == local.kind for c in self._local):
            self._local.append(local)
        self._remote.setdefault(remote.address, remote)
        pair = Pair(local, remote, self._controlling, kind)
        return self._checklist.add(pair, protected=self._selected)

    def remove_pair(self, local: TransportAddress, remote: TransportAddress) -> None:
        """Stop checking ``local`` -> ``remote`` (e.g. a T-native pair found to cross a NAT);
        if it was selected it is lost (``"removed"``)."""
        pair = self._checklist.get((transport_address(*local), transport_address(*remote)))
        if pair is None:
            return
        was_selected = pair is self._selected
        if was_selected:
            self._deselect("removed")
        for txn in [t for t in self._transactions.values() if t.pair is pair]:
            del self._transactions[txn.transaction_id]
        for queue in (self._triggered, self._reprobes):
            if pair in queue:
                queue.remove(pair)
        self._checklist.remove(pair)
        self._counters["pairs_removed"] += 1
        if was_selected and self._controlling:
            alternative = self._best_fresh(self._now)
            if alternative is not None:
                self._select(self._now, alternative)

    def path_confirmed(self, now: float, local: TransportAddress, remote: TransportAddress) -> None:
        """An authenticated message arrived on ``local`` <- ``remote``: for a valid pair it
        counts as an answer to a heartbeat (liveness only: no RTT sample, no new selection)."""
        self._advance(now)
        pair = self._checklist.get((transport_address(*local), transport_address(*remote)))
        if pair is None or not pair.valid or pair.consent_lost:
            return
        if pair.last_response_at is None or now > pair.last_response_at:
            pair.last_response_at = now
            if pair.consent_expires_at is not None:
                pair.consent_expires_at = now + self._config.consent_timeout_s
            self._counters["confirmations"] += 1

    def end_of_remote_candidates(self) -> None:
        """The peer has signalled all its candidates (RFC 8838 §4)."""
        self._end_of_candidates = True

    def restart(self, now: float, credentials: Credentials) -> None:
        """ICE restart (RFC 8445 §9): new local credentials, a new check list.

        The peer's credentials and candidates are forgotten (its new offer or answer brings
        them); local candidates stay. The selected pair is lost (``"restart"``): data goes on
        the T path until the new checks validate a pair.
        """
        self._advance(now)
        if self._selected is not None:
            self._deselect("restart")
        self._local_credentials = credentials
        self._remote_credentials = None
        self._remote.clear()
        self._end_of_candidates = False
        self._checklist.clear()
        self._transactions.clear()
        self._triggered.clear()
        self._reprobes.clear()
        self._next_reprobe_at = None
        self._counters["restarts"] += 1

    # -- the five verbs -----------------------------------------------------------------------

    def receive_datagram(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        """Process one datagram that arrived on ``local`` from ``remote``; never raises.

        Anything but an authenticated check or answer of this agent is dropped and counted.
        """
        self._advance(now)
        if not stun.looks_like_stun(data):
            self._drop("not_stun")
            return
        if self._lite:
            self._receive_lite(now, data, local, remote)
            return
        remote_password = self._remote_credentials.password if self._remote_credentials else None
        try:
            local = transport_address(*local)
            remote = transport_address(*remote)
            msg = stun.parse_check_untrusted(
                data,
                local_password=self._local_credentials.password,
                remote_password=remote_password,
            )
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        except (TypeError, ValueError):
            self._drop("bad_address")
            return
        if isinstance(msg, stun.CheckRequest):
            self._handle_request(now, msg, len(data), local, remote)
        else:
            self._handle_response(now, msg, local, remote)

    def _receive_lite(
        self, now: float, data: bytes, local: TransportAddress, remote: TransportAddress
    ) -> None:
        try:
            local = transport_address(*local)
            remote = transport_address(*remote)
            answer = stun.parse_lite_answer_untrusted(data)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        except (TypeError, ValueError):
            self._drop("bad_address")
            return
        self._handle_response(now, answer, local, remote)

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``: consent, death, retransmissions, re-probes, pacing."""
        self._advance(now)
        self._expire_consent(now)
        self._check_selected_alive(now)
        self._run_transactions(now)
        self._schedule_reprobes(now)
        self._pace(now)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` has something to do (may be in the past)."""
        # Heartbeat transactions are only forgotten when they expire (purged on the next
        # call); the death deadline below is what matters for them.
        deadlines = [t.next_at for t in self._transactions.values() if not t.heartbeat]
        for pair in self._checklist:
            if pair.consent_expires_at is not None and not pair.consent_lost:
                deadlines.append(pair.consent_expires_at)
        selected = self._selected
        if selected is not None and selected.last_response_at is not None:
            deadlines.append(selected.last_response_at + self._config.dead_after_s)
        if self._next_reprobe_at is not None:
            deadlines.append(self._next_reprobe_at)
        work = self._next_work_at()
        if work is not None:
            deadlines.append(max(work, self._last_new_transaction_at + self._config.ta_s))
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list[OutgoingDatagram]:
        """Checks, heartbeats and answers queued since the last call."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> IceEvent | None:
        """The oldest pending event, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- probes (`mipnode ping`) ------------------------------------------------------------------

    def probe(
        self,
        now: float,
        kinds: frozenset[str] | None = None,
        only: tuple[TransportAddress, TransportAddress] | None = None,
    ) -> list[Probe]:
        """One check now on each pair that can carry one (of ``kinds``, or the pair ``only``
        (local base, remote); not relayed, consent not lost), outside the pacer: an operator
        asked. The selected pair first, then by priority, at most ``MAX_PROBES_PER_CALL`` (a
        peer's description names the candidates: no burst to addresses it chose). Its answer
        counts like a heartbeat's (no failure when unanswered); :meth:`probe_result` tells its
        round trip."""
        self._advance(now)
        self._expire_consent(now)
        if self._remote_credentials is None and not self._lite:
            return []
        out: list[Probe] = []
        order = self._checklist.by_priority()
        if self._selected is not None:
            order.sort(key=lambda p: p is not self._selected)  # stable: selected, then priority
        for pair in order:
            if pair.state is PairState.RELAYED or pair.consent_lost:
                continue
            if kinds is not None and pair.kind not in kinds:
                continue
            if only is not None and (pair.local.base, pair.remote.address) != only:
                continue
            if len(out) == MAX_PROBES_PER_CALL:
                break
            tid = self._start(now, pair, heartbeat=True, probe=True)
            self._probes[tid] = None
            while len(self._probes) > MAX_PROBES:
                self._probes.popitem(last=False)
            out.append(Probe(tid, pair.snapshot(pair is self._selected)))
        return out

    def probe_result(self, transaction_id: bytes) -> float | str | None:
        """The round trip (s) of a probe, ``"error"`` (an error response), ``None`` while none
        came (or it was forgotten)."""
        return self._probes.get(transaction_id)

    # -- inspection ---------------------------------------------------------------------------

    def selected_pair(self) -> CandidatePair | None:
        """The pair data must use, or ``None``: use the T path (the relayed candidate)."""
        return self._selected.snapshot(True) if self._selected is not None else None

    def pairs(self) -> list[CandidatePair]:
        """Every pair, checked and relayed, highest priority first."""
        return [p.snapshot(p is self._selected) for p in self._checklist.by_priority()]

    def statistics(self) -> dict[str, int]:
        """Counters (``checks_sent``, ``heartbeats_sent``, ``drop_<reason>``, ...) and sizes."""
        stats = dict(self._counters)
        stats["pairs"] = len(self._checklist)
        stats["valid_pairs"] = sum(p.valid for p in self._checklist)
        stats["transactions"] = len(self._transactions)
        stats["selected"] = int(self._selected is not None)
        return stats

    # -- pairing ------------------------------------------------------------------------------

    def _pairable_locals(self) -> list[Candidate]:
        return [c for c in self._local if c.kind is not CandidateType.SRFLX]

    def _pair(self, local: Candidate, remote: Candidate) -> Pair | None:
        if not can_pair(local, remote):
            return None
        if local.kind is CandidateType.RELAY and remote.kind is CandidateType.RELAY:
            return None
        pair = Pair(local, remote, self._controlling)
        if not self._checklist.add(pair, protected=self._selected):
            existing = self._checklist.get(pair.key)
            if existing is None:
                self._counters["pair_limit"] += 1
            return existing
        return pair

    def _replace_remote(self, old: Candidate, new: Candidate) -> None:
        self._remote[new.address] = new
        for pair in list(self._checklist):
            if pair.remote is old:
                pair.remote = new
                pair.foundation = f"{pair.local.foundation}:{new.foundation}"
                pair.set_role(self._controlling)

    def _learn_peer_reflexive(self, address: TransportAddress, priority: int) -> Candidate | None:
        """RFC 8445 §7.3.1.3: the source of an authenticated request we did not know."""
        if len(self._remote) >= self._config.max_pairs:
            self._counters["remote_candidate_limit"] += 1
            return None
        candidate = Candidate(
            CandidateType.PRFLX,
            address,
            address,
            min(priority, 2**31 - 1),
            foundation(CandidateType.PRFLX, address[0], str(address[1])),
        )
        self._remote[address] = candidate
        self._events.append(PeerReflexiveCandidate(candidate))
        self._counters["peer_reflexive"] += 1
        return candidate

    # -- requests -----------------------------------------------------------------------------

    def _handle_request(
        self,
        now: float,
        req: stun.CheckRequest,
        size: int,
        local: TransportAddress,
        remote: TransportAddress,
    ) -> None:
        """RFC 8445 §7.3.1: authenticate, resolve role conflicts, answer, trigger, nominate."""
        ours = self._local_credentials.ufrag
        theirs = self._remote_credentials.ufrag if self._remote_credentials else None
        prefix, sep, suffix = req.username.partition(":")
        if prefix != ours or not sep or (theirs is not None and suffix != theirs):
            self._drop("username")
            return
        if not self._peer_proven:
            self._peer_proven = True  # MESSAGE-INTEGRITY verified with our password
            self._counters["peer_proven"] += 1
            if self._controlling:
                best = self._best_fresh(now)
                if best is not None:
                    self._consider(now, best)  # what answered before now counts
        base = self._local_host(local)
        if base is None:
            self._drop("unknown_local_address")
            return
        if self._role_conflict(req):
            reply = stun.build_check_error(
                req.transaction_id,
                code=stun.ROLE_CONFLICT,
                reason="Role Conflict",
                password=self._local_credentials.password,
            )
            self._answer(reply, size, local, remote)
            self._counters["role_conflicts_answered"] += 1
            return
        known = self._remote.get(remote)
        existing = None if known is None else self._checklist.get(pair_key(base, known))
        if existing is not None and existing.consent_lost:
            # RFC 7675 §5.1: nothing of ours on this 5-tuple until an ICE restart -- answers
            # included, so the peer's checks fail too and both sides leave the pair together
            # (otherwise the peer keeps it while we are on T, a lasting split).
            self._drop("consent_lost_pair")
            return
        reply = stun.build_check_success(
            req.transaction_id, mapped=remote, password=self._local_credentials.password
        )
        self._answer(reply, size, local, remote)
        self._counters["requests_answered"] += 1
        pair = self._pair_for_request(base, remote, req.priority)
        if pair is None:
            return
        if req.use_candidate and not self._controlling:
            pair.nominated = True
            pair.nominated_at = now
        if (
            pair.state in (PairState.FROZEN, PairState.WAITING, PairState.FAILED)
            # Our first check of a pair not yet valid may have died at a stateful firewall
            # the peer's check has just opened: check again now (§7.3.1.4), not after an RTO.
            or (pair.state is PairState.IN_PROGRESS and not pair.valid)
            or (req.use_candidate and not self._controlling and not self._fresh(now, pair))
        ):
            self._trigger(pair)
        if req.use_candidate and not self._controlling:
            self._follow_nomination(now)

    def _role_conflict(self, req: stun.CheckRequest) -> bool:
        """§7.3.1.1: True when we must answer 487; may switch our role instead."""
        if self._controlling and req.ice_controlling is not None:
            if self._tie_breaker >= req.ice_controlling:
                return True
            self._switch_role(False)
        elif not self._controlling and req.ice_controlled is not None:
            if self._tie_breaker < req.ice_controlled:
                return True
            self._switch_role(True)
        return False

    def _answer(
        self, reply: bytes, request_size: int, local: TransportAddress, remote: TransportAddress
    ) -> None:
        if len(reply) > request_size:  # amplification <= 1 (never happens, see the docstring)
            self._counters["amplification_suppressed"] += 1
            return
        self._outgoing.append(OutgoingDatagram(reply, local, remote))

    def _local_host(self, address: TransportAddress) -> Candidate | None:
        for candidate in self._local:
            if candidate.kind is CandidateType.HOST and candidate.address == address:
                return candidate
        return None

    def _pair_for_request(
        self, base: Candidate, remote: TransportAddress, priority: int
    ) -> Pair | None:
        candidate = self._remote.get(remote)
        if candidate is None:
            candidate = self._learn_peer_reflexive(remote, priority)
            if candidate is None:
                return None
            for local in self._pairable_locals():
                if local is not base:
                    self._pair(local, candidate)
        if candidate.kind is CandidateType.RELAY:
            return None
        return self._pair(base, candidate)

    def _trigger(self, pair: Pair) -> None:
        """§7.3.1.4: queue a triggered check (at most one per pair at a time). A check of ours
        still in progress is cancelled: it is not retransmitted and does not fail, but its
        answer still counts. Behind a stateful firewall this matters: our first check often
        left before the peer's opened the way and was dropped; the peer's check arriving means
        the way is open now, and waiting for our retransmission would cost a whole RTO."""
        if pair in self._triggered:
            return
        if pair.transaction is not None:
            txn = self._transactions.get(pair.transaction)
            if (
                txn is not None
                and pair.valid
                and txn.transmissions < self._config.max_transmissions
            ):
                return  # a proven pair's check in progress answers for it: no churn
            if txn is not None and not txn.heartbeat:
                txn.cancelled = True
                self._counters["checks_cancelled_for_trigger"] += 1
            pair.transaction = None
        pair.state = PairState.WAITING
        self._triggered.append(pair)
        self._counters["triggered_checks"] += 1

    # -- responses ----------------------------------------------------------------------------

    def _handle_response(
        self,
        now: float,
        resp: stun.CheckResponse,
        local: TransportAddress,
        remote: TransportAddress,
    ) -> None:
        txn = self._transactions.get(resp.transaction_id)
        if txn is None:
            self._drop("unknown_transaction")
            return
        pair = txn.pair
        if remote != pair.remote.address or local != pair.local.base:
            # §7.2.5.2.1: not symmetric, the check fails (a heartbeat just does not count).
            self._drop("response_not_symmetric")
            self._finish(txn)
            if not txn.heartbeat:
                self._fail(pair)
            return
        self._finish(txn)
        if txn.transaction_id in self._probes:
            self._probes[txn.transaction_id] = now - txn.sent_at if resp.success else "error"
        if resp.error_code == stun.ROLE_CONFLICT:
            self._counters["role_conflicts_received"] += 1
            if not self._peer_proven:
                # A role switch alone selects nothing (selection waits for the proof), and
                # behind an address-dependent NAT this 487 may be all we ever hear first.
                self._counters["role_conflict_unproven"] += 1
            if txn.controlling == self._controlling:
                self._switch_role(not txn.controlling)
            if not pair.consent_lost:
                self._trigger(pair)
            return
        if not resp.success:
            self._counters[f"error_{resp.error_code}"] += 1
            if not txn.heartbeat:
                self._fail(pair)
            return
        self._succeed(now, txn, resp)

    def _succeed(self, now: float, txn: _Transaction, resp: stun.CheckResponse) -> None:
        pair = txn.pair
        pair.valid = True
        if pair.transaction is None:
            pair.state = PairState.SUCCEEDED
        pair.last_response_at = now
        if pair.consent_expires_at is not None:  # it has carried data: consent is tracked
            pair.consent_expires_at = now + self._config.consent_timeout_s
        pair.checks_answered += 1
        pair.mapped = resp.mapped
        if txn.transmissions == 1:  # Karn: only unambiguous samples
            sample = now - txn.sent_at
            alpha = self._config.rtt_alpha
            pair.rtt_s = sample if pair.rtt_s is None else (1 - alpha) * pair.rtt_s + alpha * sample
        self._counters["responses_received"] += 1
        self._checklist.unfreeze(pair.foundation)
        if txn.use_candidate:
            pair.nominated = True
        if self._controlling:
            self._consider(now, pair)
        else:
            self._follow_nomination(now)

    def _finish(self, txn: _Transaction) -> None:
        self._transactions.pop(txn.transaction_id, None)
        pair = txn.pair
        if pair.transaction == txn.transaction_id:
            pair.transaction = None
            if pair.state is PairState.IN_PROGRESS:
                pair.state = PairState.SUCCEEDED if pair.valid else PairState.FAILED

    def _fail(self, pair: Pair) -> None:
        pair.valid = False
        if pair.transaction is None and pair.state is not PairState.RELAYED:
            pair.state = PairState.FAILED
        self._counters["checks_failed"] += 1
        if pair is self._selected:
            self._deselect("timeout")

    # -- roles ----------------------------------------------------------------------------------

    def _switch_role(self, controlling: bool) -> None:
        if controlling == self._controlling:
            return
        self._controlling = controlling
        for pair in self._checklist:
            pair.set_role(controlling)
            if controlling:
                pair.nominated = pair is self._selected
        self._events.append(RoleChanged(controlling))
        self._counters["role_changes"] += 1
        if self._selected is not None:
            self._next_heartbeat_at = self._now  # tell the peer at once what we use

    # -- selection --------------------------------------------------------------------------

    def _fresh(self, now: float, pair: Pair) -> bool:
        """Valid, in consent, and answered within ``dead_after_s``: fit to carry data."""
        return (
            pair.valid
            and not pair.consent_lost
            and pair.last_response_at is not None
            # Written as a sum so it matches get_timer()'s deadline exactly in floating point
            # (a difference can land just under dead_after_s and leave the timer due forever).
            and now < pair.last_response_at + self._config.dead_after_s
        )

    def _score(self, pair: Pair) -> PathScore:
        return path_score(pair.kind, pair.rtt_s)

    def _held_down(self, now: float, pair: Pair, current: Pair | None) -> bool:
        """Flap damping: not selected yet while the peer is reachable another way -- a full
        agent always has the T path; a lite agent only when another pair is selected."""
        if now >= pair.holddown_until:
            return False
        return current is not None or not self._lite

    def _consider(self, now: float, pair: Pair) -> None:
        """Controlling: select ``pair`` when nothing is selected or it beats the selected one."""
        if pair is self._selected or not self._fresh(now, pair):
            return
        if not self._peer_proven:
            self._counters["selection_unproven"] += 1  # selected once the peer proves itself
            return
        current = self._selected
        if self._held_down(now, pair, current):
            self._counters["held_down"] += 1
            # Look again as soon as the hold-down ends, not a whole re-probe period later.
            if self._next_reprobe_at is None or self._next_reprobe_at > pair.holddown_until:
                self._next_reprobe_at = pair.holddown_until
            return
        if current is None or is_better(
            self._score(pair),
            self._score(current),
            ratio=self._config.hysteresis_ratio,
            minimum_s=self._config.hysteresis_min_s,
        ):
            self._select(now, pair)

    def _best_fresh(self, now: float) -> Pair | None:
        best: Pair | None = None
        for pair in self._checklist:
            if pair is self._selected or not self._fresh(now, pair):
                continue
            if self._held_down(now, pair, None):
                continue
            if best is None or (self._score(pair), -pair.priority) < (
                self._score(best),
                -best.priority,
            ):
                best = pair
        return best

    def _follow_nomination(self, now: float) -> None:
        """Controlled: use the pair most recently nominated, once we validated it ourselves."""
        latest: Pair | None = None
        for pair in self._checklist:
            if pair.nominated_at is not None and (
                latest is None or pair.nominated_at > (latest.nominated_at or -math.inf)
            ):
                latest = pair
        if latest is not None and latest is not self._selected and self._fresh(now, latest):
            if not self._fresh(now + self._config.rto_initial_s, latest):
                # Fresh only for a moment (our last answer on it is old): it would be declared
                # dead before the selection's heartbeat is answered. Check it first; the answer
                # brings us back here with a fresh pair.
                self._trigger(latest)
                return
            self._select(now, latest)

    def _select(self, now: float, pair: Pair) -> None:
        previous = self._selected
        if previous is not None and self._controlling:
            previous.nominated = False
        self._selected = pair
        pair.selected_at = now
        if pair.last_response_at is not None and not self._lite:
            # RFC 7675 consent is the peer's to give; a lite peer (our own home agent) answers
            # checks without ever checking back, and its pairs must stay re-probed for good.
            pair.consent_expires_at = pair.last_response_at + self._config.consent_timeout_s
        if self._controlling:
            pair.nominated = True
        self._next_heartbeat_at = now  # a USE-CANDIDATE heartbeat at the next pacer slot
        self._counters["selections"] += 1
        self._events.append(
            PathSelected(pair.snapshot(True), previous.snapshot(False) if previous else None)
        )

    def _deselect(self, reason: str) -> None:
        pair = self._selected
        assert pair is not None
        self._selected = None
        self._next_heartbeat_at = None
        pair.nominated_at = None
        if self._controlling:
            pair.nominated = False
        if reason == "timeout":
            self._damp(pair)
        retry = self._config.retry_unselected_s
        if retry is not None and self._next_reprobe_at is not None:
            self._next_reprobe_at = min(self._next_reprobe_at, self._now + retry)
        self._counters[f"path_lost_{reason}"] += 1
        self._events.append(PathLost(pair.snapshot(False), reason))

    def _damp(self, pair: Pair) -> None:
        """A selected pair died: count it as a flap when it was selected only briefly."""
        cfg = self._config
        selected_for = self._now - (pair.selected_at if pair.selected_at is not None else -1e18)
        if selected_for >= cfg.flap_window_s:
            pair.flaps = 0
            return
        pair.flaps += 1
        self._counters["flaps"] += 1
        if pair.flaps < 2 or cfg.flap_holddown_s <= 0:
            return  # once is a path that died, not a flapping one
        hold = min(cfg.flap_holddown_s * 2 ** (pair.flaps - 2), cfg.flap_holddown_max_s)
        pair.holddown_until = self._now + hold

    def _check_selected_alive(self, now: float) -> None:
        pair = self._selected
        if pair is None or pair.last_response_at is None:
            return
        if now < pair.last_response_at + self._config.dead_after_s:  # same sum as get_timer
            return
        pair.valid = False
        if pair.transaction is None:
            pair.state = PairState.FAILED
        self._deselect("timeout")
        for txn in [t for t in self._transactions.values() if t.pair is pair and t.heartbeat]:
            self._transactions.pop(txn.transaction_id, None)
        # Fall back to another fresh pair if any, and look for one everywhere at once.
        if self._controlling:
            alternative = self._best_fresh(now)
            if alternative is not None:
                self._select(now, alternative)
        self._reprobe_all(now)

    # -- consent --------------------------------------------------------------------------------

    def _expire_consent(self, now: float) -> None:
        for pair in self._checklist:
            expires = pair.consent_expires_at
            if pair.consent_lost or expires is None or now < expires:
                continue
            if pair is self._selected:
                self._deselect("consent")
            pair.consent_lost = True
            pair.valid = False
            pair.nominated_at = None
            pair.state = PairState.FAILED
            pair.transaction = None
            for txn in [t for t in self._transactions.values() if t.pair is pair]:
                del self._transactions[txn.transaction_id]
            if pair in self._triggered:
                self._triggered.remove(pair)
            if pair in self._reprobes:
                self._reprobes.remove(pair)
            self._counters["consent_lost"] += 1
            self._events.append(ConsentLost(pair.snapshot(False)))

    # -- transactions and pacing ----------------------------------------------------------------

    def _run_transactions(self, now: float) -> None:
        for txn in sorted(self._transactions.values(), key=lambda t: t.next_at):
            if txn.next_at > now:
                break
            if txn.heartbeat or txn.cancelled:
                # Forgotten: death is timed for heartbeats, a triggered check replaced the
                # cancelled one.
                self._transactions.pop(txn.transaction_id, None)
                continue
            if txn.transmissions >= self._config.max_transmissions:
                self._finish(txn)
                self._fail(txn.pair)
                continue
            txn.next_at += min(txn.rto_s * 2**txn.transmissions, self._config.rto_max_s)
            txn.transmissions += 1
            self._transmit(txn)
            self._counters["retransmissions"] += 1

    def _next_work_at(self) -> float | None:
        """When the pacer next has a new transaction to start (ignoring Ta)."""
        if self._remote_credentials is None and not self._lite:
            return None
        if self._triggered or self._reprobes or self._checklist.next_ordinary() is not None:
            return self._now
        if self._selected is not None:
            return self._next_heartbeat_at
        return None

    def _pace(self, now: float) -> None:
        if self._remote_credentials is None and not self._lite:
            return
        if now < self._last_new_transaction_at + self._config.ta_s:
            return
        selected = self._selected
        if (
            selected is not None
            and self._next_heartbeat_at is not None
            and self._next_heartbeat_at <= now
        ):
            self._next_heartbeat_at = now + self._config.heartbeat_interval_s
            self._start(now, selected, heartbeat=True)
            return
        pair = self._pop(self._triggered) or self._pop(self._reprobes)
        if pair is None:
            pair = self._checklist.next_ordinary()
        if pair is not None:
            self._start(now, pair, heartbeat=False)

    def _pop(self, queue: deque[Pair]) -> Pair | None:
        while queue:
            pair = queue.popleft()
            if (
                pair.checkable
                and pair.transaction is None
                and self._checklist.get(pair.key) is pair
            ):
                return pair
        return None

    def _start(self, now: float, pair: Pair, *, heartbeat: bool, probe: bool = False) -> bytes:
        tid = self._random_bytes(TRANSACTION_ID_LENGTH)
        use_candidate = self._controlling and pair is self._selected and not self._lite
        if self._lite:
            data = stun.binding_request(tid)
        else:
            assert self._remote_credentials is not None
            data = stun.build_check(
                tid,
                username=f"{self._remote_credentials.ufrag}:{self._local_credentials.ufrag}",
                password=self._remote_credentials.password,
                priority=self._prflx_priority(pair),
                controlling=self._controlling,
                tie_breaker=self._tie_breaker,
                use_candidate=use_candidate,
            )
        if heartbeat:
            rto, next_at = 0.0, now + self._config.dead_after_s
        else:
            active = self._checklist.count(PairState.WAITING, PairState.IN_PROGRESS)
            rto = max(self._config.rto_initial_s, self._config.ta_s * active)
            next_at = now + rto
            pair.transaction = tid
            pair.state = PairState.IN_PROGRESS
        txn = _Transaction(
            tid, pair, data, heartbeat, self._controlling, use_candidate, now, next_at, rto
        )
        self._transactions[tid] = txn
        self._last_new_transaction_at = now
        what = "probes_sent" if probe else "heartbeats_sent" if heartbeat else "checks_sent"
        self._counters[what] += 1
        self._transmit(txn)
        return tid

    def _transmit(self, txn: _Transaction) -> None:
        txn.pair.checks_sent += 1
        self._outgoing.append(
            OutgoingDatagram(txn.data, txn.pair.local.base, txn.pair.remote.address)
        )

    def _prflx_priority(self, pair: Pair) -> int:
        """§7.1.1: PRIORITY = the priority a peer-reflexive candidate of this base would get."""
        # Same local preference and component (the low 24 bits), prflx type preference.
        return (TYPE_PREFERENCE[CandidateType.PRFLX] << 24) | (pair.local.priority & 0xFFFFFF)

    # -- re-probing -------------------------------------------------------------------------------

    def _schedule_reprobes(self, now: float) -> None:
        if self._next_reprobe_at is None:
            if len(self._checklist):
                self._next_reprobe_at = now + self._reprobe_period()
            return
        if now < self._next_reprobe_at:
            return
        self._reprobe_all(now)
        self._next_reprobe_at = now + self._reprobe_period()

    def _reprobe_period(self) -> float:
        retry = self._config.retry_unselected_s
        if self._selected is None and retry is not None:
            return retry
        return self._jittered_reprobe_interval()

    def _reprobe_all(self, now: float) -> None:
        for pair in self._checklist.by_priority():
            if (
                pair is self._selected
                or not pair.checkable
                or pair.transaction is not None
                or pair.state not in (PairState.SUCCEEDED, PairState.FAILED)
                or pair in self._reprobes
            ):
                continue
            self._reprobes.append(pair)
            self._counters["reprobes"] += 1

    def _jittered_reprobe_interval(self) -> float:
        jitter = self._config.reprobe_jitter
        fraction = int.from_bytes(self._random_bytes(2), "big") / 65535
        return self._config.reprobe_interval_s * (1 - jitter + 2 * jitter * fraction)

    # -- helpers ----------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1
