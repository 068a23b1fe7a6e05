"""RouteOptimizationCore (MN) against CorrespondentCore (CN) in memory, on virtual time.

The link plays the drivers: an MN output with ``care_of`` set leaves from that CoA with a Home
Address option (the CN gets ``src`` = CoA, ``home_address`` = HoA); a HoTI (src = HoA, no
``care_of``) goes through the HA tunnel and reaches the CN from the HoA; a CoTI leaves natively
from the CoA. CN outputs reach the MN with their own src/dst (a BA with ``care_of`` arrives at
the CoA with an RH2 and is handed over with dst = HoA; a HoT comes back through the tunnel).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv6Address

import pytest

from mipnode.core.cn import (
    CnBindingAdded,
    CnBindingRemoved,
    CnBindingUpdated,
    CnCoreConfig,
    CorrespondentCore,
)
from mipnode.core.mn_ro import (
    RoConfig,
    RouteOptimizationCore,
    RouteOptimizationEnded,
    RouteOptimizationExpired,
    RouteOptimized,
)
from mipnode.core.types import OutgoingMh
from mipnode.wire.bad import encode_mh_with_bad
from mipnode.wire.mh import BindingAck, decode_mh_untrusted

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:aa::5")
COA2 = IPv6Address("2001:db8:bb::7")
CN = IPv6Address("2001:db8:c0::1")
KCN = bytes(range(20))

Filter = Callable[[str, OutgoingMh], bool]  # (message name, datagram) -> deliver?


class Rng:
    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.sha256(f"{self.seed}/{self.calls}".encode()).digest()[:n]


def name_of(out: OutgoingMh) -> str:
    return type(decode_mh_untrusted(out.data, out.src, out.dst)).__name__


class Link:
    """Carries MHs between the MN's RO core and a CN core; records what crossed."""

    def __init__(self, initial_sequence: int = 1000, **config: object) -> None:
        fields: dict[str, object] = {"home_address": HOA}
        fields.update(config)
        self.mn = RouteOptimizationCore(RoConfig(**fields), Rng("mn"), initial_sequence)  # type: ignore[arg-type]
        self.cn = CorrespondentCore(CnCoreConfig((CN,)), KCN, Rng("cn"))
        self.now = 0.0
        self.to_cn: Filter = lambda _name, _out: True
        self.to_mn: Filter = lambda _name, _out: True
        self.log: list[tuple[float, str, str]] = []  # (time, direction, message), delivered
        self.mn_events: list[object] = []
        self.cn_events: list[object] = []

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            for out in self.mn.datagrams_to_send(self.now):
                name = name_of(out)
                if not self.to_cn(name, out):
                    continue
                moved = True
                self.log.append((self.now, "mn>cn", name))
                if out.care_of is not None:  # native from the CoA with an HAO
                    self.cn.receive_datagram(self.now, out.data, out.care_of, out.dst, out.src)
                else:  # HoTI through the tunnel, CoTI native: either way from out.src
                    self.cn.receive_datagram(self.now, out.data, out.src, out.dst)
            for out in self.cn.datagrams_to_send(self.now):
                name = name_of(out)
                if not self.to_mn(name, out):
                    continue
                moved = True
                self.log.append((self.now, "cn>mn", name))
                self.mn.receive_datagram(self.now, out.data, out.src, out.dst)
            while (event := self.mn.next_event()) is not None:
                self.mn_events.append(event)
            while (cn_event := self.cn.next_event()) is not None:
                self.cn_events.append(cn_event)
            if not moved:
                return
        raise AssertionError("the cores keep talking")

    def step(self) -> float:
        timers = [t for t in (self.mn.get_timer(), self.cn.get_timer()) if t is not None]
        self.now = min(timers)
        self.mn.handle_timer(self.now)
        self.cn.handle_timer(self.now)
        self.pump()
        return self.now

    def run_until(self, deadline: float) -> None:
        for _ in range(100_000):
            timers = [t for t in (self.mn.get_timer(), self.cn.get_timer()) if t is not None]
            if not timers or min(timers) > deadline:
                self.now = deadline
                return
            self.step()
        raise AssertionError("too many steps")

    def at(self, now: float) -> Link:
        """Run the timers up to ``now`` and stay there."""
        self.run_until(now)
        return self

    def sent(self, direction: str, since: float = 0.0) -> list[str]:
        return [m for t, d, m in self.log if d == direction and t >= since]

    def start(self, care_of: IPv6Address = COA) -> None:
        self.mn.start(self.now, CN, care_of)
        self.pump()


def optimized_link(**config: object) -> Link:
    link = Link(1000, **config)
    link.start()
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    return link


# -- happy path, refresh ----------------------------------------------------------------


