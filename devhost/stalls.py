"""How long the host's event loop was blocked, and where: a watchdog task that asks to wake every 50 ms
and counts how late it woke, and a sampler thread that, while the loop is late, notes the loop thread's
innermost application frame (file and line only).

Async functions (HTTP, orchestrators, async activities) share this one loop, as they share the
Python worker's loop in Azure: synchronous work inside an async activity (a storage call, parsing a
bundle part) stalls every other function and every response waiting to be read. The figures are in
`/admin/host/status` (`loopStalls`) and the benchmark prints them.

Garbage collection is timed beside them (`gc`): a full collection walks every tracked object while holding
the GIL, so on a large heap it stalls the loop wherever the loop happens to be, which the sampler cannot
tell from the code it interrupts.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections import Counter
from pathlib import Path

TICK = 0.05
"""Seconds between wake-ups."""
STALL = 0.1
"""A wake-up later than this counts as a stall."""
CALLERS = 3
"""Application frames kept per sample: the innermost and its callers."""
HOST = Path(__file__).resolve().parent
REPO = str(HOST.parent)


class LoopStalls:
    def __init__(self) -> None:
        self.blocked_seconds = 0.0
        """Sum of the lateness of every stalled wake-up."""
        self.stalls = 0
        self.longest = 0.0
        self.where: Counter[str] = Counter()
        """`file:line function < caller < caller` of the application frames innermost first, one count per
        sample (every 50 ms) while the loop is late."""
        self._last_tick = time.perf_counter()
        self._loop_thread: int | None = None
        self._stopped = threading.Event()
        self.gc_seconds = [0.0, 0.0, 0.0]
        """Seconds spent in garbage collection, per generation collected, in any thread."""
        self.gc_collections = [0, 0, 0]
        self.gc_longest = 0.0
        self._gc_started: float | None = None

    async def watch(self) -> None:
        """Run until cancelled (the sampler thread stops with it)."""
        self._loop_thread = threading.get_ident()
        self._stopped.clear()
        threading.Thread(target=self._sample, name="loop-stall-sampler", daemon=True).start()
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                asked = time.perf_counter()
                self._last_tick = asked
                await asyncio.sleep(TICK)
                late = time.perf_counter() - asked - TICK
                if late > STALL:
                    self.stalls += 1
                    self.blocked_seconds += late
                    self.longest = max(self.longest, late)
        finally:
            gc.callbacks.remove(self._on_gc)
            self._stopped.set()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside the collector with the GIL held: no allocation-heavy work here.
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        if self._gc_started is None:  # registered mid-collection: no start to time from
            return
        took = time.perf_counter() - self._gc_started
        self._gc_started = None
        generation = info.get("generation", 2)
        self.gc_seconds[generation] += took
        self.gc_collections[generation] += 1
        self.gc_longest = max(self.gc_longest, took)

    def _sample(self) -> None:
        while not self._stopped.wait(TICK):
            if time.perf_counter() - self._last_tick <= TICK + STALL:
                continue
            frame = sys._current_frames().get(self._loop_thread or 0)
            places: list[str] = []
            while frame is not None and len(places) < CALLERS:
                path = frame.f_code.co_filename
                if path.startswith(REPO) and not path.startswith(str(HOST)) and "/.venv/" not in path:
                    places.append(f"{Path(path).relative_to(REPO)}:{frame.f_lineno} {frame.f_code.co_name}")
                frame = frame.f_back
            self.where[" < ".join(places) or "(library or host code)"] += 1

    def as_json(self) -> dict[str, object]:
        return {"stalls": self.stalls, "blockedSeconds": round(self.blocked_seconds, 3),
                "longestMs": round(self.longest * 1000),
                "where": [{"at": at, "samples": n} for at, n in self.where.most_common(15)],
                "gc": {"seconds": round(sum(self.gc_seconds), 3),
                       "secondsByGeneration": [round(x, 3) for x in self.gc_seconds],
                       "collections": list(self.gc_collections), "longestMs": round(self.gc_longest * 1000)}}
