"""HomeAgentCore persistence: export_state / restore, and replay after a restart (testing.md C3)."""

from __future__ import annotations

import copy
import json
import logging
import os
import stat
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
import trio
from coretest_kit import (
    COA,
    HA,
    HOA,
    KEY,
    PREFIX,
    SPI,
    VIA,
    VIA_UDP,
    Stamper,
    build_bu,
    decode,
    events,
    make_ha,
    make_mn,
    single_ba,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mipnode.config import ConfigError, HaConfig, MobileNodeEntry, load_ha_config
from mipnode.core.ha import (
    MAX_DELETE_BCE_TIMEOUT,
    BindingAdded,
    BindingState,
    HaCoreConfig,
    HomeAgentCore,
    SecurityAssociation,
)
from mipnode.core.types import Via
from mipnode.drivers import persist
from mipnode.drivers.ha_daemon import HomeAgentDaemon
from mipnode.drivers.tun import Tun
from mipnode.wire.auth4285 import ntp_from_unix, verify_mh_authenticated
from mipnode.wire.mh import BindingRefreshRequest, decode_mh_untrusted

T0 = 1000.0
HOA2 = IPv6Address("2001:db8:1::101")
SPI2 = SPI + 1
KEY2 = bytes(range(32, 48))


def two_mn_config(**overrides: object) -> HaCoreConfig:
    fields: dict[str, object] = {
        "address": HA,
        "home_prefix": PREFIX,
        "security_associations": (
            SecurityAssociation(SPI, KEY, HOA),
            SecurityAssociation(SPI2, KEY2, HOA2),
        ),
    }
    fields.update(overrides)
    return HaCoreConfig(**fields)  # type: ignore[arg-type]


def bu(ha: HomeAgentCore, now: float, data: bytes, via: Via = VIA) -> int:
    ha.receive_datagram(now, data, HOA, HA, via)
    return int(single_ba(ha, now).status)


def through_disk(state: dict[str, Any]) -> Any:
    """What the driver writes and reads back."""
    return json.loads(json.dumps(state))


def registered_ha(stamp: Stamper, now: float = T0, seq: int = 7) -> tuple[HomeAgentCore, bytes]:
    """An HA with one 600 s binding; also the BU that made it (for replays)."""
    ha = make_ha()
    data = build_bu(seq, stamp(now), lifetime=150)
    assert bu(ha, now, data) == 0
    events(ha)
    return ha, data


def restarted(ha: HomeAgentCore, now: float, **overrides: object) -> HomeAgentCore:
    fresh = make_ha(**overrides)
    fresh.restore(now, through_disk(ha.export_state()))
    return fresh


# -- the snapshot -----------------------------------------------------------------------------


def test_the_snapshot_holds_bindings_sequences_deadlines_and_timestamps_but_no_key() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    state = ha.export_state()
    assert through_disk(state) == state  # JSON-able as it is
    assert state["version"] == 1
    assert state["bindings"] == [
        {
            "home_address": str(HOA),
            "care_of_address": str(COA),
            "via": {"kind": "T-native", "remote": [str(COA)]},
            "sequence": 7,
            "lifetime_s": 600,
            "registered_at": T0,
            "expires_at": T0 + 600,
            "state": "registered",
        }
    ]
    assert state["timestamps"] == [{"spi": SPI, "mesg_id": stamp.last}]
    text = json.dumps(state)
    assert KEY.hex() not in text and repr(KEY) not in text


def test_the_version_moves_with_every_change_the_snapshot_would_show() -> None:
    ha, stamp = make_ha(), Stamper()
    versions = [ha.state_version]

    def moved() -> bool:
        versions.append(ha.state_version)
        return versions[-1] > versions[-2]

    ha.receive_datagram(T0, b"garbage", HOA, HA, VIA)
    assert not moved()  # dropped before authentication: nothing changes
    assert bu(ha, T0, build_bu(7, stamp(T0))) == 0
    assert moved()
    assert bu(ha, T0 + 1, build_bu(6, stamp(T0 + 1))) == 135  # spends a timestamp
    assert moved()
    assert bu(ha, T0 + 2, build_bu(8, stamp(T0 + 2), lifetime=0, coa=HOA)) == 0
    assert moved()
    ha.handle_timer(T0 + 2 + MAX_DELETE_BCE_TIMEOUT)  # purge of the held entry
    assert moved()
    ha.handle_timer(T0 + 100)
    assert not moved()


# -- restore ------------------------------------------------------------------------------


def test_restore_brings_the_binding_back_with_its_absolute_deadline() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    now = T0 + 100
    fresh = make_ha()
    assert fresh.restore(now, through_disk(ha.export_state())) == 1
    binding = fresh.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.via, binding.sequence) == (COA, VIA, 7)
    assert (binding.lifetime_s, binding.registered_at, binding.expires_at) == (600, T0, T0 + 600)
    assert binding.state is BindingState.REGISTERED
    assert events(fresh) == [BindingAdded(binding)]
    assert fresh.statistics()["restored"] == 1
    assert fresh.export_state()["bindings"] == ha.export_state()["bindings"]


