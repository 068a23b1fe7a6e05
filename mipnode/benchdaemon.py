"""What a binding costs the home agent daemon in memory: its core and its own tables.

Theory of operation (issue 13: "<= 1 KB per binding including the daemon's tables").
:func:`mipnode.benchcontrol.bytes_per_binding` measures the core alone. Here a real
:class:`~mipnode.drivers.ha_daemon.HomeAgentDaemon` is built from a configuration for ``n``
mobile nodes, as ``mipnode ha`` builds it but without its sockets and TUN (``run()`` opens
those), and each registration takes the daemon's way: the ``Via`` from the daemon's cache of
sources, the inner Binding Update into its node, and after every batch of 64 the node's events
into the daemon's own handler, which fills the forwarding table, the mobile-network and IPv4
tables, the host routes it wants and, for a keyed registration, the ESP security associations.
The daemon's route worker hands the wanted host routes to the kernel and lets them go; so does
this pass, after each batch.

Two figures, each over a pass of its own on a fresh daemon:

* ``python_bytes``: what Python's allocator holds after the registrations minus before,
  per binding (tracemalloc: exact, but blind to OpenSSL's own memory);
* ``rss_bytes``: the growth of the process's resident set, per binding: everything, OpenSSL's
  AEAD contexts of the ESP SAs included. Pages and allocator arenas make it coarse for a few
  hundred bindings; with 10,000 and more it is the figure to read.

With ``keyed`` every BU carries an ESP key share (what the default ``protection = "esp"``
sends), so every registration costs the home agent an X25519 exchange and leaves an inbound
and an outbound SA; without it, ``protection = "none"``. Inputs are deterministic (benchcontrol's
addresses, keys and SPIs; each key share's private key from the mobile node's index). This
module sits outside the pure packages and the drivers, so it may read a clock.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import subprocess
import sys
import time

import trio

from mipnode import benchcontrol as bc
from mipnode.config import HaConfig, MobileNodeEntry
from mipnode.core.esp_keys import Ephemeral, inbound_spi
from mipnode.drivers.ha_daemon import HomeAgentDaemon
from mipnode.wire.keyshare import KeyShare

SUITE_AES_GCM = 1
UDP_PORT = 4191
PAGE = os.sysconf("SC_PAGE_SIZE")


def config(n: int, keyed: bool) -> HaConfig:
    """An HA configuration for ``n`` mobile nodes; nothing in it is opened by this module."""
    return HaConfig(
        path="(bench)",
        address=bc.HA,
        home_prefix=bc.HOME_PREFIX,
        udp_ports=(UDP_PORT,),
        max_lifetime_s=3600,
        tun_name="mipbench0",
        tun_mtu=1400,
        mobile_nodes=tuple(
            MobileNodeEntry(bc.mn_home_address(i), bc.SPI_BASE + i, bc.mn_key(i)) for i in range(n)
        ),
        control_socket="/nonexistent/mipnode-bench.sock",
        state_dir=None,
        protection="esp" if keyed else "none",
    )


def key_share(index: int) -> KeyShare:
    private = hashlib.sha256(b"mipnode bench mn esp key %d" % index).digest()
    return KeyShare(
        SUITE_AES_GCM, inbound_spi(index.to_bytes(4, "big")[-2:]), Ephemeral(private).public
    )


def registrations(n: int, keyed: bool, wall: float) -> list[bytes]:
    """Each mobile node's first home BU, stamped at POSIX time ``wall``."""
    return [
        bc.binding_update(i, 1, 0.0, wall=wall, share=key_share(i) if keyed else None)
        for i in range(n)
    ]


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def _register(n: int, keyed: bool, traced: bool) -> int:
    """Register ``n`` mobile nodes with a fresh daemon; the growth in bytes."""
    daemon = HomeAgentDaemon(config(n, keyed))
    wall = time.time()
    packets = registrations(n, keyed, wall)
    node = daemon.node
    # The core's monotonic ``now`` at which its wall clock reads ``wall`` (RFC 4285 §6).
    now = wall - (time.time() - trio.current_time())
    gc.collect()
    before = _resident()
    with bc.traced_growth() if traced else contextlib.nullcontext([0]) as grown:
        for start in range(0, n, bc.BATCH):
            for i in range(start, min(n, start + bc.BATCH)):
                via = daemon._via("T-udp", bc.mn_remote(i), UDP_PORT)
                node.receive_tunnelled(now, packets[i], via)
            node.datagrams_to_send(now)  # the BAs: the daemon sends them and keeps nothing
            while (event := node.next_event()) is not None:
                daemon._on_event(event)
            daemon.host_routes._wanted.clear()  # handed to the kernel by the route worker
    bc.expect_counter(node, "registrations", n)
    if keyed and len(daemon.esp.outbound) != n:
        raise RuntimeError(f"benchmark daemon: {len(daemon.esp.outbound)} SAs for {n} bindings")
    if traced:
        return grown[0]
    gc.collect()
    return _resident() - before


def daemon_bytes_per_binding(n: int, keyed: bool) -> dict[str, float]:
    """``{"python_bytes", "rss_bytes"}`` per binding of a daemon with ``n`` bindings; the
    resident set is measured in a process of its own, whose allocator has freed nothing yet."""
    python = trio.run(_register, n, keyed, True)
    done = subprocess.run(
        [sys.executable, "-m", "mipnode.benchdaemon", str(n), "1" if keyed else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    rss = int(done.stdout.split()[-1])
    return {"python_bytes": round(python / n, 1), "rss_bytes": round(rss / n, 1)}


if __name__ == "__main__":  # the resident-set pass: python -m mipnode.benchdaemon N KEYED
    print(trio.run(_register, int(sys.argv[1]), sys.argv[2] == "1", False))
