"""Interop: our IceAgent against aioice 0.13, an independent ICE implementation, over real UDP.

The peer is ``aioice_peer.py``: a plain-asyncio ``aioice.Connection`` in its own process,
signalled with JSON lines over its stdin/stdout (reference/ice.md §8). Our agent runs in a
small trio driver on two real UDP sockets (127.0.0.1 and ::1), fed the real current time.
Both sides gather loopback host candidates only, so each has one pair per address family.

Cases: the four role combinations, the two conflicting ones in both tie-breaker outcomes.
In a conflict, who checks first is arranged so that a 487 is actually exchanged (in
both-controlling, the loser's check must reach the winner first; in both-controlled, the
winner's must reach the loser). Each case waits until both sides have checked every pair and
neither has a check running (aioice, when controlling, nominates on every check, including
the triggered ones our later checks cause, so the pair it uses can change once after
connect(); our controlled agent must follow), then asserts that both sides use the same
5-tuple, that application data crosses it both ways and nowhere else, and that our
statistics show the checks and no drops. Also: both sides learning a peer-reflexive candidate
from the other's check; a run past ``dead_after_s`` with aioice's consent checks (no
USE-CANDIDATE) and our heartbeats; and the negative case, a peer that signals a password it
does not use: none of its answers authenticate and our agent never selects a pair, whatever
aioice nominates.
"""

from __future__ import annotations

import json
import math
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
import trio
from aioice import Candidate as AioiceCandidate
from icenet import seeded_bytes

from ice import stun
from ice.agent import (
    IceAgent,
    IceConfig,
    IceEvent,
    PathSelected,
    PeerReflexiveCandidate,
    RoleChanged,
    new_credentials,
)
from ice.candidate import Candidate, CandidateType, TransportAddress, local_preference
from ice.checklist import PairState

pytestmark = pytest.mark.oracle

PEER_SCRIPT = Path(__file__).with_name("aioice_peer.py")
LOOPBACKS = ("127.0.0.1", "::1")
TIE_MAX = 2**64 - 1  # we win every conflict (aioice draws its tie-breaker at random)
TIE_MIN = 0  # we lose every conflict
STEP_TIMEOUT_S = 4.0  # any one awaited condition
CASE_TIMEOUT_S = 12.0  # a whole case, shutdown included
SETTLED = (PairState.SUCCEEDED, PairState.FAILED)
FiveTuple = tuple[TransportAddress, TransportAddress]  # (local, remote) as seen by one side


def canonical(address: list[Any] | tuple[Any, ...]) -> TransportAddress:
    return (str(ip_address(address[0])), int(address[1]))


class Changes:
    """Wakes waiters whenever either side made progress: tests wait for conditions, never sleep."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class AioicePeer:
    """The aioice subprocess: its JSON lines (collected as they come) and its commands."""

    def __init__(self, proc: trio.Process, changes: Changes) -> None:
        self.proc = proc
        self.changes = changes
        self.lines: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.stdout_eof = False

    async def read_stdout(self) -> None:
        assert self.proc.stdout is not None
        buffered = b""
        try:
            async for chunk in self.proc.stdout:
                buffered += chunk
                *complete, buffered = buffered.split(b"\n")
                for raw in complete:
                    if raw.strip():
                        self.lines.append({"at": trio.current_time(), **json.loads(raw)})
                self.changes.notify()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        self.stdout_eof = True
        self.changes.notify()

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            async for chunk in self.proc.stderr:
                self.stderr += chunk
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(obj).encode() + b"\n")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == name]

    def last(self, name: str) -> dict[str, Any] | None:
        found = self.events(name)
        return found[-1] if found else None

    def checklist(self) -> dict[FiveTuple, dict[str, Any]]:
        """aioice's check list as last reported, by its (local, remote)."""
        line = self.last("checklist")
        pairs = [] if line is None else line["pairs"]
        return {(canonical(p["local"]), canonical(p["remote"])): p for p in pairs}

    def quiescent_on(self, ours: list[FiveTuple]) -> bool:
        """aioice runs no check and will not start one when we check any of ``ours`` again.

        It starts checks only from connect()'s loop (over once connected) or as triggered
        checks for our checks on pairs it has not (or not successfully) checked, so each of
        ours must be in its list, succeeded or left in progress by connect() (no task).
        """
        if self.last("connected") is None:
            return False
        theirs = self.checklist()
        if any(p["running"] for p in theirs.values()):
            return False
        return all(
            (remote, local) in theirs
            and theirs[(remote, local)]["state"] in ("SUCCEEDED", "IN_PROGRESS")
            for local, remote in ours
        )

    def selected(self) -> FiveTuple | None:
        """The pair aioice sends data on, as last reported with its check list."""
        line = self.last("checklist")
        if line is None or line["selected"] is None:
            return None
        pair = line["selected"]
        return (canonical(pair["local"]), canonical(pair["remote"]))


