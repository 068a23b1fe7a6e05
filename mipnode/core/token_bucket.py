"""A token bucket (sans-IO: the caller passes monotonic ``now``): ``rate`` a second on average,
at most ``burst`` at once."""

from __future__ import annotations


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
