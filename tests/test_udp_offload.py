"""UDP segmentation on send (UDP_SEGMENT) and coalescing on receive (UDP_GRO), on loopback.

The kernel is the oracle: what one ``sendmsg`` handed it must arrive as the same datagrams, in
order, whether the receiver reads them one by one or coalesced.
"""

from __future__ import annotations

import os
import socket

import pytest

from mipnode.drivers import pump
from mipnode.drivers.batch_tx import MAX_BYTES, MAX_SEGMENTS, BatchSender, _runs
from mipnode.drivers.io import Counters


def _pair(gro: bool) -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    if gro:
        assert pump.enable_gro(rx)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    return tx, rx


def _read_all(rx: socket.socket, gro: bool) -> tuple[list[bytes], int]:
    got: list[bytes] = []
    reads = 0
    while True:
        try:
            if gro:
                parts, _ = pump._gro_read(rx)
            else:
                parts = [rx.recv(65535)]
        except BlockingIOError:
            return got, reads
        reads += 1
        got += parts


def _datagrams() -> list[bytes]:
    full = [os.urandom(1200) for _ in range(40)]
    return [*full, os.urandom(300), os.urandom(1200)]  # a short one ends a run


@pytest.mark.parametrize("gro", [False, True])
def test_a_batch_leaves_in_few_calls_and_arrives_whole_and_in_order(gro: bool) -> None:
    tx, rx = _pair(gro)
    with tx, rx:
        drops = Counters()
        sender = BatchSender(drops)
        sent = _datagrams()
        for d in sent:
            sender.add(tx, rx.getsockname(), d)
        sender.flush()
        assert drops == {}
        # 40 full + the short one in one call; the last full one alone (sendto).
        assert sender.statistics() == {"gso_calls": 1, "gso_datagrams": 41}
        got, reads = _read_all(rx, gro)
        assert got == sent
        # Coalesced on receive: far fewer reads than datagrams (one per GSO batch here).
        assert reads == (2 if gro else len(sent))


def test_a_socket_that_refuses_segmentation_sends_one_by_one_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tx, rx = _pair(False)
    with tx, rx:
        sender = BatchSender(Counters())
        sent = _datagrams()

        class Refusing:
            """A socket whose kernel answers UDP_SEGMENT with EIO (no checksum offload)."""

            def __init__(self, real: socket.socket) -> None:
                self.real = real

            def fileno(self) -> int:
                return self.real.fileno()

            def getsockname(self) -> object:
                return self.real.getsockname()

            def sendmsg(self, *args: object) -> int:
                raise OSError(5, "Input/output error")

            def sendto(self, data: bytes, addr: object) -> int:
                return self.real.sendto(data, addr)

        refusing = Refusing(tx)
        for d in sent:
            sender.add(refusing, rx.getsockname(), d)  # type: ignore[arg-type]
        sender.flush()
        assert sender.refused == {tx.fileno()}
        assert _read_all(rx, False)[0] == sent
        for d in sent:  # from now on that socket goes one by one without trying
            sender.add(refusing, rx.getsockname(), d)  # type: ignore[arg-type]
        sender.flush()
        assert _read_all(rx, False)[0] == sent and sender.statistics()["gso_calls"] == 0


def test_runs_respect_sizes_counts_and_bytes() -> None:
    sizes = [len(d) for run in _runs([b"a" * 10] * 3 + [b"b" * 5, b"c" * 10]) for d in run]
    assert sizes == [10, 10, 10, 5, 10]
    assert [len(r) for r in _runs([b"a" * 10] * 3 + [b"b" * 5, b"c" * 10])] == [4, 1]
    assert [len(r) for r in _runs([b"x" * 100] * 150)] == [MAX_SEGMENTS, MAX_SEGMENTS, 22]
    big = _runs([b"x" * 1400] * 60)
    assert all(sum(map(len, r)) <= MAX_BYTES for r in big) and sum(map(len, big)) == 60
    assert [len(r) for r in _runs([b"x" * 10, b"y" * 20, b"z" * 20])] == [1, 2]  # larger: new run
