"""Replay state shared by the nodes of a home-agent cluster (HomeAgentCore.replication_record /
observe_replica; issue 14, "nothing replayed"). RFC 4285's MAC does not cover the home agent's
address, so a Binding Update captured on its way to one node authenticates at every node: only
the replicated Mesg-ID (and sequence number) can refuse it there."""

from __future__ import annotations

import json
from typing import Any

import pytest
from coretest_kit import (
    HA,
    HOA,
    KEY,
    SPI,
    VIA,
    VIA_UDP,
    Stamper,
    build_bu,
    decode,
    events,
    make_ha,
    single_ba,
)

from mipnode.core.ha import BindingAdded, BindingRemoved, HomeAgentCore
from mipnode.wire.mh import BindingRefreshRequest

T0 = 1000.0


def bu(ha: HomeAgentCore, now: float, data: bytes, via: Any = VIA) -> int:
    ha.receive_datagram(now, data, HOA, HA, via)
    return int(single_ba(ha, now).status)


def through_etcd(record: object) -> Any:
    """What one node writes and another reads back from the watch."""
    return json.loads(json.dumps(record))


def accepted_on_a(stamp: Stamper, seq: int = 7) -> tuple[HomeAgentCore, bytes]:
    a = make_ha()
    captured = build_bu(seq, stamp(T0))
    assert bu(a, T0, captured) == 0
    events(a)
    return a, captured


def test_a_bu_accepted_by_one_node_and_replayed_to_another_is_refused() -> None:
    stamp = Stamper()
    a, captured = accepted_on_a(stamp)
    b = make_ha()
    record = a.replication_record(HOA)
    assert record is not None
    assert b.observe_replica(through_etcd(record)) is True
    assert bu(b, T0 + 1, captured, VIA_UDP) == 144  # within RFC 4285's 7 s window
    assert b.binding_for(HOA) is None
    assert b.statistics()["timestamp_not_increasing"] == 1


def test_without_the_replica_the_other_node_would_take_the_replay() -> None:
    """The control: the same replay to a node that saw nothing is accepted."""
    stamp = Stamper()
    _, captured = accepted_on_a(stamp)
    assert bu(make_ha(), T0 + 1, captured, VIA_UDP) == 0


def test_the_mobile_nodes_next_bu_is_still_accepted_anywhere() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    b = make_ha()
    b.observe_replica(through_etcd(a.replication_record(HOA)))
    assert bu(b, T0 + 2, build_bu(8, stamp(T0 + 2))) == 0


def test_a_held_entry_takes_on_the_newer_sequence_number() -> None:
    stamp = Stamper()
    b = make_ha()
    assert bu(b, T0, build_bu(100, stamp(T0))) == 0
    a = make_ha()
    assert bu(a, T0 + 1, build_bu(200, stamp(T0 + 1))) == 0
    assert b.observe_replica(through_etcd(a.replication_record(HOA))) is True
    b.receive_datagram(T0 + 2, build_bu(150, stamp(T0 + 2)), HOA, HA, VIA)
    ba = single_ba(b, T0 + 2)
    assert (ba.status, ba.sequence) == (135, 200)


def test_an_older_replica_changes_nothing() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    old = through_etcd(a.replication_record(HOA))
    assert bu(a, T0 + 1, build_bu(8, stamp(T0 + 1))) == 0
    b = make_ha()
    assert b.observe_replica(through_etcd(a.replication_record(HOA))) is True
    version = b.state_version
    assert b.observe_replica(old) is False
    assert b.state_version == version


def test_a_record_carries_no_key_and_none_for_an_unknown_address() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    record = a.replication_record(HOA)
    assert record is not None and record["timestamp"]["spi"] == SPI
    text = json.dumps(record)
    assert KEY.hex() not in text and "key" not in text
    assert set(record) == {"version", "binding", "timestamp"}
    assert make_ha().replication_record(HOA) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(version=2),
        lambda r: r.update(binding="x"),
        lambda r: r["binding"].update(home_address="not an address"),
        lambda r: r.update(timestamp=[1]),
        lambda r: r["timestamp"].update(mesg_id=-1),
        lambda r: r["timestamp"].update(spi=2**32),
    ],
)
def test_a_malformed_record_raises_and_changes_nothing(mutate: Any) -> None:
    stamp = Stamper()
    a, captured = accepted_on_a(stamp)
    record = through_etcd(a.replication_record(HOA))
    mutate(record)
    b = make_ha()
    with pytest.raises(ValueError):
        b.observe_replica(record)
    assert bu(b, T0 + 1, captured) == 0  # nothing was taken on


# -- takeover: the node that took the home-agent address over serves the replicated bindings --


