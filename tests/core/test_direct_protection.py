"""ESP on D-udp pairs (issue 12, item 3): keys from the offer and answer, on the real engine.

The two engines of test_direct_paths.py exchange their descriptions and checks; what they hand
out on :class:`DirectPathChanged` is installed in the daemons' own SA table (EspSas) and used
to really seal and open packets, so a key mismatch anywhere fails the test.
"""

from __future__ import annotations

import random
from ipaddress import IPv6Address

from test_direct_paths import CN, CN_SOCK, HOA, MN_SOCK, T0, events, exchange, run

from mipnode.core.direct_paths import DirectPathChanged, DirectPaths
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters
from mipnode.wire import mice
from mipnode.wire.keyshare import KeyShare
from mipnode.wire.mh import ExperimentalMessage
from mipnode.wire.packets import ipv6_packet

SUITE_AES_GCM, SUITE_CHACHA = 1, 2


def protected_engines(
    seed: int = 1, *, mn_suite: int | None = SUITE_AES_GCM, cn_suite: int | None = SUITE_AES_GCM
) -> tuple[DirectPaths, DirectPaths]:
    rng = random.Random(seed)
    mn = DirectPaths(
        controlling=True,
        random_bytes=rng.randbytes,
        suite=mn_suite,
        require_keys=mn_suite is not None,
    )
    cn = DirectPaths(controlling=False, random_bytes=rng.randbytes, suite=cn_suite)
    mn.set_local_candidates(T0, [MN_SOCK])
    cn.set_local_candidates(T0, [CN_SOCK])
    return mn, cn


def selected(engine: DirectPaths) -> DirectPathChanged:
    (up,) = [e for e in events(engine) if e.pair is not None]
    return up


def installed(event: DirectPathChanged, owner: bytes) -> EspSas:
    assert event.keys is not None
    sas = EspSas(keylog="")
    sas.keyed(owner, event.keys, T0)
    return sas


def test_offer_and_answer_key_the_pair_and_each_side_opens_what_the_other_seals() -> None:
    mn, cn = protected_engines()
    assert mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    assert mn.keyed(CN) and cn.keyed(HOA)
    mn_sas = installed(selected(mn), CN.packed)
    cn_sas = installed(selected(cn), HOA.packed)
    drops = Counters()
    up = ipv6_packet(HOA, CN, 17, b"\0" * 8 + b"up")
    down = ipv6_packet(CN, HOA, 17, b"\0" * 8 + b"down")
    sealed_up = mn_sas.seal(CN.packed, up, drops)
    sealed_down = cn_sas.seal(HOA.packed, down, drops)
    assert sealed_up is not None and sealed_down is not None
    assert sealed_up[0] & 0x80 and sealed_down[0] & 0x80  # demultiplexed as ESP
    assert cn_sas.open(sealed_up, T0, drops) == (up, HOA.packed)
    assert mn_sas.open(sealed_down, T0, drops) == (down, CN.packed)
    assert not drops


def test_the_keys_are_handed_out_once_per_exchange_and_an_ice_restart_brings_new_ones() -> None:
    """Installing the same keys twice would restart their sequence numbers: AEAD nonce reuse."""
    mn, cn = protected_engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    first = selected(mn).keys
    assert first is not None
    mn.restart(T0 + 3, CN, "test")
    exchange(mn, cn, T0 + 3)
    run(mn, cn, T0 + 8)
    later = [e for e in events(mn) if e.pair is not None]
    assert later and [e.keys is not None for e in later] == [True] + [False] * (len(later) - 1)
    second = later[0].keys
    assert second is not None
    assert second.spi_in != first.spi_in and second.keymat_out != first.keymat_out


def test_an_answer_without_a_key_share_never_makes_a_clear_pair_on_a_protected_mn() -> None:
    mn, cn = protected_engines(cn_suite=None)  # an answerer that does not key
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 5)
    assert mn.selected(CN) is None and not [e for e in events(mn) if e.pair is not None]
    assert mn.statistics()["drop_mice_without_key_share"] >= 1


def test_an_unprotected_mn_gets_a_clear_pair_from_a_correspondent_that_keys() -> None:
    mn, cn = protected_engines(mn_suite=None)
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    assert mn.selected(CN) is not None and cn.selected(HOA) is not None
    assert not mn.keyed(CN) and not cn.keyed(HOA)
    assert selected(cn).keys is None


def test_the_answerer_follows_the_offer_s_suite() -> None:
    mn, cn = protected_engines(mn_suite=SUITE_CHACHA)
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    mn_keys, cn_keys = selected(mn).keys, selected(cn).keys
    assert mn_keys is not None and cn_keys is not None
    assert mn_keys.suite == cn_keys.suite == SUITE_CHACHA
    assert mn_keys.keymat_out == cn_keys.keymat_in and len(mn_keys.keymat_out) == 36


def test_crossing_offers_of_two_mobile_nodes_agree_on_the_keys() -> None:
    """Each takes the other's offer as the answer: the key order cannot be who offered."""
    rng = random.Random(7)
    a = DirectPaths(controlling=True, random_bytes=rng.randbytes, suite=1, require_keys=True)
    b = DirectPaths(controlling=True, random_bytes=rng.randbytes, suite=1, require_keys=True)
    a.set_local_candidates(T0, [MN_SOCK])
    b.set_local_candidates(T0, [CN_SOCK])
    a.start(T0, CN)
    b.start(T0, HOA)
    exchange(a, b, T0)  # (a speaks as HOA to b, b as CN to a: the helper's addressing)
    run(a, b, T0 + 5)
    ka, kb = selected(a).keys, selected(b).keys
    assert ka is not None and kb is not None
    assert (ka.spi_out, ka.keymat_out) == (kb.spi_in, kb.keymat_in)
    assert (kb.spi_out, kb.keymat_out) == (ka.spi_in, ka.keymat_in)


