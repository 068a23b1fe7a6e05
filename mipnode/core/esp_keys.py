"""Keys of the MN-HA ESP security associations, from the registration itself (sans-IO).

Theory of operation (DESIGN §3, data protection). Every registration exchange of the mobile
node carries a fresh ephemeral X25519 public key and the mobile node's inbound SPI in its
Binding Update; the home agent answers an accepted BU with its own fresh key and inbound SPI in
the BA. Both messages are authenticated with the RFC 4285 MN-HA key, so an attacker can choose
neither share. Each side then computes::

    shared  = X25519(own private, peer public)            (RFC 7748 §6.1; all-zero refused)
    keymat  = HKDF-SHA256(salt = MN-HA key,               (RFC 5869)
                          ikm  = shared,
                          info = "mipnode esp v1" | suite | HoA | MN public | HA public
                                 | MN inbound SPI | HA inbound SPI)
    MN -> HA: first key_length(suite) octets, sent under the HA's inbound SPI
    HA -> MN: the next key_length(suite) octets, under the MN's inbound SPI

Mixing the MN-HA key in as the salt keeps the keys secret even from someone who breaks X25519
later but lacks the pre-shared key; the ephemeral keys give forward secrecy: a stolen MN-HA key
does not decrypt traffic of past registrations, whose private keys are gone. Private keys come
from injected random octets (the core holds no randomness) and live only as long as the
exchange that uses them.

Direct paths (D-udp, :func:`derive_direct`): an offer and its answer each carry a share the
same way (an ICE restart brings new ones). There is no pre-shared key between a mobile node and
a correspondent; the salt is both ICE passwords instead, which travel only inside the same
descriptions, so the keys are as strong as the descriptions' own authentication
(return-routability strength, docs/internals.md "Direct paths under protection"). The two sides
are ordered by their public keys, not by who offered: two mobile nodes whose offers cross each
take the other's offer as the answer, and must still agree::

    lo, hi  = the two sides ordered by public key
    keymat  = HKDF-SHA256(salt = lo password | hi password, ikm = shared,
                          info = "mipnode d-udp esp v1" | suite | lo ufrag | hi ufrag
                                 | lo public | hi public | lo SPI | hi SPI)
    lo -> hi: the first key_length(suite) octets; hi -> lo: the next
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mipnode.wire.keyshare import SPI_TOP_BIT, KeyShare
from tunnels.esp import key_length

INFO_LABEL = b"mipnode esp v1"


@dataclass(frozen=True, slots=True)
class EspKeys:
    """Both directions of one keyed pair of ESP SAs, as seen by one side."""

    suite: int
    spi_out: int  # the peer's inbound SPI: what we put in packets we send
    keymat_out: bytes = field(repr=False)
    spi_in: int  # ours: what the peer puts in packets for us
    keymat_in: bytes = field(repr=False)


class Ephemeral:
    """One side's ephemeral X25519 key for one exchange (its private half never leaves)."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes) -> None:
        """``private``: 32 random octets (injected)."""
        self._private = X25519PrivateKey.from_private_bytes(private)
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"Ephemeral(public={self.public.hex()[:16]}...)"

    def shared(self, peer_public: bytes) -> bytes | None:
        """The X25519 shared secret, or ``None`` for a low-order peer key (RFC 7748 §6.1)."""
        try:
            secret = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            return None
        return None if secret == bytes(32) else secret


def inbound_spi(random2: bytes, tag: int = 0) -> int:
    """An inbound SPI: top bit set (DESIGN §3 demultiplexing), 15 bits of ``tag`` and 16
    random bits (a home agent puts a tag of the home address there, ``spi_tag``)."""
    return SPI_TOP_BIT | (tag & 0x7FFF) << 16 | int.from_bytes(random2[:2], "big")


def spi_tag(home_address: IPv6Address) -> int:
    """15 bits that a home agent's inbound SPI carries for ``home_address``: after a restart
    without keys it can still tell whose packets it cannot open and ask that mobile node to
    register again (HomeAgentNode.unknown_spi). Public anyway: BUs name the home address."""
    packed = home_address.packed
    return int.from_bytes(packed[-2:], "big") & 0x7FFF


def derive(
    *,
    shared: bytes,
    psk: bytes,
    suite: int,
    home_address: IPv6Address,
    mn: KeyShare,
    ha: KeyShare,
    we_are_mn: bool,
) -> EspKeys:
    """Both directions' keying material (module docstring), from one side's point of view."""
    info = (
        INFO_LABEL
        + bytes((suite,))
        + home_address.packed
        + mn.public
        + ha.public
        + mn.spi.to_bytes(4, "big")
        + ha.spi.to_bytes(4, "big")
    )
    return _pair(shared, psk, info, suite, first=mn, second=ha, we_are_first=we_are_mn)


DIRECT_INFO_LABEL = b"mipnode d-udp esp v1"


@dataclass(frozen=True, slots=True)
class DirectSide:
    """One side of a D-udp exchange: its key share and the ICE credentials it described."""

    share: KeyShare
    ufrag: str
    password: str = field(repr=False)


def derive_direct(*, shared: bytes, ours: DirectSide, theirs: DirectSide) -> EspKeys:
    """Both directions' keying material of a D-udp pair (module docstring), from our side."""
    suite = ours.share.suite
    we_are_lo = ours.share.public < theirs.share.public
    lo, hi = (ours, theirs) if we_are_lo else (theirs, ours)
    info = (
        DIRECT_INFO_LABEL
        + bytes((suite,))
        + _counted(lo.ufrag)
        + _counted(hi.ufrag)
        + lo.share.public
        + hi.share.public
        + lo.share.spi.to_bytes(4, "big")
        + hi.share.spi.to_bytes(4, "big")
    )
    salt = _counted(lo.password) + _counted(hi.password)
    return _pair(shared, salt, info, suite, first=lo.share, second=hi.share, we_are_first=we_are_lo)


def _counted(text: str) -> bytes:
    """A length-prefixed string: ufrags and passwords vary in length, the fields must not run
    into each other."""
    raw = text.encode()
    return bytes((len(raw),)) + raw


def _pair(
    shared: bytes,
    salt: bytes,
    info: bytes,
    suite: int,
    *,
    first: KeyShare,
    second: KeyShare,
    we_are_first: bool,
) -> EspKeys:
    """HKDF-SHA256 to 2 x key_length(suite) octets: first -> second, then second -> first;
    each direction is sent under the receiver's inbound SPI."""
    n = key_length(suite)
    okm = HKDF(hashes.SHA256(), 2 * n, salt=salt, info=info).derive(shared)
    to_second, to_first = okm[:n], okm[n:]
    if we_are_first:
        return EspKeys(suite, second.spi, to_second, first.spi, to_first)
    return EspKeys(suite, first.spi, to_first, second.spi, to_second)
