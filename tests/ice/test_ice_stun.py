"""The strict STUN wrapper: check/answer round trips, rejections, and only BadPacket escapes."""

from __future__ import annotations

import binascii
import contextlib
import struct

import pytest
from aioice import stun as aio
from hypothesis import given, settings
from hypothesis import strategies as st

from ice import stun
from mipnode.wire.errors import BadPacket

TID = bytes(range(12))
OURS = "ourpasswordourpassword12"
THEIRS = "theirpasswordtheirpassw"
FUZZ = settings(max_examples=400, deadline=None, derandomize=True)


def check(**kw: object) -> bytes:
    args: dict[str, object] = {
        "username": "abcd:efgh",
        "password": OURS,
        "priority": 1862270975,
        "controlling": True,
        "tie_breaker": 2**64 - 1,
    }
    args.update(kw)
    return stun.build_check(TID, **args)  # type: ignore[arg-type]


def parse(data: bytes, remote: str | None = THEIRS) -> stun.CheckRequest | stun.CheckResponse:
    return stun.parse_check_untrusted(data, local_password=OURS, remote_password=remote)


def resign(msg: aio.Message, key: str) -> bytes:
    msg.add_message_integrity(key.encode())
    return bytes(msg)


# -- round trips ---------------------------------------------------------------------------------


def test_check_round_trip() -> None:
    data = check(use_candidate=True)
    assert len(data) == 20 + 16 + 8 + 12 + 4 + 24 + 8
    req = parse(data)
    assert req == stun.CheckRequest(TID, "abcd:efgh", 1862270975, 2**64 - 1, None, True)
    controlled = parse(check(controlling=False, tie_breaker=7))
    assert isinstance(controlled, stun.CheckRequest)
    assert (controlled.ice_controlling, controlled.ice_controlled) == (None, 7)
    assert not controlled.use_candidate


def test_check_is_readable_by_aioice() -> None:
    msg = aio.parse_message(check(use_candidate=True))
    assert msg.check_message_integrity(OURS.encode())
    assert msg.attributes["USERNAME"] == "abcd:efgh"
    assert "USE-CANDIDATE" in msg.attributes


@pytest.mark.parametrize("mapped", [("192.0.2.7", 5000), ("2001:db8::7", 65535)])
def test_success_round_trip(mapped: tuple[str, int]) -> None:
    data = stun.build_check_success(TID, mapped=mapped, password=THEIRS)
    resp = parse(data)
    assert resp == stun.CheckResponse(TID, mapped, None)
    assert isinstance(resp, stun.CheckResponse) and resp.success
    assert len(data) == (64 if "." in mapped[0] else 76)


def test_error_round_trip() -> None:
    data = stun.build_check_error(TID, code=487, reason="Role Conflict", password=THEIRS)
    resp = parse(data)
    assert resp == stun.CheckResponse(TID, None, 487)
    assert len(data) == 76


def test_answers_are_never_larger_than_the_smallest_valid_check() -> None:
    smallest = check(username="abcd:efgh", controlling=True)
    smallest_no_role = len(smallest) - 12
    assert smallest_no_role == 76
    largest_answer = max(
        len(stun.build_check_success(TID, mapped=("ffff::ffff", 65535), password=THEIRS)),
        len(stun.build_check_error(TID, code=487, reason="Role Conflict", password=THEIRS)),
    )
    assert largest_answer <= smallest_no_role


def test_existing_helpers_still_work() -> None:
    req = stun.binding_request(TID)
    assert stun.looks_like_stun(req)
    msg = stun.parse_stun_untrusted(req)
    assert msg.message_class == stun.Class.REQUEST and msg.transaction_id == TID
    resp = stun.parse_stun_untrusted(stun.binding_response(TID, ("192.0.2.1", 9)))
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.1", 9)


# -- rejections ----------------------------------------------------------------------------------


def reason(data: bytes, remote: str | None = THEIRS) -> str:
    with pytest.raises(BadPacket) as info:
        parse(data, remote)
    return info.value.reason


def test_wrong_password_is_an_integrity_failure() -> None:
    assert reason(check(password="x" * 22)) == "stun_integrity"
    good = stun.build_check_success(TID, mapped=("192.0.2.1", 1), password=OURS)
    assert reason(good) == "stun_integrity"  # responses are checked with the peer's password


def test_response_without_remote_credentials() -> None:
    data = stun.build_check_success(TID, mapped=("192.0.2.1", 1), password=THEIRS)
    assert reason(data, remote=None) == "stun_no_remote_credentials"


def test_bad_fingerprint() -> None:
    data = bytearray(check())
    data[-1] ^= 1
    assert reason(bytes(data)) == "stun_fingerprint"


def test_flipped_body_bit_fails_fingerprint_or_integrity() -> None:
    data = bytearray(check())
    data[30] ^= 0x40
    assert reason(bytes(data)) in {"stun_fingerprint", "stun_integrity"}


