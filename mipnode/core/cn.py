"""Correspondent node core: return routability and the route-optimisation binding cache (sans-IO).

Theory of operation. The driver hands every Mobility Header addressed to the CN to
:meth:`CorrespondentCore.receive_datagram` with the addresses of the IPv6 packet that carried
it and, when the packet had a Home Address option, the HoA from it (``home_address``; the MH
checksum is then over the HoA, RFC 6275 §6.1.1). Drops are silent and counted as
``drop_<reason>``.

* **HoTI** (src = HoA, no HAO) → HoT to the HoA, plain (it returns through the HA), with the
  current nonce index, the cookie echoed and the home keygen token over (src, nonce).
  **CoTI** (src = CoA) → CoT to the CoA with the care-of keygen token. A HoTI or CoTI carrying
  an HAO is dropped (``hoti_with_hao`` / ``coti_with_hao``): §9.4.1/§9.4.2 require its absence.
  No state is kept per request (§5.2.2); the only state is the nonce table
  (:class:`~mipnode.core.rr.NonceTable`, a new nonce every 30 s, at most nine held).
* **BU**, checked in this order (§9.5.1):

  1. home address = the HAO's; without an HAO, only a deletion is accepted, with HoA = source
     (the MN returning home, §11.5.5); other BUs without an HAO → ``drop_bu_without_hao``.
     HoA and care-of address (Alt-CoA, else source) must be unicast routable → else
     ``drop_bad_address``;
  2. Nonce Indices option and the BAD option, last → else ``drop_missing_nonce_indices`` /
     ``drop_missing_bad``;
  3. nonces looked up by index; unknown or older than MAX_NONCE_LIFETIME → BA 136 / 137 / 138,
     without BAD (there is no Kbm to sign with; §6.1.8) and rate-limited like a Binding Error,
     since it answers an unauthenticated packet. A deletion (lifetime 0, or CoA = HoA)
     ignores the care-of index (§6.2.6);
  4. tokens recomputed, Kbm = SHA1(home ‖ care-of token), or SHA1(home token) for a deletion
     (§5.2.5), authenticator over (CoA, or the HoA for a deletion (§6.2.7)) ‖ CN ‖ MH → a
     mismatch is dropped silently, no state (``drop_bad_authenticator``; §9.5.1: a BU failing
     validation for any other reason than its sequence number, a registration type change or
     expired nonces MUST be silently discarded);
  5. sequence number newer than the cache entry's (§9.5.1) → else 135 with the last accepted;
  6. H=1: 139 if an H=0 binding exists for the HoA (§9.5.1), else 131 (§10.3.1: a node that
     only implements correspondent functionality MUST reject it). These come *after*
     authentication: §10.3.1 is reached only by a BU that passed §9.5.1's validation, and the
     RR authenticator is the only validation a CN can do, so an unauthenticated H=1 BU is
     silently dropped like any other;
  7. deletion (§9.5.3) or registration; a new HoA when the cache holds ``max_bindings``
     entries → 130. The lifetime granted is min(requested, ``max_lifetime_s`` ≤
     MAX_RR_BINDING_LIFETIME = 420 s).

  Every BA but 136-138 carries BAD made with the BU's Kbm and the same CoA. BAs go to the BU's
  source address with a type 2 routing header carrying the HoA when the BU had an HAO
  (``OutgoingMh(src=the CN address the BU was sent to, dst=HoA, care_of=source)``, §9.5.4),
  plainly to the HoA otherwise. A BA is sent when A=1, and whatever A says for 130, 135,
  136-138 (§9.5.4), 131 (§10.3.1) and 139 (§9.5.1).

* Replay protection after removal (§5.2.8, §9.5.3: a CN must keep the sequence number as long
  as the nonces that authorised the binding are valid). A deleted or expired binding leaves a
  ``deleted`` entry holding its sequence number for MAX_NONCE_LIFETIME: every BU sent before
  the removal used nonces generated before it, so none of them authenticates any more once the
  entry is purged. An accepted deletion for a HoA without a binding leaves one too. The cache
  is a :class:`~mipnode.core.binding_cache.BindingCache` (shared with the home agent) holding
  expired bindings that long; its entries carry the nonce indices of the accepted BU.
* **Any other known MH type** → ``drop_unexpected_mh_type``; an **unknown MH type** → Binding
  Error status 2 (§9.2) to the packet's source.
* :meth:`CorrespondentCore.check_home_address` is the data-path rule of §9.3.1: a packet with an
  HAO is accepted only when a binding maps that HoA to the packet's source; otherwise the
  driver drops it and the core queues Binding Error status 1 to the source.

Binding Errors (§9.3.3) are sent from the CN address the offending packet was sent to, directly
to its source address, with the HAO's HoA in the Home Address field (the unspecified address
when there was no HAO). They "SHOULD be subject to rate limiting in the same manner as ICMPv6
messages" (§9.3.3, RFC 4443 §2.4 (f)), as are the unauthenticated 136-138 BAs: at most one per
``error_interval_s`` (1 s) to any one destination, and a global token bucket of
``error_rate_per_s`` (10 per second, burst 10) over all destinations, so the limiter's memory
stays bounded under a flood from spoofed sources (``be_rate_limited`` /
``nonce_ba_rate_limited``).

A CN restart is a new core: a new Kcn and an empty cache, so BUs authorised before it no longer
verify.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from mipnode.core import binding_cache
from mipnode.core._options import find_option
from mipnode.core.binding_cache import BindingCache, BindingState
from mipnode.core.rr import (
    COOKIE_LENGTH,
    KCN_LENGTH,
    MAX_RR_BINDING_LIFETIME,
    NonceTable,
    binding_management_key,
    care_of_keygen_token,
    home_keygen_token,
)
from mipnode.core.sequence import seq_is_newer
from mipnode.core.token_bucket import ErrorRateLimiter
from mipnode.core.types import OutgoingMh
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BeStatus,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    NonceIndices,
    UnknownMobilityMessage,
    decode_mh_untrusted,
    encode_mh,
)

# Specification constants
LIFETIME_UNIT_S = 4  # RFC 6275 §6.1.7
UNSPECIFIED = IPv6Address("::")

ACCEPTED = BaStatus.ACCEPTED
INSUFFICIENT_RESOURCES = BaStatus.INSUFFICIENT_RESOURCES
HOME_REGISTRATION_NOT_SUPPORTED = BaStatus.HOME_REGISTRATION_NOT_SUPPORTED
SEQ_OUT_OF_WINDOW = BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW
EXPIRED_HOME_NONCE_INDEX = BaStatus.EXPIRED_HOME_NONCE_INDEX
EXPIRED_CARE_OF_NONCE_INDEX = BaStatus.EXPIRED_CARE_OF_NONCE_INDEX
EXPIRED_NONCES = BaStatus.EXPIRED_NONCES
REGISTRATION_TYPE_CHANGE_DISALLOWED = BaStatus.REGISTRATION_TYPE_CHANGE_DISALLOWED
UNKNOWN_BINDING = BeStatus.UNKNOWN_BINDING_FOR_HOME_ADDRESS_OPTION
UNRECOGNIZED_MH_TYPE = BeStatus.UNRECOGNIZED_MH_TYPE

# Statuses a CN sends whatever the A flag says (§9.5.4, §9.5.1, §10.3.1).
ALWAYS_ANSWERED = frozenset(
    {
        INSUFFICIENT_RESOURCES,
        HOME_REGISTRATION_NOT_SUPPORTED,
        SEQ_OUT_OF_WINDOW,
        EXPIRED_HOME_NONCE_INDEX,
        EXPIRED_CARE_OF_NONCE_INDEX,
        EXPIRED_NONCES,
        REGISTRATION_TYPE_CHANGE_DISALLOWED,
    }
)

# Implementation constants
ERROR_INTERVAL_S = 1.0
ERROR_RATE_PER_S = 10.0
DEFAULT_MAX_BINDINGS = 10_000


CnBindingState = BindingState  # the states are the shared cache's


@dataclass(frozen=True, slots=True)
class CnCoreConfig:
    """Correspondent node settings.

    Attributes:
        addresses: the CN's own addresses; MHs sent to any other are dropped.
        max_lifetime_s: longest binding lifetime granted (4..420 s, rounded down to 4 s units).
        max_bindings: cache entries (bindings and deleted entries) before new HoAs get 130.
        error_interval_s: at most one Binding Error / unauthenticated BA per destination per
            this interval ...
        error_rate_per_s: ... and at most this many per second in all (burst of the same size).
    """

    addresses: tuple[IPv6Address, ...]
    max_lifetime_s: int = MAX_RR_BINDING_LIFETIME
    max_bindings: int = DEFAULT_MAX_BINDINGS
    error_interval_s: float = ERROR_INTERVAL_S
    error_rate_per_s: float = ERROR_RATE_PER_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", tuple(self.addresses))
        if not self.addresses:
            raise ValueError("a CN needs at least one address")
        if not LIFETIME_UNIT_S <= self.max_lifetime_s <= MAX_RR_BINDING_LIFETIME:
            raise ValueError(f"max_lifetime_s must be in 4..{MAX_RR_BINDING_LIFETIME}")
        if self.max_bindings < 1:
            raise ValueError("max_bindings must be positive")
        if self.error_interval_s <= 0 or self.error_rate_per_s <= 0:
            raise ValueError("error_interval_s and error_rate_per_s must be positive")


@dataclass(frozen=True, slots=True)
class CnBinding:
    """Snapshot of one binding cache entry.

    For a ``deleted`` entry (kept only to reject replays) ``lifetime_s`` is 0, ``expires_at``
    is when it is purged, and ``care_of_nonce_index`` is ``None`` if a deletion removed it.
    """

    home_address: IPv6Address
    care_of_address: IPv6Address
    sequence: int
    lifetime_s: int
    expires_at: float
    home_nonce_index: int
    care_of_nonce_index: int | None
    state: CnBindingState = CnBindingState.REGISTERED


@dataclass(frozen=True, slots=True)
class CnBindingAdded(binding_cache.BindingAdded[CnBinding]):
    """A HoA without a binding got one."""


@dataclass(frozen=True, slots=True)
class CnBindingUpdated(binding_cache.BindingUpdated[CnBinding]):
    """An existing binding was refreshed or moved (compare ``previous``)."""


@dataclass(frozen=True, slots=True)
class CnBindingRemoved(binding_cache.BindingRemoved):
    """A binding ended; ``reason`` is ``"deregistered"`` or ``"expired"``."""


CnEvent = CnBindingAdded | CnBindingUpdated | CnBindingRemoved


@dataclass(slots=True)
class _Entry:
    home_address: IPv6Address
    care_of_address: IPv6Address
    sequence: int
    lifetime_s: int
    expires_at: float
    home_nonce_index: int
    care_of_nonce_index: int | None
    state: CnBindingState

    def snapshot(self) -> CnBinding:
        return CnBinding(
            self.home_address,
            self.care_of_address,
            self.sequence,
            self.lifetime_s,
            self.expires_at,
            self.home_nonce_index,
            self.care_of_nonce_index,
            self.state,
        )


@dataclass(frozen=True, slots=True)
class _Request:
    """A BU that passed authentication: enough to answer it and to update the cache."""

    bu: BindingUpdate
    home_address: IPv6Address
    care_of: IPv6Address
    local: IPv6Address  # the CN address the BU was sent to
    reply_via: IPv6Address | None  # the BU's source when it had an HAO (RH2 target)
    deletion: bool
    indices: NonceIndices
    kbm: bytes = field(repr=False)

    @property
    def mac_care_of(self) -> IPv6Address:
        # RFC 6275 §6.2.7: the home address takes the care-of address's place in the MAC
        # of a de-registration.
        return self.home_address if self.deletion else self.care_of


def _is_unicast_routable(address: IPv6Address) -> bool:
    return not (
        address.is_multicast
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.ipv4_mapped is not None
    )


class CorrespondentCore:
    """Return routability and BU/BA processing of a correspondent node (RFC 6275 §5.2, §9)."""

    def __init__(
        self, config: CnCoreConfig, kcn: bytes, random_bytes: Callable[[int], bytes]
    ) -> None:
        if len(kcn) != KCN_LENGTH:
            raise ValueError(f"Kcn must be {KCN_LENGTH} octets (RFC 6275 §5.2.1)")
        self._config = config
        self._addresses = frozenset(config.addresses)
        self._kcn = kcn
        self._nonces = NonceTable(random_bytes)
        self._max_units = config.max_lifetime_s // LIFETIME_UNIT_S
        # An expired binding keeps its sequence number while nonces that authorised it may live.
        self._cache: BindingCache[_Entry] = BindingCache(
            hold_expired_s=self._nonces.lifetime_s, max_entries=config.max_bindings
        )
        self._be_limiter = ErrorRateLimiter(config.error_interval_s, config.error_rate_per_s)
        self._nonce_ba_limiter = ErrorRateLimiter(config.error_interval_s, config.error_rate_per_s)
        self._outgoing: list[OutgoingMh] = []
        self._events: deque[CnEvent] = deque()
        self._counters: Counter[str] = Counter()

    # -- the five verbs -------------------------------------------------------------------

    def receive_datagram(
        self,
        now: float,
        data: bytes,
        src: IPv6Address,
        dst: IPv6Address,
        home_address: IPv6Address | None = None,
    ) -> None:
        """Process one Mobility Header; never raises for bad input (drops are counted).

        ``home_address`` is the HoA from the packet's Home Address option, if it had one.
        """
        self._expire(now)
        if dst not in self._addresses:
            self._drop("not_our_address")
            return
        try:
            msg = decode_mh_untrusted(data, home_address or src, dst)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        if isinstance(msg, HomeTestInit | CareOfTestInit):
            self._handle_test_init(now, msg, src, dst, home_address)
        elif isinstance(msg, BindingUpdate):
            self._handle_bu(now, msg, data, src, dst, home_address)
        elif isinstance(msg, UnknownMobilityMessage):
            # RFC 6275 §9.2: an unrecognised MH type is answered with Binding Error status 2.
            self._counters["unknown_mh_type"] += 1
            self._send_binding_error(now, UNRECOGNIZED_MH_TYPE, dst, src, home_address)
        else:
            self._drop("unexpected_mh_type")

    def handle_timer(self, now: float) -> None:
        """Expire bindings and purge deleted entries whose deadline has come."""
        self._expire(now)

    def get_timer(self) -> float | None:
        """The next expiry or purge deadline, or ``None``."""
        return self._cache.next_deadline()

    def datagrams_to_send(self, now: float) -> list[OutgoingMh]:
        """HoT, CoT, BA and BE messages queued since the last call."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> CnEvent | None:
        """The oldest pending event, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- the data path --------------------------------------------------------------------

    def check_home_address(
        self,
        now: float,
        coa: IPv6Address,
        hoa: IPv6Address,
        *,
        local: IPv6Address | None = None,
    ) -> bool:
        """May a packet from ``coa`` with a Home Address option for ``hoa`` be accepted?

        RFC 6275 §9.3.1: only when a binding maps ``hoa`` to ``coa``. When not, the driver
        must drop the packet, and a rate-limited Binding Error status 1 is queued to ``coa``
        from ``local`` (the address the packet was sent to; default: the first configured).
        Not for MHs: a BU carrying an HAO goes to :meth:`receive_datagram`.
        """
        self._expire(now)
        entry = self._cache.registered(hoa)
        if entry is not None and entry.care_of_address == coa:
            return True
        self._counters["drop_hao_without_binding"] += 1
        source = local if local is not None else self._config.addresses[0]
        self._send_binding_error(now, UNKNOWN_BINDING, source, coa, hoa)
        return False

    # -- inspection -----------------------------------------------------------------------

    def bindings(self, *, include_deleted: bool = False) -> list[CnBinding]:
        """Snapshots of the registered bindings (and deleted entries if asked)."""
        return [
            e.snapshot()
            for e in self._cache
            if include_deleted or e.state is CnBindingState.REGISTERED
        ]

    def binding_for(self, home_address: IPv6Address) -> CnBinding | None:
        """The registered binding of ``home_address``, or ``None``."""
        entry = self._cache.registered(home_address)
        return None if entry is None else entry.snapshot()

    def statistics(self) -> dict[str, int]:
        """Counters (``accepted``, ``rejected_<status>``, ``drop_<reason>``, ...) and sizes."""
        return {**self._counters, **self._cache.statistics(), "nonces": len(self._nonces)}

    # -- return routability ---------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _handle_test_init(
        self,
        now: float,
        msg: HomeTestInit | CareOfTestInit,
        src: IPv6Address,
        dst: IPv6Address,
        home_address: IPv6Address | None,
    ) -> None:
        """RFC 6275 §9.4.1 / §9.4.2: answer statelessly with a keygen token."""
        home = isinstance(msg, HomeTestInit)
        if home_address is not None:
            # §9.4.1/§9.4.2: a HoTI or CoTI MUST NOT carry a Home Address option.
            self._drop("hoti_with_hao" if home else "coti_with_hao")
            return
        if not _is_unicast_routable(src) or len(msg.cookie) != COOKIE_LENGTH:
            self._drop("bad_address" if len(msg.cookie) == COOKIE_LENGTH else "bad_cookie")
            return
        index, nonce = self._nonces.current(now)
        reply: HomeTest | CareOfTest
        if home:
            reply = HomeTest(index, msg.cookie, home_keygen_token(self._kcn, src, nonce))
        else:
            reply = CareOfTest(index, msg.cookie, care_of_keygen_token(self._kcn, src, nonce))
        self._outgoing.append(OutgoingMh(encode_mh(reply, dst, src), dst, src))
        self._counters["hot_sent" if home else "cot_sent"] += 1

    # -- binding updates ------------------------------------------------------------------

    def _handle_bu(
        self,
        now: float,
        bu: BindingUpdate,
        data: bytes,
        src: IPv6Address,
        dst: IPv6Address,
        home_address: IPv6Address | None,
    ) -> None:
        request = self._authenticate(now, bu, data, src, dst, home_address)
        if request is None:
            return
        hoa = request.home_address
        entry = self._cache.get(hoa)
        if entry is not None and not seq_is_newer(bu.sequence, entry.sequence):
            # RFC 6275 §9.5.1: the BA carries the last accepted sequence number.
            self._reply(request, SEQ_OUT_OF_WINDOW, sequence=entry.sequence)
        elif bu.home:
            registered = entry is not None and entry.state is CnBindingState.REGISTERED
            if registered:
                self._reply(request, REGISTRATION_TYPE_CHANGE_DISALLOWED)
            else:
                self._reply(request, HOME_REGISTRATION_NOT_SUPPORTED)
        elif request.deletion:
            self._deregister(now, request, entry)
        elif entry is None and self._cache.full:
            self._reply(request, INSUFFICIENT_RESOURCES)
        else:
            self._register(now, request, entry)

    def _authenticate(
        self,
        now: float,
        bu: BindingUpdate,
        data: bytes,
        src: IPv6Address,
        dst: IPv6Address,
        home_address: IPv6Address | None,
    ) -> _Request | None:
        """Steps 1-4: addresses, options, nonce indices, Kbm and the authenticator."""
        alt = find_option(bu.options, AlternateCareOfAddress)
        care_of = alt.address if alt is not None else src
        hoa = home_address if home_address is not None else src
        deletion = bu.lifetime == 0 or care_of == hoa
        if home_address is None and not deletion:
            self._drop("bu_without_hao")
            return None
        if not (_is_unicast_routable(hoa) and _is_unicast_routable(care_of)):
            self._drop("bad_address")
            return None
        indices = find_option(bu.options, NonceIndices)
        if indices is None:
            self._drop("missing_nonce_indices")
            return None
        if not bu.options or not isinstance(bu.options[-1], BindingAuthorizationData):
            self._drop("missing_bad")  # §6.2.7: BAD must be present and the last option
            return None
        reply_via = src if home_address is not None else None
        home_nonce = self._nonces.lookup(indices.home_nonce_index, now)
        care_of_nonce = None if deletion else self._nonces.lookup(indices.care_of_nonce_index, now)
        status = _nonce_status(home_nonce is None, not deletion and care_of_nonce is None)
        if status is not None:
            self._reply_expired_nonces(now, bu, status, dst, hoa, reply_via)
            return None
        assert home_nonce is not None
        home_token = home_keygen_token(self._kcn, hoa, home_nonce)
        care_of_token = (
            None
            if care_of_nonce is None
            else care_of_keygen_token(self._kcn, care_of, care_of_nonce)
        )
        kbm = binding_management_key(home_token, care_of_token)
        request = _Request(bu, hoa, care_of, dst, reply_via, deletion, indices, kbm)
        if not verify_bad(data, kbm=kbm, coa=request.mac_care_of, cn=dst):
            self._drop("bad_authenticator")  # §9.5.1: silently discarded, no state
            return None
        return request

    def _deregister(self, now: float, request: _Request, entry: _Entry | None) -> None:
        """RFC 6275 §9.5.3; the entry stays ``deleted`` to keep its sequence number."""
        self._counters["deregistrations"] += 1
        hold_until = now + self._nonces.lifetime_s
        if entry is None:
            if not self._cache.full:
                entry = _Entry(
                    request.home_address,
                    request.care_of,
                    request.bu.sequence,
                    0,
                    hold_until,
                    request.indices.home_nonce_index,
                    None,
                    CnBindingState.DELETED,
                )
                self._cache.put(entry, hold_until)
            self._reply(request, ACCEPTED)
            return
        if entry.state is CnBindingState.REGISTERED:
            self._events.append(CnBindingRemoved(entry.home_address, "deregistered"))
        entry.sequence = request.bu.sequence
        entry.lifetime_s = 0
        entry.home_nonce_index = request.indices.home_nonce_index
        entry.care_of_nonce_index = None
        self._cache.hold(entry, hold_until)
        self._reply(request, ACCEPTED)

    def _register(self, now: float, request: _Request, entry: _Entry | None) -> None:
        units = min(request.bu.lifetime, self._max_units)
        lifetime_s = units * LIFETIME_UNIT_S
        indices = request.indices
        previous = entry.snapshot() if entry and entry.state is CnBindingState.REGISTERED else None
        if entry is None:
            entry = _Entry(
                request.home_address,
                request.care_of,
                request.bu.sequence,
                lifetime_s,
                now + lifetime_s,
                indices.home_nonce_index,
                indices.care_of_nonce_index,
                CnBindingState.REGISTERED,
            )
            self._cache.put(entry, now + lifetime_s)
        else:
            entry.care_of_address = request.care_of
            entry.sequence = request.bu.sequence
            entry.lifetime_s = lifetime_s
            entry.home_nonce_index = indices.home_nonce_index
            entry.care_of_nonce_index = indices.care_of_nonce_index
            entry.state = CnBindingState.REGISTERED
            self._cache.schedule(entry, now + lifetime_s)
        if previous is None:
            self._counters["registrations"] += 1
            self._events.append(CnBindingAdded(entry.snapshot()))
        else:
            self._counters["refreshes"] += 1
            self._events.append(CnBindingUpdated(entry.snapshot(), previous))
        self._reply(request, ACCEPTED, lifetime=units)

    # -- sending --------------------------------------------------------------------------

    def _count_status(self, status: int) -> None:
        self._counters["accepted" if status < 128 else f"rejected_{int(status)}"] += 1

    def _reply(
        self, request: _Request, status: BaStatus, *, sequence: int | None = None, lifetime: int = 0
    ) -> None:
        """An authenticated BA, when §9.5.4 asks for one."""
        self._count_status(status)
        if not request.bu.ack and status not in ALWAYS_ANSWERED:
            return
        ba = BindingAck(
            status=status,
            sequence=request.bu.sequence if sequence is None else sequence,
            lifetime=lifetime,
        )
        local, hoa = request.local, request.home_address
        data = encode_mh_with_bad(
            ba, local, hoa, kbm=request.kbm, coa=request.mac_care_of, cn=local
        )
        self._outgoing.append(OutgoingMh(data, local, hoa, care_of=request.reply_via))
        self._counters["ba_sent"] += 1

    def _reply_expired_nonces(
        self,
        now: float,
        bu: BindingUpdate,
        status: BaStatus,
        local: IPv6Address,
        hoa: IPv6Address,
        reply_via: IPv6Address | None,
    ) -> None:
        """136-138 without BAD (§6.1.8): nothing authenticates it, so it is rate-limited."""
        self._count_status(status)
        if not self._nonce_ba_limiter.allow(now, reply_via or hoa):
            self._counters["nonce_ba_rate_limited"] += 1
            return
        ba = BindingAck(status=status, sequence=bu.sequence, lifetime=0)
        data = encode_mh(ba, local, hoa)
        self._outgoing.append(OutgoingMh(data, local, hoa, care_of=reply_via))
        self._counters["ba_sent"] += 1

    def _send_binding_error(
        self,
        now: float,
        status: BeStatus,
        local: IPv6Address,
        destination: IPv6Address,
        home_address: IPv6Address | None,
    ) -> None:
        """RFC 6275 §9.3.3: to the offending packet's source, rate-limited."""
        if not _is_unicast_routable(destination):
            self._counters["be_suppressed"] += 1
            return
        if not self._be_limiter.allow(now, destination):
            self._counters["be_rate_limited"] += 1
            return
        be = BindingError(status=status, home_address=home_address or UNSPECIFIED)
        data = encode_mh(be, local, destination)
        self._outgoing.append(OutgoingMh(data, local, destination))
        self._counters[f"be_sent_{int(status)}"] += 1

    # -- timers ---------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Expired bindings turn ``deleted`` (held, see ``__init__``); held ones are purged."""
        for entry in self._cache.expire(now).expired:
            entry.lifetime_s = 0
            self._counters["expirations"] += 1
            self._events.append(CnBindingRemoved(entry.home_address, "expired"))


def _nonce_status(home_expired: bool, care_of_expired: bool) -> BaStatus | None:
    """RFC 6275 §9.5.1: 136, 137 or 138 for an unrecognised home, care-of or both indices."""
    if home_expired and care_of_expired:
        return EXPIRED_NONCES
    if home_expired:
        return EXPIRED_HOME_NONCE_INDEX
    if care_of_expired:
        return EXPIRED_CARE_OF_NONCE_INDEX
    return None
