"""RouteOptimizationCore against a hand-played CN: RR, BU/BA, ladders, statuses, refresh, move,
deletion and MAX_UPDATE_RATE, on virtual time with exact deadlines."""

from __future__ import annotations

import hashlib
from ipaddress import IPv6Address
from typing import Any

import pytest

from mipnode.core.mn_ro import (
    MAX_IMMEDIATE_RESENDS,
    RoConfig,
    RoEvent,
    RouteOptimizationCore,
    RouteOptimizationEnded,
    RouteOptimizationExpired,
    RouteOptimizationFailed,
    RouteOptimized,
)
from mipnode.core.rr import binding_management_key
from mipnode.core.types import OutgoingMh
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    NonceIndices,
    decode_mh_untrusted,
    encode_mh,
)

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:aa::5")
COA2 = IPv6Address("2001:db8:bb::7")
COA3 = IPv6Address("2001:db8:cc::9")
CN = IPv6Address("2001:db8:c0::1")
CN2 = IPv6Address("2001:db8:c0::2")
HOME_TOKEN = bytes.fromhex("1111111111111111")
CARE_TOKEN = bytes.fromhex("2222222222222222")
HOME_INDEX = 7
CARE_INDEX = 9
KBM = binding_management_key(HOME_TOKEN, CARE_TOKEN)
KBM_DELETE = binding_management_key(HOME_TOKEN, None)


class Rng:
    """Deterministic ``random_bytes``: distinct, reproducible outputs."""

    def __init__(self, seed: str = "mn") -> None:
        self.seed = seed
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.sha256(f"{self.seed}/{self.calls}".encode()).digest()[:n]


def make_ro(initial_sequence: int = 1000, **overrides: object) -> RouteOptimizationCore:
    fields: dict[str, object] = {"home_address": HOA}
    fields.update(overrides)
    return RouteOptimizationCore(RoConfig(**fields), Rng(), initial_sequence)  # type: ignore[arg-type]


def sent(ro: RouteOptimizationCore, now: float) -> list[tuple[object, OutgoingMh]]:
    """Everything queued, decoded (checksums over the OutgoingMh's src/dst)."""
    return [(decode_mh_untrusted(o.data, o.src, o.dst), o) for o in ro.datagrams_to_send(now)]


def events(ro: RouteOptimizationCore) -> list[RoEvent]:
    out = []
    while (event := ro.next_event()) is not None:
        out.append(event)
    return out


def hoti(ro: RouteOptimizationCore, now: float, cn: IPv6Address = CN) -> bytes:
    """The one HoTI queued (checked: HoA -> CN, through the tunnel); its cookie."""
    (msg, out), *rest = sent(ro, now)
    assert not rest, rest
    assert isinstance(msg, HomeTestInit)
    assert (out.src, out.dst, out.via, out.care_of) == (HOA, cn, None, None)
    return msg.cookie


def inits(ro: RouteOptimizationCore, now: float) -> dict[str, list[tuple[bytes, OutgoingMh]]]:
    """HoTI and CoTI cookies queued, by type; fails on anything else."""
    found: dict[str, list[tuple[bytes, OutgoingMh]]] = {"hoti": [], "coti": []}
    for msg, out in sent(ro, now):
        if isinstance(msg, HomeTestInit):
            assert (out.src, out.care_of) == (HOA, None)
            found["hoti"].append((msg.cookie, out))
        else:
            assert isinstance(msg, CareOfTestInit), msg
            assert out.care_of is None and out.src != HOA
            found["coti"].append((msg.cookie, out))
    return found


def hot(
    cookie: bytes, *, index: int = HOME_INDEX, token: bytes = HOME_TOKEN, src: IPv6Address = CN
) -> bytes:
    return encode_mh(HomeTest(index, cookie, token), src, HOA)


def cot(
    cookie: bytes, *, coa: IPv6Address = COA, index: int = CARE_INDEX, token: bytes = CARE_TOKEN
) -> bytes:
    return encode_mh(CareOfTest(index, cookie, token), CN, coa)


def ba(
    status: int, sequence: int, *, kbm: bytes = KBM, coa: IPv6Address = COA, lifetime: int = 105
) -> bytes:
    msg = BindingAck(status=status, sequence=sequence, lifetime=lifetime)
    return encode_mh_with_bad(msg, CN, HOA, kbm=kbm, coa=coa, cn=CN)