def test_restore_sends_a_brr_to_each_restored_mn_at_once_and_retries_a_bounded_number() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    now = T0 + 100
    fresh = restarted(ha, now)
    sent = [now]
    out = fresh.datagrams_to_send(now)
    while True:
        assert len(out) == 1
        (brr,) = out
        assert (brr.src, brr.dst, brr.via) == (HA, HOA, VIA)  # like a BA: inside the tunnel
        assert isinstance(decode(brr), BindingRefreshRequest)
        assert verify_mh_authenticated(brr.data, key=KEY, coa=COA, hoa=HOA)
        timer = fresh.get_timer()
        assert timer is not None
        if timer >= T0 + 600:
            break
        fresh.handle_timer(timer)
        out = fresh.datagrams_to_send(timer)
        sent.append(timer)
    assert sent == [now, now + 1, now + 3]
    assert timer == T0 + 600  # no near-expiry round unless refresh_requests is on


def test_with_refresh_requests_the_near_expiry_round_follows_the_restore_round() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    fresh = restarted(ha, T0 + 100, refresh_requests=True)
    assert len(fresh.datagrams_to_send(T0 + 100)) == 1
    times = []
    while (timer := fresh.get_timer()) is not None and timer < T0 + 600:
        fresh.handle_timer(timer)
        assert len(fresh.datagrams_to_send(timer)) == 1
        times.append(timer)
    assert times == [T0 + 101, T0 + 103, T0 + 570, T0 + 571, T0 + 573]


def test_a_bu_captured_before_the_restart_and_replayed_after_it_is_rejected() -> None:
    """testing.md C3: the replay comes within the 7 s window, so only the restored Mesg-ID
    (and sequence number) can stop it."""
    stamp = Stamper()
    ha, captured = registered_ha(stamp)
    fresh = restarted(ha, T0 + 2)
    fresh.datagrams_to_send(T0 + 2)
    before = fresh.binding_for(HOA)
    fresh.receive_datagram(T0 + 3, captured, HOA, HA, Via("T-udp", ("192.0.2.66", 1234)))
    ba = single_ba(fresh, T0 + 3)
    assert ba.status == 144
    assert fresh.binding_for(HOA) == before
    assert fresh.statistics()["timestamp_not_increasing"] == 1
    assert fresh.statistics()["rejected_144"] == 1


def test_without_persistence_the_same_replay_would_succeed() -> None:
    """The control for the test above: a fresh, empty HA accepts the captured BU."""
    stamp = Stamper()
    _, captured = registered_ha(stamp)
    empty = make_ha()
    empty.receive_datagram(T0 + 3, captured, HOA, HA, VIA_UDP)
    assert single_ba(empty, T0 + 3).status == 0
    binding = empty.binding_for(HOA)
    assert binding is not None and binding.via == VIA_UDP  # traffic redirected


