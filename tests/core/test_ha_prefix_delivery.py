"""Mobile Prefix Solicitations answered by the home agent's node core (RFC 6275 §10.6, §6.7,
§6.8): who gets an answer, where it goes, how often, and never larger than an unauthenticated
trigger. The same on the wire, against a real daemon: tests/netns/test_ha_conformance.py."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from coretest_kit import COA, HA, HOA, PREFIX, VIA, Stamper, build_bu, ha_config
from nodenet import HA6, HOME, NodeNet
from nodenet import HOA as NODE_HOA

from mipnode.core.home_agent import HomeAgentNode, SendNative, SendVia
from mipnode.core.mn_prefixes import HomePrefixes
from mipnode.core.mn_status import status
from mipnode.core.types import Via
from mipnode.wire.packets import ipv6_packet
from mipnode.wire.prefix_discovery import (
    INFINITE,
    MobilePrefixAdvertisement,
    PrefixInformation,
    mobile_prefix_advertisement,
    mobile_prefix_solicitation,
    parse_advertisement_untrusted,
)
from tunnels.ro import remove_type2_routing_header_untrusted

T0 = 1000.0
PAD = 40  # makes a tunnelled solicitation as large as its answer
OTHER_VIA = Via("T-udp", ("192.0.2.9", 4000))


def registered() -> HomeAgentNode:
    ha = HomeAgentNode(ha_config())
    bu = ipv6_packet(HOA, HA, 135, build_bu(1, Stamper()(T0)))
    ha.receive_tunnelled(T0, bu, VIA)
    ha.datagrams_to_send(T0)
    assert ha.core.binding_for(HOA) is not None
    return ha


def solicitation(identifier: int, padding: int = PAD) -> bytes:
    return ipv6_packet(HOA, HA, 58, mobile_prefix_solicitation(identifier, HOA, HA, padding))


def answer(out: object, identifier: int) -> None:
    assert isinstance(out, SendVia)
    assert out.packet[8:24] == HA.packed and out.packet[24:40] == HOA.packed
    adv = parse_advertisement_untrusted(out.packet[40:], HA, HOA)
    assert adv.identifier == identifier and not adv.managed and not adv.other
    (info,) = adv.prefixes
    assert info.prefix == PREFIX and info.router_address == HA
    assert (info.valid_lifetime, info.preferred_lifetime) == (INFINITE, INFINITE)


def test_a_bound_mobile_node_gets_the_home_prefix_in_the_tunnel() -> None:
    ha = registered()
    request = solicitation(0x4242)
    ha.receive_tunnelled(T0 + 1, request, VIA)
    (out,) = ha.datagrams_to_send(T0 + 1)
    answer(out, 0x4242)
    assert isinstance(out, SendVia) and out.via == VIA and out.protect is None
    assert len(out.packet) <= len(request)
    assert ha.statistics()["mpa_sent"] == 1


def test_at_most_one_advertisement_a_second_to_a_mobile_node() -> None:
    ha = registered()
    ha.receive_tunnelled(T0 + 1, solicitation(1), VIA)
    ha.receive_tunnelled(T0 + 1.5, solicitation(2), VIA)
    ha.receive_tunnelled(T0 + 2.1, solicitation(3), VIA)
    sent = ha.datagrams_to_send(T0 + 2.1)
    assert len(sent) == 2
    answer(sent[1], 3)
    assert ha.drops["mpa_rate_limited"] == 1


def test_an_unpadded_clear_solicitation_gets_no_larger_answer() -> None:
    ha = registered()
    ha.receive_tunnelled(T0 + 1, solicitation(1, padding=0), VIA)
    assert ha.datagrams_to_send(T0 + 1) == []
    assert ha.drops["mpa_larger_than_solicitation"] == 1


def test_a_sealed_solicitation_is_answered_sealed_whatever_its_size() -> None:
    ha = registered()
    ha.receive_tunnelled(T0 + 1, solicitation(5, padding=0), OTHER_VIA, HOA)
    (out,) = ha.datagrams_to_send(T0 + 1)
    answer(out, 5)
    assert isinstance(out, SendVia) and out.protect == HOA and out.via == OTHER_VIA


def test_no_answer_without_a_binding_or_off_its_path() -> None:
    ha = HomeAgentNode(ha_config())
    ha.receive_tunnelled(T0, solicitation(1), VIA)
    ha = registered()
    ha.receive_tunnelled(T0 + 1, solicitation(2), OTHER_VIA)  # clear, not the binding's path
    other = IPv6Address("2001:db8:1::77")
    spoofed = ipv6_packet(other, HA, 58, mobile_prefix_solicitation(3, other, HA, PAD))
    ha.receive_tunnelled(T0 + 1, spoofed, VIA, HOA)  # sealed by another's SA
    assert ha.datagrams_to_send(T0 + 1) == []
    assert ha.drops["mps_not_from_a_binding"] == 2


def test_a_native_solicitation_from_the_care_of_address_is_answered_with_an_rh2() -> None:
    ha = registered()
    message = mobile_prefix_solicitation(9, HOA, HA, padding=32)
    size = 40 + 24 + len(message)  # with its Home Address option
    ha.receive_native_prefix_solicitation(T0 + 1, message, COA.packed, HOA.packed, size)
    (out,) = ha.datagrams_to_send(T0 + 1)
    assert isinstance(out, SendNative) and len(out.packet) <= size
    assert out.packet[24:40] == COA.packed
    hoa, inner = remove_type2_routing_header_untrusted(out.packet)
    assert hoa == HOA.packed
    adv = parse_advertisement_untrusted(inner[40:], HA, HOA)
    assert adv.identifier == 9 and adv.prefixes[0].prefix == IPv6Network(PREFIX)


def test_a_native_solicitation_from_elsewhere_gets_nothing() -> None:
    ha = registered()
    message = mobile_prefix_solicitation(9, HOA, HA, padding=32)
    elsewhere = IPv6Address("2001:db8:bad::1").packed
    ha.receive_native_prefix_solicitation(T0 + 1, message, elsewhere, HOA.packed, 200)
    ha.receive_native_prefix_solicitation(
        T0 + 1, message[:-1] + b"\x01", COA.packed, HOA.packed, 200
    )
    assert ha.datagrams_to_send(T0 + 1) == []
    assert ha.drops["mps_not_from_a_binding"] == 1 and ha.drops["mps_checksum"] == 1


# -- the mobile node asks, and takes only the answer to its question (RFC 6275 §11.4) ------------


@pytest.mark.parametrize("protected", [False, True])
def test_a_registered_mobile_node_learns_the_home_prefix(protected: bool) -> None:
    net = NodeNet(protected=protected)
    net.run_for(5.0)
    assert net.mn.state == "registered"
    adv = net.mn.home_prefixes.advertised
    assert adv is not None and [i.prefix for i in adv.prefixes] == [HOME]
    assert adv.holds_home_address
    assert status(net.mn, net.now).home_prefixes == [str(HOME)]
    stats = net.mn.statistics()
    assert (stats["prefix_solicitations_sent"], stats["prefix_advertisements_taken"]) == (1, 1)
    assert net.ha.statistics()["mpa_sent"] == 1


def test_an_advertisement_for_another_question_is_discarded_and_asked_again() -> None:
    prefixes = HomePrefixes(HOA, HA)
    question = prefixes.solicit(T0, 7)
    assert question is not None
    other = MobilePrefixAdvertisement(8, (PrefixInformation(PREFIX, 60, 60),))
    assert prefixes.receive_untrusted(T0 + 1, mobile_prefix_advertisement(other, HA, HOA)) == (
        "unsolicited"
    )
    assert prefixes.solicit(T0 + 1, 9, force=False) is None  # not within 3 s
    assert prefixes.solicit(T0 + 3, 9, force=False) is not None
    renumbered = IPv6Network("2001:db8:2::/64")
    answer = MobilePrefixAdvertisement(9, (PrefixInformation(renumbered, 60, 60),))
    assert prefixes.receive_untrusted(T0 + 3.1, mobile_prefix_advertisement(answer, HA, HOA)) == (
        "taken"
    )
    assert prefixes.advertised is not None and not prefixes.advertised.holds_home_address
    # The question is answered: the same answer again is unsolicited.
    again = mobile_prefix_advertisement(answer, HA, HOA)
    assert prefixes.receive_untrusted(T0 + 4, again) == "unsolicited"


def test_the_mobile_node_warns_when_its_home_address_is_in_no_advertised_prefix() -> None:
    net = NodeNet()
    net.run_for(5.0)
    identifier = 0x0B0B
    question = net.mn.home_prefixes.solicit(net.now, identifier)
    assert question is not None
    renumbered = IPv6Network("2001:db8:2::/64")
    adv = MobilePrefixAdvertisement(identifier, (PrefixInformation(renumbered, 60, 60),))
    message = mobile_prefix_advertisement(adv, HA6, NODE_HOA)
    via = net.ha_via()
    assert via is not None
    net._ha_send(SendVia(via, ipv6_packet(HA6, NODE_HOA, 58, message)))
    net.run_for(0.1)
    warnings = [text for _, key, text in net.notices if key == "home_prefixes"]
    assert warnings and "is in none of them" in warnings[-1]


def test_the_mobile_node_asks_again_a_day_after_its_last_answer() -> None:
    prefixes = HomePrefixes(HOA, HA)
    assert prefixes.due(T0)  # never asked
    question = prefixes.solicit(T0, 1)
    assert question is not None and prefixes.due(T0 + 1)  # unanswered
    answer = MobilePrefixAdvertisement(1, (PrefixInformation(PREFIX, 60, 60),))
    assert prefixes.receive_untrusted(T0 + 1, mobile_prefix_advertisement(answer, HA, HOA)) == (
        "taken"
    )
    assert not prefixes.due(T0 + 600) and not prefixes.due(T0 + 86_400)
    assert prefixes.due(T0 + 1 + 86_400)
