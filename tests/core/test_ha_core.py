"""HomeAgentCore: BU validation order, statuses, sequence window, lifetimes and timers."""

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
    PREFIX,
    SPI,
    VIA,
    VIA_UDP,
    Stamper,
    build_bu,
    decode,
    events,
    make_ha,
    mesg_id,
    single_ba,
)

from mipnode.core.ha import (
    MAX_DELETE_BCE_TIMEOUT,
    BindingAdded,
    BindingRemoved,
    BindingState,
    BindingUpdated,
    HaCoreConfig,
    HomeAgentCore,
    SecurityAssociation,
)
from mipnode.core.types import OutgoingMh
from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    ntp_from_unix,
    unix_from_ntp,
    verify_mh_authenticated,
)
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingRefreshRequest,
    BindingUpdate,
    MesgId,
    NonceIndices,
    encode_mh,
    fill_mh_checksum,
)

T0 = 1000.0


def register(ha: HomeAgentCore, stamp: Stamper, now: float, sequence: int, **kw: object) -> int:
    """Send one BU at ``now`` and return the status of the BA."""
    ha.receive_datagram(now, build_bu(sequence, stamp(now), **kw), HOA, HA, VIA)  # type: ignore[arg-type]
    return int(single_ba(ha, now).status)


# -- registration ---------------------------------------------------------------------------


def test_a_valid_home_bu_creates_a_binding_and_is_acknowledged() -> None:
    ha, stamp = make_ha(), Stamper()
    ts = stamp(T0)
    ha.receive_datagram(T0, build_bu(7, ts, lifetime=150), HOA, HA, VIA)

    out = ha.datagrams_to_send(T0)
    assert len(out) == 1
    assert (out[0].src, out[0].dst, out[0].via) == (HA, HOA, VIA)
    assert verify_mh_authenticated(out[0].data, key=KEY, coa=COA, hoa=HOA)
    ba = single_ba_from(out[0])
    assert (ba.status, ba.sequence, ba.lifetime) == (0, 7, 150)
    assert mesg_id(ba) == ts  # RFC 4285: the BA echoes the MN's Mesg-ID

    binding = ha.binding_for(HOA)
    assert binding is not None
    assert binding.care_of_address == COA
    assert binding.via == VIA
    assert binding.sequence == 7
    assert (binding.lifetime_s, binding.registered_at, binding.expires_at) == (600, T0, T0 + 600)
    assert binding.state == "registered"
    assert events(ha) == [BindingAdded(binding)]
    assert ha.get_timer() == T0 + 600
    assert ha.statistics()["accepted"] == 1
    assert ha.statistics()["bindings"] == 1


def single_ba_from(out: OutgoingMh) -> BindingAck:
    ba = decode(out)
    assert isinstance(ba, BindingAck)
    return ba


def test_the_ha_answers_even_when_the_a_flag_is_clear() -> None:
    ha, stamp = make_ha(), Stamper()
    bu = BindingUpdate(
        sequence=1,
        lifetime=10,
        ack=False,
        home=True,
        options=(AlternateCareOfAddress(COA), MesgId(stamp(T0))),
    )
    data = encode_mh_authenticated(bu, HOA, HA, spi=SPI, key=KEY, coa=COA, hoa=HOA)
    ha.receive_datagram(T0, data, HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0  # RFC 6275 §10.3.1: the HA always returns a BA


def test_the_granted_lifetime_is_capped_by_max_lifetime() -> None:
    ha, stamp = make_ha(max_lifetime_s=3600), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), lifetime=0xFFFF), HOA, HA, VIA)
    ba = single_ba(ha, T0)
    assert (ba.status, ba.lifetime) == (0, 900)
    binding = ha.binding_for(HOA)
    assert binding is not None
    assert binding.lifetime_s == 3600
    assert binding.expires_at == T0 + 3600


def test_a_max_lifetime_that_is_not_a_multiple_of_4_rounds_down() -> None:
    ha, stamp = make_ha(max_lifetime_s=10), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), lifetime=100), HOA, HA, VIA)
    assert single_ba(ha, T0).lifetime == 2


