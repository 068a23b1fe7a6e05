"""CorrespondentCore: return routability, BU validation order, statuses, Binding Errors, timers.

Conformance cases follow TAHI's CN groups (testing.md §2.6) on virtual time: a 241 s jump is one
addition. The mobile node's side is played by the helpers below, built from the wire codecs
and rr.py's formulas (themselves checked against an independent HMAC in test_rr.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

import pytest
from coretest_kit import COA, COA2, HOA, events

from mipnode.core.cn import (
    CnBindingAdded,
    CnBindingRemoved,
    CnBindingState,
    CnBindingUpdated,
    CnCoreConfig,
    CorrespondentCore,
)
from mipnode.core.rr import (
    MAX_NONCE_LIFETIME,
    MAX_TOKEN_LIFETIME,
    binding_management_key,
    care_of_keygen_token,
    home_keygen_token,
)
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
    MobilityOption,
    NonceIndices,
    decode_mh_untrusted,
    encode_mh,
    fill_mh_checksum,
)

CN = IPv6Address("2001:db8:c::1")
CN2 = IPv6Address("2001:db8:c::2")
HOA2 = IPv6Address("2001:db8:1::101")
KCN = bytes(range(20))
OTHER_KCN = bytes(range(1, 21))
COOKIE = bytes.fromhex("c0c0c0c0c0c0c0c0")
T0 = 1000.0


class SeqRandom:
    """Deterministic ``random_bytes``: call k returns k repeated (k = 1, 2, ...)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return bytes([self.calls]) * n


def make_cn(kcn: bytes = KCN, **overrides: object) -> CorrespondentCore:
    fields: dict[str, object] = {"addresses": (CN, CN2)}
    fields.update(overrides)
    return CorrespondentCore(CnCoreConfig(**fields), kcn, SeqRandom())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Tokens:
    """What an MN learnt from one HoT and one CoT."""

    home_index: int
    home_token: bytes
    care_of_index: int
    care_of_token: bytes

    @property
    def kbm(self) -> bytes:
        return binding_management_key(self.home_token, self.care_of_token)

    @property
    def deletion_kbm(self) -> bytes:
        return binding_management_key(self.home_token, None)


def home_test(cn: CorrespondentCore, now: float, hoa: IPv6Address = HOA) -> HomeTest:
    cn.receive_datagram(now, encode_mh(HomeTestInit(COOKIE), hoa, CN), hoa, CN)
    (out,) = cn.datagrams_to_send(now)
    assert (out.src, out.dst, out.care_of, out.via) == (CN, hoa, None, None)
    hot = decode_mh_untrusted(out.data, out.src, out.dst)
    assert isinstance(hot, HomeTest)
    return hot


def care_of_test(cn: CorrespondentCore, now: float, coa: IPv6Address = COA) -> CareOfTest:
    cn.receive_datagram(now, encode_mh(CareOfTestInit(COOKIE), coa, CN), coa, CN)
    (out,) = cn.datagrams_to_send(now)
    assert (out.src, out.dst, out.care_of, out.via) == (CN, coa, None, None)
    cot = decode_mh_untrusted(out.data, out.src, out.dst)
    assert isinstance(cot, CareOfTest)
    return cot


def run_rr(
    cn: CorrespondentCore, now: float, hoa: IPv6Address = HOA, coa: IPv6Address = COA
) -> Tokens:
    hot, cot = home_test(cn, now, hoa), care_of_test(cn, now, coa)
    return Tokens(hot.nonce_index, hot.keygen_token, cot.nonce_index, cot.keygen_token)


def build_bu(
    sequence: int,
    tokens: Tokens,
    *,
    lifetime: int = 105,
    ack: bool = True,
    home: bool = False,
    hoa: IPv6Address = HOA,
    coa: IPv6Address = COA,
    alt: IPv6Address | None = None,
    kbm: bytes | None = None,
    indices: tuple[int, int] | None = None,
    cn: IPv6Address = CN,
) -> bytes:
    """A BU as an MN sends it to a CN: HAO (so the checksum is over the HoA), Nonce Indices,
    optional Alt-CoA, BAD last. A deletion (lifetime 0 or CoA = HoA) signs with the home
    token alone and puts the HoA in the MAC (RFC 6275 §5.2.5, §6.2.7)."""
    care_of = alt if alt is not None else coa
    deletion = lifetime == 0 or care_of == hoa
    if kbm is None:
        kbm = tokens.deletion_kbm if deletion else tokens.kbm
    hni, cni = indices if indices is not None else (tokens.home_index, tokens.care_of_index)
    options: list[MobilityOption] = [NonceIndices(hni, cni)]
    if alt is not None:
        options.append(AlternateCareOfAddress(alt))
    bu = BindingUpdate(sequence, lifetime, ack=ack, home=home, options=tuple(options))
    mac_coa = hoa if deletion else care_of
    return encode_mh_with_bad(bu, hoa, cn, kbm=kbm, coa=mac_coa, cn=cn)