def test_rr_and_bu_route_optimise_in_one_round() -> None:
    link = Link()
    link.start()
    assert link.sent("mn>cn") == ["HomeTestInit", "CareOfTestInit", "BindingUpdate"]
    assert link.sent("cn>mn") == ["HomeTest", "CareOfTest", "BindingAck"]
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    assert [type(e) for e in link.cn_events] == [CnBindingAdded]
    binding = link.cn.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.sequence, binding.lifetime_s) == (COA, 1000, 420)
    assert link.cn.check_home_address(0.0, COA, HOA)
    (mine,) = link.mn.bindings(0.0)
    assert (mine.state, mine.care_of, mine.lifetime_remaining) == ("route-optimized", COA, 420)


def test_refreshes_keep_the_binding_for_an_hour() -> None:
    link = optimized_link()
    link.run_until(3600.0)
    assert not any(isinstance(e, CnBindingRemoved) for e in link.cn_events)
    assert not any(isinstance(e, RouteOptimizationExpired) for e in link.mn_events)
    refreshes = [e for e in link.cn_events if isinstance(e, CnBindingUpdated)]
    assert len(refreshes) == 3600 // 336  # every 336 s (80 % of 420 s)
    # Tokens are 336 s old at each refresh, so every refresh is a complete RR.
    assert link.sent("mn>cn").count("HomeTestInit") == 1 + len(refreshes)
    assert link.mn.state(CN) == "route-optimized"
    assert link.mn.statistics().get("bu_retransmissions", 0) == 0


def test_a_lost_hot_delays_route_optimisation_by_one_retransmission() -> None:
    link = Link()
    lost: list[str] = []

    def lose_first_hot(name: str, _out: OutgoingMh) -> bool:
        if name == "HomeTest" and not lost:
            lost.append(name)
            return False
        return True

    link.to_mn = lose_first_hot
    link.start()
    assert link.mn.state(CN) == "return-routability"
    assert link.step() == 1.0
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    assert link.sent("mn>cn") == [
        "HomeTestInit",
        "CareOfTestInit",
        "HomeTestInit",
        "BindingUpdate",
    ]


def test_a_forged_ba_is_ignored() -> None:
    link = Link()
    link.to_cn = lambda name, _out: name != "BindingUpdate"
    link.start()
    assert link.mn.state(CN) == "binding-update"
    forged = encode_mh_with_bad(
        BindingAck(status=0, sequence=1000, lifetime=105), CN, HOA, kbm=b"k" * 20, coa=COA, cn=CN
    )
    link.mn.receive_datagram(0.5, forged, CN, HOA)
    assert link.mn.next_event() is None
    assert link.mn.statistics()["drop_bad_auth"] == 1
    link.to_cn = lambda _name, _out: True
    assert link.step() == 1.0
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]


# -- 135-138 recovery ---------------------------------------------------------------------


def test_a_restarted_mn_adopts_the_cns_sequence_number() -> None:
    link = Link(initial_sequence=30000)
    link.start()
    link.now = 100.0
    link.mn = RouteOptimizationCore(RoConfig(HOA), Rng("mn-restarted"), 10)  # 10 is "older"
    link.mn_events.clear()
    link.start()
    assert link.cn.statistics()["rejected_135"] == 1
    assert link.mn.statistics()["sequence_resync"] == 1
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    binding = link.cn.binding_for(HOA)
    assert binding is not None and binding.sequence == 30001


@pytest.mark.parametrize(
    ("status", "blocked", "rerun"),
    [
        # The home token is from 0 s, the CoT gets through only at 255 s: the CN has dropped
        # the home nonce (older than MAX_NONCE_LIFETIME, 240 s) and answers 136.
        (136, "CareOfTest", ["HomeTestInit"]),
        (137, "HomeTest", ["CareOfTestInit"]),
        # Both tokens from 0 s, every BU lost until 255 s.
        (138, "BindingUpdate", ["HomeTestInit", "CareOfTestInit"]),
    ],
)
def test_expired_nonces_241_s_after_the_tokens_are_answered_136_to_138_and_recovered(
    status: int, blocked: str, rerun: list[str]
) -> None:
    # An MN that trusts its tokens for 300 s meets a CN whose nonces live 240 s: what a CN
    # that restarted or ran short of nonce memory looks like (RFC 6275 §5.2.7).
    link = Link(token_lifetime_s=300.0)
    link.to_cn = lambda name, _out: not (name == blocked and link.now < 241.0)
    link.to_mn = lambda name, _out: not (name == blocked and link.now < 241.0)
    link.start()
    assert link.mn.state(CN) in ("return-routability", "binding-update")
    link.run_until(241.0)
    assert link.mn_events == []
    # The next retransmission of the blocked part (255 s on the 1-2-4-...-32 s ladder).
    assert link.step() == 255.0
    assert link.cn.statistics()[f"rejected_{status}"] == 1
    assert link.mn.statistics()[f"rr_rerun_{status}"] == 1
    after = [m for t, d, m in link.log if d == "mn>cn" and t == 255.0]
    index = after.index("BindingUpdate")
    assert sorted(after[index + 1 : index + 1 + len(rerun)]) == sorted(rerun)
    assert after[-1] == "BindingUpdate"
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    binding = link.cn.binding_for(HOA)
    assert binding is not None and binding.care_of_address == COA


