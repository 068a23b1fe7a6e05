"""Which path the node cores end on, per access network (issue 4's simulated-network list).

Each test builds one topology (tests/sim/simnet.py: the real MobileNode and HomeAgentNode, a
CorrespondentNode or a second MobileNode, seeded, virtual time), lets the MN register and
offer, and reads both D-udp engines (``DirectPaths.selected``), their forwarding events and
the wire. D-udp versus T is the ICE agents' call; D-native (route optimisation) runs beside it
and is preferred where it works (DESIGN §2): on an open IPv6 network with a CN the MN's data
goes D-native and the D-udp pair stays selected underneath ("open network -> D-native",
"D-native impossible -> D-udp").
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from simnet import (
    HOA_MN,
    CorrespondentHost,
    PeerRole,
    Session,
    SiteKind,
    World,
    build_world,
    direct_possible,
    first_change,
    max_rate,
    native_possible,
    selections,
)

from ice.candidate import CandidateType

SEED = 20240604
MAX_CHECKS_PER_SECOND = 20  # reference/testing.md S6: <= 20 checks/s per agent


def run(
    mn: SiteKind,
    peer: SiteKind,
    role: PeerRole,
    families: str,
    seconds: float,
    *,
    seed: int = SEED,
) -> World:
    world = build_world(seed, mn=mn, peer=peer, peer_role=role, families=families)
    world.net.run_until(seconds)
    session = world.mn_session()
    on_direct = session is not None and session.path() is not None
    assert on_direct == direct_possible(mn, peer, role, families)  # the table agrees
    return world


def both(world: World) -> tuple[Session, Session]:
    mn, peer = world.mn_session(), world.peer_session()
    assert mn is not None and peer is not None
    return mn, peer


def assert_healthy(world: World) -> None:
    """What holds in every scenario: no data on an unvalidated pair, no sending from an
    address a node does not hold, nothing sent to a relayed candidate, paced checks."""
    assert world.net.violations == []
    assert world.ha.stats["unexpected"] == 0
    for host in (world.mn, world.peer):  # every check was attributed to its peer
        assert host.stats["check_for_unknown_peer"] == 0
    for session in world.sessions():
        assert max_rate(session.check_times) <= MAX_CHECKS_PER_SECOND


def assert_direct(world: World, *, within: float) -> tuple[Session, Session]:
    mn, peer = both(world)
    assert mn.path() is not None and peer.path() is not None
    assert world.agree()
    for session in (mn, peer):
        changes = selections(session)
        assert len(changes) == 1, f"flapping: {session.path_log}"  # one selection, kept
        started = session.path_log[0][0]
        assert changes[0][0] - started <= within
        # data went direct both ways: D-udp, or D-native where it works (DESIGN §2 prefers it)
        assert session.data_direct + session.data_native > 0
        assert session.data_received + session.data_received_native > 0
    # the MN's data to a peer with a D-udp pair and no D-native is on that very pair
    if mn.data_native == 0:
        assert mn.data_direct > 0 and peer.data_received > 0
    assert peer.data_direct > 0 and mn.data_received > 0  # a flow the peer opens: never RH2
    assert_healthy(world)
    return mn, peer


def assert_on_t(world: World, seconds: float) -> None:
    for session in world.sessions():
        assert session.path() is None
        assert selections(session) == [], f"a pair was selected: {session.path_log}"
        assert session.data_direct == 0
        if session.check_times:  # re-probes of dead pairs stay a trickle
            assert len(session.check_times) / seconds <= 1.0
    assert_healthy(world)


# -- open networks --------------------------------------------------------------------------------


@pytest.mark.parametrize("families", ["6", "4", "46"])
def test_open_network_selects_d_udp_between_host_candidates(families: str) -> None:
    """Open -> D-native where there is IPv6 (the MN's data goes D-native, proven by a probe
    through the RH2); the agents' answer underneath, and the answer without IPv6, is D-udp on
    the host candidates, at once and for good."""
    world = run("open", "open", "cn", families, 120)
    mn, peer = assert_direct(world, within=0.5)
    for session in (mn, peer):
        pair = session.selected()
        assert pair is not None
        assert pair.local.kind is CandidateType.HOST and pair.remote.kind is CandidateType.HOST
        assert pair.nominated
    cn = IPv6Address(world.peer.identity)
    routes = world.mn.table[cn.packed]
    kinds = [r.kind for r in routes]
    if native_possible("open", "open", "cn", families):
        assert kinds == ["D-native", "D-udp"], routes
        assert mn.data_native > 0 and peer.data_received_native > 0
        assert world.mn.node is not None
        assert world.mn.node.correspondent_path(cn) == "D-native"
    else:
        assert kinds == ["D-udp"], routes
        assert mn.data_native == 0 and mn.data_direct > 0


# -- stateful firewalls ---------------------------------------------------------------------------


def test_mn_behind_outbound_only_firewall_with_public_cn_selects_d_udp() -> None:
    world = run("fw", "open", "cn", "6", 300)
    mn, _ = assert_direct(world, within=1.0)
    # heartbeats keep the firewall's entry for the pair alive past both conntrack timeouts
    box = world.mn_site.v6
    assert box is not None
    path = mn.path()
    assert path is not None
    [conn] = [c for c in box.connections(world.net.now) if (c.inside, c.remote) == path]
    assert conn.assured and conn.created < 1.0
    assert [r for _, _, r in mn.path_log if r == "lost"] == []
    # D-native was tried and given up: the firewall drops HAO probes as conntrack-invalid
    assert box.drops["invalid"] >= 1 and mn.data_native == 0


@pytest.mark.parametrize("mn_site", ["open", "fw"])
def test_cn_behind_outbound_only_firewall_stays_on_t(mn_site: SiteKind) -> None:
    """The offer (HoA -> CN through the HA) cannot reach it: no answer, so no checks at all,
    no flapping, and offers retransmitted on a backoff capped at 8 s."""
    seconds = 300.0
    world = run(mn_site, "fw", "cn", "6", seconds)
    assert world.peer_session() is None  # no offer ever reached it
    assert isinstance(world.peer, CorrespondentHost) and world.peer.node.direct.peers == []
    mn = world.mn_session()
    assert mn is not None
    assert mn.check_times == [] and mn.agent_statistics().get("checks_sent", 0) == 0
    assert mn.offers_sent <= 4 + seconds / 8
    assert world.peer_site.v6 is not None
    assert world.peer_site.v6.drops["no_state"] >= mn.offers_sent - 1
    assert mn.data_t > 0
    assert_on_t(world, seconds)


@pytest.mark.parametrize("families", ["6", "4"])
def test_two_mobile_nodes_behind_firewalls_select_d_udp_by_simultaneous_checks(
    families: str,
) -> None:
    """Signalling through the HA reaches the second MN through its own tunnel; it answers like
    a CN and checks at once. Its first check dies at the first MN's firewall; the first MN's
    checks open that pinhole, and the second MN's retransmission gets through."""
    world = run("fw", "fw", "mn", families, 60)
    mn, peer = assert_direct(world, within=1.5)
    box = world.mn_site.v6 if families == "6" else world.mn_site.v4
    assert box is not None and box.drops["no_state"] >= 1
    assert mn.offered_first and not peer.offered_first  # only the MN offered
    assert peer.controlling is False and mn.controlling is True  # the roles their checks carry


