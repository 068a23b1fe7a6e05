"""The home agent's answers to Mobile Prefix Solicitations (RFC 6275 §10.6), pure.

§10.3.1 has a home agent propagate the home network's prefixes to its mobile nodes as §10.6
describes: a Mobile Prefix Solicitation from a registered mobile node is answered right away
(§10.6.2, a MUST trigger) with a Mobile Prefix Advertisement listing every home prefix in full
(§10.6.3): here the one configured prefix, On-link and Autonomous, with the Router Address flag
and the home agent's address in the Prefix field (§7.2), lifetimes infinite (the prefix is
configuration, with no lifetime, §10.3.1's rows in docs/conformance.md), M and O clear (the
home agent offers no DHCPv6, §6.8). At most one advertisement a second to a mobile node (§6.8).

Who may ask: the home address must have a binding, and the solicitation must come where that
binding is -- sealed by the home address's own ESP SA, in clear on the binding's path, or
natively from its care-of address with a Home Address option (§6.7, §11.4.2). A sealed one is
authenticated; the others are not (RFC 4285, which authenticates our signalling in place of
IPsec, does not cover ICMPv6), so their answer is never larger than the solicitation, as for
every unauthenticated packet: a mobile node pads its solicitation with an option the home agent
skips (§6.7: "MUST silently ignore any options they do not recognize").

The other §10.6.2 triggers -- a prefix's flags or lifetimes reconfigured, a prefix added --
never occur while the daemon runs: the prefix, its flags and its lifetimes are fixed by the
configuration (docs/conformance.md, D9).
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from mipnode.core.token_bucket import ErrorRateLimiter
from mipnode.wire.prefix_discovery import (
    ADVERTISEMENT_HEADER,
    INFINITE,
    PREFIX_OPTION_OCTETS,
    MobilePrefixAdvertisement,
    PrefixInformation,
    mobile_prefix_advertisement,
)

MPA_INTERVAL_S = 1.0  # RFC 6275 §6.8: "MUST NOT send more than one ... per second"
MPA_RATE_PER_S = 50.0  # and this many in all: the limiter's memory stays bounded


class PrefixDelivery:
    def __init__(self, address: IPv6Address, prefix: IPv6Network) -> None:
        self._address = address
        # §7.2: R only when our address lies inside the prefix (the daemon's configuration
        # makes sure it does); the Prefix field then carries it whole.
        router = address if address in prefix else None
        self._info = (PrefixInformation(prefix, INFINITE, INFINITE, router_address=router),)
        self._limiter = ErrorRateLimiter(MPA_INTERVAL_S, MPA_RATE_PER_S)

    def answer(
        self,
        now: float,
        identifier: int,
        home_address: IPv6Address,
        headers: int,
        room: int | None,
    ) -> bytes | str:
        """The ICMPv6 message answering ``identifier`` from ``home_address`` (checksum over the
        home agent's address and the home address, which the type 2 routing header of a
        native answer names, §6.4), or why there is none: an unauthenticated solicitation of
        ``room`` octets is answered only if ``headers`` and the message fit in it, and a mobile
        node gets one advertisement a second at most."""
        octets = ADVERTISEMENT_HEADER + PREFIX_OPTION_OCTETS * len(self._info)
        if room is not None and headers + octets > room:
            return "mpa_larger_than_solicitation"
        if not self._limiter.allow(now, home_address):
            return "mpa_rate_limited"
        adv = MobilePrefixAdvertisement(identifier, self._info)
        return mobile_prefix_advertisement(adv, self._address, home_address)
