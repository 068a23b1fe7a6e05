"""`mipnode lab --report`: the HTML page built from a recorded lab run, its escaping, the
history the lab records for it, and the page as a real browser renders it.

tests/data/lab_report/lab-run.json is what `mipnode lab -s direct-state-lost -s home-path-dies
--json --pcap /tmp/pcaps-x` printed: two timelines with a TCP stream and UDP at 50/s, one where
the MN-CN path drops from D-udp to the home path and back, one where the MN-HA path moves from
T-native to T-udp and back.
"""

from __future__ import annotations

import copy
import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mipnode.lab import html_report, timeline, traffic
from mipnode.lab.cli import _write_report
from mipnode.lab.html_report import Segment

RUN = json.loads((Path(__file__).parent / "data" / "lab_report" / "lab-run.json").read_text())
CHROMIUM_TIMEOUT_S = 60
VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text = ""

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[Node]:
        """Every descendant ``tag`` with class ``cls`` and these attribute values."""
        out = []
        for child in self.children:
            if (
                child.tag == tag
                and (cls is None or cls in child.classes())
                and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            ):
                out.append(child)
            out += child.find(tag, cls, **attrs)
        return out

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class Tree(HTMLParser):
    """The element tree of a page: enough of a DOM to check what a test expects in it."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.at = Node("#document", {}, None)
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        if tag not in VOID:
            self.at = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.at.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.at))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.text += data


def _results() -> list[dict[str, Any]]:
    return copy.deepcopy(RUN["scenarios"])


def _kinds(section: Node, lane: str) -> list[str]:
    (g,) = section.find("g", "lane", data_lane=lane)
    return [r.attrs["data-kind"] for r in g.find("rect", "segment")]


def check_page(root: Node) -> None:
    """What the recorded run must show, in the page as written and as a browser renders it."""
    summary = root.find("table", "summary")
    assert len(summary) == 1
    rows = summary[0].find("tr", "pass")
    assert [r.find("a")[0].all_text() for r in rows] == ["direct-state-lost", "home-path-dies"]
    sections = root.find("section", "scenario")
    assert [s.attrs["id"] for s in sections] == ["sc-direct-state-lost", "sc-home-path-dies"]
    direct, home = sections
    for section, result in zip(sections, RUN["scenarios"], strict=True):
        (svg,) = section.find("svg", "timeline")
        markers = svg.find("g", "step-marker")
        assert [m.attrs["data-step"] for m in markers] == [
            str(n) for n in range(1, len(result["timeline"]) + 1)
        ]
        assert [len(m.find("line")) for m in markers] == [1] * len(markers)
        for flow in ("stream", "udp"):
            (panel,) = svg.find("g", "flow", data_flow=flow)
            assert panel.find("path", "rate")
            assert len(panel.find("rect", "gap")) == len(result["history"][flow]["gaps"]) >= 1
        steps = section.find("table", "steps")[0].find("tr")[1:]
        assert len(steps) == len(result["timeline"])
        links = [a.attrs["href"] for a in section.find("ul", "pcaps")[0].find("a")]
        assert len(links) == len(result["pcaps"]) and not any(h.startswith("/") for h in links)
        assert all(h.endswith(".pcap") for h in links)
    # The MN-CN path dropped from D-udp to the home path (T-native) and came back; the MN-HA
    # path moved from T-native to T-udp (through a moment with none) and back.
    assert _kinds(direct, "mn-ha") == ["none", "T-native"]
    assert _kinds(direct, "mn-cn") == ["none", "T-native", "D-udp", "T-native", "D-udp"]
    assert _kinds(home, "mn-ha") == ["none", "T-native", "none", "T-udp", "T-native"]
    assert _kinds(home, "mn-cn") == _kinds(home, "mn-ha")


def test_the_page_has_a_summary_and_per_run_a_timeline_with_paths_steps_flows_and_pcaps(
    tmp_path: Path,
) -> None:
    index = html_report.write(_results(), tmp_path / "report", written="now")
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text()
    check_page(Tree(page).root)
    # Self-contained: nothing to fetch, nothing to run.
    for outside in ("<script", "<link", "@import", "http://", "https://", "url("):
        assert outside not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert 'href="../../../../../tmp/pcaps-x/' not in page  # relative to the report, not cwd
    assert "/tmp/pcaps-x/direct-state-lost</a>" in page  # the folder's name as text


def test_every_string_from_a_result_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    results = _results()
    r = results[0]
    r["name"] = evil
    r["description"] = '<img src=x onerror="alert(1)">'
    r["diagnosis"] = "'\"&<b>bold</b>"
    r["tc"] = "<i>"
    r["timeline"][0]["step"] = "<svg onload=alert(2)>"
    r["history"]["mn_ha"][0]["reason"] = "</title><script>alert(3)</script>"
    r["history"]["mn_cn"][0]["to"] = '"><script>alert(4)</script>'
    r["observed"]["mn_ha"] = "<u>"
    r["pcaps"][0] = '/tmp/x"><script>alert(5)</script>.pcap'
    page = html_report.render(results)
    lowered = page.lower()
    for raw in ("<script", "<img", "<b>", "<i>", "<u>", "<svg onload", 'x"><'):
        assert raw not in lowered
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&#x27;&quot;&amp;&lt;b&gt;bold&lt;/b&gt;" in page
    sections = Tree(page).root.find("section", "scenario")
    assert sections[0].attrs["id"] == "sc--script-alert-x-script-"
    assert sections[0].attrs["data-name"] == evil  # escaped in the page, intact in the DOM
    # An unknown path kind gets the fixed class, never one built from its text.
    kinds = _kinds(sections[0], "mn-cn")
    assert '"><script>alert(4)</script>' in kinds
    assert 'class="segment k-other" data-kind="&quot;&gt;&lt;script&gt;' in page


def test_a_report_that_cannot_be_written_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert _write_report(_results(), tmp_path / "file" / "report") == (
        f"cannot write the HTML report into {tmp_path}/file/report: Not a directory"
    )
    assert _write_report(_results(), tmp_path / "new" / "report") is None
    assert (tmp_path / "new" / "report" / "index.html").exists()
    assert [p.name for p in (tmp_path / "new" / "report").iterdir()] == ["index.html"]


def test_mn_cn_back_on_the_home_path_follows_the_mn_ha_lane() -> None:
    history = {
        "mn_ha": [
            {"at_ms": 1000.0, "from": None, "to": "T-native", "reason": "registered"},
            {"at_ms": 5000.0, "from": "T-native", "to": "T-udp", "reason": "esp blocked"},
        ],
        "mn_cn": [
            {"at_ms": 2000.0, "from": None, "to": "D-udp", "reason": "checked"},
            {"at_ms": 4000.0, "from": "D-udp", "to": None, "reason": "selected pair lost"},
        ],
    }
    lanes = html_report.lanes(history, 8000.0)
    assert lanes["mn_ha"] == [
        Segment(0.0, 1000.0, "none", ""),
        Segment(1000.0, 5000.0, "T-native", "registered"),
        Segment(5000.0, 8000.0, "T-udp", "esp blocked"),
    ]
    assert [(s.start_ms, s.end_ms, s.kind) for s in lanes["mn_cn"]] == [
        (0.0, 1000.0, "none"),
        (1000.0, 2000.0, "T-native"),
        (2000.0, 4000.0, "D-udp"),
        (4000.0, 5000.0, "T-native"),
        (5000.0, 8000.0, "T-udp"),
    ]
    assert lanes["mn_cn"][3].reason == "via the home agent (selected pair lost)"


def test_a_result_without_history_or_traffic_still_renders() -> None:
    """Results of a diagnosis scenario, of a run that broke off, of a lab before `history`."""
    old = _results()[1]
    del old["history"], old["pcaps"], old["pcap_stats"]
    bare = {"name": "ha-behind-fw", "passed": False, "diagnosis": "lab error: <x>"}
    page = html_report.render([old, bare])
    root = Tree(page).root
    one, two = root.find("section", "scenario")
    assert "not recorded" in one.find("g", "lane", data_lane="mn-ha")[0].all_text()
    # The steps still show in the table; without the timeline's start they have no marker.
    assert len(one.find("table", "steps")[0].find("tr")) == 1 + len(old["timeline"])
    assert not one.find("g", "step-marker")
    assert "fail" in two.classes() and two.find("p", "diagnosis")[0].all_text() == "lab error: <x>"
    assert two.find("svg", "timeline")


def test_a_receiver_keeps_bounded_bins_and_its_pauses() -> None:
    meter = traffic.Meter()
    t0 = meter.start_mono
    for i in range(6000):  # 60 s, every 10 ms, silent from 10.0 s to 12.5 s
        if not 1000 <= i < 1250:
            meter.add(1024, t0 + i * 0.01)
    seen = meter.report(end=t0 + 61)
    assert seen["bin_ms"] == 400 and len(seen["counts"]) <= traffic.MAX_BINS
    assert sum(seen["counts"]) == 5750 * 1024
    ((since, length),) = seen["gaps"]
    assert since == pytest.approx(9990, abs=1) and length == pytest.approx(2510, abs=1)
    # On the run's clock: ms since the run started, the pause placed from the receiver's start.
    on_run = timeline.over_time({"over_time": seen}, seen["start"] - 2.0)
    assert on_run is not None and on_run["start_ms"] == pytest.approx(2000, abs=1)
    assert on_run["gaps"] == [{"at_ms": pytest.approx(11990, abs=1), "gap_ms": length}]
    assert timeline.over_time({"received": 3}, 0.0) is None


def test_the_mns_path_log_is_kept_on_the_runs_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    started = 1_700_000_000.0
    answers: dict[str, Any] = {
        "paths": [
            {
                "role": "home-agent",
                "changes": [{"at": started + 1.5, "from": None, "to": "T-native", "reason": "r"}],
            },
            {"role": "correspondent", "peer": "2001:db8:c::3", "changes": [{"at": started}]},
            {
                "role": "correspondent",
                "peer": "2001:db8:c::2",
                "changes": [{"at": started + 3.25, "from": "D-udp", "to": None, "reason": "x"}],
            },
        ]
    }
    monkeypatch.setattr(timeline, "daemon_status", lambda t, node, cmd="status": answers.get(cmd))
    t: Any = type("T", (), {"mobile_network": False})()
    assert timeline.path_changes(t, "2001:db8:c::2", started) == {
        "mn_ha": [{"at_ms": 1500.0, "from": None, "to": "T-native", "reason": "r"}],
        "mn_cn": [{"at_ms": 3250.0, "from": "D-udp", "to": None, "reason": "x"}],
    }
    answers.clear()  # the MN does not answer
    assert timeline.path_changes(t, "2001:db8:c::2", started) == {"mn_ha": [], "mn_cn": []}


# -- in a real browser ------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("needs chromium (Debian's chromium package: tools/install.sh --test)")
    return found


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs the tests as root, where Chromium's sandbox refuses
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """Byte-wise (a + b) mod 256 over whole rows at once (PNG's Up filter)."""
    n = len(a)
    low, high = int.from_bytes(b"\x7f" * n), int.from_bytes(b"\x80" * n)
    x, y = int.from_bytes(a), int.from_bytes(b)
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n)


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows, bytes per pixel) of an 8-bit RGB or RGBA PNG, no library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev, rows, at = bytes(stride), [], 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray(_add_bytes(bytes(line), prev))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = rows[-1]
    return width, height, rows, bpp


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    index = html_report.write(_results(), tmp_path / "report", written="now")
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", index.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    check_page(Tree(dom.stdout).root)

    shot = tmp_path / "shot.png"
    taken = _headless(
        browser,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        index.as_uri(),
    )
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    width, height, rows, bpp = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    colours: dict[tuple[int, ...], int] = {}
    for row in rows[::2]:
        for px in zip(*(row[i::bpp] for i in range(3)), strict=True):
            colours[px] = colours.get(px, 0) + 1
    background = max(colours.values())
    assert len(colours) > 50, f"{len(colours)} colours: a blank page?"
    assert background < 0.9 * sum(colours.values()), "nine tenths of the page one colour"
    # The lanes' path colours, as the page's CSS gives them (T-native, T-udp, D-udp).
    for rgb in ((0x2F, 0x6F, 0xD6), (0xE0, 0x8A, 0x1E), (0x7B, 0x4F, 0xC9)):
        assert colours.get(rgb, 0) > 500, f"no lane painted {rgb}"
