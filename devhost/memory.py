"""The host process's memory: glibc malloc settings, freed memory handed back when idle, and a breakdown.

Why: activities run on up to 8 threads (host.json maxConcurrentActivityFunctions). glibc gives threads
their own malloc arenas (up to 8 per core) and keeps what they free for reuse inside each arena, so a
load wave's peak stays resident after it ends while the Python heap (tracemalloc) has shrunk
(bench/bench_load_memory.py --threads 8 shows it; in 8-minute soaks the host levelled off after ~9
cycles with or without this, about 4 MiB lower with it).
`limit_arenas` caps the arenas (as MALLOC_ARENA_MAX does) before any activity thread exists;
`fix_mmap_threshold` keeps large blocks (request and response bodies, a part's lists) in their own
mappings, handed back the moment they are freed: glibc raises its threshold each time such a block is
freed (up to 32 MiB), after which large blocks come from the arenas and their free space stays resident
(at the 100k load's peak, 39 MiB without and 19 MiB with the threshold fixed at 128 KiB: bench/README.md).
`trim_heap` returns free pages to the system (malloc_trim(0)). All do nothing off glibc.

In Azure the Functions host starts the Python worker, so this module does not run there: the same
settings are the app settings `MALLOC_ARENA_MAX=2` and `MALLOC_MMAP_THRESHOLD_=131072`
(infra/app/api.bicep; app settings are the worker's environment variables, which glibc reads at start).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost.memory")

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena cap (glibc malloc.h)."""
M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the mmap threshold (setting it also turns off glibc's dynamic raise)."""
DEFAULT_ARENAS = 2
DEFAULT_MMAP_THRESHOLD = 128 * 1024
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
    return _mallopt(M_ARENA_MAX, "MALLOC_ARENA_MAX", "DEVHOST_MALLOC_ARENA_MAX", DEFAULT_ARENAS, arenas)


def fix_mmap_threshold(size: int | None = None) -> int | None:
    """Fix glibc's mmap threshold for this process; call at start-up.

    MALLOC_MMAP_THRESHOLD_ in the environment wins (glibc read it at start); otherwise
    DEVHOST_MALLOC_MMAP_THRESHOLD or `size` (default 128 KiB; 0 leaves glibc's dynamic threshold).
    Returns the threshold set, or None."""
    return _mallopt(M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "DEVHOST_MALLOC_MMAP_THRESHOLD",
                    DEFAULT_MMAP_THRESHOLD, size)


def _mallopt(parameter: int, glibc_variable: str, devhost_variable: str, default: int,
             value: int | None) -> int | None:
    """Set one mallopt parameter unless glibc's own variable is set; returns the value set, or None."""
    if os.environ.get(glibc_variable):
        return None
    wanted = value if value is not None else int(os.environ.get(devhost_variable, default))
    libc = _libc()
    if wanted <= 0 or libc is None or not libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(wanted)):
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


# -- what the process's memory is made of, without tracemalloc ----------------------------------------------

_MIB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_breakdown(collect: bool = False) -> dict[str, Any]:
    """The process's resident memory split by who holds it, in MiB; sizes only, never contents.

    - `rss`, `hwm`: resident now and at most (/proc/self/status);
    - `py_*`: Python's small-object allocator (pymalloc, objects up to 512 bytes): `py_arenas` mapped,
      `py_used` in live blocks, `py_free` free blocks and pools inside those arenas (a 1 MiB arena goes back
      to the system only when all of it is free, so this is fragmentation);
    - `c_*`: glibc malloc (larger objects, C extensions): `c_used` in use, `c_free` freed but kept;
    - `rest`: what neither explains (code, libraries, thread stacks, untouched pages);
    - with `collect`: `py_live`, what `py_used` is once the copy has run a full garbage collection, and
      `py_garbage`, the difference: unreachable cycles the host's collector has not reached yet (its young
      threshold is high, shared/gc_tuning.py, and a full collection waits for the old generation to grow
      by a quarter), and `garbage_types` and `live_types`, the most common types of the garbage and of the
      live objects the collector tracks (containers and instances, not strings or bytes): [name, objects,
      KiB], shallow sizes. The host itself collects nothing.

    Cheap enough to poll every few seconds: no tracing. pymalloc's own figures come from
    `sys._debugmallocstats`, which prints to the C stderr; a forked child (a copy-on-write snapshot of this
    heap) prints them into a pipe, so the host's own stderr is never redirected."""
    status = _proc_status()
    out = {"rss": status.get("VmRSS", 0.0), "hwm": status.get("VmHWM", 0.0)}
    py = _pymalloc_stats(collect)
    types = {key: py.pop(key) for key in ("garbage_types", "live_types") if key in py}
    if py:
        out |= {"py_arenas": py["arenas"], "py_used": py["used"], "py_free": py["arenas"] - py["used"]}
        if "live" in py:
            out |= {"py_live": py["live"], "py_garbage": py["used"] - py["live"]}
    libc = _libc()
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out |= {"c_used": (info.uordblks + info.hblkhd) / _MIB, "c_free": info.fordblks / _MIB}
    if "py_arenas" in out and "c_used" in out:
        out["rest"] = out["rss"] - out["py_arenas"] - out["c_used"] - out["c_free"]
    rounded: dict[str, Any] = {key: round(value, 1) for key, value in out.items()}
    rounded |= types
    return rounded


