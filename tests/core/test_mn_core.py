"""MobileNodeCore: BU contents, retransmission ladder, refresh, expiry and BA statuses."""

from __future__ import annotations

import pytest
from coretest_kit import (
    COA,
    COA2,
    HA,
    HOA,
    OTHER_KEY,
    build_ba,
    events,
    make_mn,
    single_bu,
)

from mipnode.core.mn import (
    MAX_IMMEDIATE_RESENDS,
    MAX_UNBOUND_DEREG_TRANSMISSIONS,
    BindingLost,
    Deregistered,
    MnCoreConfig,
    MobileNodeCore,
    Registered,
    RegistrationRejected,
)
from mipnode.wire.auth4285 import ntp_from_unix, unix_from_ntp
from mipnode.wire.mh import AlternateCareOfAddress, BindingRefreshAdvice


def deliver(mn: MobileNodeCore, now: float, data: bytes) -> None:
    mn.receive_datagram(now, data, HA, HOA)


def registered_mn(now: float = 0.0, seq: int = 100) -> MobileNodeCore:
    """An MN registered at ``now`` with a 600 s binding, queues and events drained."""
    mn = make_mn(seq)
    mn.register(now, COA)
    bu, ts = single_bu(mn, now)
    deliver(mn, now + 0.1, build_ba(0, bu.sequence, ts))
    assert mn.state == "registered"
    events(mn)
    return mn


def run_ladder(mn: MobileNodeCore, count: int) -> list[tuple[float, int, int]]:
    """Fire the next ``count`` timers; (time, sequence, timestamp) of each BU sent."""
    sent = []
    for _ in range(count):
        now = mn.get_timer()
        assert now is not None
        mn.handle_timer(now)
        bu, ts = single_bu(mn, now)
        sent.append((now, bu.sequence, ts))
    return sent


# -- the first BU ---------------------------------------------------------------------------


def test_register_sends_an_authenticated_home_bu_at_once() -> None:
    mn = make_mn(initial_sequence=4242)
    mn.register(10.0, COA)
    bu, ts = single_bu(mn, 10.0)  # checks addressing and the MN-HA authenticator
    assert bu.sequence == 4242
    assert (bu.ack, bu.home, bu.lifetime) == (True, True, 150)
    assert AlternateCareOfAddress(COA) in bu.options
    assert ts == ntp_from_unix(10.0)
    assert mn.state == "registering"
    assert (mn.sequence, mn.care_of) == (4242, COA)
    assert mn.lifetime_remaining(10.0) == 0


def test_register_refuses_the_home_address_as_care_of() -> None:
    with pytest.raises(ValueError, match="deregister"):
        make_mn().register(0.0, HOA)


# -- retransmission -------------------------------------------------------------------------


def test_first_registration_backs_off_from_1_5_s_doubling_to_32_s() -> None:
    mn = make_mn(initial_sequence=65533)
    mn.register(0.0, COA)
    first, first_ts = single_bu(mn, 0.0)
    assert mn.get_timer() == 1.5

    sent = run_ladder(mn, 9)
    times = [t for t, _, _ in sent]
    assert times == [1.5, 4.5, 10.5, 22.5, 46.5, 78.5, 110.5, 142.5, 174.5]
    assert mn.get_timer() == 206.5
    # RFC 6275 §11.8: each retransmission has a larger sequence number (wrapping mod 2^16)
    # and RFC 4285 a fresh, larger timestamp.
    assert [s for _, s, _ in sent] == [65534, 65535, 0, 1, 2, 3, 4, 5, 6]
    stamps = [first_ts] + [ts for _, _, ts in sent]
    assert stamps == sorted(set(stamps))
    assert [ts for _, _, ts in sent] == [ntp_from_unix(t) for t in times]
    assert mn.state == "registering"
    assert mn.statistics()["retransmissions"] == 9
    assert first.sequence == 65533


def test_the_ladder_honours_configured_timeouts() -> None:
    mn = make_mn(first_reg_timeout_s=2.0, max_bindack_timeout_s=5.0)
    mn.register(0.0, COA)
    single_bu(mn, 0.0)
    assert [t for t, _, _ in run_ladder(mn, 5)] == [2.0, 6.0, 11.0, 16.0, 21.0]


def test_a_ba_to_an_earlier_transmission_counts_from_when_that_bu_was_sent() -> None:
    mn = make_mn(initial_sequence=7)
    mn.register(0.0, COA)
    _, ts0 = single_bu(mn, 0.0)
    run_ladder(mn, 1)  # seq 8 at 1.5
    deliver(mn, 1.6, build_ba(0, 7, ts0))
    assert mn.state == "registered"
    assert events(mn) == [Registered(COA, 600, 600.0, 7)]
    assert mn.get_timer() == 480.0


