"""Layering rule (docs/internals.md): the pure packages import no I/O, clock or randomness.

Every module under mipnode/wire, mipnode/core, ice and tunnels is parsed with ``ast``; any
``import x``, ``import x.y``, ``from x import y``, ``from x.y import z`` or
``__import__("x")`` / ``importlib.import_module("x")`` naming a forbidden top-level package fails.
Imports under ``if TYPE_CHECKING:`` count too: the rule is about what the code depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("mipnode/wire", "mipnode/core", "ice", "tunnels")
FORBIDDEN = frozenset({"trio", "socket", "os", "time", "random", "asyncio", "scapy", "pyroute2"})
DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Return "line: module" for every forbidden import in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in DYNAMIC_IMPORTERS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names = [first.value]
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    return found


def pure_modules() -> list[Path]:
    modules: list[Path] = []
    for package in PURE_PACKAGES:
        modules += sorted((ROOT / package).rglob("*.py"))
    return modules


@pytest.mark.parametrize("module", pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports(module: Path) -> None:
    assert forbidden_imports(module.read_text(encoding="utf-8"), str(module)) == []


def test_every_pure_package_is_walked() -> None:
    for package in PURE_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    walked = {p.relative_to(ROOT).as_posix() for p in pure_modules()}
    assert "mipnode/wire/mh.py" in walked
    assert "tunnels/demux.py" in walked


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as clock",
        "import json, random",
        "from trio import lowlevel",
        "from trio.lowlevel import current_clock",
        "from socket import AF_INET6",
        "from asyncio.events import get_event_loop",
        "import scapy.all",
        "from pyroute2 import IPRoute",
        "def f():\n    import time\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n",
        "__import__('os')",
        "import importlib\nimportlib.import_module('random')",
    ],
)
def test_checker_catches_violations(source: str) -> None:
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "import hmac, hashlib, struct",
        "from ipaddress import IPv6Address",
        "from . import os",  # a sibling module that happens to be named os
        "from .time import x",
        "import timeit",
        "import osmosis",
        "from mipnode.wire.mh import encode_mh",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert forbidden_imports(source) == []
