"""Home agent core: the binding cache for home registrations (sans-IO).

Theory of operation. The driver hands every Mobility Header addressed to the HA to
:meth:`HomeAgentCore.receive_datagram` with the addresses of the IPv6 packet that carried it
(for mipnode the home BU travels inside the MN-HA tunnel, so ``src`` is the HoA and ``dst`` the
HA) and the :class:`~mipnode.core.types.Via` it arrived on. The core checks it in this order,
each step either dropping silently (counted as ``drop_<reason>``) or answering with a BA:

1. decode (``BadPacket`` → drop by reason; the node answers a malformed Payload Proto or
   Header Len with an ICMPv6 Parameter Problem first, ``core/home_agent.py``); an unknown MH
   type → Binding Error status 2 (§9.2 MUST; rate-limited, never larger than the MH); anything
   else but a BU → ``drop_unexpected_mh_type``;
2. RFC 4285 MN-HA auth option, which must be the last option → else ``drop_missing_auth``;
   unknown SPI → ``drop_unknown_spi`` (RFC 4285: no SA, silent drop);
3. authenticator over (Alt-CoA or the care-of source) ‖ HoA ‖ MH, and the SA's home address
   must be the BU's HoA (RFC 6275 §15: credentials bound to a HoA) → else dropped silently and
   counted (``bad_auth`` / ``hoa_mismatch``). Never a signed 146 in answer to an
   unauthenticated packet: an off-path sender guessing the next sequence number could make it
   a rejection of the genuine registration, and the answer would cost us a MAC per forgery.
   So authentication comes before the home-subnet check of step 5: a BU for an address
   outside the home prefix that no SA names is dropped, never answered 132 (docs/conformance.md);
4. Mesg-ID option → else BA 145; timestamp within ``timestamp_window_s`` of ``now`` and strictly
   greater than any accepted with this SA → else BA 144 (RFC 4285);
5. H flag → else 139 when a home registration exists (§9.5.1: registration type change);
   without one the BU asks for a correspondent binding, and we run no return routability:
   138 if it names nonce indices (none is ours), a silent drop if it has none (§9.5.1's
   tests fail); HoA in the home prefix → else 132;
6. sequence number newer than the registered entry's (RFC 6275 §9.5.1) → else 135 with the
   last one; with no registered entry (none, or one held ``deleted`` after a de-registration)
   any sequence number is taken, as §9.5.1 says -- replays are refused by step 4;
7. de-registration (lifetime 0 or CoA = HoA, §10.3.2) or registration (§10.3.1); with a
   home link (``HaCoreConfig.home_link``) a first registration waits for Duplicate Address
   Detection (``core/dad.py``): BA 0 after its second of silence, 134 on a conflict.

A BU comes tunnelled from the home address (mipnode's mobile node) or natively from the
care-of address with a Home Address option (``home_address=``, RFC 6275 §11.7.1); the latter is
answered with a type 2 routing header to the care-of address (``OutgoingMh.care_of``, §9.5.4)
and its binding's via is IPv6-in-IPv6 to that address.

Data protection (DESIGN §3, core/esp_keys.py): a registration BU with a key share gets a
fresh X25519 key and inbound SPI from the home agent in its accepting BA, and the binding's
``keys`` become the new ESP keys (every re-registration rekeys; the driver keeps the previous
inbound SA a little while for packets in flight). With ``require_protection`` a registration
without a share is refused with 129 (administratively prohibited); de-registrations need none.
Keys are never exported with the state: after a restart the mobile nodes register again.

Every BA is authenticated with the SA and sent from the HA to the HoA on the BU's ``via``.
The cache is a :class:`~mipnode.core.binding_cache.BindingCache` (entries, deadlines, holding
and purging, shared with the correspondent node); this module adds the care-of address, via,
registration time and refresh-request round to each entry. Bindings are bounded by the
configured SAs (one HoA each), so the cache needs no size cap. A de-registered entry stays
``deleted`` for MAX_DELETE_BCE_TIMEOUT (shown by `mipnode bindings`, persisted), but it is no
binding: the next BU may carry any sequence number (§9.5.1). An expired entry is removed at
once. Replays of older BUs are stopped by the RFC 4285 timestamp, which outlives both.

Refreshing (both off by default; the daemon turns them on). With ``refresh_advice_fraction``
every accepting BA of a registration carries a Binding Refresh Advice (RFC 6275 §6.2.4,
§10.3.1). With ``refresh_requests`` the HA sends a Binding Refresh Request (§6.1.2) to the HoA,
on the binding's ``via`` like a BA, when a binding has ``min(10 % of its lifetime, 30 s)`` left
and no refresh arrived (our rule, after §9.5.5, verify against the RFC: a BRR only when the
entry nears expiry and is in use; every home registration counts as in use; §11.7.4: the MN
answers with a home BU), retransmitted from INITIAL_BINDACK_TIMEOUT doubling, at most
BRR_MAX_TRANSMISSIONS per round and never past the expiry. An accepted BU ends the round. The
BRR carries the MN-HA option computed with the binding's care-of address, so a mipnode MN can
tell it from a forged one (RFC 4285 names BU and BA only; this is our use of the same SA).

Traffic from a home address that arrives on another via than its binding's, or with no binding
at all (the HA restarted without its cache), is answered by the driver's call to
:meth:`HomeAgentCore.refresh_request_for`: a rate-limited BRR on the via it came from, signed
over the home address when there is no binding, so the mobile node registers again at once.

Time: ``now`` is monotonic; the wall clock enters as ``wall_offset`` only in RFC 4285
timestamps and in the snapshot's absolute deadlines. A last accepted timestamp that lies beyond
the freshness window ahead of the clock (the clock was stepped back) is ignored rather than
refusing every fresh BU.

Persistence (the core stays pure; the driver owns the file). :meth:`HomeAgentCore.export_state`
returns a JSON-able snapshot: every entry (registered and held ``deleted`` ones) with HoA, CoA,
via, last accepted sequence, lifetime and *absolute* POSIX deadlines, plus the last accepted
Mesg-ID per SPI; never a key. :attr:`HomeAgentCore.state_version` grows whenever that snapshot
would change, so the driver knows when to write. :meth:`HomeAgentCore.restore` loads such a
snapshot into a fresh core: entries past their deadline are dropped, restored registrations
are announced with ``BindingAdded`` (so the driver reinstalls routes) and each gets a BRR round
at once (reference/testing.md §8). Restored sequence numbers and timestamps are what reject a
BU captured before a restart and replayed after it (testing.md C3): with no entry and no
timestamp RFC 6275 §9.5.1 would accept any sequence number.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from mipnode.core import binding_cache
from mipnode.core._options import find_option, ntp_order_key
from mipnode.core.binding_cache import BindingCache, BindingState, Deadlines
from mipnode.core.dad import PendingDad, dad_targets
from mipnode.core.esp_keys import Ephemeral, EspKeys, derive, inbound_spi, spi_tag
from mipnode.core.ipv4_home import Ipv4HomePool
from mipnode.core.nemo import MAX_PREFIXES, prefixes_to_register
from mipnode.core.sequence import seq_is_newer
from mipnode.core.token_bucket import ErrorRateLimiter
from mipnode.core.types import VIA_KINDS, OutgoingMh, Via
from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    ntp_from_unix,
    verify_decoded_mh_authenticated,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import AddressLike, address_bytes
from mipnode.wire.keyshare import KeyShare, key_share_from_options_untrusted, key_share_option
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BeStatus,
    BindingAck,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    Ipv4AddressAck,
    Ipv4HomeAddress,
    MesgId,
    MnHaAuth,
    MobilityMessage,
    MobilityOption,
    NonceIndices,
    UnknownMobilityMessage,
    decode_mh_with_offsets_untrusted,
    encode_mh,
)

# Specification constants
MAX_DELETE_BCE_TIMEOUT = 10.0  # RFC 6275 §12
LIFETIME_UNIT_S = 4  # RFC 6275 §6.1.7
MAX_LIFETIME_UNITS = 0xFFFF
MNHA_SUBTYPE = 1  # RFC 4285 §5
NTP_LOW_MASK = 0xFFFF_FFFF
INITIAL_BINDACK_TIMEOUT = 1.0  # RFC 6275 §12
MAX_SEQUENCE = 0xFFFF

# Implementation constants
BE_INTERVAL_S = 1.0  # Binding Errors: one a second per destination ...
BE_RATE_PER_S = 10.0  # ... and ten a second in all (RFC 6275 §9.3.3 asks for a limit)
BRR_LEAD_FRACTION = 0.1  # a BRR round starts when this fraction of the lifetime is left ...
BRR_LEAD_MAX_S = 30.0  # ... or this many seconds, whichever is shorter
BRR_MAX_TRANSMISSIONS = 3  # per round: at +0, +1 s, +3 s (INITIAL_BINDACK_TIMEOUT doubling)
STATE_VERSION = 1  # of the export_state() snapshot
UNBOUND_BRR_INTERVAL_S = 1.0  # refresh_request_for(): at most this often per home address
IPV6_HEADER = 40

ACCEPTED = BaStatus.ACCEPTED
PROHIBITED = BaStatus.ADMINISTRATIVELY_PROHIBITED
NOT_HOME_SUBNET = BaStatus.NOT_HOME_SUBNET
NOT_HOME_AGENT = BaStatus.NOT_HOME_AGENT_FOR_THIS_MN
SEQ_OUT_OF_WINDOW = BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW
ID_MISMATCH = BaStatus.ID_MISMATCH
MESG_ID_REQUIRED = BaStatus.MESG_ID_REQUIRED
AUTH_FAILED = BaStatus.AUTH_FAILED
REGISTRATION_TYPE_CHANGE = BaStatus.REGISTRATION_TYPE_CHANGE_DISALLOWED
DAD_FAILED = BaStatus.DUPLICATE_ADDRESS_DETECTION_FAILED
EXPIRED_NONCES = BaStatus.EXPIRED_NONCES
UNRECOGNIZED_MH_TYPE = BeStatus.UNRECOGNIZED_MH_TYPE
UNSPECIFIED = IPv6Address("::")


@dataclass(frozen=True, slots=True)
class SecurityAssociation:
    """An RFC 4285 MN-HA security association; it authorises exactly one home address, and
    the mobile network prefixes a mobile router may register with it (RFC 3963; empty: it
    is a mobile node, not a router)."""

    spi: int
    key: bytes = field(repr=False)
    home_address: IPv6Address
    mobile_network_prefixes: tuple[IPv6Network, ...] = ()
    ipv4_home_address: IPv4Address | None = None  # always this one (RFC 5555); else dynamic


@dataclass(frozen=True, slots=True)
class HaCoreConfig:
    """Home agent settings.

    Attributes:
        address: the HA's own address (source of every BA).
        home_prefix: HoAs outside it are refused with 132.
        security_associations: one per mobile node; SPIs must be unique.
        max_lifetime_s: longest lifetime granted (rounded down to 4 s units).
        timestamp_window_s: allowed |Mesg-ID time - now| (RFC 4285 default 7 s).
        refresh_advice_fraction: when set (in (0, 1)), accepting BAs of a registration carry a
            Binding Refresh Advice of this fraction of the granted lifetime (rounded down to
            4 s units, omitted when that is 0); ``None`` (default) sends none.
        refresh_requests: send Binding Refresh Requests to MNs whose binding nears expiry
            (see the module docstring); restored bindings get one regardless.
        home_link: the home prefix is on a link shared with other nodes (RFC 6275 §10.3.1):
            a first registration waits for Duplicate Address Detection of its home address
            (and its link-local one with the L flag) before its BA, and is refused with 134
            when another node answers (``core/dad.py``); a mobile node back on that link
            de-registers from it (``link_address``).
    """

    address: IPv6Address
    home_prefix: IPv6Network
    security_associations: tuple[SecurityAssociation, ...]
    max_lifetime_s: int = 3600
    timestamp_window_s: float = 7.0
    refresh_advice_fraction: float | None = None
    refresh_requests: bool = False
    require_protection: bool = False
    ipv4_home_prefix: IPv4Network | None = None  # IPv4 home addresses to give (RFC 5555)
    home_link: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "security_associations", tuple(self.security_associations))
        spis = [sa.spi for sa in self.security_associations]
        if len(set(spis)) != len(spis):
            raise ValueError("duplicate SPI in security_associations")
        if not LIFETIME_UNIT_S <= self.max_lifetime_s <= MAX_LIFETIME_UNITS * LIFETIME_UNIT_S:
            raise ValueError("max_lifetime_s must be in 4..262140")
        if self.timestamp_window_s <= 0:
            raise ValueError("timestamp_window_s must be positive")
        if self.refresh_advice_fraction is not None and not 0 < self.refresh_advice_fraction < 1:
            raise ValueError("refresh_advice_fraction must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class Binding:
    """Snapshot of one binding cache entry.

    ``registered_at`` is when the latest accepted BU was processed, so for a registered entry
    ``expires_at == registered_at + lifetime_s``. For a ``deleted`` entry ``lifetime_s`` is 0
    and ``expires_at`` is when the entry is purged.
    """

    home_address: IPv6Address
    care_of_address: IPv6Address
    via: Via
    sequence: int
    lifetime_s: int
    registered_at: float
    expires_at: float
    state: BindingState
    keys: EspKeys | None = field(default=None, repr=False, compare=False)
    prefixes: tuple[IPv6Network, ...] = ()  # a mobile router's registered prefixes (RFC 3963)
    ipv4_home_address: IPv4Address | None = None  # given by this home agent (RFC 5555)
    link_local: bool = False  # the BU had the L flag: its link-local address is defended too

    @property
    def defended(self) -> tuple[IPv6Address, ...]:
        """What a home agent with a home link defends for this binding (proxy ND)."""
        return dad_targets(self.home_address, self.link_local)


@dataclass(frozen=True, slots=True)
class BindingAdded(binding_cache.BindingAdded[Binding]):
    """A HoA without a binding got one."""


@dataclass(frozen=True, slots=True)
class BindingUpdated(binding_cache.BindingUpdated[Binding]):
    """An existing binding was re-registered (refresh, or a new CoA / via: compare ``previous``)."""


@dataclass(frozen=True, slots=True)
class BindingRemoved(binding_cache.BindingRemoved):
    """A binding ended; ``reason`` is ``"deregistered"``, ``"expired"`` or ``"released"`` (a
    node of a cluster gave its home-agent address up)."""


@dataclass(frozen=True, slots=True)
class DadStarted:
    """A first registration of ``home_address`` waits for Duplicate Address Detection: send
    a Neighbor Solicitation for each of ``targets`` on the home link, and report a conflict
    with :meth:`HomeAgentCore.dad_conflict` (``core/dad.py``)."""

    home_address: IPv6Address
    targets: tuple[IPv6Address, ...]


HaEvent = BindingAdded | BindingUpdated | BindingRemoved | DadStarted


@dataclass(slots=True)
class _Entry:
    home_address: IPv6Address
    care_of_address: IPv6Address
    via: Via
    sequence: int
    lifetime_s: int
    registered_at: float
    expires_at: float
    state: BindingState
    brr_sent: int = 0  # BRRs sent in the current round
    keys: EspKeys | None = None  # of the latest registration (never exported)
    prefixes: tuple[IPv6Network, ...] = ()  # mobile network prefixes (core/nemo.py)
    ipv4_home_address: IPv4Address | None = None  # core/ipv4_home.py
    link_local: bool = False  # L flag of the latest registration (a home link defends both)

    def snapshot(self) -> Binding:
        return Binding(
            self.home_address,
            self.care_of_address,
            self.via,
            self.sequence,
            self.lifetime_s,
            self.registered_at,
            self.expires_at,
            self.state,
            self.keys,
            self.prefixes,
            self.ipv4_home_address,
            self.link_local,
        )


@dataclass(slots=True)
class _Request:
    """A BU that passed authentication: enough to address and sign the answer.

    ``home_address`` is the SA's own (equal to the packet's source, checked): entries and
    answers share that one object instead of one per BU."""

    bu: BindingUpdate
    sa: SecurityAssociation
    home_address: IPv6Address
    care_of: IPv6Address
    via: Via
    mesg_id: int | None
    share: KeyShare | None = None  # the mobile node's ESP key share
    # Sent natively from this care-of address with a Home Address option: the BA goes back
    # there with a type 2 routing header (None: it came through the tunnel).
    native_source: IPv6Address | None = None
    prefixes: tuple[IPv6Network, ...] = ()  # what the registration gets (core/nemo.py)
    ipv4_ack: Ipv4AddressAck | None = None  # the answer to its IPv4 Home Address option
    # Sent on the home link by a mobile node back home (RFC 6275 §11.5.5): every answer goes
    # to this link-layer address, since we may still answer Neighbor Discovery for its home
    # address (§10.3.2).
    link_address: bytes | None = None


class HomeAgentCore:
    """Binding cache and BU/BA processing of a home agent (RFC 6275 §10.3, RFC 4285)."""

    def __init__(
        self,
        config: HaCoreConfig,
        *,
        wall_offset: float = 0.0,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        """``now`` is monotonic time everywhere; ``wall_offset`` (POSIX time minus monotonic
        time when the daemon started) gives the RFC 4285 timestamps and the absolute times of
        :meth:`export_state`. A clock step while running changes no lifetime and no timer."""
        self._config = config
        self._random = random_bytes
        self._wall_offset = wall_offset
        self._unbound_brr_at: dict[IPv6Address, float] = {}  # HoA -> last binding-less BRR
        self._sas = {sa.spi: sa for sa in config.security_associations}
        self._sa_by_hoa = {sa.home_address: sa for sa in config.security_associations}
        self._ipv4 = Ipv4HomePool(
            config.ipv4_home_prefix,
            {
                sa.home_address: sa.ipv4_home_address
                for sa in config.security_associations
                if sa.ipv4_home_address is not None
            },
        )
        self._max_units = min(MAX_LIFETIME_UNITS, config.max_lifetime_s // LIFETIME_UNIT_S)
        self._lifetimes: dict[int, int] = {}  # granted units -> seconds, one int shared by all
        self._address_octets = config.address.packed
        prefix = config.home_prefix
        self._prefix_mask = int(prefix.netmask)
        self._prefix_bits = int(prefix.network_address)
        self._clock_at: float | None = None  # the `now` of _clock_key (a batch shares one)
        self._clock_key = 0
        self._window = int(config.timestamp_window_s * (1 << 32))
        self._last_timestamp: dict[int, int] = {}  # SPI -> ntp_order_key of the last accepted
        # Expired registrations go at once; replays are stopped by the RFC 4285 timestamps.
        self._cache: BindingCache[_Entry] = BindingCache(hold_expired_s=None)
        self._brr: Deadlines[IPv6Address] = Deadlines()  # HoA -> next BRR of its round
        self._state_version = 0
        self._changed: set[IPv6Address] = set()  # HoAs whose replication record changed
        self._outgoing: list[OutgoingMh] = []
        self._events: deque[HaEvent] = deque()
        self._counters: Counter[str] = Counter()
        # RFC 6275 §9.3.3: Binding Errors at most one a second per destination, 10 a second.
        self._be_limiter = ErrorRateLimiter(BE_INTERVAL_S, BE_RATE_PER_S)
        self._dad: PendingDad[_Request] = PendingDad()  # first registrations on a home link

    # -- the five verbs -------------------------------------------------------------------

    def receive_datagram(
        self,
        now: float,
        data: bytes,
        src: AddressLike,
        dst: AddressLike,
        via: Via,
        home_address: AddressLike | None = None,
        checksum_verified: bool = False,
        link_address: bytes | None = None,
    ) -> str | None:
        """Process one Mobility Header; never raises for bad input (drops are counted). Returns
        the reason a malformed MH was refused (``payload_proto``, ``bad_length``, ...), so the
        node can answer it with a Parameter Problem (§9.2); None otherwise.

        ``src`` and ``dst`` may be given as their 16 packed octets (what a driver has). A BU
        tunnelled from the home address (mipnode's form) has ``src`` = HoA; one sent natively
        (RFC 6275 §11.7.1: from the care-of address ``src`` with a Home Address option) brings
        the option's ``home_address``: the checksum, the authenticator and the answer then
        use it, and the BA goes back with a type 2 routing header (§9.5.4).
        ``checksum_verified``: the caller already checked the MH checksum (§9.2 wants it first).
        ``link_address``: the BU came on the home link from this link-layer address, sent by a
        mobile node back home from its home address (§11.5.5): only a de-registration is
        taken, and the BA goes to that link-layer address (§10.3.2)."""
        self._expire(now)
        native = home_address is not None
        coa_octets = address_bytes(src) if native else None
        src_octets = address_bytes(home_address if home_address is not None else src)
        try:
            msg, offsets = decode_mh_with_offsets_untrusted(
                data, src_octets, dst, verify_checksum=not checksum_verified
            )
        except BadPacket as exc:
            self._drop(exc.reason)
            return exc.reason
        if isinstance(msg, UnknownMobilityMessage):
            # RFC 6275 §9.2: an unrecognised MH type MUST be answered with Binding Error 2.
            self._counters["unknown_mh_type"] += 1
            self._binding_error(now, UNRECOGNIZED_MH_TYPE, src_octets, via, len(data))
            return None
        request = self._authenticate(data, msg, offsets, src_octets, via, coa_octets, link_address)
        if request is None:
            return None
        if request.bu.home and find_option(msg.options, NonceIndices) is not None:
            # §9.5.1: a home registration MUST NOT carry Nonce Indices (they belong to return
            # routability with a correspondent): not a BU we take.
            self._drop("nonce_indices_in_home_bu")
            return None
        if request.native_source is not None and request.care_of != request.native_source:
            # The tunnel of a natively registered binding goes to the packet's source: the
            # authenticated Alternate Care-of Address must name that same address.
            self._drop("native_alternate_care_of_not_source")
            return None
        if (status := self._check_freshness(now, request)) is not None:
            self._reply(now, request, status)
            return None
        self._answered_refresh_request(now, request.home_address)
        if not request.bu.home:
            self._correspondent_bu(now, request)
        elif int(request.home_address) & self._prefix_mask != self._prefix_bits:
            self._reply(now, request, NOT_HOME_SUBNET)
        else:
            self._handle_home_bu(now, request)
        return None

    def handle_timer(self, now: float) -> None:
        """Expire bindings, purge deleted entries, send BRRs whose time has come and register
        the home addresses whose Duplicate Address Detection found nobody."""
        self._expire(now)
        self._send_due_refresh_requests(now)
        for hoa, request in self._dad.due(now):
            self._counters["dad_passed"] += 1
            self._register(now, request, self._cache.get(hoa))

    def get_timer(self) -> float | None:
        """The next expiry, purge, BRR or DAD deadline, or ``None``."""
        deadlines = (
            self._cache.next_deadline(),
            self._brr.next_deadline(),
            self._dad.next_deadline(),
        )
        return min((d for d in deadlines if d is not None), default=None)

    @property
    def dad_pending(self) -> bool:
        """Whether a Duplicate Address Detection run waits (a driver reads the link only
        then)."""
        return bool(self._dad)

    def dad_conflict(self, now: float, target: IPv6Address) -> bool:
        """Another node on the home link uses ``target`` (it answered our solicitation, or
        solicited for it from the unspecified address itself): the first registration waiting
        for it is refused with 134 (RFC 6275 §10.3.1). False when no DAD is probing it."""
        ended = self._dad.conflict(target)
        if ended is None:
            return False
        self._counters["dad_failed"] += 1
        self._reply(now, ended[1], DAD_FAILED)
        return True

    def datagrams_to_send(self, now: float) -> list[OutgoingMh]:
        """BAs and BRRs queued since the last call."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> HaEvent | None:
        """The oldest pending event, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- inspection -----------------------------------------------------------------------

    def bindings(self, *, include_deleted: bool = False) -> list[Binding]:
        """Snapshots of the registered bindings (and deleted entries if asked)."""
        return [
            e.snapshot()
            for e in self._cache
            if include_deleted or e.state is BindingState.REGISTERED
        ]

    def binding_for(self, home_address: IPv6Address) -> Binding | None:
        """The registered binding of ``home_address``, or ``None``."""
        entry = self._cache.registered(home_address)
        return None if entry is None else entry.snapshot()

    @property
    def state_version(self) -> int:
        """Grows whenever :meth:`export_state` would return something different."""
        return self._state_version

    def export_state(self) -> dict[str, Any]:
        """A JSON-able snapshot for persistence: entries and last Mesg-IDs, never keys.

        ``{"version": 1, "bindings": [{"home_address", "care_of_address", "via": {"kind",
        "remote"}, "sequence", "lifetime_s", "registered_at", "expires_at", "state"}, ...],
        "timestamps": [{"spi", "mesg_id"}, ...]}``: deadlines are absolute POSIX times, so they
        survive a restart; ``state`` is ``registered`` or ``deleted`` (held after a
        de-registration, still carrying the last accepted sequence number); ``mesg_id`` is the
        64-bit NTP timestamp of the last BU that passed the freshness check with that SPI.
        """
        return {
            "version": STATE_VERSION,
            "bindings": [self._entry_record(e) for e in self._cache],
            "timestamps": [
                {"spi": spi, "mesg_id": key % (1 << 64)}
                for spi, key in sorted(self._last_timestamp.items())
            ],
        }

    def _entry_record(self, e: _Entry) -> dict[str, Any]:
        return {
            "home_address": str(e.home_address),
            "care_of_address": str(e.care_of_address),
            "via": _via_record(e.via),
            "sequence": e.sequence,
            "lifetime_s": e.lifetime_s,
            "registered_at": e.registered_at + self._wall_offset,
            "expires_at": e.expires_at + self._wall_offset,
            "state": e.state.value,
            **({"prefixes": [str(p) for p in e.prefixes]} if e.prefixes else {}),
            **(
                {"ipv4_home_address": str(e.ipv4_home_address)}
                if e.ipv4_home_address is not None
                else {}
            ),
        }

    def replication_record(self, home_address: IPv6Address) -> dict[str, Any] | None:
        """One binding as a node of a cluster replicates it (docs/internals.md, "Home agents
        in a cluster"): ``{"version", "binding": <as export_state lists it>, "timestamp":
        {"spi", "mesg_id"} or None}`` -- its SA's last Mesg-ID, never a key. None without an
        entry for ``home_address``."""
        entry = self._cache.get(home_address)
        if entry is None:
            return None
        sa = self._sa_by_hoa.get(home_address)
        key = None if sa is None else self._last_timestamp.get(sa.spi)
        stamp = None if sa is None or key is None else {"spi": sa.spi, "mesg_id": key % (1 << 64)}
        return {"version": STATE_VERSION, "binding": self._entry_record(entry), "timestamp": stamp}

    def observe_replica(self, record: object) -> bool:
        """Another node of the cluster accepted a BU and replicated it: take on its replay
        state, so that BU, replayed to this node, is refused -- the SA's last Mesg-ID (RFC 4285
        §5.1: a timestamp not newer than the last accepted one gets 144) and, where this node
        holds an entry for the home address, its sequence number (RFC 6275 §9.5.1). Returns
        whether anything rose.

        Raises:
            ValueError: ``record`` is not a well-formed replication record; nothing changed.
        """
        if not isinstance(record, dict) or _int(record, "version", 0, 1 << 32) != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} replication record")
        replica = _parse_entry(record.get("binding"))
        stamp = record.get("timestamp")
        mesg: tuple[int, int] | None = None
        if stamp is not None:
            if not isinstance(stamp, dict):
                raise ValueError("a timestamp record is not an object")
            mesg = (_int(stamp, "spi", 0, 0xFFFF_FFFF), _int(stamp, "mesg_id", 0, (1 << 64) - 1))
        changed = False
        if mesg is not None and mesg[0] in self._sas:
            key = ntp_order_key(mesg[1])
            if key > self._last_timestamp.get(mesg[0], -1):
                self._last_timestamp[mesg[0]] = key
                changed = True
        entry = self._cache.get(replica.home_address)
        # A de-registration's number is no binding's (§9.5.1: after it any number is taken):
        # its echo must not raise the sequence of a registration that followed it.
        if (
            entry is not None
            and replica.state is BindingState.REGISTERED
            and seq_is_newer(replica.sequence, entry.sequence)
        ):
            entry.sequence = replica.sequence
            changed = True
        if changed:
            self._state_version += 1
        return changed

    def restore(self, now: float, state: object) -> int:
        """Load an :meth:`export_state` snapshot into this fresh core; return the number of
        registrations restored.

        Entries whose deadline has passed are dropped (``restore_expired``), and so are entries
        and timestamps of HoAs / SPIs no longer configured (``restore_unknown``). Deadlines are
        kept as they were, but never beyond what the current configuration would grant from
        ``now`` (a clock set back must not lengthen a binding). Each restored registration is
        announced with ``BindingAdded`` and gets a BRR at once (``datagrams_to_send``).

        Raises:
            ValueError: ``state`` is not a well-formed snapshot; the core is left unchanged.
            RuntimeError: the core already holds entries or timestamps.
        """
        if len(self._cache) or self._last_timestamp:
            raise RuntimeError("restore() needs a fresh core")
        entries, timestamps = _parse_state(state)
        for entry in entries:  # absolute POSIX times on disk, monotonic here
            entry.registered_at -= self._wall_offset
            entry.expires_at -= self._wall_offset
        for spi, mesg_id in timestamps:
            if spi in self._sas:
                self._last_timestamp[spi] = ntp_order_key(mesg_id)
            else:
                self._counters["restore_unknown"] += 1
        restored = [e for e in entries if self._install(now, e, "restore")]
        for entry in restored:
            self._counters["restored"] += 1
            self._events.append(BindingAdded(entry.snapshot()))
            # reference/testing.md §8: ask every restored MN to re-register at once.
            self._start_brr_round(entry, now)
        self._send_due_refresh_requests(now)
        self._state_version += 1
        return len(restored)

    def _install(self, now: float, entry: _Entry, counter: str) -> bool:
        """Put a restored or adopted ``entry`` (monotonic deadlines already) into the cache;
        whether it is a registration to serve. Unknown and expired entries are counted under
        ``<counter>_unknown`` and ``<counter>_expired`` and left out."""
        sa = self._sa_by_hoa.get(entry.home_address)
        if sa is None or entry.home_address not in self._config.home_prefix:
            self._counters[f"{counter}_unknown"] += 1
            return False
        if entry.expires_at <= now:
            self._counters[f"{counter}_expired"] += 1
            return False
        entry.home_address = sa.home_address  # one address object per SA, as registered
        given = entry.ipv4_home_address
        if given is not None and not self._ipv4.take(entry.home_address, given):
            self._counters[f"{counter}_ipv4_home_address_dropped"] += 1  # not ours to give now
            entry.ipv4_home_address = None
        if entry.state is BindingState.REGISTERED:
            entry.lifetime_s = min(entry.lifetime_s, self._max_units * LIFETIME_UNIT_S)
            longest = now + entry.lifetime_s
        else:
            longest = now + MAX_DELETE_BCE_TIMEOUT
        if entry.expires_at > longest:
            entry.registered_at = now  # as if (re-)registered or deleted just now
        self._cache.put(entry, min(entry.expires_at, longest))
        return entry.state is BindingState.REGISTERED

    # -- a cluster of home agents (docs/internals.md, "Home agents in a cluster") ----------

    def take_changed(self) -> set[IPv6Address]:
        """The home addresses whose :meth:`replication_record` changed since the last call
        (a registration, refresh, de-registration, expiry, or a Mesg-ID accepted)."""
        changed, self._changed = self._changed, set()
        return changed

    def adopt_replica(self, now: float, record: object, *, keyed: bool = False) -> bool:
        """Serve a binding another node of the cluster registered (this node took its
        home-agent address over): the replicated entry goes into the cache as a restored one
        would -- its absolute expiry turned monotonic, never beyond what this node would
        grant from ``now`` -- with its replay state, and gets a BRR at once under protection
        unless ``keyed`` (the driver holds the binding's ESP SAs, handed over by the node that
        stopped; without them the keys died with that node and the mobile node must register
        again). Returns
        whether it is now served; an expired or unknown one is counted and left out, one this
        node already has an entry for keeps that entry.

        Raises:
            ValueError: ``record`` is not a well-formed replication record; nothing changed.
        """
        self.observe_replica(record)  # validates, and raises the replay state
        assert isinstance(record, dict)
        entry = _parse_entry(record.get("binding"))
        if self._cache.get(entry.home_address) is not None:
            self._counters["adopt_present"] += 1
            return False
        entry.registered_at -= self._wall_offset
        entry.expires_at -= self._wall_offset
        if not self._install(now, entry, "adopt"):
            return False
        self._counters["adopted"] += 1
        self._state_version += 1
        self._events.append(BindingAdded(entry.snapshot()))
        if self._config.require_protection and not keyed:
            # The ESP keys stayed with the node that died: a protected mobile node must
            # register again (at once). A binding without protection is served as it is.
            self._start_brr_round(entry, now)
            self._send_due_refresh_requests(now)
        elif self._config.refresh_requests:
            self._start_brr_round(entry, entry.expires_at - _brr_lead(entry.lifetime_s))
        return True

    def release_all(self) -> int:
        """Stop serving every binding (this node gave its home-agent address up: another
        node serves them from the replicated records). Each registration is announced with
        ``BindingRemoved``; the replay state (Mesg-IDs) stays. Returns how many were served."""
        served = 0
        for entry in list(self._cache):
            self._cache.remove(entry.home_address)
            self._binding_ended(entry)
            if entry.state is BindingState.REGISTERED:
                served += 1
                self._events.append(BindingRemoved(entry.home_address, "released"))
        self._counters["released"] += served
        self._state_version += 1
        return served

    def statistics(self) -> dict[str, int]:
        """Counters (``accepted``, ``rejected_<status>``, ``drop_<reason>``, ...) and sizes."""
        return {**self._counters, **self._cache.statistics()}

    # -- receive stages -------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _authenticate(
        self,
        data: bytes,
        msg: MobilityMessage,
        offsets: tuple[int, ...],
        src_octets: bytes,
        via: Via,
        coa_octets: bytes | None = None,
        link_address: bytes | None = None,
    ) -> _Request | None:
        """Steps 1-3 on the message decoded once (the MAC is checked on it): a BU, its SA, the
        MAC and the SA's HoA."""
        if not isinstance(msg, BindingUpdate):
            self._drop("unexpected_mh_type")
            return None
        # RFC 4285 §5: when MN-HA is the only authentication option it MUST be the last one.
        options = msg.options
        auth = options[-1] if options else None
        if not isinstance(auth, MnHaAuth) or auth.subtype != MNHA_SUBTYPE:
            self._drop("missing_auth")
            return None
        sa = self._sas.get(auth.spi)
        if sa is None:
            self._drop("unknown_spi")
            return None
        alt = find_option(options, AlternateCareOfAddress)
        source_coa = coa_octets if coa_octets is not None else src_octets
        mac_coa = alt.address.packed if alt is not None else source_coa
        if not verify_decoded_mh_authenticated(
            data, msg, offsets, key=sa.key, coa=mac_coa, hoa=src_octets
        ):
            # RFC 4285 §5.3 asks for a BA 146 here; we send none (docs/conformance.md, D3).
            self._counters["bad_auth"] += 1
            return None
        home_address = sa.home_address
        if home_address.packed != src_octets:
            self._counters["hoa_mismatch"] += 1
            return None
        try:
            share = key_share_from_options_untrusted(options)
        except BadPacket as exc:
            self._drop(exc.reason)
            return None
        mesg = find_option(options, MesgId)
        return _Request(
            msg,
            sa,
            home_address,
            alt.address if alt is not None else IPv6Address(source_coa),
            via,
            mesg.timestamp if mesg is not None else None,
            share,
            native_source=None if coa_octets is None else IPv6Address(coa_octets),
            link_address=link_address,
        )

    def _correspondent_bu(self, now: float, request: _Request) -> None:
        """Step 5 for a BU without the H flag (RFC 6275 §9.5.1), which asks for a correspondent
        binding. With a home registration for the address: 139, and the registration stays.
        Without one it must pass the correspondent's tests, and a home agent that runs no
        return routability has given out no nonces: a BU that names nonce indices gets 138
        (expired nonces); one without the Nonce Indices option fails the tests and is
        silently discarded, as §9.5.1 orders."""
        if self._cache.registered(request.home_address) is not None:
            self._reply(now, request, REGISTRATION_TYPE_CHANGE)
        elif find_option(request.bu.options, NonceIndices) is not None:
            self._reply(now, request, EXPIRED_NONCES)
        else:
            self._drop("correspondent_bu_without_nonce_indices")

    def _check_freshness(self, now: float, request: _Request) -> BaStatus | None:
        """Step 4 (RFC 4285 §6): the Mesg-ID timestamp must be recent and increasing."""
        ts = request.mesg_id
        if ts is None:
            return MESG_ID_REQUIRED
        key = ntp_order_key(ts)
        if now != self._clock_at:
            self._clock_at = now
            self._clock_key = ntp_order_key(ntp_from_unix(now + self._wall_offset))
        clock = self._clock_key
        last = self._last_timestamp.get(request.sa.spi)
        if last is not None and last > clock + self._window:
            # Accepted when the clock was ahead (it was stepped back since, or restored from a
            # state file written before the step): no timestamp inside the window can be above
            # it, so it would refuse every fresh BU for as long as the step. Anything it could
            # protect against is outside the window anyway (docs/internals.md, clock steps).
            self._counters["timestamp_floor_ahead_of_clock"] += 1
            last = None
        in_window = abs(key - clock) <= self._window
        if not in_window or (last is not None and key <= last):
            self._counters["stale_timestamp"] += 1
            if in_window:  # recent, but not above one already accepted: a replay
                self._counters["timestamp_not_increasing"] += 1
            return ID_MISMATCH
        # The timestamp is spent once an authentic BU carried it, whatever the answer.
        self._last_timestamp[request.sa.spi] = key
        self._state_version += 1
        self._changed.add(request.sa.home_address)
        return None

    def _handle_home_bu(self, now: float, request: _Request) -> None:
        """Steps 6-7: sequence window, then de-registration or registration."""
        bu, hoa = request.bu, request.home_address
        entry = self._cache.get(hoa)
        # §9.5.1: the window applies to a Binding Cache entry; a de-registered one (held
        # ``deleted``) is no binding, so any sequence number is taken -- replays of older BUs
        # are refused by the RFC 4285 timestamp, which outlives the entry.
        if (
            entry is not None
            and entry.state is BindingState.REGISTERED
            and not seq_is_newer(bu.sequence, entry.sequence)
        ):
            # RFC 6275 §9.5.1: the BA carries the last accepted sequence number.
            self._reply(now, request, SEQ_OUT_OF_WINDOW, sequence=entry.sequence)
            return
        if bu.lifetime == 0 or request.care_of == hoa:
            if self._dad.cancel(hoa) is not None:
                self._counters["dad_cancelled"] += 1
            self._deregister(now, request, entry)
            return
        if request.link_address is not None:
            # §11.5.5: a mobile node on its home link only de-registers; a care-of address
            # there would make the binding point at the link we answer for it on.
            self._counters["home_link_registration_refused"] += 1
            self._reply(now, request, PROHIBITED)
            return
        if request.share is None and self._config.require_protection:
            self._counters["refused_without_key_share"] += 1
            self._reply(now, request, PROHIBITED)
            return
        status, request.prefixes = prefixes_to_register(
            bu, request.sa.mobile_network_prefixes, self._config.home_prefix
        )
        if status != ACCEPTED:
            self._reply(now, request, status)
            return
        if self._config.home_link and (entry is None or entry.state is BindingState.DELETED):
            # §10.3.1: DAD on the home link before the first BA (core/dad.py).
            if hoa not in self._dad:
                self._counters["dad_started"] += 1
            if probe := self._dad.start(now, hoa, request, dad_targets(hoa, bu.link_local)):
                self._events.append(DadStarted(hoa, probe))
            return
        self._register(now, request, entry)

    def _deregister(self, now: float, request: _Request, entry: _Entry | None) -> None:
        if entry is None or entry.state is BindingState.DELETED:
            if entry is not None:
                entry.sequence = request.bu.sequence
                self._state_version += 1
                self._changed.add(entry.home_address)
            self._reply(now, request, NOT_HOME_AGENT)
            return
        # Keep the entry, invalid, for MAX_DELETE_BCE_TIMEOUT (inspection and persistence);
        # it is no binding: §9.5.1 takes any sequence number after it, and a delayed older BU
        # is refused by its RFC 4285 timestamp instead.
        entry.sequence = request.bu.sequence
        entry.lifetime_s = 0
        entry.keys = None
        entry.prefixes = ()
        self._binding_ended(entry)
        entry.ipv4_home_address = None
        entry.registered_at = now
        self._cache.hold(entry, now + MAX_DELETE_BCE_TIMEOUT)
        self._state_version += 1
        self._changed.add(entry.home_address)
        self._counters["deregistrations"] += 1
        self._events.append(BindingRemoved(entry.home_address, "deregistered"))
        self._reply(now, request, ACCEPTED)

    def _register(self, now: float, request: _Request, entry: _Entry | None) -> None:
        units = min(request.bu.lifetime, self._max_units)
        lifetime_s = self._lifetimes.get(units)
        if lifetime_s is None:
            lifetime_s = units * LIFETIME_UNIT_S
            if len(self._lifetimes) < 64:
                self._lifetimes[units] = lifetime_s
        previous = entry.snapshot() if entry and entry.state is BindingState.REGISTERED else None
        if entry is None:
            entry = _Entry(
                request.home_address,
                request.care_of,
                request.via,
                request.bu.sequence,
                lifetime_s,
                now,
                now + lifetime_s,
                BindingState.REGISTERED,
                prefixes=request.prefixes,
            )
            self._cache.put(entry, now + lifetime_s)
        else:
            entry.prefixes = request.prefixes
            entry.care_of_address = request.care_of
            entry.via = request.via
            entry.sequence = request.bu.sequence
            entry.lifetime_s = lifetime_s
            entry.registered_at = now
            entry.state = BindingState.REGISTERED
            self._cache.schedule(entry, now + lifetime_s)
        entry.link_local = request.bu.link_local
        ours = self._key_up(request, entry)
        self._give_ipv4(request, entry)
        self._state_version += 1
        self._changed.add(entry.home_address)
        # A registration ends any BRR round; the next one starts near the new expiry.
        self._brr.cancel(entry.home_address)
        if self._config.refresh_requests:
            self._start_brr_round(entry, entry.expires_at - _brr_lead(lifetime_s))
        if previous is None:
            self._counters["registrations"] += 1
            self._events.append(BindingAdded(entry.snapshot()))
        else:
            self._counters["refreshes"] += 1
            self._events.append(BindingUpdated(entry.snapshot(), previous))
        self._reply(
            now,
            request,
            ACCEPTED,
            lifetime=units,
            advice=self._refresh_advice(units),
            share=ours,
        )

    def _binding_ended(self, entry: _Entry) -> None:
        """What a registration holds besides its entry ends with it (expired, deleted, or
        released to another node): a pending refresh request and its IPv4 home address."""
        self._brr.cancel(entry.home_address)
        self._ipv4.release(entry.home_address)

    def _give_ipv4(self, request: _Request, entry: _Entry) -> None:
        """RFC 5555 §3.2.1: answer the IPv4 Home Address option, if the BU has one; a
        registration without it gives its address back."""
        asked = find_option(request.bu.options, Ipv4HomeAddress)
        if asked is None:
            self._ipv4.release(entry.home_address)
            entry.ipv4_home_address = None
            return
        request.ipv4_ack = self._ipv4.assign(entry.home_address, asked)
        entry.ipv4_home_address = self._ipv4.of(entry.home_address)
        self._counters[f"ipv4_ack_{int(request.ipv4_ack.status)}"] += 1

    def _key_up(self, request: _Request, entry: _Entry) -> KeyShare | None:
        """New ESP keys for ``entry`` from the mobile node's share; our share for the BA."""
        theirs = request.share
        if theirs is None or self._random is None:
            entry.keys = None
            return None
        ephemeral = Ephemeral(self._random(32))
        shared = ephemeral.shared(theirs.public)
        if shared is None:  # authenticated, so the MN's own doing; no keys, no data
            self._drop("low_order_key_share")
            entry.keys = None
            return None
        tag = spi_tag(entry.home_address)
        spi = inbound_spi(self._random(2), tag)
        if entry.keys is not None and spi == entry.keys.spi_in:
            spi = inbound_spi(((spi + 1) & 0xFFFF).to_bytes(2, "big"), tag)  # never reuse
        ours = KeyShare(theirs.suite, spi, ephemeral.public)
        entry.keys = derive(
            shared=shared,
            psk=request.sa.key,
            suite=theirs.suite,
            home_address=entry.home_address,
            mn=theirs,
            ha=ours,
            we_are_mn=False,
        )
        self._counters["rekeys"] += 1
        return ours

    # -- sending --------------------------------------------------------------------------

    def _answered_refresh_request(self, now: float, home_address: IPv6Address) -> None:
        """§9.5.5: a fresh, authenticated BU answers our Binding Refresh Request, whatever
        becomes of it: stop retransmitting. An accepted one plans the next round itself; for a
        refused one the ordinary near-expiry round is planned again (if still ahead)."""
        entry = self._cache.registered(home_address)
        if entry is None or not entry.brr_sent:
            return
        self._brr.cancel(home_address)
        entry.brr_sent = 0
        near = entry.expires_at - _brr_lead(entry.lifetime_s)
        if self._config.refresh_requests and near > now:
            self._start_brr_round(entry, near)

    def _binding_error(
        self, now: float, status: BeStatus, src_octets: bytes, via: Via, size: int
    ) -> None:
        """A Binding Error to the source of an offending MH on the via it came (§9.3.3):
        rate-limited, and never larger than the MH that caused it (DESIGN: no amplification
        toward a source that may be forged)."""
        destination = IPv6Address(src_octets)
        if destination.is_multicast or destination.is_unspecified or destination.is_loopback:
            self._counters["be_suppressed"] += 1
            return
        data = encode_mh(BindingError(status, UNSPECIFIED), self._config.address, destination)
        if len(data) > size:
            self._counters["be_larger_than_trigger"] += 1
            return
        # Per (outer, inner) destination: where it really goes, and whom it names; a flood
        # with ever new inner sources meets the global 10 a second.
        if not self._be_limiter.allow(now, (via.remote[0], destination)):
            self._counters["be_rate_limited"] += 1
            return
        self._outgoing.append(OutgoingMh(data, self._config.address, destination, via))
        self._counters[f"be_sent_{int(status)}"] += 1

    def _reply(
        self,
        now: float,
        request: _Request,
        status: BaStatus,
        *,
        sequence: int | None = None,
        lifetime: int = 0,
        advice: int | None = None,
        share: KeyShare | None = None,
    ) -> None:
        mesg_id = request.mesg_id
        if status == ID_MISMATCH and mesg_id is not None:
            # RFC 4285 §6: the HA's time in the high 32 bits, the MN's low 32 bits kept.
            clock = ntp_from_unix(now + self._wall_offset)
            mesg_id = (clock & ~NTP_LOW_MASK) | (mesg_id & NTP_LOW_MASK)
        self._send_ba(request, status, sequence, lifetime, mesg_id, advice, share)

    def _refresh_advice(self, units: int) -> int | None:
        """The BRA refresh interval for a granted lifetime (4 s units), or ``None``.

        RFC 6275 §6.2.4: only in a BA to a home registration, and less than the BA's lifetime.
        reference/protocol.md §2.4 notes the BRA is meant for an HA whose binding cache is
        volatile and may be left out when it is kept on disk; we send it anyway when asked (issue
        3): an MN that refreshes before ``min(10 %, 30 s)`` is left never meets a BRR, and a
        restart without ``state_dir`` loses the cache.
        """
        fraction = self._config.refresh_advice_fraction
        if fraction is None:
            return None
        interval = math.floor(units * fraction)
        return interval if 0 < interval < units else None

    def _send_ba(
        self,
        request: _Request,
        status: BaStatus,
        sequence: int | None,
        lifetime: int,
        mesg_id: int | None,
        advice: int | None,
        share: KeyShare | None,
    ) -> None:
        options: tuple[MobilityOption, ...] = ()
        if advice is not None:
            options += (BindingRefreshAdvice(advice),)
        if request.ipv4_ack is not None:
            options += (request.ipv4_ack,)
        if share is not None:  # before the Mesg-ID and the authenticator, which covers it
            options += (key_share_option(share),)
        if mesg_id is not None:
            options += (MesgId(mesg_id),)
        ba = BindingAck(
            status=status,
            sequence=request.bu.sequence if sequence is None else sequence,
            lifetime=lifetime,
            options=options,
            # RFC 3963 §4.2: set only in answer to a BU with R, by a home agent that serves
            # mobile routers (it does, for a security association with prefixes).
            mobile_router=request.bu.mobile_router and bool(request.sa.mobile_network_prefixes),
        )
        hoa, sa = request.home_address, request.sa
        hoa_octets = hoa.packed
        data = encode_mh_authenticated(
            ba,
            self._address_octets,
            hoa_octets,
            spi=sa.spi,
            key=sa.key,
            coa=hoa_octets if request.care_of is hoa else request.care_of.packed,
            hoa=hoa_octets,
        )
        # §9.5.4: a BU that came natively is answered natively, to its source (the care-of
        # address) with a type 2 routing header carrying the home address.
        out = OutgoingMh(
            data,
            self._config.address,
            hoa,
            request.via,
            care_of=request.native_source,
            link_address=request.link_address,
        )
        self._outgoing.append(out)
        self._counters["accepted" if status < 128 else f"rejected_{int(status)}"] += 1

    # -- timers ---------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Drop expired registrations and purge held entries whose time is over."""
        deadline = self._cache.next_deadline()
        if deadline is None or deadline > now:
            return
        expiry = self._cache.expire(now)
        self._state_version += len(expiry.expired) + len(expiry.purged)
        self._changed.update(e.home_address for e in (*expiry.expired, *expiry.purged))
        for entry in expiry.expired:
            self._binding_ended(entry)
            self._counters["expirations"] += 1
            self._events.append(BindingRemoved(entry.home_address, "expired"))

    # -- binding refresh requests ---------------------------------------------------------

    def _start_brr_round(self, entry: _Entry, at: float) -> None:
        entry.brr_sent = 0
        self._brr.schedule(entry.home_address, at)

    def _send_due_refresh_requests(self, now: float) -> None:
        # Only registered entries have a round: de-registration and expiry cancel it.
        for hoa in self._brr.due(now):
            entry = self._cache.registered(hoa)
            if entry is None:
                continue
            self._send_brr(entry)
            if entry.brr_sent < BRR_MAX_TRANSMISSIONS:
                # RFC 6275 §11.8-style back-off: 1 s, then doubling; never past the expiry.
                retry = now + INITIAL_BINDACK_TIMEOUT * 2 ** (entry.brr_sent - 1)
                if retry < entry.expires_at:
                    self._brr.schedule(hoa, retry)
                    continue
            # The round is over. One that came early (after a restore) leaves the ordinary
            # near-expiry round still to come.
            near = entry.expires_at - _brr_lead(entry.lifetime_s)
            if self._config.refresh_requests and near > now:
                self._start_brr_round(entry, near)

    def refresh_request_for(
        self, now: float, home_address: IPv6Address, via: Via, size: int
    ) -> bool:
        """In-tunnel traffic from ``home_address`` arrived on ``via``, which is not its binding's
        (none, or another path): ask the mobile node to register again with a Binding Refresh
        Request on that via, so a home agent that lost its cache (a restart without state) or
        a NAT that moved the mobile node's mapping is repaired in one round trip.

        Only for home addresses we hold an SA for, at most one per second per home address, and
        only when the BRR packet is no larger than the ``size`` octets that triggered it
        (amplification <= 1: the via may be a spoofed source). It is signed over the bound
        care-of address, or over the home address when there is no binding (docs/internals.md);
        a BRR only ever makes the mobile node send an authenticated BU, so a forged trigger
        tears nothing down. True when one was queued."""
        sa = self._sa_by_hoa.get(home_address)
        if sa is None:
            self._drop("brr_unknown_home_address")
            return False
        last = self._unbound_brr_at.get(home_address)
        if last is not None and now - last < UNBOUND_BRR_INTERVAL_S:
            self._drop("brr_rate")
            return False
        entry = self._cache.registered(home_address)
        bound = entry is not None
        coa = entry.care_of_address if entry is not None else home_address
        data = encode_mh_authenticated(
            BindingRefreshRequest(),
            self._config.address,
            home_address,
            spi=sa.spi,
            key=sa.key,
            coa=coa,
            hoa=home_address,
        )
        if IPV6_HEADER + len(data) > size:
            self._drop("brr_larger_than_trigger")
            return False
        self._unbound_brr_at[home_address] = now
        self._outgoing.append(OutgoingMh(data, self._config.address, home_address, via))
        self._counters["brr_sent_unbound" if not bound else "brr_sent_other_via"] += 1
        return True

    def request_refresh(self, home_address: IPv6Address) -> bool:
        """One BRR to a registered mobile node now (its SA needs replacing); False if unbound."""
        entry = self._cache.registered(home_address)
        if entry is None:
            return False
        self._counters["brr_sent_rekey"] += 1
        self._send_brr(entry)
        return True

    def _send_brr(self, entry: _Entry) -> None:
        """A BRR from the HA to the HoA, on the binding's via (RFC 6275 §6.1.2, §11.7.4)."""
        hoa = entry.home_address
        sa = self._sa_by_hoa[hoa]
        data = encode_mh_authenticated(
            BindingRefreshRequest(),
            self._config.address,
            hoa,
            spi=sa.spi,
            key=sa.key,
            coa=entry.care_of_address,
            hoa=hoa,
        )
        self._outgoing.append(OutgoingMh(data, self._config.address, hoa, entry.via))
        entry.brr_sent += 1
        self._counters["brr_sent"] += 1


