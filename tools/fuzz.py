#!/usr/bin/env python3
"""Fuzz the ``*_untrusted`` parsers and the pure cores for a while: randomized, repeated rounds.

    .venv/bin/python tools/fuzz.py --minutes N [--seed S] [--scale K]

Runs the properties of tests/wire/test_wire_fuzz_more.py, tests/wire/test_offload.py and
tests/core/test_core_fuzz.py, which the test suite runs derandomized, with random examples: one
round is one pytest run with
MIPNODE_FUZZ_SCALE=K (each property runs K times its suite's examples, tests/fuzzkit.py), seeded
with ``--hypothesis-seed`` (S, S+1, ... per round; S random unless given) and the properties in
an order shuffled by that seed. Rounds repeat until N minutes are up; the round running then
skips the properties it has not started. Prints the examples each property ran, and on a failure
pytest's report (the falsifying example and a ``@reproduce_failure`` line) with the commands that
replay it, exiting 1. Failing examples are kept in .hypothesis/fuzz and tried first next time.

Imported by pytest as the plugin ``fuzz`` (``-p fuzz``), the same file counts examples, shuffles
and stops at the deadline; the environment variables below carry the round's settings.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILES = (
    "tests/wire/test_wire_fuzz_more.py",
    "tests/wire/test_offload.py",
    "tests/core/test_core_fuzz.py",
)
SCALE_ENV = "MIPNODE_FUZZ_SCALE"  # read by tests/fuzzkit.py
DEADLINE_ENV = "MIPNODE_FUZZ_DEADLINE"  # POSIX time after which no property starts
REPORT_ENV = "MIPNODE_FUZZ_REPORT"  # where the plugin writes {property: examples}
SEED_ENV = "MIPNODE_FUZZ_SEED"  # shuffles the properties of a round

# -- the pytest plugin (this module imported as ``fuzz``) -------------------------------------

_examples: Counter[str] = Counter()


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Shuffle the properties and count the examples each one runs."""
    random.Random(os.environ.get(SEED_ENV, "")).shuffle(items)
    for item in items:
        hypothesis = getattr(getattr(item, "obj", None), "hypothesis", None)
        if hypothesis is None:
            continue
        inner = hypothesis.inner_test

        @functools.wraps(inner)
        def counted(*args: Any, _inner: Any = inner, _name: str = item.name, **kwargs: Any) -> Any:
            _examples[_name] += 1
            return _inner(*args, **kwargs)

        hypothesis.inner_test = counted


def pytest_runtest_setup(item: Any) -> None:
    deadline = os.environ.get(DEADLINE_ENV)
    if deadline is not None and time.time() > float(deadline):
        import pytest

        pytest.skip("fuzzing time is up")


def pytest_sessionfinish() -> None:
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).write_text(json.dumps(dict(_examples)), encoding="utf-8")


# -- the command ------------------------------------------------------------------------------


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _round(
    seed: int, scale: int, deadline: float, report: Path
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MIPNODE_NO_SKIPS", None)  # skipping the properties past the deadline is the plan
    env.update(
        {
            SCALE_ENV: str(scale),
            DEADLINE_ENV: repr(deadline),
            REPORT_ENV: str(report),
            SEED_ENV: str(seed),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT / "tools"), env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    command = [
        _python(),
        "-m",
        "pytest",
        *FILES,
        "-q",
        "-x",
        "-p",
        "fuzz",
        f"--hypothesis-seed={seed}",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long to fuzz")
    parser.add_argument("--seed", type=int, help="seed of the first round (default: random)")
    parser.add_argument(
        "--scale", type=int, default=10, help="examples per property, times the suite's (10)"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.scale < 1:
        parser.error("--minutes must be positive and --scale at least 1")
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    deadline = time.time() + 60 * args.minutes
    totals: Counter[str] = Counter()
    print(f"fuzzing {', '.join(FILES)} for {args.minutes:g} min, seed {base}, scale {args.scale}")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "examples.json"
        rounds = 0
        while time.time() < deadline:
            seed = base + rounds
            rounds += 1
            started = time.monotonic()
            proc = _round(seed, args.scale, deadline, report)
            counts: dict[str, int] = (
                json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
            )
            report.unlink(missing_ok=True)
            totals.update(counts)
            print(
                f"round {rounds} (seed {seed}): {sum(counts.values())} examples"
                f" in {time.monotonic() - started:.0f} s"
            )
            if proc.returncode != 0:
                print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n")
                print(
                    f"FAILED in round {rounds}, seed {seed}. The failing example is saved in"
                    " .hypothesis/fuzz; replay it with\n"
                    f"  {SCALE_ENV}=1 .venv/bin/python -m pytest {' '.join(FILES)} -x\n"
                    f"or the whole round with\n"
                    f"  .venv/bin/python tools/fuzz.py --minutes 1 --seed {seed}"
                    f" --scale {args.scale}\n"
                    "or put the @reproduce_failure line above on the test; then add the input as"
                    " an @example."
                )
                _summary(totals, rounds)
                return 1
    _summary(totals, rounds)
    return 0


def _summary(totals: Counter[str], rounds: int) -> None:
    print(f"examples per property, {rounds} round(s):")
    for name, count in sorted(totals.items()):
        print(f"  {count:9d}  {name}")


if __name__ == "__main__":
    sys.exit(main())