def test_with_the_default_token_lifetime_the_mn_reruns_rr_itself() -> None:
    link = Link()
    link.to_cn = lambda name, _out: not (name == "BindingUpdate" and link.now < 241.0)
    link.start()
    link.run_until(241.0)
    # The BU due at 223 s found its tokens 223 s old and fetched new ones instead.
    assert link.mn.statistics()["tokens_expired"] == 1
    assert link.sent("mn>cn", since=223.0)[:2] == ["HomeTestInit", "CareOfTestInit"]
    # New tokens at 223 s restart the BU ladder: 223, 224, 226, 230, 238, then 254 s.
    assert link.step() == 254.0
    assert link.mn_events == [RouteOptimized(CN, COA, 420)]
    assert not any(k.startswith("rejected_13") for k in link.cn.statistics())


# -- movement -----------------------------------------------------------------------------


def test_move_tests_only_the_new_care_of_address_and_rebinds() -> None:
    link = optimized_link()
    link.at(100.0)
    link.mn.move(100.0, COA2)
    link.pump()
    assert link.sent("mn>cn", since=100.0) == ["CareOfTestInit", "BindingUpdate"]
    assert link.mn_events[-1] == RouteOptimized(CN, COA2, 420)
    updated = link.cn_events[-1]
    assert isinstance(updated, CnBindingUpdated)
    assert (updated.previous.care_of_address, updated.binding.care_of_address) == (COA, COA2)
    assert link.cn.check_home_address(100.0, COA2, HOA)
    assert not link.cn.check_home_address(100.0, COA, HOA)


def test_flapping_care_of_addresses_respect_max_update_rate_and_settle() -> None:
    link = optimized_link()
    link.at(50.0)
    addresses = [IPv6Address(f"2001:db8:{n:x}::1") for n in range(0x100, 0x108)]
    for n, address in enumerate(addresses):
        link.now = 50.0 + n * 0.1
        link.mn.move(link.now, address)
        link.pump()
    link.run_until(60.0)
    sends = [(t, m) for t, d, m in link.log if d == "mn>cn" and t >= 50.0]
    for kind in ("CareOfTestInit", "BindingUpdate"):
        times = [t for t, m in sends if m == kind]
        for i in range(len(times) - 3):
            assert times[i + 3] - times[i] >= 1.0 - 1e-9, (kind, times)
    assert link.mn.statistics()["rate_limited_coti"] >= 1
    assert link.mn.state(CN) == "route-optimized"
    assert link.mn_events[-1] == RouteOptimized(CN, addresses[-1], 420)
    binding = link.cn.binding_for(HOA)
    assert binding is not None and binding.care_of_address == addresses[-1]


# -- deletion -----------------------------------------------------------------------------


def test_deletion_with_the_home_token_alone_is_accepted_by_the_cn() -> None:
    link = optimized_link()
    link.at(100.0)
    link.mn.stop(100.0, CN)
    link.pump()
    assert link.sent("mn>cn", since=100.0) == ["BindingUpdate"]  # the home token is fresh
    assert link.mn_events[-1] == RouteOptimizationEnded(CN)
    assert link.cn_events[-1] == CnBindingRemoved(HOA, "deregistered")
    assert link.cn.binding_for(HOA) is None
    assert link.mn.bindings() == []
    assert link.mn.get_timer() is None


def test_a_deletion_after_the_home_token_aged_runs_only_the_home_test() -> None:
    link = optimized_link()
    link.at(300.0)
    link.mn.stop(300.0, CN)
    link.pump()
    assert link.sent("mn>cn", since=300.0) == ["HomeTestInit", "BindingUpdate"]
    assert link.cn_events[-1] == CnBindingRemoved(HOA, "deregistered")
    assert link.mn_events[-1] == RouteOptimizationEnded(CN)


def test_a_deletion_from_a_new_care_of_address_is_accepted() -> None:
    link = optimized_link()
    link.to_cn = lambda name, _out: name != "CareOfTestInit"  # the move never completes
    link.at(10.0)
    link.mn.move(10.0, COA2)
    link.pump()
    link.mn.stop(10.5, CN)
    link.now = 10.5
    link.pump()
    assert link.cn_events[-1] == CnBindingRemoved(HOA, "deregistered")
    assert link.mn_events[-1] == RouteOptimizationEnded(CN)


def test_an_unreachable_cn_is_dropped_when_its_binding_must_have_expired() -> None:
    link = optimized_link()
    link.at(100.0)
    link.to_cn = lambda _name, _out: False
    link.mn.stop(100.0, CN)
    link.pump()
    link.run_until(421.0)
    assert link.mn_events[-1] == RouteOptimizationEnded(CN)
    assert link.cn_events[-1] == CnBindingRemoved(HOA, "expired")
    assert link.mn.statistics()["deletions_unconfirmed"] == 1