def _brr_lead(lifetime_s: float) -> float:
    """How long before the expiry a BRR round starts: min(10 % of the lifetime, 30 s)."""
    return min(BRR_LEAD_FRACTION * lifetime_s, BRR_LEAD_MAX_S)


# -- snapshot parsing -------------------------------------------------------------------------


def _parse_state(state: object) -> tuple[list[_Entry], list[tuple[int, int]]]:
    """Check an export_state() snapshot (from disk: untrusted) and build entries from it."""
    if not isinstance(state, dict) or _int(state, "version", 0, 1 << 32) != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} binding cache snapshot")
    bindings, timestamps = state.get("bindings"), state.get("timestamps")
    if not isinstance(bindings, list) or not isinstance(timestamps, list):
        raise ValueError("bindings and timestamps must be lists")
    entries: list[_Entry] = []
    seen: set[IPv6Address] = set()
    for item in bindings:
        entry = _parse_entry(item)
        if entry.home_address in seen:
            raise ValueError(f"home address {entry.home_address} listed twice")
        seen.add(entry.home_address)
        entries.append(entry)
    stamps: dict[int, int] = {}
    for item in timestamps:
        if not isinstance(item, dict):
            raise ValueError("a timestamp record is not an object")
        spi = _int(item, "spi", 0, 0xFFFF_FFFF)
        if spi in stamps:
            raise ValueError(f"SPI {spi} listed twice")
        stamps[spi] = _int(item, "mesg_id", 0, (1 << 64) - 1)
    return entries, list(stamps.items())


