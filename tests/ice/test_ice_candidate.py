"""Candidates, priorities, foundations and pair priorities against RFC 8445 (and aioice)."""

from __future__ import annotations

import pytest
from aioice import candidate as aio_candidate
from aioice import ice as aio_ice
from hypothesis import given, settings
from hypothesis import strategies as st

from ice.candidate import (
    TYPE_PREFERENCE,
    Candidate,
    CandidateType,
    can_pair,
    candidate_priority,
    foundation,
    local_preference,
    pair_priority,
    transport_address,
)
from ice.score import PATH_KIND_RANK, PathScore, is_better, path_score

V6 = ("2001:db8::1", 5000)
V4 = ("192.0.2.1", 5000)


# -- candidate priority (RFC 8445 §5.1.2.1) ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # 2^24 * type pref + 2^8 * 65535 + (256 - 1)
        ("host", 126 * 2**24 + 65535 * 2**8 + 255),  # 2130706431
        ("prflx", 110 * 2**24 + 65535 * 2**8 + 255),  # 1862270975 (reference/ice.md §1.4)
        ("srflx", 100 * 2**24 + 65535 * 2**8 + 255),  # 1694498815
        ("relay", 0 * 2**24 + 65535 * 2**8 + 255),  # 16777215
    ],
)
def test_candidate_priority_matches_rfc_formula(kind: str, expected: int) -> None:
    assert candidate_priority(kind) == expected
    assert candidate_priority(kind) == aio_candidate.candidate_priority(1, kind)


def test_type_preferences_put_direct_paths_before_the_t_path() -> None:
    prefs = TYPE_PREFERENCE
    assert prefs[CandidateType.HOST] == 126
    assert prefs[CandidateType.PRFLX] == 110
    assert prefs[CandidateType.SRFLX] == 100
    assert prefs[CandidateType.RELAY] == 0
    assert candidate_priority("relay") < candidate_priority("srflx", 0)


def test_component_and_local_preference_fields() -> None:
    assert candidate_priority("host", 0, 256) == 126 * 2**24
    assert candidate_priority("host", 1, 2) == 126 * 2**24 + 256 + 254
    with pytest.raises(ValueError):
        candidate_priority("host", 65536)
    with pytest.raises(ValueError):
        candidate_priority("host", 0, 0)
    with pytest.raises(ValueError):
        candidate_priority("bogus")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.sampled_from(["host", "srflx", "prflx", "relay"]),
    st.integers(0, 65535),
    st.integers(1, 256),
)
def test_candidate_priority_agrees_with_aioice(kind: str, pref: int, component: int) -> None:
    assert candidate_priority(kind, pref, component) == aio_candidate.candidate_priority(
        component, kind, pref
    )


def test_local_preference_per_interface_and_family() -> None:
    assert local_preference() == 65535
    assert local_preference(0, ipv6=False) == 65535 - 128
    assert local_preference(1) == 65535 - 256
    assert local_preference(255, ipv6=False) == 65535 - 255 * 256 - 128 >= 0
    ranks = [local_preference(r, ipv6=v6) for r in range(3) for v6 in (True, False)]
    assert ranks == sorted(ranks, reverse=True)
    with pytest.raises(ValueError):
        local_preference(256)


# -- pair priority (RFC 8445 §6.1.2.3) --------------------------------------------------------


def test_pair_priority_rfc_values() -> None:
    g, d = candidate_priority("host"), candidate_priority("srflx")
    assert pair_priority(g, d) == 2**32 * d + 2 * g + 1
    assert pair_priority(d, g) == 2**32 * d + 2 * g + 0
    assert pair_priority(g, g) == 2**32 * g + 2 * g
    assert pair_priority(2130706431, 2130706431) == 9151314442783293438


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.booleans())
def test_pair_priority_agrees_with_aioice(ours: int, theirs: int, controlling: bool) -> None:
    local = aio_candidate.Candidate("1", 1, "udp", ours, "2001:db8::1", 1, "host")
    remote = aio_candidate.Candidate("2", 1, "udp", theirs, "2001:db8::2", 2, "host")
    g, d = (ours, theirs) if controlling else (theirs, ours)
    assert pair_priority(g, d) == aio_ice.candidate_pair_priority(local, remote, controlling)


