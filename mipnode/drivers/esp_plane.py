"""The ESP security associations of the tunnels between a mobile node and its home agent.

The node cores decide the keys (core/esp_keys.py: an X25519 exchange inside every registration)
and say which packets are sealed; this module holds the SAs themselves (tunnels/esp.py) for the
data plane: one outbound SA per direction, the inbound SAs by SPI. A replaced inbound SA keeps
opening packets for ``GRACE_S`` (packets in flight and reordered across a rekey; a home agent
that switched first) and is then forgotten; at most one replaced SA is kept per peer.

Who switches when (the home agent's side of a rekey): the home agent derives the new keys when
it sends the BA, but the mobile node holds them only once that BA arrives. So the home agent
opens with the new inbound SA at once and goes on sealing with the old outbound SA until the
first packet opened under the new inbound SA proves the mobile node has the keys
(``switch_on_proof``, as WireGuard confirms a handshake with the first data packet). A lost BA
then costs nothing: the mobile node retransmits its BU and still opens what the HA seals.

What goes on the wire (DESIGN §3): on T-udp the UDP payload is the ESP packet (RFC 3948
framing, no marker: our SPIs have the top bit set, so the first octet tells ESP from an IPv6
packet or STUN); on T-native the ESP packet is the payload of an IPv6 packet with next header
50, carrying the inner IPv6 packet in tunnel mode (ESP next header 41).

Key log (opt-in, for oracles like Wireshark): with ``MIPNODE_ESP_KEYLOG`` set to a file name,
every new SA is appended to that file as one record of Wireshark's ``esp_sa`` table, for IPv6
and IPv4 outer headers (any address): ``tshark -o esp.enable_encryption_decode:TRUE -o
'uat:esp_sa:<record>'`` decrypts with it. The file is created mode 0600. Never on by default:
whoever reads it can decrypt the traffic.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from mipnode.core.esp_keys import EspKeys
from mipnode.drivers.io import Counters
from mipnode.wire.errors import BadPacket
from mipnode.wire.sa_transfer import InboundState, SaState
from tunnels.esp import (
    MIN_PACKET_LENGTH,
    SEQ_SOFT_LIMIT,
    EspInbound,
    EspOutbound,
    esp_sa_uat_line,
)

log = logging.getLogger("mipnode.esp")
GRACE_S = 10.0
# Sequence numbers a node that hands its SAs over keeps for itself while it serves on (make
# before break, at most a few seconds): 2^24 is minutes of a node's whole forwarding rate.
HANDOVER_SEQ_MARGIN = 1 << 24
NH_IPV6 = 41
NH_IPV4 = 4  # an IPv4 home address's packets (RFC 5555) in tunnel mode
IPPROTO_ESP = 50
KEYLOG_ENV = "MIPNODE_ESP_KEYLOG"


@dataclass(slots=True)
class _In:
    sa: EspInbound
    owner: bytes  # a home address; on a mobile node a correspondent, a host flow or b"" (HA)
    retire_at: float | None = None
    promote: EspOutbound | None = None  # the outbound SA the first packet opened here proves
    keymat: bytes = field(default=b"", repr=False)  # tells the same keys handed in again


class EspSas:
    """Outbound SAs by owner, inbound SAs by SPI (module docstring). The mobile node has one
    owner (``b""``: its home agent); the home agent one per home address."""

    def __init__(self, keylog: str | None = None) -> None:
        """``keylog``: the key log file; ``None``: from the environment; "": none."""
        self.outbound: dict[bytes, EspOutbound] = {}
        self.inbound: dict[int, _In] = {}
        # The SPIs of each owner's inbound SAs (at most two: the current and one replaced), so
        # a registration never walks every SA of the home agent.
        self._spis: dict[bytes, list[int]] = {}
        self.rekey_due: set[bytes] = set()  # owners whose SA passed SEQ_SOFT_LIMIT
        self.keylog = (keylog if keylog is not None else os.environ.get(KEYLOG_ENV)) or None

    def keyed(
        self, owner: bytes, keys: EspKeys, now: float, *, switch_on_proof: bool = False
    ) -> None:
        """``owner``'s new SAs: open with both for a while; seal with the new one at once, or
        (``switch_on_proof``, with an old SA to go on with) from the first packet the new
        inbound SA opens (module docstring). The same keys again change nothing: a new SA
        on old keys would start its sequence numbers, and so its AEAD nonces, over."""
        known = self.inbound.get(keys.spi_in)
        if known is not None and known.owner == owner and known.keymat == keys.keymat_in:
            return
        outbound = EspOutbound(keys.suite, keys.spi_out, keys.keymat_out)
        fresh = _In(EspInbound(keys.suite, keys.spi_in, keys.keymat_in), owner)
        fresh.keymat = keys.keymat_in
        if switch_on_proof and owner in self.outbound:
            fresh.promote = outbound
        else:
            self.outbound[owner] = outbound
            self.rekey_due.discard(owner)
        spis = self._spis.setdefault(owner, [])
        for spi in list(spis):
            entry = self.inbound[spi]
            entry.promote = None  # a newer exchange replaces keys never confirmed
            if entry.retire_at is None:
                entry.retire_at = now + GRACE_S
            else:
                del self.inbound[spi]  # only the latest replaced SA is kept
                spis.remove(spi)
        old = self.inbound.get(keys.spi_in)
        if old is not None and old.owner != owner:  # an SPI reused for another owner
            self._spis[old.owner].remove(keys.spi_in)
        self.inbound[keys.spi_in] = fresh
        if keys.spi_in not in spis:
            spis.append(keys.spi_in)
        if self.keylog is not None:
            self._log_keys(keys)

    def forget(self, owner: bytes) -> None:
        """``owner`` has no binding any more: its SAs go."""
        self.outbound.pop(owner, None)
        self.rekey_due.discard(owner)
        for spi in self._spis.pop(owner, ()):
            del self.inbound[spi]

    def seal(self, owner: bytes, inner: bytes, drops: Counters) -> bytes | None:
        """``inner`` (an IPv6 packet, or an IPv4 one of an IPv4 home address) as ESP under
        ``owner``'s outbound SA, or ``None`` (no SA
        yet, or its sequence numbers are spent: counted). An SA that reaches the soft limit
        puts its owner in :attr:`rekey_due` (exactly once: the sequence number passes it once);
        the driver asks its core for a new registration after the batch."""
        sa = self.outbound.get(owner)
        if sa is None:
            drops("esp_not_keyed")
            return None
        sealed = sa.seal(inner, NH_IPV4 if inner[0] >> 4 == 4 else NH_IPV6)
        if sealed is None:
            drops("esp_sequence_exhausted")
        elif sa.seq == SEQ_SOFT_LIMIT:
            self.rekey_due.add(owner)
        return sealed

    def inbound_sa(self, data: bytes, drops: Counters) -> _In | None:
        """The SA an ESP packet names, or ``None`` (counted: truncated or unknown SPI)."""
        if len(data) < MIN_PACKET_LENGTH:
            drops("esp_truncated")
            return None
        entry = self.inbound.get(int.from_bytes(data[:4], "big"))
        if entry is None:
            drops("esp_unknown_spi")
        return entry

    def open(self, data: bytes, now: float, drops: Counters) -> tuple[bytes, bytes] | None:
        """The inner IP packet of an ESP packet and its SA's owner, or ``None`` (counted). IPv4
        inside comes only from a mobile node's IPv4 home address: its receivers check that."""
        entry = self.inbound_sa(data, drops)
        return None if entry is None else self.open_with(entry, data, now, drops)

    def open_with(
        self, entry: _In, data: bytes, now: float, drops: Counters
    ) -> tuple[bytes, bytes] | None:
        """:meth:`open` with the SA already found by :meth:`inbound_sa`."""
        if entry.retire_at is not None and now > entry.retire_at:
            del self.inbound[entry.sa.spi]
            self._spis[entry.owner].remove(entry.sa.spi)
            drops("esp_sa_retired")
            return None
        try:
            nh, inner = entry.sa.open_untrusted(data)
        except BadPacket as exc:
            drops(exc.reason)
            return None
        if (nh != NH_IPV6 or len(inner) < 40 or inner[0] >> 4 != 6) and (
            nh != NH_IPV4 or len(inner) < 20 or inner[0] >> 4 != 4
        ):
            drops("esp_not_ipv6")  # nor IPv4: Next Header and version must agree
            return None
        if entry.promote is not None:  # the peer has the new keys: seal with them from now on
            self.outbound[entry.owner] = entry.promote
            self.rekey_due.discard(entry.owner)
            entry.promote = None
        return inner, entry.owner

    # -- moving SAs to another node of a home-agent cluster (wire/sa_transfer.py) --------------
    def export(self, owner: bytes, now: float, *, hand_over: bool) -> SaState | None:
        """``owner``'s SAs as another node takes them, or ``None`` (none, or a rekey waiting for
        the peer's proof: the receiver could not tell which outbound SA the peer opens).
        ``hand_over``: the outbound SA keeps HANDOVER_SEQ_MARGIN numbers for this node and
        gives the rest to the receiver (tunnels/esp.py ``EspOutbound.hand_over``); without it
        (the final windows) the outbound numbers are not the receiver's to use."""
        sa = self.outbound.get(owner)
        entries = [self.inbound[spi] for spi in self._spis.get(owner, ())]
        if sa is None or not entries or any(e.promote is not None for e in entries):
            return None
        inbound = []
        for e in entries:
            window, top, received = e.sa.window
            grace_ms = 0 if e.retire_at is None else int((e.retire_at - now) * 1000)
            if e.retire_at is not None and grace_ms <= 0:
                continue
            inbound.append(InboundState(e.sa.spi, e.keymat, top, received, window, grace_ms))
        if not inbound:
            return None
        first = sa.hand_over(HANDOVER_SEQ_MARGIN) if hand_over else sa.limit + 1
        return SaState(owner, sa.suite, sa.spi, sa.keymat, first, tuple(inbound))

    def restore(self, state: SaState, now: float) -> bool:
        """Serve with SAs another node handed over: seal from its first sequence number on,
        open with its windows. Refused (``False``) when this node keys the owner itself."""
        owner = state.home_address
        if owner in self.outbound or self._spis.get(owner):
            return False
        spis = self._spis.setdefault(owner, [])
        for i in state.inbound:
            old = self.inbound.get(i.spi)
            if old is not None:  # an SPI another owner had: ours now (keyed() does the same)
                self._spis[old.owner].remove(i.spi)
            entry = _In(EspInbound(state.suite, i.spi, i.keymat), owner)
            entry.keymat = i.keymat
            entry.sa.merge_window(i.top, i.received, i.window)
            entry.retire_at = None if i.grace_ms == 0 else now + i.grace_ms / 1000
            self.inbound[i.spi] = entry
            spis.append(i.spi)
        out = EspOutbound(state.suite, state.spi_out, state.keymat_out, next_seq=state.next_seq)
        self.outbound[owner] = out
        if out.needs_rekey:
            self.rekey_due.add(owner)
        return True

    def merge(self, state: SaState) -> int:
        """The windows of a node that served ``state``'s SAs until now: what it opened counts
        as received here too. Only SAs this node holds with the same keys; returns how many."""
        merged = 0
        for i in state.inbound:
            entry = self.inbound.get(i.spi)
            if entry is not None and entry.owner == state.home_address and entry.keymat == i.keymat:
                entry.sa.merge_window(i.top, i.received, i.window)
                merged += 1
        return merged

    def _log_keys(self, keys: EspKeys) -> None:
        assert self.keylog is not None
        lines = [
            esp_sa_uat_line("*", "*", spi, keys.suite, keymat, ipv4=ipv4)
            for spi, keymat in ((keys.spi_out, keys.keymat_out), (keys.spi_in, keys.keymat_in))
            for ipv4 in (False, True)
        ]
        try:
            fd = os.open(self.keylog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as exc:
            log.error("cannot write the ESP key log %s: %s", self.keylog, exc)
