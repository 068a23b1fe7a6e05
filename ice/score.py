"""Path score: kind first, then measured RTT, compared with hysteresis (DESIGN §2, §4).

A lower score is better. ``kind_rank`` orders the path kinds of DESIGN §2 (D-native 0, D-udp 1,
T-native 2, T-udp 3); within a kind the smoothed RTT decides. :func:`is_better` is the only
place a switch is decided: a better kind always wins; within a kind the challenger must be
faster by ``max(minimum_s, ratio * current RTT)``. The margin keeps two paths with jittery
RTTs from trading places (Tailscale's ``betterAddr`` and pion's 10 ms renomination threshold
play the same role; reference/ice.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATH_KIND_RANK: dict[str, int] = {"D-native": 0, "D-udp": 1, "T-native": 2, "T-udp": 3}


@dataclass(frozen=True, slots=True, order=True)
class PathScore:
    """Ordered score; compare with ``<`` for "better" without hysteresis."""

    kind_rank: int
    rtt_s: float = math.inf  # unmeasured sorts last within its kind


def path_score(kind: str, rtt_s: float | None) -> PathScore:
    """The score of a path of ``kind`` (a DESIGN §2 name) with smoothed RTT ``rtt_s``."""
    return PathScore(PATH_KIND_RANK[kind], math.inf if rtt_s is None else rtt_s)


def is_better(challenger: PathScore, current: PathScore, *, ratio: float, minimum_s: float) -> bool:
    """Should ``challenger`` replace ``current``? Kind first; RTT only beyond the margin."""
    if challenger.kind_rank != current.kind_rank:
        return challenger.kind_rank < current.kind_rank
    if math.isinf(current.rtt_s):
        return not math.isinf(challenger.rtt_s)
    margin = max(minimum_s, ratio * current.rtt_s)
    return challenger.rtt_s < current.rtt_s - margin