def ba_plain(status: int, sequence: int) -> bytes:
    """A BA without BAD, as a CN sends 136-138 (RFC 6275 §9.5.4)."""
    return encode_mh(BindingAck(status=status, sequence=sequence, lifetime=0), CN, HOA)


def deliver_hot(ro: RouteOptimizationCore, now: float, cookie: bytes, **kw: Any) -> None:
    ro.receive_datagram(now, hot(cookie, **kw), CN, HOA)


def deliver_cot(
    ro: RouteOptimizationCore, now: float, cookie: bytes, coa: IPv6Address = COA, **kw: Any
) -> None:
    ro.receive_datagram(now, cot(cookie, coa=coa, **kw), CN, coa)


def deliver_ba(ro: RouteOptimizationCore, now: float, data: bytes) -> None:
    ro.receive_datagram(now, data, CN, HOA)


def single_bu(
    ro: RouteOptimizationCore, now: float, *, coa: IPv6Address = COA, kbm: bytes = KBM
) -> BindingUpdate:
    """The one BU queued: HoA -> CN sent from ``coa`` with an HAO, BAD over ``coa`` (the HoA
    for a deletion) verified with ``kbm``."""
    (msg, out), *rest = sent(ro, now)
    assert not rest, rest
    assert isinstance(msg, BindingUpdate), msg
    assert (out.src, out.dst, out.via, out.care_of) == (HOA, CN, None, coa)
    mac_coa = HOA if msg.lifetime == 0 else coa
    assert verify_bad(out.data, kbm=kbm, coa=mac_coa, cn=CN)
    assert isinstance(msg.options[-1], BindingAuthorizationData)
    return msg


def run_rr(ro: RouteOptimizationCore, now: float, *, coa: IPv6Address = COA) -> BindingUpdate:
    """Answer the queued HoTI and CoTI at ``now``; return the BU that follows."""
    found = inits(ro, now)
    ((home_cookie, _),) = found["hoti"]
    ((care_cookie, _),) = found["coti"]
    deliver_hot(ro, now, home_cookie)
    deliver_cot(ro, now, care_cookie, coa=coa)
    return single_bu(ro, now, coa=coa)


def optimized(now: float = 0.0, seq: int = 1000, **overrides: object) -> RouteOptimizationCore:
    """A core route-optimised with CN at ``now`` (420 s granted); queues and events drained."""
    ro = make_ro(seq, **overrides)
    ro.start(now, CN, COA)
    bu = run_rr(ro, now)
    deliver_ba(ro, now, ba(0, bu.sequence))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    return ro


def fire(ro: RouteOptimizationCore) -> float:
    now = ro.get_timer()
    assert now is not None
    ro.handle_timer(now)
    return now


# -- the return routability procedure ------------------------------------------------------


def test_start_sends_hoti_through_the_tunnel_and_coti_natively_in_parallel() -> None:
    ro = make_ro()
    ro.start(5.0, CN, COA)
    found = inits(ro, 5.0)
    ((home_cookie, home_out),) = found["hoti"]
    ((care_cookie, care_out),) = found["coti"]
    assert (home_out.src, home_out.dst, home_out.care_of) == (HOA, CN, None)  # via the HA
    assert (care_out.src, care_out.dst, care_out.care_of) == (COA, CN, None)  # native
    assert len(home_cookie) == len(care_cookie) == 8
    assert home_cookie != care_cookie
    assert ro.state(CN) == "return-routability"
    assert ro.get_timer() == 6.0
    assert ro.statistics()["hoti_sent"] == ro.statistics()["coti_sent"] == 1


def test_both_tokens_give_a_bu_with_nonce_indices_and_bad_last() -> None:
    ro = make_ro(initial_sequence=4242)
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    deliver_hot(ro, 0.2, found["hoti"][0][0])
    assert ro.datagrams_to_send(0.2) == []  # §11.6.2: keep waiting for the CoT
    deliver_cot(ro, 0.3, found["coti"][0][0])
    bu = single_bu(ro, 0.3)  # src HoA, sent from the CoA with an HAO, BAD with Kbm
    assert (bu.sequence, bu.lifetime, bu.ack, bu.home) == (4242, 105, True, False)
    assert bu.options[0] == NonceIndices(HOME_INDEX, CARE_INDEX)
    assert not any(isinstance(o, AlternateCareOfAddress) for o in bu.options)
    assert ro.state(CN) == "binding-update"
    assert ro.get_timer() == pytest.approx(1.3)