def test_an_old_sequence_number_with_a_fresh_timestamp_gets_135_after_restore() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp, seq=700)
    fresh = restarted(ha, T0 + 50)
    fresh.datagrams_to_send(T0 + 50)
    fresh.receive_datagram(T0 + 51, build_bu(650, stamp(T0 + 51)), HOA, HA, VIA)
    ba = single_ba(fresh, T0 + 51)
    assert (ba.status, ba.sequence) == (135, 700)


def test_the_restored_mn_refreshes_on_the_brr_and_the_ha_accepts() -> None:
    ha, mn = make_ha(), make_mn(40_000)
    mn.register(T0, COA)
    for out in mn.datagrams_to_send(T0):
        ha.receive_datagram(T0, out.data, out.src, out.dst, VIA)
    for out in ha.datagrams_to_send(T0):
        mn.receive_datagram(T0, out.data, out.src, out.dst)
    assert mn.state == "registered"
    now = T0 + 20
    fresh = restarted(ha, now)
    (brr,) = fresh.datagrams_to_send(now)
    mn.receive_datagram(now, brr.data, brr.src, brr.dst)
    (refresh,) = mn.datagrams_to_send(now)
    fresh.receive_datagram(now, refresh.data, refresh.src, refresh.dst, VIA)
    assert single_ba(fresh, now).status == 0
    binding = fresh.binding_for(HOA)
    assert binding is not None and (binding.sequence, binding.expires_at) == (40_001, now + 600)
    assert fresh.get_timer() == now + 600  # the refresh ended the BRR round


def test_expired_entries_are_not_resurrected() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    fresh = make_ha()
    assert fresh.restore(T0 + 600, through_disk(ha.export_state())) == 0
    assert fresh.bindings(include_deleted=True) == []
    assert events(fresh) == [] and fresh.datagrams_to_send(T0 + 600) == []
    assert fresh.statistics()["restore_expired"] == 1
    assert fresh.get_timer() is None
    # The timestamp outlives the entry, as it does in memory.
    assert fresh.export_state()["timestamps"] == [{"spi": SPI, "mesg_id": stamp.last}]


def test_a_held_deleted_entry_comes_back_held_and_old_bus_still_fail_their_timestamp() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    assert bu(ha, T0 + 5, build_bu(8, stamp(T0 + 5), lifetime=0, coa=HOA)) == 0
    fresh = restarted(ha, T0 + 6)
    assert fresh.bindings() == [] and events(fresh) == []
    assert fresh.datagrams_to_send(T0 + 6) == []  # no BRR for a deleted entry
    (held,) = fresh.bindings(include_deleted=True)
    assert (held.state, held.sequence, held.expires_at) == (
        BindingState.DELETED,
        8,
        T0 + 5 + MAX_DELETE_BCE_TIMEOUT,
    )
    assert fresh.get_timer() == T0 + 5 + MAX_DELETE_BCE_TIMEOUT
    # The held entry is no binding (RFC 6275 §9.5.1: any sequence number), but a BU from
    # before the restart is refused by its RFC 4285 timestamp, which the snapshot kept.
    assert bu(fresh, T0 + 7, build_bu(9, ntp_from_unix(T0 + 4))) == 144
    assert bu(fresh, T0 + 7, build_bu(7, stamp(T0 + 7))) == 0
    # After a clock step back, the hold still ends at most 10 s after the restore.
    later = restarted(ha, T0 - 100)
    (held,) = later.bindings(include_deleted=True)
    assert (held.registered_at, held.expires_at) == (T0 - 100, T0 - 100 + MAX_DELETE_BCE_TIMEOUT)


