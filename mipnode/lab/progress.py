"""One line per finished scenario while `mipnode lab` runs, with an estimate of the time left:

    [7/29] strict-fw  PASS  9.1 s  T-native / D-udp  (about 3 min left)

The estimate is the median time of the runs so far times the runs still to go (scenarios
differ a lot, so it is rough, and says so); pure: the caller measures the time.
"""

from __future__ import annotations

import statistics
from typing import Any


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.times: list[float] = []

    def done(self, result: dict[str, Any], seconds: float) -> str:
        self.times.append(seconds)
        n = len(self.times)
        observed = result.get("observed") or {}
        paths = " / ".join(str(observed.get(k) or "-") for k in ("mn_ha", "mn_cn"))
        verdict = "PASS" if result.get("passed") else "FAIL"
        line = f"[{n}/{self.total}] {result.get('name')}  {verdict}  {seconds:.1f} s  {paths}"
        if not result.get("passed") and result.get("diagnosis"):
            line += f"  ({str(result['diagnosis'])[:100]})"
        left = self.total - n
        if left:
            line += f"  (about {_rough(statistics.median(self.times) * left)} left)"
        return line


def _rough(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    return f"{round(seconds / 60):.0f} min"
