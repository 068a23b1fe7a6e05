"""Random scenario mixes for the many-seed test (importable by worker processes).

Each seed picks a topology (the MN's access network, a CN or a second MN and its access
network, IPv6/IPv4/dual stack), link faults (loss, duplication, reordering, jitter on the
access links and the core) and scripted faults (every direct path cut for a while, a middlebox
reboot that forgets its conntrack/NAT state, a move of the MN to another access network); the
nodes are the real cores (tests/sim/simnet.py). Faults last until ``T_SETTLE``; then the links
are calm and every rule is gone, and after ``SETTLE_BOUND`` both agents must agree, on a direct
pair exactly when the final topology allows one (:func:`simnet.direct_possible`), and stay
there; the MN must be registered. Throughout: no data on a pair without a fresh two-way
authenticated check (the simulator's own oracle), nothing sent from an address a node does not
hold or to a relayed candidate, at most 20 checks in any second, no exception.

Flap damping may hold a pair down past ``SETTLE_BOUND``: a pair that died (timeout) twice within
60 s of being selected under the random loss is not taken again for 30 s (then 60, 120 s), and
while the controlling agent waits, the controlled one keeps the pair that works. The check then
waits until that hold-down and one re-probe are over (:meth:`simnet.Session.damped_until`, from
the deaths seen in the agents' events and the documented ``IceConfig`` damping) and records how
much longer that was (``Outcome.damped_extra``).
"""

from __future__ import annotations

import dataclasses
import random
import traceback
from dataclasses import dataclass
from functools import partial

from simnet import (
    HA_IP4,
    HA_IP6,
    HOA_MN,
    HOA_PEER,
    SITE_KINDS,
    LinkProfile,
    Packet,
    PeerRole,
    SiteKind,
    World,
    build_world,
    direct_possible,
    max_rate,
    move_mn,
)

T_SETTLE = 45.0
SETTLE_BOUND = 30.0
STABLE_FOR = 15.0
MAX_CHECKS_PER_SECOND = 20
DATA_INTERVAL_S = 0.5
_T_ADDRESSES = frozenset({HA_IP6, HA_IP4, HOA_MN, HOA_PEER})


@dataclass(frozen=True)
class Mix:
    seed: int
    mn: SiteKind
    peer: SiteKind
    role: PeerRole
    families: str
    loss: float
    duplicate: float
    reorder: float
    jitter_s: float
    cut: tuple[float, float] | None  # (from, until): every direct path dropped in the core
    reboot: float | None  # the MN's middlebox forgets its state
    move: tuple[float, SiteKind] | None
    crossing: bool = False  # both MNs offer at once

    @property
    def final_mn(self) -> SiteKind:
        return self.move[1] if self.move is not None else self.mn

    @property
    def expect_direct(self) -> bool:
        return direct_possible(self.final_mn, self.peer, self.role, self.families)

    def __str__(self) -> str:
        fault = [
            f"loss={self.loss:.3f}",
            f"dup={self.duplicate:.3f}",
            f"reorder={self.reorder:.2f}",
        ]
        if self.cut:
            fault.append(f"cut={self.cut[0]:.1f}-{self.cut[1]:.1f}")
        if self.reboot is not None:
            fault.append(f"reboot={self.reboot:.1f}")
        if self.move:
            fault.append(f"move={self.move[0]:.1f}->{self.move[1]}")
        if self.crossing:
            fault.append("crossing-offers")
        return (
            f"seed {self.seed}: mn={self.mn} peer={self.peer}({self.role}) v{self.families} "
            + " ".join(fault)
        )


def mix(seed: int) -> Mix:
    r = random.Random(seed * 7919 + 1)
    role: PeerRole = r.choice(["cn", "mn"])
    peer: SiteKind = r.choice(SITE_KINDS) if role == "mn" else r.choice(["open", "open", "fw"])
    loss = r.choice([0.0, r.uniform(0.0, 0.05), r.uniform(0.05, 0.12)])
    start = r.uniform(3.0, 30.0)
    m = Mix(
        seed=seed,
        mn=r.choice(SITE_KINDS),
        peer=peer,
        role=role,
        families=r.choice(["6", "4", "46"]),
        loss=loss,
        duplicate=r.choice([0.0, r.uniform(0.0, 0.08)]),
        reorder=r.choice([0.0, r.uniform(0.0, 0.3)]),
        jitter_s=r.uniform(0.0, 0.03),
        cut=(start, min(T_SETTLE, start + r.uniform(1.0, 40.0))) if r.random() < 0.4 else None,
        reboot=r.uniform(5.0, 40.0) if r.random() < 0.2 else None,
        move=(r.uniform(5.0, 40.0), r.choice(SITE_KINDS)) if r.random() < 0.3 else None,
    )
    crossing = role == "mn" and r.random() < 0.4  # drawn last: the other draws stay as they were
    return dataclasses.replace(m, crossing=crossing)


def _cut_direct(now: float, pkt: Packet) -> bool:
    """Everything that is not T (to or from the HA and its HoAs) is direct."""
    return pkt.src[0] not in _T_ADDRESSES and pkt.dst[0] not in _T_ADDRESSES


