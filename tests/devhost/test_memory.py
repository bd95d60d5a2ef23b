"""devhost/memory.py: the arena cap at start-up, the heap trim, and trimming once per idle spell."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devhost import memory


def test_trim_heap_runs_on_glibc() -> None:
    if memory._libc() is None:
        pytest.fail("this machine's Python runs on glibc: malloc_trim must be found")
    assert memory.trim_heap() is True


def test_the_environment_cap_wins_and_zero_leaves_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_arenas() is None  # glibc already took the variable at start
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert memory.limit_arenas(0) is None


def test_fix_mmap_threshold_sets_it_in_a_fresh_process_and_the_environment_wins() -> None:
    code = ("import os; os.environ.pop('MALLOC_MMAP_THRESHOLD_', None); "
            "from devhost.memory import fix_mmap_threshold; print(fix_mmap_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(memory.DEFAULT_MMAP_THRESHOLD)
    code = "from devhost.memory import fix_mmap_threshold; print(fix_mmap_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert out.stdout.strip() == "None"


def test_a_fixed_mmap_threshold_hands_large_blocks_back_when_freed() -> None:
    code = ("import sys; sys.path.insert(0, '.'); from devhost import memory; memory.fix_mmap_threshold({size}); "
            "blocks = [bytearray(256 * 1024) for _ in range(200)]; blocks[0][0] = 1; "
            "big = [bytearray(8 * 1024 * 1024)]; del big; "  # glibc would raise its threshold to 8 MiB here
            "blocks2 = [bytearray(256 * 1024) for _ in range(200)]; del blocks, blocks2; "
            "print(memory.heap_breakdown()['c_free'])")
    fixed = subprocess.run([sys.executable, "-c", code.format(size=128 * 1024)], capture_output=True, text=True,
                           check=True, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    dynamic = subprocess.run([sys.executable, "-c", code.format(size=0)], capture_output=True, text=True,
                             check=True, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    assert float(fixed.stdout) < 5 <= float(dynamic.stdout), (fixed.stdout, dynamic.stdout)


def test_limit_arenas_sets_the_cap_in_a_fresh_process() -> None:
    code = ("import os; os.environ.pop('MALLOC_ARENA_MAX', None); os.environ['DEVHOST_MALLOC_ARENA_MAX'] = '3'; "
            "from devhost.memory import limit_arenas; print(limit_arenas())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=None)
    assert out.stdout.strip() == "3"


def test_trims_once_per_idle_spell_after_work(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    state = {"done": 0, "idle": False}
    monkeypatch.setattr(memory, "trim_heap", lambda: trims.append(state["done"]) or True)
    monkeypatch.delenv("DEVHOST_MALLOC_TRIM", raising=False)

    async def scenario() -> None:
        task = asyncio.create_task(memory.trim_when_idle(lambda: state["idle"], lambda: state["done"], 0.01))
        await asyncio.sleep(0.05)  # idle at start with no work done: nothing to give back
        state["done"], state["idle"] = 3, False
        await asyncio.sleep(0.05)  # busy: no trim while activities run
        assert trims == []
        state["idle"] = True
        await asyncio.sleep(0.05)  # idle after work: one trim, however long the idle spell
        state["done"] = 5
        await asyncio.sleep(0.05)  # more work done, idle again: one more
        task.cancel()

    asyncio.run(scenario())
    assert trims == [3, 5]


def test_trimming_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVHOST_MALLOC_TRIM", "0")
    monkeypatch.setattr(memory, "trim_heap", lambda: pytest.fail("trimmed although turned off"))
    asyncio.run(asyncio.wait_for(memory.trim_when_idle(lambda: True, lambda: 1, 0.01), 1))


def test_traced_heap_endpoint_reports_growth_or_the_largest_lines(storage_connection_string: str,
                                                                  tmp_path: Path) -> None:
    from devhost.testing import run_host
    from tests.devhost.conftest import SAMPLE_APP

    hub = "m" + uuid.uuid4().hex[:10]
    with run_host(SAMPLE_APP, storage_connection_string, hub, env={"PYTHONTRACEMALLOC": "1"},
                  log_path=tmp_path / "host.log") as host:
        first = host.http().get("/admin/devhost/memory", params={"top": "5"}).json()
        growth = host.http().get("/admin/devhost/memory", params={"top": "5"}).json()
        largest = host.http().get("/admin/devhost/memory", params={"top": "20", "by": "size"}).json()
    assert not first["since_previous"] and growth["since_previous"]
    assert not largest["since_previous"]
    sizes = [t["size_kib"] for t in largest["top"]]
    assert len(sizes) == 20 and sizes == sorted(sizes, reverse=True) and sizes[0] > 0
    assert largest["traced_kib"] > 0 and all(":" in t["where"] for t in largest["top"])


def test_heap_breakdown_sees_small_objects_come_and_go() -> None:
    before = memory.heap_breakdown()
    held = [(n, str(n)) for n in range(400_000)]  # ~40 MiB, all objects small enough for pymalloc
    during = memory.heap_breakdown()
    del held
    after = memory.heap_breakdown()
    assert during["py_used"] - before["py_used"] > 25
    assert during["py_used"] - after["py_used"] > 25
    assert during["rss"] >= during["py_arenas"] and during["hwm"] >= during["rss"]
    assert all(during[key] >= 0 for key in ("py_free", "c_used", "c_free"))


def test_heap_breakdown_sees_large_buffers_in_the_c_heap() -> None:
    before = memory.heap_breakdown()
    held = [bytearray(64 * 1024) for _ in range(400)]  # 25 MiB in blocks too large for pymalloc
    during = memory.heap_breakdown()
    del held
    assert during["c_used"] - before["c_used"] > 20
    assert during["py_used"] - before["py_used"] < 5


def test_heap_breakdown_tells_uncollected_cycles_from_live_objects_without_collecting_them() -> None:
    class Node:
        pass

    gc.disable()  # as in a host between full collections: these cycles stay allocated
    try:
        live = [[n, str(n)] for n in range(200_000)]  # ~25 MiB reachable (lists: the collector tracks them)
        for n in range(200_000):  # ~25 MiB of unreachable cycles
            node = Node()
            node.me, node.payload = node, [n] * 4
        del node
        heap = memory.heap_breakdown(collect=True)
        assert heap["py_garbage"] > 15, "the cycles are counted as garbage"
        assert heap["py_live"] > 15, "the reachable lists are counted as live"
        assert heap["py_live"] + heap["py_garbage"] == pytest.approx(heap["py_used"], abs=0.2)
        kinds = {name: count for name, count, _ in heap["garbage_types"]}
        assert kinds[f"{__name__}.{Node.__qualname__}"] >= 200_000 and kinds["builtins.list"] >= 200_000
        assert kinds["builtins.list"] < 300_000, "the live lists are not garbage"
        live_kinds = {name: count for name, count, _ in heap["live_types"]}
        assert live_kinds["builtins.list"] >= 200_000, "the reachable lists are counted by type"
        assert f"{__name__}.{Node.__qualname__}" not in live_kinds, "collected cycles are not live"
        assert gc.collect() >= 200_000, "the collection ran in the forked copy, not here"
        assert len(live) == 200_000
    finally:
        gc.enable()


def test_a_collection_that_hangs_in_the_copy_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finalizer in the forked copy waits on a lock held at the fork; the copy is ended and the answer
    comes without the collected figures."""
    monkeypatch.setattr(memory, "COLLECT_TIMEOUT_SECONDS", 1)
    lock = threading.Lock()

    class WaitsOnTheLock:
        def __del__(self) -> None:
            with lock:
                pass

    gc.disable()
    try:
        stuck = WaitsOnTheLock()
        stuck.me = stuck
        del stuck
        with lock:
            started = time.monotonic()
            heap = memory.heap_breakdown(collect=True)
            waited = time.monotonic() - started
    finally:
        gc.enable()
        gc.collect()
    assert "py_live" not in heap and heap["py_used"] > 0
    assert waited < 20


def test_heap_endpoint_answers_with_the_admin_key_only(storage_connection_string: str, tmp_path: Path) -> None:
    from devhost.testing import run_host
    from tests.devhost.conftest import SAMPLE_APP

    hub = "h" + uuid.uuid4().hex[:10]
    with run_host(SAMPLE_APP, storage_connection_string, hub, log_path=tmp_path / "host.log") as host:
        heap = host.http().get("/admin/devhost/heap").json()
        collected = host.http().get("/admin/devhost/heap", params={"collect": "1"}).json()
        anonymous = httpx.get(f"{host.url}/admin/devhost/heap")
    assert anonymous.status_code == 401
    assert "py_live" not in heap and 0 < collected["py_live"] <= collected["py_used"]
    assert collected["py_garbage"] >= 0
    assert set(heap) >= {"rss", "hwm", "py_arenas", "py_used", "py_free", "c_used", "c_free", "rest"}
    assert 0 < heap["py_used"] <= heap["py_arenas"] < heap["rss"]
