"""Two agents over the in-memory network: selection, death, recovery, hysteresis, restart,
consent, one-way paths, NAT, role conflicts. Virtual time; the switching model of DESIGN §4:
T from the first packet, a direct pair only after a two-way authenticated check, back to T
within 3 s when it dies, a recovered better path again within 30 s."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icenet import IceNet, make_agent, seeded_bytes

from ice.agent import (
    ConsentLost,
    IceAgent,
    IceConfig,
    PathLost,
    PathSelected,
    RoleChanged,
    new_credentials,
)
from ice.candidate import TransportAddress

MN6 = ("2001:db8:1::1", 5000)
MN4 = ("10.0.0.1", 5000)
CN6 = ("2001:db8:2::1", 6000)
CN4 = ("10.0.1.1", 6000)
START = 1000.0


def latency_by_family(v6: float, v4: float):  # type: ignore[no-untyped-def]
    def latency(now: float, src: TransportAddress, dst: TransportAddress) -> float:
        return v6 if ":" in src[0] else v4

    return latency


def network(
    *,
    v6: float = 0.010,
    v4: float = 0.030,
    families: tuple[str, ...] = ("6", "4"),
    mn_config: IceConfig | None = None,
    cn_config: IceConfig | None = None,
    mn_controlling: bool = True,
    cn_controlling: bool = False,
) -> IceNet:
    net = IceNet(now=START, latency=latency_by_family(v6, v4))
    mn_addrs = [a for a, f in ((MN6, "6"), (MN4, "4")) if f in families]
    cn_addrs = [a for a, f in ((CN6, "6"), (CN4, "4")) if f in families]
    net.add("mn", make_agent(controlling=mn_controlling, seed=11, config=mn_config), *mn_addrs)
    net.add("cn", make_agent(controlling=cn_controlling, seed=22, config=cn_config), *cn_addrs)
    return net


def selected(net: IceNet, name: str) -> tuple[TransportAddress, TransportAddress] | None:
    pair = net.agents[name].selected_pair()
    return None if pair is None else (pair.local.base, pair.remote.address)


def events_of(net: IceNet, name: str, kind: type, since: float = 0.0) -> list:  # type: ignore[type-arg]
    return [(t, e) for t, e in net.events[name] if isinstance(e, kind) and t >= since]


def agree(net: IceNet) -> bool:
    mn, cn = selected(net, "mn"), selected(net, "cn")
    return mn is not None and cn is not None and mn == (cn[1], cn[0])


# -- first selection ---------------------------------------------------------------------------


def test_data_stays_on_t_until_a_two_way_check_succeeds() -> None:
    net = network()
    assert selected(net, "mn") is None and selected(net, "cn") is None
    net.exchange("mn", "cn")
    net.run_for(0.015)  # first check in flight, no answer yet
    assert selected(net, "mn") is None
    net.run_for(1.0)
    assert agree(net)


def test_two_agents_select_the_fastest_pair_and_agree() -> None:
    net = network(v6=0.040, v4=0.005)
    net.exchange("mn", "cn")
    net.run_for(1.0)
    assert selected(net, "mn") == (MN4, CN4)
    assert selected(net, "cn") == (CN4, MN4)
    first = events_of(net, "mn", PathSelected)[0][0]
    assert first - START < 0.1
    net.run_for(60)
    assert len(events_of(net, "mn", PathSelected)) <= 2
    assert selected(net, "mn") == (MN4, CN4) and agree(net)
    stats = net.agents["mn"].statistics()
    assert stats["heartbeats_sent"] >= 55  # one a second on the selected pair


def test_heartbeats_only_on_the_selected_pair_and_never_before_validation() -> None:
    net = network()
    for address in (CN6, CN4):  # the peer is unreachable: nothing validates
        net.block(MN6 if ":" in address[0] else MN4, address)
    net.exchange("mn", "cn")
    net.run_for(40)
    for name in ("mn", "cn"):
        agent = net.agents[name]
        assert agent.selected_pair() is None
        assert "heartbeats_sent" not in agent.statistics()
        assert events_of(net, name, PathSelected) == []
        assert all(not p.valid for p in agent.pairs())


def test_one_way_path_is_never_selected() -> None:
    net = network()
    net.rules.append(lambda now, src, dst, data: src in (CN6, CN4))  # CN -> MN dropped
    net.exchange("mn", "cn")
    net.run_for(40)
    assert selected(net, "mn") is None and selected(net, "cn") is None
    assert net.agents["cn"].statistics()["requests_answered"] > 0  # MN's checks did arrive


# -- death, fallback, recovery -----------------------------------------------------------------


def test_dead_selected_pair_is_lost_within_3_s_and_recovered_within_30_s() -> None:
    net = network(families=("6",))
    net.exchange("mn", "cn")
    net.run_for(5)
    assert selected(net, "mn") == (MN6, CN6) and agree(net)
    blocked_at = net.now
    rule = net.block(MN6, CN6)
    net.run_for(5)
    for name in ("mn", "cn"):
        [(lost_at, lost)] = events_of(net, name, PathLost)
        assert lost.reason == "timeout"
        assert lost.pair.last_response_at is not None
        assert lost_at - lost.pair.last_response_at <= 2.5 + 1e-9
        assert lost_at - blocked_at <= 3.0
        assert selected(net, name) is None  # back on T
    net.run_for(10)  # an outage of 15 s in all
    net.rules.remove(rule)
    healed_at = net.now
    net.run_for(30)
    for name in ("mn", "cn"):
        back = events_of(net, name, PathSelected, since=healed_at)
        assert back, name
        assert back[0][0] - healed_at <= 30
    assert agree(net)


def test_dead_pair_falls_back_to_another_fresh_pair() -> None:
    net = network(v6=0.010, v4=0.030)
    net.exchange("mn", "cn")
    net.run_for(5)
    assert selected(net, "mn") == (MN6, CN6)
    net.block(MN6, CN6)
    blocked_at = net.now
    net.run_for(4)
    [(lost_at, _)] = events_of(net, "mn", PathLost)
    switched = events_of(net, "mn", PathSelected, since=lost_at)
    assert switched and switched[0][1].pair.remote.address == CN4
    assert switched[0][0] - blocked_at <= 3.2  # v4 re-probed at once, one RTT later
    net.run_for(2)
    assert selected(net, "cn") == (CN4, MN4) and agree(net)


def test_recovered_better_path_is_taken_again_within_30_s() -> None:
    net = network(v6=0.010, v4=0.030)
    net.exchange("mn", "cn")
    net.run_for(5)
    rule = net.block(MN6, CN6)
    net.run_for(12)
    assert selected(net, "mn") == (MN4, CN4)
    net.rules.remove(rule)
    healed_at = net.now
    net.run_for(30)
    upgrades = [
        (t, e)
        for t, e in events_of(net, "mn", PathSelected, since=healed_at)
        if e.pair.remote.address == CN6
    ]
    assert upgrades and upgrades[0][0] - healed_at <= 30
    assert upgrades[0][1].previous is not None  # v4 -> v6 directly, no detour over T
    assert upgrades[0][1].previous.remote.address == CN4
    assert agree(net) and selected(net, "mn") == (MN6, CN6)


def test_better_path_appearing_later_is_upgraded_to() -> None:
    net = network(v6=0.010, v4=0.030)
    rule = net.block(MN6, CN6)
    net.exchange("mn", "cn")
    net.run_for(20)
    assert selected(net, "mn") == (MN4, CN4)
    net.rules.remove(rule)
    opened = net.now
    net.run_for(30)
    assert selected(net, "mn") == (MN6, CN6) and agree(net)
    t, _ = events_of(net, "mn", PathSelected, since=opened)[0]
    assert t - opened <= 30


# -- hysteresis ----------------------------------------------------------------------------------


def jittery(seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)

    def latency(now: float, src: TransportAddress, dst: TransportAddress) -> float:
        return rng.uniform(0.008, 0.016) if ":" in src[0] else rng.uniform(0.009, 0.017)

    return latency


def count_switches(config: IceConfig, seed: int) -> int:
    net = network(mn_config=config, cn_config=config)
    net.latency = jittery(seed)
    net.exchange("mn", "cn")
    net.run_for(180)
    assert agree(net)
    return len(events_of(net, "mn", PathSelected))


def test_hysteresis_prevents_flapping_between_jittery_pairs() -> None:
    for seed in (1, 2):
        assert count_switches(IceConfig(), seed) <= 2


def test_without_hysteresis_the_same_network_flaps() -> None:
    flappy = IceConfig(hysteresis_ratio=0.0, hysteresis_min_s=0.0, rtt_alpha=1.0)
    assert max(count_switches(flappy, seed) for seed in (1, 2)) > 3


# -- ICE restart -------------------------------------------------------------------------------


def test_ice_restart_with_new_credentials() -> None:
    net = network()
    net.exchange("mn", "cn")
    net.run_for(3)
    assert agree(net)
    old = net.agents["mn"].local_credentials
    restarted_at = net.now
    for name, seed in (("mn", 5), ("cn", 6)):
        net.agents[name].restart(net.now, new_credentials(seeded_bytes(seed)))
    net.flush()
    assert net.agents["mn"].local_credentials != old
    for name in ("mn", "cn"):
        assert [e.reason for _, e in events_of(net, name, PathLost)] == ["restart"]
        assert net.agents[name].pairs() == [] and selected(net, name) is None
    net.exchange("mn", "cn")  # the new offer/answer over the T path
    net.run_for(1)
    assert agree(net)
    reselected = events_of(net, "mn", PathSelected, since=restarted_at)
    assert reselected and reselected[0][1].previous is None
    assert net.agents["mn"].statistics()["restarts"] == 1


def test_checks_with_old_credentials_are_refused_after_a_restart() -> None:
    net = network(families=("6",))
    net.exchange("mn", "cn")
    net.run_for(2)
    stale = [s for s in net.log if s.sender == "mn" and s.data[:2] == b"\x00\x01"][-1]
    net.agents["cn"].restart(net.now, new_credentials(seeded_bytes(9)))
    net.flush()
    before = len(net.log)
    net.inject("cn", stale.data, stale.remote, stale.local)
    assert len(net.log) == before  # nothing answered
    stats = net.agents["cn"].statistics()
    assert stats.get("drop_username", 0) + stats.get("drop_stun_integrity", 0) == 1


# -- consent (RFC 7675) ------------------------------------------------------------------------


def test_consent_lost_after_30_s_stops_sending_on_the_pair() -> None:
    net = network(families=("6",))
    net.exchange("mn", "cn")
    net.run_for(5)
    net.block(MN6, CN6)
    net.run_for(40)
    for name, local, remote in (("mn", MN6, CN6), ("cn", CN6, MN6)):
        [(lost_at, lost)] = events_of(net, name, ConsentLost)
        assert lost.pair.last_response_at is not None
        assert abs(lost_at - (lost.pair.last_response_at + 30.0)) < 1e-6
        sends = [
            s.at for s in net.log if s.sender == name and (s.local, s.remote) == (local, remote)
        ]
        assert sends and max(sends) < lost_at  # re-probed until then, silent after
        pair = net.agents[name].pairs()[0]
        assert pair.consent_lost and not pair.valid
        assert net.agents[name].selected_pair() is None


def test_consent_lost_pair_comes_back_after_a_restart() -> None:
    net = network(families=("6",))
    net.exchange("mn", "cn")
    net.run_for(5)
    rule = net.block(MN6, CN6)
    net.run_for(40)
    net.rules.remove(rule)
    net.run_for(20)
    assert selected(net, "mn") is None  # silent on the pair: no recovery without a restart
    for name, seed in (("mn", 5), ("cn", 6)):
        net.agents[name].restart(net.now, new_credentials(seeded_bytes(seed)))
    net.exchange("mn", "cn")
    net.run_for(1)
    assert agree(net)


# -- roles, NAT ----------------------------------------------------------------------------------


def test_both_controlling_resolves_to_one_controller() -> None:
    net = network(cn_controlling=True)
    net.exchange("mn", "cn")
    net.run_for(2)
    roles = {name: a.controlling for name, a in net.agents.items()}
    assert sorted(roles.values()) == [False, True]
    assert agree(net)
    changed = events_of(net, "mn", RoleChanged) + events_of(net, "cn", RoleChanged)
    assert len(changed) == 1


def test_both_controlled_resolves_to_one_controller() -> None:
    net = network(mn_controlling=False)
    net.exchange("mn", "cn")
    net.run_for(2)
    assert sorted(a.controlling for a in net.agents.values()) == [False, True]
    assert agree(net)


def test_nat_peer_reflexive_pair_is_found_and_selected() -> None:
    net = network(families=("4",))
    public = ("203.0.113.5", 40000)
    net.add_nat(MN4, public)
    net.exchange("mn", "cn")  # the MN advertises only its private host candidate
    net.run_for(2)
    assert selected(net, "mn") == (MN4, CN4)
    assert selected(net, "cn") == (CN4, public)
    mn_pair = net.agents["mn"].selected_pair()
    assert mn_pair is not None and mn_pair.mapped == public  # NAT seen in XOR-MAPPED-ADDRESS
    cn_pair = net.agents["cn"].selected_pair()
    assert cn_pair is not None and cn_pair.remote.kind == "prflx"


# -- hostile input -------------------------------------------------------------------------------


def connected() -> IceNet:
    net = network()
    net.exchange("mn", "cn")
    net.run_for(2)
    return net


_CONNECTED = connected()
_CAPTURED = [s for s in _CONNECTED.log][:40]


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda i, pos, val: _mutate(_CAPTURED[i % len(_CAPTURED)].data, pos, val),
            st.integers(0, 1000),
            st.integers(0, 200),
            st.integers(0, 255),
        ),
        st.builds(lambda i: _CAPTURED[i % len(_CAPTURED)].data, st.integers(0, 1000)),
    ),
    st.sampled_from(["mn", "cn"]),
    st.sampled_from([CN6, CN4, MN6, MN4, ("2001:db8:66::1", 1), ("192.0.2.66", 2)]),
)
def test_arbitrary_bytes_never_raise_nor_change_the_selected_pair(
    data: bytes, name: str, source: TransportAddress
) -> None:
    net = connected()
    agent: IceAgent = net.agents[name]
    before = agent.selected_pair()
    role = agent.controlling
    local = MN6 if name == "mn" else CN6
    agent.receive_datagram(net.now, data, local, source)
    after = agent.selected_pair()
    assert before is not None and after is not None
    assert (after.local, after.remote) == (before.local, before.remote)
    assert agent.controlling == role
    while (event := agent.next_event()) is not None:
        assert not isinstance(event, PathSelected | PathLost | RoleChanged | ConsentLost)


def _mutate(data: bytes, pos: int, value: int) -> bytes:
    buf = bytearray(data)
    buf[pos % len(buf)] = value
    return bytes(buf)


def test_a_check_lost_at_a_stateful_firewall_is_repeated_when_the_peer_opens_the_way() -> None:
    """The CN learns the MN's candidates first and checks at once; the MN's outbound-only
    firewall drops that check (no state yet). When the MN's own check arrives, the CN checks
    again right away (§7.3.1.4) instead of waiting for its retransmission one RTO later."""
    net = network(families=("6",))
    opened: set[tuple[TransportAddress, TransportAddress]] = set()

    def mn_firewall(now: float, src: TransportAddress, dst: TransportAddress, data: bytes) -> bool:
        if src == MN6:
            opened.add((src, dst))
            return False
        return dst == MN6 and (dst, src) not in opened

    net.rules.append(mn_firewall)
    mn, cn = net.agents["mn"], net.agents["cn"]
    cn.set_remote_credentials(mn.local_credentials)
    for c in mn.local_candidates():
        cn.add_remote_candidate(c)
    net.run_for(0.1)  # the CN's first check leaves now and dies at the firewall
    assert net.dropped >= 1 and selected(net, "cn") is None
    mn.set_remote_credentials(cn.local_credentials)
    for c in cn.local_candidates():
        mn.add_remote_candidate(c)
    started = net.now
    net.run_for(1.0)
    [(t, _)] = events_of(net, "cn", PathSelected, since=started)
    # Three one-way trips (MN check, CN triggered check, its answer) plus pacing; without the
    # triggered check the CN would wait for its retransmission, 0.5 s after the first one.
    assert t - started < 0.2
    assert net.agents["cn"].statistics()["checks_cancelled_for_trigger"] == 1
    assert agree(net)
