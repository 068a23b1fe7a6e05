"""Duplicate Address Detection before a first registration on a home link (RFC 6275 §10.3.1),
and a mobile node de-registering from its home link (§10.3.2, §11.5.5), in the home agent
core with virtual time."""

from __future__ import annotations

from ipaddress import IPv6Address

from coretest_kit import COA, HA, HOA, VIA, Stamper, build_bu, decode, events, make_ha, single_ba
from hypothesis import given
from hypothesis import strategies as st

from mipnode.core.dad import DAD_WAIT_S, PendingDad, dad_targets, link_local_of
from mipnode.core.ha import BindingAdded, BindingRemoved, DadStarted, HomeAgentCore
from mipnode.wire.mh import BindingAck

T0 = 1000.0
MAC = bytes.fromhex("020000000001")
LINK_LOCAL = IPv6Address("fe80::100")  # HOA is 2001:db8:1::100


def first_bu(ha: HomeAgentCore, stamp: Stamper, now: float, sequence: int, **kw: object) -> None:
    ha.receive_datagram(now, build_bu(sequence, stamp(now), **kw), HOA, HA, VIA)  # type: ignore[arg-type]


def test_the_first_ba_waits_for_dad_and_comes_when_nobody_answered() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    assert ha.datagrams_to_send(T0) == []  # no BA yet
    assert events(ha) == [DadStarted(HOA, (HOA,))]
    assert ha.binding_for(HOA) is None
    assert ha.get_timer() == T0 + DAD_WAIT_S

    ha.handle_timer(T0 + DAD_WAIT_S - 0.01)
    assert ha.datagrams_to_send(T0 + DAD_WAIT_S - 0.01) == []
    ha.handle_timer(T0 + DAD_WAIT_S)
    ba = single_ba(ha, T0 + DAD_WAIT_S)
    assert (ba.status, ba.sequence) == (0, 1)
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.registered_at == T0 + DAD_WAIT_S
    assert binding.defended == (HOA,)
    assert [type(e) for e in events(ha)] == [BindingAdded]
    assert ha.statistics()["dad_passed"] == 1


def test_a_conflict_refuses_the_registration_with_134() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    events(ha)
    assert ha.dad_conflict(T0 + 0.3, HOA)
    ba = single_ba(ha, T0 + 0.3)
    assert (ba.status, ba.sequence) == (134, 1)
    assert ha.binding_for(HOA) is None
    ha.handle_timer(T0 + 5)  # the run is over: nothing more comes
    assert ha.datagrams_to_send(T0 + 5) == [] and events(ha) == []
    assert not ha.dad_conflict(T0 + 5, HOA)  # nobody is probing it any more
    assert ha.statistics()["dad_failed"] == 1


def test_with_the_l_flag_the_link_local_address_is_probed_and_defended_too() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1, link_local=True)
    assert events(ha) == [DadStarted(HOA, (HOA, LINK_LOCAL))]
    assert ha.dad_conflict(T0 + 0.5, LINK_LOCAL)  # §10.3.1: "or an associated link local"
    assert single_ba(ha, T0 + 0.5).status == 134

    first_bu(ha, stamp, T0 + 2, 2, link_local=True)
    events(ha)
    ha.handle_timer(T0 + 2 + DAD_WAIT_S)
    assert single_ba(ha, T0 + 3).status == 0
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.defended == (HOA, LINK_LOCAL)


def test_a_retransmission_during_dad_is_answered_once_with_its_own_sequence() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    first_bu(ha, stamp, T0 + 0.5, 2)
    assert events(ha) == [DadStarted(HOA, (HOA,))]  # one run, one solicitation
    ha.handle_timer(T0 + DAD_WAIT_S)
    ba = single_ba(ha, T0 + DAD_WAIT_S)
    assert (ba.status, ba.sequence) == (0, 2)


def test_refreshes_and_re_registrations_of_a_binding_need_no_dad() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    ha.handle_timer(T0 + DAD_WAIT_S)
    single_ba(ha, T0 + DAD_WAIT_S)
    events(ha)
    first_bu(ha, stamp, T0 + 10, 2)
    assert single_ba(ha, T0 + 10).status == 0  # at once
    assert not any(isinstance(e, DadStarted) for e in events(ha))


def test_a_de_registration_during_dad_ends_it() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    first_bu(ha, stamp, T0 + 0.2, 2, lifetime=0)
    assert single_ba(ha, T0 + 0.2).status == 133  # nothing was registered
    ha.handle_timer(T0 + DAD_WAIT_S)
    assert ha.datagrams_to_send(T0 + DAD_WAIT_S) == [] and ha.binding_for(HOA) is None
    assert ha.statistics()["dad_cancelled"] == 1


def test_without_a_home_link_there_is_no_dad() -> None:
    ha, stamp = make_ha(), Stamper()
    first_bu(ha, stamp, T0, 1)
    assert single_ba(ha, T0).status == 0
    assert not any(isinstance(e, DadStarted) for e in events(ha))


