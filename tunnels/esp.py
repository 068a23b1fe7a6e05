"""ESP (RFC 4303) security associations with AEAD transforms, pure.

One ``EspOutbound`` / ``EspInbound`` object is one SA: it holds the AEAD key schedule (built once,
not per packet), the sequence counter or the anti-replay window, and nothing else: no I/O, no
clock, no randomness. Keys come from the caller (key exchange is not ESP's business).

Packet layout (RFC 4303 §2, RFC 4106 §3, RFC 7634 §2)::

    SPI(4) | Seq(4) | IV(8) | AEAD(payload | padding | pad length | next header) | ICV(16)

- Transforms: AES-128-GCM with a 16-octet ICV (RFC 4106) and ChaCha20-Poly1305 (RFC 7634). The
  keying material is key || 4-octet salt (RFC 4106 §8.1, RFC 7634 §2); nonce = salt || IV.
- IV: the 64-bit big-endian sequence number. RFC 4106 §3.1 and RFC 7634 §2 only ask that an IV
  never repeats under one key, and a counter is their suggested way; as a sender never wraps the
  32-bit sequence number (no ESN, RFC 4303 §3.3.3), the IV is unique per SA. Receivers take the IV
  from the packet, so any RFC 4106 / RFC 7634 peer opens what we seal and vice versa.
- AAD = SPI || 32-bit Sequence Number (RFC 4106 §5, RFC 7634 §2.1; no extended sequence numbers).
- Padding: the RFC 4303 §2.4 default 1, 2, 3, ... just long enough that payload + padding + 2 is a
  multiple of 4 (both AEADs are stream-like: no block alignment). The receiver inspects it, as
  §2.4 recommends for this padding scheme.
- Anti-replay (RFC 4303 §3.4.3, Appendix A2.1 without the ESN part): the right edge is the highest
  *authenticated* sequence number and the window covers the ``window`` numbers ending there. A
  duplicate or a number left of the window is dropped before decryption; the window moves only
  after the ICV verified, so a forged packet cannot slide it. Sequence number 0 is never sent
  (§3.3.3: the first packet is 1), so it is always a replay. The window is one integer of
  ``window`` bits (bit i: number right edge - i received): ~300 octets per SA.
- An outbound SA refuses to seal once Sequence Number 2^32 - 1 was used (§3.3.3: it must be
  replaced first); past ``SEQ_SOFT_LIMIT`` it asks for a rekey.
- Moving an SA to another node (a home agent handing its bindings over): the sender gives the
  numbers above a margin away (``EspOutbound.hand_over``), so two senders of the same keys never
  use one nonce; the new receiver takes the old one's window over (``EspInbound.merge_window``),
  so a packet either of them opened is a replay at both.

Untrusted input goes through ``open_untrusted``, which raises only ``BadPacket``; the reasons are
drop-counter keys: ``esp_truncated``, ``esp_wrong_spi``, ``esp_replay``, ``esp_auth``,
``esp_bad_trailer``.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mipnode.wire.errors import BadPacket

SUITE_AES_GCM = 1  # AES-128-GCM, 16-octet ICV, RFC 4106: 16-octet key + 4-octet salt
SUITE_CHACHA20_POLY1305 = 2  # RFC 7634: 32-octet key + 4-octet salt
SUITE_NAMES = {SUITE_AES_GCM: "aes-gcm", SUITE_CHACHA20_POLY1305: "chacha20-poly1305"}
_CIPHER_KEY_LENGTHS = {SUITE_AES_GCM: 16, SUITE_CHACHA20_POLY1305: 32}

SALT_LENGTH = 4  # RFC 4106 §4, RFC 7634 §2
HEADER_LENGTH = 8  # SPI + Sequence Number (RFC 4303 §2.1, §2.2)
IV_LENGTH = 8  # RFC 4106 §3.1, RFC 7634 §2
ICV_LENGTH = 16  # RFC 4106 §6 (the 16-octet variant), RFC 7634 §2
TRAILER_LENGTH = 2  # Pad Length + Next Header (RFC 4303 §2.5, §2.6)
ESP_OVERHEAD_MAX = HEADER_LENGTH + IV_LENGTH + 3 + TRAILER_LENGTH + ICV_LENGTH
MIN_PACKET_LENGTH = HEADER_LENGTH + IV_LENGTH + TRAILER_LENGTH + ICV_LENGTH

SEQ_SOFT_LIMIT = 2**31  # past this an SA asks to be replaced (rekey)
SEQ_MAX = 2**32 - 1  # no ESN: a sender never wraps (RFC 4303 §3.3.3)
REPLAY_WINDOW = 2048  # default anti-replay window (>= 1024: batches reorder)
MIN_REPLAY_WINDOW = 32  # RFC 4303 §3.4.3: a window of 32 MUST be supported
MIN_SPI = 256  # RFC 4303 §2.1: 1-255 are reserved by IANA, 0 for local use

# RFC 4303 §2.4 default padding 1, 2, 3, ...; one trailer per (pad length, next header).
_PADDING = bytes(range(1, 256))
_PADDINGS = tuple(_PADDING[:pad] for pad in range(256))
_TRAILERS = tuple(tuple(_PADDING[:pad] + bytes((pad, nh)) for nh in range(256)) for pad in range(4))
_HEADER_IV = struct.Struct("!IIQ")  # SPI, Sequence Number, IV = 64-bit sequence number
_SPI_SEQ = struct.Struct("!II")

_Aead = AESGCM | ChaCha20Poly1305


def key_length(suite: int) -> int:
    """Octets of keying material (key || 4-octet salt) ``suite`` takes: 20 or 36.

    Raises:
        ValueError: unknown suite.
    """
    try:
        return _CIPHER_KEY_LENGTHS[suite] + SALT_LENGTH
    except KeyError:
        raise ValueError(f"unknown ESP suite {suite!r}") from None


def spi_of(packet: bytes) -> int:
    """The SPI of an ESP packet: its first 4 octets (the caller checks ``len >= 8``)."""
    return int.from_bytes(packet[:4], "big")


def esp_sa_uat_line(
    src: str, dst: str, spi: int, suite: int, keymat: bytes, *, ipv4: bool | None = None
) -> str:
    """One record of Wireshark's ``esp_sa`` UAT for this SA, for ``-o 'uat:esp_sa:<record>'``.

    Columns (tshark 4.0): protocol, source, destination, SPI, encryption algorithm, encryption
    key, authentication algorithm, authentication key, each double-quoted. ``src`` / ``dst`` are
    addresses or the wildcard ``*``. The protocol ("IPv4" or "IPv6", there is no "any") follows
    the addresses; with two wildcards it is IPv6 unless ``ipv4`` says otherwise. The key is our
    keymat (key || salt), the layout Wireshark takes for RFC 4106 and RFC 7634; AEAD transforms
    take the NULL authentication algorithm. tshark 4.0 knows AES-GCM only and refuses the whole
    UAT on the ChaCha20-Poly1305 name, which is that of later Wireshark releases.

    Raises:
        ValueError: unknown suite, keymat of the wrong length, reserved SPI, an address that is
            neither ``*`` nor an IP address, addresses of two families, or ``ipv4`` contradicting
            them.
    """
    _check_keymat(suite, keymat)
    _check_spi(spi)
    families = {ipaddress.ip_address(a).version for a in (src, dst) if a != "*"}
    if ipv4 is not None:
        families.add(4 if ipv4 else 6)
    if len(families) > 1:
        raise ValueError(f"mixed address families: {src!r}, {dst!r}, ipv4={ipv4}")
    protocol = "IPv4" if families == {4} else "IPv6"
    algorithm = {
        SUITE_AES_GCM: "AES-GCM with 16 octet ICV [RFC4106]",
        SUITE_CHACHA20_POLY1305: "ChaCha20 with Poly1305 [RFC7634]",
    }[suite]
    fields = (protocol, src, dst, f"0x{spi:08x}", algorithm, f"0x{keymat.hex()}", "NULL", "")
    return ",".join(f'"{field}"' for field in fields)


def _check_keymat(suite: int, keymat: bytes) -> None:
    if len(keymat) != key_length(suite):
        raise ValueError(
            f"{SUITE_NAMES[suite]} takes {key_length(suite)} octets of keying material, "
            f"got {len(keymat)}"
        )


def _check_spi(spi: int) -> None:
    if not MIN_SPI <= spi <= 0xFFFFFFFF:
        raise ValueError(f"SPI {spi} is reserved or out of range (RFC 4303 §2.1)")


def _new_aead(suite: int, spi: int, keymat: bytes) -> tuple[_Aead, bytes]:
    """The AEAD object and the salt of an SA, after checking its parameters."""
    _check_keymat(suite, keymat)
    _check_spi(spi)
    key, salt = keymat[:-SALT_LENGTH], keymat[-SALT_LENGTH:]
    aead: _Aead = AESGCM(key) if suite == SUITE_AES_GCM else ChaCha20Poly1305(key)
    return aead, salt


def _seal_with_iv(
    aead: _Aead, salt: bytes, spi: int, seq: int, iv: bytes, payload: bytes, next_header: int
) -> bytes:
    """The AEAD step with an explicit IV (``EspOutbound.seal`` passes the sequence number).

    Separate so that the known-answer tests of RFC 7634 Appendix A and draft-mcgrew-gcm-test-01,
    whose IVs are not sequence numbers, can check it byte for byte.
    """
    header = _SPI_SEQ.pack(spi, seq)
    trailer = _TRAILERS[-(len(payload) + TRAILER_LENGTH) % 4][next_header]
    return b"".join((header, iv, aead.encrypt(salt + iv, payload + trailer, header)))


class EspOutbound:
    """The sending side of one SA: seals payloads with consecutive sequence numbers."""

    __slots__ = ("_aead", "_salt", "keymat", "limit", "seq", "spi", "suite")

    def __init__(self, suite: int, spi: int, keymat: bytes, *, next_seq: int = 1) -> None:
        """``keymat`` is key || 4-octet salt; ``next_seq`` is the first sequence number to use.

        Raises:
            ValueError: unknown suite, keymat of the wrong length, reserved SPI, ``next_seq``
                outside 1..2^32 (2^32: the SA is already exhausted).
        """
        self._aead, self._salt = _new_aead(suite, spi, keymat)
        if not 1 <= next_seq <= SEQ_MAX + 1:
            raise ValueError(f"next_seq {next_seq} outside 1..2^32")
        self.spi = spi
        # Kept for one use: handing the SA to another sender (``hand_over``), who needs the
        # keys themselves, not this key schedule. Never in a repr (slots have none).
        self.suite, self.keymat = suite, keymat
        self.seq = next_seq - 1  # last sequence number used (0: none yet)
        # The last sequence number this sender may use: SEQ_MAX, or lower once the rest of
        # the numbers went to another sender of the same SA (:meth:`hand_over`).
        self.limit = SEQ_MAX

    def hand_over(self, margin: int) -> int:
        """Give the sequence numbers from ``seq + margin + 1`` on to another sender of the
        same keys (a home agent that takes the SA over) and keep the ``margin`` before them:
        returns the first one the other sender uses. Two senders never use one number, so
        never one AEAD nonce (RFC 4106 §3.1: a nonce used twice under a key gives the key
        stream and the authentication key away). Asked again, the same answer: numbers
        already given away are never given twice, nor taken back."""
        if self.limit < SEQ_MAX:
            return self.limit + 1
        first = min(self.seq + margin + 1, SEQ_MAX + 1)
        self.limit = first - 1
        return first

    @property
    def needs_rekey(self) -> bool:
        """True once the SA is past ``SEQ_SOFT_LIMIT``: the caller should replace it."""
        return self.seq >= SEQ_SOFT_LIMIT

    def seal(self, payload: bytes, next_header: int) -> bytes | None:
        """The whole ESP packet carrying ``payload`` (RFC 4303 §3.3), or None when the SA is
        exhausted: Sequence Number 2^32 - 1 (or :attr:`limit`) was used and must not wrap
        (§3.3.3).

        Raises:
            ValueError: ``next_header`` outside 0..255.
        """
        seq = self.seq + 1
        if seq > self.limit:
            return None
        if not 0 <= next_header <= 0xFF:
            raise ValueError(f"next header {next_header} outside 0..255")
        header = _HEADER_IV.pack(self.spi, seq, seq)
        trailer = _TRAILERS[-(len(payload) + TRAILER_LENGTH) % 4][next_header]
        sealed = self._aead.encrypt(self._salt + header[8:], payload + trailer, header[:8])
        self.seq = seq
        return header + sealed


@functools.lru_cache(maxsize=8)
def _window_mask(window: int) -> int:
    """``window`` one-bits: the default window's mask is ~300 octets, once per size, not per SA."""
    return (1 << window) - 1


