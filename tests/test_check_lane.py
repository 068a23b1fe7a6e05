"""The check lane: STUN and clear Mobility Header signalling steered by the kernel into a socket
of their own on the data port (drivers/check_lane.py). Real sockets on loopback, no root needed.

The oracles are independent of the steering program: STUN messages are built by aioice and
Mobility Headers by scapy, and what the kernel did is read back from the two sockets.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import aioice.stun as stun
import pytest
import trio
from idle_core import IdleCore
from scapy.layers.inet6 import MIP6MH_BU, UDP, IPv6

from mipnode.drivers import pump
from mipnode.drivers.check_lane import LANE_STATS, open_lane, steers_to_lane
from mipnode.drivers.io import enable_error_queue, kernel_drops, open_udp, read_error_queue
from tunnels.demux import is_stun


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


Port = tuple[socket.socket, socket.socket, socket.socket]


@pytest.fixture
def port() -> Iterator[Port]:
    """A data socket on ::1 with its lane, and a sender."""
    data = open_udp(socket.AF_INET6, 0, address="::1")
    lane = open_lane(data)
    assert lane is not None, "this kernel refused SO_ATTACH_REUSEPORT_CBPF"
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        yield data, lane, sender
    finally:
        for s in (data, lane, sender):
            s.close()


def binding_request(**attributes: object) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes.update(attributes)
    message.add_message_integrity(b"a password of sixteen+ octets")
    message.add_fingerprint()
    return bytes(message)


def corpus() -> list[bytes]:
    rng = random.Random(4191)
    payloads = [
        binding_request(USERNAME="abcd:efgh", PRIORITY=1853824767),
        binding_request(USERNAME="x" * 40, PRIORITY=1, **{"ICE-CONTROLLING": 7}),
        bytes(stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)),
        bytes(IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / MIP6MH_BU(seq=7)),
        bytes(IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / UDP(dport=53)),
        b"\x80\x00\x10\x01" + os.urandom(200),  # ESP-in-UDP: an SPI with its top bit set
        b"",
        b"\x00",
        b"\x00\x01\x00\x00\x21\x12\xa4",  # a cookie cut short: not readable, data
        b"\x60\x00\x00\x00\x00\x08",  # an IPv6 header cut before its next header
        b"\x40\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # the cookie, but top bits 01
    ]
    for _ in range(200):
        n = rng.choice([1, 7, 8, 20, 40, 48, 100])
        head = bytes([rng.choice([0x00, 0x01, 0x3F, 0x40, 0x60, 0x6F, 0x80, 0xFF])])
        body = bytearray(rng.randbytes(n))
        if rng.random() < 0.3 and n >= 8:
            body[3:7] = b"\x21\x12\xa4\x42"  # the cookie after the first octet
        if rng.random() < 0.3 and n >= 6:
            body[5] = 135  # next header: Mobility Header
        payloads.append(head + bytes(body))
    return payloads


def test_the_kernel_steers_exactly_what_the_program_says(port: Port) -> None:
    data, lane, sender = port
    to = data.getsockname()[:2]
    steered = {True: 0, False: 0}
    for payload in corpus():
        sender.sendto(payload, to)  # loopback: queued before sendto returns
        got_data, got_lane = drain(data), drain(lane)
        assert got_data + got_lane == [payload]
        assert bool(got_lane) == steers_to_lane(payload), payload.hex()
        steered[bool(got_lane)] += 1
        if is_stun(payload):  # the daemons' own classifier (tunnels/demux.py)
            assert got_lane, payload.hex()
    assert steered[True] >= 5 and steered[False] >= 5


def test_checks_get_through_a_flood_that_overflows_the_data_socket(port: Port) -> None:
    """The attack this exists for: data arrives faster than the daemon reads, the data socket's
    buffer is full, and every check after that point is dropped -- unless it has its own queue.
    The same flood on a lone socket shows what happens without the lane."""
    data, lane, sender = port
    lone = open_udp(socket.AF_INET6, 0, address="::1")
    checks = [binding_request(USERNAME=f"check:{i}", PRIORITY=i) for i in range(50)]
    try:
        for sock in (data, lone):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills in a few packets
        for target in (data, lone):
            to = target.getsockname()[:2]
            for i in range(2000):
                sender.sendto(b"\x80\x00\x10\x01" + bytes(1200), to)
                if i % 40 == 39:
                    sender.sendto(checks[i // 40], to)
        via_lane = drain(lane)
        via_data = drain(data)
        alone = drain(lone)
        drops = kernel_drops({"data": data, "lone": lone})
    finally:
        lone.close()
    assert via_lane == checks  # every check, in order
    assert not any(is_stun(p) for p in via_data)
    assert drops["data"] > 1000 and drops["lone"] > 1000  # the flood did overflow both
    lost = len(checks) - sum(is_stun(p) for p in alone)
    assert lost >= 45  # without the lane nearly every check drowned


async def test_errors_that_reach_the_lane_are_read_as_the_data_sockets(port: Port) -> None:
    """ICMP errors are matched to a socket of the group by a hash (no packet for the program),
    so some land on the lane: its drain hands them over naming the data socket as owner."""
    data, lane, _ = port
    for sock in (data, lane):
        enable_error_queue(sock)
    closed = []
    for _ in range(24):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            closed.append(s.getsockname()[1])
    seen: list[tuple[str, int, bool]] = []
    finished = trio.Event()

    def on_error(sock: socket.socket, code: int, owner: socket.socket | None = None) -> None:
        for err in read_error_queue(sock):
            seen.append(("lane" if sock is lane else "data", err.destination[1], owner is data))
        if len(seen) == len(closed):
            finished.set()

    p = pump.Pump(IdleCore(), lambda _: None, lambda _: None)
    async with trio.open_nursery() as nursery:
        pump.start_udp_drains(nursery, data, lane, lambda d, a: None, p, on_error)
        for closed_port in closed:
            for _ in range(2):
                try:
                    data.sendto(b"check", ("::1", closed_port))
                    break
                except ConnectionRefusedError:  # the previous error, reported by this send
                    continue
            await trio.sleep(0.01)  # one error at a time: each one is read before the next
        with trio.fail_after(5):
            await finished.wait()
        nursery.cancel_scope.cancel()
    assert sorted(port for _, port, _ in seen) == sorted(closed)
    by_lane = [owned for where, _, owned in seen if where == "lane"]
    assert by_lane and all(by_lane)  # some errors went to the lane, all read as the data's
    assert any(where == "data" for where, _, _ in seen)


def test_a_refused_lane_leaves_the_port_working_alone() -> None:
    """A socket that did not ask for SO_REUSEPORT before binding cannot get a sibling: the lane
    is refused (counted, one log line) and the data socket is untouched."""
    plain = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    plain.bind(("::1", 0))
    refused = LANE_STATS["check_lanes_refused"]
    try:
        assert open_lane(plain) is None
        assert LANE_STATS["check_lanes_refused"] == refused + 1
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(binding_request(), plain.getsockname()[:2])
        assert len(drain_blocking(plain)) == 1
    finally:
        plain.close()


def drain_blocking(sock: socket.socket) -> list[bytes]:
    sock.settimeout(2.0)
    return [sock.recv(65535)]