def test_the_alternate_care_of_address_option_is_optional() -> None:
    ro = make_ro(alternate_care_of=True)
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    assert bu.options[:2] == (AlternateCareOfAddress(COA), NonceIndices(HOME_INDEX, CARE_INDEX))


def test_the_configured_lifetime_is_requested() -> None:
    ro = make_ro(lifetime_s=203)
    ro.start(0.0, CN, COA)
    assert run_rr(ro, 0.0).lifetime == 50


def test_an_accepting_ba_route_optimises_and_schedules_the_refresh() -> None:
    ro = make_ro()
    ro.start(10.0, CN, COA)
    bu = run_rr(ro, 10.0)
    deliver_ba(ro, 10.4, ba(0, bu.sequence, lifetime=105))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    (binding,) = ro.bindings(100.0)
    assert (binding.cn, binding.care_of, binding.state, binding.sequence) == (
        CN,
        COA,
        "route-optimized",
        1000,
    )
    # §11.7.3: the lifetime counts from when the BU was sent.
    assert (binding.lifetime_remaining, binding.expires_at) == (330.0, 430.0)
    assert ro.get_timer() == 10.0 + 336.0
    assert ro.datagrams_to_send(11.0) == []


def test_a_shorter_granted_lifetime_is_honoured_and_a_longer_one_is_not() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.1, ba(0, bu.sequence, lifetime=10))
    assert events(ro) == [RouteOptimized(CN, COA, 40)]
    assert ro.get_timer() == 32.0

    ro2 = make_ro()
    ro2.start(0.0, CN, COA)
    bu2 = run_rr(ro2, 0.0)
    deliver_ba(ro2, 0.1, ba(0, bu2.sequence, lifetime=500))
    assert events(ro2) == [RouteOptimized(CN, COA, 420)]


# -- retransmission ------------------------------------------------------------------------


def test_hoti_and_coti_back_off_separately_with_fresh_cookies() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    first = inits(ro, 0.0)
    cookies = {first["hoti"][0][0], first["coti"][0][0]}
    hoti_times, coti_times = [], []
    for _ in range(10):
        now = fire(ro)
        found = inits(ro, now)
        if found["hoti"]:
            hoti_times.append(now)
        if found["coti"]:
            coti_times.append(now)
        cookies |= {c for c, _ in found["hoti"] + found["coti"]}
        if now == 3.0:
            # The CoT for the CoTI of 3 s arrives: the care-of ladder stops, the home one not.
            deliver_cot(ro, 3.0, found["coti"][0][0])
    assert coti_times == [1.0, 3.0]
    assert hoti_times == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 95.0, 127.0, 159.0, 191.0]
    assert len(cookies) == 2 + 12  # §11.8: a new cookie in every retransmission
    stats = ro.statistics()
    assert (stats["hoti_retransmissions"], stats["coti_retransmissions"]) == (10, 2)


def test_a_lost_hot_is_recovered_by_the_retransmitted_hoti() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    deliver_cot(ro, 0.1, found["coti"][0][0])  # the HoT is lost
    assert ro.get_timer() == 1.0
    assert ro.datagrams_to_send(0.1) == []
    ro.handle_timer(1.0)
    second = hoti(ro, 1.0)
    assert second != found["hoti"][0][0]
    deliver_hot(ro, 1.2, second)
    bu = single_bu(ro, 1.2)
    assert bu.sequence == 1000


def test_a_late_hot_to_an_earlier_hoti_of_the_same_run_is_accepted() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    deliver_cot(ro, 0.1, found["coti"][0][0])
    ro.handle_timer(1.0)
    hoti(ro, 1.0)
    deliver_hot(ro, 1.5, found["hoti"][0][0])  # answers the first HoTI
    single_bu(ro, 1.5)


def test_the_bu_ladder_takes_a_new_sequence_number_each_time() -> None:
    ro = make_ro(initial_sequence=65534)
    ro.start(0.0, CN, COA)
    run_rr(ro, 0.0)
    times, sequences = [], []
    for _ in range(6):
        now = fire(ro)
        times.append(now)
        sequences.append(single_bu(ro, now).sequence)
    assert times == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    assert sequences == [65535, 0, 1, 2, 3, 4]
    assert ro.get_timer() == 95.0
    # A BA to any BU of the exchange counts, from when that BU was sent.
    deliver_ba(ro, 63.5, ba(0, 65535))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    assert ro.bindings()[0].expires_at == 421.0


