"""The home agent's prefix table (drivers/prefix_table.py) against the plainest oracle: for
every address, the router whose prefix holds it by ``ipaddress`` containment, longest first."""

from __future__ import annotations

import random
from ipaddress import IPv6Address, IPv6Network

from mipnode.drivers.prefix_table import PrefixTable

R1, R2 = IPv6Address("2001:db8:1::10").packed, IPv6Address("2001:db8:1::11").packed
A48, A64 = IPv6Network("2001:db8:aaaa::/48"), IPv6Network("2001:db8:bbbb:1::/64")
HOST = IPv6Network("2001:db8:cccc::7/128")


def oracle(table: dict[bytes, tuple[IPv6Network, ...]], address: bytes) -> bytes | None:
    a = IPv6Address(address)
    hits = [(p.prefixlen, owner) for owner, ps in table.items() for p in ps if a in p]
    return max(hits)[1] if hits else None


def test_lookups_agree_with_containment() -> None:
    rng = random.Random(7)
    table = PrefixTable()
    wanted = {R1: (A48, HOST), R2: (A64,)}
    for owner, prefixes in wanted.items():
        table.set(owner, prefixes)
    probes = [IPv6Address(rng.getrandbits(128)).packed for _ in range(200)]
    for prefix in (A48, A64, HOST):
        base = int(prefix.network_address)
        probes += [
            IPv6Address(base + rng.getrandbits(128 - prefix.prefixlen)).packed for _ in range(50)
        ]
        probes.append(IPv6Address(base - 1).packed)
        probes.append(IPv6Address(int(prefix.broadcast_address) + 1).packed)
    for address in probes:
        assert table.owner_of(address) == oracle(wanted, address), IPv6Address(address)


def test_set_reports_the_routes_to_change_and_empties_cleanly() -> None:
    table = PrefixTable()
    assert not table
    assert table.set(R1, (A48, HOST)) == ({A48, HOST}, set())
    assert table.set(R1, (A48,)) == (set(), {HOST})
    assert table.owner_of(IPv6Address("2001:db8:cccc::7").packed) is None
    assert table.set(R1, ()) == (set(), {A48})
    assert not table and table.owner_of(IPv6Address("2001:db8:aaaa::1").packed) is None
    assert table.prefixes_of(R1) == ()