def _parse_entry(item: object) -> _Entry:
    if not isinstance(item, dict):
        raise ValueError("a binding record is not an object")
    try:
        hoa = IPv6Address(_str(item, "home_address"))
        coa = IPv6Address(_str(item, "care_of_address"))
        state = BindingState(_str(item, "state"))
    except ValueError as exc:
        raise ValueError(f"bad binding record: {exc}") from None
    via = item.get("via")
    if not isinstance(via, dict):
        raise ValueError("via must be an object")
    kind, remote = via.get("kind"), via.get("remote")
    if not isinstance(kind, str) or kind not in VIA_KINDS or not isinstance(remote, list):
        raise ValueError("via needs a known kind and a remote list")
    if kind == "T-native":
        if len(remote) != 1 or not isinstance(remote[0], str):
            raise ValueError("a T-native remote is [address]")
    elif (
        len(remote) != 2
        or not isinstance(remote[0], str)
        or not isinstance(remote[1], int)
        or isinstance(remote[1], bool)
        or not 0 < remote[1] < 65536
    ):
        raise ValueError("a T-udp remote is [address, port]")
    local_port = via.get("local_port")
    if local_port is not None and (
        not isinstance(local_port, int)
        or isinstance(local_port, bool)
        or not 0 < local_port < 65536
    ):
        raise ValueError("a via's local_port is a port number")
    # A registration lasts at least one 4 s unit; a deleted entry has lifetime 0.
    lowest = LIFETIME_UNIT_S if state is BindingState.REGISTERED else 0
    return _Entry(
        hoa,
        coa,
        Via(kind, tuple(remote), local_port),
        _int(item, "sequence", 0, MAX_SEQUENCE),
        _int(item, "lifetime_s", lowest, MAX_LIFETIME_UNITS * LIFETIME_UNIT_S),
        _time(item, "registered_at"),
        _time(item, "expires_at"),
        state,
        prefixes=_prefixes(item),
        ipv4_home_address=_ipv4(item),
    )


