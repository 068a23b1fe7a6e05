"""The lab's reports: a table per scenario run, and the spread over repeated runs."""

from __future__ import annotations

from typing import Any

NO_ESP = f"{'no ESP':>12}"  # the column --compare-protection adds


def report_table(results: list[dict[str, Any]]) -> str:
    """One line per scenario: observed path (expected in brackets when it differs), then one
    indented line per timeline step and the verdict's explanation."""

    def path(r: dict[str, Any], pair: str) -> str:
        observed, expected = r["observed"][pair], r["expected"][pair]
        if expected is None:
            return "-"
        return str(observed) if observed == expected else f"{observed} [{expected}]"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    compare = any("unprotected" in r for r in results)
    header = (
        f"{'scenario':22} {'TC':6} {'MN-HA':9} {'MN-CN':9} {'register':>8} {'1st data':>8} "
        f"{'RTT':>8} {'TCP 1 MB':>11}{NO_ESP if compare else ''}  result"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        timings = r["timings_ms"]
        rtt = timings["rtt_via_ha"]
        tcp = r["traffic"].get("tcp") or {}
        tcp_text = f"{tcp['mbit_s']} Mb/s" if tcp.get("ok") else "failed" if tcp else "-"
        lines.append(
            f"{r['name']:22} {r.get('tc') or '-':6} {path(r, 'mn_ha'):9} {path(r, 'mn_cn'):9} "
            f"{ms(timings['registration']):>8} {ms(timings['first_data']):>8} "
            f"{(str(rtt) + ' ms') if rtt is not None else '-':>8} {tcp_text:>11}"
            f"{_unprotected(r) if compare else ''}  {'PASS' if r['passed'] else 'FAIL'}"
        )
        if r["observed"].get("mn_diagnosis"):
            lines.append(
                f"    MN says after {timings.get('diagnosis')} ms: {r['observed']['mn_diagnosis']}"
            )
        for step in r.get("timeline", []):
            lines.append(f"    {step['at_ms'] / 1000:6.1f} s  {step_text(step)}")
        stream = r["traffic"].get("stream")
        if stream is not None:
            verdict = "survived" if stream.get("ok") else "BROKE"
            lines.append(f"    TCP stream {verdict}, longest pause {stream.get('max_gap_ms')} ms")
        udp = r["traffic"].get("udp")
        if udp is not None and udp.get("ok"):
            lines.append(
                f"    UDP {udp['sent']} sent, {udp['loss_pct']} % lost, "
                f"longest pause {udp['max_gap_ms']} ms"
            )
        if r["diagnosis"]:
            lines.append(f"    {r['diagnosis']}")
        if not r["passed"] and r.get("logs"):
            lines.append(f"    logs: {r['logs']}")
        if r.get("pcaps"):
            lines.append(f"    pcaps: {len(r['pcaps'])} in {r['pcaps'][0].rsplit('/', 1)[0]}")
    passed = sum(r["passed"] for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def step_text(step: dict[str, Any]) -> str:
    """A timeline step and what it measured, in words (the table's and the HTML report's)."""
    text = str(step["step"])
    if "handover_ms" in step:
        text += f": re-registered in {step['handover_ms']} ms at {step['mn_coa_after']}"
    elif "killed" in step and "new_holder" in step:
        text += (
            f" ({step['killed']}, {step['signal']}): {step['new_holder']} held the address after "
            f"{step['held_ms']} ms, served the binding after {step['binding_ms']} ms, "
            f"relayed a ping after {step['resumed_ms']} ms"
        )
    elif "health" in step:
        text += f": after {step['after_ms']} ms, " + ", ".join(
            f"{node} {state}" for node, state in step["health"].items()
        )
    elif "records" in step and "after_ms" in step:
        r = step["records"]
        text += (
            f": after {step['after_ms']} ms every node has the records of "
            f"{r.get('holder')}'s {len(r.get('bindings') or [])} binding(s)"
        )
    elif "restored" in step:
        text += (
            f" ({step['restored']}): one holder ({step['holders_after']}) "
            f"after {step['after_ms']} ms"
        )
    elif "replayed_to" in step:
        text += (
            f": {step['bus_captured']} BUs captured, the last sent to {step['replayed_to']}: "
            + ("refused with 144" if step.get("refused_144") else "not refused")
        )
    elif "killed" in step:
        text += f": {', '.join(step['killed'])}"
    elif "started" in step:
        text += f": {', '.join(step['started']) or 'none was down'}"
    elif "resumed_ms" in step:
        text += (
            f": the new HA answered after {step.get('ha_answered_ms')} ms, had the binding after "
            f"{step.get('ha_binding_ms')} ms, relayed ping {step.get('probe')} after "
            f"{step['resumed_ms']} ms"
        )
        if step.get("answered_to_traffic_ms") is not None:
            text += f" ({step['answered_to_traffic_ms']} ms after its first answer)"
    elif "registered_ms" in step:
        text += f": registered again after {step['registered_ms']} ms over {step['mn_ha']}"
    elif step.get("reached"):
        text += f": reached after {step['after_ms']} ms"
    elif "attack" in step:
        text += _attack_text(step)
    if "problem" in step:
        text += f"  <- {step['problem']}"
    return text


def _attack_text(step: dict[str, Any]) -> str:
    """What an attack sent, what came back to it, what reached an application, what the HA
    counted, and (floods) the data path's p99 before and during."""
    a, got = step["attack"], step["injected_received"]
    text = (
        f": sent {a['sent_packets']} ({a['sent_octets']} B), back {a['reflected_octets']} B, "
        f"injected delivered {(got['mn'] or 0) + (got['cn'] or 0)}"
    )
    counted = step.get("ha_counted_during") or {}
    refused = {
        k.removeprefix("core."): v
        for k, v in counted.items()
        if k in ("core.bad_auth", "unbound_mh_rate_limited", "clear_data_refused")
    }
    if refused:
        text += ", HA " + ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
    latency = step.get("latency_ms")
    if latency:
        text += (
            f", p99 {latency['before']['p99']} -> {latency['during']['p99']} ms"
            f" (control {latency['control']['p99']} ms)"
        )
    return text


def repeat_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario over all runs: pass count and the spread of the main timings."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    out = []
    for name, runs in by_name.items():
        entry: dict[str, Any] = {
            "name": name,
            "runs": len(runs),
            "passed": sum(r["passed"] for r in runs),
        }
        for key in (
            "registration",
            "first_data",
            "rtt_via_ha",
            "handover_gap",
            "ha_restart_to_traffic",
            "ha_answered_to_traffic",
            "diagnosis",
        ):
            values = sorted(v for r in runs if (v := r["timings_ms"].get(key)) is not None)
            if values:
                entry[key + "_ms"] = {
                    "min": values[0],
                    "median": values[len(values) // 2],
                    "max": values[-1],
                }
        out.append(entry)
    return out


def summary_table(summary: list[dict[str, Any]]) -> str:
    """Pass counts and min / median / max of the main timings over the repeated runs."""

    def spread(e: dict[str, Any], key: str) -> str:
        v = e.get(key + "_ms")
        return f"{v['min']:.0f}/{v['median']:.0f}/{v['max']:.0f}" if v else "-"

    lines = [
        f"{'scenario':22} {'passed':>8}  {'register ms':>14} {'1st data ms':>14} "
        f"{'handover gap':>14}  (min/median/max)"
    ]
    for e in summary:
        lines.append(
            f"{e['name']:22} {e['passed']:>3}/{e['runs']:<4}  {spread(e, 'registration'):>14} "
            f"{spread(e, 'first_data'):>14} {spread(e, 'handover_gap'):>14}"
        )
    return "\n".join(lines)


def _unprotected(r: dict[str, Any]) -> str:
    """The TCP figure of the same scenario run without protection (--compare-protection)."""
    plain = r.get("unprotected")
    if plain is None:
        return f"{'-':>12}"
    mbit = plain.get("tcp_mbit_s")
    return f"{f'{mbit} Mb/s' if mbit is not None else '-':>12}"
