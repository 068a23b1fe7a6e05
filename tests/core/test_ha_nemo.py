"""A home agent serving mobile routers (RFC 3963; mipnode/core/nemo.py and HomeAgentCore): the
prefixes each kind of registration gets, every refusal with its status, the R flag of the BA,
and the prefixes carried by the binding's events, its replication record and its state file."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest
from coretest_kit import HA, HOA, KEY, SPI, VIA, Stamper, build_bu, events, make_ha, single_ba

from mipnode.core.ha import BindingAdded, BindingRemoved, BindingUpdated, SecurityAssociation
from mipnode.core.ipv4_networks import ipv6_only, mapped, text, unmapped
from mipnode.wire.mh import BaStatus, MobileNetworkPrefix, MobilityOption

T0 = 1000.0
LAN = IPv6Network("2001:db8:aaaa::/48")
LAN_A, LAN_B = IPv6Network("2001:db8:aaaa:1::/64"), IPv6Network("2001:db8:aaaa:2::/64")


def router_ha(prefixes: tuple[IPv6Network, ...] = (LAN,)) -> object:
    return make_ha(security_associations=(SecurityAssociation(SPI, KEY, HOA, prefixes),))


def register(
    ha: object,
    stamp: Stamper,
    *,
    seq: int = 1,
    router: bool = True,
    prefixes: tuple[IPv6Network | MobileNetworkPrefix, ...] = (),
    now: float = T0,
    lifetime: int = 150,
) -> tuple[int, bool]:
    """The BA's (status, R flag) for a BU from the router."""
    extra: tuple[MobilityOption, ...] = tuple(
        p
        if isinstance(p, MobileNetworkPrefix)
        else MobileNetworkPrefix(p.network_address, p.prefixlen)
        for p in prefixes
    )
    data = build_bu(seq, stamp(now), lifetime=lifetime, mobile_router=router, extra=extra)
    ha.receive_datagram(now, data, HOA, HA, VIA)  # type: ignore[attr-defined]
    ba = single_ba(ha, now)  # type: ignore[arg-type]
    return int(ba.status), ba.mobile_router


def test_implicit_mode_registers_every_configured_prefix() -> None:
    ha = router_ha((LAN_A, LAN_B))
    assert register(ha, Stamper()) == (0, True)
    binding = ha.binding_for(HOA)  # type: ignore[attr-defined]
    assert binding.prefixes == (LAN_A, LAN_B)
    (added,) = events(ha)
    assert isinstance(added, BindingAdded) and added.binding.prefixes == (LAN_A, LAN_B)


def test_explicit_mode_registers_exactly_the_prefixes_in_the_bu() -> None:
    ha = router_ha()
    assert register(ha, Stamper(), prefixes=(LAN_B, LAN_A, LAN_B)) == (0, True)
    assert ha.binding_for(HOA).prefixes == (LAN_B, LAN_A)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("prefix", "status"),
    [
        (IPv6Network("2001:db8:bbbb::/64"), BaStatus.NOT_AUTHORIZED_FOR_PREFIX),  # not ours
        (IPv6Network("2001:db8:a000::/36"), BaStatus.NOT_AUTHORIZED_FOR_PREFIX),  # wider
        (MobileNetworkPrefix(IPv6Address("2001:db8:aaaa:1::1"), 64), BaStatus.INVALID_PREFIX),
        (MobileNetworkPrefix(IPv6Address("::"), 0), BaStatus.INVALID_PREFIX),
        (MobileNetworkPrefix(IPv6Address("::"), 129), BaStatus.INVALID_PREFIX),
        (IPv6Network("2001:db8:1::/64"), BaStatus.INVALID_PREFIX),  # the home prefix itself
    ],
)
def test_a_prefix_the_router_may_not_have_is_refused_and_nothing_registers(
    prefix: IPv6Network | MobileNetworkPrefix, status: BaStatus
) -> None:
    wide = (LAN, IPv6Network("2001:db8:1::/48"))  # even a configured prefix may not hold home
    ha = router_ha(wide)
    assert register(ha, Stamper(), prefixes=(LAN_A, prefix)) == (status, True)
    assert ha.binding_for(HOA) is None  # type: ignore[attr-defined]
    assert events(ha) == []


def test_too_many_prefixes_are_refused_for_resources() -> None:
    ha = router_ha()
    many = tuple(IPv6Network(f"2001:db8:aaaa:{i:x}::/64") for i in range(17))
    assert register(ha, Stamper(), prefixes=many)[0] == BaStatus.INSUFFICIENT_RESOURCES


def test_a_mobile_node_that_asks_to_be_a_router_is_refused_with_140() -> None:
    ha = make_ha()  # its SA has no prefixes
    assert register(ha, Stamper()) == (BaStatus.MOBILE_ROUTER_OPERATION_NOT_PERMITTED, False)
    assert ha.binding_for(HOA) is None


