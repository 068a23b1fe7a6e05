"""`mipnode status|paths|bindings` for people: the daemons' JSON (docs/cli.md) as text.

Rules (issue 16): nothing of Python shows (no None, tuples or raw epoch floats); a time is
"12 s ago"; an address with a port is ``[addr]:port`` (IPv6) or ``addr:port``; a value nobody
knows is ``-``, everywhere the same; a path whose near end this node does not name (the home
agent's side of a binding) reads ``T-native to 2001:db8:a::2``, one with neither end (a
D-native pair that never ran) just its kind; columns are as wide as their longest cell, so long
IPv6 addresses do not push rows apart; colour only on a terminal and never with ``NO_COLOR``
(https://no-color.org). Every function takes ``now`` (POSIX seconds) so a test can render
recorded answers.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

UNKNOWN = "-"
GOOD = {"succeeded", "registered", "ok", "selected"}
BAD = {"failed", "deregistering", "degraded", "off"}


class Out:
    """Lines to ``stream``, coloured only when it is a terminal and NO_COLOR is unset."""

    def __init__(self, stream: TextIO | None = None, colour: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        if colour is None:
            colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def state(self, word: str) -> str:
        """A state word, green when good and red when bad (on a colour terminal)."""
        if not self.colour:
            return word
        code = "32" if word in GOOD else "31" if word in BAD else ""
        return f"\x1b[{code}m{word}\x1b[0m" if code else word

    def warn(self, text: str) -> str:
        return f"\x1b[33m{text}\x1b[0m" if self.colour else text


# -- values ----------------------------------------------------------------------------------


def value(v: Any, unit: str = "") -> str:
    """One value: ``-`` when unknown, numbers without float noise, with ``unit``."""
    if v is None or v == "":
        return UNKNOWN
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        v = round(v, 2) if abs(v) < 100 else round(v)
    return f"{v}{unit}"


def ago(posix: float | None, now: float) -> str:
    """How long ago (or, in the future, in how long) ``posix`` is."""
    if posix is None:
        return UNKNOWN
    delta = now - posix
    text = duration(abs(delta))
    if abs(delta) < 1:
        return "just now"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def endpoint(e: dict[str, Any] | None) -> str:
    if not e or not e.get("address"):
        return UNKNOWN
    a, port = e["address"], e.get("port")
    if port is None:
        return str(a)
    return f"[{a}]:{port}" if ":" in str(a) else f"{a}:{port}"


def path(kind: str | None, local: dict[str, Any] | None, remote: dict[str, Any] | None) -> str:
    """``KIND local -> remote``; ``KIND to remote`` when this node does not name its own end;
    just ``KIND`` with neither."""
    head = kind or UNKNOWN
    near, far = (endpoint(local) if local else None), (endpoint(remote) if remote else None)
    if near and far:
        return f"{head} {near} -> {far}"
    if far:
        return f"{head} to {far}"
    if near:
        return f"{head} from {near}"
    return head


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows with every column but the last padded to its widest cell (on visible width)."""
    if not rows:
        return []
    width = [0] * max(len(r) for r in rows)
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            width[i] = max(width[i], _visible(cell))
    out = []
    for r in rows:
        cells = [c + " " * (width[i] - _visible(c)) for i, c in enumerate(r[:-1])]
        out.append((indent + "  ".join([*cells, r[-1]] if r else [])).rstrip())
    return out


def _visible(text: str) -> int:
    """Width on screen: colour sequences take none."""
    n, escape = 0, False
    for c in text:
        if c == "\x1b":
            escape = True
        elif escape:
            escape = c != "m"
        else:
            n += 1
    return n


# -- commands --------------------------------------------------------------------------------


def print_bindings(answer: dict[str, Any], out: Out, now: float) -> None:
    rows = answer.get("bindings", [])
    role = answer.get("role", UNKNOWN)
    if not rows:
        out.line(f"{role}: no bindings")
        return
    lines = []
    for b in rows:
        p = b.get("path") or {}
        networks = b.get("mobile_network_prefixes") or []
        extra = [f"routes {', '.join(networks)}"] if networks else []
        if b.get("ipv4_home_address"):
            extra.append(f"ipv4 {b['ipv4_home_address']}")
        lines.append(
            [
                role,
                str(b.get("hoa", UNKNOWN)),
                f"coa {value(b.get('coa'))}",
                path(p.get("kind"), p.get("local"), p.get("remote")),
                f"seq {value(b.get('sequence'))}",
                f"{duration(b.get('lifetime_remaining_s'))} left",
                out.state(str(b.get("state", UNKNOWN))),
                "  ".join(extra),
            ]
        )
    for text in table(lines, indent=""):
        out.line(text)