def send_bu(
    cn: CorrespondentCore,
    now: float,
    data: bytes,
    *,
    src: IPv6Address = COA,
    hoa: IPv6Address | None = HOA,
    dst: IPv6Address = CN,
) -> list[OutgoingMh]:
    cn.receive_datagram(now, data, src, dst, home_address=hoa)
    return cn.datagrams_to_send(now)


def check_ba(
    out: list[OutgoingMh],
    kbm: bytes | None,
    *,
    mac_coa: IPv6Address = COA,
    care_of: IPv6Address | None = COA,
    hoa: IPv6Address = HOA,
    local: IPv6Address = CN,
) -> BindingAck:
    """The one BA queued: to the HoA via an RH2 to ``care_of``, BAD verified with ``kbm``
    (``None``: must carry no BAD)."""
    assert len(out) == 1, out
    (reply,) = out
    assert (reply.src, reply.dst, reply.care_of, reply.via) == (local, hoa, care_of, None)
    ba = decode_mh_untrusted(reply.data, reply.src, reply.dst)
    assert isinstance(ba, BindingAck)
    if kbm is None:
        assert not any(isinstance(o, BindingAuthorizationData) for o in ba.options)
    else:
        assert verify_bad(reply.data, kbm=kbm, coa=mac_coa, cn=local)
        assert not ba.key_mgmt
    return ba


def register(
    cn: CorrespondentCore, now: float, sequence: int, **kw: object
) -> tuple[Tokens, BindingAck]:
    tokens = run_rr(cn, now)
    ba = check_ba(send_bu(cn, now, build_bu(sequence, tokens, **kw)), tokens.kbm)  # type: ignore[arg-type]
    return tokens, ba


# -- return routability ---------------------------------------------------------------------


def test_a_hoti_is_answered_with_a_hot_to_the_home_address() -> None:
    cn = make_cn()
    hot = home_test(cn, T0)
    nonce = bytes([1]) * 8  # the first random_bytes call
    assert (hot.nonce_index, hot.cookie) == (0, COOKIE)
    assert hot.keygen_token == home_keygen_token(KCN, HOA, nonce)
    assert cn.statistics()["hot_sent"] == 1
    assert cn.bindings(include_deleted=True) == []


def test_a_coti_is_answered_with_a_cot_to_the_care_of_address() -> None:
    cn = make_cn()
    cot = care_of_test(cn, T0)
    assert (cot.nonce_index, cot.cookie) == (0, COOKIE)
    assert cot.keygen_token == care_of_keygen_token(KCN, COA, bytes([1]) * 8)


def test_the_hot_comes_from_the_address_the_hoti_was_sent_to() -> None:
    cn = make_cn()
    cn.receive_datagram(T0, encode_mh(HomeTestInit(COOKIE), HOA, CN2), HOA, CN2)
    (out,) = cn.datagrams_to_send(T0)
    assert (out.src, out.dst) == (CN2, HOA)


@pytest.mark.parametrize("init", [HomeTestInit(COOKIE), CareOfTestInit(COOKIE)])
def test_a_hoti_or_coti_carrying_a_home_address_option_is_dropped(
    init: HomeTestInit | CareOfTestInit,
) -> None:
    cn = make_cn()
    cn.receive_datagram(T0, encode_mh(init, HOA, CN), COA, CN, home_address=HOA)
    assert cn.datagrams_to_send(T0) == []
    name = "hoti" if isinstance(init, HomeTestInit) else "coti"
    assert cn.statistics()[f"drop_{name}_with_hao"] == 1


def test_a_hoti_flood_keeps_no_per_request_state() -> None:
    cn = make_cn()
    for i in range(5000):
        src = IPv6Address(int(HOA) + i)
        now = T0 + i * 0.1
        cn.receive_datagram(now, encode_mh(HomeTestInit(COOKIE), src, CN), src, CN)
        assert len(cn.datagrams_to_send(now)) == 1
    stats = cn.statistics()
    assert stats["nonces"] <= MAX_NONCE_LIFETIME // 30 + 1
    assert (stats["bindings"], stats["deleted_entries"]) == (0, 0)
    assert cn.get_timer() is None


