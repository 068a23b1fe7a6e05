"""etcd v3 from trio, through etcd's JSON gateway (``POST /v3/...``) with httpx.

The home agents of a cluster keep their shared binding cache in etcd (issue 14). etcd's own
client speaks gRPC; its gateway maps every unary call to ``POST /v3/<service>/<method>`` with
the same message as JSON (keys and values base64, 64-bit integers as decimal strings, fields
with their zero value left out), and the one streaming call we need, Watch, to a response of
newline-separated JSON objects. httpx runs under trio, so no asyncio bridge and no gRPC stack.

Only what the cluster needs: get, range by prefix, put, delete, one compare-and-swap
transaction (:meth:`Etcd.txn`), leases (grant, keep-alive, revoke), watch from a revision, and
the member's status. Endpoints are tried in order; a connection error moves to the next one
(:class:`EtcdUnavailable` when none answers), an answer that etcd refused raises
:class:`EtcdError` with etcd's own words. Nothing here retries a write: whether a write that
timed out happened is for the caller to find out (by revision), not to guess.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

DEFAULT_TIMEOUT_S = 2.0


class EtcdError(Exception):
    """etcd answered, and refused (or the answer made no sense)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered."""


class EtcdCompacted(EtcdError):
    """A watch asked for history etcd has compacted away: read the whole range again."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change a watch reported: ``kv`` as it is now (a delete: key and mod_revision)."""

    deleted: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    current: tuple[KeyValue | None, ...]  # on failure: each compared key as it is now


@dataclass(frozen=True, slots=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    version: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # the whole key space


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(raw.get("key", "")),
        _unb64(raw.get("value", "")),
        int(raw.get("create_revision", 0)),
        int(raw.get("mod_revision", 0)),
        int(raw.get("version", 0)),
        int(raw.get("lease", 0)),
    )


def _revision(answer: dict[str, Any]) -> int:
    return int((answer.get("header") or {}).get("revision", 0))