@pytest.mark.parametrize("families", ["6", "46"])
def test_two_mobile_nodes_offering_at_once_settle_roles_and_select_d_udp(families: str) -> None:
    """Crossing offers: each MN takes the other's offer as its description, both agents start
    controlling, and the ICE role conflict (487, tie-breakers) leaves exactly one in control."""
    world = build_world(SEED, mn="fw", peer="fw", peer_role="mn", families=families, crossing=True)
    world.net.run_until(60)
    mn, peer = both(world)
    assert mn.offered_first and peer.offered_first  # the offers crossed on the wire
    assert sorted([mn.controlling, peer.controlling]) == [False, True]  # type: ignore[type-var]
    assert any(not c for _, c in mn.roles + peer.roles)  # one of them yielded
    assert mn.path() is not None and peer.path() is not None and world.agree()
    for session in (mn, peer):
        assert len(selections(session)) <= 2  # at most one re-selection around the role switch
    assert_healthy(world)


# -- UDP blocked ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mn_site", "peer_site", "role"),
    [("udp-blocked", "open", "cn"), ("open", "udp-blocked", "mn"), ("udp-blocked", "fw", "mn")],
)
def test_udp_blocked_except_to_the_ha_stays_on_t(
    mn_site: SiteKind, peer_site: SiteKind, role: PeerRole
) -> None:
    """The T path to the HA works (registered, offer and answer relayed); every direct pair
    fails and is only re-probed, never selected."""
    seconds = 300.0
    world = run(mn_site, peer_site, role, "46", seconds)
    mn, peer = both(world)
    assert world.registered() and world.ha.binding(HOA_MN) is not None
    assert mn.check_times and peer.check_times  # the checks were tried
    assert_on_t(world, seconds)


