"""Counters of the data plane: tallied per packet as a list append, added up once per batch
when the pump flushes (drivers/io.py Counters, drivers/pump.py Pump.flush)."""

from __future__ import annotations

from idle_core import IdleCore

from mipnode.drivers import pump
from mipnode.drivers.io import Counters


async def test_a_batch_is_added_up_when_the_pump_flushes() -> None:
    counters, drops = Counters(), Counters()
    p = pump.Pump(IdleCore(), lambda _: None, lambda _: None, None, (counters, drops))
    counters("started")  # a rare event: counted at once
    for _ in range(40):
        counters.pending.append("tunnelled_to_ha")
    counters.pending.extend(["delivered_from_ha"] * 3)
    assert counters == {"started": 1}  # the batch is not over yet
    p.flush()
    assert counters == {"started": 1, "tunnelled_to_ha": 40, "delivered_from_ha": 3}
    assert counters.pending == []
    counters.pending.append("tunnelled_to_ha")
    p.flush()
    p.flush()  # nothing pending: nothing added twice
    assert counters["tunnelled_to_ha"] == 41 and drops == {}
