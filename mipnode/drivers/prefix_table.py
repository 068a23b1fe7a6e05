"""Which mobile router serves an address: the home agent's prefix table (RFC 3963 §6.1).

The data plane looks a packet's home address up in a dict first (one lookup, the common case);
only a miss comes here, and only while some mobile router has prefixes registered. A lookup is
one dict probe per distinct prefix length in use, longest first: a handful for any real
configuration (the configuration refuses overlapping prefixes, so at most one matches anyway).
"""

from __future__ import annotations

from ipaddress import IPv6Network


class PrefixTable:
    def __init__(self) -> None:
        self._by_length: dict[int, dict[int, bytes]] = {}  # length: {network int: owner}
        self._lengths: list[int] = []  # longest first
        self._of_owner: dict[bytes, tuple[IPv6Network, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self._of_owner)

    def prefixes_of(self, owner: bytes) -> tuple[IPv6Network, ...]:
        return self._of_owner.get(owner, ())

    def set(
        self, owner: bytes, prefixes: tuple[IPv6Network, ...]
    ) -> tuple[set[IPv6Network], set[IPv6Network]]:
        """``owner`` (a home address, 16 octets) now serves exactly ``prefixes``; returns
        (added, removed) for the routes."""
        before = set(self._of_owner.get(owner, ()))
        after = set(prefixes)
        if before == after:  # every refresh of every binding comes here: nothing to redo
            return set(), set()
        for prefix in before - after:
            table = self._by_length.get(prefix.prefixlen, {})
            if table.get(int(prefix.network_address)) == owner:
                del table[int(prefix.network_address)]
        for prefix in after - before:
            self._by_length.setdefault(prefix.prefixlen, {})[int(prefix.network_address)] = owner
        if prefixes:
            self._of_owner[owner] = tuple(prefixes)
        else:
            self._of_owner.pop(owner, None)
        self._by_length = {n: t for n, t in self._by_length.items() if t}
        self._lengths = sorted(self._by_length, reverse=True)
        return after - before, before - after

    def owner_of(self, address: bytes) -> bytes | None:
        """The home address of the router whose prefix holds ``address`` (16 octets)."""
        value = int.from_bytes(address, "big")
        for length in self._lengths:
            owner = self._by_length[length].get(value >> (128 - length) << (128 - length))
            if owner is not None:
                return owner
        return None