class AgentDriver:
    """Our IceAgent on real sockets: receive, timers (real current time), send, events."""

    def __init__(
        self,
        agent: IceAgent,
        sockets: dict[TransportAddress, trio.socket.SocketType],
        changes: Changes,
    ) -> None:
        self.agent = agent
        self.sockets = sockets
        self.changes = changes
        self.events: list[tuple[float, IceEvent]] = []
        self.data: list[tuple[TransportAddress, TransportAddress, bytes]] = []
        self.timer_runs = 0
        self._wake = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for local, sock in self.sockets.items():
                nursery.start_soon(self._receive, local, sock)
            nursery.start_soon(self._timers)

    def poke(self) -> None:
        """The test changed the agent (credentials, candidates): recompute its timer."""
        self._wake.set()

    async def send_data(self, payload: bytes) -> FiveTuple:
        pair = self.agent.selected_pair()
        assert pair is not None, "no selected pair to send on"
        await self.sockets[pair.local.base].sendto(payload, pair.remote.address)
        return (pair.local.base, pair.remote.address)

    async def _receive(self, local: TransportAddress, sock: trio.socket.SocketType) -> None:
        while True:
            data, source = await sock.recvfrom(65535)
            remote = canonical(source)
            now = trio.current_time()
            if stun.looks_like_stun(data):
                self.agent.receive_datagram(now, data, local, remote)
                await self._flush(now)
            else:
                self.data.append((local, remote, data))
            self._wake.set()
            self.changes.notify()

    async def _timers(self) -> None:
        while True:
            self._wake = trio.Event()
            deadline = self.agent.get_timer()
            now = trio.current_time()
            if deadline is not None and deadline <= now:
                self.timer_runs += 1
                self.agent.handle_timer(now)  # the real time, not the (maybe past) deadline
                await self._flush(now)
                self.changes.notify()
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()

    async def _flush(self, now: float) -> None:
        # Events first: sending yields to other tasks, which must not see the agent's new
        # state without its events.
        while (event := self.agent.next_event()) is not None:
            self.events.append((now, event))
        for dgram in self.agent.datagrams_to_send(now):
            await self.sockets[dgram.local].sendto(dgram.data, dgram.remote)

    def selected(self) -> FiveTuple | None:
        pair = self.agent.selected_pair()
        return None if pair is None else (pair.local.base, pair.remote.address)

    def of_type(self, kind: type[Any]) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


