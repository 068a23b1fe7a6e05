"""Settings of the fuzz properties: deterministic in the suite, randomized under tools/fuzz.py.

In the test suite every property runs ``max_examples`` examples with ``derandomize=True``, so CI
sees the same examples on every run. ``tools/fuzz.py`` sets :data:`SCALE_ENV`: each property then
runs ``max_examples`` times that many random examples (the seed comes from pytest's
``--hypothesis-seed``), and failing examples are kept in :data:`DATABASE` and replayed first on
the next run. (Importable from every test directory: tests/conftest.py puts tests/ on the path.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

SCALE_ENV = "MIPNODE_FUZZ_SCALE"
DATABASE = Path(__file__).resolve().parent.parent / ".hypothesis" / "fuzz"


def fuzz_scale() -> int | None:
    """The multiplier tools/fuzz.py asked for, or None in an ordinary test run."""
    value = os.environ.get(SCALE_ENV, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SCALE_ENV} must be a positive integer, got {value!r}")
    return int(value)


def fuzz_settings(max_examples: int, **extra: Any) -> settings:
    """``max_examples`` derandomized examples, or the randomized, scaled run of tools/fuzz.py."""
    scale = fuzz_scale()
    if scale is None:
        return settings(max_examples=max_examples, deadline=None, derandomize=True, **extra)
    return settings(
        max_examples=max_examples * scale,
        deadline=None,
        derandomize=False,
        database=DirectoryBasedExampleDatabase(DATABASE),
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
        **extra,
    )


def mutations(seeds: Sequence[bytes], hot: int | None = None) -> st.SearchStrategy[bytes]:
    """A seed with 1-4 structure-blind mutations (flip a bit, set an octet, a length-like
    value, truncate, extend, splice another seed in); with ``hot``, mostly within the first
    ``hot`` octets, where the headers are."""

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            kind = draw(st.sampled_from(["flip", "set", "length", "truncate", "extend", "splice"]))
            limit = len(data) - 1
            if hot is not None and draw(st.integers(0, 5)) != 0:
                limit = min(limit, hot)
            position = draw(st.integers(0, limit))
            if kind == "flip":
                data[position] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":
                data[position] = draw(st.integers(0, 255))
            elif kind == "length":
                data[position] = draw(st.sampled_from([0, 1, 2, 0xFF, data[position] ^ 8]))
            elif kind == "truncate":
                del data[position:]
            elif kind == "extend":
                data += draw(st.binary(min_size=1, max_size=24))
            else:
                other = draw(st.sampled_from(seeds))
                data[position:] = other[draw(st.integers(0, max(len(other) - 1, 0))) :]
        return bytes(data)

    return mutated()
