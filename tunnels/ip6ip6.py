"""IPv6-in-IPv6 tunnelling (RFC 2473), pure per-packet codec.

The tunnel entry point prepends an outer IPv6 header with Next Header 41 (RFC 2473 §3); the exit
point removes it and forwards the inner packet (§3.2). The outer header may carry extension
headers (e.g. a destination options header with the Tunnel Encapsulation Limit, §4.1.1); they are
walked and skipped here, not interpreted. Hop-limit handling of the inner packet (§3.1) is the
caller's job: it is a forwarding decision.
"""

from __future__ import annotations

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import (
    IPV6_HEADER_LENGTH,
    NH_IPV6,
    AddressLike,
    IPv6Header,
    build_ipv6_packet,
    parse_ipv6_header_untrusted,
    parse_ipv6_packet_untrusted,
)


def encapsulate(
    outer_src: AddressLike, outer_dst: AddressLike, inner: bytes, hop_limit: int = 64
) -> bytes:
    """Prepend an outer IPv6 header (Next Header 41) from ``outer_src`` to ``outer_dst``.

    Raises:
        ValueError: ``inner`` is longer than 65535 octets or an address has the wrong length.
    """
    return build_ipv6_packet(outer_src, outer_dst, NH_IPV6, inner, hop_limit)


def decapsulate_untrusted(packet: bytes) -> tuple[IPv6Header, bytes]:
    """Return the outer header and the inner IPv6 packet.

    The inner packet must be an IPv6 packet filling the outer payload exactly.

    Raises:
        BadPacket: anything the IPv6 parser raises for either header; ``not_ip6ip6`` when the
            outer packet does not carry Next Header 41; ``bad_length`` when the inner packet's
            Payload Length does not match what the outer header delivers.
    """
    outer = parse_ipv6_packet_untrusted(packet)
    if outer.upper_protocol != NH_IPV6:
        raise BadPacket("not_ip6ip6", f"upper protocol {outer.upper_protocol}")
    inner = outer.payload
    inner_header = parse_ipv6_header_untrusted(inner)
    if IPV6_HEADER_LENGTH + inner_header.payload_length != len(inner):
        raise BadPacket("bad_length", "inner packet shorter than the outer payload")
    return outer.header, inner
