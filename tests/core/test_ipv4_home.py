"""IPv4 home addresses (DSMIPv6, RFC 5555 §3.1.1, §3.2.1): the home agent's pool
(core/ipv4_home.py) with every status of the IPv4 Address Acknowledgement, the home agent core
answering the option in its BA, and the mobile node core asking for an address and keeping the
one it was given."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address

import pytest
from coretest_kit import (
    COA,
    HA,
    HOA,
    KEY,
    SPI,
    VIA,
    Stamper,
    build_ba,
    build_bu,
    events,
    make_ha,
    make_mn,
    single_ba,
    single_bu,
)

from mipnode.core.ha import SecurityAssociation
from mipnode.core.ipv4_home import Ipv4HomePool
from mipnode.core.mn import Registered
from mipnode.wire.mh import Ipv4AckStatus, Ipv4AddressAck, Ipv4HomeAddress

POOL = IPv4Network("192.0.2.0/29")  # hosts .1 - .6
ANY = Ipv4HomeAddress(IPv4Address("0.0.0.0"))
MN1, MN2, MN3 = (IPv6Address(f"2001:db8:1::{i}") for i in (100, 101, 102))
T0 = 1000.0


def ask(address: str = "0.0.0.0", length: int = 32, p: bool = False) -> Ipv4HomeAddress:
    return Ipv4HomeAddress(IPv4Address(address), length, p)


def test_dynamic_addresses_are_the_lowest_free_and_stay_with_their_node() -> None:
    pool = Ipv4HomePool(POOL)
    assert pool.assign(MN1, ANY) == Ipv4AddressAck(0, IPv4Address("192.0.2.1"), 32)
    assert pool.assign(MN2, ANY).address == IPv4Address("192.0.2.2")
    assert pool.assign(MN1, ANY).address == IPv4Address("192.0.2.1")  # asks again: the same
    assert pool.assign(MN1, ask("192.0.2.1")).status == 0  # asks for the one it had
    pool.release(MN1)
    assert pool.assign(MN3, ANY).address == IPv4Address("192.0.2.1")  # back in the pool


def test_a_static_address_is_reserved_for_its_node_only() -> None:
    pool = Ipv4HomePool(POOL, {MN2: IPv4Address("192.0.2.1")})
    assert pool.assign(MN1, ANY).address == IPv4Address("192.0.2.2")  # .1 is MN2's
    assert pool.assign(MN2, ANY).address == IPv4Address("192.0.2.1")
    assert pool.assign(MN2, ask("192.0.2.5")).status == Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS
    assert pool.assign(MN3, ask("192.0.2.1")).status == Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS


@pytest.mark.parametrize(
    ("asked", "status"),
    [
        (ask("198.51.100.1"), Ipv4AckStatus.INVALID_IPV4_ADDRESS),  # outside the prefix
        (ask("192.0.2.0"), Ipv4AckStatus.INVALID_IPV4_ADDRESS),  # its network address
        (ask("192.0.2.7"), Ipv4AckStatus.INVALID_IPV4_ADDRESS),  # its broadcast address
        (ask(length=24), Ipv4AckStatus.INVALID_IPV4_ADDRESS),  # a prefix without P
        (ask(length=24, p=True), Ipv4AckStatus.PREFIX_ALLOCATION_UNAUTHORIZED),
    ],
)
def test_what_no_node_may_have_is_refused_and_nothing_is_given(
    asked: Ipv4HomeAddress, status: Ipv4AckStatus
) -> None:
    pool = Ipv4HomePool(POOL)
    assert pool.assign(MN1, asked) == Ipv4AddressAck(status, IPv4Address("0.0.0.0"), 0)
    assert pool.of(MN1) is None


def test_another_nodes_address_is_refused_and_a_used_up_pool_says_so() -> None:
    pool = Ipv4HomePool(IPv4Network("192.0.2.0/30"))  # hosts .1 and .2
    assert pool.assign(MN1, ANY).status == 0
    assert pool.assign(MN2, ask("192.0.2.1")).status == Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS
    assert pool.assign(MN2, ANY).status == 0
    used_up = pool.assign(MN3, ANY)
    assert used_up.status == Ipv4AckStatus.DYNAMIC_IPV4_HOME_ADDRESS_NOT_AVAILABLE


def test_a_home_agent_without_ipv4_home_addresses_prohibits() -> None:
    assert Ipv4HomePool(None).assign(MN1, ANY).status == Ipv4AckStatus.ADMINISTRATIVELY_PROHIBITED


# -- the home agent core answers the option -------------------------------------------------


def register(ha: object, stamp: Stamper, asked: Ipv4HomeAddress | None, seq: int = 1) -> object:
    extra = () if asked is None else (asked,)
    data = build_bu(seq, stamp(T0 + seq), extra=extra)
    ha.receive_datagram(T0 + seq, data, HOA, HA, VIA)  # type: ignore[attr-defined]
    return single_ba(ha, T0 + seq)  # type: ignore[arg-type]


def test_the_ba_carries_the_acknowledgement_and_the_binding_the_address() -> None:
    ha = make_ha(ipv4_home_prefix=POOL)
    ba = register(ha, Stamper(), ANY)
    assert ba.status == 0  # type: ignore[attr-defined]
    (ack,) = [o for o in ba.options if isinstance(o, Ipv4AddressAck)]  # type: ignore[attr-defined]
    assert ack == Ipv4AddressAck(0, IPv4Address("192.0.2.1"), 32)
    (added,) = events(ha)
    assert added.binding.ipv4_home_address == IPv4Address("192.0.2.1")


def test_an_ipv4_refusal_leaves_the_ipv6_registration_accepted() -> None:
    ha = make_ha()  # no IPv4 home addresses at all
    ba = register(ha, Stamper(), ANY)
    assert ba.status == 0  # type: ignore[attr-defined]
    (ack,) = [o for o in ba.options if isinstance(o, Ipv4AddressAck)]  # type: ignore[attr-defined]
    assert ack.status == Ipv4AckStatus.ADMINISTRATIVELY_PROHIBITED
    assert ha.binding_for(HOA).ipv4_home_address is None


def test_no_option_no_acknowledgement_and_the_address_goes_back() -> None:
    ha = make_ha(ipv4_home_prefix=POOL)
    stamp = Stamper()
    register(ha, stamp, ANY)
    ba = register(ha, stamp, None, seq=2)
    assert not [o for o in ba.options if isinstance(o, Ipv4AddressAck)]  # type: ignore[attr-defined]
    assert ha.binding_for(HOA).ipv4_home_address is None


def test_the_address_survives_a_restart_and_moves_with_a_cluster_record() -> None:
    ha = make_ha(ipv4_home_prefix=POOL)
    register(ha, Stamper(), ANY)
    state = json.loads(json.dumps(ha.export_state()))
    restored = make_ha(ipv4_home_prefix=POOL)
    assert restored.restore(T0 + 2, state) == 1
    assert restored.binding_for(HOA).ipv4_home_address == IPv4Address("192.0.2.1")
    record = json.loads(json.dumps(ha.replication_record(HOA)))
    assert record["binding"]["ipv4_home_address"] == "192.0.2.1"
    other = make_ha(ipv4_home_prefix=POOL)
    assert other.adopt_replica(T0 + 2, record)
    assert other.binding_for(HOA).ipv4_home_address == IPv4Address("192.0.2.1")
    # A node whose pool does not hold it drops the IPv4 address, never the binding.
    elsewhere = make_ha(ipv4_home_prefix=IPv4Network("198.51.100.0/29"))
    assert elsewhere.adopt_replica(T0 + 2, record)
    assert elsewhere.binding_for(HOA).ipv4_home_address is None
    assert elsewhere.statistics()["adopt_ipv4_home_address_dropped"] == 1


def test_a_static_address_from_the_security_association() -> None:
    sa = SecurityAssociation(SPI, KEY, HOA, ipv4_home_address=IPv4Address("192.0.2.5"))
    ha = make_ha(security_associations=(sa,), ipv4_home_prefix=POOL)
    ba = register(ha, Stamper(), ANY)
    (ack,) = [o for o in ba.options if isinstance(o, Ipv4AddressAck)]  # type: ignore[attr-defined]
    assert ack.address == IPv4Address("192.0.2.5")


# -- the mobile node core asks and keeps -----------------------------------------------------


def test_the_mobile_node_asks_keeps_what_it_got_and_asks_for_that_next() -> None:
    mn = make_mn(ipv4_home_address=IPv4Address("0.0.0.0"))
    mn.register(0.0, COA)
    bu, ts = single_bu(mn, 0.0)
    assert ANY in bu.options
    given = Ipv4AddressAck(0, IPv4Address("192.0.2.3"), 32)
    mn.receive_datagram(0.1, build_ba(0, bu.sequence, ts, extra=(given,)), HA, HOA)
    (registered,) = [e for e in events(mn) if isinstance(e, Registered)]
    assert (registered.ipv4_home_address, registered.ipv4_status) == (IPv4Address("192.0.2.3"), 0)
    mn.register(1.0, COA)  # a refresh or a move asks for the address it has
    again, _ = single_bu(mn, 1.0)
    assert ask("192.0.2.3") in again.options


def test_a_home_agent_that_ignores_the_option_gives_no_address() -> None:
    mn = make_mn(ipv4_home_address=IPv4Address("0.0.0.0"))
    mn.register(0.0, COA)
    bu, ts = single_bu(mn, 0.0)
    mn.receive_datagram(0.1, build_ba(0, bu.sequence, ts), HA, HOA)
    (registered,) = [e for e in events(mn) if isinstance(e, Registered)]
    assert (registered.ipv4_home_address, registered.ipv4_status) == (None, 128)
    assert mn.state == "registered"  # IPv6 goes on
