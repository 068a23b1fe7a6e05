"""D-native orchestration (DNativePaths) against a real correspondent core, on virtual time.

The HoTI and deletions go "through the home agent" (SendHome: here straight to the CN), CoTI,
BUs and probes natively (SendNative, with a Home Address option where RFC 6275 puts one); the
CN core's answers come back the way the MN daemon's tap and tunnel would hand them over.
"""

from __future__ import annotations

import random
from ipaddress import IPv6Address

import pytest
from nodenet import HA6, HOA, NodeNet

from mipnode.core.cn import CnCoreConfig, CorrespondentCore
from mipnode.core.d_native import (
    DEAD_AFTER_S,
    NEVER_S,
    PROBE_INTERVAL_S,
    PROBE_TRIES,
    RETRY_S,
    DNativeChanged,
    DNativeEnded,
    DNativePaths,
)
from mipnode.core.mobile_node import MobileNodeConfig
from mipnode.core.transmit import SendHome, SendNative
from mipnode.wire.ipv6 import NH_DSTOPTS, NH_ICMPV6, NH_MH
from mipnode.wire.packets import (
    ICMPV6_PARAMETER_PROBLEM,
    ipv6_packet,
)
from tunnels.ro import remove_home_address_option_untrusted

CN = IPv6Address("2001:db8:cccc::1")
COA = IPv6Address("2001:db8:1::10")
T0 = 50.0


