"""`mipnode lab up/down` and cleanup after a killed run, through the real CLI."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mipnode.lab import netns

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.netns]

CLI = [sys.executable, "-m", "mipnode.cli"]


def _lab(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "lab", *args], capture_output=True, text=True, timeout=timeout)


def _ours(state: Path) -> list[str]:
    """Namespaces named in this test's run records (never anyone else's)."""
    names = []
    for p in state.glob("*.json"):
        names += json.loads(p.read_text())["namespaces"]
    return names


def test_lab_up_holds_a_topology_that_status_can_inspect_then_down_removes_it(
    isolated_lab_state: Path,
) -> None:
    run_id = None
    try:
        up = _lab("up", "-s", "open")
        assert up.returncode == 0, up.stderr
        named = re.match(r"lab up: run id (\w+), scenario open ", up.stdout)
        assert named, up.stdout
        run_id = named.group(1)
        assert f"remove it: mipnode lab down {run_id}\n" in up.stdout
        match = re.search(r"ip netns exec (mipl-\w+-mn) mipnode status --json", up.stdout)
        assert match, up.stdout
        ns = match.group(1)
        assert ns == f"mipl-{run_id}-mn"
        created = _ours(isolated_lab_state)
        assert ns in created and ns in netns.list_namespaces()
        status = subprocess.run(
            ["ip", "netns", "exec", ns, *CLI, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert status.returncode == 0, status.stderr
        binding = json.loads(status.stdout)["bindings"][0]
        assert binding["state"] == "registered" and binding["path"]["kind"] == "T-native"
    finally:
        # --all only reaches this test's own records (isolated_lab_state)
        down = _lab("down", run_id) if run_id else _lab("down", "--all")
    assert down.returncode == 0, down.stderr
    assert down.stdout == f"removed lab {run_id} (open)\n"
    assert not set(created) & set(netns.list_namespaces())
    assert not list(isolated_lab_state.glob("*.json"))


def _make_namespace(name: str, made: list[str]) -> str:
    made.append(name)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    return name


def _record(run_id: str, mode: str, pid: int, namespaces: list[str]) -> netns.RunRecord:
    record = netns.RunRecord(run_id, pid, mode, namespaces, [], f"scenario-{run_id}", "")
    record.save()
    return record


def test_lab_down_removes_the_named_topology_only_and_all_only_what_the_lab_recorded(
    isolated_lab_state: Path,
) -> None:
    """Topologies left up (run records with their namespaces, no daemons: down does not care),
    a run still going, the leftovers of a killed run, and namespaces the lab did not create:
    one looking like a lab's, and one a damaged record names. `down ID` takes one topology,
    `down --all` every one the lab left up and the leftovers; nothing else is ever deleted."""
    tag = secrets.token_hex(3)
    made: list[str] = []
    try:
        a, b, live, killed = f"a{tag}", f"b{tag}", f"c{tag}", f"d{tag}"
        a_ns = [_make_namespace(f"mipl-{a}-{n}", made) for n in ("mn", "fw")]
        b_ns = [_make_namespace(f"mipl-{b}-{n}", made) for n in ("mn", "fw")]
        live_ns = _make_namespace(f"mipl-{live}-mn", made)
        killed_ns = _make_namespace(f"mipl-{killed}-mn", made)
        foreign = _make_namespace(f"mipl-{tag}f-mn", made)  # no record names it
        stranger = _make_namespace(f"mipnode-test-{tag}", made)  # named by a damaged record
        _record(a, "up", 1, a_ns)
        _record(b, "up", 1, [*b_ns, stranger])
        _record(live, "run", os.getpid(), [live_ns])  # a run going on: this process
        gone = subprocess.Popen(["true"])
        gone.wait()
        _record(killed, "run", gone.pid, [killed_ns])  # a run killed outright

        down = _lab("down", a)
        assert (down.returncode, down.stdout) == (0, f"removed lab {a} (scenario-{a})\n")
        left = set(netns.list_namespaces())
        assert not set(a_ns) & left and {*b_ns, live_ns, foreign, stranger} <= left
        assert sorted(r.run_id for r in netns.RunRecord.load_all()) == [b, live, killed]

        refused = _lab("down")
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"mipnode lab: down needs a run id or --all; known: {b} (up: scenario-{b}), "
            f"{live} (running: scenario-{live}, pid {os.getpid()}), "
            f"{killed} (left over: scenario-{killed})"
        ]
        unknown = _lab("down", a)
        assert unknown.returncode == 2
        assert unknown.stderr.startswith(f"mipnode lab: no lab topology '{a}'; known: {b} ")
        busy = _lab("down", live)
        assert busy.returncode == 2 and "belongs to a running `mipnode lab`" in busy.stderr
        assert set(made) - set(a_ns) <= set(netns.list_namespaces())

        everything = _lab("down", "--all")
        assert everything.returncode == 0, everything.stderr
        assert everything.stdout.splitlines() == [
            f"removed lab {b} (scenario-{b})",
            f"removed lab {killed} (scenario-{killed})",
            f"left alone: {live} (running: scenario-{live}, pid {os.getpid()}), "
            "which removes it when it ends",
        ]
        left = set(netns.list_namespaces())
        assert not {*b_ns, killed_ns} & left and {live_ns, foreign, stranger} <= left
        assert [r.run_id for r in netns.RunRecord.load_all()] == [live]
    finally:
        existing = set(netns.list_namespaces())
        for name in made:  # only what this test made, by name
            if name in existing:
                subprocess.run(["ip", "netns", "delete", name], check=False)


def _host_view() -> tuple[str, str]:
    """The host namespace's nft tables and interfaces: a lab run must never change them."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return tables, "\n".join(sorted(ln.split(":")[1].strip() for ln in links.splitlines()))


