"""The verdicts of `mipnode netcheck` (mipnode/core/netcheck.py): NAT behaviour from where the
home agent saw one socket, which probe a daemon could use, the path it would pick."""

from __future__ import annotations

from dataclasses import replace

from ice import stun
from mipnode.core.netcheck import (
    NAT_APDM,
    NAT_EIM,
    NAT_NONE,
    NAT_UNKNOWN,
    Probe,
    nat_behaviour,
    pmtu_sizes,
    predict,
    report,
    usable,
)
from mipnode.drivers.netcheck import padded_request

HA = "2001:db8:1::1"
HA4 = "203.0.113.2"
ME6 = ("2001:db8:a::2", 40000)
ME4 = ("10.0.4.2", 40000)


def udp(port: int, mapped: tuple[str, int] | None, rtt: float | None = 1.0, v4: bool = False):
    return Probe(
        "T-udp",
        "IPv4" if v4 else "IPv6",
        (HA4 if v4 else HA, port),
        ME4 if v4 else ME6,
        sent=1,
        rtt_ms=rtt if mapped else None,
        mapped=mapped,
        failure=None if mapped else "no answer",
    )


def native(mapped: str | None, path: str = "T-native", rtt: float = 2.0) -> Probe:
    return Probe(
        path,
        "IPv6",
        (HA, 0),
        (ME6[0], 0),
        sent=1,
        rtt_ms=rtt if mapped else None,
        mapped=(mapped, 0) if mapped and path == "T-native" else None,
        failure=None if mapped else "no answer",
    )


def test_no_nat_when_the_home_agent_sees_our_own_address() -> None:
    assert nat_behaviour((udp(4191, ME6), udp(443, ME6)), "IPv6") == NAT_NONE


def test_one_mapping_for_every_endpoint_is_endpoint_independent() -> None:
    seen = ("198.51.100.2", 1111)
    probes = (udp(4191, seen, v4=True), udp(443, seen, v4=True))
    assert nat_behaviour(probes, "IPv4") == NAT_EIM
    assert "address-dependent" in NAT_EIM  # one HA address cannot tell the two apart
    # An answer without XOR-MAPPED-ADDRESS says nothing about a NAT.
    bare = replace(udp(443, seen, v4=True), mapped=None)
    assert nat_behaviour((udp(4191, seen, v4=True), bare), "IPv4") == NAT_UNKNOWN


def test_a_mapping_per_endpoint_is_address_and_port_dependent() -> None:
    probes = (udp(4191, ("198.51.100.2", 1111), v4=True), udp(443, ("198.51.100.2", 2222), v4=True))
    assert nat_behaviour(probes, "IPv4") == NAT_APDM


def test_one_answering_endpoint_sees_a_nat_but_not_its_behaviour() -> None:
    probes = (udp(4191, ("198.51.100.2", 1111), v4=True), udp(443, None, v4=True))
    assert nat_behaviour(probes, "IPv4") == NAT_UNKNOWN
    assert nat_behaviour(probes, "IPv6") is None  # nothing of that family answered


def test_t_native_through_nat66_is_answered_but_not_usable() -> None:
    probes = (native("2001:db8:f1::2"), udp(4191, ("2001:db8:f1::2", 40000)))
    ok, why = usable(probes[0], probes, "none")
    assert not ok and "through NAT66 (seen as 2001:db8:f1::2)" in why
    picked, _ = predict(probes, "none")
    assert picked is probes[1]


def test_under_protection_t_native_needs_esp_too() -> None:
    probes = (native(ME6[0]), native(None, "T-native-esp"), udp(4191, ME6))
    ok, why = usable(probes[0], probes, "esp")
    assert not ok and "ESP (protocol 50) got no answer" in why
    assert predict(probes, "esp")[0] is probes[2]
    # Without protection the same answers make T-native the pick: a better kind wins.
    assert predict(probes, "none")[0] is probes[0]
    sealed = (native(ME6[0]), native(ME6[0], "T-native-esp"), udp(4191, ME6))
    picked, why = predict(sealed, "esp")
    assert picked is sealed[0] and "prefers it to T-udp" in why


def test_the_first_pair_is_kept_unless_another_is_faster_beyond_the_hysteresis() -> None:
    """As the daemon's home path: checks go in order, the first answer is selected, a later
    one replaces it only when faster by more than max(10 ms, 20 %)."""
    first, bit_faster = udp(4191, ME6, rtt=3.0), udp(443, ME6, rtt=0.5)
    assert predict((first, bit_faster), "none")[0] is first
    slow, fast = udp(4191, ME6, rtt=30.0), udp(443, ME6, rtt=0.5)
    assert predict((slow, fast), "none")[0] is fast
    left_out = replace(native(ME6[0]), allowed=False)
    ok, why = usable(left_out, (left_out, slow), "none")
    assert not ok and "leave T-native out" in why
    assert predict((left_out, slow), "none")[0] is slow


def test_nothing_answered_means_no_path_and_says_so() -> None:
    probes = (native(None), udp(4191, None))
    picked, why = predict(probes, "none")
    assert picked is None and "answered none" in why
    out = report(
        home_agent=HA, home_agent_ipv4=None, protection="none", probes=probes, path_mtu=None
    )
    data = out.to_json()
    assert data["predicted"] is None and data["nat"] == {"IPv6": None, "IPv4": None}
    assert data["packets_sent"] == 2
    assert [p["verdict"] for p in data["probes"]] == ["no answer", "no answer"]


def test_path_mtu_probes_start_at_the_link_and_never_go_below_the_ipv6_minimum() -> None:
    assert pmtu_sizes(1500) == [1500, 1492, 1480, 1420, 1400, 1280]
    assert pmtu_sizes(1280) == [1280]
    assert pmtu_sizes(1450) == [1450, 1420, 1400, 1280]


def test_a_padded_probe_is_a_binding_request_of_the_size_asked() -> None:
    for octets in (1452, 1232, 1444):
        data = padded_request(b"x" * 12, octets)
        assert len(data) == octets
        msg = stun.parse_stun_untrusted(data)  # the home agent's own parser takes it
        assert msg.message_class == stun.Class.REQUEST and msg.transaction_id == b"x" * 12
    plain = stun.binding_request(b"x" * 12)
    assert padded_request(b"x" * 12, 20) == plain  # never below the plain request