# -- registration and refresh ---------------------------------------------------------------


def test_an_accepting_ba_registers_and_schedules_the_refresh_at_80_percent() -> None:
    mn = make_mn(initial_sequence=7)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.25, build_ba(0, 7, ts, lifetime=150))
    assert mn.state == "registered"
    assert events(mn) == [Registered(COA, 600, 600.0, 7)]
    assert mn.get_timer() == 480.0  # 80 % of 600 s after the BU was sent
    assert mn.lifetime_remaining(100.0) == 500.0
    assert mn.datagrams_to_send(1.0) == []


@pytest.mark.parametrize(("units", "refresh_at"), [(1, 2.0), (3, 9.6), (2, 6.0)])
def test_short_lifetimes_refresh_at_least_2_s_before_expiry(units: int, refresh_at: float) -> None:
    mn = make_mn(initial_sequence=7)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.1, build_ba(0, 7, ts, lifetime=units))
    assert mn.get_timer() == pytest.approx(refresh_at)


def test_a_binding_refresh_advice_brings_the_refresh_forward() -> None:
    mn = make_mn(initial_sequence=7)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.1, build_ba(0, 7, ts, lifetime=150, extra=(BindingRefreshAdvice(25),)))
    assert mn.get_timer() == 100.0


def test_the_refresh_resends_from_1_s_and_keeps_the_state_registered() -> None:
    mn = registered_mn(seq=100)
    assert mn.get_timer() == 480.0
    sent = run_ladder(mn, 4)
    assert [t for t, _, _ in sent] == [480.0, 481.0, 483.0, 487.0]
    assert [s for _, s, _ in sent] == [101, 102, 103, 104]
    assert mn.state == "registered"

    deliver(mn, 487.5, build_ba(0, 104, sent[-1][2]))
    assert events(mn) == [Registered(COA, 600, 1087.0, 104)]
    assert mn.get_timer() == 487.0 + 480.0


def test_an_unanswered_refresh_loses_the_binding_at_expiry_and_keeps_trying() -> None:
    mn = registered_mn()
    times = [t for t, _, _ in run_ladder(mn, 7)]
    assert times == [480.0, 481.0, 483.0, 487.0, 495.0, 511.0, 543.0]
    assert mn.get_timer() == 575.0
    run_ladder(mn, 1)
    assert mn.get_timer() == 600.0  # the binding's expiry comes before the next BU (607)

    mn.handle_timer(600.0)
    assert events(mn) == [BindingLost(COA)]
    assert mn.state == "registering"
    assert mn.lifetime_remaining(600.0) == 0
    assert mn.datagrams_to_send(600.0) == []
    assert mn.get_timer() == 607.0
    ((t, _, ts),) = run_ladder(mn, 1)
    assert t == 607.0

    deliver(mn, 607.2, build_ba(0, mn.sequence or 0, ts))
    assert mn.state == "registered"
    assert [type(e) for e in events(mn)] == [Registered]


def test_moving_to_a_new_care_of_address_reregisters_from_1_s() -> None:
    mn = registered_mn()
    mn.register(50.0, COA2)
    bu, ts = single_bu(mn, 50.0)
    assert AlternateCareOfAddress(COA2) in bu.options
    assert mn.state == "registering"
    assert mn.get_timer() == 51.0  # the HA still has a binding: no DAD, INITIAL_BINDACK_TIMEOUT

    deliver(mn, 50.1, build_ba(0, bu.sequence, ts, coa=COA2))
    assert events(mn) == [Registered(COA2, 600, 650.0, bu.sequence)]
    assert mn.care_of == COA2


# -- statuses 135, 144, 146 -----------------------------------------------------------------


def test_135_adopts_the_has_sequence_number_and_resends_at_once() -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.2, build_ba(135, 40000, ts))
    bu, ts2 = single_bu(mn, 0.2)
    assert bu.sequence == 40001
    assert ts2 > ts
    assert mn.get_timer() == pytest.approx(1.7)  # the ladder restarts
    assert mn.state == "registering"
    assert events(mn) == []

    deliver(mn, 0.3, build_ba(0, 40001, ts2))
    assert events(mn) == [Registered(COA, 600, 600.2, 40001)]
    assert mn.statistics()["sequence_resync"] == 1