def _registered(ha: HomeAgentCore, stamp: Stamper) -> None:
    first_bu(ha, stamp, T0, 10)
    ha.handle_timer(T0 + DAD_WAIT_S)
    single_ba(ha, T0 + DAD_WAIT_S)
    events(ha)


def _from_home(
    ha: HomeAgentCore, stamp: Stamper, now: float, sequence: int, **kw: object
) -> BindingAck:
    """§11.5.5: from the home address on the home link, care-of address = home address."""
    data = build_bu(sequence, stamp(now), coa=None, mac_coa=HOA, **kw)  # type: ignore[arg-type]
    ha.receive_datagram(now, data, HOA, HA, VIA, link_address=MAC)
    (out,) = ha.datagrams_to_send(now)
    assert out.link_address == MAC and (out.src, out.dst, out.care_of) == (HA, HOA, None)
    ba = decode(out)
    assert isinstance(ba, BindingAck)
    return ba


def test_a_mobile_node_back_home_de_registers_and_its_answers_go_to_its_link_address() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    _registered(ha, stamp)
    refused = _from_home(ha, stamp, T0 + 5, 3, lifetime=0)  # an old sequence number
    assert (refused.status, refused.sequence) == (135, 10)
    accepted = _from_home(ha, stamp, T0 + 6, 11, lifetime=0)
    assert (accepted.status, accepted.lifetime) == (0, 0)
    assert ha.binding_for(HOA) is None
    assert events(ha) == [BindingRemoved(HOA, "deregistered")]


def test_a_mobile_node_on_the_home_link_cannot_register_a_care_of_address_there() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), coa=COA), HOA, HA, VIA, link_address=MAC)
    (out,) = ha.datagrams_to_send(T0)
    ba = decode(out)
    assert isinstance(ba, BindingAck) and ba.status == 129 and out.link_address == MAC
    assert ha.binding_for(HOA) is None and events(ha) == []


def test_link_local_of_keeps_the_interface_identifier() -> None:
    assert link_local_of(IPv6Address("2001:db8:1:2:a:b:c:d")) == IPv6Address("fe80::a:b:c:d")
    assert dad_targets(HOA, False) == (HOA,)


@given(
    st.lists(st.tuples(st.sampled_from("scxd"), st.integers(0, 3), st.floats(0, 0.5)), max_size=40)
)
def test_pending_dad_ends_every_run_once(steps: list[tuple[str, int, float]]) -> None:
    """Whatever the order of starts, conflicts, cancels and time, each started run ends
    exactly once (by a conflict, a cancel or its deadline) and nothing is left behind."""
    dad: PendingDad[int] = PendingDad(1.0)
    addresses = [IPv6Address(f"2001:db8::{i + 1}") for i in range(4)]
    now, started, ended = 0.0, 0, 0
    for op, i, step in steps:
        now += step
        hoa = addresses[i]
        if op == "s":
            new_run = hoa not in dad
            dad.start(now, hoa, i, dad_targets(hoa, i % 2 == 0))
            started += new_run
        elif op == "c":
            ended += dad.conflict(link_local_of(hoa) if i % 2 == 0 else hoa) is not None
        elif op == "x":
            ended += dad.cancel(hoa) is not None
        else:
            ended += len(list(dad.due(now)))
    ended += len(list(dad.due(now + 2.0)))
    assert started == ended
    assert len(dad) == 0 and dad.next_deadline() is None
    assert all(
        dad.conflict(a) is None and dad.conflict(link_local_of(a)) is None for a in addresses
    )


def test_a_retransmission_that_adds_the_l_flag_gets_a_full_wait_for_the_new_address() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1)
    first_bu(ha, stamp, T0 + 0.9, 2, link_local=True)
    assert events(ha) == [DadStarted(HOA, (HOA,)), DadStarted(HOA, (LINK_LOCAL,))]
    ha.handle_timer(T0 + DAD_WAIT_S)
    assert ha.datagrams_to_send(T0 + DAD_WAIT_S) == []  # the link-local one had 0.1 s
    assert ha.dad_conflict(T0 + 1.5, LINK_LOCAL)
    assert single_ba(ha, T0 + 1.5).status == 134
    assert ha.statistics()["dad_started"] == 1  # one run, whatever it probed


def test_a_retransmission_without_the_l_flag_stops_probing_the_link_local_address() -> None:
    ha, stamp = make_ha(home_link=True), Stamper()
    first_bu(ha, stamp, T0, 1, link_local=True)
    first_bu(ha, stamp, T0 + 0.5, 2)
    assert not ha.dad_conflict(T0 + 0.6, LINK_LOCAL)  # no longer ours to probe
    ha.handle_timer(T0 + DAD_WAIT_S)
    ba = single_ba(ha, T0 + DAD_WAIT_S)
    assert (ba.status, ba.sequence) == (0, 2)
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.defended == (HOA,)