def test_nonce_indices_advance_every_30_seconds() -> None:
    cn = make_cn()
    assert home_test(cn, T0).nonce_index == 0
    assert home_test(cn, T0 + 29.9).nonce_index == 0
    assert home_test(cn, T0 + 30).nonce_index == 1


# -- registration ---------------------------------------------------------------------------


def test_a_valid_bu_creates_a_binding_and_is_acknowledged_via_rh2() -> None:
    cn = make_cn()
    _, ba = register(cn, T0, 7, lifetime=50)
    assert (ba.status, ba.sequence, ba.lifetime) == (0, 7, 50)
    binding = cn.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.sequence) == (COA, 7)
    assert (binding.lifetime_s, binding.expires_at) == (200, T0 + 200)
    assert (binding.home_nonce_index, binding.care_of_nonce_index) == (0, 0)
    assert binding.state == CnBindingState.REGISTERED
    assert events(cn) == [CnBindingAdded(binding)]
    assert cn.get_timer() == T0 + 200
    assert cn.statistics()["accepted"] == 1
    assert cn.statistics()["registrations"] == 1


def test_the_lifetime_is_capped_at_max_rr_binding_lifetime() -> None:
    cn = make_cn()
    _, ba = register(cn, T0, 1, lifetime=0xFFFF)
    assert ba.lifetime == 105  # 420 s (RFC 6275 §12)
    binding = cn.binding_for(HOA)
    assert binding is not None and binding.lifetime_s == 420


def test_a_configured_cap_below_420_rounds_down_to_4_second_units() -> None:
    cn = make_cn(max_lifetime_s=30)
    _, ba = register(cn, T0, 1, lifetime=100)
    assert ba.lifetime == 7


def test_without_the_a_flag_an_accepted_bu_gets_no_ba() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    assert send_bu(cn, T0, build_bu(1, tokens, ack=False)) == []
    assert cn.binding_for(HOA) is not None
    assert cn.statistics()["accepted"] == 1


def test_an_alternate_care_of_address_is_registered_and_the_ba_goes_to_the_source() -> None:
    cn = make_cn()
    hot, cot = home_test(cn, T0), care_of_test(cn, T0, COA2)  # CoTI run for the Alt-CoA
    tokens = Tokens(hot.nonce_index, hot.keygen_token, cot.nonce_index, cot.keygen_token)
    out = send_bu(cn, T0, build_bu(1, tokens, alt=COA2), src=COA)
    assert check_ba(out, tokens.kbm, mac_coa=COA2, care_of=COA).status == 0
    binding = cn.binding_for(HOA)
    assert binding is not None and binding.care_of_address == COA2


def test_a_refresh_moves_the_binding_and_its_expiry() -> None:
    cn = make_cn()
    register(cn, T0, 1, lifetime=50)
    first = cn.binding_for(HOA)
    events(cn)
    tokens = run_rr(cn, T0 + 100, coa=COA2)
    out = send_bu(cn, T0 + 100, build_bu(2, tokens, coa=COA2), src=COA2)
    assert check_ba(out, tokens.kbm, mac_coa=COA2, care_of=COA2).status == 0
    binding = cn.binding_for(HOA)
    assert binding is not None
    assert (binding.care_of_address, binding.sequence, binding.expires_at) == (
        COA2,
        2,
        T0 + 100 + 420,
    )
    assert (binding.home_nonce_index, binding.care_of_nonce_index) == (1, 1)  # generated on demand
    assert events(cn) == [CnBindingUpdated(binding, first)]  # type: ignore[arg-type]
    cn.handle_timer(T0 + 200)  # the first deadline is stale
    assert cn.binding_for(HOA) is not None


def test_a_bu_sent_to_a_second_cn_address_is_signed_and_answered_from_it() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    out = send_bu(cn, T0, build_bu(1, tokens, cn=CN2), dst=CN2)
    assert check_ba(out, tokens.kbm, local=CN2).status == 0


# -- RFC 6275 §9.5.1 sequence window (TAHI CN seq valid / less / equal / too far ahead) ------


