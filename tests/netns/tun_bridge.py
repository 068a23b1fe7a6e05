"""Two TUN devices, one in each of two namespaces, joined by the daemons' own TUN code.

``python tests/netns/tun_bridge.py NS_A NS_B OFFLOADS COALESCE``: creates TUN ``tb0`` in NS_A
and in NS_B with ``open_tun(offloads=OFFLOADS, coalesce=COALESCE == "1")`` (the thread enters
each namespace with setns(2) before it creates the device; the fds stay bound to their
devices), prints ``ready``, then forwards every packet read from one device into the other with
``pump.drain_tun`` and ``Tun.write``/``Tun.flush``, exactly as a daemon's data plane does.
When stdin closes it prints one JSON line: each device's ``status()`` and the drops.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

import trio

from mipnode.drivers import pump
from mipnode.drivers.io import Counters
from mipnode.drivers.tun import Tun, open_tun

CLONE_NEWNET = 0x40000000


def enter(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {namespace}")
    finally:
        os.close(fd)


async def bridge(a: Tun, b: Tun) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.drain_tun, a, b.write, b.flush)
        nursery.start_soon(pump.drain_tun, b, a.write, a.flush)
        print("ready", flush=True)
        while True:
            await trio.lowlevel.wait_readable(sys.stdin.fileno())
            if not os.read(sys.stdin.fileno(), 4096):
                break
        nursery.cancel_scope.cancel()


def main() -> None:
    ns_a, ns_b, offloads, coalesce = sys.argv[1:5]
    drops = Counters()
    enter(ns_a)
    a = open_tun("tb0", offloads=int(offloads, 0), count=drops, coalesce=coalesce == "1")
    enter(ns_b)
    b = open_tun("tb0", offloads=int(offloads, 0), count=drops, coalesce=coalesce == "1")
    print("created", flush=True)
    if sys.stdin.readline().strip() != "go":  # the test configures both devices first
        return
    trio.run(bridge, a, b)
    print(json.dumps({"a": a.status(), "b": b.status(), "drops": drops}), flush=True)


if __name__ == "__main__":
    main()
