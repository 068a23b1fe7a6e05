"""What the TUN queue merges at a flush (drivers/tun.py), written to a pipe instead of a TUN:
the frames are the same, and a pipe needs no privilege."""

from __future__ import annotations

import os

from scapy.layers.inet6 import TCP, IPv6

from mipnode.drivers.io import Counters
from mipnode.drivers.tun import Tun


def segments(count: int, size: int = 1400) -> list[bytes]:
    """In-order segments of one TCP connection with full checksums, built by scapy."""
    payload = bytes(range(256)) * (count * size // 256 + 1)
    return [
        bytes(
            IPv6(src="2001:db8:1::100", dst="2001:db8:c::2")
            / TCP(sport=40000, dport=443, seq=1000 + i * size, ack=7, flags="A")
            / payload[i * size : (i + 1) * size]
        )
        for i in range(count)
    ]


def test_a_flush_skips_the_checksum_check_only_when_every_packet_was_opened_by_an_aead() -> None:
    """Tun.write(checked=True) vouches for one packet; one unchecked write in the same flush puts
    the check back for all of them, and the segment with a wrong checksum then passes alone."""
    a = segments(3)
    bad = bytearray(a[1])
    bad[-1] ^= 0xFF
    inputs = [a[0], bytes(bad), a[2]]
    read_end, write_end = os.pipe()
    tun = Tun(write_end, "pipe", vnet=True, features=0, count=Counters())
    try:
        for writes, frames in (
            ([True] * 3, 1),  # one merged super-packet
            ([True, False, True], 3),  # checked: nothing merges
            ([False] * 3, 3),
            ([True] * 3, 1),  # what the last flush saw does not carry over
        ):
            before = dict(tun.stats)
            for checked, packet in zip(writes, inputs, strict=True):
                tun.write(packet, checked=checked)
            tun.flush()
            written = tun.stats["writes"] - before["writes"]
            carried = tun.stats["packets_written"] - before["packets_written"]
            assert (written, carried) == (frames, 3), writes
            assert os.read(read_end, 1 << 16)
    finally:
        os.close(read_end)
        os.close(write_end)