def test_the_ladder_honours_configured_timeouts() -> None:
    ro = make_ro(initial_timeout_s=2.0, max_timeout_s=5.0)
    ro.start(0.0, CN, COA)
    inits(ro, 0.0)
    times = []
    for _ in range(4):
        now = fire(ro)
        inits(ro, now)
        times.append(now)
    assert times == [2.0, 6.0, 11.0, 16.0]


# -- messages that must be ignored ---------------------------------------------------------


def test_test_messages_with_wrong_cookie_source_or_destination_are_ignored() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    home_cookie, care_cookie = found["hoti"][0][0], found["coti"][0][0]
    deliver_hot(ro, 0.1, care_cookie)  # the CoTI's cookie in a HoT
    deliver_hot(ro, 0.1, b"\x00" * 8)
    deliver_cot(ro, 0.1, home_cookie)
    ro.receive_datagram(0.1, encode_mh(HomeTest(1, home_cookie, HOME_TOKEN), CN, COA), CN, COA)
    deliver_cot(ro, 0.1, care_cookie, coa=COA2)  # not the CoA under test
    ro.receive_datagram(0.1, hot(home_cookie, src=CN2), CN2, HOA)  # another node
    ro.receive_datagram(0.1, hot(home_cookie), CN, COA)  # checksum over the wrong address
    ro.receive_datagram(0.1, b"\x3b\x00", CN, HOA)
    assert ro.datagrams_to_send(0.1) == []
    stats = ro.statistics()
    assert stats["drop_bad_cookie"] == 3
    assert stats["drop_wrong_destination"] == 2
    assert stats["drop_unknown_correspondent"] == 1
    assert stats["drop_bad_checksum"] == 1
    assert stats["drop_truncated"] == 1
    assert "hot_accepted" not in stats

    deliver_hot(ro, 0.2, home_cookie)
    deliver_hot(ro, 0.2, home_cookie)  # §11.6.2: a token was received already
    assert ro.statistics()["drop_unexpected_hot"] == 1
    deliver_cot(ro, 0.2, care_cookie)
    single_bu(ro, 0.2)


def test_bas_that_fail_authentication_or_do_not_match_are_ignored() -> None:
    ro = make_ro()
    deliver_ba(ro, 0.0, ba(0, 1000))  # no such CN yet
    ro.start(0.0, CN, COA)
    deliver_ba(ro, 0.0, ba(0, 1000))  # no BU sent yet: unmatched
    bu = run_rr(ro, 0.0)
    other_kbm = binding_management_key(CARE_TOKEN, HOME_TOKEN)
    deliver_ba(ro, 0.1, ba(0, bu.sequence, kbm=other_kbm))
    deliver_ba(ro, 0.1, ba(129, bu.sequence, kbm=other_kbm))  # forged rejection
    deliver_ba(ro, 0.1, ba(0, bu.sequence, coa=COA2))  # MAC over another CoA
    deliver_ba(ro, 0.1, ba_plain(0, bu.sequence))  # a CN's BA must carry BAD
    deliver_ba(ro, 0.1, ba(0, bu.sequence + 1))  # a sequence number we never sent
    deliver_ba(ro, 0.1, ba(135, 5, kbm=other_kbm))  # 135 is matched by its BAD alone
    deliver_ba(ro, 0.1, ba_plain(136, bu.sequence + 1))
    ro.receive_datagram(0.1, ba(0, bu.sequence), CN, COA)  # checksum over the wrong address
    ro.receive_datagram(0.1, encode_mh(BindingAck(0, bu.sequence, 105), CN, COA), CN, COA)
    assert events(ro) == []
    assert ro.datagrams_to_send(0.1) == []
    stats = ro.statistics()
    assert stats["drop_unknown_correspondent"] == 1
    assert stats["drop_bad_auth"] == 5
    assert stats["drop_unmatched_ba"] == 3
    assert stats["drop_bad_checksum"] == 1
    assert stats["drop_wrong_destination"] == 1
    assert ro.state(CN) == "binding-update"

    deliver_ba(ro, 0.2, ba(0, bu.sequence))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    deliver_ba(ro, 0.3, ba(0, bu.sequence))  # a duplicate: no exchange any more
    assert ro.statistics()["drop_unexpected_ba"] == 1
    assert events(ro) == []


