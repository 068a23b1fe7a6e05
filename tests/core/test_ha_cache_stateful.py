"""Hypothesis state machine: the HA binding cache against a small reference model.

The model restates the rules independently: sequence numbers compared through a signed 16-bit
difference, lifetimes capped, de-registered entries held 10 s, expiry at the exact deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from coretest_kit import HA, KEY, PREFIX, VIA, VIA_UDP, Stamper, build_bu, decode, events
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mipnode.core.ha import (
    BindingAdded,
    BindingRemoved,
    BindingUpdated,
    HaCoreConfig,
    HomeAgentCore,
    SecurityAssociation,
)
from mipnode.wire.mh import BindingAck

HOAS = [IPv6Address(f"2001:db8:1::{i:x}") for i in (0x100, 0x101, 0x102)]
COAS = [IPv6Address("2001:db8:aa::5"), IPv6Address("2001:db8:bb::7")]
MAX_LIFETIME_S = 400
HOLD_S = 10.0


def model_newer(received: int, last: int) -> bool:
    diff = (received - last + 0x8000) % 0x10000 - 0x8000  # signed, in -32768..32767
    return diff > 0


def same_events(got: list[object], want: list[object]) -> bool:
    """Equal up to order: expiries falling due together may come out in any order."""
    return sorted(map(repr, got)) == sorted(map(repr, want))


@dataclass
class ModelEntry:
    sequence: int
    care_of: IPv6Address
    deadline: float
    deleted: bool


class HaCacheMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        sas = tuple(SecurityAssociation(0x1000 + i, KEY, hoa) for i, hoa in enumerate(HOAS))
        self.ha = HomeAgentCore(HaCoreConfig(HA, PREFIX, sas, max_lifetime_s=MAX_LIFETIME_S))
        self.model: dict[IPv6Address, ModelEntry] = {}
        self.now = 1000.0
        self.stamps = [Stamper() for _ in HOAS]
        self.last_bu: tuple[int, bytes] | None = None

    # -- model helpers --------------------------------------------------------------------

    def model_expire(self) -> list[object]:
        expected: list[object] = []
        for hoa, entry in list(self.model.items()):
            if entry.deadline <= self.now:
                del self.model[hoa]
                if not entry.deleted:
                    expected.append(BindingRemoved(hoa, "expired"))
        return expected

    def model_bu(
        self, hoa: IPv6Address, seq: int, units: int, care_of: IPv6Address
    ) -> tuple[int, int, int, list[type]]:
        """Expected (status, BA sequence, BA lifetime, event types)."""
        entry = self.model.get(hoa)
        # RFC 6275 §9.5.1: the window applies to a binding; a held deleted entry is none.
        if entry is not None and not entry.deleted and not model_newer(seq, entry.sequence):
            return 135, entry.sequence, 0, []
        if units == 0 or care_of == hoa:
            if entry is None or entry.deleted:
                if entry is not None:
                    entry.sequence = seq
                return 133, seq, 0, []
            entry.sequence, entry.deleted, entry.deadline = seq, True, self.now + HOLD_S
            return 0, seq, 0, [BindingRemoved]
        granted = min(units, MAX_LIFETIME_S // 4)
        fresh = entry is None or entry.deleted
        self.model[hoa] = ModelEntry(seq, care_of, self.now + granted * 4, False)
        return 0, seq, granted, [BindingAdded if fresh else BindingUpdated]

    def last_sequence(self, index: int) -> int:
        entry = self.model.get(HOAS[index])
        return entry.sequence if entry is not None else 0

    # -- rules ----------------------------------------------------------------------------

    @rule(
        index=st.integers(0, len(HOAS) - 1),
        offset=st.one_of(
            st.sampled_from([1, 2, 32767, 32768, 32769, 0, -1, 65535]),
            st.integers(-40000, 40000),
        ),
        units=st.sampled_from([0, 1, 3, 25, 100, 150, 0xFFFF]),
        coa_index=st.integers(0, len(COAS)),  # len(COAS) means "CoA = HoA"
        via=st.sampled_from([VIA, VIA_UDP]),
    )
    def send_bu(self, index: int, offset: int, units: int, coa_index: int, via: object) -> None:
        hoa = HOAS[index]
        seq = (self.last_sequence(index) + offset) % 0x10000
        care_of = COAS[coa_index] if coa_index < len(COAS) else hoa
        data = build_bu(
            seq,
            self.stamps[index](self.now),
            lifetime=units,
            hoa=hoa,
            coa=care_of,
            spi=0x1000 + index,
        )
        self.last_bu = (index, data)
        expected_events = self.model_expire()
        status, ba_seq, ba_lifetime, event_types = self.model_bu(hoa, seq, units, care_of)

        self.ha.receive_datagram(self.now, data, hoa, HA, via)  # type: ignore[arg-type]
        (out,) = self.ha.datagrams_to_send(self.now)
        assert (out.dst, out.via) == (hoa, via)
        ba = decode(out)
        assert isinstance(ba, BindingAck)
        assert (ba.status, ba.sequence, ba.lifetime) == (status, ba_seq, ba_lifetime)
        got = events(self.ha)
        assert same_events(got[: len(expected_events)], expected_events)
        assert [type(e) for e in got[len(expected_events) :]] == event_types

    @rule()
    def replay_last_bu(self) -> None:
        if self.last_bu is None:
            return
        index, data = self.last_bu
        before = self.ha.bindings(include_deleted=True)
        expected_events = self.model_expire()
        self.ha.receive_datagram(self.now, data, HOAS[index], HA, VIA)
        (out,) = self.ha.datagrams_to_send(self.now)
        ba = decode(out)
        assert isinstance(ba, BindingAck)
        assert ba.status == 144  # RFC 4285: the timestamp was spent
        assert same_events(events(self.ha), expected_events)
        if not expected_events:
            assert self.ha.bindings(include_deleted=True) == before

    @rule(dt=st.sampled_from([0.5, 4.0, 9.99, 10.0, 12.0, 99.0, 100.0, 400.0, 1000.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        expected = self.model_expire()
        self.ha.handle_timer(self.now)
        assert same_events(events(self.ha), expected)

    @rule()
    def advance_to_timer(self) -> None:
        deadline = self.ha.get_timer()
        if deadline is None:
            return
        self.now = deadline
        expected = self.model_expire()
        self.ha.handle_timer(self.now)
        assert same_events(events(self.ha), expected)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def cache_matches_model(self) -> None:
        got = {
            b.home_address: (b.sequence, b.care_of_address, b.expires_at, b.state == "deleted")
            for b in self.ha.bindings(include_deleted=True)
        }
        want = {
            hoa: (e.sequence, e.care_of, e.deadline, e.deleted) for hoa, e in self.model.items()
        }
        assert got == want
        live = {b.home_address for b in self.ha.bindings()}
        assert live == {hoa for hoa, e in self.model.items() if not e.deleted}

    @invariant()
    def timer_is_the_earliest_deadline(self) -> None:
        deadlines = [e.deadline for e in self.model.values()]
        assert self.ha.get_timer() == (min(deadlines) if deadlines else None)


HaCacheMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHaCache = HaCacheMachine.TestCase
