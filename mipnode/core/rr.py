"""Return routability primitives (RFC 6275 §5.2): keygen tokens, Kbm and the CN's nonce table.

Theory of operation. A correspondent node keeps no per-mobile-node state for return routability
(RFC 6275 §5.2.2): it holds one secret ``Kcn`` and a short list of nonces, each with a 16-bit
index. A Home Test carries the home keygen token ``HMAC_SHA1(Kcn, HoA ‖ nonce ‖ 0)`` (first 64
bits) and the index of the nonce used; a Care-of Test the care-of keygen token with ``CoA`` and
``1``. The mobile node hashes both tokens into ``Kbm`` and signs its BU with it; the CN
recomputes the tokens from the nonce indices in the BU and the addresses in the packet, so it
needs nothing but ``Kcn`` and the nonces that are still valid.

Nonce lifetimes (RFC 6275 §5.2.7). A nonce may be accepted for at most MAX_NONCE_LIFETIME
(240 s) after its first use, and should be accepted for at least MAX_TOKEN_LIFETIME (210 s)
after each token built on it was sent. The RFC's suggested way to meet both, followed here:
a new nonce every MAX_NONCE_LIFETIME - MAX_TOKEN_LIFETIME = 30 s, each accepted for 240 s after
it was generated. A token handed out at any moment of its nonce's 30 s turn is then accepted for
210 to 240 s. The CN cannot know when an individual token was issued (it keeps no per-request
state), so the nonce's age is the one clock: a BU whose nonce is older than 240 s gets 136,
137 or 138 (§6.1.8, §9.5.1), however recently the token was issued. Nonces are generated on
demand, when a HoTI or CoTI finds the current one older than 30 s (§5.2.7 allows that: "as long
as the correspondent node keeps track of how long a time ago the nonces were used for the first
time"), so ``generated_at`` is also the time of first use and the table needs no timer.

Everything here is pure: the randomness is a ``random_bytes(n)`` callable passed in.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

RandomBytes = Callable[[int], bytes]

# Specification constants (RFC 6275 §12)
MAX_NONCE_LIFETIME = 240
MAX_TOKEN_LIFETIME = 210
MAX_RR_BINDING_LIFETIME = 420
MAX_UPDATE_RATE = 3  # messages of one MH type per second per destination (§11.8)

# Sizes (RFC 6275 §5.2.1, §5.2.3-5.2.5, §6.1.3-6.1.6)
KCN_LENGTH = 20
COOKIE_LENGTH = 8
TOKEN_LENGTH = 8  # first 64 bits of the HMAC_SHA1 output
NONCE_LENGTH = 8  # implementation-chosen (§5.2.2); 64 bits, as UMIP
AUTHENTICATOR_LENGTH = 12  # first 96 bits of HMAC_SHA1 (§5.2.6)
NONCE_INDEX_MODULUS = 1 << 16
HOME_TOKEN_SUFFIX = b"\x00"  # §5.2.5
CARE_OF_TOKEN_SUFFIX = b"\x01"

# Implementation constants
NONCE_ROTATE_S = MAX_NONCE_LIFETIME - MAX_TOKEN_LIFETIME  # 30 s, the §5.2.7 suggestion


def _keygen_token(kcn: bytes, address: IPv6Address, nonce: bytes, suffix: bytes) -> bytes:
    return hmac.new(kcn, address.packed + nonce + suffix, hashlib.sha1).digest()[:TOKEN_LENGTH]


def home_keygen_token(kcn: bytes, hoa: IPv6Address, nonce: bytes) -> bytes:
    """First 64 bits of HMAC_SHA1(Kcn, HoA ‖ nonce ‖ 0) (RFC 6275 §5.2.5)."""
    return _keygen_token(kcn, hoa, nonce, HOME_TOKEN_SUFFIX)


def care_of_keygen_token(kcn: bytes, coa: IPv6Address, nonce: bytes) -> bytes:
    """First 64 bits of HMAC_SHA1(Kcn, CoA ‖ nonce ‖ 1) (RFC 6275 §5.2.5)."""
    return _keygen_token(kcn, coa, nonce, CARE_OF_TOKEN_SUFFIX)


def binding_management_key(home_token: bytes, care_of_token: bytes | None) -> bytes:
    """Kbm = SHA1(home keygen token ‖ care-of keygen token) (RFC 6275 §5.2.5).

    For a deletion (lifetime 0, or CoA = HoA) pass ``care_of_token=None``: Kbm is then
    SHA1(home keygen token) alone, since a MN returning home has no care-of address to test.
    """
    data = home_token if care_of_token is None else home_token + care_of_token
    return hashlib.sha1(data).digest()


@dataclass(frozen=True, slots=True)
class Nonce:
    """One CN nonce: ``index`` as sent in HoT/CoT, ``generated_at`` = its first use."""

    index: int
    value: bytes = field(repr=False)
    generated_at: float


class NonceTable:
    """The CN's nonces, a new one every ``rotate_s``, each valid ``lifetime_s`` (RFC 6275 §5.2.7).

    ``current(now)`` returns the nonce to put into a HoT or CoT; ``lookup(index, now)`` the
    nonce a BU's index names, or ``None`` when it is unknown or older than ``lifetime_s``.
    Indices count up from ``first_index`` modulo 2^16; at most ``lifetime_s / rotate_s + 1``
    nonces are ever held, so an index cannot name two live nonces.
    """

    def __init__(
        self,
        random_bytes: RandomBytes,
        *,
        rotate_s: float = NONCE_ROTATE_S,
        lifetime_s: float = MAX_NONCE_LIFETIME,
        first_index: int = 0,
    ) -> None:
        if not 0 < rotate_s < lifetime_s:
            raise ValueError("need 0 < rotate_s < lifetime_s")
        if lifetime_s / rotate_s + 1 >= NONCE_INDEX_MODULUS:
            raise ValueError("too many live nonces for 16-bit indices")
        self._random_bytes = random_bytes
        self._rotate_s = rotate_s
        self._lifetime_s = lifetime_s
        self._next_index = first_index % NONCE_INDEX_MODULUS
        self._nonces: deque[Nonce] = deque()  # oldest first

    @property
    def lifetime_s(self) -> float:
        return self._lifetime_s

    def current(self, now: float) -> tuple[int, bytes]:
        """``(index, nonce)`` for a HoT/CoT sent at ``now``; rotates when the last one is due."""
        self._prune(now)
        if not self._nonces or now - self._nonces[-1].generated_at >= self._rotate_s:
            value = self._random_bytes(NONCE_LENGTH)
            if len(value) != NONCE_LENGTH:
                raise ValueError("random_bytes returned the wrong length")
            self._nonces.append(Nonce(self._next_index, value, now))
            self._next_index = (self._next_index + 1) % NONCE_INDEX_MODULUS
        latest = self._nonces[-1]
        return latest.index, latest.value

    def lookup(self, index: int, now: float) -> bytes | None:
        """The nonce with ``index`` if it is at most ``lifetime_s`` old, else ``None``."""
        self._prune(now)
        for nonce in self._nonces:
            if nonce.index == index:
                return nonce.value
        return None

    def expires_at(self, index: int) -> float | None:
        """When the nonce with ``index`` stops being accepted, or ``None`` if it is unknown."""
        for nonce in self._nonces:
            if nonce.index == index:
                return nonce.generated_at + self._lifetime_s
        return None

    def __len__(self) -> int:
        return len(self._nonces)

    def _prune(self, now: float) -> None:
        # RFC 6275 §5.2.7: "MUST NOT accept nonces beyond MAX_NONCE_LIFETIME seconds after
        # the first use" -- so a nonce exactly lifetime_s old is still accepted.
        nonces = self._nonces
        while nonces and now - nonces[0].generated_at > self._lifetime_s:
            nonces.popleft()
