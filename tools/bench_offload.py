#!/usr/bin/env python3
"""Micro-benchmark of mipnode/wire/offload.py: the per-segment cost of the TUN offload paths.

    .venv/bin/python tools/bench_offload.py [--rounds R] [--ipv4] [--mss M]

Builds one TCP super-packet as a TUN read returns it (NEEDS_CSUM, the pseudo-header sum in the
checksum field; IPv6 unless ``--ipv4``; TCP timestamps; 46 segments of 1400 octets by default,
64400 payload octets) with the stdlib only, then times, best of R rounds of a quarter of a second
each:

- ``segment_untrusted`` with ``finish_checksum=True`` (full TCP checksum per segment) and
  ``False`` (pseudo-header sums only), per segment produced;
- ``coalesce_tcp`` of those 46 segments (checksums verified, one super-packet out), per segment;
- ``complete_checksum`` of one 1400-octet-payload packet.

Prints microseconds per segment. Single-threaded and short: the numbers are for comparing
changes on one machine, not absolute throughput.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mipnode.wire.offload import (  # after the path fix-up, to run from a checkout
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VnetHeader,
    coalesce_tcp,
    complete_checksum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
    segment_untrusted,
)

SRC6 = bytes.fromhex("20010db8000100000000000000000100")
DST6 = bytes.fromhex("20010db8000c00000000000000000002")
SRC4, DST4 = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2])
# NOP, NOP, Timestamps (RFC 7323 §3): a 32-octet TCP header, as Linux sends.
TCP_OPTIONS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)


def super_packet(ipv4: bool, payload: bytes, mss: int) -> tuple[VnetHeader, bytes]:
    """A TCP super-packet in the form a TUN read gives it, and its virtio-net header."""
    tcp_length = 20 + len(TCP_OPTIONS) + len(payload)
    data_offset = (20 + len(TCP_OPTIONS)) // 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1000, 77, data_offset << 4, 0x10, 501, 0, 0)
    if ipv4:
        partial = pseudo_header_sum_v4(SRC4, DST4, tcp_length, 6)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_length, 1, 0x4000, 64, 6, 0, SRC4, DST4)
        total = sum(struct.unpack("!10H", ip))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
        l4, gso_type = 20, VIRTIO_NET_HDR_GSO_TCPV4
    else:
        partial = pseudo_header_sum_v6(SRC6, DST6, tcp_length, 6)
        ip = struct.pack("!IHBB16s16s", 6 << 28, tcp_length, 6, 64, SRC6, DST6)
        l4, gso_type = 40, VIRTIO_NET_HDR_GSO_TCPV6
    tcp = tcp[:16] + struct.pack("!H", partial) + tcp[18:]
    header = VnetHeader(
        VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + 20 + len(TCP_OPTIONS), mss, l4, 16
    )
    return header, ip + tcp + TCP_OPTIONS + payload


def best_of(rounds: int, call: Callable[[], object]) -> float:
    """Seconds per call: the best of ``rounds`` rounds of about 0.25 s."""
    start = time.perf_counter()
    call()
    batch = max(1, int(0.25 / max(time.perf_counter() - start, 1e-7)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            call()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="best of this many (default 5)")
    parser.add_argument("--ipv4", action="store_true", help="TCP over IPv4 instead of IPv6")
    parser.add_argument("--mss", type=int, default=1400, help="gso_size (default 1400)")
    parser.add_argument("--segments", type=int, default=46, help="segments (default 46)")
    args = parser.parse_args(argv)

    payload = bytes(i * 7 & 0xFF for i in range(args.mss * args.segments))
    header, packet = super_packet(args.ipv4, payload, args.mss)
    segments = segment_untrusted(header, packet)
    count = len(segments)
    merged = coalesce_tcp(segments)
    if len(merged) != 1 or merged[0][1] != packet:
        print("coalescing did not restore the super-packet", file=sys.stderr)
        return 1
    l4 = 20 if args.ipv4 else 40
    one = segment_untrusted(header, packet, finish_checksum=False)[0]
    none_header = VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, l4, 16)

    family = "IPv4" if args.ipv4 else "IPv6"
    print(
        f"{family} TCP super-packet: {len(packet)} octets, {count} segments of {args.mss} "
        f"payload octets, Python {sys.version.split()[0]}"
    )
    results = {
        "segment, full checksums": best_of(args.rounds, lambda: segment_untrusted(header, packet))
        / count,
        "segment, partial checksums": best_of(
            args.rounds, lambda: segment_untrusted(header, packet, finish_checksum=False)
        )
        / count,
        "coalesce (checksums verified)": best_of(args.rounds, lambda: coalesce_tcp(segments))
        / count,
        "complete_checksum, one segment": best_of(
            args.rounds, lambda: complete_checksum(none_header, one)
        ),
    }
    for name, seconds in results.items():
        print(f"  {name:32s} {seconds * 1e6:7.2f} us per segment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