def test_a_refresh_updates_the_binding_and_moves_its_expiry() -> None:
    ha, stamp = make_ha(), Stamper()
    assert register(ha, stamp, T0, 1) == 0
    first = ha.binding_for(HOA)
    events(ha)

    ha.receive_datagram(T0 + 480, build_bu(2, stamp(T0 + 480), coa=COA2), HOA, HA, VIA_UDP)
    assert single_ba(ha, T0 + 480).status == 0
    binding = ha.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.via, binding.sequence) == (COA2, VIA_UDP, 2)
    assert binding.expires_at == T0 + 480 + 600
    assert events(ha) == [BindingUpdated(binding, first)]  # type: ignore[arg-type]
    assert ha.get_timer() == T0 + 1080

    ha.handle_timer(T0 + 600)  # the old deadline is stale and must not expire the binding
    assert ha.binding_for(HOA) is not None
    assert events(ha) == []


def test_the_binding_expires_exactly_at_its_deadline() -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 1, lifetime=25)
    events(ha)
    assert ha.get_timer() == T0 + 100

    ha.handle_timer(T0 + 99.999)
    assert ha.binding_for(HOA) is not None
    assert events(ha) == []

    ha.handle_timer(T0 + 100)
    assert ha.binding_for(HOA) is None
    assert ha.bindings(include_deleted=True) == []
    assert events(ha) == [BindingRemoved(HOA, "expired")]
    assert ha.get_timer() is None
    assert ha.statistics()["expirations"] == 1


def test_a_bu_arriving_after_the_deadline_sees_the_binding_expired_first() -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 1, lifetime=25)
    events(ha)
    assert register(ha, stamp, T0 + 100, 2) == 0
    assert [type(e) for e in events(ha)] == [BindingRemoved, BindingAdded]


# -- RFC 6275 §9.5.1 sequence window --------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "received", "accepted"),
    [
        (15, 16, True),
        (15, 32782, True),
        (15, 14, False),
        (15, 15, False),
        (15, 32783, False),
        (15, 32784, False),
        (32783, 32784, True),
        (32783, 14, True),
        (32783, 15, False),
        (32783, 16, False),
        (32783, 32782, False),
        (32783, 32783, False),
    ],
)
def test_the_sequence_window_follows_rfc6275_section_9_5_1(
    last: int, received: int, accepted: bool
) -> None:
    ha, stamp = make_ha(), Stamper()
    assert register(ha, stamp, T0, last) == 0
    events(ha)

    ha.receive_datagram(T0 + 1, build_bu(received, stamp(T0 + 1), coa=COA2), HOA, HA, VIA)
    ba = single_ba(ha, T0 + 1)
    binding = ha.binding_for(HOA)
    assert binding is not None
    if accepted:
        assert (ba.status, ba.sequence) == (0, received)
        assert (binding.sequence, binding.care_of_address) == (received, COA2)
    else:
        # The BA carries the last accepted sequence number; the binding is untouched.
        assert (ba.status, ba.sequence) == (135, last)
        assert (binding.sequence, binding.care_of_address) == (last, COA)
        assert events(ha) == []


def test_a_135_still_echoes_the_mesg_id() -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 50)
    ts = stamp(T0 + 1)
    ha.receive_datagram(T0 + 1, build_bu(49, ts), HOA, HA, VIA)
    ba = single_ba(ha, T0 + 1)
    assert (ba.status, ba.sequence, mesg_id(ba)) == (135, 50, ts)


def test_without_a_cache_entry_any_sequence_number_is_accepted() -> None:
    ha, stamp = make_ha(), Stamper()
    assert register(ha, stamp, T0, 0) == 0


# -- authentication (RFC 4285) --------------------------------------------------------------


