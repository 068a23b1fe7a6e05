"""IPv4 home addresses a home agent gives its mobile nodes (DSMIPv6, RFC 5555 §3.1.1, §3.2.1),
pure.

A mobile node that wants a stable IPv4 address for its IPv4 applications puts an IPv4 Home
Address option in its home Binding Update: 0.0.0.0 to be given one, or the address it wants
(the one it had). The home agent answers with an IPv4 Address Acknowledgement in the BA. The
IPv6 registration does not depend on it: a BU is accepted or refused for IPv6 as always, and
the acknowledgement says what became of the IPv4 request.

Where addresses come from: an address configured for the mobile node (static), else the home
agent's IPv4 home prefix (dynamic: the lowest free address; a mobile node that asks again, or
asks for the address it had, keeps it). Statuses (RFC 5555 §3.2.1):

- 0 success, with the address and prefix length 32;
- 129 administratively prohibited: the home agent has no IPv4 home address for this mobile
  node (no prefix, nothing configured);
- 130 incorrect IPv4 home address: another than its configured one, or one another mobile node
  holds or has configured;
- 131 invalid IPv4 address: outside the prefix, the prefix's network or broadcast address, or
  a prefix length other than 32 without the P flag;
- 132 dynamic IPv4 home address not available: the prefix is used up;
- 133 prefix allocation unauthorized: the P flag (an IPv4 mobile network prefix is not
  offered by this home agent).

A dynamic address is the mobile node's until its binding ends (de-registration, expiry, a
registration without the option); a static one is always reserved for it. Bounded: at most
one address per security association, and the prefix itself bounds the pool.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address

from mipnode.wire.mh import Ipv4AckStatus, Ipv4AddressAck, Ipv4HomeAddress

UNSPECIFIED = IPv4Address("0.0.0.0")


class Ipv4HomePool:
    def __init__(
        self,
        prefix: IPv4Network | None,
        static: dict[IPv6Address, IPv4Address] | None = None,
    ) -> None:
        self.prefix = prefix
        self._static = dict(static or {})
        self._reserved = set(self._static.values())
        self._holder: dict[IPv4Address, IPv6Address] = {}  # dynamic addresses in use
        self._of: dict[IPv6Address, IPv4Address] = {}  # every mobile node's current one

    def of(self, home_address: IPv6Address) -> IPv4Address | None:
        """The IPv4 home address ``home_address`` holds now, if any."""
        return self._of.get(home_address)

    def assign(self, home_address: IPv6Address, asked: Ipv4HomeAddress) -> Ipv4AddressAck:
        """The answer to ``asked``; on success the address is ``home_address``'s from now."""
        refused = self._refusal(home_address, asked)
        if refused is not None:
            return Ipv4AddressAck(refused, UNSPECIFIED, 0)
        address = self._pick(home_address, asked.address)
        if address is None:
            return Ipv4AddressAck(
                Ipv4AckStatus.DYNAMIC_IPV4_HOME_ADDRESS_NOT_AVAILABLE, UNSPECIFIED, 0
            )
        self.take(home_address, address)
        return Ipv4AddressAck(Ipv4AckStatus.SUCCESS, address, 32)

    def take(self, home_address: IPv6Address, address: IPv4Address) -> bool:
        """``home_address`` holds ``address`` (assigned now, or restored from a record);
        False (nothing changed) if it cannot: not its static one, not in the prefix, another's."""
        static = self._static.get(home_address)
        if static is not None:
            if address != static:
                return False
        elif (
            not self._dynamic_ok(address) or self._holder.get(address, home_address) != home_address
        ):
            return False
        self.release(home_address)
        if static is None:
            self._holder[address] = home_address
        self._of[home_address] = address
        return True

    def release(self, home_address: IPv6Address) -> None:
        """``home_address``'s binding ended: a dynamic address goes back to the pool."""
        address = self._of.pop(home_address, None)
        if address is not None and self._holder.get(address) == home_address:
            del self._holder[address]

    def _refusal(self, home_address: IPv6Address, asked: Ipv4HomeAddress) -> Ipv4AckStatus | None:
        if asked.prefix_requested:
            return Ipv4AckStatus.PREFIX_ALLOCATION_UNAUTHORIZED
        static = self._static.get(home_address)
        if static is None and self.prefix is None:
            return Ipv4AckStatus.ADMINISTRATIVELY_PROHIBITED
        if asked.prefix_length != 32:
            return Ipv4AckStatus.INVALID_IPV4_ADDRESS
        if asked.address == UNSPECIFIED:
            return None
        if static is not None:
            return None if asked.address == static else Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS
        if asked.address in self._reserved:  # another node's static address
            return Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS
        if not self._dynamic_ok(asked.address):
            return Ipv4AckStatus.INVALID_IPV4_ADDRESS
        holder = self._holder.get(asked.address)
        if holder is not None and holder != home_address:
            return Ipv4AckStatus.INCORRECT_IPV4_HOME_ADDRESS
        return None

    def _pick(self, home_address: IPv6Address, asked: IPv4Address) -> IPv4Address | None:
        static = self._static.get(home_address)
        if static is not None:
            return static
        if asked != UNSPECIFIED:
            return asked
        current = self._of.get(home_address)
        if current is not None:
            return current
        assert self.prefix is not None
        if len(self._holder) + len(self._reserved) >= self.prefix.num_addresses:
            return None  # used up: no scan (a BU a second must not cost a walk of the prefix)
        for address in self.prefix.hosts():
            if address not in self._holder and address not in self._reserved:
                return address
        return None

    def _dynamic_ok(self, address: IPv4Address) -> bool:
        prefix = self.prefix
        return (
            prefix is not None
            and address in prefix
            and address not in self._reserved
            and (
                prefix.prefixlen >= 31
                or address not in (prefix.network_address, prefix.broadcast_address)
            )
        )
