"""Return routability primitives: keygen tokens, Kbm, and the nonce table's lifetimes.

The token and Kbm formulas are checked against ``cryptography``'s HMAC and hash, an
implementation independent of the stdlib ``hmac``/``hashlib`` that rr.py uses.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from hypothesis import given
from hypothesis import strategies as st

from mipnode.core.rr import (
    MAX_NONCE_LIFETIME,
    MAX_RR_BINDING_LIFETIME,
    MAX_TOKEN_LIFETIME,
    MAX_UPDATE_RATE,
    NONCE_LENGTH,
    NONCE_ROTATE_S,
    NonceTable,
    binding_management_key,
    care_of_keygen_token,
    home_keygen_token,
)

KCN = bytes(range(20))
HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:aa::5")
NONCE = bytes.fromhex("0102030405060708")
T0 = 1000.0


def oracle_hmac_sha1(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA1())
    mac.update(data)
    return mac.finalize()


def oracle_sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(data)
    return digest.finalize()


class CountingRandom:
    """Deterministic ``random_bytes``: each call returns a new, distinguishable value."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return self.calls.to_bytes(n, "big")


# -- tokens and Kbm -------------------------------------------------------------------------


def test_the_constants_are_those_of_rfc6275_section_12() -> None:
    assert (MAX_NONCE_LIFETIME, MAX_TOKEN_LIFETIME) == (240, 210)
    assert (MAX_RR_BINDING_LIFETIME, MAX_UPDATE_RATE) == (420, 3)
    assert NONCE_ROTATE_S == 30


def test_the_home_keygen_token_is_hmac_sha1_over_hoa_nonce_and_zero() -> None:
    want = oracle_hmac_sha1(KCN, HOA.packed + NONCE + b"\x00")[:8]
    assert home_keygen_token(KCN, HOA, NONCE) == want


def test_the_care_of_keygen_token_is_hmac_sha1_over_coa_nonce_and_one() -> None:
    want = oracle_hmac_sha1(KCN, COA.packed + NONCE + b"\x01")[:8]
    assert care_of_keygen_token(KCN, COA, NONCE) == want


def test_home_and_care_of_tokens_differ_for_the_same_address_and_nonce() -> None:
    # The final octet keeps a home token from being replayed as a care-of token (§5.2.5).
    assert home_keygen_token(KCN, HOA, NONCE) != care_of_keygen_token(KCN, HOA, NONCE)


def test_kbm_hashes_both_tokens_and_the_home_token_alone_for_a_deletion() -> None:
    home, care_of = bytes(range(8)), bytes(range(8, 16))
    assert binding_management_key(home, care_of) == oracle_sha1(home + care_of)
    assert binding_management_key(home, None) == oracle_sha1(home)
    assert len(binding_management_key(home, None)) == 20


@given(
    kcn=st.binary(min_size=20, max_size=20),
    nonce=st.binary(min_size=8, max_size=8),
    address=st.integers(0, (1 << 128) - 1).map(IPv6Address),
)
def test_tokens_match_the_oracle_for_any_input(
    kcn: bytes, nonce: bytes, address: IPv6Address
) -> None:
    mac = oracle_hmac_sha1(kcn, address.packed + nonce + b"\x00")
    assert home_keygen_token(kcn, address, nonce) == mac[:8]


# -- nonce table ----------------------------------------------------------------------------


def test_the_first_nonce_is_generated_on_first_use_with_the_first_index() -> None:
    rand = CountingRandom()
    table = NonceTable(rand, first_index=7)
    assert len(table) == 0
    index, nonce = table.current(T0)
    assert (index, len(nonce), rand.calls) == (7, NONCE_LENGTH, 1)
    assert table.lookup(7, T0) == nonce
    assert table.expires_at(7) == T0 + MAX_NONCE_LIFETIME


def test_a_new_nonce_is_generated_every_30_seconds_not_per_request() -> None:
    rand = CountingRandom()
    table = NonceTable(rand)
    first = table.current(T0)
    for dt in (0.0, 1.0, 29.999):
        assert table.current(T0 + dt) == first
    second = table.current(T0 + 30)
    assert second[0] == 1 and second[1] != first[1]
    assert rand.calls == 2


def test_an_idle_table_generates_its_next_nonce_on_demand() -> None:
    table = NonceTable(CountingRandom())
    table.current(T0)
    index, _ = table.current(T0 + 1000)  # nothing in between: one new nonce, the next index
    assert index == 1
    assert len(table) == 1  # the old one is gone


def test_a_nonce_is_accepted_until_exactly_240_seconds_after_its_first_use() -> None:
    table = NonceTable(CountingRandom())
    index, nonce = table.current(T0)
    assert table.lookup(index, T0 + MAX_NONCE_LIFETIME) == nonce
    assert table.lookup(index, T0 + MAX_NONCE_LIFETIME + 0.001) is None
    assert table.lookup(index, T0) is None  # pruned for good
    assert table.expires_at(index) is None


def test_an_unknown_index_is_not_found() -> None:
    table = NonceTable(CountingRandom())
    table.current(T0)
    assert table.lookup(1, T0) is None
    assert table.lookup(0xFFFF, T0) is None


@given(issued=st.floats(0, 29.999), checks=st.integers(1, 20))
def test_a_token_stays_usable_at_least_max_token_lifetime_after_it_was_sent(
    issued: float, checks: int
) -> None:
    # RFC 6275 §5.2.7: tokens are acceptable MAX_TOKEN_LIFETIME to MAX_NONCE_LIFETIME seconds
    # after they were sent, depending on when in the nonce's 30 s turn that was.
    table = NonceTable(CountingRandom())
    table.current(T0)
    index, nonce = table.current(T0 + issued)
    assert index == 0
    for k in range(checks + 1):
        now = T0 + issued + MAX_TOKEN_LIFETIME * k / checks
        table.current(now)  # other HoTIs keep rotating the table meanwhile
        assert table.lookup(index, now) == nonce
    assert table.lookup(index, T0 + issued + MAX_NONCE_LIFETIME + 30.001) is None


def test_the_table_holds_at_most_nine_nonces_whatever_the_request_rate() -> None:
    table = NonceTable(CountingRandom())
    now = T0
    while now < T0 + 3600:
        table.current(now)
        assert len(table) <= MAX_NONCE_LIFETIME // NONCE_ROTATE_S + 1
        now += 0.7


def test_indices_wrap_modulo_2_16() -> None:
    table = NonceTable(CountingRandom(), first_index=0xFFFF)
    assert table.current(T0)[0] == 0xFFFF
    assert table.current(T0 + 30)[0] == 0


def test_bad_settings_and_a_short_random_source_are_refused() -> None:
    with pytest.raises(ValueError):
        NonceTable(CountingRandom(), rotate_s=0)
    with pytest.raises(ValueError):
        NonceTable(CountingRandom(), rotate_s=240, lifetime_s=240)
    with pytest.raises(ValueError):
        NonceTable(lambda n: b"\x00").current(T0)