def test_fingerprint_must_be_present_and_last() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["USERNAME"] = "abcd:efgh"
    msg.attributes["PRIORITY"] = 1
    msg.add_message_integrity(OURS.encode())
    del msg.attributes["FINGERPRINT"]
    assert reason(bytes(msg)) == "stun_no_fingerprint"


def test_integrity_must_be_present_and_just_before_fingerprint() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["USERNAME"] = "abcd:efgh"
    msg.attributes["PRIORITY"] = 1
    msg.add_fingerprint()
    assert reason(bytes(msg)) == "stun_no_integrity"
    # An attribute between MESSAGE-INTEGRITY and FINGERPRINT is not allowed either.
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["USERNAME"] = "abcd:efgh"
    msg.attributes["PRIORITY"] = 1
    msg.add_message_integrity(OURS.encode())
    fp = msg.attributes.pop("FINGERPRINT")
    msg.attributes["SOFTWARE"] = "x"
    msg.attributes["FINGERPRINT"] = fp
    msg.add_fingerprint()
    assert reason(bytes(msg)) == "stun_no_integrity"


def test_missing_username_or_priority() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["USERNAME"] = "abcd:efgh"
    assert reason(resign(msg, OURS)) == "stun_missing_attribute"
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["PRIORITY"] = 5
    assert reason(resign(msg, OURS)) == "stun_missing_attribute"


def test_both_role_attributes_rejected() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    msg.attributes["USERNAME"] = "abcd:efgh"
    msg.attributes["PRIORITY"] = 5
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.attributes["ICE-CONTROLLED"] = 2
    assert reason(resign(msg, OURS)) == "stun_missing_attribute"


def test_success_without_mapped_address() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.RESPONSE, TID)
    assert reason(resign(msg, THEIRS)) == "stun_missing_attribute"


def test_indication_and_other_methods() -> None:
    msg = aio.Message(aio.Method.BINDING, aio.Class.INDICATION, TID)
    assert reason(resign(msg, OURS)) == "stun_indication"
    msg = aio.Message(aio.Method.ALLOCATE, aio.Class.REQUEST, TID)
    assert reason(resign(msg, OURS)) == "stun_not_binding"


def _with_raw_attribute(attr_type: int, value: bytes) -> bytes:
    """A signed check with an extra raw attribute before MESSAGE-INTEGRITY."""
    base = aio.Message(aio.Method.BINDING, aio.Class.REQUEST, TID)
    base.attributes["USERNAME"] = "abcd:efgh"
    base.attributes["PRIORITY"] = 1
    body = bytes(base)[20:] + struct.pack("!HH", attr_type, len(value)) + value
    body += bytes(-len(value) % 4)

    def header(length: int) -> bytes:
        return struct.pack("!HHI12s", 0x0001, length, aio.COOKIE, TID)

    mi = aio.message_integrity(header(len(body)) + body, OURS.encode())
    body += struct.pack("!HH", 0x0008, 20) + mi
    fp = binascii.crc32(header(len(body) + 8) + body) ^ 0x5354554E
    body += struct.pack("!HHI", 0x8028, 4, fp)
    return header(len(body)) + body


def test_unknown_comprehension_required_attribute() -> None:
    assert isinstance(parse(_with_raw_attribute(0xC057, b"ok")), stun.CheckRequest)
    assert reason(_with_raw_attribute(0x0077, b"no")) == "stun_unknown_attribute"


def test_attribute_running_past_the_end() -> None:
    data = bytearray(check())
    data[22:24] = (0xFF).to_bytes(2, "big")  # USERNAME length
    assert reason(bytes(data)) == "stun_attribute_length"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d[:19], "truncated"),
        (lambda d: b"\x40" + d[1:], "stun_top_bits"),
        (lambda d: d[:4] + b"\xde\xad\xbe\xef" + d[8:], "stun_cookie"),
        (lambda d: d + b"\x00\x00\x00\x00", "bad_length"),
    ],
)
def test_header_checks(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = mutate(check())
    got = reason(data)
    assert got == expected


# -- only BadPacket escapes ---------------------------------------------------------------------


def _outcome(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        parse(data)
    with contextlib.suppress(BadPacket):
        stun.parse_stun_untrusted(data)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_bad_packet(data: bytes) -> None:
    _outcome(data)


@FUZZ
@given(
    st.sampled_from(
        [
            check(use_candidate=True),
            stun.build_check_success(TID, mapped=("2001:db8::1", 1), password=THEIRS),
            stun.build_check_error(TID, code=487, reason="Role Conflict", password=THEIRS),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 120),
)
def test_mutated_checks_only_raise_bad_packet(
    data: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    buf = bytearray(data)
    for pos, value in edits:
        if pos < len(buf):
            buf[pos] = value
    _outcome(bytes(buf))
    _outcome(bytes(buf[: len(buf) - cut]))
