"""Mobile node core: return routability and route optimisation with correspondents (sans-IO).

Theory of operation. For every correspondent node (CN) the driver hands to :meth:`start`, the
core keeps one Binding Update List entry (RFC 6275 §11.1) and runs, per CN, at most one
*exchange*: a correspondent registration (``start``, ``move``, an automatic refresh, a retry)
or a deletion (``stop``). An exchange needs keygen tokens, which come from two independent
*tests* (RFC 6275 §5.2, §11.6):

* the home test: a Home Test Init from the HoA to the CN, handed to the driver with
  ``care_of=None`` so it travels through the HA tunnel; the Home Test comes back the same way
  (src = CN, dst = HoA);
* the care-of test: a Care-of Test Init from the CoA to the CN, sent natively; the Care-of Test
  comes back to the CoA (src = CN, dst = CoA).

Both start in parallel (§11.6.1). Each test retransmits on its own back-off, from
``initial_timeout_s`` (INITIAL_BINDACK_TIMEOUT, 1 s) doubling up to ``max_timeout_s``
(MAX_BINDACK_TIMEOUT, 32 s) and then at that interval, for as long as the exchange needs it
(§11.8: "separate back-off process for different message types ... and different care-of
addresses"), and every transmission carries a fresh 64-bit cookie from the injected
``random_bytes`` (§11.8). A HoT/CoT counts only if it comes from the CN, is addressed to the
HoA / the CoA under test, no token was received yet in this run, and echoes one of the cookies
of this run (§11.6.2); anything else is dropped and counted.

Token reuse (§5.2.7, §11.6.1). The mobile node "MAY use them beyond a single run of the return
routability procedure until MAX_TOKEN_LIFETIME expires. After this the mobile node SHOULD NOT
use the tokens", and "A fast moving mobile node MAY reuse a recent home keygen token from a
correspondent node when moving to a new location". A token's age is counted from when the Init
it answers was *sent* (the CN's nonce can only be younger than that). So a fresh home token is
reused after a move and a fresh care-of token is reused when the MN comes back to a CoA it
tested recently; a token ``token_lifetime_s`` (210 s) old is dropped and that test is run
again. The check is made at
every BU transmission, retransmissions included, so no BU ever carries a stale token.

The Binding Update (§11.7.2, §6.1.7, §5.2.6) is handed to the driver with src = HoA, dst = CN
and ``care_of`` = the CoA: the driver sends it natively from the CoA with a Home Address option.
It has A = 1, H = 0, a sequence number larger than any sent to this CN before (every
transmission takes a new one, §11.8), lifetime ``lifetime_s`` (at most MAX_RR_BINDING_LIFETIME,
420 s, §5.2.6), Nonce Indices, optionally an Alternate Care-of Address (``alternate_care_of``)
and the Binding Authorization Data last, keyed with Kbm = SHA1(home token ‖ care-of token).
BU retransmissions follow the same ladder as the tests.

A BA counts only if it comes from the CN to the HoA and answers a BU of the current exchange
(§11.7.3): by sequence number and a valid BAD for that BU's Kbm for statuses other than 135 and
136-138; a 135 carries the CN's last accepted number instead, so it is matched by its BAD
alone; 136-138 carry no BAD at all (§9.5.4), so they are matched by sequence only. Then:

* status < 128, registration: route optimised. The binding lasts the granted lifetime (never
  more than requested) from when the acknowledged BU was *sent* (§11.7.3). The refresh (RR as
  needed, then a BU) starts when ``refresh_fraction`` (80 %) of it has elapsed, but at least
  ``refresh_margin_s`` before expiry. If it has not succeeded by the expiry,
  :class:`RouteOptimizationExpired` is emitted and the exchange goes on;
* status < 128, deletion: :class:`RouteOptimizationEnded`;
* 135: continue from the CN's number + 1 and resend at once;
* 136 / 137 / 138: drop the home / care-of / both tokens, run those tests again, then resend
  (§5.2.7: "The mobile node can then retry the return routability procedure");
* any other status >= 128: :class:`RouteOptimizationFailed`; nothing more is sent to this CN
  for ``retry_after_failure_s`` (60 s), then a new registration starts (§11.7.3 lets the MN
  "take steps to correct the cause of the error and retransmit"; a status such as 130,
  insufficient resources, is often temporary, and one attempt a minute is cheap).

Immediate resends (135, 136-138) are limited to ``MAX_IMMEDIATE_RESENDS`` per exchange, so a
confused or hostile CN cannot make us loop (136-138 are unauthenticated): after that a 135 waits
for the retransmission ladder, and one more 136-138 counts as a rejection (fresh tokens keep
being refused, so resending is pointless) with the 60 s pause.

Deletion (:meth:`stop`). §6.1.7 and §9.5.1: the Lifetime is 0 and Kbm depends exclusively on
the home keygen token, so only a home test is needed (§11.6.1) and the care-of nonce index is
sent as 0 (§11.7.2: "SHOULD be set to zero"). Two addresses are involved and the RFC names
each: the BU's care-of address "MUST be set to the home address if the mobile node is at home,
or to the current care-of address if it is away from home" (§11.7.2), so, this core running
only away from home, the deletion goes from the current CoA with a Home Address option and no
Alternate Care-of Address; the *authenticator* however is computed over "the home address of
the mobile node if this option is used in de-registration. Note also that this address might be
different from the source address of the Binding Update message, if the Alternative Care-of
Address mobility option is used, or when the lifetime of the binding is set to zero" (§6.2.7),
i.e. HMAC_SHA1(Kbm, HoA ‖ CN ‖ BU). The CN's BA to it is verified the same way. The deletion
ends with :class:`RouteOptimizationEnded` when the CN acknowledges it, rejects it, or when every
binding the CN could hold for us has run out anyway.

Rate limiting (§11.8): "The mobile node MUST NOT send Mobility Header messages of a particular
type to a particular correspondent node more than MAX_UPDATE_RATE times within a second." Each
transmission of a HoTI, CoTI or BU to a CN first checks the times of the last MAX_UPDATE_RATE
messages of that type to that CN; when the oldest of them is less than a second old, the
transmission is *postponed* to the moment it becomes allowed (never dropped), and its back-off
is left as it was.

RR that never completes is retried indefinitely at the slowest rate (§11.8 "MAY continue to send
these messages at this slower rate indefinitely"); until a BA arrives the driver keeps using the
tunnel, which is what §5.2.9 asks after MAX_RO_FAILURE. The driver stops a hopeless CN with
:meth:`stop`. Binding Refresh Requests from a CN we hold a binding with start the refresh at
once (§11.7.4). Not done here: the BU lifetime is not capped by the home registration's
remaining lifetime (§11.7.2 SHOULD); the driver owns both cores and can stop RO when the home
binding is lost.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv6Address

from mipnode.core.rr import (
    COOKIE_LENGTH,
    MAX_RR_BINDING_LIFETIME,
    MAX_TOKEN_LIFETIME,
    MAX_UPDATE_RATE,
    binding_management_key,
)
from mipnode.core.sequence import seq_add
from mipnode.core.types import OutgoingMh
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    MhType,
    NonceIndices,
    decode_mh_untrusted,
    encode_mh,
)

RandomBytes = Callable[[int], bytes]

# Specification constants
LIFETIME_UNIT_S = 4  # RFC 6275 §6.1.7
INITIAL_BINDACK_TIMEOUT = 1.0  # RFC 6275 §12
MAX_BINDACK_TIMEOUT = 32.0
RATE_WINDOW_S = 1.0  # MAX_UPDATE_RATE is "within a second" (§11.8)
STATUS_REJECT_MIN = 128
STATUS_SEQ_OUT_OF_WINDOW = 135
STATUS_EXPIRED_HOME_NONCE = 136
STATUS_EXPIRED_CARE_OF_NONCE = 137
STATUS_EXPIRED_NONCES = 138
NONCE_STATUSES = frozenset(
    {STATUS_EXPIRED_HOME_NONCE, STATUS_EXPIRED_CARE_OF_NONCE, STATUS_EXPIRED_NONCES}
)

# Implementation constants
MAX_IMMEDIATE_RESENDS = 3  # per exchange, for 135 and 136-138
MAX_REMEMBERED_TRANSMISSIONS = 16  # cookies per test run, BUs per exchange


class RoState(StrEnum):
    RETURN_ROUTABILITY = "return-routability"  # waiting for keygen tokens
    BINDING_UPDATE = "binding-update"  # BU sent, waiting for the BA
    ROUTE_OPTIMIZED = "route-optimized"  # the CN holds our binding (a refresh may be running)
    DELETING = "deleting"
    FAILED = "failed"  # rejected; retrying after retry_after_failure_s


@dataclass(frozen=True, slots=True)
class RoConfig:
    """Route optimisation settings of a mobile node.

    Attributes:
        home_address: the MN's HoA.
        lifetime_s: lifetime requested in each BU to a CN (rounded down to 4 s units, 4..420:
            MAX_RR_BINDING_LIFETIME, RFC 6275 §5.2.6).
        initial_timeout_s: first retransmission interval of HoTI, CoTI and BU
            (INITIAL_BINDACK_TIMEOUT, §11.8).
        max_timeout_s: cap of the doubling interval (MAX_BINDACK_TIMEOUT).
        token_lifetime_s: how long a keygen token is used after the Init it answers was sent
            (MAX_TOKEN_LIFETIME, §5.2.7).
        refresh_fraction: refresh when this fraction of the granted lifetime has elapsed ...
        refresh_margin_s: ... but at least this long before the binding expires.
        retry_after_failure_s: pause after a rejection before a new registration is tried.
        max_update_rate: MHs of one type per second per CN (MAX_UPDATE_RATE, §11.8).
        alternate_care_of: also send the CoA in an Alternate Care-of Address option (it is
            then the address the CN authenticates, whatever the packet's source became).
    """

    home_address: IPv6Address
    lifetime_s: int = MAX_RR_BINDING_LIFETIME
    initial_timeout_s: float = INITIAL_BINDACK_TIMEOUT
    max_timeout_s: float = MAX_BINDACK_TIMEOUT
    token_lifetime_s: float = MAX_TOKEN_LIFETIME
    refresh_fraction: float = 0.8
    refresh_margin_s: float = 2.0
    retry_after_failure_s: float = 60.0
    max_update_rate: int = MAX_UPDATE_RATE
    alternate_care_of: bool = False

    def __post_init__(self) -> None:
        if not LIFETIME_UNIT_S <= self.lifetime_s <= MAX_RR_BINDING_LIFETIME:
            raise ValueError("lifetime_s must be in 4..420 (MAX_RR_BINDING_LIFETIME)")
        if self.initial_timeout_s <= 0 or self.max_timeout_s < self.initial_timeout_s:
            raise ValueError("need 0 < initial_timeout_s <= max_timeout_s")
        if self.token_lifetime_s <= 0 or self.retry_after_failure_s <= 0:
            raise ValueError("token_lifetime_s and retry_after_failure_s must be positive")
        if not 0 < self.refresh_fraction < 1 or self.refresh_margin_s < 0:
            raise ValueError("refresh_fraction must be in (0, 1), refresh_margin_s >= 0")
        if self.max_update_rate < 1:
            raise ValueError("max_update_rate must be at least 1")


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteOptimized:
    """The CN accepted our binding (also emitted after every successful refresh)."""

    cn: IPv6Address
    care_of: IPv6Address
    lifetime_s: int


@dataclass(frozen=True, slots=True)
class RouteOptimizationFailed:
    """The CN rejected a BU with ``status``; retried after ``retry_after_failure_s``."""

    cn: IPv6Address
    status: int


@dataclass(frozen=True, slots=True)
class RouteOptimizationExpired:
    """The binding at the CN ran out before a refresh succeeded; the refresh goes on."""

    cn: IPv6Address
    care_of: IPv6Address


@dataclass(frozen=True, slots=True)
class RouteOptimizationEnded:
    """:meth:`RouteOptimizationCore.stop` finished; the CN is forgotten."""

    cn: IPv6Address


RoEvent = (
    RouteOptimized | RouteOptimizationFailed | RouteOptimizationExpired | RouteOptimizationEnded
)


@dataclass(frozen=True, slots=True)
class RoBinding:
    """A snapshot of one Binding Update List entry."""

    cn: IPv6Address
    care_of: IPv6Address
    state: str
    sequence: int | None  # of the last BU sent to this CN
    lifetime_remaining: float  # of the binding the CN holds for us (0 without one)
    expires_at: float | None


# -- internal state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    nonce_index: int
    token: bytes = field(repr=False)
    obtained_at: float  # when the Init it answers was sent


@dataclass(slots=True)
class _Test:
    """One home or care-of test: its back-off and the cookies of the current run."""

    mh_type: MhType
    address: IPv6Address  # HoA for the home test, the CoA under test for the care-of test
    active: bool = False
    timeout: float = 0.0
    next_send: float = 0.0
    transmissions: int = 0
    cookies: deque[tuple[bytes, float]] = field(
        default_factory=lambda: deque(maxlen=MAX_REMEMBERED_TRANSMISSIONS)
    )


@dataclass(frozen=True, slots=True)
class _SentBu:
    sequence: int
    sent_at: float
    lifetime_units: int
    kbm: bytes = field(repr=False)
    mac_coa: IPv6Address


@dataclass(slots=True)
class _Exchange:
    """One registration or deletion, across its retransmissions and RR re-runs."""

    deletion: bool
    care_of: IPv6Address
    lifetime_units: int
    timeout: float
    next_send: float | None = None  # None: waiting for tokens
    transmissions: int = 0
    immediate_resends: int = 0
    sent: deque[_SentBu] = field(default_factory=lambda: deque(maxlen=MAX_REMEMBERED_TRANSMISSIONS))


@dataclass(slots=True)
class _Peer:
    """The Binding Update List entry for one CN."""

    cn: IPv6Address
    care_of: IPv6Address
    next_sequence: int
    home: _Test
    care: _Test
    last_sequence: int | None = None
    exchange: _Exchange | None = None
    expires_at: float | None = None  # of the binding the CN holds for us (as we know it)
    refresh_at: float | None = None
    bound_care_of: IPv6Address | None = None
    remote_deadline: float | None = None  # no binding of ours can outlive this at the CN
    failed_until: float | None = None
    home_token: _Token | None = None
    care_tokens: dict[IPv6Address, _Token] = field(default_factory=dict)
    recent_sends: dict[MhType, deque[float]] = field(default_factory=dict)


class RouteOptimizationCore:
    """Return routability and correspondent registrations of a mobile node (RFC 6275 §11.6-8)."""

    def __init__(self, config: RoConfig, random_bytes: RandomBytes, initial_sequence: int) -> None:
        """``initial_sequence`` is the first BU sequence number to each CN; it should be random
        (RFC 6275 §11.7.2), so a restarted MN rarely meets 135. ``random_bytes(n)`` is the only
        source of randomness (cookies)."""
        self._config = config
        self._hoa = config.home_address
        self._random_bytes = random_bytes
        self._initial_sequence = initial_sequence % (1 << 16)
        self._peers: dict[IPv6Address, _Peer] = {}
        self._next_sequences: dict[IPv6Address, int] = {}  # survives stop() for a later start()
        self._last_now = 0.0
        self._outgoing: list[OutgoingMh] = []
        self._events: deque[RoEvent] = deque()
        self._counters: Counter[str] = Counter()

    # -- inspection -----------------------------------------------------------------------

    def bindings(self, now: float | None = None) -> list[RoBinding]:
        """One snapshot per CN; ``lifetime_remaining`` relative to ``now`` (default: the latest
        time the core was given)."""
        when = self._last_now if now is None else now
        return [
            RoBinding(
                peer.cn,
                peer.care_of,
                self._state(peer).value,
                peer.last_sequence,
                0.0 if peer.expires_at is None else max(0.0, peer.expires_at - when),
                peer.expires_at,
            )
            for peer in self._peers.values()
        ]

    def state(self, cn: IPv6Address) -> str | None:
        """The state of the entry for ``cn`` (see :class:`RoState`), or ``None``."""
        peer = self._peers.get(cn)
        return None if peer is None else self._state(peer).value

    def statistics(self) -> dict[str, int]:
        """Counters: ``{hoti,coti,bu}_sent``, ``{hoti,coti,bu}_retransmissions``,
        ``rate_limited_{hoti,coti,bu}``, ``hot_accepted``, ``cot_accepted``,
        ``route_optimized``, ``refreshes``, ``rr_rerun_<status>``, ``rejected_<status>``,
        ``drop_<reason>`` and more."""
        return dict(self._counters)

    # -- commands -------------------------------------------------------------------------

    def start(self, now: float, cn: IPv6Address, care_of: IPv6Address) -> None:
        """Route-optimise with ``cn`` from ``care_of``: RR, then a BU; kept refreshed.

        Starting a CN that is already running with the same CoA does nothing, except that a
        failed one is retried at once; another CoA acts as :meth:`move` for this CN.

        Raises:
            ValueError: ``care_of`` is the home address, or ``cn`` is.
        """
        self._last_now = now
        if care_of == self._hoa:
            raise ValueError("care-of address equals the home address")
        if cn == self._hoa:
            raise ValueError("the correspondent is our own home address")
        peer = self._peers.get(cn)
        if peer is None:
            peer = _Peer(
                cn=cn,
                care_of=care_of,
                next_sequence=self._next_sequences.get(cn, self._initial_sequence),
                home=_Test(MhType.HOTI, self._hoa),
                care=_Test(MhType.COTI, care_of),
            )
            self._peers[cn] = peer
            self._counters["peers_started"] += 1
            self._begin_registration(now, peer)
        elif peer.failed_until is not None or (
            peer.exchange is not None and peer.exchange.deletion
        ):
            peer.care_of = care_of
            self._begin_registration(now, peer)
        elif care_of != peer.care_of:
            self._move_peer(now, peer, care_of)

    def move(self, now: float, care_of: IPv6Address) -> None:
        """The MN's CoA changed: new CoTI with every CN (a fresh home token is reused) and a new
        BU. Deletions in progress continue from the new CoA; failed CNs keep their pause.

        Raises:
            ValueError: ``care_of`` is the home address.
        """
        self._last_now = now
        if care_of == self._hoa:
            raise ValueError("care-of address equals the home address")
        for peer in list(self._peers.values()):
            if peer.failed_until is not None:
                peer.care_of = care_of
            elif peer.exchange is not None and peer.exchange.deletion:
                peer.care_of = peer.exchange.care_of = care_of
            elif care_of != peer.care_of:
                self._move_peer(now, peer, care_of)

    def stop(self, now: float, cn: IPv6Address) -> None:
        """End route optimisation with ``cn``: a deletion BU (lifetime 0, Kbm from the home
        token only) if the CN may hold a binding for us, then :class:`RouteOptimizationEnded`.
        Unknown CNs are ignored."""
        self._last_now = now
        peer = self._peers.get(cn)
        if peer is None or (peer.exchange is not None and peer.exchange.deletion):
            return
        peer.expires_at = peer.refresh_at = peer.failed_until = None
        peer.bound_care_of = None
        if peer.remote_deadline is None or peer.remote_deadline <= now:
            self._end(peer)  # nothing was ever sent that the CN could still hold
            return
        self._counters["deletions"] += 1
        peer.exchange = _Exchange(True, peer.care_of, 0, self._config.initial_timeout_s)
        peer.care.active = False  # Kbm depends exclusively on the home token (§5.2.5)
        self._ensure_tokens(now, peer)
        self._service(now, peer)

    # -- the five verbs -------------------------------------------------------------------

    def receive_datagram(self, now: float, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """Process one Mobility Header: HoT (src = CN, dst = HoA, from the HA tunnel), CoT
        (src = CN, dst = CoA), BA (src = CN, dst = HoA from the RH2) or BRR. Never raises."""
        self._last_now = now
        try:
            msg = decode_mh_untrusted(data, src, dst)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        peer = self._peers.get(src)
        if peer is None:
            self._drop("unknown_correspondent")
            return
        if isinstance(msg, HomeTest):
            self._receive_home_test(now, peer, msg, dst)
        elif isinstance(msg, CareOfTest):
            self._receive_care_of_test(now, peer, msg, dst)
        elif isinstance(msg, BindingAck):
            self._receive_ba(now, peer, msg, data, dst)
        elif isinstance(msg, BindingRefreshRequest):
            self._receive_brr(now, peer, dst)
        else:
            self._drop("unexpected_mh_type")

    def handle_timer(self, now: float) -> None:
        """Expiries, refreshes, retries and (re)transmissions that are due at ``now``."""
        self._last_now = now
        for peer in list(self._peers.values()):
            self._tick(now, peer)

    def get_timer(self) -> float | None:
        """The earliest deadline of any CN, or ``None``."""
        deadlines: list[float] = []
        for peer in self._peers.values():
            exchange = peer.exchange
            for test in (peer.home, peer.care):
                if test.active:
                    deadlines.append(test.next_send)
            if exchange is not None:
                if exchange.next_send is not None:
                    deadlines.append(exchange.next_send)
                if exchange.deletion and peer.remote_deadline is not None:
                    deadlines.append(peer.remote_deadline)
            elif peer.refresh_at is not None:
                deadlines.append(peer.refresh_at)
            if peer.expires_at is not None:
                deadlines.append(peer.expires_at)
            if peer.failed_until is not None:
                deadlines.append(peer.failed_until)
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list[OutgoingMh]:
        """HoTIs (src = HoA, ``care_of`` None: through the HA tunnel), CoTIs (src = CoA:
        native) and BUs (src = HoA, ``care_of`` = CoA: native with a Home Address option)."""
        self._last_now = now
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> RoEvent | None:
        """The oldest pending event, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- state ----------------------------------------------------------------------------

    @staticmethod
    def _state(peer: _Peer) -> RoState:
        exchange = peer.exchange
        if exchange is not None and exchange.deletion:
            return RoState.DELETING
        if peer.failed_until is not None:
            return RoState.FAILED
        if peer.expires_at is not None:
            return RoState.ROUTE_OPTIMIZED
        if exchange is not None and exchange.next_send is not None and exchange.transmissions:
            return RoState.BINDING_UPDATE
        return RoState.RETURN_ROUTABILITY

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _tick(self, now: float, peer: _Peer) -> None:
        exchange = peer.exchange
        deleting = exchange is not None and exchange.deletion
        if deleting and (peer.remote_deadline is None or now >= peer.remote_deadline):
            # Whatever binding the CN held for us has run out: nothing left to delete.
            self._counters["deletions_unconfirmed"] += 1
            self._end(peer)
            return
        if peer.expires_at is not None and now >= peer.expires_at:
            self._on_binding_expired(now, peer)
        if peer.failed_until is not None:
            if now < peer.failed_until:
                return
            self._counters["retries"] += 1
            self._begin_registration(now, peer)
            return
        if peer.exchange is None and peer.refresh_at is not None and now >= peer.refresh_at:
            self._counters["refreshes"] += 1
            self._begin_registration(now, peer)
            return
        self._service(now, peer)

    def _on_binding_expired(self, now: float, peer: _Peer) -> None:
        self._counters["bindings_expired"] += 1
        care_of = peer.bound_care_of or peer.care_of
        peer.expires_at = peer.refresh_at = peer.bound_care_of = None
        self._events.append(RouteOptimizationExpired(peer.cn, care_of))
        if peer.exchange is None:
            self._begin_registration(now, peer)

    def _end(self, peer: _Peer) -> None:
        self._next_sequences[peer.cn] = peer.next_sequence
        del self._peers[peer.cn]
        self._counters["ended"] += 1
        self._events.append(RouteOptimizationEnded(peer.cn))

    # -- exchanges ------------------------------------------------------------------------

    def _begin_registration(self, now: float, peer: _Peer) -> None:
        """A new registration of ``peer.care_of`` (first, refresh, move or retry)."""
        cfg = self._config
        peer.failed_until = None
        units = cfg.lifetime_s // LIFETIME_UNIT_S
        peer.exchange = _Exchange(False, peer.care_of, units, cfg.initial_timeout_s)
        self._ensure_tokens(now, peer)
        self._service(now, peer)

    def _move_peer(self, now: float, peer: _Peer, care_of: IPv6Address) -> None:
        self._counters["moves"] += 1
        peer.care_of = care_of
        # The CN's binding points at the old CoA, which is no longer ours: not usable any more.
        peer.expires_at = peer.refresh_at = peer.bound_care_of = None
        self._begin_registration(now, peer)

    def _fresh_token(self, token: _Token | None, now: float) -> bool:
        return token is not None and now - token.obtained_at < self._config.token_lifetime_s

    def _ensure_tokens(self, now: float, peer: _Peer) -> bool:
        """Drop stale tokens, start the tests the exchange still needs; True when it has all."""
        exchange = peer.exchange
        assert exchange is not None
        ready = True
        if not self._fresh_token(peer.home_token, now):
            peer.home_token = None
            ready = False
            if not peer.home.active:
                self._start_test(now, peer.home, self._hoa)
        if not exchange.deletion:
            for address, token in list(peer.care_tokens.items()):
                if not self._fresh_token(token, now):
                    del peer.care_tokens[address]
            if exchange.care_of not in peer.care_tokens:
                ready = False
                if not (peer.care.active and peer.care.address == exchange.care_of):
                    self._start_test(now, peer.care, exchange.care_of)
            elif peer.care.active and peer.care.address == exchange.care_of:
                peer.care.active = False  # e.g. came back to a CoA with a fresh token
        if ready and exchange.next_send is None:
            exchange.next_send = now
            exchange.timeout = self._config.initial_timeout_s
        elif not ready:
            exchange.next_send = None
        return ready

    def _start_test(self, now: float, test: _Test, address: IPv6Address) -> None:
        test.active = True
        test.address = address
        test.timeout = self._config.initial_timeout_s
        test.next_send = now
        test.transmissions = 0
        test.cookies.clear()

    # -- sending --------------------------------------------------------------------------

    def _service(self, now: float, peer: _Peer) -> None:
        """Send whatever of ``peer``'s tests and BU is due, within the rate limit."""
        for test in (peer.home, peer.care):
            if test.active and now >= test.next_send:
                self._send_test(now, peer, test)
        exchange = peer.exchange
        if exchange is not None and exchange.next_send is not None and now >= exchange.next_send:
            if self._ensure_tokens(now, peer):
                self._send_bu(now, peer, exchange)
            else:
                self._counters["tokens_expired"] += 1
                for test in (peer.home, peer.care):  # the tests just (re)started
                    if test.active and now >= test.next_send:
                        self._send_test(now, peer, test)

    def _rate_limited(self, now: float, peer: _Peer, mh_type: MhType) -> float | None:
        """When a message of ``mh_type`` may next go to ``peer``, if not now (§11.8)."""
        recent = peer.recent_sends.get(mh_type)
        if recent is None or len(recent) < self._config.max_update_rate:
            return None
        allowed_at = recent[0] + RATE_WINDOW_S
        return allowed_at if allowed_at > now else None

    def _note_sent(self, now: float, peer: _Peer, mh_type: MhType) -> None:
        recent = peer.recent_sends.get(mh_type)
        if recent is None:
            recent = peer.recent_sends[mh_type] = deque(maxlen=self._config.max_update_rate)
        recent.append(now)

    def _send_test(self, now: float, peer: _Peer, test: _Test) -> None:
        name = "hoti" if test.mh_type is MhType.HOTI else "coti"
        allowed_at = self._rate_limited(now, peer, test.mh_type)
        if allowed_at is not None:
            self._counters[f"rate_limited_{name}"] += 1
            test.next_send = allowed_at
            return
        cookie = self._random_bytes(COOKIE_LENGTH)
        if len(cookie) != COOKIE_LENGTH:
            raise ValueError("random_bytes returned the wrong length")
        msg = HomeTestInit(cookie) if test.mh_type is MhType.HOTI else CareOfTestInit(cookie)
        # HoTI: HoA -> CN through the HA tunnel; CoTI: CoA -> CN natively (§6.1.3, §6.1.4).
        self._outgoing.append(
            OutgoingMh(encode_mh(msg, test.address, peer.cn), test.address, peer.cn)
        )
        self._note_sent(now, peer, test.mh_type)
        test.cookies.append((cookie, now))
        if test.transmissions:
            self._counters[f"{name}_retransmissions"] += 1
        test.transmissions += 1
        test.next_send = now + test.timeout
        test.timeout = min(test.timeout * 2, self._config.max_timeout_s)
        self._counters[f"{name}_sent"] += 1

    def _send_bu(self, now: float, peer: _Peer, exchange: _Exchange) -> None:
        allowed_at = self._rate_limited(now, peer, MhType.BU)
        if allowed_at is not None:
            self._counters["rate_limited_bu"] += 1
            exchange.next_send = allowed_at
            return
        home = peer.home_token
        assert home is not None
        if exchange.deletion:
            kbm = binding_management_key(home.token, None)
            care_of_index = 0  # §11.7.2: SHOULD be zero; the CN ignores it (§9.5.1)
        else:
            care = peer.care_tokens[exchange.care_of]
            kbm = binding_management_key(home.token, care.token)
            care_of_index = care.nonce_index
        options: list[AlternateCareOfAddress | NonceIndices] = []
        if self._config.alternate_care_of and not exchange.deletion:
            options.append(AlternateCareOfAddress(exchange.care_of))
        options.append(NonceIndices(home.nonce_index, care_of_index))
        # §11.7.2: every BU (retransmissions too, §11.8) takes a new, larger number.
        sequence = peer.next_sequence
        peer.next_sequence = seq_add(sequence, 1)
        peer.last_sequence = sequence
        bu = BindingUpdate(
            sequence=sequence,
            lifetime=exchange.lifetime_units,
            ack=True,
            home=False,
            options=tuple(options),
        )
        # §6.2.7: the MAC covers the CoA being registered, or the HoA for a deletion.
        mac_coa = self._hoa if exchange.deletion else exchange.care_of
        data = encode_mh_with_bad(bu, self._hoa, peer.cn, kbm=kbm, coa=mac_coa, cn=peer.cn)
        self._outgoing.append(OutgoingMh(data, self._hoa, peer.cn, None, exchange.care_of))
        self._note_sent(now, peer, MhType.BU)
        exchange.sent.append(_SentBu(sequence, now, exchange.lifetime_units, kbm, mac_coa))
        if not exchange.deletion:
            deadline = now + exchange.lifetime_units * LIFETIME_UNIT_S
            peer.remote_deadline = max(peer.remote_deadline or deadline, deadline)
        if exchange.transmissions:
            self._counters["bu_retransmissions"] += 1
        exchange.transmissions += 1
        exchange.next_send = now + exchange.timeout
        exchange.timeout = min(exchange.timeout * 2, self._config.max_timeout_s)
        self._counters["bu_sent"] += 1

    def _resend_at_once(self, now: float, peer: _Peer, exchange: _Exchange) -> None:
        """After 135 (or new tokens following 136-138): a new BU now, the ladder restarted."""
        if exchange.immediate_resends >= MAX_IMMEDIATE_RESENDS:
            self._counters["resend_deferred"] += 1
            return
        exchange.immediate_resends += 1
        exchange.timeout = self._config.initial_timeout_s
        exchange.next_send = now
        self._service(now, peer)

    # -- receiving ------------------------------------------------------------------------

    def _match_cookie(self, test: _Test, cookie: bytes) -> float | None:
        for sent_cookie, sent_at in test.cookies:
            if sent_cookie == cookie:
                return sent_at
        return None

    def _receive_home_test(self, now: float, peer: _Peer, msg: HomeTest, dst: IPv6Address) -> None:
        # §11.6.2: to the HoA (through the tunnel), RR in progress, no token yet, our cookie.
        test = peer.home
        if dst != self._hoa:
            self._drop("wrong_destination")
            return
        if not test.active:
            self._drop("unexpected_hot")
            return
        sent_at = self._match_cookie(test, msg.cookie)
        if sent_at is None:
            self._drop("bad_cookie")
            return
        test.active = False
        peer.home_token = _Token(msg.nonce_index, msg.keygen_token, sent_at)
        self._counters["hot_accepted"] += 1
        self._on_token(now, peer)

    def _receive_care_of_test(
        self, now: float, peer: _Peer, msg: CareOfTest, dst: IPv6Address
    ) -> None:
        test = peer.care
        if not test.active:
            self._drop("unexpected_cot")
            return
        if dst != test.address:
            self._drop("wrong_destination")
            return
        sent_at = self._match_cookie(test, msg.cookie)
        if sent_at is None:
            self._drop("bad_cookie")
            return
        test.active = False
        peer.care_tokens[test.address] = _Token(msg.nonce_index, msg.keygen_token, sent_at)
        self._counters["cot_accepted"] += 1
        self._on_token(now, peer)

    def _on_token(self, now: float, peer: _Peer) -> None:
        exchange = peer.exchange
        if exchange is not None and exchange.next_send is None and self._ensure_tokens(now, peer):
            self._service(now, peer)

    def _receive_brr(self, now: float, peer: _Peer, dst: IPv6Address) -> None:
        # §11.7.4: a CN we hold a binding with asks for a refresh; start it now.
        if dst != self._hoa:
            self._drop("wrong_destination")
            return
        self._counters["brr_received"] += 1
        if peer.expires_at is not None and peer.exchange is None:
            self._counters["refreshes"] += 1
            self._begin_registration(now, peer)

    def _match_ba(
        self, exchange: _Exchange, ack: BindingAck, data: bytes, cn: IPv6Address
    ) -> _SentBu | None:
        status = int(ack.status)
        if status == STATUS_SEQ_OUT_OF_WINDOW:
            # The number is the CN's, not ours: only the authenticator ties it to our BU.
            for sent in reversed(exchange.sent):
                if verify_bad(data, kbm=sent.kbm, coa=sent.mac_coa, cn=cn):
                    return sent
            return None
        for sent in exchange.sent:
            if sent.sequence == ack.sequence:
                return sent
        return None

    def _receive_ba(
        self, now: float, peer: _Peer, ack: BindingAck, data: bytes, dst: IPv6Address
    ) -> None:
        if dst != self._hoa:
            self._drop("wrong_destination")
            return
        exchange = peer.exchange
        if exchange is None:
            self._drop("unexpected_ba")
            return
        status = int(ack.status)
        sent = self._match_ba(exchange, ack, data, peer.cn)
        if sent is None:
            self._drop("bad_auth" if status == STATUS_SEQ_OUT_OF_WINDOW else "unmatched_ba")
            return
        # §9.5.4: 136-138 carry no BAD; every other BA from a CN must (§11.7.3).
        if status not in NONCE_STATUSES and not verify_bad(
            data, kbm=sent.kbm, coa=sent.mac_coa, cn=peer.cn
        ):
            self._drop("bad_auth")
            return
        if status < STATUS_REJECT_MIN:
            self._handle_accepted(now, peer, exchange, ack, sent)
        elif status == STATUS_SEQ_OUT_OF_WINDOW:
            # §11.7.3: take the CN's number and go on from there.
            self._counters["sequence_resync"] += 1
            peer.next_sequence = seq_add(ack.sequence, 1)
            self._resend_at_once(now, peer, exchange)
        elif status in NONCE_STATUSES:
            self._rerun_rr(now, peer, exchange, status)
        elif exchange.deletion:
            self._counters[f"rejected_{status}"] += 1
            self._counters["deletions_unconfirmed"] += 1
            self._end(peer)
        else:
            self._reject(now, peer, status)

    def _handle_accepted(
        self, now: float, peer: _Peer, exchange: _Exchange, ack: BindingAck, sent: _SentBu
    ) -> None:
        if exchange.deletion:
            self._counters["deletions_confirmed"] += 1
            self._end(peer)
            return
        units = min(ack.lifetime, sent.lifetime_units)  # §11.7.3: never longer than we asked
        if units == 0:
            self._drop("zero_lifetime")  # that would be a deletion; keep retransmitting
            return
        lifetime_s = units * LIFETIME_UNIT_S
        cfg = self._config
        # §11.7.3: the lifetime counts from when the acknowledged BU was sent.
        after = min(cfg.refresh_fraction * lifetime_s, lifetime_s - cfg.refresh_margin_s)
        peer.exchange = None
        peer.care.active = peer.home.active = False
        peer.expires_at = sent.sent_at + lifetime_s
        peer.refresh_at = sent.sent_at + max(0.0, after)
        peer.bound_care_of = exchange.care_of
        self._counters["route_optimized"] += 1
        self._events.append(RouteOptimized(peer.cn, exchange.care_of, lifetime_s))

    def _rerun_rr(self, now: float, peer: _Peer, exchange: _Exchange, status: int) -> None:
        """136 / 137 / 138: the CN no longer knows the home / care-of / both nonces (§5.2.7)."""
        if exchange.immediate_resends >= MAX_IMMEDIATE_RESENDS:
            # Fresh tokens keep being refused: a broken CN, or forged (unauthenticated)
            # 136-138s. Resending the refused tokens would be pointless; back off instead.
            self._reject(now, peer, status)
            return
        self._counters[f"rr_rerun_{status}"] += 1
        exchange.immediate_resends += 1
        if status in (STATUS_EXPIRED_HOME_NONCE, STATUS_EXPIRED_NONCES):
            peer.home_token = None
        if status in (STATUS_EXPIRED_CARE_OF_NONCE, STATUS_EXPIRED_NONCES):
            peer.care_tokens.pop(exchange.care_of, None)
        # Fetch what is missing; the BU goes as soon as the tokens are in (at once if nothing
        # is missing, e.g. a 137 to a deletion, whose care-of nonce index the CN ignores).
        exchange.next_send = None
        self._ensure_tokens(now, peer)
        self._service(now, peer)

    def _reject(self, now: float, peer: _Peer, status: int) -> None:
        self._counters[f"rejected_{status}"] += 1
        peer.exchange = None
        peer.home.active = peer.care.active = False
        peer.expires_at = peer.refresh_at = peer.bound_care_of = None
        peer.failed_until = now + self._config.retry_after_failure_s
        self._events.append(RouteOptimizationFailed(peer.cn, status))
