"""The mobile node asks its home agent for the home prefixes (RFC 6275 §11.4.2, §11.4.3), pure.

After each new registration on a home agent (the first, or on another home pair) the mobile
node sends one Mobile Prefix Solicitation with a fresh random Identifier through the tunnel
(sealed once keyed; padded in any case so the home agent may answer a clear one, whose answer
it never makes larger than the question: core/prefix_delivery.py). It takes an advertisement
only if it comes from the home agent and carries the Identifier of the latest solicitation not
yet answered (§11.4.3); anything else is discarded, and an unsolicited one is answered with a
new solicitation, at most one per INITIAL_SOLICIT_TIMER (§11.4.2's retransmission interval) so
that no stream of advertisements makes the mobile node chatter. A solicitation left unanswered
is sent again, no more often than that, at the next registration, and so is one when the last
answer is a day old (MaxMobPfxAdvInterval, the period at which a home agent would advertise
unasked: a home agent restarted with a new prefix is heard of within a day).

What the home agent advertises is shown in ``status`` (``home_prefixes``, at most
MAX_PREFIXES); when none of its prefixes holds our home address (the home network was
renumbered, or the configuration is wrong) the mobile node says so, as a warning, whenever the
advertised list changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from mipnode.wire.errors import BadPacket
from mipnode.wire.prefix_discovery import (
    PrefixInformation,
    mobile_prefix_solicitation,
    parse_advertisement_untrusted,
)

INITIAL_SOLICIT_TIMER = 3.0  # RFC 6275 §12
ASK_AGAIN_AFTER_S = 86_400.0  # RFC 6275 §13 MaxMobPfxAdvInterval: the home agent's own period
PADDING = 32  # octets: the answer with one prefix (80 octets) is then as large as the question
MAX_PREFIXES = 16  # kept from one advertisement (a forged one may list more)


@dataclass(frozen=True, slots=True)
class Advertised:
    """What the home agent told us, and when."""

    prefixes: tuple[PrefixInformation, ...]
    at: float
    holds_home_address: bool


class HomePrefixes:
    def __init__(self, home_address: IPv6Address, home_agent: IPv6Address) -> None:
        self._hoa = home_address
        self._ha = home_agent
        self._outstanding: int | None = None  # identifier of the unanswered solicitation
        self._asked_at: float | None = None
        self.advertised: Advertised | None = None

    def solicit(self, now: float, identifier: int, *, force: bool = True) -> bytes | None:
        """The ICMPv6 message of a new solicitation (HoA -> HA), or None when one went out less
        than INITIAL_SOLICIT_TIMER ago and ``force`` is off."""
        if (
            not force
            and self._asked_at is not None
            and now - self._asked_at < INITIAL_SOLICIT_TIMER
        ):
            return None
        self._outstanding, self._asked_at = identifier, now
        return mobile_prefix_solicitation(identifier, self._hoa, self._ha, PADDING)

    def due(self, now: float) -> bool:
        """Whether to ask at this registration: a question is still unanswered, or the last
        answer is older than a day (a restarted home agent may have been renumbered)."""
        if self._outstanding is not None or self.advertised is None:
            return True
        return now - self.advertised.at >= ASK_AGAIN_AFTER_S

    def receive_untrusted(self, now: float, message: bytes) -> str:
        """An advertisement from the home agent to our home address: ``"taken"``,
        ``"unsolicited"`` (§11.4.3: discard, and solicit) or a drop reason."""
        try:
            adv = parse_advertisement_untrusted(message, self._ha, self._hoa)
        except BadPacket as exc:
            return exc.reason
        if adv.identifier != self._outstanding:
            return "unsolicited"
        self._outstanding = None
        prefixes = adv.prefixes[:MAX_PREFIXES]
        holds = any(self._hoa in info.prefix for info in prefixes)
        self.advertised = Advertised(prefixes, now, holds)
        return "taken"
