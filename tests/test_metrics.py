"""The opt-in Prometheus endpoint (mipnode/drivers/metrics.py): scraped over a real TCP socket
on loopback and read back with prometheus_client's own parser, from status answers recorded
from real daemons (tests/data/human); requests other than GET /metrics, and clients beyond the
bound, get nothing but a short refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from mipnode.config import ConfigError, load_cn_config
from mipnode.drivers import metrics

DATA = Path(__file__).parent / "data" / "human"


def recorded(role: str) -> dict[str, Any]:
    return json.loads((DATA / f"{role}-status.json").read_text())


async def request(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(role: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status = recorded(role)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve_metrics, ("127.0.0.1", 0), lambda _: status)
        reply = await request(port, b"GET /metrics HTTP/1.0\r\n\r\n")
        nursery.cancel_scope.cancel()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Type: text/plain; version=" in head
    return samples(body.decode())


async def test_a_mobile_routers_status_as_metrics() -> None:
    m = await scrape("mn")
    assert m[("mipnode_info", (("role", "mn"),))] == 1
    assert m[("mipnode_bindings", ())] == 1
    assert m[("mipnode_paths", (("kind", "T-native"),))] == 1  # its home path
    assert m[("mipnode_paths", (("kind", "D-udp"),))] == 2  # a correspondent and a host's flow
    assert m[("mipnode_drops_total", (("reason", "tun_not_from_hoa"),))] == 3
    status = recorded("mn")
    sent = status["core"]["home_checks_sent"]
    assert m[("mipnode_events_total", (("event", "home_checks_sent"),))] == sent
    assert m[("mipnode_rtt_seconds", ())] == pytest.approx(status["rtt_ms"] / 1000)
    assert all(
        not name.startswith("mipnode_packets")
        or name.endswith("_total")
        or name.endswith("_created")
        for name, _ in m
    )


async def test_the_home_agent_and_the_correspondent_too() -> None:
    ha = await scrape("ha")
    assert ha[("mipnode_info", (("role", "ha"),))] == 1
    assert ha[("mipnode_paths", (("kind", "T-native"),))] == 1
    assert ha[("mipnode_drops_total", (("reason", "tun_no_binding"),))] == 4
    cn = await scrape("cn")
    assert cn[("mipnode_bindings", ())] == 0
    assert cn[("mipnode_paths", (("kind", "D-udp"),))] == 2  # a home address and a host


async def test_anything_but_get_metrics_is_refused_briefly() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve_metrics, ("127.0.0.1", 0), lambda _: {})
        other = await request(port, b"GET / HTTP/1.0\r\n\r\n")
        post = await request(port, b"POST /metrics HTTP/1.0\r\n\r\n")
        huge = await request(port, b"GET /metrics" + b"x" * 10000)
        nursery.cancel_scope.cancel()
    assert other.startswith(b"HTTP/1.0 404 ") and len(other) < 200
    assert post.startswith(b"HTTP/1.0 400 ") and len(post) < 200
    assert huge.startswith(b"HTTP/1.0 400 ") and len(huge) < 200


async def test_silent_clients_beyond_the_bound_are_turned_away(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve_metrics, ("127.0.0.1", 0), lambda _: {})
        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(metrics.MAX_CLIENTS)]
        await trio.sleep(0.1)
        extra = await request(port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra == b""  # closed at once: every slot is taken
        await trio.sleep(metrics.CLIENT_TIMEOUT_S + 1)  # the silent ones time out
        assert (await silent[0].receive_some(10)) == b""
        again = await request(port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert again.startswith(b"HTTP/1.0 200 OK")
        for s in silent:
            await s.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:9464", ("::1", 9464))],
)
def test_metrics_listen_is_an_address_and_a_port(
    tmp_path: Path, value: str, expected: tuple[str, int]
) -> None:
    path = tmp_path / "cn.toml"
    path.write_text(f'[cn]\naddresses = ["2001:db8:c::2"]\nmetrics_listen = "{value}"\n')
    assert load_cn_config(str(path)).metrics_listen == expected


@pytest.mark.parametrize("value", ["localhost:9464", "127.0.0.1", "127.0.0.1:70000", "[::1]"])
def test_a_bad_metrics_listen_is_one_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "cn.toml"
    path.write_text(f'[cn]\naddresses = ["2001:db8:c::2"]\nmetrics_listen = "{value}"\n')
    with pytest.raises(ConfigError) as info:
        load_cn_config(str(path))
    assert info.value.key == "cn.metrics_listen" and "ADDRESS:PORT" in info.value.problem
