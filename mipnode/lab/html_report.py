"""`mipnode lab --report DIR`: a run's results as one self-contained HTML page (docs/lab.md).

:func:`render` is pure: the result dicts (as ``--json`` prints them) in, one HTML string out.
Inline CSS and SVG, no script, nothing loaded from anywhere (no fonts, no CDN), so the page
opens offline in any browser and can be kept next to its pcaps. Scenario files are user input:
every string taken from a result is escaped (:func:`esc`), and ids are built from a fixed
alphabet.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from mipnode.lab.report import step_text

KINDS = ("T-native", "T-udp", "D-native", "D-udp", "none")
PLOT_X, PLOT_W = 100, 1000  # the plot's left edge (right of the lane names) and width, px
SVG_W = PLOT_X + PLOT_W + 20
LANE_H, PANEL_H = 24, 60
MARKER_ROWS_H = 34  # step numbers above the lanes, in two rows when steps are close
TICK_STEPS_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600)
NONE = "-"  # a value not measured, as in the text table
Scale = Callable[[float], float]  # ms since the run started -> x in px

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
  background: #f6f7f9; margin: 0; padding: 24px 32px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 6px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #3a4456; }
a { color: #1f5fbf; }
.meta, .description { color: #566072; margin: 0 0 12px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #dde1e7; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { display: inline-block; padding: 0 8px; border-radius: 4px; color: #fff;
  font-weight: 700; font-size: 13px; }
.verdict.pass { background: #1f8a4c; }
.verdict.fail { background: #c0392b; }
section.scenario { background: #fff; border: 1px solid #dde1e7; border-left: 6px solid #1f8a4c;
  border-radius: 6px; padding: 14px 18px; margin: 20px 0; }
section.scenario.fail { border-left-color: #c0392b; }
.diagnosis { background: #fdecea; border: 1px solid #f3b8b0; padding: 6px 10px;
  border-radius: 4px; white-space: pre-wrap; }
tr.problem td { background: #fdecea; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.facts dt { color: #566072; }
dl.facts dd { margin: 0; }
figure { margin: 12px 0 0; overflow-x: auto; }
svg.timeline { background: #fff; display: block; }
svg.timeline text { font: 11px system-ui, sans-serif; fill: #3a4456; }
svg.timeline .lane-name { font-weight: 600; font-size: 12px; }
svg.timeline .segment-label { fill: #fff; font-weight: 600; }
svg.timeline .panel { fill: #f7f8fa; stroke: #dde1e7; }
svg.timeline .rate { fill: #9cc3ee; stroke: #2f6fd6; stroke-width: 1; }
svg.timeline .flow-udp .rate { fill: #b8e0c6; stroke: #1f8a4c; }
svg.timeline .gap { fill: #e74c3c; fill-opacity: 0.25; stroke: #c0392b; stroke-width: 1; }
svg.timeline .gap-label { fill: #c0392b; font-weight: 600; }
svg.timeline .axis line { stroke: #9aa3b2; }
svg.timeline .step-marker line { stroke: #1d2330; stroke-dasharray: 4 3; stroke-width: 1; }
svg.timeline .step-marker.problem line { stroke: #c0392b; }
svg.timeline .step-marker circle { fill: #1d2330; }
svg.timeline .step-marker.problem circle { fill: #c0392b; }
svg.timeline .step-marker text { fill: #fff; font-weight: 700; text-anchor: middle; }
.k-T-native { fill: #2f6fd6; background: #2f6fd6; }
.k-T-udp { fill: #e08a1e; background: #e08a1e; }
.k-D-native { fill: #168f7a; background: #168f7a; }
.k-D-udp { fill: #7b4fc9; background: #7b4fc9; }
.k-none { fill: #b9bec8; background: #b9bec8; }
.k-other { fill: #6b7280; background: #6b7280; }
ul.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap;
  gap: 4px 16px; color: #566072; font-size: 12px; }
ul.legend span.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  vertical-align: -2px; margin-right: 4px; }
ul.pcaps { margin: 0; padding-left: 20px; columns: 2; }
code { font: 12px ui-monospace, monospace; }
"""


