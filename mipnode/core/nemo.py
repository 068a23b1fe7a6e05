"""Which mobile network prefixes a home agent registers for a mobile router (RFC 3963), pure.

A mobile router registers like a mobile node, with the R flag set in its home Binding Update
(RFC 3963 §4.1); the home agent then routes its Mobile Network Prefixes into the router's
tunnel and accepts packets from them through it. Which prefixes:

- **Explicit mode**: the BU carries Mobile Network Prefix options (§4.3), and exactly those
  are registered, each of them lying within a prefix the home agent's configuration
  authorises for this router's security association.
- **Implicit mode**: no option; the home agent registers every prefix its configuration has
  for the router.

Answers (status of the BA, RFC 3963 §4.2):

- 140 (Mobile Router Operation not permitted): R set, but no prefix is configured for this
  security association: the home agent serves it as a mobile node only if it asks as one.
- 141 (Invalid Prefix): a prefix of length 0, with bits set past its length, or overlapping
  the home prefix (the home link's own addresses are not a mobile network); more than
  MAX_PREFIXES options is refused with 130 (insufficient resources) instead.
- 142 (Not Authorized for Prefix): a well-formed prefix outside every configured one.
- 143 (Forwarding Setup failed) is not sent: the core decides before any route exists, and the
  configuration (docs/configuration.md) refuses prefixes that overlap between routers.

A BU without R registers no prefix, whatever options it carries (they are meaningless without
R): a router that registers as a plain mobile node gets its prefixes' routes removed.

IPv4 networks (core/ipv4_networks.py: held as IPv4-mapped prefixes) have no option of their
own: a registration with R gets every IPv4 network configured for the router, in either mode.
"""

from __future__ import annotations

from ipaddress import IPv6Network

from mipnode.core.ipv4_networks import MAPPED, unmapped
from mipnode.wire.mh import BaStatus, BindingUpdate, MobileNetworkPrefix

MAX_PREFIXES = 16  # per router: every one is a route and a line of the ingress filter


def prefixes_to_register(
    bu: BindingUpdate,
    authorised: tuple[IPv6Network, ...],
    home_prefix: IPv6Network,
) -> tuple[BaStatus, tuple[IPv6Network, ...]]:
    """The BA status and the prefixes a registration by ``bu`` gets (module docstring)."""
    if not bu.mobile_router:
        return BaStatus.ACCEPTED, ()
    if not authorised:
        return BaStatus.MOBILE_ROUTER_OPERATION_NOT_PERMITTED, ()
    asked = [o for o in bu.options if isinstance(o, MobileNetworkPrefix)]
    if not asked:
        return BaStatus.ACCEPTED, authorised
    if len(asked) > MAX_PREFIXES:
        return BaStatus.INSUFFICIENT_RESOURCES, ()
    registered: list[IPv6Network] = []
    for option in asked:
        prefix = valid_prefix(option)
        if prefix is None or prefix.overlaps(home_prefix) or prefix.overlaps(MAPPED):
            # IPv4-mapped prefixes are how mipnode holds IPv4 networks; never from the wire
            return BaStatus.INVALID_PREFIX, ()
        if not any(prefix.subnet_of(allowed) for allowed in authorised):
            return BaStatus.NOT_AUTHORIZED_FOR_PREFIX, ()
        if prefix not in registered:
            registered.append(prefix)
    registered += [p for p in authorised if unmapped(p) is not None and p not in registered]
    if len(registered) > MAX_PREFIXES:
        return BaStatus.INSUFFICIENT_RESOURCES, ()
    return BaStatus.ACCEPTED, tuple(registered)


def valid_prefix(option: MobileNetworkPrefix) -> IPv6Network | None:
    """The option's prefix, or ``None``: length 0 or past 128, or host bits set."""
    if not 1 <= option.length <= 128:
        return None
    try:
        return IPv6Network((option.prefix, option.length))
    except ValueError:  # bits set past the length
        return None
