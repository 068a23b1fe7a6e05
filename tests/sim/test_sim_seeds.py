"""1 000 seeds, each a random scenario mix with loss, duplication and reordering (issue 4):
every one must end in a consistent state. See seedmix.py for the mix and the invariants.

The seeds run in two worker processes (``spawn``: nothing of pytest's state is forked), one
list of outcomes comes back, and every failing seed is reported with the line that replays it
(``seedmix.run_mix(seedmix.mix(SEED))``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest
from seedmix import SETTLE_BOUND, Outcome, mix, run_seeds

SEEDS = list(range(1000))
WORKERS = 2
CHUNKS = 16


def run_all(seeds: list[int]) -> list[Outcome]:
    workers = min(WORKERS, os.cpu_count() or 1)
    if workers < 2:
        return run_seeds(seeds)
    chunks = [seeds[i::CHUNKS] for i in range(CHUNKS)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return [o for chunk in pool.map(run_seeds, chunks) for o in chunk]


def cause(outcome: Outcome) -> str:
    error = outcome.error or ""
    keys = ["no progress", "no agreement", "expected D-udp", "expected T", "violations"]
    keys += ["check storm", "relayed candidate", "not stable", "path changed", "not registered"]
    for key in keys:
        if key in error:
            return key
    return error.strip().splitlines()[-1] if error else "?"


def test_the_mix_covers_every_access_network_role_family_and_fault() -> None:
    mixes = [mix(seed) for seed in SEEDS]
    assert {m.mn for m in mixes} >= {"open", "fw", "nat-eim", "nat-easy", "nat-hard", "udp-blocked"}
    assert {m.role for m in mixes} == {"cn", "mn"} and {m.families for m in mixes} == {
        "6",
        "4",
        "46",
    }
    assert sum(m.cut is not None for m in mixes) > 300
    assert sum(m.move is not None for m in mixes) > 200
    assert sum(m.reboot is not None for m in mixes) > 100
    assert sum(m.loss > 0 for m in mixes) > 500 and sum(m.duplicate > 0 for m in mixes) > 400
    assert sum(m.reorder > 0 for m in mixes) > 400
    assert sum(m.crossing for m in mixes) > 100
    direct = sum(m.expect_direct for m in mixes)
    assert 300 < direct < 800  # both outcomes are well represented


def test_1000_seeds_with_loss_duplication_and_reordering_end_consistent() -> None:
    outcomes = run_all(SEEDS)
    assert sorted(o.seed for o in outcomes) == SEEDS
    bad = [o for o in outcomes if not o.ok]
    causes = Counter(cause(o) for o in bad)
    report = "\n".join(f"{o.description}\n    {(o.error or '').strip()[-400:]}" for o in bad[:8])
    if bad:
        pytest.fail(f"{len(bad)} of {len(SEEDS)} seeds failed {dict(causes)}:\n{report}")
    settled = [o.settled_after for o in outcomes if o.settled_after is not None]
    late = [o for o in outcomes if (o.settled_after or 0.0) > SETTLE_BOUND + o.damped_extra]
    assert late == []
    damped = [o.damped_extra for o in outcomes if o.damped_extra > 0]
    direct = [o for o in outcomes if o.expected_direct]
    assert all("None" not in o.paths for o in direct)
    assert max(o.max_checks_per_second for o in outcomes) <= 20
    print(
        f"\n{len(SEEDS)} seeds: {len(direct)} on D-udp, {len(SEEDS) - len(direct)} on T; "
        f"last path change {max(settled, default=0.0):.2f} s after the network settled; "
        f"at most {max(o.max_checks_per_second for o in outcomes)} checks in one second; "
        f"{sum(o.restarts for o in outcomes)} ICE restarts (consent lost or moved); "
        f"{len(damped)} seeds checked later for flap damping (at most "
        f"{max(damped, default=0.0):.1f} s after the {SETTLE_BOUND:.0f} s bound)"
    )