def esc(value: object) -> str:
    """Text or an attribute value from a result, safe in HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def kind_class(kind: str | None) -> str:
    """The CSS class of a path kind; anything not a known kind gets one fixed class."""
    kind = kind or "none"
    return f"k-{kind}" if kind in KINDS else "k-other"


class Segment(NamedTuple):
    start_ms: float
    end_ms: float
    kind: str  # a path kind, or "none"
    reason: str


def _last(changes: list[dict[str, Any]], at: float) -> dict[str, Any] | None:
    before = [c for c in changes if c["at_ms"] <= at]
    return before[-1] if before else None


def lanes(history: dict[str, Any], end_ms: float) -> dict[str, list[Segment]]:
    """The selected MN-HA and MN-CN paths as segments from 0 to ``end_ms``. An MN-CN change to
    null means the peer's traffic is back on the home path: that part of the MN-CN lane is
    whatever the MN-HA lane is then (none before the registration)."""
    ha = sorted(history.get("mn_ha") or [], key=lambda c: c["at_ms"])
    cn = sorted(history.get("mn_cn") or [], key=lambda c: c["at_ms"])
    cuts = sorted({0.0, end_ms, *(c["at_ms"] for c in ha + cn if 0 < c["at_ms"] < end_ms)})
    out: dict[str, list[Segment]] = {"mn_ha": [], "mn_cn": []}
    for a, b in itertools.pairwise(cuts):
        home, direct = _last(ha, a), _last(cn, a)
        ha_kind = (home or {}).get("to") or "none"
        ha_reason = str((home or {}).get("reason") or "")
        if direct is not None and direct.get("to"):
            cn_kind, cn_reason = str(direct["to"]), str(direct.get("reason") or "")
        else:
            cn_kind = ha_kind
            cn_reason = (
                f"via the home agent ({direct['reason']})" if direct else "via the home agent"
            )
        for lane, kind, reason in (("mn_ha", ha_kind, ha_reason), ("mn_cn", cn_kind, cn_reason)):
            segs = out[lane]
            if segs and segs[-1].kind == kind:
                segs[-1] = segs[-1]._replace(end_ms=b)
            else:
                segs.append(Segment(a, b, str(kind), reason))
    return out


def _flow_end(flow: dict[str, Any] | None) -> float:
    if not flow:
        return 0.0
    return float(flow["start_ms"]) + len(flow.get("counts") or []) * float(flow["bin_ms"])


def end_ms(result: dict[str, Any]) -> float:
    """The right edge of a run's plot: its end, or the latest thing it recorded."""
    h = result.get("history") or {}
    times = [float(h.get("ended_ms") or 0.0), 1000.0]
    times += [_flow_end(h.get(f)) for f in ("stream", "udp")]
    times += [c["at_ms"] for c in (h.get("mn_ha") or []) + (h.get("mn_cn") or [])]
    if h.get("timeline_ms") is not None:
        times += [h["timeline_ms"] + s["at_ms"] for s in result.get("timeline") or []]
    return max(times)


def step_times(result: dict[str, Any]) -> list[float | None]:
    """Each timeline step's start in ms since the run started (None without the timeline's
    start, as in results from before it was recorded)."""
    start = (result.get("history") or {}).get("timeline_ms")
    return [None if start is None else start + s["at_ms"] for s in result.get("timeline") or []]


def anchor_ids(results: list[dict[str, Any]]) -> list[str]:
    """A unique ``sc-...`` id per result, from the name's letters, digits, - and _ only."""
    names = [r.get("name") for r in results]
    ids: list[str] = []
    for r in results:
        base = "sc-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(r.get("name") or "scenario"))
        if names.count(r.get("name")) > 1 and r.get("run") is not None:
            base += f"-run{int(r['run'])}"
        candidate, n = base, 2
        while candidate in ids:
            candidate, n = f"{base}-{n}", n + 1
        ids.append(candidate)
    return ids


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f} ms"


def _s(ms: float | None) -> str:
    return NONE if ms is None else f"{ms / 1000:.1f} s"


def _path(result: dict[str, Any], pair: str) -> str:
    observed = (result.get("observed") or {}).get(pair)
    expected = (result.get("expected") or {}).get(pair)
    if expected is None and observed is None:
        return NONE
    text = esc(observed or "none")
    if expected is not None and observed != expected:
        text += f' <span class="expected">[{esc(expected)}]</span>'
    return text


def _verdict(result: dict[str, Any]) -> str:
    ok = bool(result.get("passed"))
    return f'<span class="verdict {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span>'


