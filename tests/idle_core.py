"""A node core with nothing to do, for tests of the pump's plumbing (drivers/pump.py)."""

from __future__ import annotations


class IdleCore:
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, now: float) -> list[object]:
        return []

    def next_event(self) -> object:
        return None

    def statistics(self) -> dict[str, int]:
        return {}