@pytest.mark.parametrize(
    ("last", "received", "accepted"),
    [
        (15, 16, True),
        (15, 32782, True),
        (15, 14, False),
        (15, 15, False),
        (15, 32783, False),
        (15, 32784, False),
        (32783, 32784, True),
        (32783, 14, True),
        (32783, 15, False),
        (32783, 16, False),
        (32783, 32782, False),
        (32783, 32783, False),
    ],
)
@pytest.mark.parametrize("ack", [True, False])
def test_the_sequence_window_follows_rfc6275_section_9_5_1(
    last: int, received: int, accepted: bool, ack: bool
) -> None:
    cn = make_cn()
    tokens, _ = register(cn, T0, last)
    out = send_bu(cn, T0 + 1, build_bu(received, tokens, ack=ack))
    binding = cn.binding_for(HOA)
    assert binding is not None
    if accepted:
        assert binding.sequence == received
        if ack:
            assert check_ba(out, tokens.kbm).status == 0
        else:
            assert out == []  # §9.5.4: no BA for an accepted BU with A = 0
    else:
        # 135 is sent whatever A says, carries the last accepted number and BAD (§9.5.4).
        ba = check_ba(out, tokens.kbm)
        assert (ba.status, ba.sequence) == (135, last)
        assert binding.sequence == last


def test_with_no_entry_any_sequence_number_is_accepted() -> None:
    for seq in (0, 1, 32768, 65535):
        cn = make_cn()
        _, ba = register(cn, T0, seq)
        assert (ba.status, ba.sequence) == (0, seq)


# -- nonce and token lifetimes (TAHI CN-4-x; testing.md C9) ---------------------------------


def test_a_jump_of_241_s_between_hot_and_bu_gives_138() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    now = T0 + MAX_NONCE_LIFETIME + 1
    ba = check_ba(send_bu(cn, now, build_bu(1, tokens)), None)
    assert (ba.status, ba.sequence) == (138, 1)
    assert cn.bindings(include_deleted=True) == []
    assert cn.statistics()["rejected_138"] == 1


def test_an_expired_home_nonce_alone_gives_136() -> None:
    cn = make_cn()
    hot = home_test(cn, T0)
    cot = care_of_test(cn, T0 + 200)
    tokens = Tokens(hot.nonce_index, hot.keygen_token, cot.nonce_index, cot.keygen_token)
    ba = check_ba(send_bu(cn, T0 + 241, build_bu(1, tokens)), None)
    assert ba.status == 136
    assert cn.binding_for(HOA) is None


def test_an_expired_care_of_nonce_alone_gives_137() -> None:
    cn = make_cn()
    cot = care_of_test(cn, T0)
    hot = home_test(cn, T0 + 200)
    tokens = Tokens(hot.nonce_index, hot.keygen_token, cot.nonce_index, cot.keygen_token)
    ba = check_ba(send_bu(cn, T0 + 241, build_bu(1, tokens)), None)
    assert ba.status == 137


def test_a_deletion_with_an_expired_home_nonce_gives_136() -> None:
    cn = make_cn()
    tokens, _ = register(cn, T0, 1)
    ba = check_ba(send_bu(cn, T0 + 241, build_bu(2, tokens, lifetime=0)), None)
    assert ba.status == 136
    assert cn.binding_for(HOA) is not None  # still there: nothing authenticated the deletion


def test_unknown_nonce_indices_give_138_without_state() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    ba = check_ba(send_bu(cn, T0, build_bu(1, tokens, indices=(7, 9))), None)
    assert ba.status == 138
    assert cn.bindings(include_deleted=True) == []


def test_a_token_is_accepted_210_s_after_it_was_issued_late_in_its_nonce_turn() -> None:
    cn = make_cn()
    home_test(cn, T0)  # the nonce is generated here ...
    tokens = run_rr(cn, T0 + 29.9)  # ... and these tokens are issued at the end of its turn
    assert tokens.home_index == 0
    (_,) = out = send_bu(cn, T0 + 29.9 + MAX_TOKEN_LIFETIME, build_bu(1, tokens))
    assert check_ba(out, tokens.kbm).status == 0


def test_a_nonce_is_accepted_until_exactly_240_s_after_its_first_use() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    out = send_bu(cn, T0 + MAX_NONCE_LIFETIME, build_bu(1, tokens))
    assert check_ba(out, tokens.kbm).status == 0


