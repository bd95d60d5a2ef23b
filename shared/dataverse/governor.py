"""The throttling governor: how many Dataverse requests one application user may have in flight, and when.

Dataverse service protection (reference/dataverse.md §7) is per application user: a concurrency
limit that errors immediately, and request-count and execution-time budgets over a sliding
5-minute window that answer 429 with `Retry-After`. Microsoft's guidance (§7.2) is followed here:
- concurrency comes from `x-ms-dop-hint`, never above a configured cap;
- after a 429 nothing is sent on that user before `Retry-After` has passed (the server extends the
  penalty for requests that arrive early);
- the first hint is adopted at once (as Microsoft's samples set their degree of parallelism from
  `RecommendedDegreesOfParallelism`); before it, concurrency grows by one per success (it doubles every
  round trip, "slow start"). After a 429 it halves and grows back by one per `limit` successes (AIMD),
  and requests released together after a pause are spaced out, so the rate is steady, not bursts.
  (Growing by one per `limit` successes from a start of 4 took ~114 answers to reach 16: a
  10,000-record load sent fewer than that and never ran more than 8 requests at once; at the limit,
  where one answer takes minutes, the first window's budget went unused.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("bridgework.dataverse.governor")


class GovernorConfig(BaseModel):
    """Tuning for one application user's governor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrency: int = Field(default=52, ge=1)
    """Hard cap on requests in flight, whatever `x-ms-dop-hint` says (52 is the documented default limit)."""
    initial_concurrency: int = Field(default=4, ge=1)
    """Where the ramp starts before the first `x-ms-dop-hint` arrives."""
    retry_after_margin: float = Field(default=0.02, ge=0)
    """Seconds added to every Retry-After: a request must not arrive even slightly early."""
    release_spread: float = Field(default=0.25, ge=0)
    """After a throttling pause, the queued requests are released evenly over at most this many seconds."""


class Governor:
    """Admission control for one application user. Use `async with governor.slot(): send(...)`."""

    def __init__(
        self,
        config: GovernorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or GovernorConfig()
        self._clock = clock
        self._ceiling = self.config.max_concurrency
        self._limit = float(min(self.config.initial_concurrency, self._ceiling))
        self._in_flight = 0
        self._waiting = 0
        self._burst_remaining: float | None = None
        self._time_remaining: float | None = None
        self._blocked_until = 0.0
        self._next_start = 0.0
        self._spacing_left = 0
        self._spacing = 0.0
        self._cond = asyncio.Condition()
        self.throttled = 0
        """429s seen by this user (the first one ends the slow start)."""
        self.sent = 0
        """Requests admitted."""
        self.dop_hint: int | None = None
        self.held_back_seconds = 0.0
        """Seconds this user was held back by Retry-After (overlapping blocks counted once)."""
        self._unlogged_hold = 0.0

    # -- state read by the lane picker --
    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def blocked_until(self) -> float:
        return self._blocked_until

    def load(self, now: float) -> tuple[float, float]:
        """Sort key for picking the least busy user: when it can send, then how full it is (queue included)."""
        ready = max(self._blocked_until, self._next_start, now)
        return (ready, (self._in_flight + self._waiting) / self.limit)

    # -- admission --
    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._acquire()
        try:
            yield
        finally:
            await self._release()

    async def _acquire(self) -> None:
        self._waiting += 1
        try:
            await self._wait_turn()
        finally:
            self._waiting -= 1

    async def _wait_turn(self) -> None:
        async with self._cond:
            while True:
                now = self._clock()
                ready_at = max(self._blocked_until, self._next_start)
                if now >= ready_at and self._in_flight < self.limit and not self._budget_spent():
                    break
                timeout = ready_at - now if now < ready_at else None
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout)
                except TimeoutError:
                    pass
            self._in_flight += 1
            self.sent += 1
            if self._spacing_left > 0:
                self._spacing_left -= 1
                self._next_start = now + self._spacing

    def _budget_spent(self) -> bool:
        """The last answers said the window has no room left for more than what is already in flight.

        Then only one request (a probe) may be out: if the window is full it alone gets the 429 and
        its Retry-After, instead of every in-flight request arriving after the limit was reached.
        """
        if self._in_flight == 0:
            return False
        if self._burst_remaining is not None and self._burst_remaining <= self._in_flight:
            return True
        return self._time_remaining is not None and self._time_remaining <= 0

    async def _release(self) -> None:
        async with self._cond:
            self._in_flight -= 1
            # Wake only as many waiters as there are free slots: waking every waiter on every answer
            # costs O(waiters) per request. Waiters are interchangeable, so if the first cannot go, none can.
            self._cond.notify(max(1, self.limit - self._in_flight))

    # -- feedback from responses --
    def observe(
        self, dop_hint: str | None, burst_remaining: str | None = None, time_remaining: str | None = None
    ) -> None:
        """Every response: adopt `x-ms-dop-hint` as the ceiling (under the configured cap), and note the
        `x-ms-ratelimit-*-remaining-xrm-requests` values. Microsoft says not to drive the send rate from
        those; they are used only to stop piling requests onto a window that is already used up."""
        if dop_hint:
            try:
                hint = int(dop_hint)
            except ValueError:
                hint = 0
            if hint >= 1:
                first = self.dop_hint is None
                self.dop_hint = hint
                self._ceiling = min(hint, self.config.max_concurrency)
                self._limit = float(self._ceiling) if first and self.throttled == 0 else min(
                    self._limit, float(self._ceiling))
        self._burst_remaining = _number(burst_remaining)
        self._time_remaining = _number(time_remaining)

    def succeeded(self) -> None:
        """A request went through: grow by one (slow start: before any 429, while no hint has set the
        limit) or by one per `limit` successes (after a 429), up to the ceiling."""
        if self._limit < self._ceiling:
            step = 1.0 if self.throttled == 0 else 1.0 / self._limit
            self._limit = min(float(self._ceiling), self._limit + step)

    def _block_until(self, until: float) -> None:
        start = max(self._blocked_until, self._clock())
        if until > start:
            self.held_back_seconds += until - start
            self._unlogged_hold += until - start
            self._blocked_until = until

    def block_now(self, retry_after: float) -> None:
        """A 429's headers just arrived: block at once (synchronously), before any other task runs."""
        self._block_until(self._clock() + retry_after + self.config.retry_after_margin)

    async def wait_unblocked(self) -> None:
        """Sleep until this user's Retry-After block (if any) has passed."""
        while True:
            wait = self._blocked_until - self._clock()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def throttled_for(self, retry_after: float) -> None:
        """A 429: block this user until Retry-After has passed, halve concurrency, spread the restart."""
        self.throttled += 1
        async with self._cond:
            self._block_until(self._clock() + retry_after + self.config.retry_after_margin)
            # One line per 429 (numbers only): the benchmark sums them from the host's log.
            log.info("dataverse 429: retry_after=%.3f held_back=%.3f", retry_after, self._unlogged_hold)
            self._unlogged_hold = 0.0
            self._limit = max(1.0, self._limit / 2)
            self._spacing_left = self.limit
            self._spacing = min(self.config.release_spread, max(retry_after, 0.01)) / self.limit
            self._next_start = max(self._next_start, self._blocked_until)
            self._burst_remaining = self._time_remaining = None
            self._cond.notify_all()


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


__all__ = ["Governor", "GovernorConfig"]