@dataclass
class Session:
    peer: AioicePeer
    driver: AgentDriver
    changes: Changes
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def agent(self) -> IceAgent:
        return self.driver.agent

    def stats(self) -> dict[str, int]:
        return self.agent.statistics()

    def diagnostics(self) -> str:
        pairs = "\n".join(
            f"  {p.local.base} -> {p.remote.address} {p.state} valid={p.valid} "
            f"nominated={p.nominated} selected={p.selected} sent={p.checks_sent} "
            f"answered={p.checks_answered}"
            for p in self.agent.pairs()
        )
        lines = "\n".join(f"  {line}" for line in self.peer.lines)
        stderr = self.peer.stderr.decode(errors="replace")[-4000:]
        return (
            f"our role controlling={self.agent.controlling} stats={self.stats()}\n"
            f"our pairs:\n{pairs}\nour events: {self.driver.events}\n"
            f"our data: {self.driver.data}\naioice lines:\n{lines}\naioice stderr:\n{stderr}"
        )

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT_S
    ) -> float:
        """Wait (event-driven) until ``predicate()``; returns when it became true."""
        with trio.move_on_after(timeout):
            while not predicate():
                await self.changes.wait()
            return trio.current_time()
        raise AssertionError(f"timed out ({timeout} s) waiting for {what}\n{self.diagnostics()}")

    async def wait_line(self, name: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        await self.wait_until(lambda: self.peer.last(name) is not None, f"aioice {name!r}", timeout)
        line = self.peer.last(name)
        assert line is not None
        return line

    async def signal_to_peer(self, family: str | None = None) -> None:
        """Our credentials and candidates (of one address family only, if given) to aioice;
        its connect() starts on them."""
        creds = self.agent.local_credentials
        candidates = [
            c
            for c in self.agent.local_candidates()
            if family is None or (family == "ipv6") == c.ipv6
        ]
        await self.peer.send(
            {
                "ufrag": creds.ufrag,
                "pwd": creds.password,
                "candidates": [to_aioice_sdp(c) for c in candidates],
            }
        )
        self.marks["peer_signalled"] = trio.current_time()

    def start_our_checks(self, local_line: dict[str, Any]) -> None:
        """aioice's credentials to our agent: our checks start."""
        self.agent.set_remote_credentials(
            type(self.agent.local_credentials)(local_line["ufrag"], local_line["pwd"])
        )
        self.driver.poke()
        self.marks["we_started"] = trio.current_time()

    async def shutdown_peer(self) -> int:
        """End of input: aioice closes its connection and exits; returns its exit status."""
        proc = self.peer.proc
        assert proc.stdin is not None
        await proc.stdin.aclose()
        await self.wait_until(lambda: self.peer.stdout_eof, "aioice to close its stdout")
        with trio.move_on_after(STEP_TIMEOUT_S):
            return await proc.wait()
        raise AssertionError(f"aioice did not exit\n{self.diagnostics()}")


def to_aioice_sdp(candidate: Candidate) -> str:
    return AioiceCandidate(
        foundation=candidate.foundation,
        component=candidate.component,
        transport="udp",
        priority=candidate.priority,
        host=candidate.address[0],
        port=candidate.address[1],
        type=candidate.kind.value,
    ).to_sdp()


def from_aioice_sdp(sdp: str) -> Candidate:
    c = AioiceCandidate.from_sdp(sdp)
    assert ip_address(c.host).is_loopback, f"aioice offered a non-loopback candidate: {sdp}"
    address = (c.host, c.port)
    return Candidate(CandidateType(c.type), address, address, c.priority, c.foundation)


def make_agent(*, controlling: bool, tie_breaker: int, seed: int) -> IceAgent:
    rand = seeded_bytes(seed)
    return IceAgent(
        IceConfig(),
        controlling=controlling,
        credentials=new_credentials(rand),
        tie_breaker=tie_breaker,
        random_bytes=rand,
    )


@asynccontextmanager
async def interop_session(
    *, we_control: bool, tie_breaker: int, peer_args: list[str], seed: int = 1
) -> AsyncIterator[Session]:
    """Our agent on fresh loopback sockets and a running aioice peer; always torn down."""
    changes = Changes()
    socks: list[trio.socket.SocketType] = []
    try:
        agent = make_agent(controlling=we_control, tie_breaker=tie_breaker, seed=seed)
        bound: dict[TransportAddress, trio.socket.SocketType] = {}
        for ip in LOOPBACKS:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            await sock.bind((ip, 0))
            local = canonical(sock.getsockname())
            bound[local] = sock
            agent.add_local_candidate(
                Candidate.host(local, local_pref=local_preference(0, ipv6=":" in ip))
            )
        driver = AgentDriver(agent, bound, changes)
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(PEER_SCRIPT), *peer_args], stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        try:
            async with trio.open_nursery() as nursery:
                peer = AioicePeer(proc, changes)
                nursery.start_soon(peer.read_stdout)
                nursery.start_soon(peer.read_stderr)
                nursery.start_soon(driver.run)
                try:
                    yield Session(peer, driver, changes)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
    finally:
        for sock in socks:
            sock.close()


def mirrored(ours: FiveTuple | None, theirs: FiveTuple | None) -> bool:
    """The same 5-tuple seen from both ends: our (local, remote) is their (remote, local)."""
    return ours is not None and theirs is not None and ours == (theirs[1], theirs[0])


@dataclass(frozen=True)
class RoleCase:
    we_control: bool
    they_control: bool
    tie_breaker: int = TIE_MAX
    first: str = "both"  # "we": our checks reach aioice before it has our candidates; "they"
    # Each side told one family of the other's candidates only (aioice our IPv4 one, we its
    # IPv6 one): each learns the other's missing one as peer-reflexive from its check.
    crossed: bool = False

    @property
    def conflict(self) -> bool:
        return self.we_control == self.they_control

    @property
    def we_end_controlling(self) -> bool:
        if not self.conflict:
            return self.we_control
        return self.tie_breaker == TIE_MAX  # the larger tie-breaker ends controlling

    @property
    def peer_role(self) -> str:
        return "controlling" if self.they_control else "controlled"

    @property
    def our_role(self) -> str:
        return "controlling" if self.we_control else "controlled"