def test_expired_nonce_acknowledgements_are_rate_limited_per_destination() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    now = T0 + 300
    assert len(send_bu(cn, now, build_bu(1, tokens))) == 1
    assert send_bu(cn, now + 0.5, build_bu(2, tokens)) == []
    assert len(send_bu(cn, now + 1.0, build_bu(3, tokens))) == 1
    assert cn.statistics()["nonce_ba_rate_limited"] == 1


# -- H flag ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ack", [True, False])
def test_a_home_registration_to_a_cn_gets_131(ack: bool) -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    ba = check_ba(send_bu(cn, T0, build_bu(1, tokens, home=True, ack=ack)), tokens.kbm)
    assert (ba.status, ba.sequence) == (131, 1)  # RFC 6275 §10.3.1, whatever A says
    assert cn.bindings(include_deleted=True) == []
    assert events(cn) == []


def test_a_home_registration_for_a_bound_home_address_gets_139() -> None:
    cn = make_cn()
    tokens, _ = register(cn, T0, 1)
    ba = check_ba(send_bu(cn, T0, build_bu(2, tokens, home=True)), tokens.kbm)
    assert ba.status == 139  # RFC 6275 §9.5.1: registration type change disallowed
    binding = cn.binding_for(HOA)
    assert binding is not None and binding.sequence == 1


def test_an_unauthenticated_home_registration_is_dropped_silently() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    data = build_bu(1, tokens, home=True, kbm=bytes(20))
    assert send_bu(cn, T0, data) == []
    assert cn.statistics()["drop_bad_authenticator"] == 1


# -- authentication -------------------------------------------------------------------------


def test_every_single_bit_flip_of_the_authenticator_is_dropped_without_state() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    good = build_bu(1, tokens)
    for bit in range(96):
        data = bytearray(good)
        data[len(data) - 12 + bit // 8] ^= 0x80 >> (bit % 8)
        # keep the checksum right so that only the authenticator is wrong
        raw = bytes(data[:4]) + b"\x00\x00" + bytes(data[6:])
        assert send_bu(cn, T0, fill_mh_checksum(raw, HOA, CN)) == []
    assert cn.statistics()["drop_bad_authenticator"] == 96
    assert cn.bindings(include_deleted=True) == []
    assert events(cn) == []
    assert cn.get_timer() is None
    assert check_ba(send_bu(cn, T0, good), tokens.kbm).status == 0


@pytest.mark.parametrize(
    "tamper",
    [
        "other_hoa",
        "other_coa",
        "other_kcn",
        "deletion_kbm_for_a_registration",
        "both_tokens_for_a_deletion",
        "mac_with_coa_for_a_deletion",
    ],
)
def test_a_bu_authorised_for_something_else_is_dropped(tamper: str) -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    data, src, hoa = build_bu(1, tokens), COA, HOA
    if tamper == "other_hoa":
        hoa = HOA2
        data = build_bu(1, tokens, hoa=HOA2)
    elif tamper == "other_coa":
        src = COA2
        data = build_bu(1, tokens, coa=COA2)
    elif tamper == "other_kcn":
        other = make_cn(OTHER_KCN)
        data = build_bu(1, run_rr(other, T0))
    elif tamper == "deletion_kbm_for_a_registration":
        data = build_bu(1, tokens, kbm=tokens.deletion_kbm)
    elif tamper == "both_tokens_for_a_deletion":
        data = build_bu(1, tokens, lifetime=0, kbm=tokens.kbm)
    else:
        bu = BindingUpdate(1, 0, ack=True, options=(NonceIndices(0, 0),))
        data = encode_mh_with_bad(bu, HOA, CN, kbm=tokens.deletion_kbm, coa=COA, cn=CN)
    assert send_bu(cn, T0, data, src=src, hoa=hoa) == []
    assert cn.statistics()["drop_bad_authenticator"] == 1
    assert cn.bindings(include_deleted=True) == []


def test_a_cn_restart_makes_old_bus_fail() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    data = build_bu(1, tokens)
    restarted = make_cn(OTHER_KCN)  # a restart: new Kcn, empty cache, fresh nonce table
    assert check_ba(send_bu(restarted, T0, data), None).status == 138  # index not known
    run_rr(restarted, T0 + 1)  # now index 0 names a new nonce under a new Kcn
    assert send_bu(restarted, T0 + 1, data) == []
    assert restarted.statistics()["drop_bad_authenticator"] == 1


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ((), "missing_nonce_indices"),
        ((NonceIndices(0, 0),), "missing_bad"),
        ((BindingAuthorizationData(bytes(12)),), "missing_nonce_indices"),
    ],
)
def test_a_bu_without_rr_options_is_dropped(
    options: tuple[MobilityOption, ...], reason: str
) -> None:
    cn = make_cn()
    run_rr(cn, T0)
    data = encode_mh(BindingUpdate(1, 10, ack=True, options=options), HOA, CN)
    assert send_bu(cn, T0, data) == []
    assert cn.statistics()[f"drop_{reason}"] == 1