def test_144_resynchronises_the_clock_from_the_high_32_bits_and_resends() -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    bu, ts = single_bu(mn, 0.0)
    ha_time = 5000.0
    echoed = (ntp_from_unix(ha_time) & ~0xFFFFFFFF) | (ts & 0xFFFFFFFF)
    deliver(mn, 0.5, build_ba(144, bu.sequence, echoed))

    assert mn.clock_offset == pytest.approx(ha_time - 0.5)
    bu2, ts2 = single_bu(mn, 0.5)
    assert bu2.sequence == 11
    assert unix_from_ntp(ts2) == pytest.approx(ha_time, abs=1e-6)
    assert mn.statistics()["clock_resync"] == 1
    # Later BUs keep the offset.
    run = run_ladder(mn, 1)
    assert unix_from_ntp(run[0][2]) == pytest.approx(ha_time + 1.5, abs=1e-6)


def test_144_backwards_never_reuses_an_accepted_timestamp() -> None:
    mn = registered_mn(now=0.0, seq=100)  # the HA accepted ntp(0.0)
    mn.register(10.0, COA2)
    bu, ts = single_bu(mn, 10.0)
    # The HA claims to be far behind: the next timestamp must still exceed the accepted one.
    echoed = (ntp_from_unix(-100.0) & ~0xFFFFFFFF) | (ts & 0xFFFFFFFF)
    deliver(mn, 10.0, build_ba(144, bu.sequence, echoed, coa=COA2))
    _, ts2 = single_bu(mn, 10.0)
    assert ts2 == ntp_from_unix(0.0) + 1


def test_immediate_resends_are_bounded_per_exchange() -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    for _ in range(MAX_IMMEDIATE_RESENDS):
        deliver(mn, 0.1, build_ba(135, 500, ts))
        _, ts = single_bu(mn, 0.1)
    deliver(mn, 0.1, build_ba(135, 500, ts))
    assert mn.datagrams_to_send(0.1) == []
    assert mn.statistics()["resend_deferred"] == 1
    assert mn.get_timer() == pytest.approx(1.6)


@pytest.mark.parametrize("status", [129, 132, 133, 145])
def test_a_rejection_stops_retransmission(status: int) -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.2, build_ba(status, 10, ts, lifetime=0))
    assert events(mn) == [RegistrationRejected(status, COA)]
    assert mn.state == "failed"
    assert mn.get_timer() is None
    assert mn.datagrams_to_send(0.2) == []
    assert mn.statistics()[f"rejected_{status}"] == 1


def test_a_146_is_retried_on_the_ladder_not_a_failure() -> None:
    """Issue 12: a mipnode HA never answers a forged BU; a 146 (stale, or from a confused HA)
    must not take the registration down for good."""
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.2, build_ba(146, 10, ts))
    assert mn.state == "registering" and events(mn) == []
    assert mn.statistics()["rejected_146"] == 1
    assert mn.get_timer() == pytest.approx(1.5)  # the ordinary retransmission, not at once
    mn.handle_timer(1.5)
    bu, ts2 = single_bu(mn, 1.5)
    assert bu.sequence == 11
    deliver(mn, 1.6, build_ba(0, 11, ts2))
    assert mn.state == "registered"


def test_a_ba_without_mesg_id_matches_nothing_even_with_the_right_sequence() -> None:
    """Attack (issue 12): sequence numbers travel in clear and go up by one; a BA that names
    one but no Mesg-ID of ours is no answer, whatever its status."""
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    for status in (146, 129, 0):
        deliver(mn, 0.1, build_ba(status, 10, None))
    assert mn.state == "registering" and events(mn) == []
    assert mn.statistics()["drop_unmatched_ba"] == 3
    deliver(mn, 0.2, build_ba(0, 10, ts))  # the genuine answer still counts
    assert mn.state == "registered"


def test_register_after_failure_starts_again() -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.2, build_ba(129, 10, ts))
    mn.register(5.0, COA)
    bu, _ = single_bu(mn, 5.0)
    assert bu.sequence == 11
    assert mn.state == "registering"
    assert mn.get_timer() == 6.5


# -- BAs that must be ignored ---------------------------------------------------------------


