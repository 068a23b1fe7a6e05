"""ESP SAs handed from a stopping home-agent node to its successor (drivers/esp_plane.py
``export`` / ``restore`` / ``merge``, drivers/sa_handover.py's receiving side), on the real SA
table and the real frames: a mobile node keyed with the first node goes on with the second
without registering again, no sequence number is used by both nodes, and the attacks an
on-link sender can try (a replayed frame, a frame for another node, a packet the old node
opened, replayed to the new one) get nowhere."""

from __future__ import annotations

import dataclasses
import os
from ipaddress import IPv6Address

import pytest
import trio
import trio.testing

from mipnode.config import ClusterConfig
from mipnode.core.esp_keys import EspKeys
from mipnode.drivers import pump
from mipnode.drivers.esp_plane import HANDOVER_SEQ_MARGIN, EspSas
from mipnode.drivers.io import Counters
from mipnode.drivers.sa_handover import PARK_S, SaHandover
from mipnode.wire.errors import BadPacket
from mipnode.wire.sa_transfer import decode_frame_untrusted, encode_frame, transfer_key
from tunnels.esp import SUITE_AES_GCM, key_length

HOA = IPv6Address("2001:db8:1::64").packed
MN_SPI, HA_SPI = 0x8001_0001, 0x8064_0001
TO_MN, TO_HA = b"\x11" * key_length(SUITE_AES_GCM), b"\x22" * key_length(SUITE_AES_GCM)
CLUSTER_KEY = bytes(range(32))
T0 = 100.0


def inner(n: int) -> bytes:
    return b"\x60" + bytes(39) + n.to_bytes(4, "big")


def keyed_pair() -> tuple[EspSas, EspSas]:
    """A home agent's SA table and its mobile node's, keyed as one registration keys them."""
    ha, mn = EspSas(keylog=""), EspSas(keylog="")
    ha.keyed(HOA, EspKeys(SUITE_AES_GCM, MN_SPI, TO_MN, HA_SPI, TO_HA), T0)
    mn.keyed(b"", EspKeys(SUITE_AES_GCM, HA_SPI, TO_HA, MN_SPI, TO_MN), T0)
    return ha, mn


def handed_over() -> tuple[EspSas, EspSas, EspSas]:
    """(the old node's table, the mobile node's, the successor's with the old node's SAs)."""
    old, mn = keyed_pair()
    state = old.export(HOA, T0, hand_over=True)
    assert state is not None
    new = EspSas(keylog="")
    assert new.restore(state, T0)
    return old, mn, new


def through_the_wire(state: object, recipient: str = "ha-2") -> object:
    key = transfer_key(CLUSTER_KEY, "campus")
    data = encode_frame(
        [state],  # type: ignore[list-item]
        key=key,
        sender="ha-1",
        recipient=recipient,
        sent_ms=1,
        index=0,
        final=False,
        nonce=os.urandom(12),
    )
    (decoded,) = decode_frame_untrusted(data, key, recipient).states
    return decoded


def test_the_mobile_node_goes_on_with_the_successor_without_registering() -> None:
    old, mn = keyed_pair()
    drops = Counters()
    for n in range(5):  # traffic before the hand-over, both ways
        assert mn.open(old.seal(HOA, inner(n), drops) or b"", T0, drops)
        assert old.open(mn.seal(b"", inner(n), drops) or b"", T0, drops)
    state = old.export(HOA, T0, hand_over=True)
    assert state is not None and state.next_seq == 5 + HANDOVER_SEQ_MARGIN + 1
    new = EspSas(keylog="")
    assert new.restore(through_the_wire(state), T0 + 1)  # type: ignore[arg-type]
    for n in range(5, 10):
        opened = new.open(mn.seal(b"", inner(n), drops) or b"", T0 + 1, drops)
        assert opened == (inner(n), HOA)
        assert mn.open(new.seal(HOA, inner(n), drops) or b"", T0 + 1, drops) == (inner(n), b"")
    assert dict(drops) == {}


def test_the_two_nodes_never_seal_under_one_sequence_number() -> None:
    # The sequence number is the AEAD nonce: one number under one key from both nodes would
    # give the key stream away (RFC 4106 §3.1).
    old, _, new = handed_over()
    drops = Counters()
    from_old = [old.seal(HOA, inner(n), drops) for n in range(100)]
    from_new = [new.seal(HOA, inner(n), drops) for n in range(100)]
    seqs_old = {p[4:8] for p in from_old if p is not None}
    seqs_new = {p[4:8] for p in from_new if p is not None}
    assert len(seqs_old) == len(seqs_new) == 100 and not seqs_old & seqs_new
    old.outbound[HOA].seq = old.outbound[HOA].limit  # the old node's share is spent
    assert old.seal(HOA, inner(0), drops) is None
    assert drops["esp_sequence_exhausted"] == 1


def test_a_packet_the_old_node_opened_is_refused_by_the_new_one_after_the_final_windows() -> None:
    """The attack: capture a packet the mobile node sent to the old node during the hand-over
    and send it again to the new holder. The final windows make it a replay there."""
    old, mn, new = handed_over()
    drops = Counters()
    captured = mn.seal(b"", inner(1), drops) or b""
    assert old.open(captured, T0, drops)  # reached the old node after the first transfer
    final = old.export(HOA, T0, hand_over=False)
    assert final is not None
    assert new.merge(final) == 1
    assert new.open(captured, T0, drops) is None
    assert drops["esp_replay"] == 1
    fresh = mn.seal(b"", inner(2), drops) or b""
    assert new.open(fresh, T0, drops) == (inner(2), HOA)


