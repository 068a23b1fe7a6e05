"""Stateful fuzzing of the pure cores with inputs that pass authentication, and with garbage.

Each property drives one core through a random sequence of steps (Hypothesis draws the list):

- :class:`~mipnode.core.ha.HomeAgentCore`: Binding Updates signed with the right MN-HA key,
  with random sequence numbers, lifetimes, care-of addresses, Mesg-ID timestamps (fresh, skewed
  past the window, replayed, missing) and key shares (valid, low-order, malformed, none); BUs
  signed with a wrong key, unknown SPIs, garbage; Binding Refresh Request triggers; timers.
- :class:`~mipnode.core.mn.MobileNodeCore`: registrations and de-registrations, and BAs / BRRs
  signed as the home agent signs them (echoing a Mesg-ID it sent, or not), with every status,
  key shares and refresh advice; forgeries and garbage; timers.
- :class:`~mipnode.core.direct_paths.DirectPaths`: M-ICE offers and answers from random peers
  (answers naming our offer or not, candidates good and bad), signed STUN checks made with the
  credentials it hands out, garbage; starts, stops, moves and timers.

After every step the promises of the modules' docstrings are checked: nothing raises, the bounds
hold (binding cache by the configured SAs, peers, candidates, new peers per second, immediate
resends, BRR-started refreshes), only authenticated input changes anything or gets an answer,
what the cores send decodes and is authenticated, and the answers are the ones the rules give.
``tools/fuzz.py`` runs the same properties randomized and longer (tests/fuzzkit.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Any, Protocol

import pytest
from fuzzkit import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from ice.candidate import CandidateType
from ice.events import OutgoingDatagram
from ice.stun import Class, build_check, build_check_success, parse_stun_untrusted
from mipnode.core.direct_paths import (
    MAX_REMOTE_CANDIDATES,
    NEW_PEERS_BURST,
    NEW_PEERS_PER_S,
    DirectPathChanged,
    DirectPaths,
)
from mipnode.core.esp_keys import Ephemeral
from mipnode.core.ha import (
    LIFETIME_UNIT_S,
    MAX_DELETE_BCE_TIMEOUT,
    Binding,
    BindingAdded,
    BindingRemoved,
    BindingUpdated,
    HaCoreConfig,
    HomeAgentCore,
    SecurityAssociation,
)
from mipnode.core.mn import (
    BRR_MIN_INTERVAL_S,
    MAX_IMMEDIATE_RESENDS,
    BindingLost,
    Deregistered,
    MnCoreConfig,
    MnState,
    MobileNodeCore,
    Registered,
    RegistrationRejected,
)
from mipnode.core.types import OutgoingMh, Via
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix, verify_mh_authenticated
from mipnode.wire.keyshare import KeyShare, key_share_from_options_untrusted, key_share_option
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    ExperimentalMessage,
    ExperimentalOption,
    MesgId,
    MobilityOption,
    decode_mh_untrusted,
    encode_mh,
)
from mipnode.wire.mice import (
    AnswerTo,
    Candidate,
    Credentials,
    EndOfCandidates,
    MiceItem,
    mice_from_options_untrusted,
    mice_options,
)

WALL_OFFSET = 1_700_000_000.0  # POSIX time minus monotonic time
START = 1000.0
HA = IPv6Address("2001:db8:1::1")
PREFIX = IPv6Network("2001:db8:1::/64")
COAS = [IPv6Address("2001:db8:aa::5"), IPv6Address("2001:db8:bb::7")]
VIAS = [Via("T-native", (str(COAS[0]),)), Via("T-udp", ("192.0.2.7", 40000), 4191)]
OTHER_KEY = b"\xee" * 16
HA_PUBLIC = Ephemeral(b"\x0b" * 32).public  # a genuine X25519 key for shares we make
MN_PUBLIC = Ephemeral(b"\x07" * 32).public
LOW_ORDER = bytes(32)  # RFC 7748 §6.1: no shared secret
NTP_WINDOW = int(7.0 * (1 << 32))  # the HA's default timestamp window, in NTP units
Step = tuple[Any, ...]  # a step of a driver: its kind, then its parameters


def random_bytes(seed: int) -> Callable[[int], bytes]:
    """Deterministic 'random' octets for a core (the cores take their randomness injected)."""
    counter = [0]

    def draw(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_128(f"{seed}:{counter[0]}".encode()).digest(n)

    return draw


def ntp_key(timestamp: int) -> int:
    """RFC 4330 era-aware order of NTP timestamps (restated here, not the core's helper)."""
    return timestamp if timestamp >> 63 else timestamp + (1 << 64)


def newer(received: int, last: int) -> bool:
    """RFC 6275 §9.5.1 serial-number order of BU sequence numbers (restated)."""
    return 0 < (received - last) % 0x10000 < 0x8000


class HasEvents(Protocol):
    def next_event(self) -> object | None: ...


def drain(core: HasEvents) -> list[object]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


# == (a) the home agent =======================================================================

SAS = (
    SecurityAssociation(0x1000, bytes(range(16)), IPv6Address("2001:db8:1::100")),
    SecurityAssociation(0x1001, bytes(range(1, 17)), IPv6Address("2001:db8:1::101")),
    SecurityAssociation(0x1002, bytes(range(2, 18)), IPv6Address("2001:db8:99::5")),  # off-prefix
)
IN_PREFIX = {sa.home_address for sa in SAS if sa.home_address in PREFIX}


@dataclass(frozen=True)
class HaSetup:
    max_lifetime_s: int
    refresh_advice: float | None
    refresh_requests: bool
    require_protection: bool
    with_random: bool


ha_setups = st.builds(
    HaSetup,
    st.sampled_from([8, 400, 3600]),
    st.sampled_from([None, 0.5]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 3).map(bool),
)

# Steps are tuples tagged with their kind.
ha_bu_steps = st.tuples(
    st.just("bu"),
    st.integers(0, len(SAS) - 1),  # SA
    st.sampled_from(["good", "good", "good", "good", "wrong_key", "unknown_spi", "other_hoa"]),
    st.one_of(  # sequence number: relative to the last one sent with this SA, or any
        st.sampled_from([1, 1, 1, 2, 0, -1, 0x8000]).map(lambda d: ("rel", d)),
        st.integers(0, 0xFFFF).map(lambda s: ("abs", s)),
    ),
    st.sampled_from([0, 1, 25, 150, 0xFFFF, 150, 150]),  # lifetime units
    st.sampled_from([0, 1, 0, 1, "hoa", None]),  # Alt-CoA: one of COAS, the HoA, none
    st.one_of(  # Mesg-ID
        st.just("fresh"),
        st.just("fresh"),
        st.sampled_from([-100.0, -7.5, -6.0, 6.0, 7.5, 100.0, 1e6]).map(lambda s: ("skew", s)),
        st.sampled_from(["replay", "none"]),
    ),
    st.sampled_from(["none", "valid", "valid", "chacha", "low_order", "malformed", "two"]),
    st.integers(0, 7).map(bool),  # H flag
    st.integers(0, len(VIAS) - 1),
)
# A registration as a mobile node sends it: the next sequence number, a fresh Mesg-ID.
ha_proper_bu_steps = st.tuples(
    st.just("bu"),
    st.integers(0, len(SAS) - 1),
    st.just("good"),
    st.just(("rel", 1)),
    st.sampled_from([1, 25, 150, 0xFFFF]),
    st.sampled_from([0, 1]),
    st.just("fresh"),
    st.sampled_from(["valid", "chacha", "none"]),
    st.just(True),
    st.integers(0, len(VIAS) - 1),
)
ha_steps = st.one_of(
    ha_proper_bu_steps,
    ha_proper_bu_steps,
    ha_bu_steps,
    ha_bu_steps,
    ha_bu_steps,
    st.tuples(st.just("garbage"), st.binary(max_size=80)),
    st.tuples(st.just("mutated"), st.integers(0, 50), st.integers(0, 200), st.integers(1, 255)),
    st.tuples(
        st.just("timer"),
        st.sampled_from([0.5, 1.0, 3.0, 9.99, 10.0, 30.0, 100.0, 400.0, 1000.0, "next"]),
    ),
    st.tuples(
        st.just("brr_for"),
        st.integers(0, len(SAS)),  # len(SAS): a home address without an SA
        st.integers(0, len(VIAS) - 1),
        st.sampled_from([0, 40, 90, 100, 120, 200, 1500]),
        st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    ),
    st.tuples(st.just("request_refresh"), st.integers(0, len(SAS) - 1)),
)


@dataclass
class HaDriver:
    """Feeds a HomeAgentCore and checks every answer against the rules of ha.py."""

    setup: HaSetup
    ha: HomeAgentCore = field(init=False)
    now: float = START
    last_seq: dict[int, int] = field(default_factory=dict)
    stamps: dict[int, int] = field(default_factory=dict)  # SPI -> last timestamp sent
    accepted_ts: dict[int, int] = field(default_factory=dict)  # SPI -> model's last accepted
    sent: list[bytes] = field(default_factory=list)
    version: int = 0
    exported: str = ""

    def __post_init__(self) -> None:
        config = HaCoreConfig(
            HA,
            PREFIX,
            SAS,
            max_lifetime_s=self.setup.max_lifetime_s,
            refresh_advice_fraction=self.setup.refresh_advice,
            refresh_requests=self.setup.refresh_requests,
            require_protection=self.setup.require_protection,
        )
        self.ha = HomeAgentCore(
            config,
            wall_offset=WALL_OFFSET,
            random_bytes=random_bytes(1) if self.setup.with_random else None,
        )
        self.exported = json.dumps(self.ha.export_state(), sort_keys=True)

    # -- model helpers ------------------------------------------------------------------------

    def live(self, hoa: IPv6Address) -> Binding | None:
        """The cache entry of ``hoa`` that survives expiry at ``now`` (or None)."""
        entries = [b for b in self.ha.bindings(include_deleted=True) if b.home_address == hoa]
        return entries[0] if entries and entries[0].expires_at > self.now else None

    def surviving(self) -> list[Binding]:
        return [b for b in self.ha.bindings(include_deleted=True) if b.expires_at > self.now]

    def fresh(self, spi: int, timestamp: int) -> bool:
        """RFC 4285 §6 freshness as ha.py states it (the model's own bookkeeping)."""
        key = ntp_key(timestamp)
        clock = ntp_key(ntp_from_unix(self.now + WALL_OFFSET))
        last = self.accepted_ts.get(spi)
        if last is not None and last > clock + NTP_WINDOW:
            last = None  # the clock was stepped back: that floor is ignored
        if abs(key - clock) > NTP_WINDOW or (last is not None and key <= last):
            return False
        self.accepted_ts[spi] = key
        return True

    # -- steps --------------------------------------------------------------------------------

    def step(self, step: Step) -> None:
        kind = step[0]
        if kind == "bu":
            self.bu(*step[1:])
        elif kind == "garbage":
            self.forgery(step[1], SAS[0].home_address)
        elif kind == "mutated":
            if self.sent:
                original = self.sent[step[1] % len(self.sent)]
                data = bytearray(original)
                data[step[2] % len(data)] ^= step[3]
                self.forgery(bytes(data), SAS[0].home_address)
                self.forgery(bytes(data), SAS[1].home_address)
        elif kind == "timer":
            self.timer(step[1])
        elif kind == "brr_for":
            self.brr_for(*step[1:])
        else:
            self.request_refresh(step[1])
        self.check_invariants()

    def forgery(self, data: bytes, src: IPv6Address) -> None:
        """Unauthenticated input: dropped silently, nothing changes (DESIGN §3)."""
        before = self.surviving()
        self.ha.receive_datagram(self.now, data, src, HA, VIAS[0])
        assert self.ha.datagrams_to_send(self.now) == []
        assert self.ha.bindings(include_deleted=True) == before
        assert all(isinstance(e, BindingRemoved) for e in drain(self.ha))  # expiries only

    def bu(
        self,
        index: int,
        auth: str,
        seq_choice: tuple[str, int],
        units: int,
        coa_choice: int | str | None,
        stamp: str | tuple[str, float],
        share: str,
        home: bool,
        via_index: int,
    ) -> None:
        sa = SAS[index]
        # "other_hoa": the SA's key, another SA's home address (RFC 6275 §15: refused).
        hoa = SAS[(index + 1) % len(SAS) if auth == "other_hoa" else index].home_address
        how, value = seq_choice
        seq = (self.last_seq.get(sa.spi, 0) + value) % 0x10000 if how == "rel" else value
        self.last_seq[sa.spi] = seq
        options: list[MobilityOption] = []
        if coa_choice is None:
            care_of = hoa  # no Alt-CoA: the source, which is the HoA (a de-registration)
        else:
            care_of = hoa if coa_choice == "hoa" else COAS[int(coa_choice)]
            options.append(AlternateCareOfAddress(care_of))
        our_share: KeyShare | None = None
        if share in ("valid", "chacha", "low_order"):
            public = LOW_ORDER if share == "low_order" else MN_PUBLIC
            our_share = KeyShare(2 if share == "chacha" else 1, 0x8000_0001 + index, public)
            options.append(key_share_option(our_share))
        elif share == "malformed":
            options.append(ExperimentalOption(b"\x05\x25" + bytes(10)))
        elif share == "two":
            options += [key_share_option(KeyShare(1, 0x8000_0001, MN_PUBLIC))] * 2
        timestamp: int | None = None
        if stamp == "fresh":
            timestamp = max(ntp_from_unix(self.now + WALL_OFFSET), self.stamps.get(sa.spi, 0) + 1)
        elif stamp == "replay":
            timestamp = self.stamps.get(sa.spi)
        elif isinstance(stamp, tuple):
            timestamp = ntp_from_unix(self.now + WALL_OFFSET + stamp[1])
        if timestamp is not None:
            options.append(MesgId(timestamp))
            self.stamps[sa.spi] = max(timestamp, self.stamps.get(sa.spi, 0))
        bu = BindingUpdate(
            sequence=seq, lifetime=units, ack=True, home=home, options=tuple(options)
        )
        spi = 0x2000 if auth == "unknown_spi" else sa.spi
        key = OTHER_KEY if auth == "wrong_key" else sa.key
        data = encode_mh_authenticated(bu, hoa, HA, spi=spi, key=key, coa=care_of, hoa=hoa)
        if auth != "good" or share in ("malformed", "two"):
            self.forgery(data, hoa)  # unauthenticated, or authenticated with a broken share
            return
        self.sent.append(data)
        self.genuine(data, sa, bu, care_of, our_share, timestamp, VIAS[via_index])

    def genuine(
        self,
        data: bytes,
        sa: SecurityAssociation,
        bu: BindingUpdate,
        care_of: IPv6Address,
        share: KeyShare | None,
        timestamp: int | None,
        via: Via,
    ) -> None:
        """An authenticated BU: exactly one BA, signed for it, with the status the rules give."""
        hoa, units, seq = sa.home_address, bu.lifetime, bu.sequence
        entry = self.live(hoa)
        max_units = self.setup.max_lifetime_s // LIFETIME_UNIT_S
        deregistration = units == 0 or care_of == hoa
        if timestamp is None:
            status, ba_seq = 145, seq
        elif not self.fresh(sa.spi, timestamp):
            status, ba_seq = 144, seq
        elif not bu.home and self.ha.binding_for(hoa) is None:
            # RFC 6275 §9.5.1: no Nonce Indices option, so it fails a correspondent's tests.
            self.ha.receive_datagram(self.now, data, hoa, HA, via)
            assert self.ha.datagrams_to_send(self.now) == []
            assert all(isinstance(e, BindingRemoved) for e in drain(self.ha))
            return
        elif not bu.home:
            status, ba_seq = 139, seq
        elif hoa not in PREFIX:
            status, ba_seq = 132, seq
        elif entry is not None and not newer(seq, entry.sequence):
            status, ba_seq = 135, entry.sequence
        elif deregistration:
            registered = entry is not None and entry.state == "registered"
            status, ba_seq = (0 if registered else 133), seq
        elif share is None and self.setup.require_protection:
            status, ba_seq = 129, seq
        else:
            status, ba_seq = 0, seq
        self.ha.receive_datagram(self.now, data, hoa, HA, via)
        (out,) = self.ha.datagrams_to_send(self.now)
        assert (out.src, out.dst, out.via) == (HA, hoa, via)
        ba = decode_mh_untrusted(out.data, out.src, out.dst)
        assert isinstance(ba, BindingAck)
        assert verify_mh_authenticated(out.data, key=sa.key, coa=care_of, hoa=hoa)
        assert (int(ba.status), ba.sequence) == (status, ba_seq)
        echo = next((o.timestamp for o in ba.options if isinstance(o, MesgId)), None)
        if timestamp is None:
            assert echo is None
        elif status == 144:  # RFC 4285 §6: the HA's clock on top, the MN's low half kept
            assert echo is not None and echo & 0xFFFF_FFFF == timestamp & 0xFFFF_FFFF
        else:
            assert echo == timestamp
        theirs = key_share_from_options_untrusted(ba.options)
        binding = self.ha.binding_for(hoa)
        if status == 0 and not deregistration:
            granted = min(units, max_units)
            assert ba.lifetime == granted
            assert binding is not None and binding.care_of_address == care_of
            assert binding.lifetime_s == granted * LIFETIME_UNIT_S and binding.via == via
            keyed = share is not None and share.public != LOW_ORDER and self.setup.with_random
            assert (theirs is not None) == keyed == (binding.keys is not None)
            if theirs is not None and share is not None:
                assert theirs.suite == share.suite and theirs.spi & 0x8000_0000
            advice = [o.refresh_interval for o in ba.options if isinstance(o, BindingRefreshAdvice)]
            interval = int(granted * (self.setup.refresh_advice or 0))
            assert advice == ([interval] if 0 < interval < granted else [])
        else:
            assert ba.lifetime == 0 and theirs is None
            if status == 0:
                held = self.live(hoa)
                assert binding is None and held is not None and held.state == "deleted"
        events = drain(self.ha)
        assert all(isinstance(e, BindingAdded | BindingUpdated | BindingRemoved) for e in events)

    def timer(self, dt: float | str) -> None:
        if dt == "next":
            deadline = self.ha.get_timer()
            if deadline is None:
                return
            self.now = max(self.now, deadline)
        else:
            self.now += float(dt)
        self.ha.handle_timer(self.now)
        # Timers send only BRRs, each to a registered binding on its via, signed over its CoA.
        for out in self.ha.datagrams_to_send(self.now):
            assert self.setup.refresh_requests
            binding = self.ha.binding_for(out.dst)
            assert binding is not None and out.via == binding.via
            self.check_brr(out, binding.care_of_address)
        assert all(b.expires_at > self.now for b in self.ha.bindings(include_deleted=True))
        drain(self.ha)

    def check_brr(self, out: OutgoingMh, care_of: IPv6Address) -> None:
        sa = next(sa for sa in SAS if sa.home_address == out.dst)
        assert out.src == HA
        assert isinstance(decode_mh_untrusted(out.data, out.src, out.dst), BindingRefreshRequest)
        assert verify_mh_authenticated(out.data, key=sa.key, coa=care_of, hoa=sa.home_address)

    def brr_for(self, index: int, via_index: int, size: int, dt: float) -> None:
        """refresh_request_for: a BRR only if no larger than its trigger (amplification <= 1)."""
        self.now += dt
        hoa = SAS[index].home_address if index < len(SAS) else IPv6Address("2001:db8:1::dead")
        binding = self.ha.binding_for(hoa)
        sent = self.ha.refresh_request_for(self.now, hoa, VIAS[via_index], size)
        out = self.ha.datagrams_to_send(self.now)
        assert len(out) == int(sent)
        if sent:
            assert 40 + len(out[0].data) <= size and out[0].via == VIAS[via_index]
            self.check_brr(out[0], binding.care_of_address if binding else hoa)

    def request_refresh(self, index: int) -> None:
        binding = self.ha.binding_for(SAS[index].home_address)
        assert self.ha.request_refresh(SAS[index].home_address) == (binding is not None)
        out = self.ha.datagrams_to_send(self.now)
        assert len(out) == int(binding is not None)
        if binding is not None:
            assert out[0].via == binding.via
            self.check_brr(out[0], binding.care_of_address)

    # -- invariants ---------------------------------------------------------------------------

    def check_invariants(self) -> None:
        entries = self.ha.bindings(include_deleted=True)
        # Bounded by the configured SAs: one entry per home address in the home prefix.
        assert len(entries) <= len(IN_PREFIX)
        assert {b.home_address for b in entries} <= IN_PREFIX
        longest = self.setup.max_lifetime_s // LIFETIME_UNIT_S * LIFETIME_UNIT_S
        for b in entries:
            if b.state == "registered":
                assert LIFETIME_UNIT_S <= b.lifetime_s <= longest and b.lifetime_s % 4 == 0
                assert b.expires_at == b.registered_at + b.lifetime_s
            else:
                assert b.lifetime_s == 0 and b.keys is None
                assert b.expires_at <= b.registered_at + MAX_DELETE_BCE_TIMEOUT
        timer = self.ha.get_timer()
        if entries:
            assert timer is not None and timer <= min(b.expires_at for b in entries)
        # state_version grows whenever the snapshot would change; keys never appear in it.
        exported = json.dumps(self.ha.export_state(), sort_keys=True)
        assert self.ha.state_version >= self.version
        if exported != self.exported:
            assert self.ha.state_version > self.version
        for b in entries:
            if b.keys is not None:
                assert b.keys.keymat_in.hex() not in exported
        self.version, self.exported = self.ha.state_version, exported


@fuzz_settings(150)
@given(ha_setups, st.lists(ha_steps, min_size=10, max_size=50))
def test_home_agent_core(setup: HaSetup, steps: list[Step]) -> None:
    driver = HaDriver(setup)
    for step in steps:
        driver.step(step)


# == (b) the mobile node ======================================================================

HOA = SAS[0].home_address
MN_SPI, MN_KEY = SAS[0].spi, SAS[0].key
OTHER_HA = IPv6Address("2001:db8:1::2")


@dataclass(frozen=True)
class MnSetup:
    suite: int | None
    lifetime_s: int


mn_setups = st.builds(MnSetup, st.sampled_from([None, 1, 2]), st.sampled_from([40, 600]))

# The answer a home agent gives to the MN's latest BU when it accepts it.
mn_proper_ba_steps = st.tuples(
    st.just("ba"),
    st.just(0),
    st.just(0),
    st.just(0),
    st.sampled_from([10, 150]),
    st.just("ours"),
    st.sampled_from([None, 5]),
    st.just("good"),
    st.sampled_from([0.0, 0.1]),
)
mn_steps = st.one_of(
    mn_proper_ba_steps,
    mn_proper_ba_steps,
    st.tuples(st.just("register"), st.integers(0, len(COAS) - 1)),
    st.tuples(st.just("deregister")),
    st.tuples(st.just("timer"), st.sampled_from([0.05, 0.5, 1.0, 2.0, 10.0, 100.0, 500.0, "next"])),
    st.tuples(
        st.just("ba"),
        st.integers(0, 3),  # which BU it answers, from the last one back (3: none of ours)
        st.sampled_from([0, 0, 0, 1, 128, 129, 132, 133, 135, 144, 144, 145, 146]),
        st.integers(0, 0xFFFF),  # sequence (135: the HA's last accepted)
        st.sampled_from([0, 1, 10, 150, 0xFFFF]),  # lifetime units
        st.sampled_from(["none", "ours", "ours", "other_suite", "low_order", "malformed"]),
        st.sampled_from([None, 1, 5, 200]),  # Binding Refresh Advice
        st.sampled_from(["good", "good", "good", "wrong_key", "wrong_src", "wrong_coa"]),
        st.sampled_from([0.0, 0.1, 1.5]),  # delay
    ),
    st.tuples(
        st.just("brr"),
        st.sampled_from(["bound", "bound", "hoa", "other"]),  # the CoA it is signed over
        st.sampled_from(["good", "good", "wrong_key", "wrong_src"]),
        st.sampled_from([0.0, 0.3, 1.0]),
    ),
    st.tuples(st.just("garbage"), st.binary(max_size=64)),
    st.tuples(st.just("mutated"), st.integers(0, 50), st.integers(0, 200), st.integers(1, 255)),
)

MN_STATES = {state.value for state in MnState}


@dataclass
class MnDriver:
    """Feeds a MobileNodeCore and checks it against the promises of mn.py."""

    setup: MnSetup
    mn: MobileNodeCore = field(init=False)
    now: float = START
    bus: list[tuple[BindingUpdate, float]] = field(default_factory=list)  # and when sent
    last_stamp: int = 0
    bound_coa: IPv6Address | None = None
    signed: list[bytes] = field(default_factory=list)  # genuine BAs / BRRs made so far
    resends: int = 0  # BUs sent in answer to BAs since an exchange may have started
    brr_refreshes: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = MnCoreConfig(
            HOA, HA, MN_SPI, MN_KEY, lifetime_s=self.setup.lifetime_s, suite=self.setup.suite
        )
        self.mn = MobileNodeCore(
            config, initial_sequence=4242, wall_offset=WALL_OFFSET, random_bytes=random_bytes(2)
        )

    def step(self, step: Step) -> None:
        kind = step[0]
        if kind == "register":
            self.mn.register(self.now, COAS[step[1]])
            self.collect(resets=True)
        elif kind == "deregister":
            self.mn.deregister(self.now)
            self.collect(resets=True)
        elif kind == "timer":
            self.timer(step[1])
        elif kind == "ba":
            self.ba(*step[1:])
        elif kind == "brr":
            self.brr(*step[1:])
        elif kind == "garbage":
            self.forgery(step[1])
        else:
            if self.signed:
                data = bytearray(self.signed[step[1] % len(self.signed)])
                data[step[2] % len(data)] ^= step[3]
                self.forgery(bytes(data))
        assert self.mn.state in MN_STATES
        if self.mn.state in ("registering", "deregistering", "registered"):
            assert self.mn.get_timer() is not None
        assert self.mn.lifetime_remaining(self.now) >= 0

    def collect(self, *, resets: bool = False, from_ba: bool = False) -> int:
        """Check and record the BUs the MN queued; return how many."""
        out = self.mn.datagrams_to_send(self.now)
        if resets:
            self.resends = 0
        for o in out:
            assert (o.src, o.dst, o.via) == (HOA, HA, None)
            bu = decode_mh_untrusted(o.data, o.src, o.dst)
            assert isinstance(bu, BindingUpdate) and bu.home and bu.ack
            alt = next(x for x in bu.options if isinstance(x, AlternateCareOfAddress))
            assert verify_mh_authenticated(o.data, key=MN_KEY, coa=alt.address, hoa=HOA)
            assert (bu.lifetime == 0) == (alt.address == HOA)
            stamp = next(x.timestamp for x in bu.options if isinstance(x, MesgId))
            # RFC 4285 §6: every Mesg-ID above the one before (after a 144: at least the HA's
            # clock, see ba()).
            assert ntp_key(stamp) > self.last_stamp
            self.last_stamp = ntp_key(stamp)
            share = key_share_from_options_untrusted(bu.options)
            if self.setup.suite is None or bu.lifetime == 0:
                assert share is None
            else:
                assert share is not None and share.suite == self.setup.suite
            self.bus.append((bu, self.now))
        if from_ba:
            self.resends += len(out)
            assert self.resends <= MAX_IMMEDIATE_RESENDS
        for event in drain(self.mn):
            assert isinstance(event, Registered | RegistrationRejected | Deregistered | BindingLost)
            if isinstance(event, Registered):
                assert (event.keys is not None) == (self.setup.suite is not None)
                assert event.sequence in [bu.sequence for bu, _ in self.bus]
                self.bound_coa = event.care_of
            elif isinstance(event, RegistrationRejected | Deregistered):
                self.bound_coa = None
        return len(out)

    def forgery(self, data: bytes, src: IPv6Address = HA) -> None:
        """Unauthenticated input changes nothing and gets nothing sent."""
        before = (self.mn.state, self.mn.get_timer(), self.mn.sequence)
        self.mn.receive_datagram(self.now, data, src, HOA)
        assert self.mn.datagrams_to_send(self.now) == [] and drain(self.mn) == []
        assert (self.mn.state, self.mn.get_timer(), self.mn.sequence) == before

    def timer(self, dt: float | str) -> None:
        if dt == "next":
            deadline = self.mn.get_timer()
            if deadline is None:
                return
            self.now = max(self.now, deadline)
        else:
            self.now += float(dt)
        self.mn.handle_timer(self.now)
        self.collect(resets=True)
        # Nothing due is left undone: a driver sleeping until get_timer() never spins.
        deadline = self.mn.get_timer()
        assert deadline is None or deadline > self.now
        if self.mn.state == "registered":
            assert self.mn.lifetime_remaining(self.now) > 0

    def ba(
        self,
        which: int,
        status: int,
        seq: int,
        units: int,
        share: str,
        advice: int | None,
        auth: str,
        delay: float,
    ) -> None:
        self.now += delay
        if which < len(self.bus) and which < 3:
            bu, _ = self.bus[-1 - which]
            stamp = next(x.timestamp for x in bu.options if isinstance(x, MesgId))
            care_of = next(x.address for x in bu.options if isinstance(x, AlternateCareOfAddress))
            if status == 135:
                pass  # the HA's own last accepted number
            else:
                seq = bu.sequence
            if status == 144:
                stamp = (ntp_from_unix(self.now + WALL_OFFSET + 50) & ~0xFFFF_FFFF) | (
                    stamp & 0xFFFF_FFFF
                )
        else:
            stamp, care_of = 0x0123_4567_89AB_CDEF, COAS[0]  # a Mesg-ID the MN never sent
        options: list[MobilityOption] = []
        if advice is not None:
            options.append(BindingRefreshAdvice(advice))
        suite = self.setup.suite or 1
        if share == "ours":
            options.append(key_share_option(KeyShare(suite, 0x8000_0077, HA_PUBLIC)))
        elif share == "other_suite":
            options.append(key_share_option(KeyShare(3 - suite, 0x8000_0077, HA_PUBLIC)))
        elif share == "low_order":
            options.append(key_share_option(KeyShare(suite, 0x8000_0077, LOW_ORDER)))
        elif share == "malformed":
            options.append(ExperimentalOption(b"\x05\x25\x01"))
        options.append(MesgId(stamp))
        ba = BindingAck(status=status, sequence=seq, lifetime=units, options=tuple(options))
        key = OTHER_KEY if auth == "wrong_key" else MN_KEY
        mac_coa = care_of
        if auth == "wrong_coa":  # signed over another care-of address than the BU's
            mac_coa = COAS[0] if care_of == COAS[1] else COAS[1]
        data = encode_mh_authenticated(ba, HA, HOA, spi=MN_SPI, key=key, coa=mac_coa, hoa=HOA)
        if auth != "good":
            self.forgery(data, OTHER_HA if auth == "wrong_src" else HA)
            return
        self.signed.append(data)
        floor = self.last_stamp
        if status == 144:
            # The MN takes the HA's clock from the high half (RFC 4285 §6) and may go below
            # Mesg-IDs the HA refused, never below that clock (less float rounding: 2^-12 s).
            self.last_stamp = min(floor, ntp_key(stamp & ~0xFFFF_FFFF) - (1 << 20))
        self.mn.receive_datagram(self.now, data, HA, HOA)
        if not self.collect(from_ba=True):
            self.last_stamp = floor

    def brr(self, over: str, auth: str, delay: float) -> None:
        self.now += delay
        coa = {"bound": self.bound_coa or COAS[0], "hoa": HOA, "other": COAS[1]}[over]
        key = OTHER_KEY if auth == "wrong_key" else MN_KEY
        data = encode_mh_authenticated(
            BindingRefreshRequest(), HA, HOA, spi=MN_SPI, key=key, coa=coa, hoa=HOA
        )
        # Authentic: from our HA, signed over the bound care-of address or the home address.
        genuine = auth == "good" and coa in (HOA, self.bound_coa)
        if auth == "good":
            self.signed.append(data)
        before = (self.mn.state, self.mn.get_timer(), self.mn.sequence)
        self.mn.receive_datagram(self.now, data, OTHER_HA if auth == "wrong_src" else HA, HOA)
        sent = self.collect()
        if not genuine:
            assert sent == 0 and (self.mn.state, self.mn.get_timer(), self.mn.sequence) == before
        if sent:
            # A BRR starts one refresh; BRR-started refreshes at least BRR_MIN_INTERVAL_S apart.
            assert sent == 1
            assert not self.brr_refreshes or self.now - self.brr_refreshes[-1] >= BRR_MIN_INTERVAL_S
            self.brr_refreshes.append(self.now)
            self.resends = 0


@fuzz_settings(200)
@given(mn_setups, st.lists(mn_steps, min_size=10, max_size=50))
def test_mobile_node_core(setup: MnSetup, steps: list[Step]) -> None:
    driver = MnDriver(setup)
    for step in steps:
        driver.step(step)


# == (c) direct paths =========================================================================

PEERS = [IPv6Address(f"2001:db8:c::{i + 1:x}") for i in range(6)]
HOSTS = [[("2001:db8:1::10", 5000), ("192.0.2.10", 5001)], [("2001:db8:2::10", 5002)]]
UFRAGS = ["aaaa", "bbbbbb", "cccc1234", "dddd"]
PASSWORD = "p" * 22
CANDIDATE_ADDRESSES: list[IPv4Address | IPv6Address] = [
    IPv6Address("2001:db8:77::1"),
    IPv6Address("2001:db8:77::2"),
    IPv4Address("198.51.100.9"),
    IPv6Address("::1"),  # loopback, multicast, unspecified, link-local: never checked
    IPv6Address("ff02::1"),
    IPv6Address("::"),
    IPv6Address("fe80::1"),
    IPv4Address("127.0.0.1"),
]
for _i in range(3, 12):
    CANDIDATE_ADDRESSES.append(IPv6Address(f"2001:db8:78::{_i}"))
UNUSABLE = {a for a in CANDIDATE_ADDRESSES if a.is_loopback or a.is_multicast or a.is_link_local}
UNUSABLE |= {a for a in CANDIDATE_ADDRESSES if a.is_unspecified}

mice_candidates = st.builds(
    Candidate,
    st.sampled_from(["1", "f2", "x" * 32]),
    st.integers(1, 2**31 - 1),
    st.sampled_from(["host", "srflx", "prflx", "relay"]),
    st.sampled_from(CANDIDATE_ADDRESSES),
    st.integers(7000, 7003) | st.integers(1, 0xFFFF),  # 7000-7003: where checks come from
)


@dataclass(frozen=True)
class DpSetup:
    controlling: bool
    max_peers: int
    gathering: bool


dp_setups = st.builds(DpSetup, st.booleans(), st.sampled_from([1, 2, 4, 64]), st.booleans())
dp_description_steps = st.tuples(
    st.just("description"),
    st.integers(0, len(PEERS) - 1),
    st.sampled_from(UFRAGS),
    st.lists(mice_candidates, max_size=12),
    st.booleans(),  # EndOfCandidates
    st.sampled_from([None, None, "ours", "ours", "other"]),  # AnswerTo
    st.sampled_from([0.0, 0.0, 0.2, 1.0]),
)
dp_check_steps = st.tuples(
    st.just("check"),
    st.integers(0, len(PEERS) - 1),
    st.sampled_from([None, None, *UFRAGS]),  # None: the ufrag of the peer's last description
    st.integers(0, 3),  # remote address
    st.booleans(),  # controlling
    st.booleans(),  # use candidate
)
dp_answer_steps = st.tuples(st.just("answer"), st.integers(1, 8), st.booleans())
dp_timer_steps = st.tuples(
    st.just("timer"), st.sampled_from([0.02, 0.1, 0.5, 1.0, 3.0, 30.0, 61.0, "next"])
)
# A peer that does everything right, in one step: its description, a check that proves it
# holds our password, and answers to our checks (pairs get selected, paths change).
dp_handshake_steps = st.tuples(st.just("handshake"), st.integers(0, len(PEERS) - 1))
dp_steps = st.one_of(
    dp_handshake_steps,
    dp_description_steps,
    dp_description_steps,
    dp_check_steps,
    dp_answer_steps,
    dp_answer_steps,
    dp_timer_steps,
    dp_timer_steps,
    st.tuples(
        st.just("garbage_signalling"), st.integers(0, len(PEERS) - 1), st.binary(max_size=60)
    ),
    st.tuples(st.just("start"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("stop"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("stun_garbage"), st.binary(max_size=60)),
    st.tuples(st.just("move"), st.integers(0, len(HOSTS) - 1)),
    st.tuples(st.just("gathering_done")),
)


@dataclass
class DpDriver:
    """Feeds DirectPaths and checks the promises of direct_paths.py."""

    setup: DpSetup
    dp: DirectPaths = field(init=False)
    now: float = START
    hosts: int = 0
    offered_to_us: dict[IPv6Address, set[str]] = field(default_factory=dict)
    ours: dict[IPv6Address, Credentials] = field(default_factory=dict)  # last description sent
    theirs: dict[IPv6Address, str] = field(default_factory=dict)  # ufrag of their last one
    new_peers: int = 0
    pending: list[OutgoingDatagram] = field(default_factory=list)  # its checks, unanswered

    def __post_init__(self) -> None:
        self.dp = DirectPaths(
            controlling=self.setup.controlling,
            random_bytes=random_bytes(3),
            max_peers=self.setup.max_peers,
            offer_tries=3,
        )
        self.dp.set_local_candidates(self.now, HOSTS[0], gathering=self.setup.gathering)
        self.collect()

    def step(self, step: Step) -> None:
        kind = step[0]
        if kind == "description":
            self.description(*step[1:])
        elif kind == "garbage_signalling":
            before = self.dp.peers
            msg = ExperimentalMessage((ExperimentalOption(step[2]),))
            self.dp.receive_signalling(self.now, PEERS[step[1]], msg)
            self.collect()
            self.count_new(before)
        elif kind == "start":
            self.dp.start(self.now, PEERS[step[1]])
            self.collect()
        elif kind == "stop":
            self.dp.stop(self.now, PEERS[step[1]])
            assert PEERS[step[1]] not in self.dp.peers
            self.collect()
        elif kind == "timer":
            self.timer(step[1])
        elif kind == "check":
            self.check(*step[1:])
        elif kind == "answer":
            self.answer(*step[1:])
        elif kind == "handshake":
            self.handshake(PEERS[step[1]])
        elif kind == "stun_garbage":
            self.dp.receive_datagram(self.now, step[1], HOSTS[self.hosts][0], ("2001:db8:77::1", 9))
            self.collect()
            assert self.sent_datagrams() == []  # only authenticated requests are answered
        elif kind == "move":
            self.hosts = step[1]
            self.dp.set_local_candidates(self.now, HOSTS[self.hosts])
            self.collect()
        else:
            self.dp.gathering_done(self.now)
            self.collect()
        self.check_invariants()

    def count_new(self, before: list[IPv6Address]) -> None:
        """Peers created by offers: within NEW_PEERS_BURST plus NEW_PEERS_PER_S a second."""
        self.new_peers += len(set(self.dp.peers) - set(before))
        assert self.new_peers <= NEW_PEERS_BURST + NEW_PEERS_PER_S * (self.now - START)

    def collect(self, *, after_answer: bool = False) -> None:
        """Every description we send decodes: one Credentials, our candidates, the end; an
        AnswerTo only for an offer the peer sent us, and never in answer to an answer."""
        for sig in self.dp.signalling_to_send():
            data = encode_mh(sig.message, HOA, sig.peer)
            msg = decode_mh_untrusted(data, HOA, sig.peer)
            assert isinstance(msg, ExperimentalMessage)
            items = mice_from_options_untrusted(msg.options)
            creds = [i for i in items if isinstance(i, Credentials)]
            answers = [i for i in items if isinstance(i, AnswerTo)]
            assert len(creds) == 1 and len(answers) <= 1 and isinstance(items[-1], EndOfCandidates)
            if answers:
                assert not after_answer
                assert answers[0].ufrag in self.offered_to_us.get(sig.peer, set())
            self.ours[sig.peer] = creds[0]
        for event in drain(self.dp):
            assert isinstance(event, DirectPathChanged) and event.peer in PEERS

    def description(
        self,
        index: int,
        ufrag: str,
        candidates: list[Candidate],
        end: bool,
        answer_to: str | None,
        dt: float,
    ) -> None:
        self.now += dt
        peer = PEERS[index]
        items: list[MiceItem] = [Credentials(ufrag, PASSWORD)]
        if answer_to == "ours":
            mine = self.dp.offer_ufrag(peer) or "zzzz"
            items.append(AnswerTo(mine))
        elif answer_to == "other":
            items.append(AnswerTo("qqqq"))
        items += candidates
        if end:
            items.append(EndOfCandidates())
        if answer_to is None:
            self.offered_to_us.setdefault(peer, set()).add(ufrag)
        self.theirs[peer] = ufrag
        before = self.dp.peers
        self.dp.receive_signalling(self.now, peer, ExperimentalMessage(mice_options(items)))
        self.collect(after_answer=answer_to is not None)
        if answer_to is not None:
            assert set(self.dp.peers) <= set(before)  # an answer creates no peer
        self.count_new(before)

    def timer(self, dt: float | str) -> None:
        if dt == "next":
            deadline = self.dp.get_timer()
            if deadline is None:
                return
            self.now = max(self.now, deadline)
        else:
            self.now += float(dt)
        # A timer may lie in the past after a late call (ice/agent.py: retransmissions keep
        # their schedule): a driver calls again at once, and the catch-up ends.
        for _ in range(100):
            self.dp.handle_timer(self.now)
            self.collect()
            self.sent_datagrams()
            deadline = self.dp.get_timer()
            if deadline is None or deadline > self.now:
                break
        else:
            raise AssertionError(f"timer {self.dp.get_timer()} still due at {self.now}")

    def check(
        self, index: int, ufrag: str | None, remote: int, controlling: bool, use_candidate: bool
    ) -> None:
        """A STUN check signed with the password we handed this peer (so it is authentic)."""
        peer = PEERS[index]
        ours = self.ours.get(peer)
        ufrag = ufrag or self.theirs.get(peer, "eeee")
        if ours is None:
            return
        data = build_check(
            hashlib.sha1(f"{self.now}{remote}".encode()).digest()[:12],
            username=f"{ours.ufrag}:{ufrag}",
            password=ours.password,
            priority=0x6E000000 + remote,
            controlling=controlling,
            tie_breaker=remote * 7919,
            use_candidate=use_candidate,
        )
        source = ("2001:db8:77::1", 7000 + remote) if remote < 3 else ("198.51.100.9", 7000)
        local = HOSTS[self.hosts][0] if remote < 3 else HOSTS[self.hosts][-1]
        self.dp.receive_datagram(self.now, data, local, source)
        self.collect()
        # One answer at most, to where the check came from, never larger (ice/agent.py:
        # amplification <= 1).
        answers = self.sent_datagrams()
        assert len(answers) <= 1
        for out in answers:
            assert out.remote == source and len(out.data) <= len(data)

    def handshake(self, peer: IPv6Address) -> None:
        good = Candidate("1", 0x6E000000, "host", IPv6Address("2001:db8:77::1"), 7000)
        # An answer when we offered to it, else an offer.
        answer = "ours" if self.dp.offer_ufrag(peer) and peer not in self.theirs else None
        self.description(PEERS.index(peer), "hhhh", [good], True, answer, 0.0)
        self.check(PEERS.index(peer), None, 0, not self.setup.controlling, True)
        for _ in range(3):
            self.timer(0.05)
            self.answer(4, True)

    def sent_datagrams(self) -> list[OutgoingDatagram]:
        """What the agents send are well-formed STUN messages; keep the requests to answer,
        return the answers."""
        answers = []
        for out in self.dp.datagrams_to_send(self.now):
            if parse_stun_untrusted(out.data).message_class == Class.REQUEST:
                self.pending = [*self.pending[-15:], out]
            else:
                answers.append(out)
        return answers

    def answer(self, count: int, from_latest: bool) -> None:
        """Success responses to its checks, signed with the password of our descriptions (the
        peer's, to the agent): pairs get checked and selected."""
        order = self.pending[::-1] if from_latest else self.pending
        for out in order[:count]:
            tid = parse_stun_untrusted(out.data).transaction_id
            response = build_check_success(tid, mapped=out.local, password=PASSWORD)
            self.dp.receive_datagram(self.now, response, out.local, out.remote)
            self.collect()
        self.sent_datagrams()

    def check_invariants(self) -> None:
        peers = self.dp.peers
        assert len(peers) <= self.setup.max_peers and set(peers) <= set(PEERS)
        for peer in peers:
            pairs = self.dp.pairs(peer)
            assert len(pairs) <= 100  # RFC 8445 §6.1.2.5, IceConfig.max_pairs
            signalled = {p.remote.address for p in pairs if p.remote.kind != CandidateType.PRFLX}
            assert len(signalled) <= MAX_REMOTE_CANDIDATES
            assert not {ip_address(p.remote.address[0]) for p in pairs} & UNUSABLE
        assert self.dp.statistics()["peers"] == len(peers)


@fuzz_settings(150)
@given(dp_setups, st.lists(dp_steps, min_size=10, max_size=50))
def test_direct_paths(setup: DpSetup, steps: list[Step]) -> None:
    driver = DpDriver(setup)
    for step in steps:
        driver.step(step)


def test_the_drivers_notice_what_they_promise_to() -> None:
    """The drivers' checks can fail: a genuine message passed off as a forgery (it is answered,
    it changes state) and a bound the core keeps but the driver is told is lower trip them."""
    ha = HaDriver(HaSetup(400, None, False, False, True))
    ha.bu(0, "good", ("abs", 5), 150, 0, "fresh", "valid", True, 0)
    assert ha.ha.binding_for(SAS[0].home_address) is not None
    with pytest.raises(AssertionError):
        ha.forgery(ha.sent[-1], SAS[0].home_address)  # a replay: answered with BA 144
    bu = decode_mh_untrusted(ha.sent[-1], SAS[0].home_address, HA)
    assert isinstance(bu, BindingUpdate)
    with pytest.raises(AssertionError):  # no Mesg-ID claimed: the model expects 145, gets 144
        ha.genuine(ha.sent[-1], SAS[0], bu, COAS[0], None, None, VIAS[0])

    mn = MnDriver(MnSetup(None, 600))
    mn.step(("register", 0))
    sent = mn.bus[-1][0]
    stamp = next(o.timestamp for o in sent.options if isinstance(o, MesgId))
    ba = BindingAck(status=0, sequence=sent.sequence, lifetime=150, options=(MesgId(stamp),))
    data = encode_mh_authenticated(ba, HA, HOA, spi=MN_SPI, key=MN_KEY, coa=COAS[0], hoa=HOA)
    with pytest.raises(AssertionError):
        mn.forgery(data)  # genuine: it registers the mobile node
    assert mn.mn.state == "registered"

    dp = DpDriver(DpSetup(False, 4, False))
    dp.step(("handshake", 0))
    dp.step(("handshake", 1))
    assert len(dp.dp.peers) == 2 and dp.dp.statistics()["selected"] == 2
    dp.setup = DpSetup(False, 1, False)
    with pytest.raises(AssertionError):
        dp.check_invariants()
