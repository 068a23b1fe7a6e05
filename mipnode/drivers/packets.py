"""Small packet builders for the drivers (struct only; scapy never runs in a daemon)."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address
from typing import Any

from mipnode.core.types import Via
from mipnode.wire.ipv6 import upper_layer_checksum

_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_ECHO = struct.Struct("!BBHHH")
NH_UDP = 17
NH_ICMPV6 = 58
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
# Echo identifier of the MN's D-native probes and heartbeats (HAO out, RH2 back). A mipnode CN
# answers these over the RH2 path at once, but sends its other traffic that way only after the
# MN itself sends D-native data, i.e. after the MN saw a probe come back (no loss window while an
# MN behind a stateful firewall finds out that RH2 packets cannot reach it).
D_NATIVE_PROBE_IDENT = 0x6D6A


def is_d_native_probe(pkt: bytes, echo_type: int) -> bool:
    """An ICMPv6 echo (``echo_type``) with the probe identifier, no extension headers."""
    return (
        len(pkt) >= 48
        and pkt[6] == NH_ICMPV6
        and pkt[40] == echo_type
        and int.from_bytes(pkt[44:46], "big") == D_NATIVE_PROBE_IDENT
    )


def ipv6_packet(
    src: IPv6Address, dst: IPv6Address, nh: int, payload: bytes, hop: int = 64
) -> bytes:
    return _IPV6.pack(0x60000000, len(payload), nh, hop, src.packed, dst.packed) + payload


def udp_in_ipv6(
    src: IPv6Address, dst: IPv6Address, sport: int, dport: int, payload: bytes
) -> bytes:
    length = 8 + len(payload)
    segment = _UDP.pack(sport, dport, length, 0) + payload
    csum = upper_layer_checksum(src, dst, NH_UDP, segment) or 0xFFFF  # RFC 8200 §8.1: 0 -> ffff
    return ipv6_packet(src, dst, NH_UDP, segment[:6] + csum.to_bytes(2, "big") + segment[8:])


def echo_request(src: IPv6Address, dst: IPv6Address, ident: int, seq: int, data: bytes) -> bytes:
    body = _ECHO.pack(ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + data
    csum = upper_layer_checksum(src, dst, NH_ICMPV6, body)
    return ipv6_packet(src, dst, NH_ICMPV6, body[:2] + csum.to_bytes(2, "big") + body[4:])


def address_text(addr: IPv6Address | None) -> str | None:
    """IPv4-mapped care-of addresses (an IPv4 access network) print as ``::ffff:a.b.c.d``."""
    if addr is None:
        return None
    mapped = addr.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(addr)


def via_json(via: Via, local: tuple[str, int | None] | None) -> dict[str, Any]:
    remote = {"address": str(via.remote[0]), "port": via.remote[1] if len(via.remote) > 1 else None}
    return {
        "kind": via.kind,
        "local": None if local is None else {"address": local[0], "port": local[1]},
        "remote": remote,
    }
