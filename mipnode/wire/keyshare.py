"""The ESP key share: an ephemeral X25519 public key in an Experimental Mobility Option, pure.

DESIGN §3 (data protection): the keys of the ESP security associations between a mobile node
and its home agent come from an ephemeral X25519 exchange carried in the Binding Update and the
accepting Binding Acknowledgement. The share travels in an Experimental Mobility Option (type
18, RFC 5096 §4) placed before the Mesg-ID and MN-HA authentication options, so the RFC 4285
authenticator covers it and only a holder of the MN-HA key can choose the peer's key. The
option's data is one TLV in the M-ICE TLV space (wire/mice.py)::

    Type 5 | Len 37 | Suite 8 | SPI 32 | X25519 public key (32 octets)

Suite: 1 AES-128-GCM (RFC 4106), 2 ChaCha20-Poly1305 (RFC 7634) — the sender's choice in a BU,
the accepted suite in a BA. SPI: the sender's *inbound* SPI (the receiver of an ESP packet
picks its SPI, RFC 4303 §2.1); its top bit is set, so an ESP-in-UDP datagram never starts like
an IP packet (0x4_/0x6_) or a STUN message (00), DESIGN §3 demultiplexing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from mipnode.wire.errors import BadPacket
from mipnode.wire.mh import ExperimentalOption, MobilityOption

TLV_KEY_SHARE = 5
SUITES = (1, 2)
SPI_TOP_BIT = 0x8000_0000
PUBLIC_KEY_LENGTH = 32
_FIXED = struct.Struct("!BBBI")  # type, length, suite, SPI
VALUE_LENGTH = 1 + 4 + PUBLIC_KEY_LENGTH


@dataclass(frozen=True, slots=True)
class KeyShare:
    """One side's half of the exchange: its suite, inbound SPI and ephemeral public key."""

    suite: int
    spi: int
    public: bytes

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown ESP suite {self.suite}")
        if not SPI_TOP_BIT <= self.spi <= 0xFFFF_FFFF:
            raise ValueError(f"ESP SPI 0x{self.spi:08x} must have its top bit set")
        if len(self.public) != PUBLIC_KEY_LENGTH:
            raise ValueError("an X25519 public key has 32 octets")


def key_share_option(share: KeyShare) -> ExperimentalOption:
    """The Experimental Mobility Option carrying ``share``."""
    return ExperimentalOption(bytes((TLV_KEY_SHARE, VALUE_LENGTH)) + key_share_value(share))


def key_share_value(share: KeyShare) -> bytes:
    """The TLV's value: suite, SPI, public key (also an M-ICE item of offers and answers)."""
    return _FIXED.pack(TLV_KEY_SHARE, VALUE_LENGTH, share.suite, share.spi)[2:] + share.public


def key_share_from_value_untrusted(value: bytes) -> KeyShare:
    """The share in a TLV value (:func:`key_share_value`).

    Raises:
        BadPacket: ``bad_key_share`` (length, suite, or an SPI without its top bit).
    """
    if len(value) != VALUE_LENGTH:
        raise BadPacket("bad_key_share", f"{len(value)} octets")
    suite, spi = value[0], int.from_bytes(value[1:5], "big")
    try:
        return KeyShare(suite, spi, bytes(value[5:]))
    except ValueError as exc:
        raise BadPacket("bad_key_share", str(exc)) from None


def key_share_from_options_untrusted(options: Iterable[MobilityOption]) -> KeyShare | None:
    """The key share among a message's options, or ``None`` when it carries none.

    Raises:
        BadPacket: ``bad_key_share`` for a malformed share, an unknown suite, an SPI without
            its top bit, or more than one share.
    """
    found: KeyShare | None = None
    for option in options:
        if not isinstance(option, ExperimentalOption):
            continue
        data = option.data
        if len(data) < 2 or data[0] != TLV_KEY_SHARE:
            continue  # another experiment's option: not ours to judge
        if found is not None or len(data) != 2 + VALUE_LENGTH or data[1] != VALUE_LENGTH:
            raise BadPacket("bad_key_share", f"{len(data)} octets")
        found = key_share_from_value_untrusted(data[2:])
    return found
