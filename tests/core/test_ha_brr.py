"""HomeAgentCore: Binding Refresh Advice in BAs and Binding Refresh Requests near expiry."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from coretest_kit import (
    COA,
    COA2,
    HA,
    HOA,
    KEY,
    VIA,
    VIA_UDP,
    Stamper,
    build_bu,
    decode,
    events,
    make_ha,
    make_mn,
    single_ba,
)

from mipnode.core.ha import BRR_MAX_TRANSMISSIONS, HomeAgentCore
from mipnode.core.types import OutgoingMh, Via
from mipnode.wire.auth4285 import verify_mh_authenticated
from mipnode.wire.mh import BindingAck, BindingRefreshAdvice, BindingRefreshRequest, MesgId

T0 = 1000.0


def brr_ha(**overrides: object) -> HomeAgentCore:
    fields: dict[str, object] = {"refresh_requests": True, "refresh_advice_fraction": 0.75}
    fields.update(overrides)
    return make_ha(**fields)


def send_bu(
    ha: HomeAgentCore,
    stamp: Stamper,
    now: float,
    sequence: int,
    *,
    lifetime: int = 150,
    coa: object = COA,
    via: Via = VIA,
) -> BindingAck:
    ha.receive_datagram(
        now,
        build_bu(sequence, stamp(now), lifetime=lifetime, coa=coa),  # type: ignore[arg-type]
        HOA,
        HA,
        via,
    )
    return single_ba(ha, now)


def fire(ha: HomeAgentCore) -> tuple[float, list[OutgoingMh]]:
    """Advance to the HA's next timer, fire it, and return (when, what it sent)."""
    now = ha.get_timer()
    assert now is not None
    ha.handle_timer(now)
    return now, ha.datagrams_to_send(now)


def assert_brr(out: OutgoingMh, *, coa: object = COA, via: Via = VIA) -> None:
    """A BRR like a BA: HA -> HoA on the binding's via, MN-HA authenticated over its CoA."""
    assert (out.src, out.dst, out.via, out.care_of) == (HA, HOA, via, None)
    assert isinstance(decode(out), BindingRefreshRequest)
    assert verify_mh_authenticated(out.data, key=KEY, coa=coa, hoa=HOA)


# -- Binding Refresh Advice -----------------------------------------------------------------


def test_an_accepting_ba_carries_a_refresh_advice_below_the_lifetime() -> None:
    ha, stamp = brr_ha(), Stamper()
    ba = send_bu(ha, stamp, T0, 7, lifetime=150)
    assert (ba.status, ba.lifetime) == (0, 150)
    advice = [o for o in ba.options if isinstance(o, BindingRefreshAdvice)]
    assert advice == [BindingRefreshAdvice(112)]  # floor(0.75 x 150) units of 4 s
    assert any(isinstance(o, MesgId) for o in ba.options)  # still echoed


def test_the_advice_follows_the_granted_not_the_requested_lifetime() -> None:
    ha, stamp = brr_ha(max_lifetime_s=400), Stamper()
    ba = send_bu(ha, stamp, T0, 7, lifetime=1000)
    assert ba.lifetime == 100
    assert BindingRefreshAdvice(75) in ba.options


def test_no_advice_when_it_cannot_be_below_the_lifetime() -> None:
    ha, stamp = brr_ha(), Stamper()
    ba = send_bu(ha, stamp, T0, 7, lifetime=1)  # 0.75 x 1 unit rounds down to 0
    assert ba.lifetime == 1
    assert not any(isinstance(o, BindingRefreshAdvice) for o in ba.options)


def test_rejections_and_deregistrations_carry_no_advice() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7)
    stale = send_bu(ha, stamp, T0 + 1, 6)
    assert stale.status == 135
    dereg = send_bu(ha, stamp, T0 + 2, 8, lifetime=0, coa=HOA)
    assert dereg.status == 0
    for ba in (stale, dereg):
        assert not any(isinstance(o, BindingRefreshAdvice) for o in ba.options)


def test_no_advice_and_no_brr_by_default() -> None:
    ha, stamp = make_ha(), Stamper()
    ba = send_bu(ha, stamp, T0, 7, lifetime=150)
    assert not any(isinstance(o, BindingRefreshAdvice) for o in ba.options)
    assert ha.get_timer() == T0 + 600  # only the expiry
    ha.handle_timer(T0 + 599)
    assert ha.datagrams_to_send(T0 + 599) == []


def test_config_rejects_a_fraction_outside_0_1() -> None:
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError):
            brr_ha(refresh_advice_fraction=bad)


def test_the_mn_core_follows_the_advice() -> None:
    ha, mn = brr_ha(), make_mn(500)
    mn.register(T0, COA)
    for out in mn.datagrams_to_send(T0):
        ha.receive_datagram(T0, out.data, out.src, out.dst, VIA)
    for out in ha.datagrams_to_send(T0):
        mn.receive_datagram(T0, out.data, out.src, out.dst)
    assert mn.state == "registered"
    assert mn.get_timer() == T0 + 112 * 4  # not 80 % (480 s): the advice is shorter


# -- Binding Refresh Requests -----------------------------------------------------------------


def test_a_brr_round_starts_30_s_before_a_600_s_binding_expires() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=150)
    assert ha.get_timer() == T0 + 570  # min(10 % of 600 s, 30 s) before the expiry
    sent = []
    for _ in range(BRR_MAX_TRANSMISSIONS):
        now, out = fire(ha)
        assert len(out) == 1
        assert_brr(out[0])
        sent.append(now)
    # INITIAL_BINDACK_TIMEOUT (1 s), doubling; bounded per round.
    assert sent == [T0 + 570, T0 + 571, T0 + 573]
    assert ha.get_timer() == T0 + 600  # then only the expiry
    assert ha.statistics()["brr_sent"] == 3
    now, out = fire(ha)
    assert (now, out) == (T0 + 600, [])
    assert ha.binding_for(HOA) is None


