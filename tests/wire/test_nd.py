"""The Neighbor Discovery a home agent does itself, checked against scapy's ND layers (an
implementation independent of ours): the unsolicited Neighbor Advertisement a cluster node
sends after a takeover, and on a home link the DAD solicitation and the reading of
solicitations and advertisements."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    IPv6,
)

from mipnode.wire.errors import BadPacket
from mipnode.wire.nd import (
    dad_solicitation,
    multicast_mac,
    neighbor_message_untrusted,
    solicited_node,
    unsolicited_na,
)

TARGET = IPv6Address("2001:db8:1::1")
MAC = bytes.fromhex("020000000a01")


def test_scapy_reads_an_overriding_unsolicited_na_for_the_target() -> None:
    packet = IPv6(src=str(TARGET), dst="ff02::1", hlim=255, nh=58) / unsolicited_na(
        TARGET.packed, MAC, router=True
    )
    na = IPv6(bytes(packet))[ICMPv6ND_NA]
    assert (na.R, na.S, na.O) == (1, 0, 1)
    assert na.tgt == str(TARGET)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:0a:01"


def test_a_host_sends_it_without_the_router_flag() -> None:
    na = IPv6(bytes(IPv6(nh=58) / unsolicited_na(TARGET.packed, MAC, router=False)))
    assert na[ICMPv6ND_NA].R == 0


@pytest.mark.parametrize(("target", "mac"), [(b"\x00" * 4, MAC), (TARGET.packed, b"\x02" * 8)])
def test_wrong_lengths_are_refused(target: bytes, mac: bytes) -> None:
    with pytest.raises(ValueError):
        unsolicited_na(target, mac, router=True)


# -- a home agent on its home link ----------------------------------------------------------------


def test_scapy_reads_a_dad_solicitation_from_the_unspecified_address() -> None:
    """RFC 4862 §5.4.2: from ::, to the target's solicited-node group, hop limit 255, the
    target in the message and no Source Link-Layer Address option; the checksum right."""
    hoa = IPv6Address("2001:db8:1::c:1")
    packet = IPv6(dad_solicitation(hoa.packed))
    assert (packet.src, packet.dst, packet.hlim) == ("::", "ff02::1:ff0c:1", 255)
    ns = packet[ICMPv6ND_NS]
    assert ns.tgt == str(hoa) and not ns.payload
    checked = ns.cksum
    del packet[ICMPv6ND_NS].cksum
    assert IPv6(bytes(packet))[ICMPv6ND_NS].cksum == checked
    assert multicast_mac(solicited_node(hoa.packed)) == bytes.fromhex("3333ff0c0001")


def test_neighbor_messages_built_by_scapy_are_read() -> None:
    na = IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=str(TARGET), O=1)
    assert neighbor_message_untrusted(bytes(na)) == (
        136,
        IPv6Address("fe80::1").packed,
        TARGET.packed,
    )
    ns = IPv6(src="::", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=str(TARGET))
    assert neighbor_message_untrusted(bytes(ns))[0] == 135


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (IPv6(hlim=64) / ICMPv6ND_NA(tgt=str(TARGET)), "nd_hop_limit"),
        (IPv6(hlim=255) / ICMPv6ND_NA(tgt=str(TARGET), code=1), "nd_type"),
        (IPv6(hlim=255) / ICMPv6ND_NA(tgt=str(TARGET), cksum=1), "nd_checksum"),
        (IPv6(hlim=255) / ICMPv6EchoRequest(data=bytes(20)), "nd_type"),
    ],
)
def test_what_rfc_4861_s7_1_says_to_drop_is_refused(packet: Any, reason: str) -> None:
    with pytest.raises(BadPacket) as caught:
        neighbor_message_untrusted(bytes(packet))
    assert caught.value.reason == reason


@given(st.binary(max_size=120))
def test_any_bytes_give_a_message_or_bad_packet(data: bytes) -> None:
    try:
        kind, source, target = neighbor_message_untrusted(data)
    except BadPacket:
        return
    assert kind in (135, 136) and len(source) == len(target) == 16