def test_without_r_a_router_is_a_mobile_node_and_its_prefixes_go() -> None:
    ha = router_ha()
    stamp = Stamper()
    register(ha, stamp)
    events(ha)
    # Options without R are meaningless (RFC 3963 §4.3 is about the R flag's BU): ignored.
    assert register(ha, stamp, seq=2, router=False, prefixes=(LAN_A,), now=T0 + 1) == (0, False)
    (updated,) = events(ha)
    assert isinstance(updated, BindingUpdated)
    assert updated.binding.prefixes == () and updated.previous.prefixes == (LAN,)


def test_a_deregistration_drops_the_prefixes() -> None:
    ha = router_ha()
    stamp = Stamper()
    register(ha, stamp)
    events(ha)
    assert register(ha, stamp, seq=2, lifetime=0, now=T0 + 1)[0] == 0
    (removed,) = events(ha)
    assert isinstance(removed, BindingRemoved)
    assert ha.bindings(include_deleted=True)[0].prefixes == ()  # type: ignore[attr-defined]


def test_prefixes_survive_the_state_file_and_replication() -> None:
    ha = router_ha()
    register(ha, Stamper(), prefixes=(LAN_A,))
    state = json.loads(json.dumps(ha.export_state()))  # type: ignore[attr-defined]
    restored = router_ha()
    assert restored.restore(T0 + 1, state) == 1  # type: ignore[attr-defined]
    assert restored.binding_for(HOA).prefixes == (LAN_A,)  # type: ignore[attr-defined]
    record = json.loads(json.dumps(ha.replication_record(HOA)))  # type: ignore[attr-defined]
    assert record["binding"]["prefixes"] == [str(LAN_A)]
    other = router_ha()
    assert other.adopt_replica(T0 + 1, record)  # type: ignore[attr-defined]
    assert other.binding_for(HOA).prefixes == (LAN_A,)  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["2001:db8:aaaa:1::1/64", 7, ["2001:db8:aaaa::/48"] * 17])
def test_a_record_with_bad_prefixes_is_refused_whole(bad: object) -> None:
    ha = router_ha()
    register(ha, Stamper())
    record = json.loads(json.dumps(ha.replication_record(HOA)))  # type: ignore[attr-defined]
    record["binding"]["prefixes"] = bad if isinstance(bad, list) else [bad]
    with pytest.raises(ValueError):
        router_ha().adopt_replica(T0 + 1, record)  # type: ignore[attr-defined]


# -- IPv4 networks of a router (core/ipv4_networks.py: held IPv4-mapped) -----------------------

LAN4 = mapped(IPv4Network("10.77.0.0/24"))


def test_ipv4_networks_are_registered_with_r_in_either_mode_and_never_without_it() -> None:
    """RFC 3963's option has no IPv4 form: a registration with R gets the router's IPv4
    networks whether it names its IPv6 prefixes (explicit) or not (implicit)."""
    ha = router_ha((LAN, LAN4))
    assert register(ha, Stamper(), prefixes=(LAN_A,)) == (0, True)
    assert ha.binding_for(HOA).prefixes == (LAN_A, LAN4)  # type: ignore[attr-defined]
    ha2, stamp = router_ha((LAN, LAN4)), Stamper()
    assert register(ha2, stamp) == (0, True)
    assert ha2.binding_for(HOA).prefixes == (LAN, LAN4)  # type: ignore[attr-defined]
    assert register(ha2, stamp, seq=2, router=False) == (0, False)
    assert ha2.binding_for(HOA).prefixes == ()  # type: ignore[attr-defined]


def test_a_router_with_only_ipv4_networks_is_a_router() -> None:
    ha = router_ha((LAN4,))
    assert register(ha, Stamper()) == (0, True)  # not 140
    assert ha.binding_for(HOA).prefixes == (LAN4,)  # type: ignore[attr-defined]


def test_ipv4_networks_round_trip_and_read_as_ipv4() -> None:
    v4 = IPv4Network("10.77.0.0/24")
    assert unmapped(LAN4) == v4 and text(LAN4) == "10.77.0.0/24"
    assert unmapped(LAN) is None and text(LAN) == str(LAN)
    assert ipv6_only((LAN, LAN4)) == (LAN,)
    assert mapped(IPv4Network("0.0.0.0/0")).prefixlen == 96


def test_an_ipv4_mapped_prefix_from_the_wire_is_invalid() -> None:
    """IPv4-mapped prefixes are mipnode's own way of holding IPv4 networks: a BU naming one
    (here inside the router's authorised IPv4 network) is refused with 141."""
    ha = router_ha((LAN, LAN4))
    inside = MobileNetworkPrefix(IPv6Address("::ffff:10.77.0.5"), 128)
    assert register(ha, Stamper(), prefixes=(inside,)) == (141, True)  # R: it serves routers
    assert ha.binding_for(HOA) is None  # type: ignore[attr-defined]
