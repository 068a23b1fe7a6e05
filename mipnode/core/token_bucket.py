"""A token bucket (sans-IO: the caller passes monotonic ``now``): ``rate`` a second on average,
at most ``burst`` at once; and the error limiter of RFC 6275 §9.3.3 built on the same idea."""

from __future__ import annotations

from collections.abc import Hashable


class TokenBucket:
    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """One token if there is one (True), else False; time runs forward only."""
        if self._at is not None and now > self._at:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ErrorRateLimiter:
    """At most one message per ``interval_s`` to a destination, and ``rate_per_s`` in all.

    The global token bucket (burst = ``rate_per_s``) bounds how many destinations can be
    remembered at once, so memory stays flat whatever the sources of the offending packets.
    """

    def __init__(self, interval_s: float, rate_per_s: float) -> None:
        self._interval_s = interval_s
        self._rate = rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._tokens = self._burst
        self._stamp: float | None = None
        self._last: dict[Hashable, float] = {}  # insertion order = send order

    def __len__(self) -> int:
        return len(self._last)

    def allow(self, now: float, destination: Hashable) -> bool:
        """Whether a message to ``destination`` may be sent at ``now`` (and account for it)."""
        last = self._last
        while last:
            oldest, sent_at = next(iter(last.items()))
            if now - sent_at < self._interval_s:
                break
            del last[oldest]
        if destination in last:
            return False
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now if self._stamp is None else max(self._stamp, now)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        last[destination] = now
        return True
