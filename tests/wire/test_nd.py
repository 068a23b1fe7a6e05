"""The unsolicited Neighbor Advertisement a cluster node sends after a takeover, read back by
scapy's ND layers (an implementation independent of ours)."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6

from mipnode.wire.nd import unsolicited_na

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