def _ipv4(item: dict[str, Any]) -> IPv4Address | None:
    """A record's IPv4 home address (RFC 5555), if it has one."""
    value = item.get("ipv4_home_address")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("ipv4_home_address must be a string")
    try:
        return IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"bad IPv4 home address: {exc}") from None


def _prefixes(item: dict[str, Any]) -> tuple[IPv6Network, ...]:
    """A record's mobile network prefixes (none when it has no such key: older records)."""
    listed = item.get("prefixes", [])
    if (
        not isinstance(listed, list)
        or len(listed) > MAX_PREFIXES
        or not all(isinstance(p, str) for p in listed)
    ):
        raise ValueError(f"prefixes must be a list of at most {MAX_PREFIXES} strings")
    try:
        return tuple(IPv6Network(p) for p in listed)
    except ValueError as exc:
        raise ValueError(f"bad mobile network prefix: {exc}") from None


def _via_record(via: Via) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": via.kind, "remote": list(via.remote)}
    if via.local_port is not None:
        record["local_port"] = via.local_port
    return record


def _str(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _int(item: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = item.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}")
    return value


def _time(item: dict[str, Any], name: str) -> float:
    value = item.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite POSIX time")
    try:
        seconds = float(value)  # an integer too large for a float raises OverflowError
    except OverflowError:
        raise ValueError(f"{name} is out of range") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite POSIX time")
    return seconds
