"""What a binding costs the home agent daemon (mipnode/benchdaemon.py): the pass registers every
mobile node through a real HomeAgentDaemon's own handlers, and its figure holds the daemon's
tables on top of the core's."""

from __future__ import annotations

import trio

from mipnode import benchcontrol, benchdaemon

N = 300


def test_the_daemon_holds_more_per_binding_than_its_core_and_keyed_more_still() -> None:
    core = benchcontrol.bytes_per_binding(
        N, [benchcontrol.binding_update(i, 1, benchcontrol.T0) for i in range(N)]
    )
    clear = benchdaemon.daemon_bytes_per_binding(N, keyed=False)
    keyed = benchdaemon.daemon_bytes_per_binding(N, keyed=True)
    assert set(clear) == set(keyed) == {"python_bytes", "rss_bytes"}
    # The forwarding table, the cache of sources and the rest are the daemon's own.
    assert clear["python_bytes"] > core + 50, (core, clear)
    # Each keyed binding also holds an inbound and an outbound ESP SA.
    assert keyed["python_bytes"] > clear["python_bytes"] + 100, (clear, keyed)


def test_every_registration_reaches_the_daemon_tables() -> None:
    grown = trio.run(benchdaemon._register, 50, True, True)  # raises unless 50 SAs and bindings
    assert grown > 0