def test_without_the_final_windows_that_replay_would_be_accepted() -> None:
    # The counterpart of the test above: the merge is what refuses it.
    old, mn, new = handed_over()
    drops = Counters()
    captured = mn.seal(b"", inner(1), drops) or b""
    assert old.open(captured, T0, drops)
    assert new.open(captured, T0, drops) is not None


def test_a_rekey_waiting_for_proof_is_not_handed_over() -> None:
    # The old node sealed with the old SA until the mobile node proves it has the new keys;
    # the successor could not tell which one the mobile node opens: it asks for a new
    # registration instead.
    old, _ = keyed_pair()
    newer = EspKeys(SUITE_AES_GCM, MN_SPI + 1, TO_MN[::-1], HA_SPI + 1, TO_HA[::-1])
    old.keyed(HOA, newer, T0 + 1, switch_on_proof=True)
    assert old.export(HOA, T0 + 1, hand_over=True) is None


def test_a_replaced_sa_moves_with_its_remaining_grace() -> None:
    old, _ = keyed_pair()
    newer = EspKeys(SUITE_AES_GCM, MN_SPI + 1, TO_MN[::-1], HA_SPI + 1, TO_HA[::-1])
    old.keyed(HOA, newer, T0)  # the old inbound SA opens for GRACE_S more
    state = old.export(HOA, T0 + 4, hand_over=True)
    assert state is not None
    assert sorted(i.grace_ms for i in state.inbound) == [0, 6000]
    new = EspSas(keylog="")
    new.restore(state, T0 + 4)
    assert new.inbound[HA_SPI].retire_at == pytest.approx(T0 + 10)


def test_keys_this_node_made_itself_are_not_replaced() -> None:
    old, _ = keyed_pair()
    state = old.export(HOA, T0, hand_over=True)
    assert state is not None
    mine, _ = keyed_pair()
    assert mine.restore(state, T0) is False


# -- the receiving side of the driver, without the network ------------------------------------


def handover() -> SaHandover:
    cfg = ClusterConfig(
        name="campus",
        node_id="ha-2",
        etcd_endpoints=("http://[::1]:2379",),
        key=CLUSTER_KEY,
        home_link="home",
    )
    return SaHandover(cfg, EspSas(keylog=""), 1, Counters(), Counters())


def frame_now(state: object, *, recipient: str = "ha-2", index: int = 0, age_ms: int = 0) -> bytes:
    return encode_frame(
        [state],  # type: ignore[list-item]
        key=transfer_key(CLUSTER_KEY, "campus"),
        sender="ha-1",
        recipient=recipient,
        sent_ms=int(pump.posix_time() * 1000) - age_ms,
        index=index,
        final=False,
        nonce=os.urandom(12),
    )


async def test_a_frame_is_parked_until_adoption_takes_it() -> None:
    old, _ = keyed_pair()
    state = old.export(HOA, T0, hand_over=True)
    receiver = handover()
    receiver._apply(frame_now(state))
    assert receiver.take(HOA, pump.now()) == state
    assert receiver.take(HOA, pump.now()) is None  # taken once


async def test_parked_sas_go_stale() -> None:
    old, _ = keyed_pair()
    receiver = handover()
    receiver._apply(frame_now(old.export(HOA, T0, hand_over=True)))
    assert receiver.take(HOA, pump.now() + PARK_S + 1) is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"recipient": "ha-3"}, "sa_transfer_recipient"),
        ({"age_ms": 60_000}, "sa_transfer_stale"),  # captured a minute ago
    ],
)
async def test_frames_an_attacker_can_send_are_refused(
    kwargs: dict[str, object], reason: str
) -> None:
    old, _ = keyed_pair()
    receiver = handover()
    with pytest.raises(BadPacket) as bad:
        receiver._apply(frame_now(old.export(HOA, T0, hand_over=True), **kwargs))  # type: ignore[arg-type]
    assert bad.value.reason == reason
    assert receiver.take(HOA, pump.now()) is None


async def test_a_frame_sent_again_is_refused() -> None:
    # A replayed frame could bring back keys the mobile node has since replaced: the
    # successor would serve with them and ask for no registration.
    old, _ = keyed_pair()
    receiver = handover()
    data = frame_now(old.export(HOA, T0, hand_over=True))
    receiver._apply(data)
    receiver.take(HOA, pump.now())
    with pytest.raises(BadPacket) as bad:
        receiver._apply(data)
    assert bad.value.reason == "sa_transfer_stale"
    assert receiver.take(HOA, pump.now()) is None


async def test_what_waited_longer_than_park_s_goes_with_the_next_transfer(
    mock_clock: trio.testing.MockClock,
) -> None:
    # Parked SAs hold keys: a binding that is never adopted must not keep them for good.
    old, _ = keyed_pair()
    receiver = handover()
    receiver._apply(frame_now(old.export(HOA, T0, hand_over=True), index=0))
    assert HOA in receiver._parked
    mock_clock.jump(PARK_S + 1)
    other = keyed_pair()[0].export(HOA, T0, hand_over=True)
    assert other is not None
    moved = dataclasses.replace(other, home_address=IPv6Address("2001:db8:1::65").packed)
    receiver._apply(frame_now(moved, index=1))
    assert list(receiver._parked) == [moved.home_address]
    receiver.forget_parked()  # what adoption did not take
    assert receiver._parked == {}