ROLE_CASES = [
    pytest.param(RoleCase(True, False), id="we-controlling-they-controlled"),
    pytest.param(RoleCase(False, True), id="we-controlled-they-controlling"),
    pytest.param(RoleCase(False, True, crossed=True), id="we-controlled-they-controlling-prflx"),
    # Both controlling: the receiver with the larger tie-breaker answers 487, so the loser
    # checks first.
    pytest.param(RoleCase(True, True, TIE_MAX, first="they"), id="both-controlling-we-win"),
    pytest.param(RoleCase(True, True, TIE_MIN, first="we"), id="both-controlling-they-win"),
    # Both controlled: the receiver with the smaller tie-breaker answers 487, so the winner
    # checks first.
    pytest.param(RoleCase(False, False, TIE_MAX, first="we"), id="both-controlled-we-win"),
    pytest.param(RoleCase(False, False, TIE_MIN, first="they"), id="both-controlled-they-win"),
]


@dataclass(frozen=True)
class Established:
    selected: FiveTuple  # ours, once both sides settled on it
    connect_ms: float  # aioice's connect()
    first_selected_ms: float  # from both sides having the signalling to our first PathSelected
    first_agreed_ms: float  # ... to both sides first selecting the same 5-tuple


async def establish(s: Session, case: RoleCase) -> Established:
    """Signal both ways, run the checks and wait until both sides settled on one 5-tuple."""
    local = await s.wait_line("local")
    assert local["controlling"] is case.they_control
    assert local["tie_breaker"] not in (TIE_MIN, TIE_MAX)  # a 2^-63 chance
    theirs = [from_aioice_sdp(sdp) for sdp in local["candidates"]]
    assert sorted(str(ip_address(c.address[0])) for c in theirs) == sorted(LOOPBACKS)
    for candidate in theirs:
        if not case.crossed or candidate.ipv6:
            s.agent.add_remote_candidate(candidate)
    s.agent.end_of_remote_candidates()
    family = "ipv4" if case.crossed else None

    # Signalling, in the order that makes the loser/winner check first (see RoleCase).
    if case.first == "we":
        s.start_our_checks(local)
        await s.wait_until(
            lambda: s.stats().get("role_conflicts_received", 0) >= 1,
            "aioice's 487 to our first check",
        )
        await s.signal_to_peer(family)
    elif case.first == "they":
        await s.signal_to_peer(family)
        await s.wait_until(
            lambda: s.stats().get("role_conflicts_answered", 0) >= 1,
            "our 487 to aioice's first check",
        )
        s.start_our_checks(local)
    else:
        await s.signal_to_peer(family)
        s.start_our_checks(local)
    t0 = max(s.marks["peer_signalled"], s.marks["we_started"])

    connected = await s.wait_line("connected")
    agreed_at = await s.wait_until(
        lambda: mirrored(s.driver.selected(), s.peer.selected()),
        "both sides to select the same 5-tuple",
    )
    selected_at = s.driver.of_type(PathSelected)[0][0]
    # Let both check every pair: aioice stops its ordinary checks after its nomination, but
    # our later checks make it run triggered ones, and a controlling aioice nominates on every
    # check it makes (it re-nominates: both must follow). Settled: no check in progress on
    # either side, every pair of ours checked, and agreement.
    await s.wait_until(
        lambda: (
            all(p.state in SETTLED for p in s.agent.pairs())
            and s.stats()["transactions"] == 0
            and s.peer.quiescent_on([(p.local.base, p.remote.address) for p in s.agent.pairs()])
            and mirrored(s.driver.selected(), s.peer.selected())
        ),
        "every pair checked, no check in progress, both sides agreeing",
    )
    ours = s.driver.selected()
    assert ours is not None
    return Established(ours, connected["ms"], (selected_at - t0) * 1000, (agreed_at - t0) * 1000)


