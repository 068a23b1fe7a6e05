"""Structured, rate-limited log lines: one line per event, at most a few per reason per second.

A flood of bad packets must not become a flood of log lines (DESIGN §7); suppressed lines are
counted and reported with the next line for that reason.
"""

from __future__ import annotations

import logging

from mipnode.drivers.pump import stopwatch

log = logging.getLogger("mipnode")


class RateLimitedLog:
    def __init__(self, per_second: float = 2.0, burst: int = 5) -> None:
        self.rate, self.burst = per_second, burst
        self._tokens: dict[str, float] = {}
        self._stamp: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, reason: str, message: str, **fields: object) -> None:
        now = stopwatch()
        tokens = min(
            self.burst,
            self._tokens.get(reason, self.burst) + (now - self._stamp.get(reason, now)) * self.rate,
        )
        self._stamp[reason] = now
        if tokens < 1:
            self._tokens[reason] = tokens
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._tokens[reason] = tokens - 1
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        dropped = self._suppressed.pop(reason, 0)
        if dropped:
            extra += f" suppressed={dropped}"
        log.log(level, "%s reason=%s %s", message, reason, extra)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    # etcd's client logs every request at INFO: several a second from a cluster's keep-alives.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
