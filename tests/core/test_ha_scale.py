"""The home agent's control plane at scale (issue 13): structure, never timing (the machine that
runs the tests is shared, so a rate proves nothing here; mipnode/benchcontrol.py measures).

Checked: a BU is decoded exactly once however it ends (accepted, refused, replayed, forged);
1,000 mobile nodes, each with its own MN-HA key and SPI, register, refresh and are refused on
replay and on an old sequence number, every answer authenticated with that node's key; a
binding costs at most 1 KiB (tracemalloc, deterministic enough to assert); the heap of
deadlines does not grow with refreshes; the benchmark answers with its documented keys."""

from __future__ import annotations

import math
from collections.abc import Callable
from ipaddress import IPv6Address

import pytest
from coretest_kit import HA, HOA, KEY, PREFIX, build_bu
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode import benchcontrol
from mipnode.core.binding_cache import COMPACT_SLACK, Deadlines
from mipnode.core.ha import HaCoreConfig, SecurityAssociation
from mipnode.core.home_agent import HaForwardingChanged, HomeAgentNode, SendVia
from mipnode.core.types import Via
from mipnode.wire import mh
from mipnode.wire.auth4285 import (
    encode_mh_authenticated,
    mn_ha_authenticator,
    ntp_from_unix,
    verify_mh_authenticated,
)
from mipnode.wire.ipv6 import NH_MH
from mipnode.wire.mh import (
    BindingAck,
    BindingRefreshAdvice,
    ExperimentalOption,
    MesgId,
    MnHaAuth,
    MobilityOption,
    decode_mh_untrusted,
    encode_mh_without_checksum,
    fill_mh_checksum,
)
from mipnode.wire.packets import ipv6_packet

T0 = 1000.0
N = 1000


def hoa_of(i: int) -> IPv6Address:
    return IPv6Address(int(PREFIX.network_address) + 0x1_0000 + i)


def coa_of(i: int) -> IPv6Address:
    return IPv6Address(f"2001:db8:aa::{i + 1:x}")


def key_of(i: int) -> bytes:
    return i.to_bytes(4, "big") * 4


def spi_of(i: int) -> int:
    return 0x1000 + i


def via_of(i: int) -> Via:
    return Via("T-udp", (f"192.0.2.{i % 250 + 1}", 40000 + i))


def make_node(n: int) -> HomeAgentNode:
    """An HA node as the daemon configures it, with one SA (own key, own SPI) per MN."""
    sas = tuple(SecurityAssociation(spi_of(i), key_of(i), hoa_of(i)) for i in range(n))
    config = HaCoreConfig(HA, PREFIX, sas, refresh_advice_fraction=0.75, refresh_requests=True)
    return HomeAgentNode(config, wall_offset=0.0)


def tunnelled_bu(i: int, sequence: int, at: float, *, key: bytes | None = None) -> bytes:
    """MN ``i``'s home BU (coretest_kit.build_bu) in the inner packet the tunnel delivers."""
    data = build_bu(
        sequence,
        ntp_from_unix(at),
        hoa=hoa_of(i),
        coa=coa_of(i),
        key=key_of(i) if key is None else key,
        spi=spi_of(i),
    )
    return ipv6_packet(hoa_of(i), HA, NH_MH, data)


def answer(node: HomeAgentNode, now: float, i: int) -> BindingAck:
    """The one BA the node sent MN ``i``: on its via, authenticated with its key."""
    (out,) = node.datagrams_to_send(now)
    assert isinstance(out, SendVia) and out.via == via_of(i)
    assert out.packet[8:24] == HA.packed and out.packet[24:40] == hoa_of(i).packed
    data = out.packet[40:]
    assert verify_mh_authenticated(data, key=key_of(i), coa=coa_of(i), hoa=hoa_of(i))
    ba = decode_mh_untrusted(data, HA, hoa_of(i))
    assert isinstance(ba, BindingAck)
    return ba


def drain(node: HomeAgentNode) -> list[HaForwardingChanged]:
    out = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


