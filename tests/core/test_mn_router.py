"""A mobile router's registrations (RFC 3963) from the mobile node core (core/mn.py): the R
flag and the Mobile Network Prefix options of its BUs in explicit and implicit mode, a home
agent that answers without R, and a whole exchange with the real home agent core."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from coretest_kit import (
    COA,
    HA,
    HOA,
    KEY,
    SPI,
    VIA,
    build_ba,
    events,
    make_ha,
    make_mn,
    single_bu,
)

from mipnode.core.ha import SecurityAssociation
from mipnode.core.ipv4_networks import mapped
from mipnode.core.mn import MobileNodeCore, RegistrationRejected
from mipnode.wire.mh import MobileNetworkPrefix

LAN_A, LAN_B = IPv6Network("2001:db8:aaaa:1::/64"), IPv6Network("2001:db8:aaaa:2::/64")


def test_explicit_mode_names_every_prefix_with_r_set() -> None:
    mn = make_mn(mobile_network_prefixes=(LAN_A, LAN_B))
    mn.register(0.0, COA)
    bu, _ = single_bu(mn, 0.0)
    assert bu.mobile_router
    assert [o for o in bu.options if isinstance(o, MobileNetworkPrefix)] == [
        MobileNetworkPrefix(LAN_A.network_address, 64),
        MobileNetworkPrefix(LAN_B.network_address, 64),
    ]


def test_implicit_mode_names_none_and_a_mobile_node_sets_no_r() -> None:
    mn = make_mn(mobile_network_prefixes=(LAN_A,), implicit_prefixes=True)
    mn.register(0.0, COA)
    bu, _ = single_bu(mn, 0.0)
    assert bu.mobile_router and not any(isinstance(o, MobileNetworkPrefix) for o in bu.options)
    plain = make_mn()
    plain.register(0.0, COA)
    assert not single_bu(plain, 0.0)[0].mobile_router


def answered(r_flag: bool) -> MobileNodeCore:
    """A router that registered and got an accepting BA with or without R."""
    mn = make_mn(mobile_network_prefixes=(LAN_A,))
    mn.register(0.0, COA)
    bu, ts = single_bu(mn, 0.0)
    mn.receive_datagram(0.1, build_ba(0, bu.sequence, ts, mobile_router=r_flag), HA, HOA)
    return mn


def test_a_home_agent_that_answers_without_r_did_not_route_our_networks() -> None:
    mn = answered(False)
    assert mn.state == "failed"
    assert any(isinstance(e, RegistrationRejected) and e.status == 140 for e in events(mn))
    assert mn.statistics()["ba_without_mobile_router_flag"] == 1


def test_a_deregistration_keeps_r_and_names_no_prefix() -> None:
    mn = answered(True)
    assert mn.state == "registered"
    mn.deregister(1.0)
    bye, ts = single_bu(mn, 1.0)
    assert bye.lifetime == 0 and bye.mobile_router
    assert not any(isinstance(o, MobileNetworkPrefix) for o in bye.options)
    # The answer to a de-registration needs no R: nothing is routed any more.
    mn.receive_datagram(1.1, build_ba(0, bye.sequence, ts), HA, HOA)
    assert mn.state != "failed"


def test_a_router_registers_its_networks_with_the_home_agent_core() -> None:
    ha = make_ha(security_associations=(SecurityAssociation(SPI, KEY, HOA, (LAN_A, LAN_B)),))
    mn = make_mn(mobile_network_prefixes=(LAN_B,))
    mn.register(1000.0, COA)
    for out in mn.datagrams_to_send(1000.0):
        ha.receive_datagram(1000.0, out.data, out.src, out.dst, VIA)
    for out in ha.datagrams_to_send(1000.0):
        mn.receive_datagram(1000.1, out.data, out.src, out.dst)
    assert mn.state == "registered"
    assert ha.binding_for(HOA).prefixes == (LAN_B,)  # type: ignore[union-attr]


def test_ipv4_networks_set_r_and_are_never_named_in_an_option() -> None:
    """RFC 3963's option is IPv6 only: a router's IPv4 networks (IPv4-mapped inside mipnode)
    are registered implicitly; its IPv6 ones are still named, and both are routed."""
    lan4 = mapped(IPv4Network("10.77.0.0/24"))
    mn = make_mn(mobile_network_prefixes=(LAN_A, lan4))
    mn.register(0.0, COA)
    bu, _ = single_bu(mn, 0.0)
    assert bu.mobile_router
    named = [o for o in bu.options if isinstance(o, MobileNetworkPrefix)]
    assert named == [MobileNetworkPrefix(LAN_A.network_address, 64)]
    only4 = make_mn(mobile_network_prefixes=(lan4,))
    only4.register(0.0, COA)
    bu4, _ = single_bu(only4, 0.0)
    assert bu4.mobile_router and not any(isinstance(o, MobileNetworkPrefix) for o in bu4.options)
    ha = make_ha(security_associations=(SecurityAssociation(SPI, KEY, HOA, (LAN_A, lan4)),))
    mn = make_mn(mobile_network_prefixes=(LAN_A, lan4))
    mn.register(1000.0, COA)
    for out in mn.datagrams_to_send(1000.0):
        ha.receive_datagram(1000.0, out.data, out.src, out.dst, VIA)
    assert ha.binding_for(HOA).prefixes == (LAN_A, lan4)  # type: ignore[union-attr]
