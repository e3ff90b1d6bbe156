"""Delta debugging (Zeller's ddmin): the smallest input that still fails the same way."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], deadline: float) -> list[T]:
    """A 1-minimal subsequence of `items` for which `fails` holds (`fails(items)` must),
    or the smallest found when `deadline` (time.monotonic()) passes."""
    if fails([]):
        return []
    current = list(items)
    chunks = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        size = -(-len(current) // chunks)
        parts = [current[i:i + size] for i in range(0, len(current), size)]
        for index in range(len(parts)):
            complement = [x for j, part in enumerate(parts) if j != index for x in part]
            if fails(complement):
                current = complement
                chunks = max(chunks - 1, 2)
                break
            if time.monotonic() >= deadline:
                return current
        else:
            if chunks >= len(current):
                break
            chunks = min(chunks * 2, len(current))
    return current