# -- decoded once -------------------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The MH type of every Mobility Header body decoded from now on (every decoder of
    mipnode/wire/mh.py goes through ``_decode_body``, whoever calls it)."""
    seen: list[int] = []
    real: Callable[[bytes], object] = mh._decode_body

    def counting(data: bytes) -> object:
        seen.append(data[2])
        return real(data)

    monkeypatch.setattr(mh, "_decode_body", counting)
    return seen


def test_a_bu_is_decoded_exactly_once_whatever_becomes_of_it(decodes: list[int]) -> None:
    """Twice over: the first time a BA of a new shape is signed, its template is made (one BA
    decoded, wire/auth4285.py); from then on a BU is the one thing decoded."""
    node = make_node(4)
    for mn in (0, 1):
        forger = mn + 2  # signs with mn's key under its own SPI
        cases = [
            ("registration", tunnelled_bu(mn, 1, T0), T0, mn, "registrations"),
            ("refresh", tunnelled_bu(mn, 2, T0 + 1), T0 + 1, mn, "refreshes"),
            ("replay", tunnelled_bu(mn, 2, T0 + 1), T0 + 2, mn, "rejected_144"),
            ("old sequence", tunnelled_bu(mn, 1, T0 + 3), T0 + 3, mn, "rejected_135"),
            (
                "wrong key",
                tunnelled_bu(forger, 1, T0 + 4, key=key_of(mn)),
                T0 + 4,
                forger,
                "bad_auth",
            ),
        ]
        for name, packet, now, sender, counter in cases:
            before = node.statistics().get(counter, 0)
            decodes.clear()
            node.receive_tunnelled(now, packet, via_of(sender))
            assert node.statistics().get(counter, 0) == before + 1, name
            assert decodes.count(mh.MhType.BU) == 1, name
            if mn == 1:
                assert decodes == [mh.MhType.BU], name
            node.datagrams_to_send(now)
            drain(node)


# -- the BA the home agent signs per BU ------------------------------------------------------------


def generic_authenticated(msg: BindingAck, spi: int, coa: IPv6Address) -> bytes:
    """What encode_mh_authenticated returned before BA templates: the generic encoder."""
    raw = encode_mh_without_checksum(msg, append=(MnHaAuth(spi, bytes(12)),))
    mh_data = raw[:-12]
    return fill_mh_checksum(mh_data + mn_ha_authenticator(KEY, coa, HOA, mh_data), HA, HOA)


ba_options = st.lists(
    st.one_of(
        st.builds(BindingRefreshAdvice, st.integers(0, 0x1_0000)),
        st.builds(MesgId, st.integers(0, 1 << 64)),
        st.builds(ExperimentalOption, st.binary(max_size=60)),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(0, 256),
    sequence=st.integers(0, 0xFFFF),
    lifetime=st.integers(0, 0xFFFF),
    key_mgmt=st.booleans(),
    options=ba_options,
    spi=st.integers(0, 1 << 32),
)
def test_a_ba_from_its_template_is_the_generic_encoding(
    status: int,
    sequence: int,
    lifetime: int,
    key_mgmt: bool,
    options: list[MobilityOption],
    spi: int,
) -> None:
    ba = BindingAck(status, sequence, lifetime, key_mgmt, tuple(options))
    for coa in (HOA, coa_of(0)):
        try:
            want: bytes | type[ValueError] = generic_authenticated(ba, spi, coa)
        except ValueError:
            want = ValueError
        try:
            got: bytes | type[ValueError] = encode_mh_authenticated(
                ba, HA, HOA, spi=spi, key=KEY, coa=coa, hoa=HOA
            )
        except ValueError:
            got = ValueError
        assert got == want


# -- 1,000 mobile nodes -------------------------------------------------------------------------


def test_a_thousand_mobile_nodes_register_refresh_and_are_refused_on_replay() -> None:
    node = make_node(N)
    for i in range(N):
        node.receive_tunnelled(T0, tunnelled_bu(i, 7, T0), via_of(i))
        ba = answer(node, T0, i)
        assert (ba.status, ba.sequence, ba.lifetime) == (0, 7, 150)
        (event,) = drain(node)
        assert (event.home_address, event.via, event.added) == (hoa_of(i), via_of(i), True)
    bindings = {b.home_address: b for b in node.core.bindings()}
    assert len(bindings) == N
    assert all(bindings[hoa_of(i)].care_of_address == coa_of(i) for i in range(N))

    refresh_at = T0 + 60
    refreshes = [tunnelled_bu(i, 8, refresh_at) for i in range(N)]
    for i in reversed(range(N)):  # another order than the registrations'
        node.receive_tunnelled(refresh_at, refreshes[i], via_of(i))
        ba = answer(node, refresh_at, i)
        assert (ba.status, ba.sequence) == (0, 8)
        (event,) = drain(node)
        assert (event.home_address, event.added) == (hoa_of(i), False)
        binding = node.core.binding_for(hoa_of(i))
        assert binding is not None and binding.registered_at == refresh_at
    for i in range(0, N, 7):  # replayed refreshes: authentic, and refused by the timestamp
        node.receive_tunnelled(refresh_at + 1, refreshes[i], via_of(i))
        assert answer(node, refresh_at + 1, i).status == 144
    for i in range(3, N, 11):  # a fresh timestamp on an old sequence number: RFC 6275 §9.5.1
        node.receive_tunnelled(refresh_at + 2, tunnelled_bu(i, 7, refresh_at + 2), via_of(i))
        ba = answer(node, refresh_at + 2, i)
        assert (ba.status, ba.sequence) == (135, 8)
    assert drain(node) == []

    stats = node.statistics()
    assert (stats["registrations"], stats["refreshes"], stats["bindings"]) == (N, N, N)
    assert stats["rejected_144"] == len(range(0, N, 7))
    assert stats["rejected_135"] == len(range(3, N, 11))
    for i in (0, N // 2, N - 1):
        b = node.core.binding_for(hoa_of(i))
        assert b is not None
        assert (b.sequence, b.expires_at, b.via) == (8, refresh_at + 600, via_of(i))


def test_the_core_events_carry_the_bindings_the_daemon_logs() -> None:
    node = make_node(1)
    node.receive_tunnelled(T0, tunnelled_bu(0, 1, T0), via_of(0))
    node.receive_tunnelled(T0 + 1, tunnelled_bu(0, 2, T0 + 1), via_of(0))
    core_events = []
    while (event := node.core.next_event()) is not None:  # nothing left: the node took them
        core_events.append(event)
    assert core_events == []
    added, updated = drain(node)
    assert (
        str(added)
        == added.text
        == (f"binding hoa={hoa_of(0)} coa={coa_of(0)} path=T-udp lifetime=600s seq=1")
    )
    assert updated.text.endswith("seq=2")


# -- memory -------------------------------------------------------------------------------------


def test_a_binding_costs_at_most_a_kibibyte() -> None:
    n = 2000
    packets = [benchcontrol.binding_update(i, 1, benchcontrol.T0) for i in range(n)]
    per_binding = benchcontrol.bytes_per_binding(n, packets)
    assert 100 < per_binding <= 1024


def test_refreshes_leave_a_bounded_number_of_stale_deadlines() -> None:
    deadlines: Deadlines[int] = Deadlines()
    keys = range(500)
    for round_ in range(10):
        for key in reversed(keys) if round_ % 2 else keys:
            deadlines.schedule(key, 100.0 * (round_ + 1) + key)
        assert len(deadlines._heap) <= 2 * len(keys) + COMPACT_SLACK + 1
    assert len(deadlines) == len(keys)
    assert list(deadlines.due(10_000.0)) == sorted(keys)  # the live ones, in order


# -- the benchmark ------------------------------------------------------------------------------


def test_control_plane_answers_with_its_documented_keys() -> None:
    result = benchcontrol.control_plane(200, 5.0)
    assert set(result) == {
        "mns",
        "bu_per_s",
        "refresh_per_s",
        "replay_reject_per_s",
        "bytes_per_binding",
    }
    assert result["mns"] == 200
    for name in ("bu_per_s", "refresh_per_s", "replay_reject_per_s"):
        assert math.isfinite(result[name]) and result[name] > 0, name
    assert 100 < result["bytes_per_binding"] <= 1024


def test_the_benchmark_feeds_genuine_bus() -> None:
    """Its BUs are what coretest_kit builds: authenticated with each MN's own key and SPI."""
    inner = benchcontrol.binding_update(5, 3, benchcontrol.T0)
    hoa, coa = benchcontrol.mn_home_address(5), benchcontrol.mn_care_of(5)
    assert inner[8:24] == hoa.packed and inner[24:40] == benchcontrol.HA.packed
    bu = decode_mh_untrusted(inner[40:], hoa, benchcontrol.HA)
    assert isinstance(bu, mh.BindingUpdate) and (bu.sequence, bu.home) == (3, True)
    assert any(isinstance(o, MesgId) for o in bu.options)
    key = benchcontrol.mn_key(5)
    assert key != benchcontrol.mn_key(6)
    assert verify_mh_authenticated(inner[40:], key=key, coa=coa, hoa=hoa)
    assert not verify_mh_authenticated(inner[40:], key=benchcontrol.mn_key(6), coa=coa, hoa=hoa)
