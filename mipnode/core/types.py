"""Types shared by the protocol cores and their drivers."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Literal

ViaKind = Literal["T-native", "T-udp"]

VIA_KINDS: frozenset[str] = frozenset({"T-native", "T-udp"})


@dataclass(frozen=True, slots=True)
class Via:
    """The transport a Mobility Header arrived on, or must leave on.

    ``kind`` is a path name of DESIGN §2 (``"T-native"`` or ``"T-udp"``); ``remote`` is the
    outer peer: ``(address,)`` for IPv6-in-IPv6, ``(address, port)`` for UDP. ``local_port`` is
    the home agent's UDP port a T-udp via arrived on (it listens on several; answers must leave
    from the same one, or a NAT's pinhole would not match). The cores never interpret
    ``remote``; they store it and hand it back to the driver.
    """

    kind: str
    remote: tuple[str, ...] | tuple[str, int]
    local_port: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in VIA_KINDS:
            raise ValueError(f"unknown via kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class OutgoingMh:
    """An encoded Mobility Header the driver must send.

    ``src``/``dst`` are the addresses of the (inner) IPv6 packet that carries ``data``; the MH
    checksum was computed over them. ``via`` is ``None`` when the driver picks the path.

    ``care_of`` asks for route-optimised delivery (docs/internals.md): on an MN output
    (``src`` = HoA) send natively from ``care_of`` with a Home Address option carrying ``src``;
    on a CN output (``dst`` = HoA) send to ``care_of`` with a type 2 routing header carrying
    ``dst``. The checksum stays over ``src``/``dst`` (RFC 6275 §6.1.1).
    """

    data: bytes
    src: IPv6Address
    dst: IPv6Address
    via: Via | None = None
    care_of: IPv6Address | None = None
    # A home agent's answer to a mobile node on the home link: to this link-layer address.
    link_address: bytes | None = None
