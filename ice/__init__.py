"""Pure ICE pieces (sans-IO) for the M-ICE path engine (DESIGN §4, docs/internals.md).

- :mod:`ice.candidate`: candidates, RFC 8445 priorities, foundations, pair priorities;
- :mod:`ice.stun`: the strict front door to ``aioice.stun`` (checks, answers, 487);
- :mod:`ice.checklist`: pairs, their states and the 100-pair check list;
- :mod:`ice.score`: path score (kind, then RTT) with hysteresis;
- :mod:`ice.agent`: :class:`~ice.agent.IceAgent`, the five-verb agent.
"""