class EspInbound:
    """The receiving side of one SA: authenticates, decrypts and checks for replays."""

    __slots__ = ("_aead", "_mask", "_received", "_salt", "_top", "_window", "spi")

    def __init__(self, suite: int, spi: int, keymat: bytes, *, window: int = REPLAY_WINDOW) -> None:
        """``keymat`` is key || 4-octet salt; ``window`` is the anti-replay window in packets.

        Raises:
            ValueError: unknown suite, keymat of the wrong length, reserved SPI, window < 32.
        """
        self._aead, self._salt = _new_aead(suite, spi, keymat)
        if window < MIN_REPLAY_WINDOW:
            raise ValueError(f"replay window {window} < {MIN_REPLAY_WINDOW} (RFC 4303 §3.4.3)")
        self.spi = spi
        self._window = window
        self._top = 0  # highest authenticated sequence number (0: none yet)
        # Bit i set: sequence number top - i was received (RFC 4303 §3.4.3's window as one
        # integer of ``window`` bits: ~300 octets per SA where a list of slots took 16 KB).
        self._received = 0
        self._mask = _window_mask(window)  # one int per window size, shared by every SA

    @property
    def window(self) -> tuple[int, int, int]:
        """(window size, right edge, received bits: bit i is sequence number edge - i)."""
        return self._window, self._top, self._received

    def merge_window(self, top: int, received: int, window: int) -> None:
        """Count as received what another receiver of the same SA received (its right edge
        ``top`` and ``received`` bits over ``window`` numbers): the union of both, so a packet
        either of them opened is a replay here. Numbers left of the other's window count as
        received (unknown there: never accepted twice)."""
        if not 0 <= top <= SEQ_MAX or window < 1:
            raise ValueError("a window needs an edge in 0..2^32-1 and a size")
        theirs = received & ((1 << window) - 1)
        if top >= window:  # everything left of their window: received, as far as we know
            theirs |= ((1 << max(0, self._window - window)) - 1) << window
        new_top = max(self._top, top)
        self._received = (
            _slid(self._received, new_top - self._top, self._window)
            | _slid(theirs, new_top - top, self._window)
        ) & self._mask
        self._top = new_top

    def open_untrusted(self, packet: bytes) -> tuple[int, bytes]:
        """(Next Header, payload) of an ESP packet of this SA (RFC 4303 §3.4).

        Raises:
            BadPacket: ``esp_truncated`` (too short for header, IV, trailer and ICV),
                ``esp_wrong_spi``, ``esp_replay`` (sequence number 0, a duplicate or left of the
                window; checked before decrypting), ``esp_auth`` (the ICV does not verify; the
                window is left alone), ``esp_bad_trailer`` (pad length longer than the data, or
                padding other than 1, 2, 3, ...; the packet was authentic, so its sequence
                number counts as received).
        """
        if len(packet) < MIN_PACKET_LENGTH:
            raise BadPacket("esp_truncated", f"{len(packet)} octets")
        spi, seq = _SPI_SEQ.unpack_from(packet)
        if spi != self.spi:
            raise BadPacket("esp_wrong_spi", f"SPI 0x{spi:08x}, expected 0x{self.spi:08x}")
        top, window = self._top, self._window
        if seq <= top and (top - seq >= window or (self._received >> (top - seq)) & 1):
            raise BadPacket("esp_replay", f"sequence number {seq}, right edge {top}")
        if seq == 0:
            raise BadPacket("esp_replay", "sequence number 0")
        try:
            # Slices beat memoryviews here: copying 1,400 octets is cheaper than the views.
            plaintext = self._aead.decrypt(self._salt + packet[8:16], packet[16:], packet[:8])
        except InvalidTag:
            raise BadPacket("esp_auth", f"ICV mismatch, sequence number {seq}") from None
        # Authentic: mark it received, move the right edge (RFC 4303 §3.4.3, only now).
        if seq > top:
            # Inline _slid (per packet): a jump of a whole window or more leaves only this one.
            shift = seq - top
            self._received = ((self._received << shift) | 1) & self._mask if shift < window else 1
            self._top = seq
        else:
            self._received |= 1 << (top - seq)
        pad = plaintext[-2]
        end = len(plaintext) - 2 - pad
        if end < 0:
            raise BadPacket("esp_bad_trailer", f"pad length {pad} > {len(plaintext) - 2}")
        if pad and plaintext[end:-2] != _PADDINGS[pad]:
            raise BadPacket("esp_bad_trailer", "padding is not 1, 2, 3, ...")
        return plaintext[-1], plaintext[:end]


def _slid(bits: int, by: int, window: int) -> int:
    """``bits`` with the window's right edge moved ``by`` numbers: nothing is left of a window
    moved by its whole size or more (and a shift of up to 2^32 bits would allocate 512 MB)."""
    return bits << by if by < window else 0