def test_other_mobility_messages_are_counted_and_ignored() -> None:
    ro = optimized()
    ro.receive_datagram(1.0, encode_mh(BindingError(1, HOA), CN, HOA), CN, HOA)
    ro.receive_datagram(1.0, encode_mh(HomeTestInit(b"\x01" * 8), CN, HOA), CN, HOA)
    assert ro.statistics()["drop_unexpected_mh_type"] == 2
    assert ro.datagrams_to_send(1.0) == []


# -- statuses ------------------------------------------------------------------------------


def test_135_adopts_the_cns_sequence_number_and_resends_at_once() -> None:
    ro = make_ro(initial_sequence=10)
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.2, ba(135, 40000))
    bu2 = single_bu(ro, 0.2)
    assert (bu.sequence, bu2.sequence) == (10, 40001)
    assert ro.get_timer() == pytest.approx(1.2)  # the ladder restarts
    deliver_ba(ro, 0.3, ba(0, 40001))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    assert ro.statistics()["sequence_resync"] == 1


@pytest.mark.parametrize(
    ("status", "rerun"),
    [(136, {"hoti"}), (137, {"coti"}), (138, {"hoti", "coti"})],
)
def test_expired_nonce_statuses_rerun_the_expired_tests_then_resend(
    status: int, rerun: set[str]
) -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.5, ba_plain(status, bu.sequence))  # no BAD (§9.5.4)
    found = inits(ro, 0.5)
    assert {kind for kind, cookies in found.items() if cookies} == rerun
    assert ro.state(CN) == "return-routability"
    home_index, care_index = HOME_INDEX, CARE_INDEX
    new_home, new_care = bytes([0x33]) * 8, bytes([0x44]) * 8
    home_token, care_token = HOME_TOKEN, CARE_TOKEN
    if found["hoti"]:
        home_index, home_token = 8, new_home
        deliver_hot(ro, 0.6, found["hoti"][0][0], index=8, token=new_home)
    if found["coti"]:
        care_index, care_token = 10, new_care
        deliver_cot(ro, 0.6, found["coti"][0][0], index=10, token=new_care)
    kbm = binding_management_key(home_token, care_token)
    bu2 = single_bu(ro, 0.6, kbm=kbm)
    assert bu2.sequence == bu.sequence + 1
    assert bu2.options[0] == NonceIndices(home_index, care_index)
    deliver_ba(ro, 0.7, ba(0, bu2.sequence, kbm=kbm))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    assert ro.statistics()[f"rr_rerun_{status}"] == 1


def test_immediate_resends_are_bounded_per_exchange() -> None:
    ro = make_ro(initial_sequence=10)
    ro.start(0.0, CN, COA)
    run_rr(ro, 0.0)
    for _ in range(MAX_IMMEDIATE_RESENDS):
        deliver_ba(ro, 0.1, ba(135, 500))
        sent(ro, 0.1)
    deliver_ba(ro, 0.1, ba(135, 500))
    assert ro.datagrams_to_send(0.1) == []
    assert ro.statistics()["resend_deferred"] == 1


def test_nonce_statuses_that_keep_coming_count_as_a_rejection() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    for now in (0.4, 0.8, 1.2):  # spaced so MAX_UPDATE_RATE does not hold the HoTIs back
        deliver_ba(ro, now, ba_plain(136, bu.sequence))
        deliver_hot(ro, now, hoti(ro, now))
        bu = single_bu(ro, now)
    deliver_ba(ro, 1.3, ba_plain(136, bu.sequence))
    assert events(ro) == [RouteOptimizationFailed(CN, 136)]
    assert ro.datagrams_to_send(1.3) == []
    assert ro.get_timer() == 61.3
    assert ro.statistics()["rr_rerun_136"] == MAX_IMMEDIATE_RESENDS


@pytest.mark.parametrize("status", [128, 129, 130, 131, 139, 174])
def test_a_rejection_fails_stops_and_retries_after_60_s(status: int) -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.5, ba(status, bu.sequence, lifetime=0))
    assert events(ro) == [RouteOptimizationFailed(CN, status)]
    assert ro.state(CN) == "failed"
    assert ro.datagrams_to_send(0.5) == []
    assert ro.get_timer() == 60.5
    assert ro.statistics()[f"rejected_{status}"] == 1
    # Tokens from 0 s are still fresh at 60.5 s (§5.2.7): the retry is a BU at once.
    ro.handle_timer(60.5)
    assert single_bu(ro, 60.5).sequence == bu.sequence + 1
    assert ro.state(CN) == "binding-update"