async def exchange_data(s: Session, tag: str) -> None:
    """Application data over the selected pair, both ways, and nothing anywhere else."""
    ours = s.driver.selected()
    assert ours is not None
    ping = f"mipnode-to-aioice-{tag}".encode()
    assert await s.driver.send_data(ping) == ours
    await s.wait_until(
        lambda: any(line["data"] == ping.hex() for line in s.peer.events("recv")),
        "aioice to receive our data",
    )
    await s.wait_until(
        lambda: (ours[0], ours[1], b"echo:" + ping) in s.driver.data,
        "aioice's echo on the selected pair",
    )
    pong = f"aioice-to-mipnode-{tag}".encode()
    await s.peer.send({"cmd": "send", "data": pong.hex()})
    await s.wait_until(lambda: (ours[0], ours[1], pong) in s.driver.data, "aioice's data to us")
    assert all((local, remote) == ours for local, remote, _ in s.driver.data), s.diagnostics()


async def peer_state(s: Session) -> dict[str, Any]:
    asked = len(s.peer.events("state"))
    await s.peer.send({"cmd": "state"})
    await s.wait_until(lambda: len(s.peer.events("state")) > asked, "aioice's state")
    return s.peer.events("state")[-1]


async def assert_agreement(s: Session, case: RoleCase) -> None:
    """Both still on one 5-tuple, roles as the tie-breakers say, the checks in our stats."""
    state = await peer_state(s)
    theirs = (canonical(state["pair"]["local"]), canonical(state["pair"]["remote"]))
    assert mirrored(s.driver.selected(), theirs), s.diagnostics()
    assert s.agent.controlling is case.we_end_controlling, s.diagnostics()
    assert state["controlling"] is (not case.we_end_controlling), s.diagnostics()
    stats = s.stats()
    assert stats["checks_sent"] >= 2, s.diagnostics()  # one per pair at least
    assert stats["responses_received"] >= 2, s.diagnostics()
    assert stats["requests_answered"] >= 2, s.diagnostics()
    assert stats["pairs"] == 2 and stats["valid_pairs"] == 2, s.diagnostics()
    assert stats["selected"] == 1, s.diagnostics()
    assert {k: v for k, v in stats.items() if k.startswith("drop_")} == {}, s.diagnostics()


async def assert_clean_exit(s: Session) -> None:
    assert await s.shutdown_peer() == 0, s.diagnostics()
    assert s.peer.last("closed") is not None
    stderr = s.peer.stderr.decode(errors="replace")
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr


@pytest.mark.parametrize("case", ROLE_CASES)
async def test_aioice_interop_roles(case: RoleCase) -> None:
    with trio.fail_after(CASE_TIMEOUT_S):
        async with interop_session(
            we_control=case.we_control, tie_breaker=case.tie_breaker, peer_args=[case.peer_role]
        ) as s:
            done = await establish(s, case)
            await exchange_data(s, "1")
            await assert_agreement(s, case)

            stats = s.stats()
            role_changes = [e.controlling for _, e in s.driver.of_type(RoleChanged)]
            peer_roles = [line["controlling"] for line in s.peer.events("role")]
            peer_487s = [line for line in s.peer.events("error_sent") if line["code"] == 487]
            learnt = [e.candidate for _, e in s.driver.of_type(PeerReflexiveCandidate)]
            if not case.crossed:
                assert learnt == [], s.diagnostics()
            else:  # each learnt the other's unsignalled candidate from its check
                theirs_v4 = [
                    canonical(sdp.split()[4:6])
                    for sdp in s.peer.events("local")[0]["candidates"]
                    if " 127.0.0.1 " in sdp
                ]
                assert [c.address for c in learnt] == theirs_v4, s.diagnostics()
                assert any(p.remote == learnt[0] and p.valid for p in s.agent.pairs())
                ours_v6 = [c.address for c in s.agent.local_candidates() if c.ipv6]
                assert any(remote == ours_v6[0] for _, remote in s.peer.checklist()), (
                    s.diagnostics()
                )
            if not case.conflict:
                assert role_changes == [] and peer_roles == [], s.diagnostics()
                assert stats.get("role_conflicts_received", 0) == 0, s.diagnostics()
                assert stats.get("role_conflicts_answered", 0) == 0, s.diagnostics()
            elif case.first == "we":  # aioice answered 487 and we switched
                assert peer_487s, s.diagnostics()
                assert stats["role_conflicts_received"] >= 1, s.diagnostics()
                assert role_changes == [case.we_end_controlling], s.diagnostics()
                assert peer_roles == [], s.diagnostics()
            else:  # we answered 487 and aioice switched
                assert stats["role_conflicts_answered"] >= 1, s.diagnostics()
                assert peer_roles == [not case.we_end_controlling], s.diagnostics()
                assert role_changes == [], s.diagnostics()
            await assert_clean_exit(s)

            print(
                f"\naioice interop: we {case.our_role}, aioice {case.peer_role} ({case.first}"
                f" first{', prflx' if case.crossed else ''}): first selection after"
                f" {done.first_selected_ms:.1f} ms, both agree"
                f" after {done.first_agreed_ms:.1f} ms, aioice connect() {done.connect_ms:.1f}"
                f" ms, {len(s.driver.of_type(PathSelected))} selection(s), final pair"
                f" {done.selected[0]} -> {done.selected[1]}; stats {stats}"
            )


