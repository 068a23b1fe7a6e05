"""Small helpers shared by the cores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

_T = TypeVar("_T")


def find_option(options: Iterable[object], kind: type[_T]) -> _T | None:
    """The first option of type ``kind``, or ``None``."""
    for option in options:
        if isinstance(option, kind):
            return option
    return None


def ntp_order_key(timestamp: int) -> int:
    """An integer that orders 64-bit NTP timestamps correctly across the 2036 era change.

    As in RFC 4330 §3, seconds with the top bit clear are taken as era 1 (2036-2104).
    """
    return timestamp if timestamp >> 63 else timestamp + (1 << 64)