def test_short_lifetimes_start_the_round_at_10_percent() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=10)  # 40 s: lead 4 s
    times = []
    while (timer := ha.get_timer()) is not None and timer < T0 + 40:
        now, out = fire(ha)
        assert len(out) == 1
        times.append(now)
    assert times == [T0 + 36, T0 + 37, T0 + 39]


def test_retransmissions_never_go_past_the_expiry() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=2)  # 8 s: lead 0.8 s, a retry would be at 8.2 s
    now, out = fire(ha)
    assert now == pytest.approx(T0 + 7.2) and len(out) == 1
    assert ha.get_timer() == T0 + 8


def test_a_refresh_ends_the_round_and_plans_the_next_one() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=150)
    now, out = fire(ha)
    assert now == T0 + 570 and len(out) == 1
    send_bu(ha, stamp, now + 0.2, 8, lifetime=150)
    assert ha.get_timer() == pytest.approx(now + 0.2 + 570)
    assert ha.statistics()["brr_sent"] == 1


def test_the_brr_follows_the_binding_to_its_new_care_of_address_and_via() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=150)
    send_bu(ha, stamp, T0 + 10, 8, lifetime=150, coa=COA2, via=VIA_UDP)
    _, out = fire(ha)
    assert len(out) == 1
    assert_brr(out[0], coa=COA2, via=VIA_UDP)


def test_a_deregistration_cancels_the_round() -> None:
    ha, stamp = brr_ha(), Stamper()
    send_bu(ha, stamp, T0, 7, lifetime=150)
    now, out = fire(ha)
    assert len(out) == 1
    assert send_bu(ha, stamp, now + 0.1, 8, lifetime=0, coa=HOA).status == 0
    now, out = fire(ha)
    assert (now, out) == (pytest.approx(T0 + 570.1 + 10), [])  # only the purge
    assert ha.get_timer() is None


def test_the_mn_core_answers_a_brr_with_a_refresh_that_ends_the_round() -> None:
    ha, mn = brr_ha(), make_mn(500)

    def pump(now: float) -> None:
        for _ in range(5):
            to_ha = mn.datagrams_to_send(now)
            for out in to_ha:
                ha.receive_datagram(now, out.data, out.src, out.dst, VIA)
            to_mn = ha.datagrams_to_send(now)
            for out in to_mn:
                mn.receive_datagram(now, out.data, out.src, out.dst)
            if not to_ha and not to_mn:
                return

    # A 600 s binding. The MN's own refresh (due after 448 s) is lost: its timer is never
    # fired here, so only the BRR at 570 s prompts it.
    mn.register(T0, COA)
    pump(T0)
    assert mn.state == "registered"
    events(mn)
    events(ha)
    brr_at = T0 + 570
    ha.handle_timer(brr_at)
    (brr,) = ha.datagrams_to_send(brr_at)
    mn.receive_datagram(brr_at, brr.data, brr.src, brr.dst)
    assert mn.statistics()["brr_refreshes"] == 1
    pump(brr_at)
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.expires_at == brr_at + 600
    assert ha.statistics()["refreshes"] == 1
    assert ha.get_timer() == brr_at + 570  # the round ended with the refresh


# -- Binding Refresh Requests for traffic the binding does not cover (issue 11) -----------------

OTHER_VIA = Via("T-udp", ("2001:db8:2::20", 40000), 4191)


def test_traffic_from_an_unbound_home_address_gets_one_brr_signed_over_the_home_address() -> None:
    ha = brr_ha()
    assert ha.refresh_request_for(T0, HOA, VIA, 200)
    (out,) = ha.datagrams_to_send(T0)
    assert_brr(out, coa=HOA)  # no binding: the HA knows no care-of address
    assert ha.statistics()["brr_sent_unbound"] == 1


def test_traffic_on_another_via_than_the_binding_gets_a_brr_over_the_bound_care_of() -> None:
    ha = brr_ha()
    stamp = Stamper()
    send_bu(ha, stamp, T0, 10)
    assert ha.refresh_request_for(T0 + 1, HOA, OTHER_VIA, 200)
    (out,) = ha.datagrams_to_send(T0 + 1)
    assert_brr(out, coa=COA, via=OTHER_VIA)  # back where the traffic came from
    assert ha.bindings()[0].via == VIA  # nothing changed before the MN's authenticated BU


def test_brrs_for_unbound_traffic_are_rate_limited_per_home_address() -> None:
    ha = brr_ha()
    sent = sum(ha.refresh_request_for(T0 + i * 0.1, HOA, VIA, 200) for i in range(30))
    assert sent == 3  # at T0, T0 + 1, T0 + 2 (once a second)
    assert ha.statistics()["drop_brr_rate"] == 27


def test_a_brr_is_never_larger_than_the_packet_that_triggered_it() -> None:
    ha = brr_ha()
    assert not ha.refresh_request_for(T0, HOA, VIA, 60)
    assert ha.datagrams_to_send(T0) == []
    assert ha.statistics()["drop_brr_larger_than_trigger"] == 1
    assert ha.refresh_request_for(T0, HOA, VIA, 200)
    (out,) = ha.datagrams_to_send(T0)
    assert 40 + len(out.data) <= 200


def test_no_brr_for_a_home_address_without_a_security_association() -> None:
    ha = brr_ha()
    stranger = IPv6Address("2001:db8:1::99")
    assert not ha.refresh_request_for(T0, stranger, VIA, 200)
    assert ha.datagrams_to_send(T0) == []