def test_a_bu_whose_bad_option_is_not_last_is_dropped() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    good = bytearray(build_bu(1, tokens))
    good[1] += 1  # one more 8-octet unit: a PadN of 8 after the BAD option
    raw = bytes(good[:4]) + b"\x00\x00" + bytes(good[6:]) + bytes([1, 6]) + bytes(6)
    assert send_bu(cn, T0, fill_mh_checksum(raw, HOA, CN)) == []
    # The decoder drops padding, so verify_bad is what sees the trailing PadN (§6.2.7).
    assert cn.statistics()["drop_bad_authenticator"] == 1
    assert cn.bindings(include_deleted=True) == []


def test_a_registration_without_a_home_address_option_is_dropped() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    data = build_bu(1, tokens, hoa=COA, alt=COA2)
    assert send_bu(cn, T0, data, src=COA, hoa=None) == []
    assert cn.statistics()["drop_bu_without_hao"] == 1


@pytest.mark.parametrize(
    "address", ["ff02::1", "::1", "fe80::1", "::", "::ffff:192.0.2.1"], ids=str
)
def test_a_bu_for_a_home_address_that_is_not_unicast_routable_is_dropped(address: str) -> None:
    cn = make_cn()
    hoa = IPv6Address(address)
    tokens = run_rr(cn, T0)
    assert send_bu(cn, T0, build_bu(1, tokens, hoa=hoa), hoa=hoa) == []
    assert cn.statistics()["drop_bad_address"] == 1


def test_an_mh_with_a_wrong_checksum_is_dropped() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    bu = BindingUpdate(1, 10, ack=True, options=(NonceIndices(0, 0),))
    data = encode_mh_with_bad(bu, COA, CN, kbm=tokens.kbm, coa=COA, cn=CN)  # not over the HoA
    assert send_bu(cn, T0, data) == []
    assert cn.statistics()["drop_bad_checksum"] == 1


def test_an_mh_to_an_address_that_is_not_ours_is_dropped() -> None:
    cn = make_cn()
    other = IPv6Address("2001:db8:c::99")
    cn.receive_datagram(T0, encode_mh(HomeTestInit(COOKIE), HOA, other), HOA, other)
    assert cn.datagrams_to_send(T0) == []
    assert cn.statistics()["drop_not_our_address"] == 1


@pytest.mark.parametrize(
    "msg",
    [
        BindingRefreshRequest(),
        BindingAck(0, 1, 10),
        BindingError(1, HOA),
        HomeTest(0, COOKIE, COOKIE),
        CareOfTest(0, COOKIE, COOKIE),
    ],
    ids=lambda m: type(m).__name__,
)
def test_messages_a_cn_does_not_take_are_dropped(msg: object) -> None:
    cn = make_cn()
    cn.receive_datagram(T0, encode_mh(msg, COA, CN), COA, CN)  # type: ignore[arg-type]
    assert cn.datagrams_to_send(T0) == []
    assert cn.statistics()["drop_unexpected_mh_type"] == 1


# -- deletion -------------------------------------------------------------------------------


def test_deregistration_with_the_home_token_alone() -> None:
    cn = make_cn()
    register(cn, T0, 1)
    events(cn)
    hot = home_test(cn, T0 + 60)  # only the home test is re-run
    tokens = Tokens(hot.nonce_index, hot.keygen_token, 0xBEEF, b"")
    # The care-of nonce index is ignored for a deletion (§6.2.6): 0xBEEF names no nonce.
    out = send_bu(cn, T0 + 60, build_bu(2, tokens, lifetime=0, indices=(hot.nonce_index, 0xBEEF)))
    ba = check_ba(out, tokens.deletion_kbm, mac_coa=HOA)  # §6.2.7: the HoA in the MAC
    assert (ba.status, ba.sequence, ba.lifetime) == (0, 2, 0)
    assert cn.binding_for(HOA) is None
    assert events(cn) == [CnBindingRemoved(HOA, "deregistered")]
    (kept,) = cn.bindings(include_deleted=True)
    assert (kept.state, kept.sequence, kept.care_of_nonce_index) == ("deleted", 2, None)
    assert kept.expires_at == T0 + 60 + MAX_NONCE_LIFETIME


