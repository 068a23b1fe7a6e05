"""The ESP key share TLV in an Experimental Mobility Option (wire/keyshare.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.keyshare import (
    KeyShare,
    key_share_from_options_untrusted,
    key_share_option,
)
from mipnode.wire.mh import ExperimentalOption, MesgId

SHARE = KeyShare(1, 0x8000_1234, bytes(range(32)))


def test_round_trip_among_other_options() -> None:
    options = (MesgId(5), ExperimentalOption(b"\x01\x04abcd"), key_share_option(SHARE))
    assert key_share_from_options_untrusted(options) == SHARE
    assert key_share_from_options_untrusted((MesgId(5),)) is None


def test_layout() -> None:
    data = key_share_option(SHARE).data
    assert data[:7] == bytes((5, 37, 1)) + (0x8000_1234).to_bytes(4, "big")
    assert data[7:] == bytes(range(32)) and len(data) == 39


@pytest.mark.parametrize(
    "data",
    [
        bytes((5, 37, 3)) + b"\x80\0\0\1" + bytes(32),  # unknown suite
        bytes((5, 37, 1)) + b"\x00\0\0\1" + bytes(32),  # SPI without its top bit
        bytes((5, 36, 1)) + b"\x80\0\0\1" + bytes(31),  # short key
        bytes((5, 37, 1)) + b"\x80\0\0\1" + bytes(33),  # length disagrees
        bytes((5, 37)),  # no value at all
    ],
)
def test_malformed_shares_are_bad_packets(data: bytes) -> None:
    with pytest.raises(BadPacket) as exc:
        key_share_from_options_untrusted((ExperimentalOption(data),))
    assert exc.value.reason == "bad_key_share"


def test_two_shares_are_refused() -> None:
    option = key_share_option(SHARE)
    with pytest.raises(BadPacket):
        key_share_from_options_untrusted((option, option))


@given(st.binary(max_size=80))
def test_any_option_data_parses_or_raises_bad_packet(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        key_share_from_options_untrusted((ExperimentalOption(data),))


def test_constructor_refuses_what_the_parser_refuses() -> None:
    with pytest.raises(ValueError):
        KeyShare(1, 0x1234, bytes(32))
    with pytest.raises(ValueError):
        KeyShare(9, 0x8000_0000, bytes(32))
