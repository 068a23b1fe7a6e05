"""One ESP SA moved from one sender and receiver to another (tunnels/esp.py ``hand_over`` and
``merge_window``): what a home-agent node that stops cleanly does with each binding's SAs.

The two properties that matter: two senders of one key never use one sequence number (the
sequence number is the AEAD nonce: a repeat gives the key stream away), and a packet either
receiver opened is a replay at the new one. Checked against the plainest oracle: sets of the
numbers each side used or accepted."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from mipnode.wire.errors import BadPacket
from tunnels.esp import SEQ_MAX, SUITE_AES_GCM, EspInbound, EspOutbound, key_length

SPI = 0x8000_0002
KEYMAT = bytes(range(key_length(SUITE_AES_GCM)))


def seq_of(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")


def packet_at(seq: int) -> bytes:
    packet = EspOutbound(SUITE_AES_GCM, SPI, KEYMAT, next_seq=seq).seal(b"x", 41)
    assert packet is not None
    return packet


def test_the_old_sender_stops_below_the_numbers_it_gave_away() -> None:
    old = EspOutbound(SUITE_AES_GCM, SPI, KEYMAT)
    for _ in range(10):
        old.seal(b"x", 41)
    first = old.hand_over(5)
    assert first == 16
    new = EspOutbound(SUITE_AES_GCM, SPI, KEYMAT, next_seq=first)
    used_old = {seq_of(p) for p in iter(lambda: old.seal(b"x", 41), None)}
    assert used_old == {11, 12, 13, 14, 15}  # then it refuses: its share is spent
    used_new = {seq_of(new.seal(b"x", 41) or b"") for _ in range(100)}
    assert not used_old & used_new and min(used_new) == 16


def test_handing_over_twice_gives_the_same_numbers() -> None:
    old = EspOutbound(SUITE_AES_GCM, SPI, KEYMAT)
    old.seal(b"x", 41)
    old.hand_over(3)
    later = old.hand_over(100)  # a transfer sent again
    assert old.limit == 4 and later == 5  # the same numbers as the first time


def test_a_sender_near_the_end_gives_nothing_away() -> None:
    old = EspOutbound(SUITE_AES_GCM, SPI, KEYMAT, next_seq=SEQ_MAX - 1)
    assert old.hand_over(1 << 24) == SEQ_MAX + 1  # the receiver's SA is exhausted: it rekeys
    with pytest.raises(ValueError):
        EspOutbound(SUITE_AES_GCM, SPI, KEYMAT, next_seq=SEQ_MAX + 2)


def opened(inb: EspInbound, seq: int) -> bool:
    try:
        inb.open_untrusted(packet_at(seq))
        return True
    except BadPacket as exc:
        assert exc.reason == "esp_replay"
        return False


@pytest.mark.parametrize("seed", range(6))
def test_after_the_merge_what_either_opened_is_a_replay_and_nothing_else_is(seed: int) -> None:
    """Two receivers of one SA (the stopping node and its successor) open different packets;
    after the successor merges the other's window it accepts exactly the numbers inside its
    window that neither accepted."""
    rng = random.Random(seed)
    window = 64
    a = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=window)
    b = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=window)
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    top = 0
    for _ in range(300):
        top += rng.choice((1, 1, 2, 5))
        seq = max(1, top - rng.randrange(0, 40))
        receiver, seen = rng.choice(((a, seen_a), (b, seen_b)))
        if opened(receiver, seq):
            seen.add(seq)
    b.merge_window(*a.window[1:], window)
    edge = max(seen_a | seen_b)
    for seq in range(max(1, edge - window - 10), edge + 10):
        should = seq not in seen_a | seen_b and seq > edge - window
        assert opened(b, seq) == should, seq


def test_a_fresh_receiver_takes_the_window_over_exactly() -> None:
    """What the successor does at a hand-over: a new receiver, the old one's window merged.
    Numbers left of the old window are refused (unknown there, so never accepted twice)."""
    old = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=32)
    for seq in (100, 98, 90, 70):
        assert opened(old, seq)
    new = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=2048)
    new.merge_window(*old.window[1:], old.window[0])
    assert not opened(new, 98) and not opened(new, 100)  # opened by the old receiver
    assert not opened(new, 60)  # left of the old window: it cannot say
    assert opened(new, 99) and opened(new, 80) and opened(new, 101)


def test_a_jump_of_four_billion_numbers_costs_no_memory() -> None:
    # The window is an integer of ``window`` bits; shifting it by the jump before masking
    # would allocate 2^32 bits (512 MB) for one authentic packet (a peer that has the keys),
    # or for one merged window.
    tracemalloc.start()
    try:
        inb = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=64)
        assert opened(inb, 1)
        assert opened(inb, SEQ_MAX)
        other = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=64)
        assert opened(other, 1)
        other.merge_window(SEQ_MAX, 1, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert inb.window[1:] == (SEQ_MAX, 1) and other.window[1:] == (SEQ_MAX, 1)


def test_a_merge_of_an_older_window_moves_nothing_back() -> None:
    inb = EspInbound(SUITE_AES_GCM, SPI, KEYMAT, window=64)
    assert opened(inb, 500)
    inb.merge_window(10, 0b1, 64)
    assert inb.window[1] == 500 and opened(inb, 499) and not opened(inb, 500)
    with pytest.raises(ValueError):
        inb.merge_window(SEQ_MAX + 1, 0, 64)