def _flow_text(result: dict[str, Any]) -> tuple[str, str]:
    traffic = result.get("traffic") or {}
    stream, udp = traffic.get("stream"), traffic.get("udp")
    s = NONE
    if stream:
        s = (
            "survived" if stream.get("ok") else "BROKE"
        ) + f", pause {_ms(stream.get('max_gap_ms'))}"
    u = NONE
    if udp:
        u = (
            f"{udp.get('loss_pct')} % lost, pause {_ms(udp.get('max_gap_ms'))}"
            if udp.get("ok")
            else str(udp.get("error") or "no report")
        )
    return esc(s), esc(u)


def summary_table(results: list[dict[str, Any]], ids: list[str]) -> str:
    rows = []
    for r, anchor in zip(results, ids, strict=True):
        timings = r.get("timings_ms") or {}
        stream, udp = _flow_text(r)
        ended = (r.get("history") or {}).get("ended_ms")
        rows.append(
            f'<tr class="{"pass" if r.get("passed") else "fail"}">'
            f'<td><a href="#{anchor}">{esc(r.get("name"))}</a></td>'
            f'<td>{esc(r.get("tc") or NONE)}</td><td class="num">{esc(r.get("run") or 1)}</td>'
            f"<td>{_verdict(r)}</td><td>{_path(r, 'mn_ha')}</td><td>{_path(r, 'mn_cn')}</td>"
            f'<td class="num">{_ms(timings.get("registration"))}</td>'
            f'<td class="num">{_ms(timings.get("first_data"))}</td>'
            f'<td class="num">{_ms(timings.get("handover_gap"))}</td>'
            f"<td>{stream}</td><td>{udp}</td>"
            f'<td class="num">{_s(ended)}</td></tr>'
        )
    return (
        '<table class="summary" id="summary"><thead><tr><th>scenario</th><th>TC</th>'
        "<th>run</th><th>verdict</th><th>MN-HA [expected]</th><th>MN-CN [expected]</th>"
        "<th>registration</th><th>first data</th><th>handover gap</th><th>TCP stream</th>"
        "<th>UDP flow</th><th>run time</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _tick_step_s(end: float) -> int:
    return next((s for s in TICK_STEPS_S if end / 1000 / s <= 12), TICK_STEPS_S[-1])


def timeline_svg(result: dict[str, Any]) -> str:
    """The run on one time axis (seconds since it started): a lane per selected path, the
    stream's and the UDP flow's rate with their pauses, and a marker per timeline step."""
    history = result.get("history") or {}
    end = end_ms(result)

    def x(ms: float) -> float:
        return round(PLOT_X + PLOT_W * max(0.0, min(ms, end)) / end, 1)

    parts: list[str] = []
    y = MARKER_ROWS_H
    # A result from before the lab kept its history: no lane, rather than a wrong "none".
    recorded = history.get("started_at") is not None
    segments = lanes(history, end)
    for lane, name in (("mn_ha", "MN-HA"), ("mn_cn", "MN-CN")):
        lane_parts = [
            f'<g class="lane" data-lane="{lane.replace("_", "-")}">'
            f'<text class="lane-name" x="8" y="{y + 16}">{name}</text>'
        ]
        if not recorded:
            lane_parts.append(f'<text x="{PLOT_X + 8}" y="{y + 16}">not recorded</text>')
        for seg in segments[lane] if recorded else []:
            x0, x1 = x(seg.start_ms), x(seg.end_ms)
            tip = f"{name} {seg.kind} from {_s(seg.start_ms)} to {_s(seg.end_ms)}"
            if seg.reason:
                tip += f": {seg.reason}"
            lane_parts.append(
                f'<rect class="segment {kind_class(seg.kind)}" data-kind="{esc(seg.kind)}" '
                f'x="{x0}" y="{y}" width="{max(0.5, round(x1 - x0, 1))}" height="{LANE_H}">'
                f"<title>{esc(tip)}</title></rect>"
            )
            if x1 - x0 > 8 + 7 * len(seg.kind):
                lane_parts.append(
                    f'<text class="segment-label" x="{x0 + 5}" y="{y + 16}">{esc(seg.kind)}</text>'
                )
        parts.append("".join(lane_parts) + "</g>")
        y += LANE_H + 8
    y += 6
    for flow, name, unit in (("stream", "TCP stream", "kbit/s"), ("udp", "UDP flow", "pkt/s")):
        data = history.get(flow)
        if not data and not (result.get("traffic") or {}).get(flow):
            continue  # the scenario had no such flow
        parts.append(_flow_panel(data, flow, name, unit, y, x))
        y += PANEL_H + 12
    bottom = y - 6
    parts.append(_axis(end, bottom, x))
    parts.append(_step_markers(result, bottom, x))
    height = bottom + 22
    label = f"timeline of {result.get('name')}"
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" '
        f'height="{height}" viewBox="0 0 {SVG_W} {height}" role="img" '
        f'aria-label="{esc(label)}"><title>{esc(label)}</title>' + "".join(parts) + "</svg>"
    )