async def test_aioice_interop_heartbeats_and_consent() -> None:
    """Past dead_after_s: our heartbeats keep the pair, aioice's consent checks (no
    USE-CANDIDATE, sped up to ~1 s) are answered and change nothing, data still flows."""
    case = RoleCase(we_control=False, they_control=True)
    config = IceConfig()
    with trio.fail_after(CASE_TIMEOUT_S):
        async with interop_session(
            we_control=False,
            tie_breaker=TIE_MAX,
            peer_args=[case.peer_role, "--consent-interval", "1"],
        ) as s:
            done = await establish(s, case)
            settled_at = trio.current_time()
            selections = len(s.driver.of_type(PathSelected))
            heartbeats = s.stats().get("heartbeats_sent", 0)

            def consent_checks() -> int:
                return sum(
                    1
                    for line in s.peer.events("request")
                    if line["connected"] and not line["use_candidate"]
                )

            await s.wait_until(
                lambda: (
                    trio.current_time() - settled_at > config.dead_after_s
                    and consent_checks() >= 2
                    and s.stats().get("heartbeats_sent", 0) >= heartbeats + 3
                ),
                f"{config.dead_after_s} s, two aioice consent checks, three heartbeats of ours",
                timeout=config.dead_after_s + 3.0,
            )
            assert s.driver.selected() == done.selected, s.diagnostics()
            assert len(s.driver.of_type(PathSelected)) == selections, s.diagnostics()
            assert not [e for _, e in s.driver.events if not isinstance(e, PathSelected)], (
                s.diagnostics()
            )
            pair = s.agent.selected_pair()
            assert pair is not None and pair.checks_answered >= 3, s.diagnostics()
            await exchange_data(s, "2")
            await assert_agreement(s, case)
            await assert_clean_exit(s)


@pytest.mark.parametrize("they_control", [True, False], ids=["they-controlling", "they-controlled"])
async def test_aioice_wrong_password_never_selected(they_control: bool) -> None:
    """aioice signs its answers with a password it did not signal: nothing it says verifies."""
    peer_role = "controlling" if they_control else "controlled"
    with trio.fail_after(CASE_TIMEOUT_S):
        async with interop_session(
            we_control=not they_control,
            tie_breaker=TIE_MAX,
            peer_args=[peer_role, "--signal-wrong-password"],
        ) as s:
            local = await s.wait_line("local")
            for sdp in local["candidates"]:
                s.agent.add_remote_candidate(from_aioice_sdp(sdp))
            s.agent.end_of_remote_candidates()
            await s.signal_to_peer()
            s.start_our_checks(local)

            if they_control:
                # aioice can authenticate our answers (it has our real password), so it
                # nominates a pair and connects; we cannot validate that pair and must not
                # follow the nomination.
                await s.wait_line("connected")
                await s.wait_until(
                    lambda: any(p.nominated for p in s.agent.pairs()), "aioice's nomination"
                )
            # Every check of ours went out three times (0, 0.5, 1.5 s), all answered unsigned.
            await s.wait_until(
                lambda: s.stats().get("retransmissions", 0) >= 2 * len(s.agent.pairs()),
                "our retransmissions",
            )
            stats = s.stats()
            assert s.agent.selected_pair() is None, s.diagnostics()
            assert s.driver.of_type(PathSelected) == [], s.diagnostics()
            assert stats["selected"] == 0 and stats["valid_pairs"] == 0, s.diagnostics()
            assert stats.get("responses_received", 0) == 0, s.diagnostics()
            assert stats.get("drop_stun_no_integrity", 0) >= 1, s.diagnostics()
            assert stats["requests_answered"] >= 1, s.diagnostics()  # its checks are fine
            assert any(line["code"] == 401 for line in s.peer.events("error_sent"))
            assert s.driver.data == []
            await assert_clean_exit(s)
            print(f"\naioice wrong password, aioice {peer_role}: never selected; stats {stats}")
