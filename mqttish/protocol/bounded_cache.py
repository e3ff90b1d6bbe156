"""A cache for the hot path, bounded by the bytes it holds and kept free of one-off keys.

Topic names repeat (a sensor publishes to the same one all day), so the codec,
the encoder and the subscription tree remember what they computed for each.
But a client can also send topics that never repeat, or topics of 60 KB: a
cache bounded by its number of entries would then hold gigabytes. So each
entry is charged its size, a key is admitted only on its second sighting
(a bounded set of candidates remembers the first), and when the bytes reach
the bound everything is forgotten at once, which is cheaper than tracking
recency on every hit. Lookups are a bare `dict.get`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ENTRY_OVERHEAD = 120  # bytes a dict slot and small objects cost beyond the key's own length


class BoundedCache(Generic[K, V]):
    __slots__ = (
        "_bytes",
        "_candidate_bytes",
        "_candidates",
        "_entries",
        "get",
        "max_bytes",
        "max_entry",
    )

    def __init__(self, max_bytes: int, max_entry: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry if max_entry is not None else max_bytes // 64
        self._entries: dict[K, V] = {}
        self._bytes = 0
        self._candidates: dict[K, int] = {}  # seen once, with its size; admitted on the next
        self._candidate_bytes = 0
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the cache charges for its entries and candidates now."""
        return self._bytes + self._candidate_bytes

    def put(self, key: K, value: V, size: int) -> None:
        """Remember `value` for `key` (of about `size` bytes) if it earns a place."""
        size += ENTRY_OVERHEAD
        if size > self.max_entry:
            return  # one huge entry would evict everything useful: not cached
        candidates = self._candidates
        seen = candidates.pop(key, None)
        if seen is None:
            if self._candidate_bytes + size > self.max_bytes:
                candidates.clear()
                self._candidate_bytes = 0
            candidates[key] = size
            self._candidate_bytes += size
            return
        self._candidate_bytes -= seen
        if self._bytes + size > self.max_bytes:
            self.clear()
        self._entries[key] = value
        self._bytes += size

    def clear(self) -> None:
        """Forget the entries (when what they were computed from changes, or when full)."""
        self._entries.clear()
        self._bytes = 0
