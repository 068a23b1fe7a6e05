"""The home agent's answers RFC 6275 asks for beyond registration (issue 17), on the cores:
Binding Error 2 for an unknown MH type (§9.2), 139 for a registration type change (§9.5.1),
ICMPv6 Parameter Problem for a malformed MH (§9.2), any sequence number once the binding is
gone (§9.5.1), and the native BU with a Home Address option answered with an RH2 (§9.5.4).
The same requirements are checked on the wire against a real daemon in
tests/netns/test_ha_conformance.py."""

from __future__ import annotations

from ipaddress import IPv6Address

from coretest_kit import COA, HA, HOA, VIA, Stamper, build_bu, ha_config, make_ha, single_ba

from mipnode.core.home_agent import HomeAgentNode, SendNative, SendVia
from mipnode.core.types import Via
from mipnode.wire.mh import (
    BeStatus,
    BindingError,
    NonceIndices,
    decode_mh_untrusted,
    fill_mh_checksum,
)
from mipnode.wire.packets import ipv6_packet
from tunnels.ro import add_home_address_option, remove_type2_routing_header_untrusted

T0 = 1000.0
NATIVE_VIA = Via("T-native", (str(COA),))


def node() -> HomeAgentNode:
    return HomeAgentNode(ha_config())


def unknown_mh(mh_type: int = 42, octets: int = 24) -> bytes:
    """An MH of a type no RFC defines, padded to ``octets`` (a multiple of 8), its checksum
    right for HoA -> HA."""
    return fill_mh_checksum(
        bytes((59, octets // 8 - 1, mh_type, 0, 0, 0)) + bytes(octets - 6), HOA, HA
    )


def test_an_unknown_mh_type_gets_binding_error_2_rate_limited() -> None:
    ha = make_ha()
    ha.receive_datagram(T0, unknown_mh(), HOA, HA, VIA)
    (out,) = ha.datagrams_to_send(T0)
    assert (out.src, out.dst, out.via) == (HA, HOA, VIA)
    be = decode_mh_untrusted(out.data, HA, HOA)
    assert isinstance(be, BindingError)
    assert be.status == BeStatus.UNRECOGNIZED_MH_TYPE
    assert be.home_address == IPv6Address("::")  # it came without a Home Address option
    # §9.3.3: rate-limited, one a second to one destination.
    ha.receive_datagram(T0 + 0.5, unknown_mh(), HOA, HA, VIA)
    assert ha.datagrams_to_send(T0 + 0.5) == []
    ha.receive_datagram(T0 + 1.5, unknown_mh(), HOA, HA, VIA)
    assert len(ha.datagrams_to_send(T0 + 1.5)) == 1
    stats = ha.statistics()
    assert stats["be_sent_2"] == 2 and stats["be_rate_limited"] == 1


def test_a_binding_error_is_never_larger_than_what_caused_it() -> None:
    ha = make_ha()
    ha.receive_datagram(T0, unknown_mh(octets=8), HOA, HA, VIA)  # 8 octets; a BE is 24
    assert ha.datagrams_to_send(T0) == []
    assert ha.statistics()["be_larger_than_trigger"] == 1


def test_clearing_the_h_flag_of_a_home_registration_gets_139() -> None:
    ha, stamp = make_ha(), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0)), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0
    ha.receive_datagram(T0 + 1, build_bu(2, stamp(T0 + 1), home=False), HOA, HA, VIA)
    assert single_ba(ha, T0 + 1).status == 139
    assert ha.binding_for(HOA) is not None  # the home registration stays


def test_after_a_deregistration_any_sequence_number_is_accepted() -> None:
    ha, stamp = make_ha(), Stamper()
    ha.receive_datagram(T0, build_bu(500, stamp(T0)), HOA, HA, VIA)
    assert single_ba(ha, T0).status == 0
    ha.receive_datagram(T0 + 1, build_bu(501, stamp(T0 + 1), lifetime=0), HOA, HA, VIA)
    assert single_ba(ha, T0 + 1).status == 0
    ha.receive_datagram(T0 + 2, build_bu(7, stamp(T0 + 2)), HOA, HA, VIA)
    ba = single_ba(ha, T0 + 2)
    assert (ba.status, ba.sequence) == (0, 7)


