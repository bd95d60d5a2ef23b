"""How much of the bundle the load batches of one process hold at once: the worker's memory bound.

Why: a batch holds its part's rows in several forms at once (source values, payloads, request bodies,
outcomes, journal entries). The host runs up to 8 activities at once (host.json
`maxConcurrentActivityFunctions`), so with only that bound what the process held grew with the practice
until every slot held a full 5,000-row part: the host's peak was 168 MB at 10,000 records, 287 MB at
100,000 and 412 MB at 1,000,000.

What a batch weighs is its part's size as stored in the bundle (gzip JSON Lines, from the manifest), not
its rows. Rows differ in what they hold: at a batch's peak, 9.2 KB per patient row (a 335-row part), 7.1 KB
per appointment row (1,518 rows) and 3.3 KB per ledger row (5,000 rows), fixed costs included
(bench/bench_load_memory.py). Stored bytes follow that more closely than rows (110, 49 and 41 bytes a row in
the 1M bundle). A batch waits until its part fits, first come first served; a part larger than the whole
budget takes all of it, so it runs alone rather than never.

The budget is the setting `BRIDGEWORK_LOAD_BUNDLE_BYTES_IN_FLIGHT` (shared/settings.py). It is per event
loop, which is per process in the Python worker and the local host; tests that run batches on their own
loops each get their own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import AsyncIterator


class Budget:
    """A weighted semaphore, granted in arrival order (a large part is not starved by small ones)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a load budget must be at least 1, not {size}")
        self.size = size
        self.free = size
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Holders queued for their turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def hold(self, weight: int) -> AsyncIterator[int]:
        """Hold `weight` (at most the whole budget) for the body; yields the weight held."""
        wanted = max(0, min(weight, self.size))
        await self._acquire(wanted)
        try:
            yield wanted
        finally:
            self._release(wanted)

    async def _acquire(self, weight: int) -> None:
        if not self._waiting and weight <= self.free:
            self.free -= weight
            return
        turn = asyncio.get_running_loop().create_future()
        entry = (weight, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted just as it was cancelled: give it back
                self._release(weight)
            else:
                with contextlib.suppress(ValueError):  # `_grant` may have dropped it already
                    self._waiting.remove(entry)
                self._grant()  # a large request that leaves may let smaller ones behind it go
            raise

    def _release(self, weight: int) -> None:
        self.free += weight
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            weight, turn = self._waiting.popleft()
            if turn.done():  # cancelled while queued
                continue
            self.free -= weight
            turn.set_result(None)


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Budget] = weakref.WeakKeyDictionary()


def budget_for(size: int) -> Budget:
    """This event loop's budget (made with `size` on first use, or again when the setting changed)."""
    loop = asyncio.get_running_loop()
    budget = _BUDGETS.get(loop)
    if budget is None or budget.size != size:
        budget = _BUDGETS[loop] = Budget(size)
    return budget
