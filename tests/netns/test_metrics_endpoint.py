"""The metrics endpoint on real daemons (docs/metrics.md): every lab daemon serves it on its
namespace's loopback; scraped from inside each namespace and read with prometheus_client's
parser, the mobile node, the home agent and the correspondent say who they are and what their
paths are."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mipnode.lab.topology import METRICS_LISTEN

from .conftest import needs_root

pytestmark = needs_root

FETCH = (
    "import sys, urllib.request; "
    f"sys.stdout.write(urllib.request.urlopen('http://{METRICS_LISTEN}/metrics', timeout=5)"
    ".read().decode())"
)


def scrape(lab: Any, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = subprocess.run(
        ["ip", "netns", "exec", lab.t.ns(node), sys.executable, "-c", FETCH],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }


def test_each_daemon_serves_its_metrics(make_lab: Any) -> None:
    lab = make_lab(firewall="open", cn_mipnode=True)
    mn, ha, cn = (scrape(lab, n) for n in ("mn", "ha", "cn"))
    assert mn[("mipnode_info", (("role", "mn"),))] == 1
    assert mn[("mipnode_bindings", ())] == 1
    assert mn[("mipnode_paths", (("kind", "T-native"),))] == 1
    assert mn[("mipnode_events_total", (("event", "registration_registered"),))] >= 1
    assert ha[("mipnode_info", (("role", "ha"),))] == 1
    assert ha[("mipnode_bindings", ())] == 1
    assert ha[("mipnode_paths", (("kind", "T-native"),))] == 1
    assert cn[("mipnode_info", (("role", "cn"),))] == 1