def test_a_node_that_takes_over_serves_the_binding_and_asks_for_a_registration() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    b = make_ha(require_protection=True)
    assert b.adopt_replica(T0 + 1, through_etcd(a.replication_record(HOA))) is True
    served = b.binding_for(HOA)
    assert served is not None and served.via == VIA
    (added,) = events(b)
    assert isinstance(added, BindingAdded) and added.binding.via == VIA
    # The ESP keys stayed with the node that died: a BRR asks the MN for a new registration.
    (brr,) = b.datagrams_to_send(T0 + 1)
    assert isinstance(decode(brr), BindingRefreshRequest)
    assert b.statistics()["adopted"] == 1


def test_with_handed_over_sas_an_adopted_binding_needs_no_new_registration() -> None:
    # A clean hand-over brought the binding's ESP SAs along (drivers/sa_handover.py): the
    # mobile node goes on as it was, so no BRR (it would cost a round trip and a datagram).
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    b = make_ha(require_protection=True)
    assert b.adopt_replica(T0 + 1, through_etcd(a.replication_record(HOA)), keyed=True)
    assert b.datagrams_to_send(T0 + 1) == []
    assert b.binding_for(HOA) is not None


def test_without_protection_an_adopted_binding_is_served_without_a_new_registration() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    b = make_ha()
    assert b.adopt_replica(T0 + 1, through_etcd(a.replication_record(HOA))) is True
    assert b.datagrams_to_send(T0 + 1) == []
    assert b.binding_for(HOA) is not None


def test_an_adopted_binding_keeps_its_expiry_and_refuses_the_replay() -> None:
    stamp = Stamper()
    a, captured = accepted_on_a(stamp)
    expiry = a.binding_for(HOA).expires_at  # type: ignore[union-attr]
    b = make_ha()
    b.adopt_replica(T0 + 1, through_etcd(a.replication_record(HOA)))
    assert b.binding_for(HOA).expires_at == expiry  # type: ignore[union-attr]
    b.datagrams_to_send(T0 + 1)
    assert bu(b, T0 + 2, captured, VIA_UDP) == 144
    assert b.binding_for(HOA).via == VIA  # type: ignore[union-attr]


def test_an_expired_record_is_not_adopted() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    record = through_etcd(a.replication_record(HOA))
    b = make_ha()
    assert b.adopt_replica(T0 + record["binding"]["lifetime_s"] + 1, record) is False
    assert b.binding_for(HOA) is None and events(b) == []
    assert b.statistics()["adopt_expired"] == 1


def test_a_record_from_a_clock_ahead_grants_no_more_than_this_node_would() -> None:
    # The absolute expiry is trusted only as far as this node's own maximum lifetime: a
    # replica from a node whose clock ran ahead cannot lengthen the binding.
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    record = through_etcd(a.replication_record(HOA))
    record["binding"]["expires_at"] += 100_000
    b = make_ha(max_lifetime_s=60)
    b.adopt_replica(T0 + 1, record)
    assert b.binding_for(HOA).expires_at <= T0 + 1 + 60  # type: ignore[union-attr]


def test_releasing_stops_serving_but_keeps_the_replay_state() -> None:
    stamp = Stamper()
    a, captured = accepted_on_a(stamp)
    assert a.release_all() == 1
    (removed,) = events(a)
    assert isinstance(removed, BindingRemoved) and removed.reason == "released"
    assert a.binding_for(HOA) is None
    assert bu(a, T0 + 1, captured) == 144  # released, still not fooled by the replay


def test_the_changed_home_addresses_are_reported_once() -> None:
    stamp = Stamper()
    a, _ = accepted_on_a(stamp)
    assert a.take_changed() == {HOA}
    assert a.take_changed() == set()
    assert bu(a, T0 + 1, build_bu(8, stamp(T0 + 1))) == 0  # a refresh changes the record too
    assert a.take_changed() == {HOA}
    a.handle_timer(T0 + 10_000)  # expired
    assert a.take_changed() == {HOA} and a.replication_record(HOA) is None


def test_a_deregistrations_echo_does_not_raise_the_registration_that_followed() -> None:
    """RFC 6275 §9.5.1: after a de-registration any sequence number is taken. The echo of the
    de-registration's record (seq 100) must not lift the new registration's (seq 5) to 100,
    or its next refresh would get 135."""
    stamp = Stamper()
    a, _ = accepted_on_a(stamp, seq=99)
    assert bu(a, T0 + 1, build_bu(100, stamp(T0 + 1), lifetime=0)) == 0
    echo = through_etcd(a.replication_record(HOA))
    assert echo["binding"]["state"] == "deleted"
    assert bu(a, T0 + 2, build_bu(5, stamp(T0 + 2))) == 0  # any number after it
    a.observe_replica(echo)  # the watch brings the de-registration's record back
    binding = a.binding_for(HOA)
    assert binding is not None and binding.sequence == 5
    assert bu(a, T0 + 3, build_bu(6, stamp(T0 + 3))) == 0
