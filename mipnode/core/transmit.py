"""What a node core asks its driver to send or deliver (pure value types).

A core never touches a socket; it names the way out and hands over finished bytes:

* :class:`SendHome`: an inner IPv6 packet through the home agent, on the home pair named by
  ``local``/``remote`` (``(care-of, 0)``/``(HA, 0)`` for T-native: IPv6-in-IPv6; an address and
  port for T-udp: the packet as the UDP payload);
* :class:`SendUdp`: a UDP payload (STUN, or an IPv6 packet on D-udp) from our socket ``local``;
* :class:`SendNative`: a complete IPv6 packet sent as it is from the access interface (its own
  destination; a Home Address option or not is already in it);
* :class:`Deliver`: a packet the core looked at that belongs to the host (its TUN);
* :class:`EspKeyed`: new ESP keys for the home path, in order with the packets: what follows
  it with ``protect`` set is sealed with them (DESIGN §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mipnode.core.esp_keys import EspKeys

TransportAddress = tuple[str, int]
NATIVE_PORT = 0  # the "port" of a T-native endpoint: IPv6-in-IPv6 has none


@dataclass(frozen=True, slots=True)
class SendHome:
    """``packet`` (from the home address, or a check from the care-of address) through the home
    agent on the pair ``local`` -> ``remote``; ``None`` there means the selected home pair."""

    packet: bytes
    local: TransportAddress | None = None
    remote: TransportAddress | None = None
    protect: bool = False  # seal with the home path's ESP SA (set by the node core)


@dataclass(frozen=True, slots=True)
class SendUdp:
    local: TransportAddress
    remote: TransportAddress
    payload: bytes


@dataclass(frozen=True, slots=True)
class SendNative:
    packet: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    packet: bytes


@dataclass(frozen=True, slots=True)
class EspKeyed:
    """A registration (or, ``peer`` set, a direct path's offer and answer) keyed new ESP SAs:
    seal with ``keys.spi_out`` from here on; accept the new inbound SA and keep the previous
    one a little while for packets in flight. ``peer``: the correspondent (16 octets) whose
    D-udp pair they protect, or a mobile router's host flow (32 octets, host ‖ correspondent,
    core/mn_hosts.py); ``b""``: the home agent's."""

    keys: EspKeys = field(repr=False)
    peer: bytes = b""


Transmit = SendHome | SendUdp | SendNative | Deliver | EspKeyed