def test_deadlines_never_exceed_what_the_current_configuration_grants() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    # The clock went back an hour, and the operator lowered max_lifetime_s to 100 s.
    now = T0 - 3600
    fresh = restarted(ha, now, max_lifetime_s=100)
    binding = fresh.binding_for(HOA)
    assert binding is not None
    assert (binding.lifetime_s, binding.expires_at, binding.registered_at) == (100, now + 100, now)


def test_entries_and_timestamps_of_unconfigured_mns_are_dropped() -> None:
    ha, stamps = HomeAgentCore(two_mn_config()), [Stamper(), Stamper()]
    for i, (hoa, spi, key) in enumerate(((HOA, SPI, KEY), (HOA2, SPI2, KEY2))):
        data = build_bu(7, stamps[i](T0), hoa=hoa, spi=spi, key=key)
        ha.receive_datagram(T0, data, hoa, HA, VIA)
    assert len(ha.bindings()) == 2
    fresh = make_ha()  # only the first MN is still configured
    assert fresh.restore(T0 + 1, through_disk(ha.export_state())) == 1
    assert [b.home_address for b in fresh.bindings()] == [HOA]
    assert [t["spi"] for t in fresh.export_state()["timestamps"]] == [SPI]
    assert fresh.statistics()["restore_unknown"] == 2


def test_restore_needs_a_fresh_core() -> None:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    with pytest.raises(RuntimeError):
        ha.restore(T0, ha.export_state())


def _good_state() -> dict[str, Any]:
    stamp = Stamper()
    ha, _ = registered_ha(stamp)
    return through_disk(ha.export_state())  # type: ignore[no-any-return]


def _broken(path: tuple[object, ...], value: object) -> dict[str, Any]:
    state = copy.deepcopy(_good_state())
    target: Any = state
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return state


_DELETE = object()
B0 = ("bindings", 0)


@pytest.mark.parametrize(
    "state",
    [
        None,
        [],
        "text",
        {},
        {"version": 2, "bindings": [], "timestamps": []},
        _broken(("version",), True),
        _broken(("bindings",), {}),
        _broken(("timestamps",), _DELETE),
        _broken(("bindings", 0), "not a record"),
        _broken((*B0, "home_address"), "2001:db8:1::zz"),
        _broken((*B0, "home_address"), 5),
        _broken((*B0, "care_of_address"), _DELETE),
        _broken((*B0, "state"), "zombie"),
        _broken((*B0, "sequence"), 65536),
        _broken((*B0, "sequence"), -1),
        _broken((*B0, "sequence"), True),
        _broken((*B0, "sequence"), 7.0),
        _broken((*B0, "lifetime_s"), 262144),
        _broken((*B0, "lifetime_s"), 0),  # a registration of no time
        _broken((*B0, "expires_at"), float("nan")),
        _broken((*B0, "expires_at"), float("inf")),
        _broken((*B0, "expires_at"), "tomorrow"),
        _broken((*B0, "registered_at"), None),
        _broken((*B0, "via"), "T-native"),
        _broken((*B0, "via", "kind"), "T-carrier-pigeon"),
        _broken((*B0, "via", "remote"), []),
        _broken((*B0, "via", "remote"), ["2001:db8:aa::5", 4191]),
        _broken((*B0, "via"), {"kind": "T-udp", "remote": ["192.0.2.7"]}),
        _broken((*B0, "via"), {"kind": "T-udp", "remote": ["192.0.2.7", 0]}),
        _broken((*B0, "via"), {"kind": "T-udp", "remote": ["192.0.2.7", "4191"]}),
        _broken(("timestamps", 0, "mesg_id"), 1 << 64),
        _broken(("timestamps", 0, "spi"), "4096"),
        _broken(("timestamps", 0), 5),
    ],
    ids=lambda s: json.dumps(s, default=str)[:60],
)
def test_a_malformed_snapshot_raises_value_error_and_changes_nothing(state: object) -> None:
    fresh = make_ha()
    with pytest.raises(ValueError):
        fresh.restore(T0, state)
    assert fresh.bindings(include_deleted=True) == []
    assert fresh.export_state() == make_ha().export_state()
    assert fresh.datagrams_to_send(T0) == [] and events(fresh) == []
    # ... and it can still restore a good one afterwards.
    assert fresh.restore(T0 + 2, _good_state()) == 1


