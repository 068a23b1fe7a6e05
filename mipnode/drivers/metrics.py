"""An opt-in Prometheus endpoint (`metrics_listen` in a daemon's configuration; off by default).

``GET /metrics`` answers the daemon's own status (the same answer `mipnode status --json`
gets, docs/cli.md) in the Prometheus text format, written by ``prometheus_client`` from metric
families built at each scrape, so nothing is kept twice and nothing costs anything between
scrapes. Names (docs/metrics.md) follow the Prometheus conventions: ``mipnode_`` first, base
units, ``_total`` on counters, one family per meaning with a label for the kind
(``mipnode_drops_total{reason="..."}``).

The server is as small as the job: HTTP/1.0, one request per connection, at most
``MAX_CLIENTS`` at once, a request line and headers of at most ``MAX_REQUEST`` octets within
``CLIENT_TIMEOUT_S``; anything but ``GET /metrics`` gets 404 (or 400), never more than a line.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from mipnode.drivers import pump

MAX_CLIENTS = 4
MAX_REQUEST = 8192
CLIENT_TIMEOUT_S = 2.0
log = logging.getLogger("mipnode.metrics")
Answer = Callable[[str], Any]


class StatusCollector(Collector):
    """Metric families from one status answer (any role)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def collect(self) -> Iterator[Metric]:
        status = self.answer("status")
        if not isinstance(status, dict) or "error" in status:
            return
        yield from families(status)


def families(status: dict[str, Any]) -> Iterable[Metric]:
    role = str(status.get("role", ""))
    up = GaugeMetricFamily("mipnode_info", "This daemon and its role", labels=["role"])
    up.add_metric([role], 1)
    yield up
    yield GaugeMetricFamily(
        "mipnode_uptime_seconds",
        "Seconds since the daemon started",
        value=status.get("uptime_s", 0),
    )
    bindings = status.get("bindings") or []
    yield GaugeMetricFamily("mipnode_bindings", "Bindings held now", value=len(bindings))
    paths = GaugeMetricFamily(
        "mipnode_paths", "Peers whose data takes each kind of path now", labels=["kind"]
    )
    for kind, n in sorted(_path_kinds(status).items()):
        paths.add_metric([kind], n)
    yield paths
    for name, help_text, label, key in (
        ("mipnode_packets", "Data-plane packets by what happened to them", "counter", "counters"),
        ("mipnode_drops", "Packets dropped, by reason", "reason", "drops"),
        (
            "mipnode_events",
            "Protocol events of the node core (checks, registrations, "
            "path changes, failovers, handovers, signalling)",
            "event",
            "core",
        ),
        (
            "mipnode_kernel_drops",
            "Packets the kernel dropped at our sockets",
            "socket",
            "kernel_drops",
        ),
        (
            "mipnode_internal_errors",
            "Handler failures (bugs), by handler",
            "handler",
            "internal_errors",
        ),
    ):
        family = CounterMetricFamily(name, help_text, labels=[label])
        for k, v in sorted((status.get(key) or {}).items()):
            if isinstance(v, int | float) and not isinstance(v, bool):
                family.add_metric([str(k)], v)
        yield family
    for name, help_text, key in (
        ("mipnode_rtt_seconds", "Round trip through the home tunnel (keepalive)", "rtt_ms"),
        ("mipnode_handover_seconds", "The last handover's gap", "handover_ms"),
        ("mipnode_registration_seconds", "From start to the first registration", "registration_ms"),
    ):
        if isinstance(status.get(key), int | float):
            yield GaugeMetricFamily(name, help_text, value=status[key] / 1000)


def _path_kinds(status: dict[str, Any]) -> dict[str, int]:
    """Kinds of the paths data takes now: the home path and each correspondent's and host
    flow's (mobile node), each binding's (home agent), each peer's direct pair (correspondent)."""
    kinds: dict[str, int] = {}

    def add(kind: Any) -> None:
        if kind:
            kinds[str(kind)] = kinds.get(str(kind), 0) + 1

    for b in status.get("bindings") or []:
        add((b.get("path") or {}).get("kind"))
    for c in status.get("correspondents") or []:
        add(c.get("path"))
    for f in status.get("mobile_network_flows") or []:
        add(f.get("path"))
    for p in (status.get("direct_udp") or {}).values():
        add((p.get("selected") or {}).get("kind"))
    return kinds


async def serve_metrics(
    listen: tuple[str, int],
    answer: Answer,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer scrapes on ``listen`` (address, port: `metrics_listen`) until cancelled."""
    host, port = listen
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(answer))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = trio.socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        await listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise OSError(exc.errno, f"metrics_listen {host} port {port}: {exc.strerror}") from None
    listener.listen(16)
    slots = trio.Semaphore(MAX_CLIENTS)
    task_status.started(listener.getsockname()[1])  # the port (a test asks for port 0)
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                if slots.value == 0:
                    conn.close()  # a scraper is one client; more at once is not a scraper
                    continue
                await slots.acquire()
                nursery.start_soon(_client, conn, registry, slots)
    finally:
        listener.close()


async def _client(
    conn: trio.socket.SocketType, registry: CollectorRegistry, slots: trio.Semaphore
) -> None:
    try:
        with conn, contextlib.suppress(OSError), pump.time_limit(CLIENT_TIMEOUT_S):
            request = b""
            while b"\r\n\r\n" not in request and b"\n\n" not in request:
                chunk = await conn.recv(MAX_REQUEST)
                if not chunk:
                    return
                request += chunk
                if len(request) > MAX_REQUEST:
                    await _send(conn, b"400 Bad Request", b"request too long\n")
                    return
            line = request.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
            if len(line) < 2 or line[0] != b"GET":
                await _send(conn, b"400 Bad Request", b"GET /metrics only\n")
            elif line[1].split(b"?", 1)[0] != b"/metrics":
                await _send(conn, b"404 Not Found", b"see /metrics\n")
            else:
                try:
                    body = generate_latest(registry)
                except Exception:  # a bug while collecting must not stop the daemon
                    log.exception("metrics collection failed")
                    await _send(conn, b"500 Internal Server Error", b"see the daemon's log\n")
                    return
                await _send(conn, b"200 OK", body, CONTENT_TYPE_LATEST.encode())
    finally:
        slots.release()


async def _send(
    conn: trio.socket.SocketType, status: bytes, body: bytes, kind: bytes = b"text/plain"
) -> None:
    head = (
        b"HTTP/1.0 "
        + status
        + b"\r\nContent-Type: "
        + kind
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    view = memoryview(head + body)
    while view:
        sent = await conn.send(view)
        view = view[sent:]
