"""Protocol timing lives in the cores: no driver module but the pump reads a clock or sleeps.

Every module under mipnode/drivers except pump.py is parsed with ``ast``. Any reference to a
clock or a timed wait -- ``trio.sleep``, ``trio.sleep_until``, ``trio.current_time``,
``trio.move_on_after``/``move_on_at``, ``trio.fail_after``/``fail_at``, ``time.time``,
``time.monotonic``, ``time.perf_counter`` and their ``_ns`` forms, ``datetime.now`` -- fails,
whether called, imported by name (``from trio import sleep``) or stored (``clock =
time.monotonic``). The pump (drivers/pump.py) is the one place that may, and offers the rest
what they need: ``Pump.now``, ``stamp()``, ``sleep()`` for I/O back-offs, ``time_limit()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ROOT / "mipnode" / "drivers"
THE_PUMP = "pump.py"
FORBIDDEN = {
    "trio": {
        "sleep",
        "sleep_until",
        "sleep_forever",
        "current_time",
        "move_on_after",
        "move_on_at",
        "fail_after",
        "fail_at",
    },
    "time": {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "sleep",
        "clock_gettime",
    },
    "datetime": {"now", "utcnow", "today"},
}
ALL_NAMES = set().union(*FORBIDDEN.values())


def clock_uses(source: str, filename: str = "<string>") -> list[str]:
    """ "line: what" for every clock or timed wait ``source`` touches."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ALL_NAMES:
            base = node.value
            # trio.sleep, time.monotonic, trio.lowlevel.current_time, datetime.datetime.now
            root = base
            while isinstance(root, ast.Attribute):
                root = root.value
            name = root.id if isinstance(root, ast.Name) else ""
            if name in FORBIDDEN and node.attr in FORBIDDEN[name]:
                found.append(f"{node.lineno}: {name}...{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            for alias in node.names:
                if top in FORBIDDEN and alias.name in FORBIDDEN[top]:
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    return found


def driver_modules() -> list[Path]:
    return sorted(p for p in DRIVERS.glob("*.py") if p.name != THE_PUMP)


@pytest.mark.parametrize("module", driver_modules(), ids=lambda p: p.name)
def test_no_driver_but_the_pump_reads_a_clock_or_sleeps(module: Path) -> None:
    assert clock_uses(module.read_text(encoding="utf-8"), str(module)) == []


def test_the_pump_is_where_the_clock_is() -> None:
    pump = (DRIVERS / THE_PUMP).read_text(encoding="utf-8")
    assert clock_uses(pump), "the pump should be the module that reads the clock"
    assert {p.name for p in driver_modules()} >= {"mn_daemon.py", "ha_daemon.py", "cn_daemon.py"}


@pytest.mark.parametrize(
    "source",
    [
        "import trio\nasync def f():\n    await trio.sleep(1)\n",
        "import trio\nnow = trio.current_time()\n",
        "import trio\nwith trio.move_on_after(5):\n    pass\n",
        "import trio\nwith trio.fail_after(5):\n    pass\n",
        "import trio\nwith trio.move_on_at(5):\n    pass\n",
        "import trio\ntrio.lowlevel.current_time\n",
        "import time\nx = time.time()\n",
        "import time\nclock = time.monotonic\n",
        "import time\nx = time.perf_counter_ns()\n",
        "from trio import sleep\n",
        "from time import monotonic as m\n",
        "import datetime\nx = datetime.datetime.now()\n",
    ],
)
def test_the_checker_catches_clocks(source: str) -> None:
    assert clock_uses(source)


@pytest.mark.parametrize(
    "source",
    [
        "from mipnode.drivers import pump\nnow = pump.stamp()\n",
        "import trio\nawait_readable = trio.lowlevel.wait_readable\n",
        "import trio\nasync def f(e):\n    await e.wait()\n",
        "def sleep():\n    pass\nsleep()\n",
        "import os\nos.read(0, 1)\n",
    ],
)
def test_the_checker_allows_the_rest(source: str) -> None:
    assert clock_uses(source) == []
