"""Why a mobile node has no working home registration, in one line (RFC 4487 §5.3, TC-07).

The MN daemon collects what the last round of connectivity checks showed for each T candidate
(:class:`CheckFacts`) and asks these functions for the text. `mipnode status` shows it as
``diagnosis``; the daemon logs every new text. The opening words name the outcome, so people and
the lab can match on them; the rest is the evidence, candidate by candidate:

- ``home agent unreachable: `` -- no T path check succeeded (or there is no access network to
  check from). Silence on every path is what a firewall without pinholes looks like (RFC 4487
  §5.3): the MN cannot tell which firewall, so the text says what it sent and what came back.
- ``home agent rejected the binding update: `` -- a Binding Acknowledgement refused it
  (RFC 6275 §6.1.8 status).
- ``home agent does not acknowledge the binding update: `` -- checks are answered on the path,
  yet no Binding Acknowledgement comes back, or only ones that fail authentication.

Pure: no I/O, clock or randomness; the texts depend only on the facts passed in, so a repeated
failure gives the same text (the daemon logs a text again only when it changes, or rarely).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mipnode.wire.mh import BaStatus

UNREACHABLE = "home agent unreachable: "
REJECTED = "home agent rejected the binding update: "
UNACKNOWLEDGED = "home agent does not acknowledge the binding update: "
FIREWALL_HINT = (
    "a firewall in front of the home agent or the mobile node may drop them (RFC 4487 §5.3)"
)


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """What one T candidate's last round of checks showed.

    Attributes:
        kind: ``T-native`` or ``T-udp``.
        family: 6 or 4, the outer IP version.
        address: the home agent address the checks went to.
        port: the UDP port (None for T-native).
        state: the candidate's final state: ``succeeded``, ``failed``, ``nat`` (answered through
            an address translator, not used), or ``in-progress``/``waiting``.
        checks_sent: checks sent in the round.
        checks_answered: answers received in the round (late ones included).
        mapped: the source address the home agent saw, when it answered.
        send_error: why the last check could not be sent (an errno name such as
            ``ENETUNREACH``), or what an ICMP error answered to it (``administratively
            prohibited from 2001:db8::1``), or None.
    """

    kind: str
    family: int
    address: str
    port: int | None
    state: str
    checks_sent: int
    checks_answered: int
    mapped: str | None = None
    send_error: str | None = None

    @property
    def name(self) -> str:
        """The candidate as the text names it: ``T-udp [2001:db8:1::1]:4191``."""
        if self.port is None:
            return f"{self.kind} {self.address}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.kind} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AccessFacts:
    """The access network the checks would leave from."""

    interface: str | None
    ipv6: str | None
    ipv4: str | None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _evidence(c: CheckFacts) -> str:
    checks = _count(c.checks_sent, "check")
    return f"{c.name} (protocol 41, {checks})" if c.kind == "T-native" else f"{c.name} ({checks})"


def unreachable_text(candidates: Sequence[CheckFacts], access: AccessFacts) -> str:
    """The diagnosis after a round of checks in which no candidate became usable."""
    if not candidates:
        return UNREACHABLE + _no_candidates(access)
    silent: list[CheckFacts] = []
    unsent: list[CheckFacts] = []
    parts: list[str] = []
    for c in candidates:
        if c.checks_answered == 0 and c.send_error is not None:
            unsent.append(c)
        elif c.checks_answered == 0:
            silent.append(c)
    if silent:
        parts.append("no answer from " + ", ".join(_evidence(c) for c in silent))
    for c in unsent:
        if c.send_error is not None and c.send_error.isupper():  # an errno name: ours
            parts.append(f"checks on {c.name} could not be sent ({c.send_error})")
        else:  # what an ICMP error said: the network's answer, not silence
            parts.append(f"checks on {c.name} were refused: {c.send_error}")
    for c in candidates:
        if c.checks_answered == 0:
            continue
        answers = f"{c.checks_answered} of {_count(c.checks_sent, 'check')}"
        if c.state == "nat":
            seen = f", the home agent saw {c.mapped}" if c.mapped else ""
            parts.append(f"{c.name} answered only through an address translator{seen}: not used")
        elif c.state == "succeeded":
            parts.append(f"{c.name} answered ({answers}) but was not usable")
        else:
            parts.append(f"{c.name} answered only after its check gave up ({answers})")
    if silent:
        parts.append(FIREWALL_HINT)
    return UNREACHABLE + "; ".join(parts)


def _no_candidates(access: AccessFacts) -> str:
    where = f"on {access.interface}" if access.interface else "on any interface"
    if access.ipv6 is None and access.ipv4 is None:
        return f"no access network (no IPv6 care-of address and no IPv4 address {where})"
    return (
        f"no T path to try from this access network (IPv6 {access.ipv6 or 'none'}, "
        f"IPv4 {access.ipv4 or 'none'} {where}); check the paths and home_agent_ipv4 settings"
    )


def rejection_text(status: int) -> str:
    """The diagnosis after a Binding Acknowledgement with a refusal status (>= 128)."""
    try:
        meaning = BaStatus(status).name.lower().replace("_", " ")
    except ValueError:
        meaning = "unknown status"
    return f"{REJECTED}status {status} ({meaning}, RFC 6275 §6.1.8)"


def unacknowledged_text(path: CheckFacts, waited_s: float, failed_auth: int = 0) -> str:
    """The diagnosis when the checks on ``path`` pass but no registration is acknowledged
    within ``waited_s``; ``failed_auth`` Binding Acknowledgements came back that did not pass
    the MN-HA authenticator (RFC 4285), so their status cannot be trusted. (Their number is
    left out of the text, which stays the same while the cause does.)"""
    if failed_auth:
        return (
            f"{UNACKNOWLEDGED}the Binding Acknowledgements over {path.name} within "
            f"{waited_s:.0f} s failed authentication; the MN-HA key or SPI differs from the home "
            "agent's (RFC 4285)"
        )
    return (
        f"{UNACKNOWLEDGED}no Binding Acknowledgement within {waited_s:.0f} s over {path.name}, "
        "whose checks the home agent answers; it may not know this mobile node's SPI or home "
        "address, or the MN-HA key differs (a home agent drops a Binding Update that fails "
        "authentication without answering, RFC 4285)"
    )
