"""Clocks for the local host: real time, or a virtual clock that only moves when told to.

With the virtual clock, durable timers and timer triggers fire as soon as a test advances time past
them (`POST /admin/devhost/clock`, see devhost/README.md), so a 48-hour cutover window runs in seconds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class Clock:
    """Real UTC time."""

    virtual = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime, wake: asyncio.Event) -> None:
        """Return when `moment` is reached or `wake` is set, whichever comes first."""
        delay = (moment - self.now()).total_seconds()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except TimeoutError:
            pass


class VirtualClock(Clock):
    """Time that starts at `start` and moves only through `advance` / `set`."""

    virtual = True

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(UTC)).astimezone(UTC)
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the virtual clock cannot go backwards")
        return self.set(self._now + delta)

    def set(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if moment < self._now:
            raise ValueError("the virtual clock cannot go backwards")
        self._now = moment
        self._moved.set()
        self._moved = asyncio.Event()
        return self._now

    async def sleep_until(self, moment: datetime, wake: asyncio.Event) -> None:
        while self._now < moment and not wake.is_set():
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            _, pending = await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