def test_a_wrong_key_is_dropped_silently_and_changes_nothing() -> None:
    """Attack (issue 12): a forged BU used to be answered with a BA 146 signed with the real
    SA; with the next sequence number guessed, that killed the genuine registration. Now it
    gets nothing back, and costs the HA no signature."""
    ha, stamp = make_ha(), Stamper()
    ts = stamp(T0)
    ha.receive_datagram(T0, build_bu(1, ts, key=OTHER_KEY), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.bindings() == []
    assert events(ha) == []
    assert ha.statistics()["bad_auth"] == 1
    assert "rejected_146" not in ha.statistics()

    # A forged BU does not spend the timestamp: the genuine MN may still use it.
    ha.receive_datagram(T0, build_bu(1, ts), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0


def test_a_tampered_alternate_care_of_address_fails_authentication() -> None:
    ha, stamp = make_ha(), Stamper()
    data = bytearray(build_bu(1, stamp(T0), coa=COA))
    index = bytes(data).index(COA.packed)
    data[index + 15] ^= 1  # the CoA is covered by the MAC; the checksum is redone below
    data[4:6] = b"\0\0"
    ha.receive_datagram(T0, fill_mh_checksum(bytes(data), HOA, HA), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []  # dropped silently
    assert ha.bindings() == [] and ha.statistics()["bad_auth"] == 1


def test_an_sa_may_only_register_its_own_home_address() -> None:
    other_hoa = IPv6Address("2001:db8:1::200")
    ha = make_ha(
        security_associations=(
            SecurityAssociation(SPI, KEY, HOA),
            SecurityAssociation(SPI + 1, OTHER_KEY, other_hoa),
        )
    )
    stamp = Stamper()
    # Valid MAC with the SA of HOA, but claiming other_hoa (RFC 6275 §15: HoA theft).
    data = build_bu(1, stamp(T0), hoa=other_hoa)
    ha.receive_datagram(T0, data, other_hoa, HA, VIA)
    assert ha.datagrams_to_send(T0) == []  # dropped silently
    assert ha.bindings() == []
    assert ha.statistics()["hoa_mismatch"] == 1


def test_a_bu_without_the_auth_option_is_dropped_silently() -> None:
    ha, stamp = make_ha(), Stamper()
    bu = BindingUpdate(
        sequence=1,
        lifetime=10,
        ack=True,
        home=True,
        options=(AlternateCareOfAddress(COA), MesgId(stamp(T0))),
    )
    ha.receive_datagram(T0, encode_mh(bu, HOA, HA), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.statistics()["drop_missing_auth"] == 1


def test_an_unknown_spi_is_dropped_silently() -> None:
    ha, stamp = make_ha(), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), spi=SPI + 9), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.statistics()["drop_unknown_spi"] == 1


def test_garbage_and_other_message_types_are_dropped_by_reason() -> None:
    ha = make_ha()
    ha.receive_datagram(T0, b"\x3b\x00", HOA, HA, VIA)
    good = build_bu(1, ntp_from_unix(T0))
    ha.receive_datagram(T0, good[:4] + bytes([good[4] ^ 0xFF]) + good[5:], HOA, HA, VIA)
    ha.receive_datagram(T0, encode_mh(BindingRefreshRequest(), HOA, HA), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []
    stats = ha.statistics()
    assert stats["drop_truncated"] == 1
    assert stats["drop_bad_checksum"] == 1
    assert stats["drop_unexpected_mh_type"] == 1


# -- replay protection (RFC 4285 Mesg-ID) ---------------------------------------------------


def test_a_missing_mesg_id_is_answered_with_145() -> None:
    ha = make_ha()
    ha.receive_datagram(T0, build_bu(1, None), HOA, HA, VIA)
    ba = single_ba(ha, T0)
    assert (ba.status, ba.sequence) == (145, 1)
    assert not any(isinstance(o, MesgId) for o in ba.options)
    assert ha.bindings() == []


@pytest.mark.parametrize("skew", [-7.5, 7.5, -3600.0])
def test_a_timestamp_outside_the_window_gets_144_with_the_ha_clock(skew: float) -> None:
    ha = make_ha(timestamp_window_s=7.0)
    mn_ts = ntp_from_unix(T0 + skew) + 0x1234
    ha.receive_datagram(T0, build_bu(1, mn_ts), HOA, HA, VIA)
    ba = single_ba(ha, T0)
    assert (ba.status, ba.sequence) == (144, 1)
    echoed = mesg_id(ba)
    # RFC 4285: the HA's time in the high 32 bits, the MN's low 32 bits unchanged.
    assert echoed >> 32 == ntp_from_unix(T0) >> 32
    assert echoed & 0xFFFFFFFF == mn_ts & 0xFFFFFFFF
    assert abs(unix_from_ntp(echoed & ~0xFFFFFFFF) - T0) < 1
    assert ha.bindings() == []


@pytest.mark.parametrize("skew", [-6.5, 6.5])
def test_a_timestamp_inside_the_window_is_accepted(skew: float) -> None:
    ha = make_ha(timestamp_window_s=7.0)
    ha.receive_datagram(T0, build_bu(1, ntp_from_unix(T0 + skew)), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0


def test_a_replayed_bu_gets_144_even_with_a_newer_sequence_number() -> None:
    ha, stamp = make_ha(), Stamper()
    ts = stamp(T0)
    ha.receive_datagram(T0, build_bu(1, ts), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0

    ha.receive_datagram(T0 + 1, build_bu(1, ts), HOA, HA, VIA)  # exact replay
    assert single_ba(ha, T0 + 1).status == 144
    ha.receive_datagram(T0 + 1, build_bu(2, ts), HOA, HA, VIA)  # equal timestamp
    assert single_ba(ha, T0 + 1).status == 144
    ha.receive_datagram(T0 + 1, build_bu(3, ts - 1), HOA, HA, VIA)  # older timestamp
    assert single_ba(ha, T0 + 1).status == 144
    binding = ha.binding_for(HOA)
    assert binding is not None
    assert binding.sequence == 1
    assert ha.statistics()["rejected_144"] == 3


def test_timestamps_are_tracked_per_security_association() -> None:
    other_hoa = IPv6Address("2001:db8:1::200")
    ha = make_ha(
        security_associations=(
            SecurityAssociation(SPI, KEY, HOA),
            SecurityAssociation(SPI + 1, OTHER_KEY, other_hoa),
        )
    )
    ts = ntp_from_unix(T0)
    ha.receive_datagram(T0, build_bu(1, ts), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0
    data = build_bu(1, ts, hoa=other_hoa, key=OTHER_KEY, spi=SPI + 1)
    ha.receive_datagram(T0, data, other_hoa, HA, VIA)
    assert ha.datagrams_to_send(T0)[0].dst == other_hoa
    assert len(ha.bindings()) == 2


# -- home registration rules ----------------------------------------------------------------


def test_a_bu_without_the_h_flag_and_without_nonce_indices_is_silently_discarded() -> None:
    """RFC 6275 §9.5.1: without the H flag a BU must carry Nonce Indices (a correspondent
    registration); one that lacks them fails the tests and is discarded without a BA."""
    ha, stamp = make_ha(), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), home=False), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == [] and ha.bindings() == []
    assert ha.statistics()["drop_correspondent_bu_without_nonce_indices"] == 1


def test_a_bu_without_the_h_flag_naming_nonce_indices_gets_138() -> None:
    """RFC 6275 §9.5.1: nonce indices the node does not recognise get 136, 137 or 138; a home
    agent runs no return routability and recognises none: 138, and nothing is cached."""
    ha, stamp = make_ha(), Stamper()
    data = build_bu(1, stamp(T0), home=False, extra=(NonceIndices(1, 2),))
    ha.receive_datagram(T0, data, HOA, HA, VIA)
    assert single_ba(ha, T0).status == 138
    assert ha.bindings() == []


def test_a_home_address_outside_the_home_prefix_gets_132() -> None:
    outside = IPv6Address("2001:db8:99::1")
    ha = make_ha(security_associations=(SecurityAssociation(SPI, KEY, outside),))
    ha.receive_datagram(T0, build_bu(1, ntp_from_unix(T0), hoa=outside), outside, HA, VIA)
    out = ha.datagrams_to_send(T0)
    assert single_ba_from(out[0]).status == 132
    assert ha.bindings() == []


# -- de-registration ------------------------------------------------------------------------


def test_deregistering_an_unknown_home_address_gets_133() -> None:
    ha, stamp = make_ha(), Stamper()
    assert register(ha, stamp, T0, 1, lifetime=0, coa=HOA) == 133
    assert events(ha) == []
    assert ha.statistics()["rejected_133"] == 1


@pytest.mark.parametrize(
    ("lifetime", "coa"), [(0, HOA), (0, COA), (100, HOA)], ids=["home", "lifetime0", "coa=hoa"]
)
def test_deregistration_removes_the_binding_and_holds_the_entry_for_10_s(
    lifetime: int, coa: IPv6Address
) -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 10)
    events(ha)

    ha.receive_datagram(
        T0 + 5, build_bu(11, stamp(T0 + 5), lifetime=lifetime, coa=coa), HOA, HA, VIA
    )
    ba = single_ba(ha, T0 + 5)
    assert (ba.status, ba.sequence, ba.lifetime) == (0, 11, 0)
    assert events(ha) == [BindingRemoved(HOA, "deregistered")]
    assert ha.binding_for(HOA) is None
    (held,) = ha.bindings(include_deleted=True)
    assert held.state is BindingState.DELETED
    assert held.expires_at == T0 + 5 + MAX_DELETE_BCE_TIMEOUT
    assert ha.get_timer() == T0 + 15

    # A delayed older BU (its old timestamp) is refused by RFC 4285 §6, not by the held entry.
    old = build_bu(10, ntp_from_unix(T0), lifetime=150)
    ha.receive_datagram(T0 + 9, old, HOA, HA, VIA)
    assert single_ba(ha, T0 + 9).status == 144
    assert ha.binding_for(HOA) is None

    ha.handle_timer(T0 + 14.99)
    assert len(ha.bindings(include_deleted=True)) == 1
    ha.handle_timer(T0 + 15)
    assert ha.bindings(include_deleted=True) == []
    assert events(ha) == []  # no second "removed" event when the entry is purged
    assert ha.get_timer() is None

    # With no binding, any sequence number is accepted (RFC 6275 §9.5.1).
    assert register(ha, stamp, T0 + 16, 10) == 0
    assert [type(e) for e in events(ha)] == [BindingAdded]


def test_a_newer_registration_revives_a_held_entry() -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 10)
    register(ha, stamp, T0 + 1, 11, lifetime=0)
    events(ha)
    assert register(ha, stamp, T0 + 2, 12) == 0
    assert [type(e) for e in events(ha)] == [BindingAdded]
    binding = ha.binding_for(HOA)
    assert binding is not None
    assert binding.expires_at == T0 + 602
    assert ha.get_timer() == T0 + 602  # the 10 s purge deadline is stale now


def test_deregistering_twice_gets_133_the_second_time() -> None:
    ha, stamp = make_ha(), Stamper()
    register(ha, stamp, T0, 10)
    assert register(ha, stamp, T0 + 1, 11, lifetime=0) == 0
    assert register(ha, stamp, T0 + 2, 12, lifetime=0) == 133
    # The held entry is no binding: no sequence window, the same number is answered 133.
    assert register(ha, stamp, T0 + 3, 12, lifetime=0) == 133


# -- configuration and inspection -----------------------------------------------------------


def test_config_rejects_duplicate_spis_and_bad_limits() -> None:
    sa = SecurityAssociation(SPI, KEY, HOA)
    with pytest.raises(ValueError, match="duplicate SPI"):
        HaCoreConfig(HA, PREFIX, (sa, sa))
    with pytest.raises(ValueError, match="max_lifetime_s"):
        HaCoreConfig(HA, PREFIX, (sa,), max_lifetime_s=300_000)
    with pytest.raises(ValueError, match="timestamp_window_s"):
        HaCoreConfig(HA, PREFIX, (sa,), timestamp_window_s=0)


def test_keys_never_appear_in_reprs() -> None:
    assert KEY.hex() not in repr(SecurityAssociation(SPI, KEY, HOA))
    assert repr(KEY) not in repr(HaCoreConfig(HA, PREFIX, (SecurityAssociation(SPI, KEY, HOA),)))


def test_statistics_report_sizes_and_counters() -> None:
    ha, stamp = make_ha(), Stamper()
    assert ha.statistics() == {"bindings": 0, "deleted_entries": 0}
    register(ha, stamp, T0, 1)
    register(ha, stamp, T0 + 1, 1)
    register(ha, stamp, T0 + 2, 2, lifetime=0)
    stats = ha.statistics()
    assert stats["accepted"] == 2
    assert stats["rejected_135"] == 1
    assert stats["registrations"] == 1
    assert stats["deregistrations"] == 1
    assert (stats["bindings"], stats["deleted_entries"]) == (0, 1)
