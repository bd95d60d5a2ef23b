"""The host process's C heap: fewer glibc malloc arenas, and freed memory handed back to the system when idle.

Why: activities run on up to 8 threads (host.json maxConcurrentActivityFunctions). glibc gives threads
their own malloc arenas (up to 8 per core) and keeps what they free for reuse inside each arena, so a
load wave's peak stays resident after it ends while the Python heap (tracemalloc) has shrunk
(bench/bench_load_memory.py --threads 8 shows it; in 8-minute soaks the host levelled off after ~9
cycles with or without this, about 4 MiB lower with it).
`limit_arenas` caps the arenas (as MALLOC_ARENA_MAX does) before any activity thread exists;
`trim_heap` returns free pages to the system (malloc_trim(0)). Both do nothing off glibc.

In Azure the Functions host starts the Python worker, so this module does not run there: the same
cap is the app setting `MALLOC_ARENA_MAX=2` (app settings are the worker's environment variables).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable

log = logging.getLogger("devhost.memory")

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena cap (glibc malloc.h)."""
DEFAULT_ARENAS = 2
TRIM_INTERVAL_SECONDS = 5.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int | None = None) -> int | None:
    """Cap glibc's malloc arenas for this process; call at start-up, before threads allocate.

    MALLOC_ARENA_MAX in the environment wins (glibc read it at start); otherwise DEVHOST_MALLOC_ARENA_MAX
    or `arenas` (default 2; 0 leaves glibc's default). Returns the cap set, or None."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return None
    wanted = arenas if arenas is not None else int(os.environ.get("DEVHOST_MALLOC_ARENA_MAX", DEFAULT_ARENAS))
    libc = _libc()
    if wanted <= 0 or libc is None:
        return None
    if not libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(wanted)):
        return None
    return wanted


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (malloc_trim(0)); False when not on glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


async def trim_when_idle(is_idle: Callable[[], bool], work_done: Callable[[], int],
                         interval: float = TRIM_INTERVAL_SECONDS) -> None:
    """Every `interval` seconds: once the host is idle after finishing some work, trim the heap (once per
    idle spell, so an idle host costs nothing). Runs until cancelled; DEVHOST_MALLOC_TRIM=0 turns it off."""
    if os.environ.get("DEVHOST_MALLOC_TRIM", "1") == "0" or _libc() is None:
        return
    trimmed_at = work_done()
    while True:
        await asyncio.sleep(interval)
        done = work_done()
        if done != trimmed_at and is_idle():
            trim_heap()
            trimmed_at = done
            log.debug("idle: C heap trimmed")