def test_duplicates_in_a_snapshot_are_refused() -> None:
    state = _good_state()
    state["bindings"].append(copy.deepcopy(state["bindings"][0]))
    with pytest.raises(ValueError, match="twice"):
        make_ha().restore(T0, state)
    state = _good_state()
    state["timestamps"].append(copy.deepcopy(state["timestamps"][0]))
    with pytest.raises(ValueError, match="twice"):
        make_ha().restore(T0, state)


# -- round trip property ------------------------------------------------------------------

HOAS = [IPv6Address(f"2001:db8:1::{i:x}") for i in (0x100, 0x101, 0x102)]
ACTION = st.tuples(
    st.integers(0, len(HOAS) - 1),  # which MN
    st.integers(0, 65535),  # sequence
    st.sampled_from([0, 1, 10, 150]),  # lifetime units (0: de-registration)
    st.floats(0, 30),  # seconds since the previous action
    st.booleans(),  # T-udp
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ACTION, max_size=25), st.floats(0, 700))
def test_export_then_restore_gives_the_same_snapshot_minus_what_expired(
    actions: list[tuple[int, int, int, float, bool]], later: float
) -> None:
    sas = tuple(SecurityAssociation(0x1000 + i, KEY, hoa) for i, hoa in enumerate(HOAS))
    config = HaCoreConfig(HA, PREFIX, sas, max_lifetime_s=400)
    ha, stamps, now = HomeAgentCore(config), [Stamper() for _ in HOAS], T0
    for index, seq, units, gap, udp in actions:
        now += gap
        hoa = HOAS[index]
        data = build_bu(
            seq,
            stamps[index](now),
            lifetime=units,
            hoa=hoa,
            coa=hoa if units == 0 else COA,
            spi=0x1000 + index,
        )
        ha.receive_datagram(now, data, hoa, HA, VIA_UDP if udp else VIA)
    ha.handle_timer(now)
    restart = now + later
    fresh = HomeAgentCore(config)
    fresh.restore(restart, through_disk(ha.export_state()))
    ha.handle_timer(restart)  # what the old HA would hold now had it kept running
    assert fresh.export_state() == ha.export_state()
    assert {b.home_address for b in fresh.bindings()} == {b.home_address for b in ha.bindings()}
    assert len(fresh.datagrams_to_send(restart)) == len(ha.bindings())  # one BRR each


# -- the daemon's side: drivers/persist.py, HomeAgentDaemon._restore, [ha] state_dir ---------
# (No root needed: files in tmp_path, fake sockets.)


def test_an_atomic_write_leaves_one_0600_file_and_no_temporary(tmp_path: Path) -> None:
    path = persist.prepare_state_dir(str(tmp_path / "state"))
    assert stat.S_IMODE(os.stat(path.parent).st_mode) & 0o077 == 0
    persist.write_atomically(path, b"one")
    persist.write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [persist.STATE_FILE]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = persist.prepare_state_dir(str(tmp_path))
    persist.write_atomically(path, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persist.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        persist.write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [persist.STATE_FILE]


def test_start_up_clears_temporaries_a_crash_left_behind(tmp_path: Path) -> None:
    leftover = tmp_path / f".{persist.STATE_FILE}.abc123.tmp"
    leftover.write_bytes(b"half a snap")
    other = tmp_path / "unrelated.tmp"
    other.write_bytes(b"")
    path = persist.prepare_state_dir(str(tmp_path))
    assert not leftover.exists() and other.exists() and not path.exists()


def test_reading_back_what_was_written(tmp_path: Path) -> None:
    path = persist.prepare_state_dir(str(tmp_path))
    assert persist.read_state(path) is None  # no file yet: start empty, quietly
    state = _good_state()
    persist.write_atomically(path, persist.encode_state(state, T0))
    assert persist.read_state(path) == state
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["saved_at"]) == (persist.FORMAT, T0)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xff\xfe", b"[]", b'{"format": "something-else", "core": {}}', b'{"core": {}}'],
)
def test_unusable_files_raise_state_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / persist.STATE_FILE
    path.write_bytes(content)
    with pytest.raises(persist.StateFileError):
        persist.read_state(path)


