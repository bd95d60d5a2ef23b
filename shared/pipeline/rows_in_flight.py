"""How many source rows the load batches of one process hold at once.

Why: a batch holds its part's rows in several forms at once (source values, payloads, request bodies,
outcomes, journal entities): 7-9 KB per source row at its peak (bench/bench_load_memory.py). The host runs
up to 8 activities at once (host.json `maxConcurrentActivityFunctions`), so with only that bound what the
process held grew with the practice until every slot held a full 5,000-row part: the host's peak was
168 MB at 10,000 records, 287 MB at 100,000 and 412 MB at 1,000,000. A budget of rows bounds it whatever
the practice's size: a batch waits until its part's rows fit, first come first served. A part larger than
the whole budget takes all of it, so it runs alone rather than never.

The budget is the setting `BRIDGEWORK_LOAD_ROWS_IN_FLIGHT` (shared/settings.py). It is per event loop,
which is per process in the Python worker and the local host; tests that run batches on their own loops
each get their own budget.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import AsyncIterator


class RowBudget:
    """A weighted semaphore in rows, granted in arrival order (a large part is not starved by small ones)."""

    def __init__(self, rows: int) -> None:
        if rows < 1:
            raise ValueError(f"a row budget must be at least 1 row, not {rows}")
        self.rows = rows
        self.free = rows
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Holders queued for their turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def hold(self, rows: int) -> AsyncIterator[int]:
        """Hold `rows` (at most the whole budget) for the body; yields the rows held."""
        wanted = max(0, min(rows, self.rows))
        await self._acquire(wanted)
        try:
            yield wanted
        finally:
            self._release(wanted)

    async def _acquire(self, rows: int) -> None:
        if not self._waiting and rows <= self.free:
            self.free -= rows
            return
        turn = asyncio.get_running_loop().create_future()
        entry = (rows, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted just as it was cancelled: give it back
                self._release(rows)
            else:
                with contextlib.suppress(ValueError):  # `_grant` may have dropped it already
                    self._waiting.remove(entry)
                self._grant()  # a large request that leaves may let smaller ones behind it go
            raise

    def _release(self, rows: int) -> None:
        self.free += rows
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            rows, turn = self._waiting.popleft()
            if turn.done():  # cancelled while queued
                continue
            self.free -= rows
            turn.set_result(None)


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RowBudget] = weakref.WeakKeyDictionary()


def budget_for(rows: int) -> RowBudget:
    """This event loop's budget (made with `rows` on first use, or again when the setting changed)."""
    loop = asyncio.get_running_loop()
    budget = _BUDGETS.get(loop)
    if budget is None or budget.rows != rows:
        budget = _BUDGETS[loop] = RowBudget(rows)
    return budget
