"""Paired rounds: tickrun and its baseline measured back to back, the first of the pair
alternating, so a neighbour's burst or the first side's dirty pages and warm caches do not
always land on the same side. The benchmarks judge the median of the pairs' ratios."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def in_turn(round_no: int, first: T, second: T) -> tuple[T, T]:
    """The two sides in the order round ``round_no`` (from 0) runs them."""
    return (first, second) if round_no % 2 == 0 else (second, first)