def test_a_directory_in_place_of_the_file_is_unusable_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / persist.STATE_FILE
    path.mkdir()
    with pytest.raises(persist.StateFileError, match="cannot read"):
        persist.read_state(path)


async def test_the_writer_keeps_order_coalesces_and_flushes_on_shutdown(tmp_path: Path) -> None:
    path = persist.prepare_state_dir(str(tmp_path))
    writer = persist.StateWriter(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for i in range(20):
            writer.submit({"n": i})
            if i % 7 == 0:
                await trio.sleep(0)
        while writer.pending:
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert json.loads(path.read_text())["core"] == {"n": 19}  # the newest won
        assert 1 <= writer.writes <= 20 and writer.failures == 0
        writer.submit({"n": "last"})
        nursery.cancel_scope.cancel()  # the daemon stops before the writer woke up
    assert json.loads(path.read_text())["core"] == {"n": "last"}


async def test_a_storm_of_changes_makes_few_snapshots_and_the_newest_is_written(
    tmp_path: Path,
) -> None:
    """Submitted as a function, a snapshot is made only when its write comes: 500 changes
    during writes make a handful of exports, not 500 walks of the binding cache."""
    path = persist.prepare_state_dir(str(tmp_path))
    writer = persist.StateWriter(path)
    exports: list[int] = []
    state = {"n": 0}

    def export() -> dict[str, Any]:
        exports.append(state["n"])
        return dict(state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for i in range(1, 501):
            state["n"] = i
            writer.submit(export)
            if i % 50 == 0:
                await trio.sleep(0.01)
        with trio.fail_after(5):
            while writer.pending or exports[-1] != 500:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert json.loads(path.read_text())["core"] == {"n": 500}
    assert len(exports) <= 20, exports
    assert writer.last_export_ms is not None


async def test_the_writer_retries_a_failed_write(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    path = persist.prepare_state_dir(str(directory))
    directory.rmdir()  # the next write fails
    writer = persist.StateWriter(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit({"n": 1})
        while writer.failures == 0:
            await trio.sleep(0.01)
        assert writer.last_error is not None and writer.pending
        directory.mkdir()
        with trio.fail_after(5):
            while writer.writes == 0:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert json.loads(path.read_text())["core"] == {"n": 1}
    assert writer.last_error is None


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> int:
        self.sent.append((data, addr))
        return len(data)


def _daemon(state_dir: Path) -> HomeAgentDaemon:
    config = HaConfig(
        path="ha.toml",
        address=HA,
        home_prefix=PREFIX,
        udp_ports=(4191,),
        max_lifetime_s=3600,
        tun_name="mip-ha-test",
        tun_mtu=1400,
        mobile_nodes=(MobileNodeEntry(HOA, SPI, KEY),),
        control_socket="@mipnode-ha-test",
        state_dir=str(state_dir),
    )
    daemon = HomeAgentDaemon(config)
    daemon.raw41 = FakeSocket()  # type: ignore[assignment]
    # run() opens the TUN; a restore forwards nothing into it (a write would fail on fd -1).
    daemon.tun = Tun(-1, config.tun_name, vnet=False, features=0, count=daemon.drops)
    return daemon


async def test_the_daemon_restores_reinstalls_routes_and_sends_brrs(tmp_path: Path) -> None:
    stamp = Stamper()
    now = time.time()
    ha, _ = registered_ha(stamp, now=now - 5)
    path = persist.prepare_state_dir(str(tmp_path))
    persist.write_atomically(path, persist.encode_state(ha.export_state(), now))
    daemon = _daemon(tmp_path)
    await daemon._restore(str(tmp_path))
    assert daemon.restored == 1
    assert daemon.routes == {HOA.packed: VIA}
    assert daemon.host_routes._wanted == {f"{HOA}/128": True}  # the /128 route is asked for
    ((packet, addr),) = daemon.raw41.sent  # type: ignore[attr-defined]
    assert addr == (str(COA), 0)  # inside the binding's tunnel
    assert (IPv6Address(packet[8:24]), IPv6Address(packet[24:40]), packet[6]) == (HA, HOA, 135)
    assert isinstance(decode_mh_untrusted(packet[40:], HA, HOA), BindingRefreshRequest)
    assert daemon.writer is not None and daemon.writer.pending  # rewritten after the restore


@pytest.mark.parametrize("content", [b"garbage", b'{"format": "mipnode-ha-binding-cache"}'])
async def test_a_corrupt_file_is_set_aside_with_one_log_line_and_the_ha_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    (tmp_path / persist.STATE_FILE).write_bytes(content)
    daemon = _daemon(tmp_path)
    with caplog.at_level(logging.INFO, logger="mipnode"):
        await daemon._restore(str(tmp_path))
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "starting empty" in errors[0].getMessage()
    assert daemon.restored == 0 and daemon.node.core.bindings() == []
    assert (tmp_path / (persist.STATE_FILE + ".corrupt")).read_bytes() == content
    assert not (tmp_path / persist.STATE_FILE).exists()


async def test_a_snapshot_the_core_refuses_is_set_aside_too(tmp_path: Path) -> None:
    bad = {"version": 1, "bindings": [{"home_address": "nonsense"}], "timestamps": []}
    persist.write_atomically(tmp_path / persist.STATE_FILE, persist.encode_state(bad, T0))
    daemon = _daemon(tmp_path)
    await daemon._restore(str(tmp_path))
    assert daemon.restored == 0
    assert (tmp_path / (persist.STATE_FILE + ".corrupt")).exists()


@pytest.mark.parametrize(
    ("value", "ok"),
    [("/var/lib/mipnode-ha", True), ("var/lib/mipnode-ha", False), ("", False), ("./s", False)],
)
def test_state_dir_must_be_an_absolute_path(tmp_path: Path, value: str, ok: bool) -> None:
    config = tmp_path / "ha.toml"
    config.write_text(
        f'[ha]\naddress = "{HA}"\nhome_prefix = "{PREFIX}"\nstate_dir = "{value}"\n\n'
        f'[[mobile_node]]\nhome_address = "{HOA}"\nspi = {SPI}\nkey = "{KEY.hex()}"\n'
    )
    if ok:
        assert load_ha_config(str(config)).state_dir == value
    else:
        with pytest.raises(ConfigError, match="absolute"):
            load_ha_config(str(config))


@pytest.mark.parametrize(
    "field", ["expires_at", "registered_at"], ids=["huge-expiry", "huge-registration"]
)
async def test_a_huge_number_in_the_state_file_is_set_aside_not_a_crash_loop(
    tmp_path: Path, field: str
) -> None:
    """Issue 12: an integer too large for a float raised OverflowError out of restore(); the
    HA crashed at every start and never set the file aside."""
    ha, _ = registered_ha(Stamper(), now=time.time() - 5)
    state = ha.export_state()
    state["bindings"][0][field] = 10**400
    (tmp_path / persist.STATE_FILE).write_text(
        json.dumps({"format": persist.FORMAT, "saved_at": T0, "core": state})
    )
    daemon = _daemon(tmp_path)
    await daemon._restore(str(tmp_path))
    assert daemon.restored == 0
    assert (tmp_path / (persist.STATE_FILE + ".corrupt")).exists()
