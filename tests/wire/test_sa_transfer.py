"""SA frames between home-agent cluster nodes (mipnode/wire/sa_transfer.py): the layout against
a second encoder written here from the docstring's table and opened with the AEAD directly,
every octet under the tag, the recipient bound in, and the refusals of an authentic frame whose
states no SA can have (a node that holds the cluster key is trusted with keys, not with shapes).
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.sa_transfer import (
    MAX_FRAME,
    STATES_PER_FRAME,
    InboundState,
    SaState,
    decode_frame_untrusted,
    encode_frame,
    transfer_key,
)
from tunnels.esp import SUITE_AES_GCM, SUITE_CHACHA20_POLY1305

KEY = transfer_key(bytes(range(32)), "campus")
NONCE = bytes(range(12))
HOA = bytes.fromhex("20010db8000100000000000000000064")


def state(suite: int = SUITE_AES_GCM, top: int = 1000, received: int = 0b1011) -> SaState:
    n = 20 if suite == SUITE_AES_GCM else 36
    return SaState(
        HOA,
        suite,
        0x80010001,
        b"\x11" * n,
        5 + (1 << 24),
        (
            InboundState(0x80640002, b"\x22" * n, top, received, 2048),
            InboundState(0x80640003, b"\x33" * n, 7, 1, 2048, grace_ms=9000),
        ),
    )


def frame(states: list[SaState], **kw: object) -> bytes:
    args: dict[str, object] = dict(
        key=KEY, sender="ha-1", recipient="ha-2", sent_ms=1_796_450_000_123, index=3
    )
    args.update(final=False, nonce=NONCE)
    args.update(kw)
    return encode_frame(states, **args)  # type: ignore[arg-type]


def by_hand(s: SaState, key: bytes) -> bytes:
    """The layout as the module docstring draws it, sealed with AES-GCM directly."""
    header = b"MHAS" + bytes([1, 0, 4, 4]) + struct.pack("!QHH", 1_796_450_000_123, 3, 1)
    header += NONCE + b"ha-1" + b"ha-2"
    return header + AESGCM(key).encrypt(NONCE, plain(s), header)


def test_the_layout_is_the_documented_one() -> None:
    s = state()
    assert frame([s]) == by_hand(s, KEY)
    decoded = decode_frame_untrusted(by_hand(s, KEY), KEY, "ha-2")
    assert decoded.sender == "ha-1" and decoded.index == 3 and not decoded.final
    assert decoded.states == (s,)


@given(
    suite=st.sampled_from([SUITE_AES_GCM, SUITE_CHACHA20_POLY1305]),
    top=st.integers(0, 2**32 - 1),
    received=st.integers(0, 2**2048 - 1),
    count=st.integers(0, STATES_PER_FRAME),
    final=st.booleans(),
)
def test_round_trip(suite: int, top: int, received: int, count: int, final: bool) -> None:
    states = [state(suite, top, received)] * count
    decoded = decode_frame_untrusted(frame(states, final=final), KEY, "ha-2")
    assert decoded.states == tuple(states) and decoded.final is final
    assert len(frame(states)) <= MAX_FRAME


def test_every_octet_is_under_the_tag() -> None:
    data = frame([state()])
    # Magic, version, the id lengths and the count's high octet fail the frame's shape first;
    # every other octet (flags, time, index, count, nonce, ids, body, tag) fails the tag.
    shape = {0, 1, 2, 3, 4, 6, 7, 18}
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] ^= 0x01
        with pytest.raises(BadPacket) as bad:
            decode_frame_untrusted(bytes(changed), KEY, "ha-2")
        if i not in shape:
            assert bad.value.reason == "sa_transfer_auth", i


def test_another_clusters_key_opens_nothing() -> None:
    # Same cluster key, another cluster name: another transfer key.
    other = transfer_key(bytes(range(32)), "lab")
    with pytest.raises(BadPacket) as bad:
        decode_frame_untrusted(frame([state()]), other, "ha-2")
    assert bad.value.reason == "sa_transfer_auth"


def test_a_frame_for_another_node_is_refused_by_every_other() -> None:
    # The recipient is authenticated: a frame captured on its way to ha-2 and sent to ha-3
    # gets nowhere (ha-3 would otherwise serve with keys nobody handed it).
    with pytest.raises(BadPacket) as bad:
        decode_frame_untrusted(frame([state()]), KEY, "ha-3")
    assert bad.value.reason == "sa_transfer_recipient"


def sealed_body(body: bytes, count: int = 1) -> bytes:
    """An authentic frame around ``body`` (made with the cluster key, so past the tag)."""
    header = b"MHAS" + bytes([1, 0, 4, 4]) + struct.pack("!QHH", 1, 0, count)
    header += NONCE + b"ha-1" + b"ha-2"
    return header + AESGCM(KEY).encrypt(NONCE, body, header)


def plain(s: SaState) -> bytes:
    """One state's octets, as the docstring's table draws them."""
    body = s.home_address + bytes([s.suite]) + struct.pack("!IQ", s.spi_out, s.next_seq)
    body += bytes([len(s.keymat_out)]) + s.keymat_out + bytes([len(s.inbound)])
    for i in s.inbound:
        body += struct.pack("!IIIH", i.spi, i.top, i.grace_ms, i.window)
        body += bytes([len(i.keymat)]) + i.keymat + i.received.to_bytes(i.window // 8, "big")
    return body


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b[:16] + b"\x09" + b[17:],  # an unknown suite
        lambda b: b[:17] + b"\x00\x00\x00\x05" + b[21:],  # a reserved outbound SPI
        lambda b: b[:21] + (0).to_bytes(8, "big") + b[29:],  # sequence number 0
        lambda b: b[:21] + (2**32 + 1).to_bytes(8, "big") + b[29:],  # past 2^32
        lambda b: b[:29] + b"\x10" + b[30:],  # a keymat length the suite has not
        lambda b: b[:50] + b"\x03" + b[51:],  # three inbound SAs
        lambda b: b[:50] + b"\x00" + b[51:],  # none
        lambda b: b[:-1],  # the window bits cut short
        lambda b: b + b"\x00",  # an octet after the last state
    ],
)
def test_an_authentic_frame_with_an_impossible_state_is_refused(change: object) -> None:
    body = change(plain(state()))  # type: ignore[operator]
    with pytest.raises(BadPacket) as bad:
        decode_frame_untrusted(sealed_body(body), KEY, "ha-2")
    assert bad.value.reason == "sa_transfer_state"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"MHAS" + bytes(30), "truncated"),
        (b"XXXX" + bytes(60), "not_sa_transfer"),
        (b"MHAS\x02" + bytes(60), "sa_transfer_version"),
        (b"MHAS\x01\x00\x00\x04" + bytes(60), "sa_transfer_length"),  # a sender id of 0
        (b"MHAS\x01\x00\x04\x04" + bytes(10) + b"\xff\xff" + bytes(60), "sa_transfer_length"),
        (b"MHAS" + bytes(MAX_FRAME), "sa_transfer_length"),
    ],
)
def test_what_is_no_frame_is_refused_before_any_decryption(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as bad:
        decode_frame_untrusted(data, KEY, "ha-2")
    assert bad.value.reason == reason


@given(st.binary(max_size=400))
def test_random_octets_raise_only_bad_packet(data: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_frame_untrusted(data, KEY, "ha-2")


def test_the_encoder_refuses_what_no_frame_carries() -> None:
    with pytest.raises(ValueError, match="states a frame"):
        frame([state()] * (STATES_PER_FRAME + 1))
    with pytest.raises(ValueError, match="nonce"):
        frame([state()], nonce=b"short")
    with pytest.raises(ValueError, match="node id"):
        frame([state()], recipient="")