def test_returning_home_deletes_with_a_bu_from_the_home_address() -> None:
    cn = make_cn()
    tokens, _ = register(cn, T0, 1)
    events(cn)
    data = build_bu(2, tokens, coa=HOA)  # CoA = HoA: a deletion (§9.5.1), no HAO
    ba = check_ba(
        send_bu(cn, T0 + 5, data, src=HOA, hoa=None), tokens.deletion_kbm, mac_coa=HOA, care_of=None
    )
    assert ba.status == 0
    assert cn.binding_for(HOA) is None
    assert events(cn) == [CnBindingRemoved(HOA, "deregistered")]


def test_a_replayed_registration_after_deletion_gets_135_until_its_nonces_expire() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    registration = build_bu(1, tokens)
    send_bu(cn, T0, registration)
    send_bu(cn, T0 + 10, build_bu(2, tokens, lifetime=0))
    events(cn)
    ba = check_ba(send_bu(cn, T0 + 20, registration), tokens.kbm)
    assert (ba.status, ba.sequence) == (135, 2)
    assert cn.binding_for(HOA) is None

    cn.handle_timer(T0 + 10 + MAX_NONCE_LIFETIME)  # the deleted entry is purged ...
    assert cn.bindings(include_deleted=True) == []
    assert events(cn) == []
    out = send_bu(cn, T0 + 10 + MAX_NONCE_LIFETIME, registration)
    assert check_ba(out, None).status == 138  # ... when the replay can no longer verify
    assert cn.binding_for(HOA) is None


def test_deleting_an_unknown_binding_is_acknowledged_and_remembered() -> None:
    cn = make_cn()
    tokens = run_rr(cn, T0)
    ba = check_ba(
        send_bu(cn, T0, build_bu(5, tokens, lifetime=0)), tokens.deletion_kbm, mac_coa=HOA
    )
    assert ba.status == 0
    assert events(cn) == []
    (kept,) = cn.bindings(include_deleted=True)
    assert (kept.state, kept.sequence) == ("deleted", 5)
    assert check_ba(send_bu(cn, T0, build_bu(4, tokens)), tokens.kbm).status == 135


# -- expiry ---------------------------------------------------------------------------------


def test_a_binding_expires_exactly_at_its_deadline_and_its_sequence_is_kept() -> None:
    cn = make_cn()
    tokens, _ = register(cn, T0, 9, lifetime=25)
    events(cn)
    assert cn.get_timer() == T0 + 100
    cn.handle_timer(T0 + 99.999)
    assert cn.binding_for(HOA) is not None
    cn.handle_timer(T0 + 100)
    assert cn.binding_for(HOA) is None
    assert events(cn) == [CnBindingRemoved(HOA, "expired")]
    assert cn.get_timer() == T0 + 100 + MAX_NONCE_LIFETIME
    assert check_ba(send_bu(cn, T0 + 101, build_bu(9, tokens)), tokens.kbm).status == 135
    cn.handle_timer(T0 + 100 + MAX_NONCE_LIFETIME)
    assert cn.bindings(include_deleted=True) == []
    assert cn.get_timer() is None
    assert cn.statistics()["expirations"] == 1


def test_a_data_packet_after_expiry_is_refused() -> None:
    cn = make_cn()
    register(cn, T0, 1, lifetime=25)
    assert cn.check_home_address(T0 + 99, COA, HOA)
    cn.datagrams_to_send(T0 + 99)
    assert not cn.check_home_address(T0 + 100, COA, HOA)


# -- cache limit ----------------------------------------------------------------------------


def test_a_full_cache_answers_130_to_a_new_home_address_only() -> None:
    cn = make_cn(max_bindings=1)
    register(cn, T0, 1)
    tokens = run_rr(cn, T0, hoa=HOA2)
    data = build_bu(1, tokens, hoa=HOA2, ack=False)
    ba = check_ba(send_bu(cn, T0, data, hoa=HOA2), tokens.kbm, hoa=HOA2)
    assert ba.status == 130  # sent although A = 0 (§9.5.4)
    assert cn.binding_for(HOA2) is None
    tokens = run_rr(cn, T0 + 1)
    assert check_ba(send_bu(cn, T0 + 1, build_bu(2, tokens)), tokens.kbm).status == 0


