"""Home agent core: the binding cache for home registrations (sans-IO).

Theory of operation. The driver hands every Mobility Header addressed to the HA to
:meth:`HomeAgentCore.receive_datagram` with the addresses of the IPv6 packet that carried it
(for mipnode the home BU travels inside the MN-HA tunnel, so ``src`` is the HoA and ``dst`` the
HA) and the :class:`~mipnode.core.types.Via` it arrived on. The core checks it in this order,
each step either dropping silently (counted as ``drop_<reason>``) or answering with a BA:

1. decode (``BadPacket`` → drop by reason); anything but a BU → ``drop_unexpected_mh_type``;
2. RFC 4285 MN-HA auth option, which must be the last option → else ``drop_missing_auth``;
   unknown SPI → ``drop_unknown_spi`` (RFC 4285: no SA, silent drop);
3. authenticator over (Alt-CoA or source) ‖ HoA ‖ MH → else BA 146; the SA's home address must
   be the BU's HoA (RFC 6275 §15: credentials bound to a HoA) → else BA 146 (``hoa_mismatch``);
4. Mesg-ID option → else BA 145; timestamp within ``timestamp_window_s`` of ``now`` and strictly
   greater than any accepted with this SA → else BA 144 (RFC 4285);
5. H flag → else 129 (we are no correspondent node); HoA in the home prefix → else 132;
6. sequence number newer than the cache entry's (RFC 6275 §9.5.1) → else 135 with the last one;
7. de-registration (lifetime 0 or CoA = HoA, §10.3.2) or registration (§10.3.1).

Every BA is authenticated with the SA and sent from the HA to the HoA on the BU's ``via``.
Bindings are bounded by the configured SAs (one HoA each), so the cache needs no size cap.
A de-registered entry stays ``deleted`` for MAX_DELETE_BCE_TIMEOUT so a delayed older BU still
meets the sequence check; an expired entry is removed at once (replays of older BUs are then
stopped by the RFC 4285 timestamp, which outlives the entry).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv6Address, IPv6Network

from mipnode.core._options import find_option, ntp_order_key
from mipnode.core.sequence import seq_is_newer
from mipnode.core.types import OutgoingMh, Via
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix, verify_mh_authenticated
from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BindingAck,
    BindingUpdate,
    MesgId,
    MnHaAuth,
    decode_mh_untrusted,
)

# Specification constants
MAX_DELETE_BCE_TIMEOUT = 10.0  # RFC 6275 §12
LIFETIME_UNIT_S = 4  # RFC 6275 §6.1.7
MAX_LIFETIME_UNITS = 0xFFFF
MNHA_SUBTYPE = 1  # RFC 4285 §5
NTP_LOW_MASK = 0xFFFF_FFFF

ACCEPTED = BaStatus.ACCEPTED
PROHIBITED = BaStatus.ADMINISTRATIVELY_PROHIBITED
NOT_HOME_SUBNET = BaStatus.NOT_HOME_SUBNET
NOT_HOME_AGENT = BaStatus.NOT_HOME_AGENT_FOR_THIS_MN
SEQ_OUT_OF_WINDOW = BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW
ID_MISMATCH = BaStatus.ID_MISMATCH
MESG_ID_REQUIRED = BaStatus.MESG_ID_REQUIRED
AUTH_FAILED = BaStatus.AUTH_FAILED


class BindingState(StrEnum):
    REGISTERED = "registered"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class SecurityAssociation:
    """An RFC 4285 MN-HA security association; it authorises exactly one home address."""

    spi: int
    key: bytes = field(repr=False)
    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class HaCoreConfig:
    """Home agent settings.

    Attributes:
        address: the HA's own address (source of every BA).
        home_prefix: HoAs outside it are refused with 132.
        security_associations: one per mobile node; SPIs must be unique.
        max_lifetime_s: longest lifetime granted (rounded down to 4 s units).
        timestamp_window_s: allowed |Mesg-ID time - now| (RFC 4285 default 7 s).
    """

    address: IPv6Address
    home_prefix: IPv6Network
    security_associations: tuple[SecurityAssociation, ...]
    max_lifetime_s: int = 3600
    timestamp_window_s: float = 7.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "security_associations", tuple(self.security_associations))
        spis = [sa.spi for sa in self.security_associations]
        if len(set(spis)) != len(spis):
            raise ValueError("duplicate SPI in security_associations")
        if not LIFETIME_UNIT_S <= self.max_lifetime_s <= MAX_LIFETIME_UNITS * LIFETIME_UNIT_S:
            raise ValueError("max_lifetime_s must be in 4..262140")
        if self.timestamp_window_s <= 0:
            raise ValueError("timestamp_window_s must be positive")


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


@dataclass(frozen=True, slots=True)
class BindingAdded:
    """A HoA without a binding got one."""

    binding: Binding

    @property
    def home_address(self) -> IPv6Address:
        return self.binding.home_address


@dataclass(frozen=True, slots=True)
class BindingUpdated:
    """An existing binding was re-registered (refresh, or a new CoA / via: compare ``previous``)."""

    binding: Binding
    previous: Binding

    @property
    def home_address(self) -> IPv6Address:
        return self.binding.home_address


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A binding ended; ``reason`` is ``"deregistered"`` or ``"expired"``."""

    home_address: IPv6Address
    reason: str


