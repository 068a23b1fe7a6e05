"""Human output of `mipnode status|paths|bindings` (mipnode/human.py), rendered from answers
recorded from real daemons (tests/data/human: the lab's nemo-mipnode-cn topology, a mobile
router with a host on a direct path, its home agent and a mipnode correspondent; netcheck from
behind the lab's NAT66): nothing of
Python leaks, times read as ages, columns line up, colour only where it belongs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mipnode import human
from mipnode.core import mn_ping

DATA = Path(__file__).parent / "data" / "human"
RECORDED_AT = 1796486600.0  # a few seconds after the answers were taken
ANSWERS = sorted(DATA.glob("*.json"))

LEAKS = {
    "None": re.compile(r"\bNone\b"),
    "True/False": re.compile(r"\b(True|False)\b"),
    "a tuple": re.compile(r"\(\(|\('|\(\""),
    "an epoch float": re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b"),
    "an unknown end as ?": re.compile(r" \? "),
    "a path of dashes": re.compile(r"- -> -"),
    "float noise": re.compile(r"\d\.\d{4,}"),
}


def rendered(command: str, answer: Any, colour: bool = False) -> str:
    stream = io.StringIO()
    human.render(command, answer, human.Out(stream, colour=colour), RECORDED_AT)
    return stream.getvalue()


def recorded(path: Path) -> tuple[str, Any]:
    return path.stem.split("-", 1)[1], json.loads(path.read_text())


# Commands every daemon answers; the others are the mobile node's alone.
DAEMON_COMMANDS = ("status", "paths", "bindings")


def test_every_role_and_command_is_recorded() -> None:
    names = {p.stem for p in ANSWERS}
    every_role = {f"{r}-{c}" for r in ("mn", "ha", "cn") for c in DAEMON_COMMANDS}
    mn_only = {f"mn-{c}" for c in human.RENDERERS if c not in DAEMON_COMMANDS}
    assert names == every_role | mn_only


@pytest.mark.parametrize("path", ANSWERS, ids=lambda p: p.stem)
def test_nothing_of_python_leaks(path: Path) -> None:
    command, answer = recorded(path)
    text = rendered(command, answer)
    assert text.strip()
    for what, pattern in LEAKS.items():
        assert not pattern.search(text), f"{what} in {path.stem}:\n{text}"
    assert "\x1b" not in text  # not a terminal: no colour


def test_the_paths_a_person_asked_about_read_as_written() -> None:
    mn = rendered("status", json.loads((DATA / "mn-status.json").read_text()))
    assert "ipv4 -  rtt 0.82 ms" in mn  # unknown is "-"
    assert "host  2001:db8:aaaa:1::2 -> 2001:db8:c::2  D-udp  since 13 s ago" in mn
    assert "9 min 54 s left" in mn
    ha = rendered("bindings", json.loads((DATA / "ha-bindings.json").read_text()))
    assert "T-native to 2001:db8:a::2" in ha  # its own end is not named, not "?"
    paths = rendered("paths", json.loads((DATA / "mn-paths.json").read_text()))
    assert "15 s ago: none -> T-native (check answered over IPv6 in 1.6 ms)" in paths
    assert "T-udp [2001:db8:a::2]:36812 -> [2001:db8:1::1]:4191" in paths


def test_columns_line_up_whatever_the_address_length() -> None:
    text = rendered("paths", json.loads((DATA / "cn-paths.json").read_text()))
    heads = [line for line in text.splitlines() if not line.startswith(" ")]
    assert len(heads) == 2 and len(heads[0].split()[0]) != len(heads[1].split()[0])
    assert len({h.index("mobile-node") for h in heads}) == 1
    assert len({h.index("D-udp") for h in heads}) == 1


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = json.loads((DATA / "mn-paths.json").read_text())
    coloured = rendered("paths", answer, colour=True)
    assert "\x1b[32msucceeded\x1b[0m" in coloured
    # colour takes no width: the columns still line up
    plain_lines = rendered("paths", answer).splitlines()
    stripped = [re.sub(r"\x1b\[\d*m", "", line) for line in coloured.splitlines()]
    assert stripped == plain_lines

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert human.Out(Tty()).colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert not human.Out(Tty()).colour
    assert not human.Out(io.StringIO()).colour


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "just now"),
        (12, "12 s ago"),
        (119, "119 s ago"),
        (600, "10 min ago"),
        (754, "12 min 34 s ago"),
        (7200, "2 h 0 min ago"),
        (200000, "2 d 7 h ago"),
        (-30, "in 30 s"),
    ],
)
def test_ages_read_like_a_person_says_them(seconds: float, text: str) -> None:
    assert human.ago(RECORDED_AT - seconds, RECORDED_AT) == text
    assert human.ago(None, RECORDED_AT) == human.UNKNOWN


def test_netcheck_says_each_verdict_and_the_pick() -> None:
    text = rendered("netcheck", json.loads((DATA / "mn-netcheck.json").read_text()))
    assert "T-native (ESP)" in text
    assert "through NAT66 (seen as 2001:db8:f1::2)" in text
    assert "nat  IPv6 endpoint-independent or address-dependent (one home-agent address)" in text
    assert "a daemon would pick T-udp [fd00:6::2]:" in text
    assert "no IPv4 address on this host" in text


def test_ping_says_the_spread_per_path_and_the_path_data_takes() -> None:
    text = rendered("ping", json.loads((DATA / "mn-ping.json").read_text()))
    assert text.startswith("ping 2001:db8:c::2 (correspondent), data takes D-udp")
    d_udp = next(line for line in text.splitlines() if line.strip().startswith("D-udp"))
    assert "selected" in d_udp and "3/3 answered  min/median/max " in d_udp
    assert "(to the home agent)" in text


def test_a_ping_round_without_answers_reads_failed() -> None:
    answer = json.loads((DATA / "mn-ping.json").read_text())
    for r in answer["rounds"]:
        for p in r["paths"]:
            p.update(result="no answer", rtt_ms=None)
    answer["summary"] = mn_ping.summary(answer["rounds"][:1])
    text = rendered("ping", answer)
    assert text.count("failed  no answer") == 2
