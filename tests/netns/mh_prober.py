"""Send whole IPv6 packets from a namespace and hand back what a given node sent into it.

Run inside a namespace (``ip netns exec NS python mh_prober.py IFNAME FROM_ADDRESS``), the
prober keeps an AF_PACKET socket open on ``IFNAME`` (SOCK_DGRAM, ETH_P_IPV6: whole IPv6
packets without the link-layer header, protocol 41, ICMPv6 and extension headers included)
and reads one JSON request per line on stdin::

    {"send": ["<hex of a whole IPv6 packet>", ...], "wait_ms": 500, "count": 1,
     "flush": true, "host_only": false}

``flush`` (default true) first discards what arrived since the last request; the packets of
``send`` then leave through an IPPROTO_RAW socket (the header as given, bound to ``IFNAME``),
and the prober answers with one JSON line ``{"packets": ["<hex>", ...]}``: every packet whose
IPv6 source is ``FROM_ADDRESS`` that arrived on ``IFNAME`` within ``wait_ms`` -- sooner once
``count`` of them came; with ``host_only`` only those sent to this interface's own link-layer
address (the kernel's PACKET_HOST), not to a multicast group or another host's. It builds
and parses nothing: the test does that (with scapy), so the prober stays small and starts
fast. It exits when stdin closes.

:class:`Prober` is the test side: it starts the script in a namespace and talks to it.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ETH_P_IPV6 = 0x86DD
PACKET_HOST = 0
PACKET_OUTGOING = 4
SO_BINDTODEVICE = 25


def serve(ifname: str, source: str) -> None:
    want = socket.inet_pton(socket.AF_INET6, source)
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
    tap.bind((ifname, ETH_P_IPV6))
    tap.setblocking(False)
    sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sender.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())

    def take(host_only: bool = False) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                pkt, addr = tap.recvfrom(65535)
            except BlockingIOError:
                return out
            if addr[2] == PACKET_OUTGOING or (host_only and addr[2] != PACKET_HOST):
                continue
            if len(pkt) >= 40 and pkt[8:24] == want:
                out.append(pkt)

    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("flush", True):
            take()
        for packet in request.get("send", []):
            pkt = bytes.fromhex(packet)
            sender.sendto(pkt, (socket.inet_ntop(socket.AF_INET6, pkt[24:40]), 0))
        count = request.get("count")
        deadline = time.monotonic() + request.get("wait_ms", 500) / 1000
        got: list[bytes] = []
        while True:
            got += take(request.get("host_only", False))
            left = deadline - time.monotonic()
            if left <= 0 or (count is not None and len(got) >= count):
                break
            select.select([tap], [], [], left)
        print(json.dumps({"packets": [p.hex() for p in got]}), flush=True)


class Prober:
    """A prober running in namespace ``ns`` (``ip netns exec``); :meth:`close` ends it."""

    def __init__(self, ns: str, source: str, ifname: str = "eth0") -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__)), ifname, source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert self._line() == "ready", "the prober did not start"
        except BaseException:
            self.close()
            raise

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def request(
        self,
        send: Sequence[bytes] = (),
        *,
        wait_s: float = 0.5,
        count: int | None = None,
        flush: bool = True,
        host_only: bool = False,
    ) -> list[bytes]:
        """Send ``send`` and return what came back from the source within ``wait_s``
        (``host_only``: only what was sent to this interface's link-layer address)."""
        message: dict[str, Any] = {
            "send": [p.hex() for p in send],
            "wait_ms": int(wait_s * 1000),
            "count": count,
            "flush": flush,
            "host_only": host_only,
        }
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        answer = self._line()
        assert answer, "the prober died"
        return [bytes.fromhex(p) for p in json.loads(answer)["packets"]]

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