def test_a_native_bu_with_a_home_address_option_is_answered_through_an_rh2() -> None:
    ha, stamp = make_ha(), Stamper()
    # Sent from the care-of address with the HoA in a Home Address option: no Alt-CoA, the
    # authenticator covers the packet's source (RFC 4285 §5), the checksum the HoA (§6.1.1).
    bu = build_bu(3, stamp(T0), coa=None, mac_coa=COA)
    ha.receive_datagram(T0, bu, COA, HA, NATIVE_VIA, home_address=HOA)
    (out,) = ha.datagrams_to_send(T0)
    assert (out.src, out.dst, out.care_of, out.via) == (HA, HOA, COA, NATIVE_VIA)
    binding = ha.binding_for(HOA)
    assert binding is not None and binding.care_of_address == COA and binding.via == NATIVE_VIA


def test_the_node_sends_the_native_ba_whole_with_its_rh2() -> None:
    ha = node()
    bu = build_bu(3, Stamper()(T0), coa=None, mac_coa=COA)
    ha.receive_native_bu(T0, bu, COA.packed, HOA.packed)
    (sent,) = ha.datagrams_to_send(T0)
    assert isinstance(sent, SendNative)
    assert sent.packet[24:40] == COA.packed  # to the care-of address ...
    hoa, inner = remove_type2_routing_header_untrusted(sent.packet)
    assert hoa == HOA.packed  # ... with the home address in the RH2
    assert inner[6] == 135


def test_only_a_bu_may_come_natively_with_a_home_address_option() -> None:
    ha = node()
    ha.receive_native_bu(T0, unknown_mh(), COA.packed, HOA.packed)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["native_mh_not_bu"] == 1


def rechecked(mh: bytes) -> bytes:
    """``mh`` with its checksum made right again after an edit."""
    return fill_mh_checksum(mh[:4] + bytes(2) + mh[6:], HOA, HA)


def _tunnelled(mh: bytes) -> bytes:
    return ipv6_packet(HOA, HA, 135, mh)


def test_a_wrong_payload_proto_or_header_len_gets_a_parameter_problem_pointing_at_it() -> None:
    ha = node()
    good = build_bu(1, Stamper()(T0))
    wrong_proto = rechecked(bytes((6,)) + good[1:])
    short_len = rechecked(good[:1] + bytes((0,)) + good[2:])  # Header Len 0: 8 octets claimed
    for t, (mh, pointer) in enumerate(((wrong_proto, 40), (short_len, 41))):
        ha.receive_tunnelled(T0 + 2 * t, _tunnelled(mh), VIA)
        (sent,) = ha.datagrams_to_send(T0)
        assert isinstance(sent, SendVia) and sent.via == VIA
        pp = sent.packet
        assert pp[6] == 58 and pp[24:40] == HOA.packed
        assert (pp[40], pp[41]) == (4, 0)  # Parameter Problem, code 0 (erroneous header field)
        assert int.from_bytes(pp[44:48], "big") == pointer
        assert len(pp) <= len(_tunnelled(mh))  # never larger than the packet that caused it
        assert pp[48:88] == _tunnelled(mh)[:40]  # it quotes the packet at fault


