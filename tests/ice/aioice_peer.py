"""An independent ICE peer for interop tests: an aioice 0.13 ``Connection`` in its own process.

Run as ``python aioice_peer.py controlling|controlled [--no-ipv4] [--no-ipv6]
[--signal-wrong-password] [--consent-interval S]``; plain asyncio, no trio, nothing shared
with the agent under test (reference/ice.md §8). It talks JSON lines: one object per line on
stdout, commands on stdin.

Loopback only: aioice binds one UDP socket per address ``get_host_addresses`` returns and skips
127.0.0.1 and ::1, so this process replaces that function with one returning 127.0.0.1 and/or
::1 (as aioice's own tests do). There is no STUN or TURN server, mDNS is never queried (no
``.local`` candidates are accepted), every local and remote candidate is checked to be a
loopback address, and a socket bound to a loopback address cannot reach another host: nothing
leaves the machine.

stdout (``"event"`` says which):

* ``local``: ``ufrag``, ``pwd`` (a wrong one with ``--signal-wrong-password``: the peer then
  signs its answers with a password its partner does not know), ``candidates`` (SDP),
  ``tie_breaker``, ``controlling``;
* ``connecting`` when ``connect()`` starts, then ``connected`` (``ms``: how long ``connect()``
  took, ``pair``, ``controlling``) or ``failed`` (``error``);
* ``selected`` whenever the pair aioice sends data on changes (``pair``: ``{"local": [ip,
  port], "remote": [ip, port]}``);
* ``request`` for each check or consent request it builds (``pair``, ``use_candidate``,
  ``connected``: whether it had a selected pair then);
* ``checklist`` whenever its check list changes: ``pairs``, each with ``local``, ``remote``,
  ``state`` (``FROZEN``, ``WAITING``, ``IN_PROGRESS``, ``SUCCEEDED``, ``FAILED``) and
  ``running`` (a check task of it is running and not being cancelled), and ``selected``;
* ``role`` when aioice switches roles (``controlling``), ``error_sent`` for each STUN error it
  answers (``code``: 487 role conflict, 401 bad credentials, ...);
* ``recv`` for each datagram of application data (``data``, hex), which it echoes back on the
  selected pair prefixed with ``echo:``;
* ``state`` (answer to ``{"cmd": "state"}``), ``sent`` (answer to ``{"cmd": "send", "data":
  hex}``), ``error`` (a command failed), ``closed`` last.

stdin: the first line is the partner's ``{"ufrag", "pwd", "candidates"}``; after it,
commands. End of input closes the connection (``close()``, always) and ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import sys
import time
from typing import Any

import aioice.ice
from aioice import Candidate, Connection, stun
from aioice.utils import random_string

LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Stands in for ``aioice.ice.get_host_addresses``: loopback only."""
    return [a for a, use in ((LOOPBACK_V4, use_ipv4), (LOOPBACK_V6, use_ipv6)) if use]


def require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"aioice_peer: refusing non-loopback address {host!r}")


def pair_json(pair: aioice.ice.CandidatePair | None) -> dict[str, list[Any]] | None:
    if pair is None:
        return None
    return {"local": list(pair.local_addr), "remote": list(pair.remote_addr)}