def _flow_panel(
    data: dict[str, Any] | None, flow: str, name: str, unit: str, y: int, x: Scale
) -> str:
    out = [
        f'<g class="flow flow-{flow}" data-flow="{flow}">'
        f'<text class="lane-name" x="8" y="{y + 16}">{name}</text>'
        f'<text x="8" y="{y + 30}">{unit}</text>'
        f'<rect class="panel" x="{PLOT_X}" y="{y}" width="{PLOT_W}" height="{PANEL_H}"/>'
    ]
    if not data or not data.get("counts"):
        out.append(f'<text x="{PLOT_X + 8}" y="{y + 34}">no measurement recorded</text></g>')
        return "".join(out)
    bin_ms, start = float(data["bin_ms"]), float(data["start_ms"])
    # bytes per bin -> kbit/s (bits per ms), datagrams per bin -> per second
    scale = 8 / bin_ms if flow == "stream" else 1000 / bin_ms
    rates = [c * scale for c in data["counts"]]
    peak = max(rates)
    # A pause is followed by a burst (TCP sends its backlog): scaled to the burst, the steady
    # rate would be a sliver. The axis goes to twice the usual rate; higher bins are clipped.
    usual = statistics.median([r for r in rates if r > 0] or [1.0])
    top = min(peak, 2 * usual) or 1.0
    base = y + PANEL_H

    def level(rate: float) -> float:
        return round(base - (PANEL_H - 6) * min(rate, top) / top, 1)

    d = [f"M{x(start)},{base}"]
    for i, rate in enumerate(rates):
        d.append(
            f"L{x(start + i * bin_ms)},{level(rate)}L{x(start + (i + 1) * bin_ms)},{level(rate)}"
        )
    d.append(f"L{x(start + len(rates) * bin_ms)},{base}Z")
    out.append(f'<path class="rate" d="{"".join(d)}"><title>{name} {unit}</title></path>')
    scale_text = f"axis to {top:.0f}" + (f", peak {peak:.0f} (clipped)" if peak > top else "")
    out.append(
        f'<text class="scale" x="{PLOT_X + PLOT_W - 4}" y="{y + 12}" text-anchor="end">'
        f"{scale_text}</text>"
    )
    gaps = data.get("gaps") or []
    longest = max(gaps, key=lambda g: g["gap_ms"], default=None)
    for g in gaps:
        at, length = float(g["at_ms"]), float(g["gap_ms"])
        x0, x1 = x(at), x(at + length)
        tip = f"{name} paused {length:.0f} ms from {_s(at)}"
        out.append(
            f'<rect class="gap" x="{x0}" y="{y}" width="{max(1.0, round(x1 - x0, 1))}" '
            f'height="{PANEL_H}"><title>{esc(tip)}</title></rect>'
        )
        if g is longest:
            out.append(
                f'<text class="gap-label" x="{x1 + 3}" y="{y + 26}">{length / 1000:.2f} s</text>'
            )
    return "".join(out) + "</g>"


def _axis(end: float, bottom: int, x: Scale) -> str:
    step = _tick_step_s(end)
    out = [
        f'<g class="axis"><line x1="{PLOT_X}" y1="{bottom}" x2="{PLOT_X + PLOT_W}" y2="{bottom}"/>'
    ]
    t = 0
    while t * 1000 <= end:
        out.append(
            f'<line x1="{x(t * 1000)}" y1="{bottom}" x2="{x(t * 1000)}" y2="{bottom + 4}"/>'
            f'<text x="{x(t * 1000)}" y="{bottom + 16}" text-anchor="middle">{t} s</text>'
        )
        t += step
    return "".join(out) + "</g>"


