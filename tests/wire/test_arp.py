"""The ARP announcement a cluster node sends for the IPv4 address it took over, read back by
scapy (an implementation independent of ours)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.l2 import ARP, Ether

from mipnode.wire.arp import arp_announcement

ADDRESS = IPv4Address("203.0.113.2")
MAC = bytes.fromhex("020000000a01")


def test_scapy_reads_a_broadcast_request_whose_sender_and_target_are_the_address() -> None:
    frame = Ether(arp_announcement(ADDRESS.packed, MAC))
    assert (frame.dst, frame.src, frame.type) == ("ff:ff:ff:ff:ff:ff", "02:00:00:00:0a:01", 0x806)
    arp = frame[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (
        1,
        "02:00:00:00:0a:01",
        str(ADDRESS),
        str(ADDRESS),
    )
    assert arp.hwdst == "00:00:00:00:00:00"


@pytest.mark.parametrize(("address", "mac"), [(b"\x01\x02", MAC), (ADDRESS.packed, b"\x02")])
def test_wrong_lengths_are_refused(address: bytes, mac: bytes) -> None:
    with pytest.raises(ValueError):
        arp_announcement(address, mac)
