"""`mipnode lab` says how far it is after every scenario (mipnode/lab/progress.py)."""

from __future__ import annotations

from mipnode.lab.progress import Progress


def result(name: str, passed: bool = True, **observed: str) -> dict[str, object]:
    return {"name": name, "passed": passed, "observed": observed, "diagnosis": None}


def test_each_line_counts_names_the_verdict_the_time_the_paths_and_what_is_left() -> None:
    p = Progress(4)
    first = p.done(result("strict-fw", mn_ha="T-native", mn_cn="D-udp"), 9.14)
    assert first == "[1/4] strict-fw  PASS  9.1 s  T-native / D-udp  (about 25 s left)"
    second = p.done(result("open", mn_ha="T-udp"), 30.0)
    assert second.startswith("[2/4] open  PASS  30.0 s  T-udp / -  (about ")
    assert second.endswith(" left)")  # the median of 9.1 and 30 s, twice: about 40 s
    assert "about 40 s" in second
    failed = result("nat66", passed=False)
    failed["diagnosis"] = "not registered after 25 s"
    p.done(failed, 120.0)
    last = p.done(result("cn-pinholes", mn_ha="T-native", mn_cn="T-native"), 10.0)
    assert last == "[4/4] cn-pinholes  PASS  10.0 s  T-native / T-native"


def test_a_failure_says_why_and_long_estimates_are_in_minutes() -> None:
    p = Progress(60)
    failed = result("nat66", passed=False)
    failed["diagnosis"] = "not registered after 25 s"
    line = p.done(failed, 30.0)
    assert "  FAIL  " in line and "(not registered after 25 s)" in line
    assert line.endswith("(about 30 min left)")
