"""ESP security associations handed from one home-agent cluster node to another (issue 14).

A node that stops cleanly hands the home-agent address to a successor (docs/internals.md, "Home
agents in a cluster on etcd"). Under protection each binding has a pair of ESP SAs whose keys
only the mobile node and the holder have; without them the successor could open nothing until
every mobile node registered again. So the holder sends the successor its SAs directly, over
the home link, encrypted with a key derived from the cluster key: never through etcd.

Each SA state names the home address it belongs to, the outbound SA (keys, and the first
sequence number the receiver may use: the sender kept a margin below it, tunnels/esp.py
``EspOutbound.hand_over``) and the inbound SAs (keys and anti-replay window: the receiver counts
what the sender opened as received, ``EspInbound.merge_window``). A frame with the ``final``
flag comes when the sender stops serving: it only updates the windows of SAs the receiver took.

Frame layout (network byte order)::

    magic "MHAS" | version 1 | flags (0x01 final) | sender id length | recipient id length
    | sent_ms (8) | index (2) | state count (2) | nonce (12) | sender id | recipient id
    | AES-256-GCM(states) with the 16-octet tag, everything before it as associated data

    state   = home address (16) | suite (1) | outbound SPI (4) | first sequence number (8)
              | keymat length (1) | keymat | inbound count (1) | inbound...
    inbound = SPI (4) | right edge (4) | grace ms (4, 0: the SA in force) | window bits (2)
              | keymat length (1) | keymat | received bits (window / 8 octets)

The recipient's id is authenticated: a frame for one node is refused by every other. Freshness
(sent_ms within FRESHNESS_MS, and (sent_ms, index) increasing per sender) is the receiver's
business, with its clock. Pure: no clock, no randomness (``nonce`` is passed in).
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mipnode.wire.errors import BadPacket
from tunnels.esp import MIN_REPLAY_WINDOW, MIN_SPI, SEQ_MAX, key_length

MAGIC = b"MHAS"
VERSION = 1
FLAG_FINAL = 0x01
NONCE_LENGTH = 12
TAG_LENGTH = 16
MAX_NODE_ID = 64
STATES_PER_FRAME = 64
MAX_INBOUND = 2  # the SA in force and one replaced (drivers/esp_plane.py keeps no more)
MAX_WINDOW = 4096
MAX_GRACE_MS = 60_000
MAX_FRAME = 128 * 1024  # 64 states of 2 inbound SAs with 4096-bit windows fit
FRESHNESS_MS = 2000
_HEADER = struct.Struct("!4sBBBBQHH12s")
_STATE = struct.Struct("!16sBIQB")
_INBOUND = struct.Struct("!IIIHB")


@dataclass(frozen=True, slots=True)
class InboundState:
    """One inbound SA: its keys and anti-replay window (bit i: number ``top - i`` received)."""

    spi: int
    keymat: bytes = field(repr=False)
    top: int
    received: int = field(repr=False)
    window: int
    grace_ms: int = 0  # 0: the SA in force; else a replaced one, opening this much longer


@dataclass(frozen=True, slots=True)
class SaState:
    """The SAs of one home address as one node hands them to another."""

    home_address: bytes  # 16 octets
    suite: int
    spi_out: int
    keymat_out: bytes = field(repr=False)
    next_seq: int  # the first outbound sequence number the receiver may use
    inbound: tuple[InboundState, ...]


@dataclass(frozen=True, slots=True)
class Frame:
    sender: str
    sent_ms: int
    index: int
    final: bool
    states: tuple[SaState, ...]


def transfer_key(cluster_key: bytes, name: str) -> bytes:
    """The AES-256-GCM key of the SA frames of cluster ``name`` (its own label: never the
    announcements' MAC key)."""
    return hmac.new(cluster_key, b"mipnode cluster sa transfer " + name.encode(), "sha256").digest()


def encode_frame(
    states: list[SaState] | tuple[SaState, ...],
    *,
    key: bytes,
    sender: str,
    recipient: str,
    sent_ms: int,
    index: int,
    final: bool,
    nonce: bytes,
) -> bytes:
    """One frame of at most STATES_PER_FRAME states.

    Raises:
        ValueError: too many states, an id of the wrong length, a nonce that is not 12
            octets, a state outside what a frame carries.
    """
    if len(states) > STATES_PER_FRAME:
        raise ValueError(f"at most {STATES_PER_FRAME} states a frame")
    if len(nonce) != NONCE_LENGTH:
        raise ValueError(f"a nonce is {NONCE_LENGTH} octets")
    ids = sender.encode(), recipient.encode()
    if not all(1 <= len(i) <= MAX_NODE_ID for i in ids):
        raise ValueError(f"a node id is 1-{MAX_NODE_ID} octets")
    flags = FLAG_FINAL if final else 0
    header = (
        _HEADER.pack(MAGIC, VERSION, flags, *map(len, ids), sent_ms, index, len(states), nonce)
        + ids[0]
        + ids[1]
    )
    body = b"".join(_encode_state(s) for s in states)
    return header + AESGCM(key).encrypt(nonce, body, header)


def _encode_state(s: SaState) -> bytes:
    if len(s.home_address) != 16 or not 1 <= len(s.inbound) <= MAX_INBOUND:
        raise ValueError("a state is a 16-octet home address and 1-2 inbound SAs")
    out = [
        _STATE.pack(s.home_address, s.suite, s.spi_out, s.next_seq, len(s.keymat_out)),
        s.keymat_out,
        bytes((len(s.inbound),)),
    ]
    for i in s.inbound:
        if i.window % 8 or not MIN_REPLAY_WINDOW <= i.window <= MAX_WINDOW:
            raise ValueError(f"a window is a multiple of 8 in {MIN_REPLAY_WINDOW}..{MAX_WINDOW}")
        out += (
            _INBOUND.pack(i.spi, i.top, i.grace_ms, i.window, len(i.keymat)),
            i.keymat,
            i.received.to_bytes(i.window // 8, "big"),
        )
    return b"".join(out)


def decode_frame_untrusted(data: bytes, key: bytes, recipient: str) -> Frame:
    """The frame in ``data`` if the cluster key made it for ``recipient``.

    Raises:
        BadPacket: ``truncated``, ``not_sa_transfer``, ``sa_transfer_version``,
            ``sa_transfer_length``, ``sa_transfer_auth`` (not sealed with the cluster's key, or
            altered), ``sa_transfer_recipient`` (sealed for another node), ``sa_transfer_state``
            (an authentic frame with a state no SA can have).
    """
    if len(data) < _HEADER.size + 2 + TAG_LENGTH:
        raise BadPacket("truncated", f"{len(data)} octets")
    if len(data) > MAX_FRAME:
        raise BadPacket("sa_transfer_length", f"{len(data)} octets")
    magic, version, flags, sender_len, recipient_len, sent_ms, index, count, nonce = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise BadPacket("not_sa_transfer")
    if version != VERSION:
        raise BadPacket("sa_transfer_version", str(version))
    end = _HEADER.size + sender_len + recipient_len
    if (
        not 1 <= sender_len <= MAX_NODE_ID
        or not 1 <= recipient_len <= MAX_NODE_ID
        or count > STATES_PER_FRAME
        or len(data) < end + TAG_LENGTH
    ):
        raise BadPacket("sa_transfer_length", f"ids {sender_len}/{recipient_len}, {count} states")
    header = data[:end]
    try:
        body = AESGCM(key).decrypt(nonce, data[end:], header)
    except InvalidTag:
        raise BadPacket("sa_transfer_auth") from None
    try:
        sender = data[_HEADER.size : _HEADER.size + sender_len].decode()
        named = data[_HEADER.size + sender_len : end].decode()
    except UnicodeDecodeError:
        raise BadPacket("sa_transfer_length", "a node id is not UTF-8") from None
    if named != recipient:
        raise BadPacket("sa_transfer_recipient", f"for {named!r}")
    states, offset = [], 0
    try:
        for _ in range(count):
            state, offset = _decode_state(body, offset)
            states.append(state)
    except (struct.error, ValueError) as exc:
        raise BadPacket("sa_transfer_state", str(exc)) from None
    if offset != len(body):
        raise BadPacket("sa_transfer_state", f"{len(body) - offset} octets left over")
    return Frame(sender, sent_ms, index, bool(flags & FLAG_FINAL), tuple(states))


def _decode_state(body: bytes, offset: int) -> tuple[SaState, int]:
    """One state at ``offset`` and where the next begins. Raises struct.error (short) or
    ValueError (a value no SA has)."""
    hoa, suite, spi_out, next_seq, keymat_len = _STATE.unpack_from(body, offset)
    offset += _STATE.size
    keymat_out = _keymat(body, offset, suite, keymat_len)
    offset += keymat_len
    _spi(spi_out)
    if not 1 <= next_seq <= SEQ_MAX + 1:
        raise ValueError(f"first sequence number {next_seq}")
    if offset >= len(body) or not 1 <= body[offset] <= MAX_INBOUND:
        raise ValueError("1-2 inbound SAs")
    n_in = body[offset]
    offset += 1
    inbound = []
    for _ in range(n_in):
        spi, top, grace_ms, window, in_len = _INBOUND.unpack_from(body, offset)
        offset += _INBOUND.size
        _spi(spi)
        if window % 8 or not MIN_REPLAY_WINDOW <= window <= MAX_WINDOW:
            raise ValueError(f"window {window}")
        if top > SEQ_MAX or grace_ms > MAX_GRACE_MS:
            raise ValueError(f"edge {top}, grace {grace_ms} ms")
        keymat = _keymat(body, offset, suite, in_len)
        offset += in_len
        bits = body[offset : offset + window // 8]
        if len(bits) != window // 8:
            raise ValueError("window bits cut short")
        offset += window // 8
        inbound.append(
            InboundState(spi, keymat, top, int.from_bytes(bits, "big"), window, grace_ms)
        )
    return SaState(hoa, suite, spi_out, keymat_out, next_seq, tuple(inbound)), offset


def _keymat(body: bytes, offset: int, suite: int, length: int) -> bytes:
    if length != key_length(suite):  # ValueError for an unknown suite too
        raise ValueError(f"keymat of {length} octets for suite {suite}")
    keymat = body[offset : offset + length]
    if len(keymat) != length:
        raise ValueError("keymat cut short")
    return keymat


def _spi(spi: int) -> None:
    if spi < MIN_SPI:
        raise ValueError(f"SPI {spi} is reserved")