HaEvent = BindingAdded | BindingUpdated | BindingRemoved


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
    generation: int = 0  # matches the live heap item; older heap items are stale

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
        )


@dataclass(frozen=True, slots=True)
class _Request:
    """A BU that passed authentication: enough to address and sign the answer."""

    bu: BindingUpdate
    sa: SecurityAssociation
    home_address: IPv6Address
    care_of: IPv6Address
    via: Via
    mesg_id: int | None


class HomeAgentCore:
    """Binding cache and BU/BA processing of a home agent (RFC 6275 §10.3, RFC 4285)."""

    def __init__(self, config: HaCoreConfig) -> None:
        self._config = config
        self._sas = {sa.spi: sa for sa in config.security_associations}
        self._max_units = min(MAX_LIFETIME_UNITS, config.max_lifetime_s // LIFETIME_UNIT_S)
        self._window = int(config.timestamp_window_s * (1 << 32))
        self._last_timestamp: dict[int, int] = {}  # SPI -> ntp_order_key of the last accepted
        self._entries: dict[IPv6Address, _Entry] = {}
        self._deadlines: list[tuple[float, int, IPv6Address]] = []
        self._generation = 0
        self._outgoing: list[OutgoingMh] = []
        self._events: deque[HaEvent] = deque()
        self._counters: Counter[str] = Counter()

    # -- the five verbs -------------------------------------------------------------------

    def receive_datagram(
        self, now: float, data: bytes, src: IPv6Address, dst: IPv6Address, via: Via
    ) -> None:
        """Process one Mobility Header; never raises for bad input (drops are counted)."""
        self._expire(now)
        request = self._authenticate(data, src, dst, via)
        if request is None:
            return
        if (status := self._check_freshness(now, request)) is not None:
            self._reply(now, request, status)
            return
        if not request.bu.home:
            self._reply(now, request, PROHIBITED)
        elif request.home_address not in self._config.home_prefix:
            self._reply(now, request, NOT_HOME_SUBNET)
        else:
            self._handle_home_bu(now, request)

    def handle_timer(self, now: float) -> None:
        """Expire bindings and purge deleted entries whose deadline has come."""
        self._expire(now)

    def get_timer(self) -> float | None:
        """The next expiry or purge deadline, or ``None``."""
        heap = self._deadlines
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def datagrams_to_send(self, now: float) -> list[OutgoingMh]:
        """BAs queued since the last call."""
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
            for e in self._entries.values()
            if include_deleted or e.state is BindingState.REGISTERED
        ]

    def binding_for(self, home_address: IPv6Address) -> Binding | None:
        """The registered binding of ``home_address``, or ``None``."""
        entry = self._entries.get(home_address)
        if entry is None or entry.state is not BindingState.REGISTERED:
            return None
        return entry.snapshot()

    def statistics(self) -> dict[str, int]:
        """Counters (``accepted``, ``rejected_<status>``, ``drop_<reason>``, ...) and sizes."""
        stats = dict(self._counters)
        live = sum(e.state is BindingState.REGISTERED for e in self._entries.values())
        stats["bindings"] = live
        stats["deleted_entries"] = len(self._entries) - live
        return stats

    # -- receive stages -------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _authenticate(
        self, data: bytes, src: IPv6Address, dst: IPv6Address, via: Via
    ) -> _Request | None:
        """Steps 1-3: decode, find the SA, verify the MAC and the SA's HoA."""
        try:
            msg = decode_mh_untrusted(data, src, dst)
        except BadPacket as exc:
            self._drop(exc.reason)
            return None
        if not isinstance(msg, BindingUpdate):
            self._drop("unexpected_mh_type")
            return None
        # RFC 4285 §4: when MN-HA is the only authentication option it MUST be the last one.
        auth = msg.options[-1] if msg.options else None
        if not isinstance(auth, MnHaAuth) or auth.subtype != MNHA_SUBTYPE:
            self._drop("missing_auth")
            return None
        sa = self._sas.get(auth.spi)
        if sa is None:
            self._drop("unknown_spi")
            return None
        alt = find_option(msg.options, AlternateCareOfAddress)
        care_of = alt.address if alt is not None else src
        mesg = find_option(msg.options, MesgId)
        request = _Request(msg, sa, src, care_of, via, mesg.timestamp if mesg else None)
        if not verify_mh_authenticated(data, key=sa.key, coa=care_of, hoa=src):
            self._counters["bad_auth"] += 1
            self._reply_unchecked(request, AUTH_FAILED)
            return None
        if sa.home_address != src:
            self._counters["hoa_mismatch"] += 1
            self._reply_unchecked(request, AUTH_FAILED)
            return None
        return request

    def _check_freshness(self, now: float, request: _Request) -> BaStatus | None:
        """Step 4 (RFC 4285 §6): the Mesg-ID timestamp must be recent and increasing."""
        ts = request.mesg_id
        if ts is None:
            return MESG_ID_REQUIRED
        key = ntp_order_key(ts)
        last = self._last_timestamp.get(request.sa.spi)
        if abs(key - ntp_order_key(ntp_from_unix(now))) > self._window or (
            last is not None and key <= last
        ):
            self._counters["stale_timestamp"] += 1
            return ID_MISMATCH
        # The timestamp is spent once an authentic BU carried it, whatever the answer.
        self._last_timestamp[request.sa.spi] = key
        return None

    def _handle_home_bu(self, now: float, request: _Request) -> None:
        """Steps 6-7: sequence window, then de-registration or registration."""
        bu, hoa = request.bu, request.home_address
        entry = self._entries.get(hoa)
        if entry is not None and not seq_is_newer(bu.sequence, entry.sequence):
            # RFC 6275 §9.5.1: the BA carries the last accepted sequence number.
            self._reply(now, request, SEQ_OUT_OF_WINDOW, sequence=entry.sequence)
            return
        if bu.lifetime == 0 or request.care_of == hoa:
            self._deregister(now, request, entry)
        else:
            self._register(now, request, entry)

    def _deregister(self, now: float, request: _Request, entry: _Entry | None) -> None:
        if entry is None or entry.state is BindingState.DELETED:
            if entry is not None:
                entry.sequence = request.bu.sequence
            self._reply(now, request, NOT_HOME_AGENT)
            return
        # RFC 6275 §10.3.2: keep the entry, invalid, for MAX_DELETE_BCE_TIMEOUT so that a
        # delayed older BU is answered with 135 instead of re-creating the binding.
        entry.state = BindingState.DELETED
        entry.sequence = request.bu.sequence
        entry.lifetime_s = 0
        entry.registered_at = now
        self._schedule(entry, now + MAX_DELETE_BCE_TIMEOUT)
        self._counters["deregistrations"] += 1
        self._events.append(BindingRemoved(entry.home_address, "deregistered"))
        self._reply(now, request, ACCEPTED)

    def _register(self, now: float, request: _Request, entry: _Entry | None) -> None:
        units = min(request.bu.lifetime, self._max_units)
        lifetime_s = units * LIFETIME_UNIT_S
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
            )
            self._entries[entry.home_address] = entry
        else:
            entry.care_of_address = request.care_of
            entry.via = request.via
            entry.sequence = request.bu.sequence
            entry.lifetime_s = lifetime_s
            entry.registered_at = now
            entry.state = BindingState.REGISTERED
        self._schedule(entry, now + lifetime_s)
        if previous is None:
            self._counters["registrations"] += 1
            self._events.append(BindingAdded(entry.snapshot()))
        else:
            self._counters["refreshes"] += 1
            self._events.append(BindingUpdated(entry.snapshot(), previous))
        self._reply(now, request, ACCEPTED, lifetime=units)

    # -- sending --------------------------------------------------------------------------

    def _reply(
        self,
        now: float,
        request: _Request,
        status: BaStatus,
        *,
        sequence: int | None = None,
        lifetime: int = 0,
    ) -> None:
        mesg_id = request.mesg_id
        if status == ID_MISMATCH and mesg_id is not None:
            # RFC 4285 §6: the HA's time in the high 32 bits, the MN's low 32 bits kept.
            mesg_id = (ntp_from_unix(now) & ~NTP_LOW_MASK) | (mesg_id & NTP_LOW_MASK)
        self._send_ba(request, status, sequence, lifetime, mesg_id)

    def _reply_unchecked(self, request: _Request, status: BaStatus) -> None:
        self._send_ba(request, status, None, 0, request.mesg_id)

    def _send_ba(
        self,
        request: _Request,
        status: BaStatus,
        sequence: int | None,
        lifetime: int,
        mesg_id: int | None,
    ) -> None:
        options = (MesgId(mesg_id),) if mesg_id is not None else ()
        ba = BindingAck(
            status=status,
            sequence=request.bu.sequence if sequence is None else sequence,
            lifetime=lifetime,
            options=options,
        )
        hoa, sa = request.home_address, request.sa
        data = encode_mh_authenticated(
            ba,
            self._config.address,
            hoa,
            spi=sa.spi,
            key=sa.key,
            coa=request.care_of,
            hoa=hoa,
        )
        self._outgoing.append(OutgoingMh(data, self._config.address, hoa, request.via))
        self._counters["accepted" if status < 128 else f"rejected_{int(status)}"] += 1

    # -- timers ---------------------------------------------------------------------------

    def _schedule(self, entry: _Entry, deadline: float) -> None:
        self._generation += 1
        entry.generation = self._generation
        entry.expires_at = deadline
        heapq.heappush(self._deadlines, (deadline, self._generation, entry.home_address))

    def _is_live(self, item: tuple[float, int, IPv6Address]) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.generation == item[1]

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)
            if not self._is_live(item):
                continue
            entry = self._entries.pop(item[2])
            if entry.state is BindingState.REGISTERED:
                self._counters["expirations"] += 1
                self._events.append(BindingRemoved(entry.home_address, "expired"))