def test_a_killed_run_is_cleaned_up_by_the_next_lab_command(
    isolated_lab_state: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-run (daemons, packet captures and the scenario's block table all live),
    then the next lab command removes every namespace, process and nft table of that run."""
    scenario = tmp_path / "killed.toml"
    scenario.write_text(
        'name = "killed"\n[topology]\nfirewall = "stateful"\n'
        '[[timeline]]\ndo = "block"\nproto = "udp"\n'
        '[[timeline]]\ndo = "wait"\nseconds = 60\n[expect]\nmn_ha = "T-native"\n'
    )
    host_before = _host_view()
    proc = subprocess.Popen(
        [*CLI, "lab", "-s", str(scenario), "--pcap", str(tmp_path / "pcap")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        record, fw_tables = None, ""
        while time.monotonic() < deadline and record is None:
            for rec in netns.RunRecord.load_all():
                fw = rec.ns("fw")
                if fw in netns.list_namespaces():
                    fw_tables = subprocess.run(
                        ["ip", "netns", "exec", fw, "nft", "list", "tables"],
                        capture_output=True,
                        text=True,
                    ).stdout
                    if "mipnode_lab_block" in fw_tables:  # the timeline is running
                        record = rec
            time.sleep(0.1)
        assert record is not None, "the lab run never reached its timeline"
        assert "mipnode_lab" in fw_tables
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert set(record.namespaces) <= set(netns.list_namespaces())  # left behind
        assert len(record.daemons) > 2  # captures and daemons
        cleanup = _lab("down", "--all")
        assert cleanup.returncode == 0, cleanup.stderr
        assert record.run_id in cleanup.stdout
        assert not set(record.namespaces) & set(netns.list_namespaces())
        for pid in record.daemons:
            deadline = time.monotonic() + 5
            while netns.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not netns.pid_alive(pid), f"process {pid} survived cleanup"
        assert _host_view() == host_before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for rec in netns.RunRecord.load_all():
            rec.teardown()


def test_bad_nft_text_is_refused_with_file_and_key_before_anything_is_built(
    isolated_lab_state: Path, tmp_path: Path
) -> None:
    scenario = tmp_path / "bad-nft.toml"
    scenario.write_text(
        'name = "bad-nft"\n[topology]\nfirewall = "custom"\n[nft]\n'
        'fw = "table inet t { chain c { ip6 daddr $NOWHERE drop } }"\n'
        '[expect]\nmn_ha = "T-native"\n'
    )
    before = set(netns.list_namespaces())
    proc = _lab("-s", str(scenario))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"mipnode lab: {scenario}: nft.fw: nft rejects it: "), line
    assert "NOWHERE" in line
    assert set(netns.list_namespaces()) == before and not list(isolated_lab_state.glob("*"))


def test_a_user_scenario_file_runs_repeatedly_with_a_summary(
    isolated_lab_state: Path, tmp_path: Path
) -> None:
    """A user's own firewall rules (inline nft with placeholders), a sysctl and a timeline
    that blocks and unblocks the tunnel's protocol, through the real CLI, twice, with its
    HTML report."""
    scenario = tmp_path / "my-firewall.toml"
    scenario.write_text(
        '''name = "my-firewall"
description = "a user scenario: no native tunnel (41, ESP) towards the home agent"

[topology]
firewall = "custom"

[nft]
fw = """
table inet mine {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ip6 daddr $HA meta l4proto { ipv6, esp } counter drop
    ct state established,related accept
    iifname $LAN accept
  }
}
"""

[sysctl.fw]
"net.netfilter.nf_conntrack_udp_timeout" = 20

[[timeline]]
do = "block"
proto = "udp"
between = ["mn", "ha"]

[[timeline]]
do = "unblock"
proto = "udp"
between = ["mn", "ha"]

[[timeline]]
do = "wait-for-path"
mn_ha = "T-udp"
within_s = 5

[traffic]
ping_count = 3
tcp_bytes = 200000

[expect]
mn_ha = "T-udp"
first_data_ms = 8000
tcp_survives = true
'''
    )
    html = tmp_path / "html"
    proc = _lab("-s", str(scenario), "--repeat", "2", "--json", "--report", str(html), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)  # the report's location went to stderr
    assert f"HTML report: {html / 'index.html'}\n" in proc.stderr
    page = (html / "index.html").read_text()
    for run in (1, 2):
        assert f'<section class="scenario pass" id="sc-my-firewall-run{run}"' in page
    assert page.count('<svg class="timeline"') == 2
    assert [(r["name"], r["run"], r["passed"]) for r in report["scenarios"]] == [
        ("my-firewall", 1, True),
        ("my-firewall", 2, True),
    ]
    for run in report["scenarios"]:
        assert run["observed"]["mn_ha"] == "T-udp"
        assert [s["step"] for s in run["timeline"]] == [
            "block udp on fw (2001:db8:a::2 <-> 2001:db8:1::1)",
            "unblock udp on fw (2001:db8:a::2 <-> 2001:db8:1::1)",
            "wait for MN-HA=T-udp within 5 s",
        ]
        assert run["timeline"][1]["rules_removed"] == 2
        assert run["traffic"]["stream"]["ok"] and run["traffic"]["ping_after_timeline"]
        assert 0 < run["timings_ms"]["first_data"] <= 8000
    (summary,) = report["summary"]
    assert (summary["runs"], summary["passed"], report["repeat"]) == (2, 2, 2)
    assert summary["registration_ms"]["min"] <= summary["registration_ms"]["max"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_root_the_lab_stops_with_one_line_before_creating_anything(
    isolated_lab_state: Path,
) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, *CLI, "lab", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run mipnode here: {probe.stderr.strip()[-200:]}")
    before = set(netns.list_namespaces())
    proc = subprocess.run(
        [*nobody, *CLI, "lab", "-s", "open"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mipnode lab: needs root (it creates network namespaces, veth links and nftables rules)"
    ]
    assert set(netns.list_namespaces()) == before and not list(isolated_lab_state.glob("*"))
