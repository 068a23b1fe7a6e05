"""Mobile node core: home registration with the home agent (sans-IO).

Theory of operation. The MN keeps at most one outstanding *exchange* with its HA: a
registration (``register(now, care_of)``, or an automatic refresh) or a de-registration
(``deregister(now)``). Every transmission of an exchange is a new BU (A=1, H=1, Alt-CoA,
RFC 4285 Mesg-ID and MN-HA authenticator) with a new, larger sequence number and a fresh
timestamp (RFC 6275 §11.8). Retransmissions start at ``first_reg_timeout_s`` when the HA has no
binding for us (it must run DAD first, RFC 6275 §13 InitialBindackTimeoutFirstReg) and at
``rereg_timeout_s`` otherwise, doubling up to ``max_bindack_timeout_s`` and then continuing at
that interval (§11.8). There is no retry limit for registrations.

A BA counts only if its MN-HA authenticator verifies and it answers a BU of the current
exchange: its Mesg-ID echoes one we sent (the low 32 bits for 144, whose high half is the HA's
clock). A BA without a Mesg-ID answers nothing: every BU we send carries one, and a sequence
number alone (sent in clear, one more each time) is no proof. Then:

* status < 128: the binding lasts ``lifetime`` from when the acknowledged BU was *sent*
  (RFC 6275 §11.7.3: the MN cannot know when the HA processed it). The refresh starts when
  ``refresh_fraction`` (80 %) of the granted lifetime has elapsed, but at least
  ``refresh_margin_s`` (2 s) before expiry, and earlier if the BA carries a Binding Refresh
  Advice (§11.7.3);
* 135: continue from the HA's last accepted number + 1 and resend at once;
* 144: take the HA's clock from the high 32 bits and resend at once;
* 133 while de-registering: the HA holds no binding, which is what we asked for;
* 146: counted, and the exchange goes on at its ordinary retransmission pace (RFC 4285 says the
  MN SHOULD stop, but a mipnode HA never sends it: it drops a BU that fails authentication, so
  a 146 can only be a stale or confused answer, and stopping for good would let it take the
  registration down);
* any other status >= 128: rejected, stop (the node core tries again a minute later).

Immediate resends (135/144) are limited to ``MAX_IMMEDIATE_RESENDS`` per exchange so that a
confused HA cannot make us loop; after that the ordinary retransmission timer paces us.
If the binding's lifetime runs out before a refresh succeeds, ``BindingLost`` is emitted and
retransmissions go on. A de-registration ends with ``Deregistered(confirmed=False)`` when the
binding it wanted to remove has expired anyway, or after ``MAX_UNBOUND_DEREG_TRANSMISSIONS``
when we knew of no binding.

Data protection (DESIGN §3, core/esp_keys.py). With ``suite`` set, every registration exchange
gets a fresh ephemeral X25519 key and inbound SPI (from the injected randomness); each of its
BUs carries them in a key share, and an accepting BA counts only with the HA's share: then
``Registered.keys`` holds the new ESP keys. A BA 0 without a share (an HA with protection off)
is dropped and counted (``drop_ba_without_key_share``): the mobile node never falls back to
clear data on its own. De-registrations carry no share.

A Binding Refresh Request from the HA (RFC 6275 §11.7.4: the MN SHOULD answer with a BU) starts
the refresh at once when we are registered and no exchange is under way (one in flight
already refreshes). It must carry a valid MN-HA authenticator for our SA over the bound
care-of address, as the HA's BAs do, or over the home address when the HA has no binding for
us (it lost its cache; docs/internals.md), so nobody else can make us signal; and BRR-started
refreshes are at least ``BRR_MIN_INTERVAL_S`` apart, so a replayed BRR costs one BU at most
that often.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from mipnode.core._options import find_option, ntp_order_key
from mipnode.core.esp_keys import Ephemeral, EspKeys, derive, inbound_spi
from mipnode.core.ipv4_networks import ipv6_only
from mipnode.core.sequence import seq_add
from mipnode.core.types import OutgoingMh
from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    ntp_from_unix,
    unix_from_ntp,
    verify_mh_authenticated,
)
from mipnode.wire.errors import BadPacket
from mipnode.wire.keyshare import KeyShare, key_share_from_options_untrusted, key_share_option
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BaStatus,
    BindingAck,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    Ipv4AddressAck,
    Ipv4HomeAddress,
    MesgId,
    MnHaAuth,
    MobileNetworkPrefix,
    decode_mh_untrusted,
)

# Specification constants
LIFETIME_UNIT_S = 4  # RFC 6275 §6.1.7
MAX_LIFETIME_UNITS = 0xFFFF
STATUS_REJECT_MIN = 128
STATUS_NOT_HOME_AGENT = 133
STATUS_SEQ_OUT_OF_WINDOW = 135
STATUS_ID_MISMATCH = 144  # RFC 4285
STATUS_AUTH_FAILED = 146
NTP_LOW_MASK = 0xFFFF_FFFF

# Implementation constants
MAX_IMMEDIATE_RESENDS = 3
MAX_UNBOUND_DEREG_TRANSMISSIONS = 5
MAX_REMEMBERED_TRANSMISSIONS = 16
BRR_MIN_INTERVAL_S = 1.0


class MnState(StrEnum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    DEREGISTERING = "deregistering"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class MnCoreConfig:
    """Mobile node settings.

    Attributes:
        home_address: the MN's HoA.
        home_agent: the HA's address.
        spi: RFC 4285 Mobility SPI of the MN-HA security association.
        key: the SA's shared key.
        lifetime_s: lifetime requested in each BU (rounded down to 4 s units, at least 4 s).
        first_reg_timeout_s: first retransmission interval when the HA holds no binding.
        rereg_timeout_s: first retransmission interval for re-registrations, refreshes and
            de-registrations (INITIAL_BINDACK_TIMEOUT).
        max_bindack_timeout_s: cap of the doubling retransmission interval.
        refresh_fraction: refresh when this fraction of the granted lifetime has elapsed ...
        refresh_margin_s: ... but at least this long before the binding expires.
        suite: ESP suite to key on every registration (tunnels.esp), or ``None`` for no
            protection (plain RFC 6275).
        mobile_network_prefixes: a mobile router's prefixes (RFC 3963): every BU has the R
            flag; a registration names them in Mobile Network Prefix options (explicit mode)
            unless ``implicit_prefixes`` (the home agent knows them from its configuration).
        ipv4_home_address: an IPv4 home address to ask for in every registration (RFC 5555
            §3.1.1; 0.0.0.0: any), then the one the home agent gave; ``None``: none.
    """

    home_address: IPv6Address
    home_agent: IPv6Address
    spi: int
    key: bytes = field(repr=False)
    lifetime_s: int = 600
    first_reg_timeout_s: float = 1.5
    rereg_timeout_s: float = 1.0
    max_bindack_timeout_s: float = 32.0
    refresh_fraction: float = 0.8
    refresh_margin_s: float = 2.0
    suite: int | None = None
    mobile_network_prefixes: tuple[IPv6Network, ...] = ()
    implicit_prefixes: bool = False
    ipv4_home_address: IPv4Address | None = None  # RFC 5555: 0.0.0.0 asks for one; None: off

    def __post_init__(self) -> None:
        if not LIFETIME_UNIT_S <= self.lifetime_s <= MAX_LIFETIME_UNITS * LIFETIME_UNIT_S:
            raise ValueError("lifetime_s must be in 4..262140")
        if min(self.first_reg_timeout_s, self.rereg_timeout_s) <= 0:
            raise ValueError("retransmission timeouts must be positive")
        if self.max_bindack_timeout_s < max(self.first_reg_timeout_s, self.rereg_timeout_s):
            raise ValueError("max_bindack_timeout_s is below an initial timeout")
        if not 0 < self.refresh_fraction < 1 or self.refresh_margin_s < 0:
            raise ValueError("refresh_fraction must be in (0, 1), refresh_margin_s >= 0")


@dataclass(frozen=True, slots=True)
class Registered:
    """The HA accepted a registration (also emitted after every successful refresh)."""

    care_of: IPv6Address
    lifetime_s: int
    expires_at: float
    sequence: int
    keys: EspKeys | None = None  # the ESP keys this registration set up (protection on)
    ipv4_home_address: IPv4Address | None = None  # given by the home agent (RFC 5555)
    ipv4_status: int | None = None  # its IPv4 Address Acknowledgement's; None: not asked


@dataclass(frozen=True, slots=True)
class RegistrationRejected:
    """The HA refused; the MN stopped retransmitting (state ``failed``)."""

    status: int
    care_of: IPv6Address


@dataclass(frozen=True, slots=True)
class Deregistered:
    """De-registration finished; ``confirmed`` is False when we gave up waiting for the BA."""

    confirmed: bool


@dataclass(frozen=True, slots=True)
class BindingLost:
    """The binding's lifetime ran out before a refresh succeeded; registration goes on."""

    care_of: IPv6Address