def test_start_retries_a_failed_correspondent_at_once() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.5, ba(129, bu.sequence))
    events(ro)
    ro.start(2.0, CN, COA)
    single_bu(ro, 2.0)


def test_start_twice_with_the_same_care_of_address_does_nothing() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    inits(ro, 0.0)
    ro.start(0.5, CN, COA)
    assert ro.datagrams_to_send(0.5) == []
    assert ro.get_timer() == 1.0


# -- tokens, refresh and expiry ------------------------------------------------------------


def test_refresh_runs_rr_again_and_keeps_the_route_optimised() -> None:
    ro = optimized(now=0.0)
    assert ro.get_timer() == 336.0
    ro.handle_timer(336.0)
    # Tokens from 0 s are 336 s old (> MAX_TOKEN_LIFETIME): both tests run again.
    assert ro.state(CN) == "route-optimized"
    bu = run_rr(ro, 336.0)
    assert bu.sequence == 1001
    deliver_ba(ro, 336.2, ba(0, bu.sequence))
    assert events(ro) == [RouteOptimized(CN, COA, 420)]
    assert ro.bindings()[0].expires_at == 756.0
    assert ro.statistics()["refreshes"] == 1


def test_a_refresh_within_the_token_lifetime_reuses_both_tokens() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    bu = run_rr(ro, 0.0)
    deliver_ba(ro, 0.1, ba(0, bu.sequence, lifetime=25))  # the CN grants 100 s
    assert ro.get_timer() == 80.0
    ro.handle_timer(80.0)
    assert single_bu(ro, 80.0).sequence == 1001  # no HoTI, no CoTI


def test_tokens_older_than_210_s_are_never_used() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    deliver_hot(ro, 0.5, found["hoti"][0][0])  # the age counts from the HoTI (0 s)
    deliver_cot(ro, 0.5, found["coti"][0][0])
    single_bu(ro, 0.5)
    times = []
    for _ in range(9):  # every BU is lost
        now = fire(ro)
        single_bu(ro, now)
        times.append(now)
    assert times == [1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 95.5, 127.5, 159.5]
    ro.handle_timer(191.5)
    single_bu(ro, 191.5)
    ro.handle_timer(223.5)
    # 223.5 s after the Inits: no BU with those tokens; RR runs again instead.
    found = inits(ro, 223.5)
    assert (len(found["hoti"]), len(found["coti"])) == (1, 1)
    assert ro.statistics()["tokens_expired"] == 1
    deliver_hot(ro, 223.6, found["hoti"][0][0])
    deliver_cot(ro, 223.6, found["coti"][0][0])
    assert single_bu(ro, 223.6).sequence == 1011


def test_an_unanswered_refresh_expires_the_binding_and_keeps_trying() -> None:
    ro = optimized(now=0.0)
    ro.handle_timer(336.0)
    inits(ro, 336.0)
    for _ in range(6):  # Inits retransmitted at 337, 339, 343, 351, 367, 399
        now = fire(ro)
        inits(ro, now)
    assert now == 399.0
    assert ro.get_timer() == 420.0  # the expiry comes before the next Inits (431)
    ro.handle_timer(420.0)
    assert events(ro) == [RouteOptimizationExpired(CN, COA)]
    assert ro.state(CN) == "return-routability"
    assert ro.bindings(420.0)[0].lifetime_remaining == 0
    assert ro.get_timer() == 431.0
    assert ro.statistics()["bindings_expired"] == 1


def test_a_binding_refresh_request_starts_the_refresh_at_once() -> None:
    ro = optimized(now=0.0)
    ro.receive_datagram(100.0, encode_mh(BindingRefreshRequest(), CN, HOA), CN, HOA)
    assert single_bu(ro, 100.0).sequence == 1001  # tokens still fresh
    assert ro.statistics()["brr_received"] == 1


# -- movement ------------------------------------------------------------------------------


def test_move_reuses_a_fresh_home_token_and_tests_only_the_new_care_of_address() -> None:
    ro = optimized(now=0.0)
    ro.move(50.0, COA2)
    found = inits(ro, 50.0)
    assert found["hoti"] == []
    ((care_cookie, out),) = found["coti"]
    assert out.src == COA2
    assert ro.state(CN) == "return-routability"  # the CN's binding names the old CoA
    deliver_cot(ro, 50.1, care_cookie, coa=COA2)
    bu = single_bu(ro, 50.1, coa=COA2)  # sent from COA2, BAD over COA2
    assert bu.options[0] == NonceIndices(HOME_INDEX, CARE_INDEX)
    deliver_ba(ro, 50.2, ba(0, bu.sequence, coa=COA2))
    assert events(ro) == [RouteOptimized(CN, COA2, 420)]
    assert ro.bindings()[0].care_of == COA2


