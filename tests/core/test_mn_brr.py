"""MobileNodeCore: a Binding Refresh Request from the HA starts a refresh at once."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from coretest_kit import (
    COA,
    COA2,
    HA,
    HOA,
    KEY,
    OTHER_KEY,
    SPI,
    build_ba,
    events,
    make_mn,
    single_bu,
)

from mipnode.core.mn import BRR_MIN_INTERVAL_S, MobileNodeCore, Registered
from mipnode.wire.auth4285 import encode_mh_authenticated
from mipnode.wire.mh import BindingRefreshRequest, encode_mh

OTHER_HA = IPv6Address("2001:db8:1::2")


def build_brr(
    *, key: bytes = KEY, spi: int = SPI, coa: IPv6Address = COA, src: IPv6Address = HA
) -> bytes:
    """A BRR as the HA sends it: HA -> HoA, MN-HA authenticated over the binding's CoA."""
    return encode_mh_authenticated(
        BindingRefreshRequest(), src, HOA, spi=spi, key=key, coa=coa, hoa=HOA
    )


def registered_mn(now: float = 0.0) -> tuple[MobileNodeCore, int]:
    """An MN registered at ``now`` (600 s binding, refresh due at 480 s); its sequence."""
    mn = make_mn(100)
    mn.register(now, COA)
    bu, ts = single_bu(mn, now)
    mn.receive_datagram(now + 0.1, build_ba(0, bu.sequence, ts), HA, HOA)
    assert mn.state == "registered"
    events(mn)
    return mn, bu.sequence


def test_a_brr_starts_a_refresh_at_once() -> None:
    mn, seq = registered_mn()
    assert mn.get_timer() == 480.0
    mn.receive_datagram(100.0, build_brr(), HA, HOA)
    bu, _ = single_bu(mn, 100.0)
    assert bu.sequence == seq + 1 and bu.lifetime == 150 and bu.home and bu.ack
    assert mn.state == "registered"  # the binding still stands while we refresh
    assert mn.get_timer() == 101.0  # re-registration ladder: INITIAL_BINDACK_TIMEOUT
    assert mn.statistics()["brr_refreshes"] == 1


def test_the_refresh_a_brr_started_completes_like_any_other() -> None:
    mn, _ = registered_mn()
    mn.receive_datagram(100.0, build_brr(), HA, HOA)
    bu, ts = single_bu(mn, 100.0)
    mn.receive_datagram(100.2, build_ba(0, bu.sequence, ts), HA, HOA)
    assert events(mn) == [Registered(COA, 600, 700.0, bu.sequence)]
    assert mn.get_timer() == 580.0


@pytest.mark.parametrize(
    ("data", "src", "reason"),
    [
        (build_brr(key=OTHER_KEY), HA, "drop_bad_auth"),
        (build_brr(spi=SPI + 1), HA, "drop_bad_auth"),
        (build_brr(coa=COA2), HA, "drop_bad_auth"),  # not over the CoA we are bound to
        (build_brr(src=OTHER_HA), OTHER_HA, "drop_bad_auth"),  # not our HA
        (encode_mh(BindingRefreshRequest(), HA, HOA), HA, "drop_bad_auth"),  # no MN-HA option
        (build_brr()[:-1], HA, "drop_bad_length"),
    ],
    ids=["wrong-key", "wrong-spi", "old-coa", "other-ha", "unauthenticated", "truncated"],
)
def test_a_brr_that_is_not_from_our_ha_is_ignored(
    data: bytes, src: IPv6Address, reason: str
) -> None:
    mn, _ = registered_mn()
    mn.receive_datagram(100.0, data, src, HOA)
    assert mn.datagrams_to_send(100.0) == []
    assert mn.get_timer() == 480.0
    assert mn.statistics()[reason] == 1


def test_a_brr_while_not_registered_is_ignored() -> None:
    mn = make_mn(100)
    mn.receive_datagram(0.0, build_brr(), HA, HOA)  # idle
    assert mn.datagrams_to_send(0.0) == []
    mn.register(1.0, COA)
    single_bu(mn, 1.0)
    mn.receive_datagram(1.2, build_brr(), HA, HOA)  # first registration in flight
    assert mn.datagrams_to_send(1.2) == []
    assert mn.statistics()["drop_brr_not_registered"] == 2


def test_a_brr_during_a_refresh_adds_no_bu() -> None:
    mn, _ = registered_mn()
    mn.handle_timer(480.0)  # the ordinary refresh is in flight
    single_bu(mn, 480.0)
    mn.receive_datagram(480.3, build_brr(), HA, HOA)
    assert mn.datagrams_to_send(480.3) == []
    assert mn.get_timer() == 481.0
    assert mn.statistics()["brr_during_exchange"] == 1


def test_brr_started_refreshes_are_rate_limited() -> None:
    mn, _ = registered_mn()
    mn.receive_datagram(100.0, build_brr(), HA, HOA)
    bu, ts = single_bu(mn, 100.0)
    mn.receive_datagram(100.1, build_ba(0, bu.sequence, ts), HA, HOA)
    # A replayed (or duplicated) BRR right after: no second BU within the interval.
    mn.receive_datagram(100.5, build_brr(), HA, HOA)
    assert mn.datagrams_to_send(100.5) == []
    assert mn.statistics()["drop_brr_rate"] == 1
    mn.receive_datagram(100.0 + BRR_MIN_INTERVAL_S, build_brr(), HA, HOA)
    single_bu(mn, 100.0 + BRR_MIN_INTERVAL_S)
    assert mn.statistics()["brr_refreshes"] == 2


def test_a_brr_after_a_move_is_checked_against_the_new_binding() -> None:
    mn, _ = registered_mn()
    mn.register(10.0, COA2)
    bu, ts = single_bu(mn, 10.0)
    mn.receive_datagram(10.1, build_ba(0, bu.sequence, ts, coa=COA2), HA, HOA)
    assert mn.state == "registered"
    mn.receive_datagram(50.0, build_brr(coa=COA), HA, HOA)  # for the old binding
    assert mn.datagrams_to_send(50.0) == []
    mn.receive_datagram(50.0, build_brr(coa=COA2), HA, HOA)
    bu, _ = single_bu(mn, 50.0)
    assert bu.options[0].address == COA2  # type: ignore[attr-defined]


# -- a home agent that lost its binding (issue 11) ---------------------------------------------


def test_a_brr_signed_over_the_home_address_restarts_registration() -> None:
    """An HA without our binding (restarted without its cache) signs its BRR over the home
    address, the one address it knows; the MN answers with a BU at once."""
    mn, seq = registered_mn()
    mn.receive_datagram(100.0, build_brr(coa=HOA), HA, HOA)
    bu, _ = single_bu(mn, 100.0)
    assert bu.sequence == seq + 1 and bu.lifetime == 150
    assert mn.statistics()["brr_refreshes"] == 1


@pytest.mark.parametrize("key", [OTHER_KEY, KEY], ids=["forged", "genuine-but-replayed-fast"])
def test_a_forged_or_flooded_home_address_brr_costs_at_most_one_bu_per_interval(
    key: bytes,
) -> None:
    mn, _ = registered_mn()
    for i in range(10):
        mn.receive_datagram(100.0 + i * 0.01, build_brr(coa=HOA, key=key), HA, HOA)
    sent = mn.datagrams_to_send(100.2)
    if key == OTHER_KEY:
        assert sent == [] and mn.statistics()["drop_bad_auth"] == 10
    else:
        assert len(sent) == 1  # the first starts the refresh, the rest wait for it
    assert mn.state == "registered"  # a BRR never tears the binding down
