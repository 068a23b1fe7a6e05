"""Shared fixtures-as-functions for the core tests: addresses, keys, BU/BA builders."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from mipnode.core.ha import HaCoreConfig, HomeAgentCore, SecurityAssociation
from mipnode.core.mn import MnCoreConfig, MobileNodeCore
from mipnode.core.types import OutgoingMh, Via
from mipnode.wire.auth4285 import encode_mh_authenticated, ntp_from_unix, verify_mh_authenticated
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingUpdate,
    MesgId,
    MobilityOption,
    decode_mh_untrusted,
)

HA = IPv6Address("2001:db8:1::1")
PREFIX = IPv6Network("2001:db8:1::/64")
HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:aa::5")
COA2 = IPv6Address("2001:db8:bb::7")
SPI = 0x1000
KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
VIA = Via("T-native", (str(COA),))
VIA_UDP = Via("T-udp", ("192.0.2.7", 40000))


def ha_config(**overrides: object) -> HaCoreConfig:
    fields: dict[str, object] = {
        "address": HA,
        "home_prefix": PREFIX,
        "security_associations": (SecurityAssociation(SPI, KEY, HOA),),
    }
    fields.update(overrides)
    return HaCoreConfig(**fields)  # type: ignore[arg-type]


def make_ha(**overrides: object) -> HomeAgentCore:
    return HomeAgentCore(ha_config(**overrides))


def make_mn(initial_sequence: int = 100, **overrides: object) -> MobileNodeCore:
    fields: dict[str, object] = {"home_address": HOA, "home_agent": HA, "spi": SPI, "key": KEY}
    fields.update(overrides)
    return MobileNodeCore(MnCoreConfig(**fields), initial_sequence)  # type: ignore[arg-type]


class Stamper:
    """Strictly increasing RFC 4285 timestamps close to ``now``."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, now: float) -> int:
        self.last = max(ntp_from_unix(now), self.last + 1)
        return self.last


def build_bu(
    sequence: int,
    timestamp: int | None,
    *,
    lifetime: int = 150,
    hoa: IPv6Address = HOA,
    coa: IPv6Address | None = COA,
    key: bytes = KEY,
    spi: int = SPI,
    home: bool = True,
    mobile_router: bool = False,
    extra: tuple[MobilityOption, ...] = (),
    mac_coa: IPv6Address | None = None,
    link_local: bool = False,
) -> bytes:
    """An authenticated home BU as an MN would send it inside the tunnel (HoA -> HA);
    ``mobile_router``: the R flag (RFC 3963), ``extra``: options after the Alt-CoA,
    ``link_local``: the L flag."""
    options: list[MobilityOption] = []
    if coa is not None:
        options.append(AlternateCareOfAddress(coa))
    options.extend(extra)
    if timestamp is not None:
        options.append(MesgId(timestamp))
    bu = BindingUpdate(
        sequence=sequence,
        lifetime=lifetime,
        ack=True,
        home=home,
        options=tuple(options),
        mobile_router=mobile_router,
        link_local=link_local,
    )
    mac_coa = coa if coa is not None else (mac_coa or hoa)  # a native BU: its source CoA
    return encode_mh_authenticated(bu, hoa, HA, spi=spi, key=key, coa=mac_coa, hoa=hoa)


def build_ba(
    status: int,
    sequence: int,
    timestamp: int | None,
    *,
    lifetime: int = 150,
    coa: IPv6Address = COA,
    key: bytes = KEY,
    extra: tuple[MobilityOption, ...] = (),
    mobile_router: bool = False,
) -> bytes:
    """An authenticated BA as the HA would send it (HA -> HoA); ``mobile_router``: R."""
    options: tuple[MobilityOption, ...] = extra
    if timestamp is not None:
        options = (*options, MesgId(timestamp))
    ba = BindingAck(
        status=status,
        sequence=sequence,
        lifetime=lifetime,
        options=options,
        mobile_router=mobile_router,
    )
    return encode_mh_authenticated(ba, HA, HOA, spi=SPI, key=key, coa=coa, hoa=HOA)


def decode(out: OutgoingMh) -> object:
    return decode_mh_untrusted(out.data, out.src, out.dst)


def single_ba(ha: HomeAgentCore, now: float) -> BindingAck:
    """The one BA the HA queued; checks its addressing and authentication on the way."""
    out = ha.datagrams_to_send(now)
    assert len(out) == 1, out
    (reply,) = out
    assert (reply.src, reply.dst) == (HA, HOA)
    ba = decode(reply)
    assert isinstance(ba, BindingAck)
    return ba


def single_bu(mn: MobileNodeCore, now: float) -> tuple[BindingUpdate, int]:
    """The one BU the MN queued, and its Mesg-ID timestamp."""
    out = mn.datagrams_to_send(now)
    assert len(out) == 1, out
    (request,) = out
    assert (request.src, request.dst, request.via) == (HOA, HA, None)
    bu = decode(request)
    assert isinstance(bu, BindingUpdate)
    alt = next(o for o in bu.options if isinstance(o, AlternateCareOfAddress))
    assert verify_mh_authenticated(request.data, key=KEY, coa=alt.address, hoa=HOA)
    return bu, mesg_id(bu)


def mesg_id(msg: BindingUpdate | BindingAck) -> int:
    return next(o.timestamp for o in msg.options if isinstance(o, MesgId))


def events(core: object) -> list[object]:
    out = []
    while (event := core.next_event()) is not None:  # type: ignore[attr-defined]
        out.append(event)
    return out
