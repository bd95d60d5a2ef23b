"""The host's event-loop watchdog: a coroutine that blocks the loop is counted, timed and named by
file, line and function (never by anything it holds)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

from devhost.stalls import LoopStalls


def _blocking_step() -> None:
    time.sleep(0.6)  # what a synchronous storage call inside an async function does to the loop


async def _scenario(stalls: LoopStalls) -> None:
    watcher = asyncio.create_task(stalls.watch())
    await asyncio.sleep(0.2)
    _blocking_step()
    await asyncio.sleep(0.2)
    watcher.cancel()


def test_a_blocked_loop_is_counted_and_located() -> None:
    stalls = LoopStalls()
    asyncio.run(_scenario(stalls))
    report = stalls.as_json()
    assert report["stalls"] >= 1
    assert 0.4 <= report["blockedSeconds"] <= 5.0
    assert report["longestMs"] >= 400
    top = report["where"][0]
    assert top["at"].startswith("tests/devhost/test_loop_stalls.py:")
    assert "_blocking_step" in top["at"] and "_scenario" in top["at"]  # the frame and its caller
    assert top["samples"] >= 5


def test_the_sampler_thread_stops_with_the_watchdog() -> None:
    asyncio.run(_scenario(LoopStalls()))
    deadline = time.monotonic() + 2.0
    while any(t.name == "loop-stall-sampler" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "loop-stall-sampler" for t in threading.enumerate())


async def _collect_while_watched(stalls: LoopStalls) -> None:
    watcher = asyncio.create_task(stalls.watch())
    await asyncio.sleep(0.05)
    gc.collect()  # a full collection, as the collector runs one on a large heap
    await asyncio.sleep(0.05)
    watcher.cancel()


def test_garbage_collection_is_timed_and_the_callback_removed() -> None:
    stalls = LoopStalls()
    asyncio.run(_collect_while_watched(stalls))
    report = stalls.as_json()["gc"]
    assert report["collections"][2] >= 1
    assert report["secondsByGeneration"][2] > 0
    assert report["seconds"] >= report["secondsByGeneration"][2]
    assert stalls._on_gc not in gc.callbacks