COLLECT_TIMEOUT_SECONDS = 30
"""How long the forked copy may take over its garbage collection before it is ended."""


def _count_by_type(objects: list[Any], top: int = 12) -> list[list[Any]]:
    """[type name, objects, KiB] of the most common types (shallow sizes; names only, never contents)."""
    counts: dict[str, list[int]] = {}
    for obj in objects:
        kind = type(obj)
        entry = counts.setdefault(f"{kind.__module__}.{kind.__qualname__}", [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj, 0)
    ranked = sorted(counts.items(), key=lambda kv: kv[1][1], reverse=True)[:top]
    return [[name, n, round(size / 1024)] for name, (n, size) in ranked]


def _proc_status() -> dict[str, float]:
    """VmRSS and VmHWM in MiB (empty off Linux)."""
    try:
        lines = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return {}
    return {name: int(value.split()[0]) / 1024 for name, _, value in (line.partition(":") for line in lines)
            if name in ("VmRSS", "VmHWM")}


def _pymalloc_stats(collect: bool = False) -> dict[str, Any]:
    """pymalloc's mapped arenas and bytes in allocated blocks, in MiB (empty where fork is not available);
    with `collect`, also the bytes in allocated blocks after a full collection in the child (`live`)."""
    if not hasattr(os, "fork"):
        return {}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: print the copied heap's statistics into the pipe, then leave at once
        try:
            os.dup2(write_end, 2)
            sys._debugmallocstats()
            if collect:
                # A finalizer waiting on a lock another thread of the host held at the fork would hang the
                # child (and this call): the alarm ends it, and the answer comes without `py_live`.
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(COLLECT_TIMEOUT_SECONDS)
                # Finalizers of the copy's garbage run here, in the child: keep them off the host's log.
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                logging.disable(logging.CRITICAL)
                gc.set_debug(gc.DEBUG_SAVEALL)  # keep the garbage in gc.garbage, to count it by type
                gc.collect()
                os.write(2, b"# garbage by type " + json.dumps(_count_by_type(gc.garbage)).encode() + b"\n")
                gc.set_debug(0)
                gc.garbage.clear()
                gc.collect()
                os.write(2, b"# after a full collection\n")
                sys._debugmallocstats()
                os.write(2, b"# live by type " + json.dumps(_count_by_type(gc.get_objects())).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode("ascii", "replace")
    os.waitpid(pid, 0)
    figures: dict[str, Any] = {}
    used = "used"
    for line in text.splitlines():
        label, _, value = line.partition("=")
        if line.startswith(("# garbage by type ", "# live by type ")):
            kind, _, counts = line.removeprefix("# ").partition(" by type ")
            figures[f"{kind}_types"] = json.loads(counts)
        elif line.startswith("# after a full collection"):
            used = "live"
        elif "bytes/arena" in label and used == "used":
            figures["arenas"] = int(value.replace(",", "")) / _MIB
        elif label.strip() == "# bytes in allocated blocks":
            figures[used] = int(value.replace(",", "")) / _MIB
    return figures if "arenas" in figures and "used" in figures else {}