def print_status(answer: dict[str, Any], out: Out, now: float) -> None:
    role = answer.get("role")
    if role == "mn":
        _mn_status(answer, out, now)
    elif role == "ha":
        _ha_status(answer, out)
    elif role == "cn":
        addresses = ", ".join(answer.get("addresses") or []) or UNKNOWN
        out.line(
            f"correspondent node {addresses}  interface {value(answer.get('interface'))}  "
            f"up {duration(answer.get('uptime_s'))}"
        )
        peers = (answer.get("direct_udp") or {}).values()
        rows = [_peer_row(p) for p in peers]
        for text in table(rows):
            out.line(text)
    print_bindings(answer, out, now)
    drops = answer.get("drops") or {}
    if drops:
        out.line("  drops: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))


def _mn_status(answer: dict[str, Any], out: Out, now: float) -> None:
    acc = answer.get("access") or {}
    out.line(
        f"mobile node {answer.get('home_address')}  home agent {answer.get('home_agent')}  "
        f"state {out.state(str(answer.get('state')))}"
    )
    if answer.get("diagnosis"):
        since = answer.get("diagnosis_since")
        when = f"  (since {ago(since, now)})" if since is not None else ""
        out.line(out.warn(f"  ! {answer['diagnosis']}{when}"))
    _protection(answer.get("protection"), answer.get("esp_keyed"), out)
    out.line(
        f"  access {value(acc.get('interface'))}  ipv6 {value(acc.get('ipv6'))}  "
        f"ipv4 {value(acc.get('ipv4'))}  rtt {value(answer.get('rtt_ms'), ' ms')}  "
        f"registration {value(answer.get('registration_ms'), ' ms')}"
    )
    if answer.get("ipv4_home_address"):
        out.line(f"  ipv4 home address {answer['ipv4_home_address']}")
    if answer.get("home_prefixes"):
        out.line(f"  home prefixes {', '.join(map(str, answer['home_prefixes']))}")
    rows = [
        [
            "candidate",
            str(c.get("kind")),
            str(c.get("family")),
            out.state(str(c.get("state"))),
            f"rtt {value(c.get('rtt_ms'), ' ms')}",
            f"checks {value(c.get('checks_answered'))}/{value(c.get('checks_sent'))}",
        ]
        for c in answer.get("candidates", [])
    ]
    flows = [
        [
            "host",
            f"{f.get('host')} -> {f.get('cn')}",
            str(f.get("path") or "no path"),
            f"since {ago(f.get('since'), now)}" if f.get("since") is not None else "",
        ]
        for f in answer.get("mobile_network_flows", [])
    ]
    for text in (*table(rows), *table(flows)):
        out.line(text)


def _ha_status(answer: dict[str, Any], out: Out) -> None:
    ports = answer.get("udp_ports") or [answer.get("udp_port")]
    out.line(
        f"home agent {answer.get('address')}  home prefix {answer.get('home_prefix')}  "
        f"udp {', '.join(value(p) for p in ports)}  up {duration(answer.get('uptime_s'))}"
    )
    _protection(answer.get("protection"), True, out)
    cluster = answer.get("cluster")
    if cluster:
        _cluster(cluster, out)


def _protection(protection: Any, keyed: Any, out: Out) -> None:
    if protection == "none":
        out.line(
            out.warn("  ! protection none: tunnelled data is neither encrypted nor authenticated")
        )
    elif protection == "esp":
        out.line(f"  protection esp{'' if keyed else ' (not keyed yet: no registration)'}")


def _cluster(c: dict[str, Any], out: Out) -> None:
    """A node of a home-agent cluster: what it holds, who is alive, how etcd is."""
    holds = ", ".join(c.get("holds") or []) or (
        f"nothing (standby; {c.get('address')} held by "
        f"{(c.get('holders') or {}).get(c.get('address')) or 'nobody'})"
    )
    out.line(
        f"  cluster {c.get('name')}  node {c.get('node')}  {out.state(str(c.get('state')))}  "
        f"holds {holds}"
    )
    if c.get("reason"):
        out.line(out.warn(f"  ! {c['reason']}"))
    etcd = c.get("etcd") or {}
    waiting = f"  ({c['pending_writes']} waiting for etcd)" if c.get("pending_writes") else ""
    out.line(
        f"  nodes alive {', '.join(c.get('live') or []) or UNKNOWN} of "
        f"{', '.join(c.get('members') or []) or UNKNOWN}  etcd "
        f"{'reachable' if etcd.get('reachable') else 'not reached'} at revision "
        f"{value(etcd.get('revision'))}  records {value(c.get('replicas'))}{waiting}"
    )


def _peer_row(p: dict[str, Any]) -> list[str]:
    sel = p.get("selected") or {}
    rtt = f"rtt {value(sel.get('rtt_ms'), ' ms')}" if sel.get("rtt_ms") is not None else ""
    head = path(sel.get("kind"), sel.get("local"), sel.get("remote")) if sel else "no path"
    return [str(p.get("peer")), str(p.get("role")), head, rtt]


def print_paths(peers: Any, out: Out, now: float) -> None:
    """One line per peer (its selected path), then one per candidate pair and the last
    changes, like `tailscale status`."""
    if not peers:
        out.line("no peers")
        return
    heads = table([_peer_row(p) for p in peers], indent="")
    for p, head in zip(peers, heads, strict=True):
        out.line(head)
        rows = []
        for pair in p.get("pairs", []):
            checks = ""
            if pair.get("checks_sent") is not None:
                checks = f"checks {value(pair.get('checks_answered'))}/{pair['checks_sent']}"
            rtt = f"rtt {value(pair['rtt_ms'], ' ms')}" if pair.get("rtt_ms") is not None else ""
            rows.append(
                [
                    path(pair.get("kind"), pair.get("local"), pair.get("remote")),
                    out.state(str(pair.get("state", UNKNOWN))),
                    rtt,
                    checks,
                ]
            )
        for text in table(rows, indent="    "):
            out.line(text)
        for change in p.get("changes", [])[-3:]:
            old, new = change.get("from") or "none", change.get("to") or "none"
            out.line(f"    {ago(change.get('at'), now)}: {old} -> {new} ({change.get('reason')})")


NETCHECK_PATHS = {"T-native": "T-native", "T-native-esp": "T-native (ESP)", "T-udp": "T-udp"}


def print_netcheck(answer: dict[str, Any], out: Out, now: float) -> None:
    """`mipnode netcheck`: one line per probe with its verdict, then the NAT, the path MTU and
    the path a daemon would pick, like `tailscale netcheck`."""
    ha4 = answer.get("home_agent_ipv4")
    out.line(
        f"home agent {answer.get('home_agent')}"
        + (f" (IPv4 {ha4})" if ha4 else "")
        + f"  protection {value(answer.get('protection'))}"
    )
    rows = []
    for p in answer.get("probes", []):
        near = p.get("local") or None
        rows.append(
            [
                NETCHECK_PATHS.get(p.get("path"), str(p.get("path"))),
                str(p.get("family")),
                path(None, near, p.get("remote")).removeprefix(f"{UNKNOWN} "),
                out.state("ok" if p.get("usable") else "failed"),
                str(p.get("verdict")),
            ]
        )
    for text in table(rows):
        out.line(text)
    nat = answer.get("nat") or {}
    out.line(f"nat  IPv6 {value(nat.get('IPv6'))}  IPv4 {value(nat.get('IPv4'))}")
    mtu = answer.get("path_mtu")
    if mtu:
        out.line(f"path MTU  {mtu.get('family')} {value(mtu.get('mtu'))} ({mtu.get('how')})")
    else:
        out.line("path MTU  - (no UDP path to probe it on)")
    pick = answer.get("predicted")
    if pick:
        where = path(None, pick.get("local"), pick.get("remote")).removeprefix(f"{UNKNOWN} ")
        out.line(f"a daemon would pick {pick.get('path')} {where}: {answer.get('reason')}")
    else:
        out.line(out.warn(f"no home path: {answer.get('reason')}"))
    out.line(f"{value(answer.get('packets_sent'))} packets sent")


def ping_round_line(answer: dict[str, Any]) -> str:
    """One round of `mipnode ping -c N` as it comes: each path's kind and round trip."""
    parts = []
    for p in answer.get("paths", []):
        rtt = p.get("rtt_ms")
        parts.append(f"{p.get('kind')} {value(rtt, ' ms') if rtt is not None else p.get('result')}")
    return ",  ".join(parts) or "no path to probe"


def print_ping(answer: dict[str, Any], out: Out, now: float) -> None:
    """`mipnode ping`: per path its round trips (one round) or their spread (several), which
    path data takes now, and why a path is missing."""
    peer, role = answer.get("peer"), str(answer.get("role", UNKNOWN)).replace("-", " ")
    out.line(f"ping {peer} ({role}), data takes {value(answer.get('data_path'))}")
    rows = []
    for p in answer.get("summary", []):
        rtt = p.get("rtt_ms")
        if rtt is None:
            said = out.state("failed") + f"  {p.get('result')}"
            if p.get("sent", 1) > 1:
                said += f"  0/{p['sent']} answered"
        elif p.get("sent", 1) == 1:
            said = f"{value(rtt['min'], ' ms')}"
        else:
            said = (
                f"{p['answered']}/{p['sent']} answered  min/median/max "
                f"{value(rtt['min'])}/{value(rtt['median'])}/{value(rtt['max'])} ms"
            )
        if p.get("kind") == "T":
            said += " (to the home agent)"
        rows.append(
            [
                path(p.get("kind"), p.get("local"), p.get("remote")),
                "selected" if p.get("selected") else "",
                said,
            ]
        )
    for text in table(rows):
        out.line(text)
    if not rows:
        out.line("  no path to probe")
    if answer.get("note"):
        out.line(f"  {answer['note']}")


RENDERERS: dict[str, Callable[[Any, Out, float], None]] = {
    "ping": print_ping,
    "netcheck": print_netcheck,
    "status": print_status,
    "paths": print_paths,
    "bindings": print_bindings,
}


def render(command: str, answer: Any, out: Out | None = None, now: float | None = None) -> None:
    RENDERERS[command](answer, out or Out(), time.time() if now is None else now)
