"""TokenBucket: rate and burst, in virtual time."""

from __future__ import annotations

from mipnode.core.token_bucket import TokenBucket


def test_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    taken = sum(bucket.take(1.0 + i / 1000) for i in range(10_000))  # 10 s at 1,000 tries/s
    assert 100 <= taken <= 104  # 10/s for 10 s, plus what had been refilled


def test_time_running_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=100.0, burst=1.0)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(5.0)
