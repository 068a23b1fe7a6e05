"""Small packet builders and matchers shared by cores and drivers (struct only, pure).

The node cores build their own control packets (checks inside the tunnel, keepalives, D-native
probes); the drivers only send what they are handed. scapy never runs in a daemon.
"""

from __future__ import annotations

import struct

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import (
    NH_ICMPV6,
    NH_UDP,
    AddressLike,
    build_ipv6_packet,
    icmpv6_with_checksum,
    upper_layer_checksum,
)

_UDP = struct.Struct("!HHHH")
_ECHO = struct.Struct("!BBHHH")
ICMPV6_PARAMETER_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
# Echo identifier of the MN's D-native probes and heartbeats (HAO out, RH2 back). A mipnode CN
# answers these over the RH2 path at once, but sends its other traffic that way only after the
# MN itself sends D-native data, i.e. after the MN saw a probe come back (no loss window while an
# MN behind a stateful firewall finds out that RH2 packets cannot reach it).
D_NATIVE_PROBE_IDENT = 0x6D6A
# Checks inside the tunnel (the T-native check, and every check from the home address) go to the
# home agent's STUN port (RFC 8489 §18.5): the HA's node core takes them out of the tunnel, no
# socket ever sees them, and captures decode them as STUN inside IPv6-in-IPv6 or T-udp.
STUN_PORT = 3478
# Echo identifier of the MN's keepalives to its home agent ("mi"), told apart from user pings.
KEEPALIVE_IDENT = 0x6D69


def ipv6_packet(
    src: AddressLike, dst: AddressLike, nh: int, payload: bytes, hop: int = 64
) -> bytes:
    """A 40-octet IPv6 header (traffic class and flow label 0) and ``payload``."""
    return build_ipv6_packet(src, dst, nh, payload, hop)


def udp_in_ipv6(
    src: AddressLike, dst: AddressLike, sport: int, dport: int, payload: bytes, hop: int = 64
) -> bytes:
    """IPv6 + UDP with the checksum over the RFC 8200 §8.1 pseudo-header (0 is sent as 0xffff).

    Raises:
        ValueError: ports out of range, payload too long, or a malformed address.
    """
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} octets")
    try:
        segment = _UDP.pack(sport, dport, length, 0) + payload
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    csum = upper_layer_checksum(src, dst, NH_UDP, segment) or 0xFFFF
    return ipv6_packet(src, dst, NH_UDP, segment[:6] + csum.to_bytes(2, "big") + segment[8:], hop)


def echo_request(src: AddressLike, dst: AddressLike, ident: int, seq: int, data: bytes) -> bytes:
    body = _ECHO.pack(ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + data
    return ipv6_packet(src, dst, NH_ICMPV6, icmpv6_with_checksum(src, dst, body))


def echo_reply_to_untrusted(request: bytes) -> bytes:
    """The answer a host's kernel gives ``request``, an IPv6 packet whose ICMPv6 echo request
    follows its header: the addresses swapped, the same identifier, sequence number and data
    (RFC 4443 §4.2), as large as the request.

    Raises:
        BadPacket: ``not_echo_request``, ``bad_length`` (the Payload Length disagrees with the
            octets), ``bad_checksum``.
    """
    if len(request) < 48 or request[0] >> 4 != 6 or request[6] != NH_ICMPV6:
        raise BadPacket("not_echo_request")
    if request[40] != ICMPV6_ECHO_REQUEST or request[41] != 0:
        raise BadPacket("not_echo_request")
    if 40 + int.from_bytes(request[4:6], "big") != len(request):
        raise BadPacket("bad_length", f"{len(request)} octets")
    src, dst, body = request[8:24], request[24:40], request[40:]
    if upper_layer_checksum(src, dst, NH_ICMPV6, body) != 0:
        raise BadPacket("bad_checksum", "echo request")
    reply = bytes((ICMPV6_ECHO_REPLY, 0, 0, 0)) + body[4:]
    return ipv6_packet(dst, src, NH_ICMPV6, icmpv6_with_checksum(dst, src, reply))


def is_echo(pkt: bytes, echo_type: int, ident: int) -> bool:
    """An ICMPv6 echo (``echo_type``) with identifier ``ident``, no extension headers."""
    return (
        len(pkt) >= 48
        and pkt[6] == NH_ICMPV6
        and pkt[40] == echo_type
        and int.from_bytes(pkt[44:46], "big") == ident
    )


def is_d_native_probe(pkt: bytes, echo_type: int) -> bool:
    """An ICMPv6 echo (``echo_type``) with the probe identifier, no extension headers."""
    return is_echo(pkt, echo_type, D_NATIVE_PROBE_IDENT)
