"""The home agent's IPv4 home addresses (RFC 5555) in its data plane: which mobile node owns
each, and which IPv4 packets from a tunnel may be forwarded.

An IPv4 packet from a mobile node arrives sealed (ESP, Next Header 4: the SA names its owner)
or, without protection, in clear: IPv4-in-IPv6 (protocol 4, RFC 2473) on T-native, or the bare
IPv4 packet as the UDP payload on T-udp (RFC 5555 §4.1 carries IPv4 in the tunnel the mobile
node's binding uses). Either way it is forwarded only when its source is an IPv4 home address
the home agent gave, or inside an IPv4 network a mobile router registered (held IPv4-mapped in
the prefix table, core/ipv4_networks.py), on the path of its owner's binding (the ingress
filter of DESIGN §6, for IPv4), and under an SA only when that SA's owner is the owner.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from mipnode.core.ipv4_networks import MAPPED_HEAD
from mipnode.core.types import Via
from mipnode.drivers.prefix_table import PrefixTable


class Ipv4Homes:
    def __init__(self) -> None:
        self.owner: dict[bytes, bytes] = {}  # IPv4 home address (4 octets) -> home address
        self._given: dict[bytes, bytes] = {}  # and back: what to take away when it changes

    def set(self, home_address: bytes, given: IPv4Address | None) -> None:
        """``home_address``'s binding has ``given`` now (``None``: none, or no binding)."""
        old = self._given.pop(home_address, None)
        if old is not None and self.owner.get(old) == home_address:
            del self.owner[old]
        if given is not None:
            self.owner[given.packed] = home_address
            self._given[home_address] = given.packed

    def owner_of(self, address: bytes, networks: PrefixTable) -> bytes:
        """Whose ``address`` (4 octets) is: a home address's IPv4 one, or a router's network
        (looked up only on a miss, and only while some router has networks); b"": nobody's."""
        owner = self.owner.get(address)
        if owner is None and networks:
            owner = networks.owner_of(MAPPED_HEAD + address)
        return owner or b""

    def refusal(
        self,
        inner: bytes,
        via: Via,
        routes: dict[bytes, Via],
        owner: bytes,
        sa_owner: bytes | None = None,
    ) -> str | None:
        """Why ``inner``, an IPv4 packet that came on ``via`` (opened under ``sa_owner``'s SA,
        or clear: ``None``) from ``owner``'s address (:meth:`owner_of`), is not forwarded;
        ``None``: it is. Anything but IPv4 is refused here (protocol 4 or a UDP payload
        claims IPv4; what the TUN gets is read by its own first nibble)."""
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return "ipv4_malformed"
        if not owner:
            return "ingress_unbound_source" if sa_owner is None else "esp_inner_source_not_owner"
        if sa_owner is not None and owner != sa_owner:
            return "esp_inner_source_not_owner"
        if routes.get(owner) != via:
            return "ingress_wrong_endpoint"
        return None