class ReportingConnection(Connection):
    """A ``Connection`` that reports role switches, STUN errors and selected-pair changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reported: dict[str, list[Any]] | None = None

    def selected(self) -> dict[str, list[Any]] | None:
        return pair_json(self._nominated.get(1))

    def switch_role(self, ice_controlling: bool) -> None:
        super().switch_role(ice_controlling)
        emit("role", controlling=ice_controlling)

    def respond_error(
        self,
        request: stun.Message,
        addr: tuple[str, int],
        protocol: aioice.ice.StunProtocol,
        error_code: tuple[int, str],
    ) -> None:
        super().respond_error(request, addr, protocol, error_code)
        emit("error_sent", code=error_code[0], remote=list(addr))

    def build_request(self, pair: aioice.ice.CandidatePair, nominate: bool) -> stun.Message:
        request = super().build_request(pair, nominate)
        emit(
            "request",
            pair=pair_json(pair),
            use_candidate="USE-CANDIDATE" in request.attributes,
            connected=bool(self._nominated),
        )
        return request

    def checklist(self) -> list[dict[str, Any]]:
        """Its check list now: each pair's state and whether a check of it is running."""
        return [
            {
                **(pair_json(p) or {}),
                "state": p.state.name,
                "running": p.task is not None and not p.task.done() and not p.task.cancelling(),
            }
            for p in self._check_list
        ]

    def check_state(
        self, pair: aioice.ice.CandidatePair, state: aioice.ice.CandidatePair.State
    ) -> None:
        super().check_state(pair, state)
        self.report()

    def check_start_task(self, pair: aioice.ice.CandidatePair) -> None:
        super().check_start_task(pair)
        self.report()

    def check_complete(self, pair: aioice.ice.CandidatePair) -> None:
        super().check_complete(pair)
        self.report()

    def report(self) -> None:
        """One ``checklist`` line (its pairs and its selected pair together, so a reader never
        sees one without the other), and a ``selected`` line when the selected pair changed."""
        now = self.selected()
        emit("checklist", pairs=self.checklist(), selected=now)
        if now is not None and now != self._reported:
            self._reported = now
            emit("selected", pair=now, controlling=self.ice_controlling)


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run_connect(conn: ReportingConnection) -> None:
    emit("connecting")
    start = time.monotonic()
    try:
        await conn.connect()
    except ConnectionError as exc:
        emit("failed", error=str(exc), ms=(time.monotonic() - start) * 1000)
        return
    emit(
        "connected",
        ms=(time.monotonic() - start) * 1000,
        pair=conn.selected(),
        controlling=conn.ice_controlling,
    )
    conn.report()  # connect() cancelled its remaining checks
    while True:
        try:
            data = await conn.recv()
        except ConnectionError:
            return
        emit("recv", data=data.hex())
        await conn.send(b"echo:" + data)


async def handle_command(conn: ReportingConnection, cmd: dict[str, Any]) -> None:
    name = cmd.get("cmd")
    if name == "state":
        emit("state", controlling=conn.ice_controlling, pair=conn.selected())
    elif name == "send":
        data = bytes.fromhex(cmd["data"])
        try:
            await conn.send(data)
        except ConnectionError as exc:
            emit("error", cmd=name, error=str(exc))
        else:
            emit("sent", data=cmd["data"], pair=conn.selected())
    else:
        emit("error", cmd=name, error="unknown command")


async def main(args: argparse.Namespace) -> None:
    aioice.ice.get_host_addresses = loopback_host_addresses  # loopback only, see above
    if args.consent_interval is not None:
        aioice.ice.CONSENT_INTERVAL = args.consent_interval  # 5 s; read on every round
    reader = await stdin_reader()
    conn = ReportingConnection(
        ice_controlling=args.role == "controlling",
        components=1,
        use_ipv4=args.ipv4,
        use_ipv6=args.ipv6,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        await conn.gather_candidates()
        for c in conn.local_candidates:
            require_loopback(c.host)
        emit(
            "local",
            ufrag=conn.local_username,
            pwd=random_string(22) if args.signal_wrong_password else conn.local_password,
            candidates=[c.to_sdp() for c in conn.local_candidates],
            tie_breaker=conn._tie_breaker,
            controlling=conn.ice_controlling,
        )
        line = await reader.readline()
        if not line:
            return
        remote = json.loads(line)
        for sdp in remote["candidates"]:
            candidate = Candidate.from_sdp(sdp)
            require_loopback(candidate.host)
            await conn.add_remote_candidate(candidate)
        await conn.add_remote_candidate(None)
        conn.remote_username = remote["ufrag"]
        conn.remote_password = remote["pwd"]
        tasks.append(asyncio.create_task(run_connect(conn)))
        while line := await reader.readline():
            await handle_command(conn, json.loads(line))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
        emit("closed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["controlling", "controlled"])
    parser.add_argument("--no-ipv4", dest="ipv4", action="store_false")
    parser.add_argument("--no-ipv6", dest="ipv6", action="store_false")
    parser.add_argument("--signal-wrong-password", action="store_true")
    parser.add_argument("--consent-interval", type=float, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)8.1f %(message)s"
    )
    asyncio.run(main(parse_args(sys.argv[1:])))