def test_a_cot_for_the_previous_care_of_address_is_ignored_after_a_move() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    found = inits(ro, 0.0)
    deliver_hot(ro, 0.1, found["hoti"][0][0])
    ro.move(0.2, COA2)
    moved = inits(ro, 0.2)
    deliver_cot(ro, 0.3, found["coti"][0][0], coa=COA)
    assert ro.statistics()["drop_wrong_destination"] == 1
    deliver_cot(ro, 0.4, moved["coti"][0][0], coa=COA2)
    single_bu(ro, 0.4, coa=COA2)


def test_move_after_the_home_token_aged_runs_the_home_test_too() -> None:
    ro = optimized(now=0.0)
    ro.move(210.0, COA2)
    found = inits(ro, 210.0)
    assert (len(found["hoti"]), len(found["coti"])) == (1, 1)


def test_moving_back_to_a_recently_tested_address_needs_no_care_of_test() -> None:
    ro = optimized(now=0.0)
    ro.move(10.0, COA2)
    deliver_cot(ro, 10.1, inits(ro, 10.0)["coti"][0][0], coa=COA2)
    bu = single_bu(ro, 10.1, coa=COA2)
    deliver_ba(ro, 10.2, ba(0, bu.sequence, coa=COA2))
    ro.move(20.0, COA)
    single_bu(ro, 20.0, coa=COA)


def test_move_restarts_rr_with_every_correspondent() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    ro.start(0.0, CN2, COA)
    assert len(sent(ro, 0.0)) == 4
    ro.move(0.5, COA2)
    out = sent(ro, 0.5)
    assert sorted((type(m).__name__, o.src, o.dst) for m, o in out) == [
        ("CareOfTestInit", COA2, CN),
        ("CareOfTestInit", COA2, CN2),
    ]


@pytest.mark.parametrize("call", ["start", "move"])
def test_the_home_address_is_no_care_of_address(call: str) -> None:
    ro = make_ro()
    with pytest.raises(ValueError, match="home address"):
        if call == "start":
            ro.start(0.0, CN, HOA)
        else:
            ro.move(0.0, HOA)


# -- deletion ------------------------------------------------------------------------------


def test_stop_sends_a_deletion_keyed_with_the_home_token_alone() -> None:
    ro = optimized(now=0.0)
    ro.stop(100.0, CN)
    bu = single_bu(ro, 100.0, kbm=KBM_DELETE)  # from the CoA with an HAO, BAD over the HoA
    assert (bu.lifetime, bu.sequence, bu.ack) == (0, 1001, True)
    assert bu.options[0] == NonceIndices(HOME_INDEX, 0)  # §11.7.2: care-of index 0
    assert not any(isinstance(o, AlternateCareOfAddress) for o in bu.options)
    assert ro.state(CN) == "deleting"
    deliver_ba(ro, 100.1, ba(0, 1001, kbm=KBM_DELETE, coa=COA, lifetime=0))  # MAC over CoA
    assert ro.statistics()["drop_bad_auth"] == 1
    deliver_ba(ro, 100.1, ba(0, 1001, kbm=KBM_DELETE, coa=HOA, lifetime=0))
    assert events(ro) == [RouteOptimizationEnded(CN)]
    assert ro.bindings() == []
    assert ro.get_timer() is None


def test_a_deletion_with_a_stale_home_token_runs_only_the_home_test() -> None:
    ro = optimized(now=0.0)
    ro.stop(300.0, CN)
    cookie = hoti(ro, 300.0)
    deliver_hot(ro, 300.1, cookie)
    assert single_bu(ro, 300.1, kbm=KBM_DELETE).lifetime == 0


def test_stop_before_any_bu_ends_at_once() -> None:
    ro = make_ro()
    ro.start(0.0, CN, COA)
    sent(ro, 0.0)
    ro.stop(0.5, CN)
    assert events(ro) == [RouteOptimizationEnded(CN)]
    assert ro.datagrams_to_send(0.5) == []
    assert ro.get_timer() is None
    ro.stop(0.6, CN)  # unknown: ignored
    assert events(ro) == []


