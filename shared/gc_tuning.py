"""Garbage-collector settings for the process that runs the function app (the Python worker in Azure,
devhost locally).

Why: a load keeps several 5,000-row parts in flight (payloads, journal entities, HTTP bodies). With
CPython's default first threshold (700 allocations) those objects live through young collections, reach
the oldest generation, and trigger full collections. A full collection walks every tracked object with
the GIL held, so it stalls the event loop and every activity thread at once; the benchmark times them
(`host garbage collection` in bench/bench_e2e.py, measured in devhost/stalls.py).

What: `gc.freeze()` moves what exists after the imports (modules, classes, SDK tables: about 100,000
objects) out of the collector's sight for good, and a larger first threshold lets short-lived part
objects die by reference counting before any collection sees them. Cycles are still collected.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations minus deallocations between young collections (CPython's default is 700)."""


def tune_garbage_collector() -> None:
    """Call once, after the app's imports. Calling again only freezes what was created since."""
    gc.collect()  # import-time garbage first: frozen cycles would never be freed
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