class Etcd:
    """A client for one etcd cluster: ``endpoints`` like ``http://192.0.2.1:2379``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        # TLS toward etcd: its CA (or the system's), and a client certificate when etcd asks
        # for one (--client-cert-auth).
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file and key_file:
            context.load_cert_chain(cert_file, key_file)
        self._http = httpx.AsyncClient(timeout=timeout_s, verify=context)
        self._timeout = httpx.Timeout(timeout_s)
        self._watch_timeout = httpx.Timeout(None, connect=timeout_s)  # a watch waits for ever
        self._credentials = (username, password) if username else None
        self._token: str | None = None
        self._auth_lock = trio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- unary calls ---------------------------------------------------------------------
    async def _call(
        self, path: str, body: dict[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        try:
            return await self._call_once(path, body, timeout_s=timeout_s)
        except EtcdError as exc:
            # etcd forgets a simple token after --auth-token-ttl of disuse: get a new one, once.
            if self._credentials is None or "invalid auth token" not in str(exc):
                raise
        await self.authenticate()
        return await self._call_once(path, body, timeout_s=timeout_s)

    async def _call_once(
        self,
        path: str,
        body: dict[str, Any],
        *,
        with_token: bool = True,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        last: Exception | None = None
        timeout = self._timeout if timeout_s is None else httpx.Timeout(timeout_s)
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[self._current]
            try:
                request = self._request(endpoint + path, body, timeout, with_token)
                reply = await self._http.send(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: the next endpoint may take it.
                last = exc
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            except httpx.TransportError as exc:
                # Sent, and no answer: a write may or may not have happened. Never resent here;
                # the caller finds out by reading (a CAS that went through reads as its own).
                self._current = (self._current + 1) % len(self.endpoints)
                raise EtcdUnavailable(
                    f"{path}: no answer from {endpoint}, outcome unknown ({exc})"
                ) from None
            return self._answer(reply, path)
        raise EtcdUnavailable(f"no etcd endpoint answered ({last})")

    def _request(
        self, url: str, body: dict[str, Any], timeout: httpx.Timeout, with_token: bool = True
    ) -> httpx.Request:
        """A POST of ``body`` as JSON. The body goes as a :class:`_Body`: httpx's own stream for
        a bytes body is an async generator, which a connection failing mid-request leaves
        unfinished for trio's finalizer to warn about."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if self._token and with_token:
            headers["Authorization"] = self._token
        request = self._http.build_request("POST", url, headers=headers, timeout=timeout)
        request.stream = _Body(data)
        return request

    @staticmethod
    def _answer(reply: httpx.Response, path: str) -> dict[str, Any]:
        try:
            answer = reply.json()
        except ValueError:
            raise EtcdError(f"{path}: HTTP {reply.status_code}, not JSON") from None
        if not isinstance(answer, dict):
            raise EtcdError(f"{path}: unexpected answer")
        if reply.status_code != 200 or "error" in answer:
            raise EtcdError(f"{path}: {answer.get('message') or answer.get('error')}")
        return answer

    async def authenticate(self) -> None:
        """With a username: get a token (etcd auth); every later call carries it."""
        if self._credentials is None:
            return
        stale = self._token
        async with self._auth_lock:
            if self._token != stale:
                return  # another task got a new one meanwhile
            name, password = self._credentials
            body = {"name": name, "password": password}
            answer = await self._call_once("/v3/auth/authenticate", body, with_token=False)
            self._token = str(answer.get("token", ""))

    async def get(self, key: bytes) -> KeyValue | None:
        answer = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def range(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` in key order, and the revision they were read at."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        answer = await self._call("/v3/kv/range", body)
        return [_kv(raw) for raw in answer.get("kvs") or []], _revision(answer)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(await self._call("/v3/kv/put", body))

    async def delete(self, key: bytes) -> int:
        return _revision(await self._call("/v3/kv/deleterange", {"key": _b64(key)}))

    async def txn(self, expect: dict[bytes, int], then: Sequence[Put | Delete]) -> TxnResult:
        """Compare-and-swap: when every key in ``expect`` has that mod_revision (0: the key
        does not exist), apply ``then`` atomically; otherwise nothing, and the compared keys
        as they are now come back in ``current`` (one round trip either way)."""
        compare = [
            {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
            for key, rev in expect.items()
        ]
        success: list[dict[str, Any]] = []
        for op in then:
            if isinstance(op, Put):
                put: dict[str, Any] = {"key": _b64(op.key), "value": _b64(op.value)}
                if op.lease:
                    put["lease"] = str(op.lease)
                success.append({"request_put": put})
            else:
                success.append({"request_delete_range": {"key": _b64(op.key)}})
        failure = [{"request_range": {"key": _b64(key)}} for key in expect]
        answer = await self._call(
            "/v3/kv/txn", {"compare": compare, "success": success, "failure": failure}
        )
        ok = bool(answer.get("succeeded", False))
        current: list[KeyValue | None] = []
        if not ok:
            for response in answer.get("responses") or []:
                kvs = (response.get("response_range") or {}).get("kvs") or []
                current.append(_kv(kvs[0]) if kvs else None)
        return TxnResult(ok, _revision(answer), tuple(current))

    async def grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease: its ID and the TTL etcd granted (it may raise a short one)."""
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl_s)})
        if "ID" not in answer:
            raise EtcdError(f"/v3/lease/grant: no lease in the answer: {answer}")
        return int(answer["ID"]), int(answer.get("TTL", 0))

    async def keepalive(self, lease: int, timeout_s: float | None = None) -> int:
        """Refresh ``lease``; the TTL it has now (0: it had already expired). A keep-alive
        that gets no answer moves on to the next endpoint for the next one, as every request
        does (``timeout_s``: shorter than the client's, to find a working member sooner)."""
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)}, timeout_s)
        return int((answer.get("result") or {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (what an operator's etcd does on a schedule)."""
        await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def status(self) -> MemberStatus:
        """The status of the member this client talks to now."""
        answer = await self._call("/v3/maintenance/status", {})
        header = answer.get("header") or {}
        return MemberStatus(
            self.endpoints[self._current],
            int(header.get("member_id", 0)),
            int(answer.get("leader", 0)),
            int(header.get("revision", 0)),
            int(header.get("raft_term", 0)),
            str(answer.get("version", "")),
        )

    # -- watch -----------------------------------------------------------------------------
    @asynccontextmanager
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[Watch]:
        """Changes under ``prefix`` from ``start_revision`` on, read with :meth:`Watch.next`
        while the context is open (see :class:`Watch`). The stream is read by a task of its own
        that never waits for the reader (batches queue, at most WATCH_BACKLOG), so leaving the
        context cancels it inside its read, where httpx's stream closes cleanly."""
        # One place more than the backlog: there is always room for the error that ends it.
        send, receive = trio.open_memory_channel[WatchItem](WATCH_BACKLOG + 1)
        if self._credentials is not None and self._token is None:
            await self.authenticate()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_into, send, prefix, start_revision)
                try:
                    yield Watch(receive)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader task never raises (it sends its errors): what the nursery wraps is
            # the one exception the caller's own block raised. Give it back as itself, so
            # `except EtcdError` around a watch works.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _watch_into(
        self, send: trio.MemorySendChannel[WatchItem], prefix: bytes, start_revision: int
    ) -> None:
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        endpoint = self.endpoints[self._current]
        with send:
            try:
                url = endpoint + "/v3/watch"
                reply = await self._http.send(
                    self._request(url, request, self._watch_timeout), stream=True
                )
                try:
                    if reply.status_code != 200:
                        raise EtcdError(f"/v3/watch: HTTP {reply.status_code}")
                    ended: EtcdError | None = None
                    # An error found in a line must not leave the loop from here: httpx's line
                    # iterator is a chain of async generators, and one abandoned between two
                    # lines is left unfinished. Cancelling makes the chain's own next read
                    # raise, which ends every generator in it.
                    with trio.CancelScope() as reading:
                        async for line in reply.aiter_lines():
                            if ended is not None or not line.strip():
                                continue
                            try:
                                if send.statistics().current_buffer_used >= WATCH_BACKLOG:
                                    raise EtcdError("/v3/watch: the reader fell behind")
                                send.send_nowait(_watch_batch(line, start_revision))
                            except EtcdError as exc:
                                ended = exc
                                reading.cancel()
                    if ended is not None:
                        raise ended
                finally:
                    await reply.aclose()
            except httpx.TransportError as exc:
                self._current = (self._current + 1) % len(self.endpoints)
                send.send_nowait(EtcdUnavailable(f"the watch on {endpoint} broke ({exc})"))
            except EtcdError as exc:
                if "auth token" in str(exc) or "permission denied" in str(exc):
                    self._token = None  # the next watch asks for a new one first
                send.send_nowait(exc)


class _Body(httpx.AsyncByteStream):
    """One buffer as a request body, iterated without an async generator."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


WatchItem = tuple[list[Event], int] | EtcdError
WATCH_BACKLOG = 4096  # batches; a reader this far behind starts again from its revision


class Watch:
    """Batches of events and the revision the watcher has seen everything up to. The first
    batch is empty: the watch exists, and whatever is written from then on will come. An old
    start revision replays the history since then (as long as etcd has not compacted it);
    batch boundaries are etcd's (a replay may come in one batch), the events' order is the
    revisions'. :meth:`next` raises EtcdError when the stream broke: the caller watches again
    from the last revision it saw + 1 and misses nothing."""

    def __init__(self, receive: trio.MemoryReceiveChannel[WatchItem]) -> None:
        self._receive = receive

    async def next(self) -> tuple[list[Event], int]:
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            raise EtcdUnavailable("/v3/watch: the stream ended") from None
        if isinstance(item, EtcdError):
            raise item
        return item


def _watch_batch(line: str, start_revision: int) -> tuple[list[Event], int]:
    try:
        message = json.loads(line)
    except ValueError:
        raise EtcdError("/v3/watch: not JSON") from None
    if "error" in message:
        error = message["error"]
        words = error.get("message") if isinstance(error, dict) else error
        raise EtcdError(f"/v3/watch: {words}")
    result = message.get("result") or {}
    if result.get("canceled"):
        reason = result.get("cancel_reason") or "canceled"
        compacted = int(result.get("compact_revision", 0))
        if compacted:
            raise EtcdCompacted(f"/v3/watch: history compacted up to revision {compacted}")
        raise EtcdError(f"/v3/watch: {reason}")
    events = [
        Event(raw.get("type") == "DELETE", _kv(raw.get("kv") or {}))
        for raw in result.get("events") or []
    ]
    # Seen up to: the last event's revision. Without events: for the message that says the
    # watch exists, only what came before the start (a replay from an old revision is still
    # to come, and a watcher that broke now must ask for it again); for a progress report,
    # the revision the member was at.
    if events:
        return events, events[-1].kv.mod_revision
    if result.get("created"):
        return events, start_revision - 1
    return events, _revision(result)
