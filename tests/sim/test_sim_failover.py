"""Path death, repair and movement on the simulated network (virtual time, seeded).

"Selected path killed -> T within 3 s, back within 30 s after repair" (DESIGN §4, testing.md
F8): a core rule drops everything between the two ends of the selected pair; T (through the
HA) is untouched. "Movement with make-before-break": the real MobileNode checks the home agent
from its new CoA and registers there first, keeps the old access network's sockets until then
(``AccessRetired``), and restarts ICE with its peer; the HA's binding always names an address
the MN still holds.
"""

from __future__ import annotations

import pytest
from simnet import (
    HOA_MN,
    PeerRole,
    SiteKind,
    World,
    build_world,
    first_change,
    kill_selected_path,
    max_rate,
    move_mn,
)

SEED = 7
KILL_AT = 20.0
FALLBACK_S = 3.0
RECOVERY_S = 30.0

TOPOLOGIES: list[tuple[SiteKind, SiteKind, PeerRole, str]] = [
    ("open", "open", "cn", "6"),
    ("fw", "open", "cn", "6"),
    ("fw", "fw", "mn", "6"),
    ("nat-eim", "open", "cn", "4"),
    ("nat-hard", "open", "cn", "4"),
    ("nat-easy", "nat-easy", "mn", "4"),
]


def direct_world(topology: tuple[SiteKind, SiteKind, PeerRole, str], seed: int = SEED) -> World:
    mn, peer, role, families = topology
    world = build_world(seed, mn=mn, peer=peer, peer_role=role, families=families)
    world.net.run_until(KILL_AT)
    assert world.agree() and all(s.path() is not None for s in world.sessions())
    return world


def outage(world: World, seconds: float) -> tuple[list[float], list[float]]:
    """Kill the selected path at KILL_AT for ``seconds``; (fallback times, recovery times)."""
    rule = kill_selected_path(world)
    world.net.run_until(KILL_AT + seconds)
    world.net.rules.remove(rule)
    repaired = world.net.now
    world.net.run_until(repaired + RECOVERY_S + 5)
    fallbacks, recoveries = [], []
    for session in world.sessions():
        lost = first_change(session, KILL_AT, direct=False)
        back = first_change(session, repaired, direct=True)
        assert lost is not None and back is not None, session.path_log
        fallbacks.append(lost - KILL_AT)
        recoveries.append(back - repaired)
    assert world.agree()
    assert world.net.violations == []
    for session in world.sessions():
        assert max_rate(session.check_times) <= 20
    return fallbacks, recoveries


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda t: f"{t[0]}-{t[1]}-{t[2]}-v{t[3]}")
def test_killed_path_falls_back_to_t_within_3_s_and_returns_within_30_s(
    topology: tuple[SiteKind, SiteKind, PeerRole, str],
) -> None:
    """A 15 s outage: both sides on T within 3 s, both back on a direct pair within 30 s of the
    repair (the dead pair is re-probed; consent has not expired)."""
    world = direct_world(topology)
    fallbacks, recoveries = outage(world, 15)
    assert max(fallbacks) <= FALLBACK_S, fallbacks
    assert max(recoveries) <= RECOVERY_S, recoveries
    for session in world.sessions():
        lost = [c.reason for c in session.changes() if c.new is None]
        assert lost == ["selected pair lost (timeout)"]


@pytest.mark.parametrize("topology", TOPOLOGIES[:4], ids=lambda t: f"{t[0]}-{t[1]}-{t[2]}")
def test_long_outage_loses_consent_and_an_ice_restart_brings_the_path_back(
    topology: tuple[SiteKind, SiteKind, PeerRole, str],
) -> None:
    """60 s down: consent (30 s) expires, the pair goes silent for good, so the MN restarts
    ICE over T (new credentials); the new pairs are re-probed until the repair."""
    world = direct_world(topology)
    fallbacks, recoveries = outage(world, 60)
    assert max(fallbacks) <= FALLBACK_S, fallbacks
    assert max(recoveries) <= RECOVERY_S, recoveries
    assert world.mn.direct_statistics()["ice_restarts"] == 1
    mn, peer = world.mn_session(), world.peer_session()
    assert mn is not None and peer is not None and mn.generation == peer.generation == 2


