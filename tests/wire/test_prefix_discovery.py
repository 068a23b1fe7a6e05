"""Mobile Prefix Solicitation and Advertisement (RFC 6275 §6.7, §6.8, §7.2) against scapy's
layers, an implementation independent of ours, both ways."""

from __future__ import annotations

import contextlib
import warnings
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.prefix_discovery import (
    INFINITE,
    MobilePrefixAdvertisement,
    PrefixInformation,
    mobile_prefix_advertisement,
    mobile_prefix_solicitation,
    parse_advertisement_untrusted,
    solicitation_identifier_untrusted,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.layers.inet6 import ICMPv6MPAdv, ICMPv6MPSol, ICMPv6NDOptPrefixInfo, IPv6
    from scapy.packet import Raw

HA = IPv6Address("2001:db8:1::1")
HOA = IPv6Address("2001:db8:1::100")
PREFIX = IPv6Network("2001:db8:1::/64")


def test_scapy_reads_our_advertisement() -> None:
    adv = MobilePrefixAdvertisement(
        0x1234, (PrefixInformation(PREFIX, INFINITE, 7200, router_address=HA),)
    )
    message = mobile_prefix_advertisement(adv, HA, HOA)
    packet = IPv6(bytes(IPv6(src=str(HA), dst=str(HOA), nh=58) / Raw(message)))
    mpa = packet[ICMPv6MPAdv]
    assert (mpa.id, mpa.flags) == (0x1234, 0)  # M and O clear: no DHCPv6 (§6.8)
    pio = packet[ICMPv6NDOptPrefixInfo]
    assert (pio.prefixlen, pio.L, pio.A, pio.R) == (64, 1, 1, 1)
    assert (pio.validlifetime, pio.preferredlifetime) == (INFINITE, 7200)
    assert pio.prefix == str(HA)  # §7.2: R set, the router's whole address
    checked = mpa.cksum
    del packet[ICMPv6MPAdv].cksum
    assert IPv6(bytes(packet))[ICMPv6MPAdv].cksum == checked


def test_we_read_scapys_solicitation_and_advertisement() -> None:
    mps = IPv6(src=str(HOA), dst=str(HA)) / ICMPv6MPSol(id=0xBEEF)
    assert solicitation_identifier_untrusted(bytes(mps)[40:], HOA, HA) == 0xBEEF
    mpa = (
        IPv6(src=str(HA), dst=str(HOA))
        / ICMPv6MPAdv(id=7, flags=1)
        / ICMPv6NDOptPrefixInfo(prefixlen=48, prefix="2001:db8:7::", R=0, validlifetime=60)
    )
    parsed = parse_advertisement_untrusted(bytes(mpa)[40:], HA, HOA)
    assert (parsed.identifier, parsed.managed, parsed.other) == (7, False, True)
    (info,) = parsed.prefixes
    assert info.prefix == IPv6Network("2001:db8:7::/48") and info.router_address is None
    assert (info.valid_lifetime, info.on_link, info.autonomous) == (60, True, True)


def test_our_padded_solicitation_is_one_scapy_reads_and_we_read_back() -> None:
    message = mobile_prefix_solicitation(99, HOA, HA, padding=40)
    assert len(message) == 48
    packet = IPv6(bytes(IPv6(src=str(HOA), dst=str(HA), nh=58) / Raw(message)))
    assert packet[ICMPv6MPSol].id == 99
    assert solicitation_identifier_untrusted(message, HOA, HA) == 99


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x92\x00\x00", "mps_short"),
        (bytes(ICMPv6MPSol(id=1, code=1)), "mps_type"),
        (bytes(ICMPv6MPSol(id=1, cksum=1)), "mps_checksum"),
    ],
)
def test_bad_solicitations_are_refused(message: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as caught:
        solicitation_identifier_untrusted(message, HOA, HA)
    assert caught.value.reason == reason


@given(st.binary(max_size=80))
def test_any_bytes_give_an_answer_or_bad_packet(data: bytes) -> None:
    for parse in (solicitation_identifier_untrusted, parse_advertisement_untrusted):
        with contextlib.suppress(BadPacket):
            parse(data, HOA, HA)
