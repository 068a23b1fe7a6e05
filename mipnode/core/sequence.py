"""Binding Update sequence-number arithmetic (RFC 6275 §9.5.1)."""

from __future__ import annotations

SEQUENCE_MODULUS = 1 << 16
_HALF = 1 << 15


def seq_is_newer(received: int, last: int) -> bool:
    """Whether ``received`` is newer than ``last`` in 16-bit serial arithmetic.

    RFC 6275 §9.5.1: a number is "less than or equal to" the last one when it is the last one
    or one of the 32768 values before it (mod 2^16). So it is newer exactly when
    ``(received - last) mod 2^16`` lies in 1..32767; the value 32768 apart counts as old.
    """
    return 0 < (received - last) % SEQUENCE_MODULUS < _HALF


def seq_add(sequence: int, delta: int) -> int:
    """``sequence + delta`` modulo 2^16."""
    return (sequence + delta) % SEQUENCE_MODULUS
