"""`mipnode completion bash` (mipnode/completion.py): the script, sourced into a real bash,
completes what the program really accepts, because it is written from the parser."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mipnode.cli import build_parser
from mipnode.completion import bash_script

SCRIPT = bash_script(build_parser(), ["open", "nemo-move", "nemo-open"])


def complete(*words: str) -> list[str]:
    """COMPREPLY for the command line ``mipnode WORDS`` with the cursor on the last word."""
    line = " ".join(f"'{w}'" for w in ("mipnode", *words))
    program = (
        f"{SCRIPT}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _mipnode; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return sorted(w for w in out.stdout.splitlines() if w)


def test_subcommands_options_and_choices() -> None:
    assert complete("") == sorted(
        [
            "bench",
            "bindings",
            "cn",
            "completion",
            "ha",
            "lab",
            "mn",
            "paths",
            "ping",
            "netcheck",
            "status",
            "--help",
            "--version",
        ]
    )
    assert complete("st") == ["status"]
    assert complete("status", "--j") == ["--json"]
    assert complete("lab", "d") == ["down"]
    assert "--compare-protection" in complete("lab", "--c")
    assert complete("mn", "--c") == ["--config"]


def test_scenario_names_after_lab_s_and_files_after_config(tmp_path: Path) -> None:
    assert complete("lab", "-s", "nemo-") == ["nemo-move", "nemo-open"]
    for name in ("ha.toml", "mn.toml"):
        (tmp_path / name).write_text("")
    assert complete("ha", "--config", f"{tmp_path}/h") == [f"{tmp_path}/ha.toml"]
    assert complete("lab", "--pcap", f"{tmp_path}/m") == [f"{tmp_path}/mn.toml"]
    assert complete("mn", "-c", f"{tmp_path}/m") == [f"{tmp_path}/mn.toml"]
    assert complete("ping", "::1", "-c", f"{tmp_path}/m") == []  # a count, not a file


def test_every_option_the_parser_knows_is_offered() -> None:
    """Written from the parser: an option added to the program is completed at once."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[attr-defined]
        offered = complete(name, "-")
        for action in p._actions:
            for option in action.option_strings:
                assert option in offered or not option.startswith("-"), (name, option)
