"""A home-agent cluster node's ESP SAs, handed to its successor at a clean stop (issue 14).

docs/internals.md, "Home agents in a cluster on etcd", has the hand-over; wire/sa_transfer.py
the frames. Under protection the successor could open none of the mobile nodes' ESP without
the SAs: each mobile node would have to register again (a BRR and one round trip, a datagram
or two lost). So before the holder writes the record that names its successor, it sends the
successor every SA over TCP on the home link (the announcement port number, link-local
addresses only), encrypted with a key derived from the cluster key: etcd never sees a key.
The successor parks them and serves with them when it adopts the bindings; what it did not
get (a transfer that failed, a rekey in flight) it asks the mobile node to register for, as
after a crash. When the successor holds the address, the holder sends the final windows of
its inbound SAs: what it opened after the first transfer counts as a replay at the successor.

TCP, not datagrams: ten thousand bindings are megabytes, and the holder must know the
successor took them before it hands the address over: after the sender's last frame the
receiver answers with the number of states it applied (4 octets), and anything else -- a
refused frame, a timeout, a close -- is a failed transfer. Who may connect: only the
link-local addresses authentic announcements came from (``allowed``), and even those must send
frames that authenticate (AES-GCM with the cluster's transfer key) and are fresh; connections
are bounded in number (the slot is taken before the connection's task starts), in time (the
whole transfer, and each frame), and in size; the first bad frame ends a connection.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable

import trio

from mipnode.config import ClusterConfig
from mipnode.drivers import pump
from mipnode.drivers.esp_plane import EspSas
from mipnode.drivers.io import Counters
from mipnode.drivers.logs import RateLimitedLog
from mipnode.wire.errors import BadPacket
from mipnode.wire.sa_transfer import (
    FRESHNESS_MS,
    MAX_FRAME,
    STATES_PER_FRAME,
    Frame,
    SaState,
    decode_frame_untrusted,
    encode_frame,
    transfer_key,
)

log = logging.getLogger("mipnode.cluster")
PARK_S = 10.0  # handed-over SAs wait this long for the adoption that uses them
MAX_PARKED = 1 << 18  # SA states parked at once (a cluster's whole cache fits)
MAX_CONNECTIONS = 4  # transfers received at once; more are closed at once
CONNECTION_S = 5.0  # a transfer's whole time, either side
FRAME_S = 1.0  # each frame (and the answer) must arrive this long after the last
MAX_SENDERS = 256  # senders whose last frame is remembered (freshness)
LENGTH_OCTETS = 4
# accept(2) errors that say this process is short of something: wait a little before the next
# accept instead of spinning; every other error is the connection's, which is just dropped.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class TransferRefused(OSError):
    """The receiver did not confirm every state (it refused a frame, timed out or closed)."""


class SaHandover:
    def __init__(
        self,
        cfg: ClusterConfig,
        esp: EspSas,
        link_index: int,
        counters: Counters,
        drops: Counters,
        allowed: Callable[[str], bool] = lambda peer: True,
    ) -> None:
        """``allowed``: whether a link-local address may hand us SAs (the cluster driver's: an
        address one of its peers' authentic announcements came from)."""
        self.cfg = cfg
        self.allowed = allowed
        self.esp = esp
        self.link_index = link_index
        self.key = transfer_key(cfg.key, cfg.name)
        self.counters = counters
        self.drops = drops
        self.ratelog = RateLimitedLog()
        self._parked: dict[bytes, tuple[SaState, float]] = {}
        self._last: dict[str, tuple[int, int]] = {}  # sender: (sent_ms, index) of its last frame
        self._receiving = 0  # connections being read now (at most MAX_CONNECTIONS)

    # -- the successor's side ------------------------------------------------------------------
    def take(self, owner: bytes, now: float) -> SaState | None:
        """The SAs parked for ``owner`` (16 octets) if they came within PARK_S; gone after."""
        parked = self._parked.pop(owner, None)
        if parked is None or now - parked[1] > PARK_S:
            return None
        return parked[0]

    def forget_parked(self) -> None:
        """Adoption took what it could use: the rest (bindings gone since) goes, keys and all."""
        self._parked.clear()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = _listener(self.cfg.home_link, self.cfg.announce_port)
        with listener:
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        conn, peer = await listener.accept()
                    except OSError as exc:  # accept(2) reports the next connection's errors too
                        self.drops("sa_transfer_accept_failed")
                        if exc.errno in _RESOURCE_ERRNOS:
                            await pump.sleep(0.1)
                        continue
                    source = peer[0].split("%")[0]
                    if (
                        not source.startswith("fe80:")
                        or not self.allowed(source)
                        or self._receiving >= MAX_CONNECTIONS
                    ):
                        self.drops("sa_transfer_refused")
                        conn.close()
                        continue
                    self._receiving += 1  # the slot is taken before the task runs
                    nursery.start_soon(self._receive, conn)

    async def _receive(self, conn: trio.socket.SocketType) -> None:
        """Frames until the sender's end, then the number of states applied: the sender
        counts the transfer done only with that answer."""
        stream = trio.SocketStream(conn)
        applied = 0
        try:
            with pump.time_limit(CONNECTION_S) as scope:
                try:
                    while True:
                        with pump.time_limit(FRAME_S) as frame_scope:
                            data = await _read_frame(stream)
                        if frame_scope.cancelled_caught:
                            raise BadPacket("sa_transfer_timeout", "no frame in time")
                        if data is None:
                            await stream.send_all(applied.to_bytes(LENGTH_OCTETS, "big"))
                            break
                        applied += self._apply(data)
                except (BadPacket, trio.BrokenResourceError, OSError) as exc:
                    reason = exc.reason if isinstance(exc, BadPacket) else "broken"
                    self.drops(f"sa_transfer_{reason.removeprefix('sa_transfer_')}")
                    self.ratelog(logging.WARNING, "sa", "SA transfer refused", why=reason)
            if scope.cancelled_caught:
                self.drops("sa_transfer_timeout")
        finally:
            self._receiving -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _apply(self, data: bytes) -> int:
        """The states a frame carried, applied; raises BadPacket for what no sender in the
        cluster sent (the connection ends)."""
        frame = decode_frame_untrusted(data, self.key, self.cfg.node_id)
        self._fresh(frame)
        now = pump.now()
        if frame.final:
            merged = sum(self.esp.merge(s) for s in frame.states)
            self.counters("sa_windows_merged", merged)
            return len(frame.states)
        while self._parked:  # the oldest first: what waited longer than PARK_S is no use
            oldest = next(iter(self._parked.values()))
            if now - oldest[1] <= PARK_S:
                break
            del self._parked[oldest[0].home_address]
        for state in frame.states:
            self._parked.pop(state.home_address, None)
            self._parked[state.home_address] = (state, now)
        while len(self._parked) > MAX_PARKED:
            del self._parked[next(iter(self._parked))]  # the oldest first
            self.drops("sa_parked_evicted")
        self.counters("sa_states_received", len(frame.states))
        return len(frame.states)

    def _fresh(self, frame: Frame) -> None:
        """Within FRESHNESS_MS of our clock and after the sender's last frame: a captured
        transfer replayed later could otherwise bring back keys its mobile node dropped."""
        now_ms = int(pump.posix_time() * 1000)
        last = self._last.pop(frame.sender, None)
        mark = (frame.sent_ms, frame.index)
        if abs(now_ms - frame.sent_ms) > FRESHNESS_MS or (last is not None and mark <= last):
            if last is not None:
                self._last[frame.sender] = last
            raise BadPacket("sa_transfer_stale", f"{frame.sent_ms} ms from {frame.sender}")
        self._last[frame.sender] = mark
        if len(self._last) > MAX_SENDERS:
            del self._last[next(iter(self._last))]

    # -- the holder's side ---------------------------------------------------------------------
    async def send(self, peer: str, recipient: str, *, final: bool) -> int:
        """Every SA (``final``: every inbound window) to node ``recipient`` at link-local
        ``peer``; returns how many states it confirmed. ``final`` also ends this node's part:
        its SAs are dropped in the same step as their windows are taken, so it opens nothing
        the successor has not counted (and seals nothing more). Raises OSError (trio's
        BrokenResourceError and TransferRefused included) or trio.TooSlowError when the
        receiver did not confirm every state (BrokenResourceError too, which is no OSError)."""
        now = pump.now()
        owners = list(self.esp.outbound)
        states = [s for owner in owners if (s := self.esp.export(owner, now, hand_over=not final))]
        if final:
            for owner in owners:
                self.esp.forget(owner)
        elif len(owners) > len(states):
            self.counters("sa_transfer_skipped", len(owners) - len(states))
        if not states:
            return 0
        with pump.time_limit(CONNECTION_S) as scope:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(_stream_socket(self.cfg)))
            async with stream:
                await stream.socket.connect((peer, self.cfg.announce_port, 0, self.link_index))
                sent_ms = 0
                for index, chunk in enumerate(_chunks(states)):
                    # Each frame stamped as it goes (a slow transfer stays fresh), never
                    # earlier than the last: the receiver wants (sent_ms, index) increasing.
                    sent_ms = max(sent_ms, int(pump.posix_time() * 1000))
                    frame = encode_frame(
                        chunk,
                        key=self.key,
                        sender=self.cfg.node_id,
                        recipient=recipient,
                        sent_ms=sent_ms,
                        index=index,
                        final=final,
                        nonce=os.urandom(12),
                    )
                    await stream.send_all(len(frame).to_bytes(LENGTH_OCTETS, "big") + frame)
                await stream.send_eof()
                answer = await _read_exactly(stream, LENGTH_OCTETS, at_start=True)
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"no answer from {recipient} within {CONNECTION_S} s")
        confirmed = 0 if answer is None else int.from_bytes(answer, "big")
        if confirmed != len(states):
            raise TransferRefused(f"{recipient} confirmed {confirmed} of {len(states)} states")
        self.counters("sa_windows_sent" if final else "sa_states_sent", len(states))
        return len(states)


