"""Suite-wide rules.

Every skip in tests/ is about the environment (tshark, systemd-analyze, setpriv, root,
namespaces). CI installs all of it (tools/install.sh --test) and sets MIPNODE_NO_SKIPS=1,
so there a skip is a failure: coverage can never disappear silently behind a missing tool.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MIPNODE_NO_SKIPS") == "1" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where every test tool is installed (MIPNODE_NO_SKIPS): {reason}"