def test_a_forged_answer_cannot_plant_its_own_key_share() -> None:
    """An off-path sender never saw our offer's ufrag: its answer (with its own share) is not
    taken, and the genuine answer that follows keys the pair."""
    mn, cn = protected_engines()
    mn.start(T0, CN)
    offer = mn.signalling_to_send()
    forged = ExperimentalMessage(
        mice.mice_options(
            [
                mice.Credentials("evil", "e" * 22),
                mice.AnswerTo("guessed"),
                mice.Candidate("1", 1000, "host", IPv6Address("2001:db8:6666::1"), 4191),
                KeyShare(SUITE_AES_GCM, 0x8000_0001, bytes(range(32))),
            ]
        )
    )
    mn.receive_signalling(T0, CN, forged)
    assert mn.statistics()["drop_mice_unmatched_answer"] == 1
    for sig in offer:
        cn.receive_signalling(T0, HOA, sig.message)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    keys = selected(mn).keys
    assert keys is not None and keys.spi_out != 0x8000_0001
    sel = mn.selected(CN)
    assert sel is not None and sel.remote.address == CN_SOCK


def test_the_same_keys_handed_in_again_never_restart_the_sequence_numbers() -> None:
    """A second SA on the same key would start at sequence number 1 again: the same AEAD
    nonce under the same key (RFC 4106 §3.1 forbids it). The SA table ignores a repeat."""
    mn, cn = protected_engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    event = selected(mn)
    assert event.keys is not None
    sas = installed(event, CN.packed)
    drops = Counters()
    packet = ipv6_packet(HOA, CN, 17, b"\0" * 8)
    for _ in range(3):
        sas.seal(CN.packed, packet, drops)
    sas.keyed(CN.packed, event.keys, T0 + 1)
    again = sas.seal(CN.packed, packet, drops)
    assert again is not None and int.from_bytes(again[4:8], "big") == 4


def _forged_offer(ufrag: str) -> ExperimentalMessage:
    return ExperimentalMessage(
        mice.mice_options(
            [
                mice.Credentials(ufrag, "f" * 24),
                mice.Candidate("1", 1000, "host", IPv6Address("2001:db8:e:1::7"), 40000),
                mice.EndOfCandidates(),
                KeyShare(SUITE_AES_GCM, 0x8000_0002, bytes(range(1, 33))),
            ]
        )
    )


def test_a_forged_restart_offer_costs_the_working_pair_nothing() -> None:
    """An off-path sender forges an offer from the home address (a new ufrag: a restart, as
    far as the correspondent can tell). Seen in the lab: it used to replace the agent at once,
    and the mobile node's D-udp pair died. Now the new agent runs beside the old one, never
    proves itself (the attacker never sees our answer), and expires; the pair carries on."""
    mn, cn = protected_engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 3)
    pair = cn.selected(HOA)
    assert pair is not None
    key = (pair.local.base, pair.remote.address)
    events(cn)
    cn.receive_signalling(T0 + 3, HOA, _forged_offer("forge"))
    cn.signalling_to_send()  # the answer goes to the home address: the attacker never sees it
    assert cn.statistics()["restart_pending"] == 1
    run(mn, cn, T0 + 3 + 90)  # heartbeats go on; the forged agent's checks go unanswered
    now = cn.selected(HOA)
    assert now is not None and (now.local.base, now.remote.address) == key
    assert mn.selected(CN) is not None
    assert not [e for e in events(cn) if e.pair is None]
    assert cn.statistics()["restart_pending_expired"] == 1
    assert "restarts_taken" not in cn.statistics()


def test_a_forged_offer_draws_no_more_octets_than_it_brought() -> None:
    """Issue 12: one forged offer used to make the answering agent check its candidates for a
    minute, ~10x its size in three seconds (lab attack-descriptions). Until the peer proves it
    holds our password, the checks spend only what its descriptions brought."""
    _, cn = protected_engines()
    offer = _forged_offer("forge")
    offer_octets = 48 + sum(2 + len(o.data) for o in offer.options)  # type: ignore[union-attr]
    cn.receive_signalling(T0, HOA, offer)
    cn.signalling_to_send()
    sent = 0
    now = T0
    while now < T0 + 120:
        cn.handle_timer(now)
        sent += sum(len(d.data) + 48 for d in cn.datagrams_to_send(now))
        t = cn.get_timer()
        if t is None:
            break
        now = max(now + 0.001, t)
    assert 0 < sent <= offer_octets
    assert cn.statistics()["checks_over_budget"] > 0


def test_a_genuine_peer_is_checked_without_limit_once_it_proves_itself() -> None:
    mn, cn = protected_engines()
    mn.start(T0, CN)
    exchange(mn, cn, T0)
    run(mn, cn, T0 + 60)  # heartbeats for a minute: far more octets than the offer
    assert cn.selected(HOA) is not None and mn.selected(CN) is not None
    stats = cn.agent_statistics(HOA)
    assert stats.get("checks_sent", 0) + stats.get("heartbeats_sent", 0) > 20