# -- NAT44 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mn_site", "peer_site", "role"),
    [
        ("nat-eim", "open", "cn"),
        ("nat-eim", "fw", "mn"),
        ("nat-easy", "fw", "mn"),
        ("nat-easy", "nat-easy", "mn"),
    ],
)
def test_endpoint_independent_nat44_selects_d_udp_via_server_reflexive(
    mn_site: SiteKind, peer_site: SiteKind, role: PeerRole
) -> None:
    """The HA's STUN answer gives the MN its mapping; the peer's selected pair goes to that
    server-reflexive candidate, and the MN's leaves from its private base."""
    world = run(mn_site, peer_site, role, "4", 60)
    mn, peer = assert_direct(world, within=2.0)
    base = world.mn.hosts[0]
    srflx = world.mn.srflx()[base]
    mn_pair, peer_pair = mn.selected(), peer.selected()
    assert mn_pair is not None and peer_pair is not None
    assert mn_pair.local.base == base and mn_pair.mapped == srflx  # NAT seen in the answer
    assert peer_pair.remote.kind is CandidateType.SRFLX and peer_pair.remote.address == srflx


@pytest.mark.parametrize(("peer_site", "role"), [("open", "cn"), ("nat-eim", "mn")])
def test_address_and_port_dependent_nat_selects_d_udp_via_peer_reflexive(
    peer_site: SiteKind, role: PeerRole
) -> None:
    """``masquerade fully-random``: the mapping towards the peer is not the one the HA saw, so
    the peer learns it from the MN's check (peer-reflexive) when the MN's checks reach it."""
    world = run("nat-hard", peer_site, role, "4", 60)
    _, peer = assert_direct(world, within=2.0)
    srflx = world.mn.srflx()[world.mn.hosts[0]]
    peer_pair = peer.selected()
    assert peer_pair is not None
    assert peer_pair.remote.kind is CandidateType.PRFLX and peer_pair.remote.address != srflx
    assert peer_pair.remote.address[0] == srflx[0]


@pytest.mark.parametrize("peer_site", ["fw", "nat-easy", "nat-hard"])
def test_address_and_port_dependent_nat_stays_on_t_udp_when_the_peer_is_unreachable(
    peer_site: SiteKind,
) -> None:
    """Neither side's checks can reach the other: T-udp (through the NAT to the HA) stays."""
    seconds = 300.0
    world = run("nat-hard", peer_site, "mn", "4", seconds)
    mn, peer = both(world)
    assert mn.check_times and peer.check_times
    via = world.ha.via(HOA_MN)
    assert via is not None and via.kind == "T-udp"
    assert via.remote[0] == world.mn.srflx()[world.mn.hosts[0]][0]  # T-udp through the NAT
    assert_on_t(world, seconds)


def test_first_selection_times_are_reported_for_the_grid() -> None:
    """One line per cell, to read with ``-s``: when each side first left T."""
    rows = []
    cells: list[tuple[SiteKind, SiteKind, PeerRole, str]] = [
        ("open", "open", "cn", "6"),
        ("fw", "open", "cn", "6"),
        ("fw", "fw", "mn", "6"),
        ("nat-eim", "open", "cn", "4"),
        ("nat-hard", "open", "cn", "4"),
    ]
    for mn_site, peer_site, role, fam in cells:
        world = run(mn_site, peer_site, role, fam, 10)
        mn, peer = both(world)
        times = [first_change(s, 0.0, direct=True) for s in (mn, peer)]
        assert all(t is not None and t < 2.0 for t in times)
        shown = " ".join(f"{t:.3f}" for t in times if t is not None)
        rows.append(f"{mn_site}/{peer_site}({role}) v{fam}: {shown}")
    print("\n".join(rows))
