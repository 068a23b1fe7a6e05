"""Every `mipnode` command the README and docs/ show exists, with the options shown: a doc that
names a command or an option the program does not have fails here (the configuration keys are
checked by tests/test_config.py against the loader)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mipnode.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?$(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?<![\w./@-])mipnode\s+([a-z][a-z0-9|-]*)([^#\n]*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _subcommands() -> dict[str, set[str]]:
    """Each subcommand and the options it takes (the top-level ones too)."""
    parser = build_parser()
    top = {o for a in parser._actions for o in a.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: top | {o for a in p._actions for o in a.option_strings}
        for name, p in sub.choices.items()
    }


def _uses(text: str) -> list[tuple[str, list[str], str]]:
    """Every `mipnode NAME[|NAME...] rest` in code: what is shown, the names, the rest."""
    blocks = FENCE.findall(text)
    segments = [line for b in blocks for line in b.splitlines()]
    segments += SPAN.findall(FENCE.sub("", text))
    return [
        (m.group(0).strip(), m.group(1).split("|"), m.group(2))
        for segment in segments
        for m in COMMAND.finditer(segment)
    ]


def _problems(text: str) -> list[str]:
    commands = _subcommands()
    out = []
    for shown, names, rest in _uses(text):
        for name in names:
            if name not in commands:
                out.append(f"`{shown}`: no command {name!r}")
                continue
            out += [
                f"`{shown}`: {name} has no {o}"
                for o in OPTION.findall(rest)
                if o not in commands[name]
            ]
    return out


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(path: Path) -> None:
    assert _problems(path.read_text(encoding="utf-8")) == []


def test_the_docs_show_every_command() -> None:
    shown = {n for p in DOCS for _, names, _ in _uses(p.read_text(encoding="utf-8")) for n in names}
    assert set(_subcommands()) - shown == set()


def test_a_wrong_command_or_option_would_be_caught() -> None:
    text = "see `mipnode stauts --json`, then\n```\nmipnode lab --reprot DIR  # a typo\n```\n"
    assert _problems(text) == [
        "`mipnode lab --reprot DIR`: lab has no --reprot",
        "`mipnode stauts --json`: no command 'stauts'",
    ]