@dataclass(frozen=True)
class Outcome:
    seed: int
    description: str
    error: str | None
    expected_direct: bool
    paths: str
    agreed: bool
    settled_after: float | None  # last path change after T_SETTLE (None: none)
    damped_extra: float  # how much later than SETTLE_BOUND flap damping let the check happen
    max_checks_per_second: int
    restarts: int
    selections: int

    @property
    def ok(self) -> bool:
        return self.error is None


def _world(m: Mix) -> World:
    access = LinkProfile(
        latency_s=0.005, jitter_s=m.jitter_s, loss=m.loss, duplicate=m.duplicate, reorder=m.reorder
    )
    core = LinkProfile(latency_s=0.010, jitter_s=m.jitter_s, loss=m.loss / 2, reorder=m.reorder)
    return build_world(
        m.seed,
        mn=m.mn,
        peer=m.peer,
        peer_role=m.role,
        families=m.families,
        access=access,
        core=core,
        data_interval_s=DATA_INTERVAL_S,
        crossing=m.crossing,
    )


def _calm(world: World) -> None:
    for site in world.net.sites.values():
        site.link.calm()
    world.net.core.calm()
    world.net.rules.clear()


def prepare(m: Mix) -> World:
    """The world of ``m`` with its faults scheduled (``world.net.run_until`` replays it)."""
    world = _world(m)
    net = world.net
    if m.cut is not None:
        net.at(m.cut[0], lambda: net.rules.append(_cut_direct))
        net.at(m.cut[1], lambda: net.rules.remove(_cut_direct))
    if m.reboot is not None:

        def reboot() -> None:
            for box in (world.mn_site.v4, world.mn_site.v6):
                if box is not None:
                    box.flush()

        net.at(m.reboot, reboot)
    if m.move is not None:
        net.at(m.move[0], partial(move_mn, world, m.move[1], m.families))
    net.at(T_SETTLE, partial(_calm, world))
    return world


def run_mix(m: Mix) -> Outcome:
    """Run one seed and check its invariants; never raises (the error is in the outcome)."""
    try:
        world = prepare(m)
        net = world.net
        net.run_until(T_SETTLE + SETTLE_BOUND)
        # hold-downs delay the controlling agent only (the controlled one follows nominations)
        damped = max((s.damped_until() for s in world.sessions() if s.controlling), default=0.0)
        net.run_until(max(net.now, damped))
        checked_at = net.now
        paths_then = world.paths()
        agreed = world.agree()
        net.run_until(checked_at + STABLE_FOR)
        return _judge(m, world, checked_at, paths_then, agreed)
    except Exception:
        return Outcome(
            m.seed, str(m), traceback.format_exc(), m.expect_direct, "", False, None, 0.0, 0, 0, 0
        )


def _judge(m: Mix, world: World, checked_at: float, paths_then: object, agreed: bool) -> Outcome:
    sessions = world.sessions()
    problems: list[str] = []
    if world.net.violations:
        problems.append(f"violations: {world.net.violations[:3]}")
    if world.ha.stats["unexpected"]:
        problems.append(f"{world.ha.stats['unexpected']} packets to a relayed candidate")
    unknown = world.mn.stats["check_for_unknown_peer"] + world.peer.stats["check_for_unknown_peer"]
    if unknown:  # the check-rate oracle must see every check
        problems.append(f"{unknown} checks with a ufrag never advertised on the wire")
    rate = max((max_rate(s.check_times) for s in sessions), default=0)
    if rate > MAX_CHECKS_PER_SECOND:
        problems.append(f"check storm: {rate} checks in one second")
    paths = world.paths()
    direct = [p is not None for p in paths]
    if not agreed:
        problems.append(f"no agreement {SETTLE_BOUND} s after settling: {paths_then}")
    elif m.expect_direct and not (len(sessions) == 2 and all(direct)):
        problems.append(f"expected D-udp, got {paths}")
    elif not m.expect_direct and any(direct):
        problems.append(f"expected T, got {paths}")
    if paths != paths_then or not world.agree():
        problems.append(f"not stable: {paths_then} then {paths}")
    if not world.registered():
        problems.append("not registered at the end")
    changes = [t for s in sessions for t, _, r in s.path_log if t > T_SETTLE and r != "start"]
    late = [t for t in changes if t > checked_at]
    if late:
        problems.append(f"path changed at {late} after agreeing")
    return Outcome(
        seed=m.seed,
        description=str(m),
        error="; ".join(problems) or None,
        expected_direct=m.expect_direct,
        paths=str(paths),
        agreed=agreed,
        settled_after=(max(changes) - T_SETTLE) if changes else None,
        damped_extra=checked_at - (T_SETTLE + SETTLE_BOUND),
        max_checks_per_second=rate,
        restarts=world.mn.direct_statistics().get("ice_restarts", 0),
        selections=sum(1 for s in sessions for _, _, reason in s.path_log if reason == "selected"),
    )


def run_seeds(seeds: list[int]) -> list[Outcome]:
    return [run_mix(mix(seed)) for seed in seeds]