def test_parameter_problems_are_rate_limited_and_bounded_by_the_trigger() -> None:
    ha = node()
    bad = fill_mh_checksum(bytes((6, 6)) + bytes(54), HOA, HA)  # payload proto 6, 56 octets
    ha.receive_tunnelled(T0, _tunnelled(bad), VIA)
    ha.receive_tunnelled(T0 + 0.1, _tunnelled(bad), VIA)
    assert len(ha.datagrams_to_send(T0)) == 1
    assert ha.drops["parameter_problem_rate_limited"] == 1
    tiny = fill_mh_checksum(bytes((6, 0)) + bytes(6), HOA, HA)  # 48 octets: no room to quote
    ha.receive_tunnelled(T0 + 5, _tunnelled(tiny), VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["parameter_problem_larger_than_trigger"] == 1


def test_a_malformed_native_bu_gets_a_parameter_problem_to_its_care_of_address() -> None:
    """§9.2 for the native form (docs/conformance.md, once gap G1): the pointer names the field
    in the packet as it came, the answer goes natively to its source, rate-limited and never
    larger than that packet; a wrong checksum still gets nothing."""
    ha = node()
    # A 64-octet BU (Payload Proto 6): room to quote up to the field, 64 octets in (D1).
    wrong_proto = fill_mh_checksum(bytes((6, 7, 5, 0)) + bytes(60), HOA, HA)
    packet = add_home_address_option(ipv6_packet(HOA, HA, 135, wrong_proto), COA.packed)
    mh_at = len(packet) - len(wrong_proto)
    ha.receive_native_bu(T0, wrong_proto, COA.packed, HOA.packed, packet, mh_at)
    (sent,) = ha.datagrams_to_send(T0)
    assert isinstance(sent, SendNative)
    pp = sent.packet
    assert (pp[6], pp[8:24], pp[24:40]) == (58, HA.packed, COA.packed)
    assert (pp[40], pp[41], int.from_bytes(pp[44:48], "big")) == (4, 0, mh_at)
    assert packet.startswith(pp[48:]) and len(pp) <= len(packet)
    ha.receive_native_bu(T0 + 0.1, wrong_proto, COA.packed, HOA.packed, packet, mh_at)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["parameter_problem_rate_limited"] == 1
    corrupt = wrong_proto[:4] + bytes((wrong_proto[4] ^ 1,)) + wrong_proto[5:]
    ha.receive_native_bu(T0 + 5, corrupt, COA.packed, HOA.packed, packet, mh_at)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["mh_bad_checksum"] == 1
    # Header Len 0 (8 octets claimed) where a BU needs 12: the pointer names Header Len.
    short = fill_mh_checksum(bytes((59, 0, 5, 0)) + bytes(60), HOA, HA)
    packet = add_home_address_option(ipv6_packet(HOA, HA, 135, short), COA.packed)
    ha.receive_native_bu(T0 + 10, short, COA.packed, HOA.packed, packet, mh_at)
    (sent,) = ha.datagrams_to_send(T0)
    assert int.from_bytes(sent.packet[44:48], "big") == mh_at + 1


def test_a_wrong_checksum_is_dropped_silently_before_anything_else() -> None:
    """§9.2: a bad checksum is discarded without a Parameter Problem, whatever else is wrong."""
    ha = node()
    bad = bytes((6, 6)) + bytes(54)  # payload proto 6, but the checksum is 0: not checked on
    ha.receive_tunnelled(T0, _tunnelled(bad), VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["mh_bad_checksum"] == 1


def test_a_native_bu_from_a_multicast_source_is_dropped() -> None:
    ha = node()
    bu = build_bu(3, Stamper()(T0), coa=None, mac_coa=COA)
    ha.receive_native_bu(T0, bu, IPv6Address("ff02::1").packed, HOA.packed)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["native_bu_source_not_unicast"] == 1


def test_a_home_bu_with_nonce_indices_is_not_taken() -> None:
    """§9.5.1: the Nonce Indices option MUST NOT be present when H is set."""
    ha, stamp = make_ha(), Stamper()
    bu = build_bu(1, stamp(T0), extra=(NonceIndices(1, 2),))
    ha.receive_datagram(T0, bu, HOA, HA, VIA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.binding_for(HOA) is None
    assert ha.statistics()["drop_nonce_indices_in_home_bu"] == 1


def test_a_refused_bu_also_ends_the_refresh_request_round() -> None:
    """§9.5.5: the home agent stops retransmitting a Binding Refresh Request once a BU comes,
    whatever it is answered."""
    ha, stamp = make_ha(refresh_requests=True), Stamper()
    ha.receive_datagram(T0, build_bu(1, stamp(T0), lifetime=150), HOA, HA, VIA)  # 600 s
    ha.datagrams_to_send(T0)
    due = ha.get_timer()
    assert due is not None and due < T0 + 600
    ha.handle_timer(due)
    assert len(ha.datagrams_to_send(due)) == 1  # the first BRR of the round
    old_sequence = build_bu(1, stamp(due + 0.1))  # fresh, but refused with 135
    ha.receive_datagram(due + 0.1, old_sequence, HOA, HA, VIA)
    assert single_ba(ha, due + 0.1).status == 135
    ha.handle_timer(due + 10)  # the retransmissions at +1 s and +3 s do not come
    assert ha.datagrams_to_send(due + 10) == []


def test_a_replayed_bu_does_not_end_the_refresh_request_round() -> None:
    """Only a fresh BU answers a Binding Refresh Request: a captured one, replayed, must not
    silence the requests (the mobile node would never be asked to register, or to rekey)."""
    ha, stamp = make_ha(refresh_requests=True), Stamper()
    first = build_bu(1, stamp(T0), lifetime=150)
    ha.receive_datagram(T0, first, HOA, HA, VIA)
    ha.datagrams_to_send(T0)
    due = ha.get_timer()
    assert due is not None
    ha.handle_timer(due)
    assert len(ha.datagrams_to_send(due)) == 1
    ha.receive_datagram(due + 0.1, first, HOA, HA, VIA)  # the replay: 144
    assert single_ba(ha, due + 0.1).status == 144
    ha.handle_timer(due + 1.5)  # the round goes on: the retransmission at +1 s comes
    assert len(ha.datagrams_to_send(due + 1.5)) == 1


def test_a_native_bu_must_name_its_source_as_care_of_address() -> None:
    """The tunnel of a native binding goes to the packet's source: an authenticated Alternate
    Care-of Address naming another address is not taken (it would send the traffic elsewhere
    than the binding says)."""
    ha, stamp = make_ha(), Stamper()
    elsewhere = IPv6Address("2001:db8:bad::1")
    bu = build_bu(3, stamp(T0), coa=elsewhere)  # signed over the Alt-CoA, sent from COA
    ha.receive_datagram(T0, bu, COA, HA, NATIVE_VIA, home_address=HOA)
    assert ha.datagrams_to_send(T0) == []
    assert ha.statistics()["drop_native_alternate_care_of_not_source"] == 1


def test_a_native_bu_from_inside_the_home_prefix_is_dropped() -> None:
    ha = node()
    bu = build_bu(3, Stamper()(T0), coa=None, mac_coa=HOA)
    ha.receive_native_bu(T0, bu, IPv6Address("2001:db8:1::77").packed, HOA.packed)
    assert ha.datagrams_to_send(T0) == []
    assert ha.drops["native_bu_source_not_unicast"] == 1


def test_binding_errors_toward_one_path_are_bounded_whatever_the_inner_sources() -> None:
    """Varying the inner source of forged MHs over one path gets at most the global ten a
    second toward it (each no larger than its trigger)."""
    ha = make_ha()
    for n in range(25):
        source = IPv6Address(f"2001:db8:1::{n + 1:x}")
        mh = fill_mh_checksum(bytes((59, 2, 42, 0, 0, 0)) + bytes(18), source, HA)
        ha.receive_datagram(T0, mh, source, HA, VIA)
    assert len(ha.datagrams_to_send(T0)) == 10
    assert ha.statistics()["be_rate_limited"] == 15
