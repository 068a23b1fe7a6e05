"""The mobile node's forwarding table: what it reports to the core, and how often."""

from __future__ import annotations

from ipaddress import IPv6Address

from mipnode.drivers.mn_table import ForwardingTable

CN = IPv6Address("2001:db8:cccc::1").packed
T0 = 100.0


def test_peers_with_sealed_direct_data_are_reported_at_most_once_per_period() -> None:
    table = ForwardingTable()
    assert table.direct_seen_due(T0, 1.0) is None  # nothing arrived
    table.direct_seen.add(CN)
    assert table.direct_seen_due(T0, 1.0) == {CN}
    table.direct_seen.add(CN)
    assert table.direct_seen_due(T0 + 0.5, 1.0) is None  # within the period: kept for later
    assert table.direct_seen_due(T0 + 1.0, 1.0) == {CN}
    assert table.direct_seen_due(T0 + 5.0, 1.0) is None  # reported, nothing new