def _step_markers(result: dict[str, Any], bottom: int, x: Scale) -> str:
    out = []
    last_x, row = -100.0, 0
    for n, (step, at) in enumerate(
        zip(result.get("timeline") or [], step_times(result), strict=True), 1
    ):
        if at is None:
            continue
        sx = x(at)
        row = 1 - row if sx - last_x < 20 else 0  # close neighbours alternate rows
        last_x = sx
        cy = 9 + row * 16
        problem = " problem" if "problem" in step else ""
        out.append(
            f'<g class="step-marker{problem}" data-step="{n}">'
            f"<title>{esc(f'{n}. at {_s(at)}: {step_text(step)}')}</title>"
            f'<line x1="{sx}" y1="{cy + 7}" x2="{sx}" y2="{bottom}"/>'
            f'<circle cx="{sx}" cy="{cy}" r="7.5"/>'
            f'<text x="{sx}" y="{cy + 4}">{n}</text></g>'
        )
    return "".join(out)


def _legend() -> str:
    items = "".join(f'<li><span class="swatch {kind_class(k)}"></span>{k}</li>' for k in KINDS)
    return (
        f'<ul class="legend">{items}<li>red: pauses of 0.2 s or more</li>'
        "<li>numbered lines: timeline steps</li></ul>"
    )