MnEvent = Registered | RegistrationRejected | Deregistered | BindingLost


@dataclass(frozen=True, slots=True)
class _Sent:
    sequence: int
    timestamp: int
    sent_at: float


@dataclass(slots=True)
class _Exchange:
    """One registration or de-registration, across all its retransmissions."""

    deregistration: bool
    care_of: IPv6Address  # Alt-CoA and the CoA of the MAC (the HoA for a de-registration)
    lifetime_units: int
    initial_timeout: float
    timeout: float
    next_send: float = 0.0
    transmissions: int = 0
    immediate_resends: int = 0
    ephemeral: Ephemeral | None = None  # this exchange's X25519 key (protection on)
    share: KeyShare | None = None
    sent: deque[_Sent] = field(default_factory=lambda: deque(maxlen=MAX_REMEMBERED_TRANSMISSIONS))


class MobileNodeCore:
    """Home registration state machine of a mobile node (RFC 6275 §11.7, RFC 4285)."""

    def __init__(
        self,
        config: MnCoreConfig,
        initial_sequence: int,
        *,
        wall_offset: float = 0.0,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        """``initial_sequence`` should be random (injected), so a restart rarely meets 135.

        ``now`` is monotonic time; ``wall_offset`` (POSIX time minus monotonic time when the
        daemon started) turns it into the RFC 4285 timestamps of Mesg-IDs, until a BA 144 gives
        the home agent's clock. Nothing else here depends on the wall clock, so a clock step
        changes no lifetime and no timer."""
        if config.suite is not None and random_bytes is None:
            raise ValueError("protection needs random_bytes for its ephemeral keys")
        self._config = config
        self._random = random_bytes
        self._hoa = config.home_address
        self._next_sequence = initial_sequence % (1 << 16)
        self._last_sequence: int | None = None
        self._clock_offset = wall_offset
        # Mesg-IDs as ntp_order_key values (0: none yet).
        self._timestamp_floor = 0  # every Mesg-ID we send is larger
        self._timestamp_acked = 0  # largest Mesg-ID the HA accepted (echoed in BA 0 / 135)
        self._state = MnState.IDLE
        self._exchange: _Exchange | None = None
        self._care_of: IPv6Address | None = None
        self._bound_care_of: IPv6Address | None = None  # the CoA the HA's binding points to
        self._expires_at: float | None = None  # of the binding the HA holds for us
        self._refresh_at: float | None = None
        self.ipv4_home_address: IPv4Address | None = None  # the home agent gave it (RFC 5555)
        self._brr_refresh_at: float | None = None  # when a BRR last started a refresh
        self._outgoing: list[OutgoingMh] = []
        self._events: deque[MnEvent] = deque()
        self._counters: Counter[str] = Counter()

    # -- inspection -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``idle``, ``registering``, ``registered``, ``deregistering`` or ``failed``."""
        return self._state.value

    @property
    def sequence(self) -> int | None:
        """The sequence number of the last BU sent, or ``None``."""
        return self._last_sequence

    @property
    def care_of(self) -> IPv6Address | None:
        """The care-of address being registered or registered last."""
        return self._care_of

    @property
    def clock_offset(self) -> float:
        """Seconds added to ``now`` for Mesg-ID timestamps (learnt from BA 144)."""
        return self._clock_offset

    def lifetime_remaining(self, now: float) -> float:
        """Seconds until the HA's binding for us expires (0 without one)."""
        return 0.0 if self._expires_at is None else max(0.0, self._expires_at - now)

    def statistics(self) -> dict[str, int]:
        """Counters: ``bu_sent``, ``retransmissions``, ``drop_<reason>``, ``rejected_<status>``."""
        return dict(self._counters)

    @property
    def brr_refreshes(self) -> int:
        """Registrations an authenticated Binding Refresh Request started."""
        return self._counters["brr_refreshes"]

    # -- commands -------------------------------------------------------------------------

    def register(self, now: float, care_of: IPv6Address) -> None:
        """Register ``care_of`` with the HA (first registration, move, or manual refresh).

        Raises:
            ValueError: ``care_of`` is the home address (use :meth:`deregister`).
        """
        if care_of == self._hoa:
            raise ValueError("care-of address equals the home address; deregister instead")
        self._care_of = care_of
        # A manual refresh of the CoA we are bound to stays "registered"; anything else waits.
        still_bound = self._expires_at is not None and care_of == self._bound_care_of
        if not (still_bound and self._state is MnState.REGISTERED):
            self._state = MnState.REGISTERING
        self._start(now, deregistration=False, care_of=care_of)

    def deregister(self, now: float) -> None:
        """Remove the binding at the HA (BU with lifetime 0 and Alt-CoA = HoA)."""
        self._state = MnState.DEREGISTERING
        self._refresh_at = None
        self._start(now, deregistration=True, care_of=self._hoa)

    # -- the five verbs -------------------------------------------------------------------

    def receive_datagram(self, now: float, data: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """Process one Mobility Header from the HA; never raises for bad input."""
        try:
            msg = decode_mh_untrusted(data, src, dst)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        if isinstance(msg, BindingRefreshRequest):
            self._on_refresh_request(now, msg, data, src)
            return
        ba = self._accept_ba(msg, data, src)
        if ba is None:
            return
        exchange, ack, sent = ba
        mesg = find_option(ack.options, MesgId)
        status = int(ack.status)
        if mesg is not None and (status < STATUS_REJECT_MIN or status == STATUS_SEQ_OUT_OF_WINDOW):
            self._note_accepted_timestamp(mesg.timestamp)
        if (
            status < STATUS_REJECT_MIN
            and self._config.mobile_network_prefixes
            and not (ack.mobile_router or exchange.deregistration)
        ):
            # RFC 3963 §4.2: a home agent that serves mobile routers sets R in its answer;
            # one that does not registered us as a host, and our networks are not routed.
            self._counters["ba_without_mobile_router_flag"] += 1
            self._reject(int(BaStatus.MOBILE_ROUTER_OPERATION_NOT_PERMITTED))
        elif status < STATUS_REJECT_MIN:
            self._handle_accepted(now, exchange, ack, sent)
        elif status == STATUS_SEQ_OUT_OF_WINDOW:
            # RFC 6275 §11.7.1: the BA carries the HA's last accepted number; go past it.
            self._counters["sequence_resync"] += 1
            self._next_sequence = seq_add(ack.sequence, 1)
            self._resend_at_once(now, exchange)
        elif status == STATUS_ID_MISMATCH and mesg is not None:
            self._resync_clock(now, mesg.timestamp)
            self._resend_at_once(now, exchange)
        elif status == STATUS_NOT_HOME_AGENT and exchange.deregistration:
            self._finish_deregistration(confirmed=True)
        elif status == STATUS_AUTH_FAILED:
            self._counters[f"rejected_{status}"] += 1  # retried on the ladder, see above
        else:
            self._reject(status)

    def handle_timer(self, now: float) -> None:
        """Binding expiry, refresh start and retransmissions that are due at ``now``."""
        if self._expires_at is not None and now >= self._expires_at:
            self._on_binding_expired(now)
        if (
            self._state is MnState.REGISTERED
            and self._exchange is None
            and self._refresh_at is not None
            and now >= self._refresh_at
        ):
            assert self._care_of is not None
            self._counters["refreshes"] += 1
            self._start(now, deregistration=False, care_of=self._care_of)
        exchange = self._exchange
        if exchange is not None and now >= exchange.next_send:
            if (
                exchange.deregistration
                and self._expires_at is None
                and exchange.transmissions >= MAX_UNBOUND_DEREG_TRANSMISSIONS
            ):
                self._finish_deregistration(confirmed=False)
                return
            self._counters["retransmissions"] += 1
            self._transmit(now)

    def get_timer(self) -> float | None:
        """The next deadline (retransmission, refresh or expiry), or ``None``."""
        deadlines = []
        if self._exchange is not None:
            deadlines.append(self._exchange.next_send)
        elif self._state is MnState.REGISTERED and self._refresh_at is not None:
            deadlines.append(self._refresh_at)
        if self._expires_at is not None:
            deadlines.append(self._expires_at)
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list[OutgoingMh]:
        """BUs queued since the last call (``via`` is None: the driver picks the T path)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> MnEvent | None:
        """The oldest pending event, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- receiving ------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._counters[f"drop_{reason}"] += 1

    def _on_refresh_request(
        self, now: float, msg: BindingRefreshRequest, data: bytes, src: IPv6Address
    ) -> None:
        """RFC 6275 §11.7.4: a BRR from our HA asks for a home registration at once."""
        bound = self._bound_care_of
        if self._state is not MnState.REGISTERED or bound is None or self._expires_at is None:
            self._drop("brr_not_registered")
            return
        # Signed over the bound care-of address; or over the home address by a home agent that
        # has no binding for us (it restarted without its cache and saw our traffic).
        if not (
            self._from_our_ha(msg, data, src, bound) or self._from_our_ha(msg, data, src, self._hoa)
        ):
            self._drop("bad_auth")
            return
        if self._exchange is not None:
            self._counters["brr_during_exchange"] += 1  # the BU in flight is the answer
            return
        if self._brr_refresh_at is not None and now - self._brr_refresh_at < BRR_MIN_INTERVAL_S:
            self._drop("brr_rate")
            return
        assert self._care_of is not None
        self._brr_refresh_at = now
        self._counters["brr_refreshes"] += 1
        self._start(now, deregistration=False, care_of=self._care_of)

    def _from_our_ha(
        self,
        msg: BindingAck | BindingRefreshRequest,
        data: bytes,
        src: IPv6Address,
        care_of: IPv6Address,
    ) -> bool:
        """``msg`` (decoded from ``data``) came from our HA with a valid MN-HA authenticator
        computed over ``care_of``."""
        auth = msg.options[-1] if msg.options else None
        return (
            src == self._config.home_agent
            and isinstance(auth, MnHaAuth)
            and auth.spi == self._config.spi
            and verify_mh_authenticated(data, key=self._config.key, coa=care_of, hoa=self._hoa)
        )

    def _accept_ba(
        self, msg: object, data: bytes, src: IPv6Address
    ) -> tuple[_Exchange, BindingAck, _Sent] | None:
        """Authenticate a decoded MH and match it, as a BA, to the current exchange."""
        if not isinstance(msg, BindingAck):
            self._drop("unexpected_mh_type")
            return None
        exchange = self._exchange
        if exchange is None:
            self._drop("unexpected_ba")
            return None
        sent = _match(exchange, msg)
        if sent is None:
            self._drop("unmatched_ba")
            return None
        if not self._from_our_ha(msg, data, src, exchange.care_of):
            self._drop("bad_auth")
            return None
        return exchange, msg, sent

    def _handle_accepted(
        self, now: float, exchange: _Exchange, ack: BindingAck, sent: _Sent
    ) -> None:
        if exchange.deregistration:
            self._finish_deregistration(confirmed=True)
            return
        lifetime_s = ack.lifetime * LIFETIME_UNIT_S
        if lifetime_s == 0:
            self._drop("zero_lifetime")  # undefined for a registration; keep retrying
            return
        keys = None
        if exchange.ephemeral is not None and exchange.share is not None:
            keys = self._keys(exchange.ephemeral, exchange.share, ack)
            if keys is None:
                return  # counted; the exchange goes on (an HA with protection off, or worse)
        # RFC 6275 §11.7.3: count the lifetime from when the acknowledged BU was sent.
        expires_at = sent.sent_at + lifetime_s
        cfg = self._config
        after = min(cfg.refresh_fraction * lifetime_s, lifetime_s - cfg.refresh_margin_s)
        advice = find_option(ack.options, BindingRefreshAdvice)
        if advice is not None and 0 < advice.refresh_interval < ack.lifetime:
            after = min(after, advice.refresh_interval * LIFETIME_UNIT_S)
        self._exchange = None
        self._state = MnState.REGISTERED
        self._bound_care_of = exchange.care_of
        self._expires_at = expires_at
        self._refresh_at = sent.sent_at + max(0.0, after)
        self._counters["registered"] += 1
        ipv4_status = self._take_ipv4(ack)
        self._events.append(
            Registered(
                exchange.care_of,
                lifetime_s,
                expires_at,
                sent.sequence,
                keys,
                self.ipv4_home_address,
                ipv4_status,
            )
        )

    def _take_ipv4(self, ack: BindingAck) -> int | None:
        """The IPv4 Address Acknowledgement of an accepting BA (RFC 5555 §3.2.1): its status,
        and the address when it gives one. A home agent that does not answer the option
        (no DSMIPv6) gives none: status 128."""
        if self._config.ipv4_home_address is None:
            return None
        answer = find_option(ack.options, Ipv4AddressAck)
        status = 128 if answer is None else int(answer.status)
        self._counters[f"ipv4_ack_{status}"] += 1
        self.ipv4_home_address = answer.address if answer is not None and status < 128 else None
        return status

    def _keys(self, ephemeral: Ephemeral, share: KeyShare, ack: BindingAck) -> EspKeys | None:
        """The ESP keys from the HA's share in an authenticated, accepting BA."""
        try:
            theirs = key_share_from_options_untrusted(ack.options)
        except BadPacket as exc:
            self._drop(exc.reason)
            return None
        if theirs is None:
            self._drop("ba_without_key_share")
            return None
        if theirs.suite != share.suite:
            self._drop("ba_other_suite")
            return None
        shared = ephemeral.shared(theirs.public)
        if shared is None:
            self._drop("ba_low_order_key")
            return None
        return derive(
            shared=shared,
            psk=self._config.key,
            suite=share.suite,
            home_address=self._hoa,
            mn=share,
            ha=theirs,
            we_are_mn=True,
        )

    def _note_accepted_timestamp(self, timestamp: int) -> None:
        """The HA passed this Mesg-ID's freshness check (it answered 0 or 135 to it)."""
        self._timestamp_acked = max(self._timestamp_acked, ntp_order_key(timestamp))

    def _resync_clock(self, now: float, mesg_id: int) -> None:
        # RFC 4285 §6: the high 32 bits are the HA's clock (whole NTP seconds).
        self._counters["clock_resync"] += 1
        self._clock_offset = unix_from_ntp(mesg_id & ~NTP_LOW_MASK) - now
        # The rejected timestamps were never accepted; only the acknowledged ones bind us.
        self._timestamp_floor = self._timestamp_acked

    def _reject(self, status: int) -> None:
        self._counters[f"rejected_{status}"] += 1
        care_of = self._care_of if self._care_of is not None else self._hoa
        self._exchange = None
        self._expires_at = self._refresh_at = None
        self._state = MnState.FAILED
        self._events.append(RegistrationRejected(status, care_of))

    def _finish_deregistration(self, *, confirmed: bool) -> None:
        self._exchange = None
        self._expires_at = self._refresh_at = None
        self._state = MnState.IDLE
        self._counters["deregistered"] += 1
        self._events.append(Deregistered(confirmed))

    def _on_binding_expired(self, now: float) -> None:
        self._expires_at = self._refresh_at = None
        exchange = self._exchange
        if exchange is not None and exchange.deregistration:
            self._finish_deregistration(confirmed=False)
            return
        self._counters["bindings_lost"] += 1
        assert self._care_of is not None
        self._events.append(BindingLost(self._bound_care_of or self._care_of))
        self._state = MnState.REGISTERING
        if exchange is None:
            self._start(now, deregistration=False, care_of=self._care_of)

    # -- sending --------------------------------------------------------------------------

    def _start(self, now: float, *, deregistration: bool, care_of: IPv6Address) -> None:
        cfg = self._config
        # RFC 6275 §11.8: the first BU to an HA without our binding waits for its DAD.
        first = self._expires_at is None and not deregistration
        timeout = cfg.first_reg_timeout_s if first else cfg.rereg_timeout_s
        units = 0 if deregistration else min(MAX_LIFETIME_UNITS, cfg.lifetime_s // 4)
        self._exchange = exchange = _Exchange(deregistration, care_of, units, timeout, timeout)
        suite = cfg.suite
        if suite is not None and not deregistration and self._random is not None:
            # A fresh key per exchange (not per retransmission): a BA to any BU of it matches.
            exchange.ephemeral = Ephemeral(self._random(32))
            exchange.share = KeyShare(
                suite, inbound_spi(self._random(2)), exchange.ephemeral.public
            )
        self._transmit(now)

    def _resend_at_once(self, now: float, exchange: _Exchange) -> None:
        if exchange.immediate_resends >= MAX_IMMEDIATE_RESENDS:
            self._counters["resend_deferred"] += 1
            return
        exchange.immediate_resends += 1
        exchange.timeout = exchange.initial_timeout
        self._transmit(now)

    def _next_timestamp(self, now: float) -> int:
        # RFC 4285 §6: the HA accepts only timestamps above every one it accepted before.
        key = max(ntp_order_key(ntp_from_unix(now + self._clock_offset)), self._timestamp_floor + 1)
        self._timestamp_floor = key
        return key % (1 << 64)

    def _transmit(self, now: float) -> None:
        exchange = self._exchange
        assert exchange is not None
        cfg = self._config
        # RFC 6275 §11.8: every retransmission carries a larger sequence number.
        sequence = self._next_sequence
        self._next_sequence = seq_add(sequence, 1)
        self._last_sequence = sequence
        timestamp = self._next_timestamp(now)
        share = () if exchange.share is None else (key_share_option(exchange.share),)
        router = bool(cfg.mobile_network_prefixes)
        ipv4 = (
            ()
            if cfg.ipv4_home_address is None or exchange.deregistration
            else (Ipv4HomeAddress(self.ipv4_home_address or cfg.ipv4_home_address),)
        )
        prefixes = (
            ()
            if not router or cfg.implicit_prefixes or exchange.deregistration
            else tuple(
                MobileNetworkPrefix(p.network_address, p.prefixlen)
                for p in ipv6_only(cfg.mobile_network_prefixes)  # IPv4 ones: implicit
            )
        )
        bu = BindingUpdate(
            sequence=sequence,
            lifetime=exchange.lifetime_units,
            ack=True,
            home=True,
            # The share before the Mesg-ID and the authenticator: the MAC covers it.
            options=(
                AlternateCareOfAddress(exchange.care_of),
                *prefixes,
                *ipv4,
                *share,
                MesgId(timestamp),
            ),
            mobile_router=router,  # RFC 3963 §4.1: a mobile router sets R on its BUs
        )
        data = encode_mh_authenticated(
            bu,
            self._hoa,
            cfg.home_agent,
            spi=cfg.spi,
            key=cfg.key,
            coa=exchange.care_of,
            hoa=self._hoa,
        )
        self._outgoing.append(OutgoingMh(data, self._hoa, cfg.home_agent, None))
        exchange.sent.append(_Sent(sequence, timestamp, now))
        exchange.transmissions += 1
        exchange.next_send = now + exchange.timeout
        exchange.timeout = min(exchange.timeout * 2, cfg.max_bindack_timeout_s)
        self._counters["bu_sent"] += 1


def _match(exchange: _Exchange, ack: BindingAck) -> _Sent | None:
    """The transmission ``ack`` answers, by its Mesg-ID echo (the low half for 144)."""
    mesg = find_option(ack.options, MesgId)
    if mesg is None:
        return None  # it answers no BU of ours (module docstring)
    low_only = int(ack.status) == STATUS_ID_MISMATCH
    for sent in exchange.sent:
        if sent.timestamp == mesg.timestamp or (
            low_only and sent.timestamp & NTP_LOW_MASK == mesg.timestamp & NTP_LOW_MASK
        ):
            return sent
    return None
