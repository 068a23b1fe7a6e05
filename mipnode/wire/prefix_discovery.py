"""Mobile Prefix Solicitation and Advertisement (RFC 6275 §6.7, §6.8), pure.

A mobile node away from home asks its home agent for the home network's prefixes with a
Mobile Prefix Solicitation (ICMPv6 type 146: an identifier, reserved octets, options the home
agent ignores); the home agent answers with a Mobile Prefix Advertisement (type 147: the same
identifier, the M and O flags, one Prefix Information option per prefix). The Prefix
Information option is RFC 4861's with RFC 6275 §7.2's Router Address flag: with R set, the
Prefix field holds the home agent's whole address, of which the first Prefix Length bits are
the prefix.

The builders take the checksum's endpoints: the source is the home address when the packet
carries a Home Address option, the destination the home address when it carries a type 2
routing header (RFC 6275 §6.3, §6.4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from mipnode.wire.errors import BadPacket
from mipnode.wire.ipv6 import NH_ICMPV6, AddressLike, icmpv6_with_checksum, upper_layer_checksum

ICMPV6_MOBILE_PREFIX_SOLICITATION = 146
ICMPV6_MOBILE_PREFIX_ADVERTISEMENT = 147
OPTION_PREFIX_INFORMATION = 3  # RFC 4861 §4.6.2
FLAG_ON_LINK = 0x80  # L
FLAG_AUTONOMOUS = 0x40  # A
FLAG_ROUTER_ADDRESS = 0x20  # R (RFC 6275 §7.2)
FLAG_MANAGED = 0x80  # M, in the advertisement's flags octet
FLAG_OTHER = 0x40  # O
INFINITE = 0xFFFF_FFFF  # RFC 4861 §4.6.2: a lifetime that never ends
_HEADER = struct.Struct("!BBHHBB")  # type, code, checksum, identifier, flags / reserved
_PREFIX = struct.Struct("!BBBBIII16s")
PREFIX_OPTION_OCTETS = _PREFIX.size  # 32
ADVERTISEMENT_HEADER = _HEADER.size  # 8


@dataclass(frozen=True, slots=True)
class PrefixInformation:
    """One Prefix Information option of an advertisement."""

    prefix: IPv6Network
    valid_lifetime: int
    preferred_lifetime: int
    on_link: bool = True
    autonomous: bool = True
    router_address: IPv6Address | None = None  # the R flag: the sender's own address


@dataclass(frozen=True, slots=True)
class MobilePrefixAdvertisement:
    identifier: int
    prefixes: tuple[PrefixInformation, ...]
    managed: bool = False
    other: bool = False


def mobile_prefix_solicitation(
    identifier: int, src: AddressLike, dst: AddressLike, padding: int = 0
) -> bytes:
    """The ICMPv6 message of a solicitation; ``padding`` octets (a multiple of 8) of an
    option type no home agent knows, which it must skip (§6.7), make it as large as the
    advertisement that answers it (the home agent answers an unauthenticated one no larger)."""
    if padding % 8:
        raise ValueError("padding is a whole number of 8-octet units")
    pad = b""
    while len(pad) < padding:
        units = min(255, (padding - len(pad)) // 8)
        pad += bytes([254, units]) + bytes(8 * units - 2)  # type 254: experimental (RFC 4727)
    message = _HEADER.pack(ICMPV6_MOBILE_PREFIX_SOLICITATION, 0, 0, identifier, 0, 0) + pad
    return icmpv6_with_checksum(src, dst, message)


def solicitation_identifier_untrusted(message: bytes, src: AddressLike, dst: AddressLike) -> int:
    """The identifier of a Mobile Prefix Solicitation (the ICMPv6 message, its checksum over
    ``src`` and ``dst``). Options are not read: §6.7 says to ignore those not recognised, and
    a home agent recognises none in a solicitation."""
    return _header_untrusted(message, src, dst, ICMPV6_MOBILE_PREFIX_SOLICITATION, "mps")[0]


def _header_untrusted(
    message: bytes, src: AddressLike, dst: AddressLike, kind: int, name: str
) -> tuple[int, int]:
    """``(identifier, flags octet)`` of an ICMPv6 message of type ``kind``, code 0, whose
    checksum over ``src`` and ``dst`` is right; else BadPacket ``<name>_short``, ``_type`` or
    ``_checksum``."""
    if len(message) < _HEADER.size:
        raise BadPacket(f"{name}_short")
    got, code, _, identifier, flags, _ = _HEADER.unpack_from(message)
    if got != kind or code != 0:
        raise BadPacket(f"{name}_type")
    if upper_layer_checksum(src, dst, NH_ICMPV6, message) != 0:
        raise BadPacket(f"{name}_checksum")
    return identifier, flags


def mobile_prefix_advertisement(
    advertisement: MobilePrefixAdvertisement, src: AddressLike, dst: AddressLike
) -> bytes:
    """The ICMPv6 message of an advertisement, its checksum over ``src`` and ``dst``."""
    flags = (FLAG_MANAGED if advertisement.managed else 0) | (
        FLAG_OTHER if advertisement.other else 0
    )
    message = _HEADER.pack(
        ICMPV6_MOBILE_PREFIX_ADVERTISEMENT, 0, 0, advertisement.identifier, flags, 0
    )
    for info in advertisement.prefixes:
        bits = (
            (FLAG_ON_LINK if info.on_link else 0)
            | (FLAG_AUTONOMOUS if info.autonomous else 0)
            | (FLAG_ROUTER_ADDRESS if info.router_address is not None else 0)
        )
        field = (
            info.router_address.packed
            if info.router_address is not None
            else info.prefix.network_address.packed
        )
        message += _PREFIX.pack(
            OPTION_PREFIX_INFORMATION,
            4,
            info.prefix.prefixlen,
            bits,
            info.valid_lifetime,
            info.preferred_lifetime,
            0,
            field,
        )
    return icmpv6_with_checksum(src, dst, message)


def parse_advertisement_untrusted(
    message: bytes, src: AddressLike, dst: AddressLike
) -> MobilePrefixAdvertisement:
    """A Mobile Prefix Advertisement's identifier, flags and Prefix Information options (others
    skipped, as RFC 4861 §4.6 has a receiver do); raises only :class:`BadPacket`."""
    identifier, flags = _header_untrusted(
        message, src, dst, ICMPV6_MOBILE_PREFIX_ADVERTISEMENT, "mpa"
    )
    prefixes: list[PrefixInformation] = []
    at = _HEADER.size
    while at < len(message):
        if at + 2 > len(message) or message[at + 1] == 0:
            raise BadPacket("mpa_option_length")
        end = at + 8 * message[at + 1]
        if end > len(message):
            raise BadPacket("mpa_option_length")
        if message[at] == OPTION_PREFIX_INFORMATION:
            if end - at != PREFIX_OPTION_OCTETS:
                raise BadPacket("mpa_prefix_length")
            _, _, length, bits, valid, preferred, _, field = _PREFIX.unpack_from(message, at)
            if length > 128:
                raise BadPacket("mpa_prefix_length")
            address = IPv6Address(field)
            prefixes.append(
                PrefixInformation(
                    IPv6Network((address, length), strict=False),
                    valid,
                    preferred,
                    bool(bits & FLAG_ON_LINK),
                    bool(bits & FLAG_AUTONOMOUS),
                    address if bits & FLAG_ROUTER_ADDRESS else None,
                )
            )
        at = end
    if not prefixes:
        raise BadPacket("mpa_no_prefix")  # §6.8: one or more Prefix Information options
    return MobilePrefixAdvertisement(
        identifier, tuple(prefixes), bool(flags & FLAG_MANAGED), bool(flags & FLAG_OTHER)
    )
