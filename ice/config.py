"""Agent configuration and credentials: the timing and limits of DESIGN §4, pure.

Where the numbers come from: reference/ice.md §2 (RFC 8445/8489/7675) and §3 (Tailscale,
pion, libnice). :class:`IceConfig` documents each default and why.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from ice.checklist import MAX_PAIRS

# Specification constants
MIN_TA_S = 0.020  # DESIGN §4 budget (RFC 8445 §14.2 default 50 ms; libnice/aioice 20 ms)
MIN_RTO_S = 0.5  # RFC 8445 §14.3
CONSENT_TIMEOUT_S = 30.0  # RFC 7675 §5.1
UFRAG_MIN, UFRAG_MAX = 4, 32  # RFC 8839 §5.4 (mipnode caps the ufrag at 32, wire/mice.py)
PASSWORD_MIN, PASSWORD_MAX = 22, 256
UFRAG_RANDOM_BYTES = 6  # 48 random bits >= 24 (RFC 8445 §5.3)
PASSWORD_RANDOM_BYTES = 18  # 144 random bits >= 128
TRANSACTION_ID_LENGTH = 12  # RFC 8489 §5
TIE_BREAKER_MAX = 2**64 - 1

_ICE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


@dataclass(frozen=True, slots=True)
class Credentials:
    """Short-term ICE credentials (RFC 8445 §5.3): ufrag 4-32 and password 22-256 ice-chars."""

    ufrag: str
    password: str

    def __post_init__(self) -> None:
        if not UFRAG_MIN <= len(self.ufrag) <= UFRAG_MAX or not set(self.ufrag) <= _ICE_CHARS:
            raise ValueError("ufrag must be 4-32 ice-chars (RFC 8839 §5.4)")
        if not PASSWORD_MIN <= len(self.password) <= PASSWORD_MAX or not (
            set(self.password) <= _ICE_CHARS
        ):
            raise ValueError("password must be 22-256 ice-chars (RFC 8839 §5.4)")

    def __repr__(self) -> str:
        return f"Credentials(ufrag={self.ufrag!r}, password=...)"


def new_credentials(random_bytes: Callable[[int], bytes]) -> Credentials:
    """Fresh credentials: a 48-bit ufrag (8 chars) and a 144-bit password (24 chars)."""
    ufrag = base64.b64encode(random_bytes(UFRAG_RANDOM_BYTES)).decode()
    password = base64.b64encode(random_bytes(PASSWORD_RANDOM_BYTES)).decode()
    return Credentials(ufrag, password)


@dataclass(frozen=True, slots=True)
class IceConfig:
    """Timing and limits of one agent (reference/ice.md §2-§3 for where the numbers come from).

    Attributes:
        ta_s: pacing, one new STUN transaction per Ta (>= 20 ms, DESIGN §4).
        rto_initial_s: first retransmission timeout of a check (>= 500 ms, RFC 8445 §14.3).
        rto_max_s: cap of the doubling RTO ladder.
        max_transmissions: sends of one check before it fails (0, 0.5, 1.5, 3.5 s; fails at 7.5).
        max_pairs: check-list size (RFC 8445 §6.1.2.5).
        heartbeat_interval_s: Binding request on the selected pair this often.
        dead_after_s: the selected pair is lost after this long without an authenticated answer;
            with 1 s heartbeats, 2.5 s means two lost heartbeats plus slack, and the fallback to
            T happens within 3 s (DESIGN §4).
        reprobe_interval_s: mean period of re-checking every pair not selected (upgrades and
            recovery within 30 s; below the 30 s UDP conntrack/NAT timeouts).
        reprobe_jitter: re-probe period is uniform in interval * [1 - jitter, 1 + jitter].
        consent_timeout_s: RFC 7675 consent expiry.
        hysteresis_ratio, hysteresis_min_s: a pair of the same kind replaces the selected one
            only when its smoothed RTT is lower by max(min_s, ratio * current RTT).
        rtt_alpha: weight of a new RTT sample in the smoothed RTT (RFC 6298 alpha).
        retry_unselected_s: while no pair is selected, re-check the pairs this often instead
            of every ``reprobe_interval_s`` (``None``: no difference). A full agent has the T
            path to fall back on and can wait; the home path's check list against the lite HA
            is the last resort, and an HA that comes back must be found in seconds.
        flap_window_s, flap_holddown_s, flap_holddown_max_s: flap damping. A selected pair
            that dies within ``flap_window_s`` of being selected a second time in a row is
            held down: it is not selected again for ``flap_holddown_s``, doubled for every
            further such death, at most ``flap_holddown_max_s``, while the peer is reachable
            another way (the T path, or another fresh pair); it is checked again when the
            hold-down ends. A pair that dies once, or after being selected longer than the
            window, returns at its next re-probe. ``flap_holddown_s = 0`` (the default) turns
            damping off: a D-udp pair that dies falls back to the T path, which costs nothing
            to fall back to; the home path's check list (no T path behind it) damps.
    """

    ta_s: float = 0.020
    rto_initial_s: float = 0.5
    rto_max_s: float = 4.0
    max_transmissions: int = 4
    max_pairs: int = MAX_PAIRS
    heartbeat_interval_s: float = 1.0
    dead_after_s: float = 2.5
    reprobe_interval_s: float = 12.0
    reprobe_jitter: float = 0.2
    consent_timeout_s: float = CONSENT_TIMEOUT_S
    hysteresis_ratio: float = 0.2
    hysteresis_min_s: float = 0.010
    rtt_alpha: float = 0.125
    retry_unselected_s: float | None = None
    flap_window_s: float = 60.0
    flap_holddown_s: float = 0.0
    flap_holddown_max_s: float = 120.0

    def __post_init__(self) -> None:
        if self.ta_s < MIN_TA_S:
            raise ValueError("ta_s must be at least 20 ms")
        if self.rto_initial_s < MIN_RTO_S or self.rto_max_s < self.rto_initial_s:
            raise ValueError("need 0.5 s <= rto_initial_s <= rto_max_s")
        if self.max_transmissions < 1 or not 1 <= self.max_pairs <= MAX_PAIRS:
            raise ValueError("max_transmissions >= 1 and max_pairs in 1..100")
        if not 0 < self.heartbeat_interval_s < self.dead_after_s:
            raise ValueError("need 0 < heartbeat_interval_s < dead_after_s")
        if self.reprobe_interval_s <= 0 or not 0 <= self.reprobe_jitter < 1:
            raise ValueError("reprobe_interval_s > 0 and 0 <= reprobe_jitter < 1")
        if not 0 < self.consent_timeout_s <= CONSENT_TIMEOUT_S:
            raise ValueError("consent_timeout_s must be in (0, 30] (RFC 7675)")
        if self.hysteresis_ratio < 0 or self.hysteresis_min_s < 0:
            raise ValueError("hysteresis must not be negative")
        if not 0 < self.rtt_alpha <= 1:
            raise ValueError("rtt_alpha must be in (0, 1]")
        if self.retry_unselected_s is not None and self.retry_unselected_s <= 0:
            raise ValueError("retry_unselected_s must be positive")
        if min(self.flap_window_s, self.flap_holddown_s) < 0 or (
            self.flap_holddown_max_s < self.flap_holddown_s
        ):
            raise ValueError("need 0 <= flap_holddown_s <= flap_holddown_max_s, flap_window_s >= 0")