def test_dead_pair_falls_back_to_the_other_direct_pair_and_back_after_repair() -> None:
    """Dual stack: IPv6 (faster) dies; the IPv4 pair, fresh from re-probes, takes over at once
    instead of T, and IPv6 is taken again after the repair."""
    world = build_world(SEED, mn="fw", peer="open", families="46")
    world.net.core.latency_s = 0.010
    world.mn_site.link.latency_s = 0.005
    world.net.run_until(KILL_AT)
    mn = world.mn_session()
    assert mn is not None
    path = mn.path()
    assert path is not None
    v6 = ":" in path[0][0]
    rule = kill_selected_path(world)
    world.net.run_until(KILL_AT + 15)
    now_path = mn.path()
    assert now_path is not None and (":" in now_path[0][0]) != v6
    world.net.rules.remove(rule)
    world.net.run_until(KILL_AT + 15 + RECOVERY_S)
    assert world.agree() and world.net.violations == []
    switch = [t for t, p, r in mn.path_log if r == "selected" and t > KILL_AT]
    assert switch and switch[0] - KILL_AT <= FALLBACK_S + 0.5


# -- movement -------------------------------------------------------------------------------------

MOVE_AT = 30.0


@pytest.mark.parametrize(
    ("old", "new", "peer", "role", "families"),
    [
        ("fw", "fw", "open", "cn", "6"),
        ("fw", "fw", "fw", "mn", "6"),
        ("nat-easy", "nat-hard", "open", "cn", "4"),
        ("open", "nat-easy", "fw", "mn", "46"),
    ],
)
def test_movement_make_before_break_keeps_t_and_moves_d_udp_to_the_new_coa(
    old: SiteKind, new: SiteKind, peer: SiteKind, role: PeerRole, families: str
) -> None:
    world = build_world(SEED, mn=old, peer=peer, peer_role=role, families=families)
    world.net.run_until(MOVE_AT)
    mn = world.mn_session()
    assert mn is not None and mn.path() is not None
    old_hosts = set(world.mn.hosts)
    move_mn(world, new, families)
    new_hosts = set(world.mn.hosts) - old_hosts
    # T never breaks: the HA's binding always names a CoA the MN holds (inside its NAT, the
    # outside address of a host it holds)
    t = MOVE_AT
    while t < MOVE_AT + 10:
        t += 0.05
        world.net.run_until(t)
        via = world.ha.via(HOA_MN)
        assert via is not None, f"{t:.2f}: no binding"
        held = world.mn.outside_ips()
        assert via.remote[0] in held, f"{t:.2f}: HA binding {via} but the MN holds {held}"
    world.net.run_until(MOVE_AT + 60)
    mn = world.mn_session()
    peer_session = world.peer_session()
    assert mn is not None and peer_session is not None
    path = mn.path()
    assert path is not None and path[0] in new_hosts
    assert world.agree()
    back = first_change(mn, MOVE_AT, direct=True)
    assert back is not None and back - MOVE_AT <= 2.0, mn.path_log
    assert set(world.mn.hosts) == new_hosts  # the old CoAs were released
    assert world.net.violations == []  # never data on an unvalidated pair, nor from old CoAs
    assert world.mn.stats["tx_closed_socket"] == 0  # nothing after AccessRetired on old ones
    [(_, retired)] = world.mn.retired
    assert {str(a) for a in (retired.ipv6, retired.ipv4) if a} == {h[0] for h in old_hosts}
    assert world.ha.stats["unexpected"] == 0


def test_break_before_make_recovers_too() -> None:
    world = build_world(SEED, mn="fw", peer="open", families="6")
    world.net.run_until(MOVE_AT)
    move_mn(world, "fw", "6", make_before_break=False)
    world.net.run_until(MOVE_AT + 30)
    mn = world.mn_session()
    assert mn is not None and mn.path() is not None and world.agree()
    assert world.net.violations == []