# -- Binding Errors -------------------------------------------------------------------------


def single_be(cn: CorrespondentCore, now: float, dst: IPv6Address) -> BindingError:
    (out,) = cn.datagrams_to_send(now)
    assert (out.src, out.dst, out.care_of, out.via) == (CN, dst, None, None)
    be = decode_mh_untrusted(out.data, out.src, out.dst)
    assert isinstance(be, BindingError)
    return be


def test_a_home_address_option_without_a_binding_gets_binding_error_1() -> None:
    cn = make_cn()
    assert not cn.check_home_address(T0, COA, HOA)
    be = single_be(cn, T0, COA)
    assert (be.status, be.home_address) == (1, HOA)
    assert cn.statistics()["drop_hao_without_binding"] == 1


def test_binding_error_1_is_rate_limited_to_one_per_second_per_destination() -> None:
    cn = make_cn()
    assert not cn.check_home_address(T0, COA, HOA)
    single_be(cn, T0, COA)
    assert not cn.check_home_address(T0 + 0.5, COA, HOA)
    assert not cn.check_home_address(T0 + 0.9, COA, HOA2)
    assert cn.datagrams_to_send(T0 + 0.9) == []
    assert not cn.check_home_address(T0 + 0.9, COA2, HOA)  # another destination
    single_be(cn, T0 + 0.9, COA2)
    assert not cn.check_home_address(T0 + 1.0, COA, HOA)
    single_be(cn, T0 + 1.0, COA)
    assert cn.statistics()["be_rate_limited"] == 2


def test_binding_errors_to_many_spoofed_sources_are_globally_bounded() -> None:
    cn = make_cn()
    for i in range(2000):
        cn.check_home_address(T0 + i * 0.001, IPv6Address(int(COA) + i), HOA)
    sent = len(cn.datagrams_to_send(T0 + 2))
    assert sent <= 10 + 10 * 2  # burst + rate x 2 s
    assert cn.statistics()["be_sent_1"] == sent


def test_a_home_address_option_with_the_bound_care_of_address_is_accepted() -> None:
    cn = make_cn()
    register(cn, T0, 1)
    assert cn.check_home_address(T0 + 1, COA, HOA)
    assert not cn.check_home_address(T0 + 1, COA2, HOA)  # not the registered CoA
    single_be(cn, T0 + 1, COA2)


def test_the_binding_error_comes_from_the_address_the_packet_was_sent_to() -> None:
    cn = make_cn()
    assert not cn.check_home_address(T0, COA, HOA, local=CN2)
    (out,) = cn.datagrams_to_send(T0)
    assert out.src == CN2


def test_an_unknown_mh_type_gets_binding_error_2() -> None:
    cn = make_cn()
    data = fill_mh_checksum(bytes([59, 0, 42, 0, 0, 0, 0, 0]), COA, CN)
    cn.receive_datagram(T0, data, COA, CN)
    be = single_be(cn, T0, COA)
    assert (be.status, be.home_address) == (2, IPv6Address("::"))
    cn.receive_datagram(T0 + 0.1, data, COA, CN)
    assert cn.datagrams_to_send(T0 + 0.1) == []  # rate-limited
    assert cn.statistics()["be_rate_limited"] == 1


def test_an_unknown_mh_type_with_a_home_address_option_names_the_hoa() -> None:
    cn = make_cn()
    data = fill_mh_checksum(bytes([59, 0, 42, 0, 0, 0, 0, 0]), HOA, CN)
    cn.receive_datagram(T0, data, COA, CN, home_address=HOA)
    be = single_be(cn, T0, COA)
    assert (be.status, be.home_address) == (2, HOA)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"addresses": ()},
        {"max_lifetime_s": 424},
        {"max_lifetime_s": 3},
        {"max_bindings": 0},
        {"error_interval_s": 0},
    ],
)
def test_bad_configuration_is_refused(overrides: dict[str, object]) -> None:
    fields: dict[str, object] = {"addresses": (CN,)}
    fields.update(overrides)
    with pytest.raises(ValueError):
        CnCoreConfig(**fields)  # type: ignore[arg-type]


def test_kcn_must_be_20_octets() -> None:
    with pytest.raises(ValueError):
        CorrespondentCore(CnCoreConfig((CN,)), bytes(16), SeqRandom())