def test_an_unanswered_deletion_ends_when_the_cns_binding_must_be_gone() -> None:
    ro = optimized(now=0.0)
    ro.stop(400.0, CN)
    sent(ro, 400.0)  # HoTI: the home token is stale
    times = []
    while (when := ro.get_timer()) is not None and when < 420.0:
        ro.handle_timer(when)
        sent(ro, when)
        times.append(when)
    assert times == [401.0, 403.0, 407.0, 415.0]
    assert ro.get_timer() == 420.0
    ro.handle_timer(420.0)
    assert events(ro) == [RouteOptimizationEnded(CN)]
    assert ro.statistics()["deletions_unconfirmed"] == 1


def test_the_sequence_number_survives_stop_and_start() -> None:
    ro = optimized(now=0.0, seq=500)
    ro.stop(10.0, CN)
    single_bu(ro, 10.0, kbm=KBM_DELETE)
    deliver_ba(ro, 10.1, ba(0, 501, kbm=KBM_DELETE, coa=HOA, lifetime=0))
    ro.start(20.0, CN, COA)
    # A new entry: fresh tokens (§9.5.3: the CN refuses the deleted binding's nonces again).
    assert run_rr(ro, 20.0).sequence == 502


# -- MAX_UPDATE_RATE -----------------------------------------------------------------------


def test_at_most_three_cotis_a_second_per_correspondent_the_rest_is_delayed() -> None:
    ro = make_ro()
    ro.start(10.0, CN, COA)
    sent(ro, 10.0)  # HoTI + CoTI(COA)
    ro.move(10.2, COA2)
    ro.move(10.4, COA3)
    ro.move(10.6, COA)  # a fourth CoTI within the second: postponed, not dropped
    cotis = [(m, o) for m, o in sent(ro, 10.6) if isinstance(m, CareOfTestInit)]
    assert [o.src for _, o in cotis] == [COA2, COA3]
    assert ro.statistics()["rate_limited_coti"] == 1
    assert ro.get_timer() == 11.0  # a second after the first CoTI
    ro.handle_timer(11.0)
    found = inits(ro, 11.0)
    assert [o.src for _, o in found["coti"]] == [COA]
    assert len(found["hoti"]) == 1  # the HoTI's own ladder (10 s, 11 s, 13 s) is undisturbed
    assert ro.get_timer() == 12.0
    ro.handle_timer(12.0)
    assert [o.src for _, o in inits(ro, 12.0)["coti"]] == [COA]
    assert ro.get_timer() == 13.0


def test_at_most_three_bus_a_second_per_correspondent() -> None:
    ro = make_ro(initial_sequence=10)
    ro.start(5.0, CN, COA)
    run_rr(ro, 5.0)  # BU 10
    deliver_ba(ro, 5.1, ba(135, 100))
    single_bu(ro, 5.1)  # BU 101
    deliver_ba(ro, 5.2, ba(135, 200))
    single_bu(ro, 5.2)  # BU 201: three within a second
    deliver_ba(ro, 5.3, ba(135, 300))
    assert ro.datagrams_to_send(5.3) == []
    assert ro.statistics()["rate_limited_bu"] == 1
    assert ro.get_timer() == 6.0
    ro.handle_timer(6.0)
    assert single_bu(ro, 6.0).sequence == 301
    assert ro.get_timer() == 7.0  # the ladder restarted at 1 s


def test_the_rate_limit_is_per_correspondent() -> None:
    ro = make_ro()
    for cn in (CN, CN2):
        ro.start(0.0, cn, COA)
    sent(ro, 0.0)
    ro.move(0.1, COA2)
    ro.move(0.2, COA3)
    assert len(sent(ro, 0.2)) == 4
    assert "rate_limited_coti" not in ro.statistics()


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"lifetime_s": 3},
        {"lifetime_s": 421},
        {"initial_timeout_s": 0},
        {"max_timeout_s": 0.5},
        {"token_lifetime_s": 0},
        {"retry_after_failure_s": 0},
        {"refresh_fraction": 1.0},
        {"refresh_margin_s": -1},
        {"max_update_rate": 0},
    ],
)
def test_config_validation(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoConfig(HOA, **overrides)  # type: ignore[arg-type]


def test_a_short_random_bytes_is_refused() -> None:
    ro = RouteOptimizationCore(RoConfig(HOA), lambda n: b"\x00", 1)
    with pytest.raises(ValueError, match="random_bytes"):
        ro.start(0.0, CN, COA)
