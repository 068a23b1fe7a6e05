"""The home agent's binding cache on disk (``[ha] state_dir``).

One file, ``<state_dir>/binding-cache.json``: ``{"format": FORMAT, "saved_at": POSIX time,
"core": HomeAgentCore.export_state()}``. It lists bindings, sequence numbers and Mesg-ID
timestamps, never keys, but it still tells who is where, so it is created with mode 0600.

Writing (reference/testing.md §8, F5): every write replaces the whole file atomically. The new
content goes to a temporary file in the same directory, which is flushed and fsynced, renamed
over the old file, and then the directory is fsynced so the rename itself survives a crash. A
reader therefore sees the old file or the new one, never a mixture; a temporary file left by a
crash mid-write is removed at the next start. :class:`StateWriter` runs the writes off the trio
thread, one at a time and in order; snapshots that arrive while a write is running are
coalesced, so the newest one is written next and the disk never goes backwards.

Reading: :func:`read_state` returns the core snapshot or ``None`` when there is no file; any
other problem raises :class:`StateFileError`, and the daemon then starts empty and moves the
bad file aside with :func:`set_aside` (never crash, never silently overwrite evidence).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from mipnode.drivers import pump
from mipnode.drivers.logs import RateLimitedLog

log = logging.getLogger("mipnode.ha")

STATE_FILE = "binding-cache.json"
FORMAT = "mipnode-ha-binding-cache"
MAX_STATE_BYTES = 64 << 20  # far above any real cache (one binding is ~300 bytes)
RETRY_FIRST_S = 1.0
SNAPSHOT_REST_MIN_S = 0.05  # after a write, before the next snapshot is made (class docstring)
RETRY_MAX_S = 30.0


class StateFileError(Exception):
    """The state file exists but cannot be used."""


def prepare_state_dir(state_dir: str) -> Path:
    """Create ``state_dir`` (mode 0700) if needed, clear temporary files a crash left behind,
    and return the path of the state file.

    Raises:
        OSError: the directory cannot be created or listed.
    """
    directory = Path(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in directory.glob(f".{STATE_FILE}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return directory / STATE_FILE


def encode_state(core_state: dict[str, Any], saved_at: float) -> bytes:
    doc = {"format": FORMAT, "saved_at": saved_at, "core": core_state}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync of the directory.

    Raises:
        OSError: nothing was replaced (the temporary file is removed again).
    """
    # mkstemp creates the file with mode 0600, which the rename keeps.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: Path) -> Any:
    """The core snapshot stored in ``path``, or ``None`` when the file does not exist.

    Raises:
        StateFileError: unreadable, too large, not JSON, or not a mipnode binding cache.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"larger than {MAX_STATE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise StateFileError("not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "core" not in doc:
        raise StateFileError("not a mipnode binding cache file")
    return doc["core"]


def set_aside(path: Path) -> Path | None:
    """Rename a bad state file to ``<name>.corrupt`` (replacing an older one); its new path,
    or ``None`` if that failed too."""
    bad = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, bad)
    except OSError:
        return None
    return bad


class StateWriter:
    """Writes the newest submitted snapshot to ``path``, off the trio thread and in order.

    :meth:`submit` never blocks; :meth:`run` is the one task that writes. A failed write is
    retried (1 s, doubling up to 30 s) unless a newer snapshot replaces it first. When the
    task is cancelled (daemon shutdown) a snapshot still waiting is written before it ends.

    A snapshot may be submitted as a function that makes it: it is then made once, right
    before the write, however many changes were submitted meanwhile. Making one walks every
    binding on the trio thread (~12 µs a binding), so after each write the writer rests ten
    times as long as the last one took to make (at least SNAPSHOT_REST_MIN_S): under a storm of
    registrations the file trails by a fraction of a second and forwarding keeps 90 % of the
    thread, instead of the whole cache being exported after every batch.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_write_ms: float | None = None
        self.last_export_ms: float | None = None
        self._pending: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
        self._wake = trio.Event()
        self._ratelog = RateLimitedLog(per_second=1 / 60, burst=3)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def submit(self, snapshot: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Queue ``snapshot`` (an export_state() result the caller no longer touches, or the
        function that makes it when its turn comes)."""
        self._pending = snapshot
        self._wake.set()

    def _take(self) -> dict[str, Any] | None:
        pending, self._pending = self._pending, None
        if not callable(pending):
            return pending
        start = pump.stopwatch()
        snapshot = pending()
        self.last_export_ms = pump.elapsed_ms(start)
        return snapshot

    async def run(self) -> None:
        retry = RETRY_FIRST_S
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                snapshot = self._take()
                if snapshot is None:
                    continue
                # Shielded: a write that started finishes even while the daemon stops.
                with trio.CancelScope(shield=True):
                    error = await trio.to_thread.run_sync(self._write, snapshot)
                if error is None:
                    retry = RETRY_FIRST_S
                    made_s = (self.last_export_ms or 0.0) / 1000
                    await pump.sleep(max(SNAPSHOT_REST_MIN_S, 10 * made_s))
                    continue
                if self._pending is None:
                    self._pending = snapshot  # retry it, unless something newer came
                await pump.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                self._wake.set()
        finally:
            if self._pending is not None:
                snapshot = self._take()
                if snapshot is not None:
                    self._write(snapshot)

    def _write(self, snapshot: dict[str, Any]) -> str | None:
        """Encode and write one snapshot (runs in a worker thread); the error text or None."""
        start = pump.stopwatch()
        try:
            write_atomically(self.path, encode_state(snapshot, pump.posix_time()))
        except (OSError, ValueError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            self._ratelog(
                logging.ERROR,
                "state_write_failed",
                "cannot write the binding cache; bindings written before survive a restart",
                path=self.path,
                error=exc,
            )
            return self.last_error
        self.writes += 1
        self.last_error = None
        self.last_write_ms = pump.elapsed_ms(start)
        return None
