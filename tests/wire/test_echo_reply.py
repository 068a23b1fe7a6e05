"""The echo reply a correspondent's daemon gives a D-native probe itself
(``wire/packets.echo_reply_to_untrusted``), read back by scapy, an implementation independent
of ours: addresses swapped, identifier, sequence number and data kept, checksum right; and
every malformed request refused with BadPacket, never answered."""

from __future__ import annotations

import warnings
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.wire.errors import BadPacket
from mipnode.wire.packets import echo_reply_to_untrusted, echo_request

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scapy's import-time deprecation warnings
    from scapy.layers.inet6 import ICMPv6EchoReply, IPv6

HOA, CN = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:c::2")


def test_the_reply_mirrors_the_request_and_scapy_finds_its_checksum_right() -> None:
    request = echo_request(HOA, CN, 0x6D6A, 7, b"nonce-0123456789")
    reply = echo_reply_to_untrusted(request)
    assert len(reply) == len(request)  # never larger than what it answers
    parsed = IPv6(reply)
    assert (parsed.src, parsed.dst) == (str(CN), str(HOA))
    echo = parsed[ICMPv6EchoReply]
    assert (echo.id, echo.seq, bytes(echo.data)) == (0x6D6A, 7, b"nonce-0123456789")
    wire_checksum = echo.cksum
    del echo.cksum  # scapy computes it afresh
    assert IPv6(bytes(parsed))[ICMPv6EchoReply].cksum == wire_checksum


def test_malformed_requests_are_refused() -> None:
    good = echo_request(HOA, CN, 1, 1, b"abc")
    with pytest.raises(BadPacket, match="bad_checksum"):
        echo_reply_to_untrusted(good[:42] + bytes((good[42] ^ 1,)) + good[43:])
    with pytest.raises(BadPacket, match="not_echo_request"):
        echo_reply_to_untrusted(good[:40] + bytes((129,)) + good[41:])  # a reply
    with pytest.raises(BadPacket, match="bad_length"):
        echo_reply_to_untrusted(good + b"x")
    with pytest.raises(BadPacket, match="not_echo_request"):
        echo_reply_to_untrusted(good[:47])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=120))
def test_any_bytes_give_a_reply_or_bad_packet(data: bytes) -> None:
    try:
        reply = echo_reply_to_untrusted(data)
    except BadPacket:
        return
    assert len(reply) == len(data)
