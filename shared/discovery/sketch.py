"""Bounded-memory counters for profiling: distinct values (exact up to a cap), compact key sets, id samples.

Values are reduced to Python's 64-bit hash as soon as they are seen, so no counter here holds a row
value: memory is 8 bytes (key sets) or one small int (distinct counters) per item, whatever the
values' length. Two different values sharing a hash would be counted once; at 64 bits the chance
is about n^2 / 3.7e19, far below one in a million for any practice's table.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any


def value_hash(value: Any) -> int:
    """A process-stable 64-bit hash of a bundle value (str, int, bool, float, or a JSON object)."""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    # The type is part of the identity: 1, True and "1" are three different values.
    return hash((type(value).__name__, value))


class DistinctCounter:
    """Counts distinct values exactly until `cap` are seen, then stops growing and reports "at least cap"."""

    __slots__ = ("cap", "_seen", "saturated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[int] = set()
        self.saturated = False

    def add(self, value: Any) -> None:
        if self.saturated:
            return
        self._seen.add(value_hash(value))
        if len(self._seen) > self.cap:
            # Memory stays flat from here on; the count is only known to be at least `cap`.
            self._seen = set()
            self.saturated = True

    def add_hashes(self, hashes: Iterable[int]) -> None:
        """Add values already reduced to their hash (a column whose values all share one type)."""
        if self.saturated:
            return
        self._seen.update(hashes)
        if len(self._seen) > self.cap:
            self._seen = set()
            self.saturated = True

    @property
    def count(self) -> int:
        return self.cap if self.saturated else len(self._seen)

    @property
    def exact(self) -> bool:
        return not self.saturated


class KeySet:
    """A frozen set of string keys as a sorted array of 8-byte hashes (membership by binary search)."""

    __slots__ = ("_hashes",)

    def __init__(self, keys: Iterable[str]) -> None:
        collected = array("q", (hash(k) for k in keys))
        self._hashes = array("q", sorted(collected))

    def __contains__(self, key: object) -> bool:
        h = hash(key)
        i = bisect_left(self._hashes, h)
        return i < len(self._hashes) and self._hashes[i] == h

    def __len__(self) -> int:
        return len(self._hashes)


class IdSample:
    """An exact count of findings plus the first `cap` ids (ids are not PHI; the list stays bounded)."""

    __slots__ = ("cap", "count", "ids")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0
        self.ids: list[str] = []

    def add(self, ident: str) -> None:
        self.count += 1
        if len(self.ids) < self.cap:
            self.ids.append(ident)

    @property
    def truncated(self) -> bool:
        return self.count > len(self.ids)