# -- foundations (RFC 8445 §5.1.1.3) -----------------------------------------------------------


def test_foundation_same_type_base_and_server_only() -> None:
    a = foundation("srflx", "192.0.2.1", "198.51.100.1")
    assert a == foundation("srflx", "192.0.2.1", "198.51.100.1")
    assert a != foundation("srflx", "192.0.2.2", "198.51.100.1")
    assert a != foundation("srflx", "192.0.2.1", "198.51.100.2")
    assert a != foundation("host", "192.0.2.1", "198.51.100.1")
    assert foundation("host", "2001:db8::1") == foundation("host", "2001:0db8:0::1")
    assert 1 <= len(a) <= 32 and a.isalnum()


# -- candidates --------------------------------------------------------------------------------


def test_candidate_constructors() -> None:
    host = Candidate.host(V6, local_pref=local_preference(1))
    assert host.kind is CandidateType.HOST and host.base == host.address == V6
    assert host.priority == candidate_priority("host", 65535 - 256)
    srflx = Candidate.server_reflexive(("203.0.113.9", 40000), V4, server_ip="198.51.100.1")
    assert srflx.base == V4 and srflx.priority == candidate_priority("srflx")
    relay = Candidate.relayed(("2001:db8:a::10", 4191), V6, server_ip="2001:db8:ha::1")
    assert relay.kind is CandidateType.RELAY and relay.priority == candidate_priority("relay")


def test_candidate_addresses_are_canonical_and_validated() -> None:
    c = Candidate.host(("2001:0DB8:0::1", 1))
    assert c.address == ("2001:db8::1", 1)
    assert transport_address("::ffff:1.2.3.4", 9)[0] == "::ffff:102:304"
    with pytest.raises(ValueError):
        Candidate.host(("not-an-ip", 1))
    with pytest.raises(ValueError):
        Candidate.host(("2001:db8::1", 70000))
    with pytest.raises(ValueError):
        Candidate(CandidateType.HOST, V6, V6, 0, "f")
    with pytest.raises(ValueError):
        Candidate(CandidateType.HOST, V6, V6, 1, "")


def test_pairing_needs_the_same_family_and_component() -> None:
    assert can_pair(Candidate.host(V6), Candidate.host(("2001:db8::2", 1)))
    assert not can_pair(Candidate.host(V6), Candidate.host(V4))


# -- score -------------------------------------------------------------------------------------


def test_path_score_orders_kind_then_rtt() -> None:
    assert list(PATH_KIND_RANK) == ["D-native", "D-udp", "T-native", "T-udp"]
    assert path_score("D-udp", 0.200) < path_score("T-native", 0.001)
    assert path_score("D-udp", 0.010) < path_score("D-udp", 0.020) < path_score("D-udp", None)
    assert path_score("D-udp", None) == PathScore(1)


def test_hysteresis_margin() -> None:
    kw = {"ratio": 0.2, "minimum_s": 0.010}
    cur = path_score("D-udp", 0.030)
    assert not is_better(path_score("D-udp", 0.021), cur, **kw)  # 9 ms better: not enough
    assert is_better(path_score("D-udp", 0.019), cur, **kw)
    slow = path_score("D-udp", 0.200)
    assert not is_better(path_score("D-udp", 0.161), slow, **kw)  # 20 % of 200 ms = 40 ms
    assert is_better(path_score("D-udp", 0.159), slow, **kw)
    assert is_better(path_score("D-native", 0.500), cur, **kw)  # a better kind always wins
    assert not is_better(path_score("T-udp", 0.001), cur, **kw)
    assert is_better(path_score("D-udp", 0.5), path_score("D-udp", None), **kw)
    assert not is_better(path_score("D-udp", None), path_score("D-udp", None), **kw)