def _steps_table(result: dict[str, Any]) -> str:
    steps = result.get("timeline") or []
    if not steps:
        return ""
    rows = []
    for n, (step, at) in enumerate(zip(steps, step_times(result), strict=True), 1):
        problem = ' class="problem"' if "problem" in step else ""
        rows.append(
            f'<tr{problem}><td class="num">{n}</td><td class="num">{_s(at)}</td>'
            f'<td class="num">{step["at_ms"] / 1000:.1f} s</td><td>{esc(step_text(step))}</td></tr>'
        )
    return (
        '<h3>Timeline steps</h3><table class="steps"><thead><tr><th>#</th><th>run time</th>'
        "<th>timeline time</th><th>step and what it measured</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _changes_table(result: dict[str, Any]) -> str:
    history = result.get("history") or {}
    changes = [("MN-HA", c) for c in history.get("mn_ha") or []]
    changes += [("MN-CN", c) for c in history.get("mn_cn") or []]
    if not changes:
        return ""
    changes.sort(key=lambda lc: lc[1]["at_ms"])
    back = {"MN-HA": "none", "MN-CN": "home path"}  # what a change to null means on each
    rows = "".join(
        f'<tr><td class="num">{_s(c["at_ms"])}</td><td>{lane}</td>'
        f"<td>{esc(c.get('from') or NONE)} → {esc(c.get('to') or back[lane])}</td>"
        f"<td>{esc(c.get('reason') or '')}</td></tr>"
        for lane, c in changes
    )
    return (
        '<h3>Path changes (the MN\'s own log)</h3><table class="changes"><thead><tr>'
        "<th>run time</th><th>path</th><th>change</th><th>reason</th></tr></thead><tbody>"
        + rows
        + "</tbody></table>"
    )


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def _flows_table(result: dict[str, Any]) -> str:
    traffic = result.get("traffic") or {}
    rows = []
    tcp = traffic.get("tcp")
    if tcp:
        ok = bool(tcp.get("ok"))
        what = f"{tcp.get('mbit_s')} Mbit/s, {tcp.get('bytes')} bytes" if ok else tcp.get("error")
        rows.append(_row("TCP transfer", "ok" if ok else "FAILED", what or "digest mismatch"))
    stream = traffic.get("stream")
    if stream:
        what = (
            f"{stream.get('sent')} bytes sent, {stream.get('bytes')} arrived, "
            f"longest pause {_ms(stream.get('max_gap_ms'))}"
        )
        if stream.get("error"):
            what += f": {stream['error']}"
        rows.append(_row("TCP stream", "survived" if stream.get("ok") else "BROKE", what))
    udp = traffic.get("udp")
    if udp:
        what = (
            f"{udp.get('sent')} sent, {udp.get('received')} received, "
            f"{udp.get('loss_pct')} % lost, {udp.get('duplicates')} duplicates, "
            f"longest pause {_ms(udp.get('max_gap_ms'))}"
            if udp.get("ok")
            else str(udp.get("error"))
        )
        rows.append(_row("UDP flow", "ok" if udp.get("ok") else "FAILED", what))
    for key, name in (
        ("ping_cn_to_hoa", "ping CN → HoA"),
        ("ping_hoa_to_cn", "ping HoA → CN"),
        ("ping_after_timeline", "ping after the timeline"),
    ):
        p = traffic.get(key)
        if p:
            answered = f"{p.get('received')}/{p.get('sent')} answered"
            rtt = p.get("rtt_ms")
            rows.append(_row(name, answered, f"RTT {NONE if rtt is None else f'{rtt} ms'}"))
    if not rows:
        return ""
    return '<h3>Traffic</h3><table class="flows"><tbody>' + "".join(rows) + "</tbody></table>"


def _href(path: str, base: Path | None) -> str:
    """A link to a local file, relative to the report's directory when it has one."""
    target = os.path.relpath(path, base) if base is not None else path
    return esc(quote(target, safe="/"))


def _pcaps(result: dict[str, Any], base: Path | None) -> str:
    pcaps = result.get("pcaps") or []
    if not pcaps:
        return ""
    stats = result.get("pcap_stats") or {}
    items = []
    for p in pcaps:
        name = os.path.basename(p)
        s = stats.get(name) or stats.get(name.removesuffix(".pcap")) or {}
        note = ""
        if "frames" in s:
            note = f" ({s['frames']} frames, {s.get('kernel_drops', 0)} dropped)"
        elif s.get("error"):
            note = f" ({s['error']})"
        items.append(f'<li><a href="{_href(p, base)}">{esc(name)}</a>{esc(note)}</li>')
    folder = os.path.dirname(pcaps[0])
    return (
        f'<h3>Packet captures</h3><p>In <a href="{_href(folder, base)}/">{esc(folder)}</a> '
        "(with <code>esp-keys.txt</code> to decrypt ESP; docs/lab.md, Packet captures):</p>"
        f'<ul class="pcaps">{"".join(items)}</ul>'
    )


def _facts(result: dict[str, Any]) -> str:
    observed = result.get("observed") or {}
    facts = [
        ("test case", result.get("tc") or NONE),
        ("run id", result.get("run_id") or NONE),
        ("MN-HA at the end", observed.get("mn_ha_at_end") or NONE),
        ("MN-CN changes", " → ".join(map(str, observed.get("mn_cn_changes") or [])) or NONE),
        ("MN diagnosis", observed.get("mn_diagnosis") or NONE),
    ]
    if result.get("logs"):
        facts.append(("logs kept in", result["logs"]))
    return (
        '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"
    )


def scenario_section(result: dict[str, Any], anchor: str, base: Path | None) -> str:
    ok = bool(result.get("passed"))
    run = f" (run {esc(result['run'])})" if (result.get("run") or 1) > 1 else ""
    diagnosis = result.get("diagnosis")
    return "".join(
        [
            f'<section class="scenario {"pass" if ok else "fail"}" id="{anchor}" '
            f'data-name="{esc(result.get("name"))}">',
            f'<h2><a href="#{anchor}">{esc(result.get("name"))}</a>{run} {_verdict(result)}</h2>',
            f'<p class="description">{esc(result.get("description") or "")}</p>',
            f'<p class="diagnosis">{esc(diagnosis)}</p>' if diagnosis else "",
            _facts(result),
            f"<figure>{timeline_svg(result)}<figcaption>{_legend()}</figcaption></figure>",
            _steps_table(result),
            _changes_table(result),
            _flows_table(result),
            _pcaps(result, base),
            "</section>",
        ]
    )


def render(results: list[dict[str, Any]], *, base: Path | None = None, written: str = "") -> str:
    """The whole page. ``base``: the report's directory, which pcap links are relative to;
    ``written``: when, as the caller wants it shown (this function reads no clock)."""
    ids = anchor_ids(results)
    passed = sum(bool(r.get("passed")) for r in results)
    meta = f"{len(results)} scenario runs: {passed} passed, {len(results) - passed} failed"
    if written:
        meta += f"; written {written}"
    body = "".join(scenario_section(r, a, base) for r, a in zip(results, ids, strict=True))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mipnode lab report</title><style>{CSS}</style></head><body>"
        f'<h1>mipnode lab report</h1><p class="meta">{esc(meta)}</p>'
        f"{summary_table(results, ids)}{body}</body></html>\n"
    )


def write(results: list[dict[str, Any]], directory: Path, written: str = "") -> Path:
    """``directory``/index.html (the directory created), replaced whole so a reader never
    sees half a page; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "index.html"
    partial = directory / ".index.html.partial"
    partial.write_text(render(results, base=directory.resolve(), written=written))
    partial.replace(target)
    return target
