"""An MN core and an HA core wired together in memory, on virtual time."""

from __future__ import annotations

from collections.abc import Callable

from coretest_kit import COA, COA2, HOA, VIA, VIA_UDP, events, make_ha, make_mn

from mipnode.core.ha import BindingAdded, BindingRemoved, BindingUpdated
from mipnode.core.mn import Deregistered, Registered
from mipnode.core.types import OutgoingMh, Via

Filter = Callable[[OutgoingMh], bool]  # True: deliver


class Link:
    """Carries MHs between the two cores; the HA's clock may run ``ha_skew`` s ahead."""

    def __init__(self, initial_sequence: int = 1000, ha_skew: float = 0.0) -> None:
        self.mn = make_mn(initial_sequence)
        self.ha = make_ha()
        self.now = 0.0
        self.ha_skew = ha_skew
        self.via: Via = VIA
        self.to_ha: Filter = lambda _: True
        self.to_mn: Filter = lambda _: True
        self.bus_seen = 0
        self.mn_events: list[object] = []
        self.ha_events: list[object] = []

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            for out in self.mn.datagrams_to_send(self.now):
                self.bus_seen += 1
                if self.to_ha(out):
                    moved = True
                    self.ha.receive_datagram(
                        self.now + self.ha_skew, out.data, out.src, out.dst, self.via
                    )
            for out in self.ha.datagrams_to_send(self.now + self.ha_skew):
                assert out.via == self.via
                if self.to_mn(out):
                    moved = True
                    self.mn.receive_datagram(self.now, out.data, out.src, out.dst)
            self.mn_events += events(self.mn)
            self.ha_events += events(self.ha)
            if not moved:
                return
        raise AssertionError("the cores keep talking")

    def step(self) -> float:
        """Advance to the earliest timer of either core and fire it."""
        timers = [t for t in (self.mn.get_timer(),) if t is not None]
        ha_timer = self.ha.get_timer()
        if ha_timer is not None:
            timers.append(ha_timer - self.ha_skew)
        self.now = min(timers)
        self.mn.handle_timer(self.now)
        self.ha.handle_timer(self.now + self.ha_skew)
        self.pump()
        return self.now

    def run_until(self, deadline: float) -> None:
        for _ in range(10_000):
            nxt = [t for t in (self.mn.get_timer(), self.ha.get_timer()) if t is not None]
            if not nxt or min(nxt) > deadline:
                self.now = deadline
                return
            self.step()
        raise AssertionError("too many steps")

    def register(self, care_of: object = COA) -> None:
        self.mn.register(self.now, care_of)  # type: ignore[arg-type]
        self.pump()


def test_register_refresh_and_deregister() -> None:
    link = Link()
    link.register()
    assert link.mn.state == "registered"
    assert [type(e) for e in link.mn_events] == [Registered]
    assert [type(e) for e in link.ha_events] == [BindingAdded]
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.via, binding.sequence) == (COA, VIA, 1000)

    assert link.step() == 480.0  # MN refresh: BU and BA in the same instant
    assert link.mn.state == "registered"
    assert [type(e) for e in link.ha_events] == [BindingAdded, BindingUpdated]
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert (binding.sequence, binding.expires_at) == (1001, 1080.0)
    assert link.mn.get_timer() == 960.0

    link.now = 500.0
    link.mn.deregister(link.now)
    link.pump()
    assert link.mn.state == "idle"
    assert link.mn_events[-1] == Deregistered(confirmed=True)
    assert link.ha_events[-1] == BindingRemoved(HOA, "deregistered")
    assert link.ha.binding_for(HOA) is None
    assert link.step() == 510.0  # the HA purges the held entry
    assert link.ha.bindings(include_deleted=True) == []
    assert link.mn.get_timer() is None
    assert link.ha.get_timer() is None


def test_a_day_of_refreshes_keeps_the_binding_alive() -> None:
    link = Link(initial_sequence=65500)  # wraps during the run
    link.register()
    link.run_until(86_400.0)
    assert link.mn.state == "registered"
    assert not any(isinstance(e, BindingRemoved) for e in link.ha_events)
    assert link.bus_seen == 1 + 86_400 // 480
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert binding.sequence == (65500 + 180) % 65536


def test_a_lost_first_bu_is_retransmitted_at_1_5_s() -> None:
    link = Link()
    link.to_ha = lambda _: link.bus_seen > 1
    link.register()
    assert link.mn.state == "registering"
    assert link.step() == 1.5
    assert link.mn.state == "registered"
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert binding.sequence == 1001


def test_a_lost_ba_leads_to_a_retransmission_the_ha_takes_as_a_refresh() -> None:
    link = Link()
    lost: list[OutgoingMh] = []

    def lose_first(out: OutgoingMh) -> bool:
        lost.append(out)
        return len(lost) > 1

    link.to_mn = lose_first
    link.register()
    assert link.mn.state == "registering"
    assert link.step() == 1.5
    assert link.mn.state == "registered"
    assert [type(e) for e in link.ha_events] == [BindingAdded, BindingUpdated]
    assert link.mn_events == [Registered(COA, 600, 601.5, 1001)]


def test_a_skewed_mn_clock_is_resynchronised_by_144() -> None:
    link = Link(ha_skew=3600.0)
    link.register()
    assert link.mn.state == "registered"
    assert link.ha.statistics()["rejected_144"] == 1
    assert abs(link.mn.clock_offset - 3600.0) <= 1.0
    link.run_until(2000.0)  # refreshes keep working with the learnt offset
    assert link.ha.statistics()["rejected_144"] == 1
    assert link.ha.statistics()["refreshes"] == 4


def test_a_restarted_mn_adopts_the_has_sequence_number() -> None:
    link = Link(initial_sequence=30000)
    link.register()
    link.now = 100.0
    link.mn = make_mn(initial_sequence=10)  # restart: 10 is "older" than 30000
    link.register()
    assert link.mn.state == "registered"
    assert link.ha.statistics()["rejected_135"] == 1
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert binding.sequence == 30001


def test_moving_to_a_udp_path_updates_the_binding() -> None:
    link = Link()
    link.register()
    link.now = 42.0
    link.via = VIA_UDP
    link.register(COA2)
    assert link.mn.state == "registered"
    binding = link.ha.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.via) == (COA2, VIA_UDP)
    added, updated = link.ha_events
    assert isinstance(added, BindingAdded)
    assert isinstance(updated, BindingUpdated)
    assert updated.previous.care_of_address == COA


def test_when_the_ha_goes_silent_the_mn_loses_the_binding_and_keeps_trying() -> None:
    link = Link()
    link.register()
    link.to_ha = lambda _: False
    link.run_until(600.0)
    assert link.mn.state == "registering"
    assert link.ha_events[-1] == BindingRemoved(HOA, "expired")
    link.to_ha = lambda _: True
    assert link.step() == 607.0
    assert link.mn.state == "registered"
    assert isinstance(link.ha_events[-1], BindingAdded)