def test_bas_that_fail_authentication_or_do_not_match_are_ignored() -> None:
    mn = make_mn(initial_sequence=10)
    deliver(mn, 0.0, build_ba(0, 10, 1))
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.1, build_ba(146, 10, ts, key=OTHER_KEY))  # forged rejection
    deliver(mn, 0.1, build_ba(0, 10, ts, coa=COA2))  # MAC over another CoA
    deliver(mn, 0.1, build_ba(0, 10, ts + 1))  # Mesg-ID we never sent
    deliver(mn, 0.1, build_ba(0, 11, None))  # sequence we never sent
    deliver(mn, 0.1, build_ba(135, 10, None))  # a 135 can only match by Mesg-ID
    deliver(mn, 0.1, b"\x3b")
    mn.receive_datagram(0.1, build_ba(0, 10, ts), COA2, HOA)  # not from the HA: checksum
    assert mn.state == "registering"
    assert events(mn) == []
    stats = mn.statistics()
    assert stats["drop_unexpected_ba"] == 1
    assert stats["drop_bad_auth"] == 2
    assert stats["drop_unmatched_ba"] == 3
    assert stats["drop_truncated"] == 1
    assert stats["drop_bad_checksum"] == 1

    deliver(mn, 0.2, build_ba(0, 10, None))  # no Mesg-ID: no answer of ours, even signed
    assert mn.state == "registering"
    deliver(mn, 0.2, build_ba(0, 10, ts))
    assert mn.state == "registered"


def test_a_zero_lifetime_acceptance_is_ignored_for_a_registration() -> None:
    mn = make_mn(initial_sequence=10)
    mn.register(0.0, COA)
    _, ts = single_bu(mn, 0.0)
    deliver(mn, 0.1, build_ba(0, 10, ts, lifetime=0))
    assert mn.state == "registering"
    assert mn.statistics()["drop_zero_lifetime"] == 1


# -- de-registration ------------------------------------------------------------------------


def test_deregistration_sends_lifetime_0_with_the_home_address_as_care_of() -> None:
    mn = registered_mn(seq=100)
    mn.deregister(100.0)
    bu, ts = single_bu(mn, 100.0)  # also checks the MAC over CoA = HoA
    assert bu.lifetime == 0
    assert AlternateCareOfAddress(HOA) in bu.options
    assert bu.sequence == 101
    assert mn.state == "deregistering"
    assert mn.get_timer() == 101.0

    deliver(mn, 100.1, build_ba(0, 101, ts, lifetime=0, coa=HOA))
    assert events(mn) == [Deregistered(confirmed=True)]
    assert mn.state == "idle"
    assert mn.get_timer() is None
    assert mn.lifetime_remaining(100.1) == 0


def test_133_to_a_deregistration_means_the_binding_is_already_gone() -> None:
    mn = registered_mn(seq=100)
    mn.deregister(100.0)
    bu, ts = single_bu(mn, 100.0)
    deliver(mn, 100.1, build_ba(133, bu.sequence, ts, lifetime=0, coa=HOA))
    assert events(mn) == [Deregistered(confirmed=True)]


def test_an_unanswered_deregistration_ends_when_the_binding_expires() -> None:
    mn = registered_mn(seq=100)
    mn.deregister(500.0)
    single_bu(mn, 500.0)
    times = [t for t, _, _ in run_ladder(mn, 5)]
    assert times == [501.0, 503.0, 507.0, 515.0, 531.0]
    assert mn.get_timer() == 563.0
    run_ladder(mn, 1)
    assert mn.get_timer() == 595.0
    run_ladder(mn, 1)
    assert mn.get_timer() == 600.0
    mn.handle_timer(600.0)
    assert events(mn) == [Deregistered(confirmed=False)]
    assert mn.state == "idle"
    assert mn.get_timer() is None


def test_a_deregistration_without_a_known_binding_gives_up_after_a_few_tries() -> None:
    mn = make_mn()
    mn.deregister(0.0)
    single_bu(mn, 0.0)
    run_ladder(mn, MAX_UNBOUND_DEREG_TRANSMISSIONS - 1)
    when = mn.get_timer()
    assert when == 1 + 2 + 4 + 8 + 16
    mn.handle_timer(when)
    assert mn.datagrams_to_send(when) == []
    assert events(mn) == [Deregistered(confirmed=False)]


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"lifetime_s": 3},
        {"lifetime_s": 262_141},
        {"first_reg_timeout_s": 0},
        {"max_bindack_timeout_s": 1.0},
        {"refresh_fraction": 1.0},
        {"refresh_margin_s": -1},
    ],
)
def test_config_validation(overrides: dict[str, float]) -> None:
    fields: dict[str, object] = {"home_address": HOA, "home_agent": HA, "spi": 1, "key": b"k"}
    fields.update(overrides)
    with pytest.raises(ValueError):
        MnCoreConfig(**fields)  # type: ignore[arg-type]


def test_the_key_is_not_in_the_config_repr() -> None:
    assert "secret" not in repr(MnCoreConfig(HOA, HA, 1, b"secret"))
