"""Hypothesis state machine: the CN's RR binding cache against a small reference model.

The model restates the rules independently: nonces made on demand every 30 s and valid 240 s,
the nonce check before authentication, sequence numbers through a signed 16-bit difference,
H=1 answered with 131/139, lifetimes capped at 420 s, removed bindings kept ``deleted`` for
240 s, a cap on entries (130), and a restart as a new core with a new Kcn. BUs are built on
the MN side from the tokens the core handed out; any BU sent earlier may be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from coretest_kit import events
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mipnode.core.cn import (
    CnBindingAdded,
    CnBindingRemoved,
    CnBindingUpdated,
    CnCoreConfig,
    CorrespondentCore,
)
from mipnode.core.rr import binding_management_key
from mipnode.wire.bad import encode_mh_with_bad, verify_bad
from mipnode.wire.mh import (
    AlternateCareOfAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingUpdate,
    CareOfTest,
    CareOfTestInit,
    HomeTest,
    HomeTestInit,
    MobilityOption,
    NonceIndices,
    decode_mh_untrusted,
    encode_mh,
)

CN = IPv6Address("2001:db8:c::1")
HOAS = [IPv6Address(f"2001:db8:1::{i:x}") for i in (0x100, 0x101, 0x102)]
COAS = [IPv6Address("2001:db8:aa::5"), IPv6Address("2001:db8:bb::7")]
COOKIE = bytes(8)
MAX_UNITS = 105  # 420 s
NONCE_LIFETIME = 240.0
ROTATE = 30.0
MAX_BINDINGS = 2
ERROR_INTERVAL = 1.0  # per destination; the global bucket is configured out of the way
ALWAYS = {130, 131, 135, 136, 137, 138, 139}


def model_newer(received: int, last: int) -> bool:
    diff = (received - last + 0x8000) % 0x10000 - 0x8000  # signed, in -32768..32767
    return diff > 0


def same_events(got: list[object], want: list[object]) -> bool:
    """Equal up to order: expiries falling due together may come out in any order."""
    return sorted(map(repr, got)) == sorted(map(repr, want))


class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def __call__(self, n: int) -> bytes:
        self.n += 1
        return (self.n % 251 + 1).to_bytes(1, "big") * n


@dataclass
class ModelEntry:
    sequence: int
    care_of: IPv6Address
    deadline: float
    deleted: bool


@dataclass(frozen=True)
class Token:
    index: int
    token: bytes
    generation: int


@dataclass(frozen=True)
class SentBu:
    data: bytes
    src: IPv6Address
    hao: IPv6Address | None
    hoa: IPv6Address
    care_of: IPv6Address
    sequence: int
    units: int
    ack: bool
    home: bool
    deletion: bool
    indices: tuple[int, int]
    generation: int
    kbm: bytes


class CnCacheMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.now = 1000.0
        self.generation = -1
        self.sent: list[SentBu] = []
        self.last_seq = dict.fromkeys(HOAS, 0)
        self.restart()

    # -- model helpers --------------------------------------------------------------------

    def model_current_nonce(self) -> int:
        if not self.nonces or self.now - self.nonces[-1][1] >= ROTATE:
            self.nonces.append((len(self.nonces), self.now))
        return self.nonces[-1][0]

    def model_nonce_valid(self, index: int) -> bool:
        return any(i == index and self.now - t <= NONCE_LIFETIME for i, t in self.nonces)

    def model_allow(self, sent: dict[IPv6Address, float], destination: IPv6Address) -> bool:
        last = sent.get(destination)
        if last is not None and self.now - last < ERROR_INTERVAL:
            return False
        sent[destination] = self.now
        return True

    def model_expire(self) -> list[object]:
        expected: list[object] = []
        changed = True
        while changed:
            changed = False
            for hoa, entry in list(self.model.items()):
                if entry.deadline > self.now:
                    continue
                changed = True
                if entry.deleted:
                    del self.model[hoa]
                else:
                    entry.deleted = True
                    entry.deadline += NONCE_LIFETIME
                    expected.append(CnBindingRemoved(hoa, "expired"))
        return expected

    def model_bu(self, bu: SentBu) -> tuple[int | None, int, int, list[type]]:
        """Expected (status or None for a silent drop, BA sequence, BA lifetime, events)."""
        hni, cni = bu.indices
        home_bad = not self.model_nonce_valid(hni)
        care_bad = not bu.deletion and not self.model_nonce_valid(cni)
        if home_bad or care_bad:
            return (138 if home_bad and care_bad else 136 if home_bad else 137), bu.sequence, 0, []
        if bu.generation != self.generation:
            return None, 0, 0, []  # another Kcn: the authenticator cannot verify
        entry = self.model.get(bu.hoa)
        if entry is not None and not model_newer(bu.sequence, entry.sequence):
            return 135, entry.sequence, 0, []
        if bu.home:
            registered = entry is not None and not entry.deleted
            return (139 if registered else 131), bu.sequence, 0, []
        if bu.deletion:
            if entry is None:
                if len(self.model) < MAX_BINDINGS:
                    self.model[bu.hoa] = ModelEntry(
                        bu.sequence, bu.care_of, self.now + NONCE_LIFETIME, True
                    )
                return 0, bu.sequence, 0, []
            was_live = not entry.deleted
            entry.sequence, entry.deleted = bu.sequence, True
            entry.deadline = self.now + NONCE_LIFETIME
            return 0, bu.sequence, 0, [CnBindingRemoved] if was_live else []
        if entry is None and len(self.model) >= MAX_BINDINGS:
            return 130, bu.sequence, 0, []
        granted = min(bu.units, MAX_UNITS)
        fresh = entry is None or entry.deleted
        self.model[bu.hoa] = ModelEntry(bu.sequence, bu.care_of, self.now + granted * 4, False)
        return 0, bu.sequence, granted, [CnBindingAdded if fresh else CnBindingUpdated]

    # -- driving the core -----------------------------------------------------------------

    def deliver(self, bu: SentBu) -> None:
        expected_events = self.model_expire()
        status, ba_seq, ba_lifetime, event_types = self.model_bu(bu)
        hypothesis_event(f"status {status}")
        self.cn.receive_datagram(self.now, bu.data, bu.src, CN, home_address=bu.hao)
        out = self.cn.datagrams_to_send(self.now)
        unsigned = status in {136, 137, 138}
        reply_to = bu.src if bu.hao is not None else bu.hoa
        limited = unsigned and not self.model_allow(self.nonce_ba_sent, reply_to)
        if status is None or limited or (status not in ALWAYS and not bu.ack):
            assert out == []
        else:
            (reply,) = out
            assert (reply.src, reply.dst, reply.care_of) == (CN, bu.hoa, bu.hao and bu.src)
            ba = decode_mh_untrusted(reply.data, reply.src, reply.dst)
            assert isinstance(ba, BindingAck)
            assert (ba.status, ba.sequence, ba.lifetime) == (status, ba_seq, ba_lifetime)
            signed = any(isinstance(o, BindingAuthorizationData) for o in ba.options)
            assert signed == (not unsigned)
            if signed:
                mac_coa = bu.hoa if bu.deletion else bu.care_of
                assert verify_bad(reply.data, kbm=bu.kbm, coa=mac_coa, cn=CN)
        got = events(self.cn)
        assert same_events(got[: len(expected_events)], expected_events)
        assert [type(e) for e in got[len(expected_events) :]] == event_types

    # -- rules ----------------------------------------------------------------------------

    @rule()
    def restart(self) -> None:
        """A CN restart: a new core, a new Kcn, an empty cache and nonce table."""
        self.generation += 1
        kcn = bytes([self.generation % 256]) * 20
        config = CnCoreConfig(
            (CN,), max_bindings=MAX_BINDINGS, error_interval_s=ERROR_INTERVAL, error_rate_per_s=1e9
        )
        self.cn = CorrespondentCore(config, kcn, Counter(self.generation * 1000))
        self.model: dict[IPv6Address, ModelEntry] = {}
        self.nonces: list[tuple[int, float]] = []
        self.home_tokens: dict[IPv6Address, Token] = {}
        self.be_sent: dict[IPv6Address, float] = {}
        self.nonce_ba_sent: dict[IPv6Address, float] = {}
        self.care_of_tokens: dict[IPv6Address, Token] = {}

    @rule(index=st.integers(0, len(HOAS) - 1))
    def home_test(self, index: int) -> None:
        hoa = HOAS[index]
        self.cn.receive_datagram(self.now, encode_mh(HomeTestInit(COOKIE), hoa, CN), hoa, CN)
        (out,) = self.cn.datagrams_to_send(self.now)
        hot = decode_mh_untrusted(out.data, out.src, out.dst)
        assert isinstance(hot, HomeTest)
        assert hot.nonce_index == self.model_current_nonce()
        self.home_tokens[hoa] = Token(hot.nonce_index, hot.keygen_token, self.generation)

    @rule(index=st.integers(0, len(COAS) - 1))
    def care_of_test(self, index: int) -> None:
        coa = COAS[index]
        self.cn.receive_datagram(self.now, encode_mh(CareOfTestInit(COOKIE), coa, CN), coa, CN)
        (out,) = self.cn.datagrams_to_send(self.now)
        cot = decode_mh_untrusted(out.data, out.src, out.dst)
        assert isinstance(cot, CareOfTest)
        assert cot.nonce_index == self.model_current_nonce()
        self.care_of_tokens[coa] = Token(cot.nonce_index, cot.keygen_token, self.generation)

    @rule(
        index=st.integers(0, len(HOAS) - 1),
        coa_index=st.integers(0, len(COAS) - 1),
        kind=st.sampled_from(["register", "register", "delete", "coa_is_hoa", "from_home"]),
        offset=st.one_of(
            st.sampled_from([1, 2, 32767, 32768, 32769, 0, -1, 65535]),
            st.integers(-40000, 40000),
        ),
        units=st.sampled_from([1, 3, 25, 105, 0xFFFF]),
        ack=st.booleans(),
        home=st.sampled_from([False] * 7 + [True]),
        fresh=st.sampled_from(["both", "none", "home", "care_of"]),
    )
    def send_bu(
        self,
        index: int,
        coa_index: int,
        kind: str,
        offset: int,
        units: int,
        ack: bool,
        home: bool,
        fresh: str,
    ) -> None:
        hoa, coa = HOAS[index], COAS[coa_index]
        if fresh in ("both", "home") or hoa not in self.home_tokens:
            self.home_test(index)
        if fresh in ("both", "care_of") or coa not in self.care_of_tokens:
            self.care_of_test(coa_index)
        home_token = self.home_tokens.get(hoa)
        care_of_token = self.care_of_tokens.get(coa)
        deletion = kind != "register"
        assert home_token is not None and care_of_token is not None
        entry = self.model.get(hoa)
        seq = ((entry.sequence if entry else self.last_seq[hoa]) + offset) % 0x10000
        self.last_seq[hoa] = seq
        units = 0 if kind == "delete" else units
        src, hao, alt = coa, hoa, None
        if kind == "coa_is_hoa":
            alt = hoa  # an Alt-CoA equal to the HoA asks for deletion (§9.5.1)
        elif kind == "from_home":
            src, hao = hoa, None  # back home: no HAO, CoA = source = HoA
        care_of = alt or src
        hni = home_token.index
        if deletion or care_of_token is None:
            cni, care_token, generation = 0, None, home_token.generation
        else:
            cni, care_token = care_of_token.index, care_of_token.token
            same = care_of_token.generation == home_token.generation
            generation = home_token.generation if same else -1  # mixed Kcns never verify
        kbm = binding_management_key(home_token.token, care_token)
        options: list[MobilityOption] = [NonceIndices(hni, cni)]
        if alt is not None:
            options.append(AlternateCareOfAddress(alt))
        msg = BindingUpdate(seq, units, ack=ack, home=home, options=tuple(options))
        mac_coa = hoa if deletion else care_of
        data = encode_mh_with_bad(msg, hoa, CN, kbm=kbm, coa=mac_coa, cn=CN)
        bu = SentBu(
            data,
            src,
            hao,
            hoa,
            care_of,
            seq,
            units,
            ack,
            home,
            deletion,
            (hni, cni),
            generation,
            kbm,
        )
        self.sent.append(bu)
        self.deliver(bu)

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        self.deliver(data.draw(st.sampled_from(self.sent)))

    @rule(dt=st.sampled_from([0.5, 1.0, 29.9, 30.0, 100.0, 209.0, 211.0, 240.0, 241.0, 420.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        expected = self.model_expire()
        self.cn.handle_timer(self.now)
        assert same_events(events(self.cn), expected)

    @rule()
    def advance_to_timer(self) -> None:
        deadline = self.cn.get_timer()
        if deadline is None:
            return
        self.now = deadline
        expected = self.model_expire()
        self.cn.handle_timer(self.now)
        assert same_events(events(self.cn), expected)

    @rule(index=st.integers(0, len(HOAS) - 1), coa_index=st.integers(0, len(COAS) - 1))
    def data_packet(self, index: int, coa_index: int) -> None:
        hoa, coa = HOAS[index], COAS[coa_index]
        expected_events = self.model_expire()
        entry = self.model.get(hoa)
        want = entry is not None and not entry.deleted and entry.care_of == coa
        assert self.cn.check_home_address(self.now, coa, hoa) == want
        be_expected = not want and self.model_allow(self.be_sent, coa)
        assert len(self.cn.datagrams_to_send(self.now)) == int(be_expected)
        assert same_events(events(self.cn), expected_events)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def cache_matches_model(self) -> None:
        got = {
            b.home_address: (b.sequence, b.care_of_address, b.expires_at, b.state == "deleted")
            for b in self.cn.bindings(include_deleted=True)
        }
        want = {
            hoa: (e.sequence, e.care_of, e.deadline, e.deleted) for hoa, e in self.model.items()
        }
        assert got == want
        live = {b.home_address for b in self.cn.bindings()}
        assert live == {hoa for hoa, e in self.model.items() if not e.deleted}

    @invariant()
    def timer_is_the_earliest_deadline(self) -> None:
        deadlines = [e.deadline for e in self.model.values()]
        assert self.cn.get_timer() == (min(deadlines) if deadlines else None)


CnCacheMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCnCache = CnCacheMachine.TestCase