def _chunks(states: list[SaState]) -> Iterable[list[SaState]]:
    for i in range(0, len(states), STATES_PER_FRAME):
        yield states[i : i + STATES_PER_FRAME]


async def _read_frame(stream: trio.SocketStream) -> bytes | None:
    """The next length-prefixed frame, or None at the sender's end. Raises BadPacket for a
    length no frame has, trio.BrokenResourceError when the stream ends inside a frame."""
    head = await _read_exactly(stream, LENGTH_OCTETS, at_start=True)
    if head is None:
        return None
    length = int.from_bytes(head, "big")
    if not 0 < length <= MAX_FRAME:
        raise BadPacket("sa_transfer_length", f"{length} octets")
    return await _read_exactly(stream, length, at_start=False)


async def _read_exactly(stream: trio.SocketStream, n: int, *, at_start: bool) -> bytes | None:
    parts, got = [], 0
    while got < n:
        part = await stream.receive_some(n - got)
        if not part:
            if at_start and got == 0:
                return None
            raise trio.BrokenResourceError("the sender ended inside a frame")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _stream_socket(cfg: ClusterConfig) -> socket.socket:
    """The sender's TCP socket, on the home link only."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg.home_link.encode())
    except OSError:
        sock.close()
        raise
    return sock


def _listener(link: str, port: int) -> trio.socket.SocketType:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        sock.listen(MAX_CONNECTIONS)
    except OSError:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)