class World:
    """DNativePaths and a CorrespondentCore wired together; ``answer_probes`` is the CN's
    kernel answering echo requests (False: the MN's firewall drops the RH2 replies)."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.now = T0
        self.mn = DNativePaths(HOA, HA6, random_bytes=rng.randbytes, initial_sequence=7)
        self.cn = CorrespondentCore(
            CnCoreConfig(addresses=(CN,)), kcn=rng.randbytes(20), random_bytes=rng.randbytes
        )
        self.mn.set_care_of(self.now, COA)
        self.answer_probes = True
        self.events: list[object] = []
        self.times: list[float] = []
        self.sent_home = 0

    def step(self, until: float) -> None:
        while True:
            self._deliver()
            timers = [t for t in (self.mn.get_timer(), self.cn.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                self.now = until
                return
            self.now = max(self.now, min(timers))
            self.mn.handle_timer(self.now)
            self.cn.handle_timer(self.now)

    def _deliver(self) -> None:
        for _ in range(100):
            moved = False
            for out in self.mn.transmissions():
                moved = True
                self._to_cn(out)
            for mh in self.cn.datagrams_to_send(self.now):
                moved = True
                # BA by RH2 to the CoA, HoT to the HoA, CoT to the CoA: the MN's receive paths.
                dst = HOA if mh.care_of is not None else mh.dst
                self.mn.receive_mh(self.now, mh.data, CN, dst)
            while (e := self.mn.next_event()) is not None:
                self.events.append(e)
                self.times.append(self.now)
            if not moved:
                return

    def _to_cn(self, out: object) -> None:
        if isinstance(out, SendHome):
            self.sent_home += 1
            pkt = out.packet
            self.cn.receive_datagram(self.now, pkt[40:], IPv6Address(pkt[8:24]), CN)
            return
        assert isinstance(out, SendNative)
        pkt = out.packet
        if pkt[6] == NH_DSTOPTS:
            coa, hoa, inner = remove_home_address_option_untrusted(pkt)
            if inner[6] == NH_MH:
                self.cn.receive_datagram(
                    self.now, inner[40:], IPv6Address(coa), CN, home_address=IPv6Address(hoa)
                )
            elif inner[6] == NH_ICMPV6 and self.answer_probes:
                self.mn.receive_probe_reply(self.now, CN, inner[48:64])
        elif pkt[6] == NH_MH:
            self.cn.receive_datagram(self.now, pkt[40:], IPv6Address(pkt[8:24]), CN)

    def changes(self) -> list[DNativeChanged]:
        return [e for e in self.events if isinstance(e, DNativeChanged)]

    def ended(self) -> list[DNativeEnded]:
        return [e for e in self.events if isinstance(e, DNativeEnded)]


def test_a_binding_and_an_answered_probe_make_d_native() -> None:
    w = World()
    assert w.mn.want(T0, CN, registered=True)
    w.step(T0 + 3)
    (up,) = w.changes()
    assert up.up and up.cn == CN and "probe answered" in up.reason
    assert w.mn.ready() == [CN]


def test_an_unanswered_probe_deletes_the_binding_and_backs_off() -> None:
    w = World()
    w.answer_probes = False
    w.mn.want(T0, CN, registered=True)
    w.step(T0 + 5)
    assert w.changes() == []
    (end,) = w.ended()
    assert end.reason == "probe unanswered" and end.retry_s == RETRY_S
    assert w.mn.ready() == [] and w.mn.state(CN) in (None, "deleting")
    assert w.now - T0 >= PROBE_TRIES * PROBE_INTERVAL_S


def test_a_silent_d_native_path_falls_back_within_3_s() -> None:
    w = World()
    w.mn.want(T0, CN, registered=True)
    w.step(T0 + 3)
    assert w.mn.ready() == [CN]
    w.answer_probes = False
    silent_from = w.now
    w.step(w.now + 5)
    down = [
        t
        for t, e in zip(w.times, w.events, strict=True)
        if isinstance(e, DNativeChanged) and not e.up
    ]
    assert down and w.mn.ready() == []
    assert DEAD_AFTER_S <= down[0] - silent_from <= 3.0  # DESIGN §4: back within 3 s
    end = w.ended()[0]
    assert end.reason == "D-native silent"
    assert end.retry_s < RETRY_S  # the CN may just have lost us: try again soon


def test_a_parameter_problem_for_the_mobility_header_ends_route_optimisation_for_good() -> None:
    """RFC 6275 §11.3.5: a plain host answers our HoTI with ICMPv6 Parameter Problem, code 1:
    no more tries (not a back-off that retries forever)."""
    w = World()
    w.mn.want(T0, CN, registered=True)
    w.mn.receive_mh_refused(T0 + 0.1, CN)
    w.step(T0 + 1)
    (end,) = w.ended()
    assert end.retry_s == NEVER_S and end.quiet


def test_a_parameter_problem_from_a_correspondent_stops_its_direct_paths_in_the_node_core() -> None:
    net = NodeNet(
        mn_config=MobileNodeConfig(
            home_address=HOA, home_agent=HA6, spi=300, key=b"k" * 20, route_optimization=True
        )
    )
    net.run_for(3)
    net.mn.new_destination(net.now, CN.packed)
    net.run_for(0.5)
    assert net.mn.direct is not None and CN in net.mn.direct.peers
    # The CN's answer to our HoTI (HoA -> CN, MH): Parameter Problem code 1, pointer 6.
    hoti = ipv6_packet(HOA, CN, NH_MH, bytes(16))
    icmp = bytes([ICMPV6_PARAMETER_PROBLEM, 1, 0, 0]) + (6).to_bytes(4, "big") + hoti
    error = ipv6_packet(CN, HOA, NH_ICMPV6, icmp)
    pair = net.mn.home_pair
    assert pair is not None
    net.mn.receive_tunnelled(net.now, error, pair.local, pair.remote)
    assert CN not in net.mn.direct.peers
    assert net.mn.statistics()["correspondent_refused_mh"] == 1
    # And nothing is tried again with it: no new HoTI or offer however long traffic goes on.
    before = net.mn.statistics().get("d_native_ro_hoti_sent", 0)
    for _ in range(5):
        net.mn.traffic_seen(net.now, {CN.packed})
        net.run_for(60)
    assert net.mn.statistics().get("d_native_ro_hoti_sent", 0) == before
    assert CN not in net.mn.direct.peers


@pytest.mark.parametrize("code", [0, 2])
def test_other_parameter_problems_are_just_delivered(code: int) -> None:
    net = NodeNet()
    net.run_for(3)
    hoti = ipv6_packet(HOA, CN, NH_MH, bytes(16))
    icmp = bytes([ICMPV6_PARAMETER_PROBLEM, code, 0, 0]) + (6).to_bytes(4, "big") + hoti
    pair = net.mn.home_pair
    assert pair is not None
    before = len(net.mn_rx)
    net.mn.receive_tunnelled(
        net.now, ipv6_packet(CN, HOA, NH_ICMPV6, icmp), pair.local, pair.remote
    )
    net.run_for(0.1)
    assert len(net.mn_rx) == before + 1
