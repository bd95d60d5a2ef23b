"""Benchmark: the Python heap one load batch (`shared.pipeline.load.load_batch`) holds for one bundle part,
stage by stage, and the source lines that hold it.

Synthesises a practice big enough for a full part of its largest table (16 `proc_log` rows per patient:
320 patients fill a 5,000-row part), starts Azurite, the emulator in its own process (so its memory is not
traced here) and the local host, drives the migration as an operator does up to the sample decision
(map and schema approved, schema built, load plan stored, the full load not started), then runs
`load_batch` for part 0 of the map in this process under `tracemalloc` and prints, per stage, the traced
peak above what the process held before the batch, in MB per part and KB per source row:

- read: reading, validating and selecting the part's rows (up to the first `transform_row`);
- transform: the map's transforms (up to the bulk writer);
- write: the bulk writer's requests (`BulkWriter.write`) and what follows it up to the journal write;
- journal: the journal's entities (`Journal.record`) and the rest of the batch.

The transform context (reference tables, owners, parent ids: once per process and migration) is built
before tracing starts, so it is not counted. The top allocation sites by line are printed at the two
points where the batch holds the most: as the transform starts, as the write starts and as the
journal write starts.

    .venv/bin/python -m bench.bench_load_memory [--patients 320] [--part-rows 5000] [--map NAME] [--top 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.testing import run_host
from devtools import azurite
from devtools.stack import (
    LocalStack,
    approve_until_sample,
    create_and_start,
    synthetic_practice,
    target_for,
    users_for_practice,
)
from emulator.config import EmulatorConfig, SeedUser
from emulator.testing import run_emulator
from shared.dataverse.writer import BulkWriter
from shared.dentrix.reader import LoadedRow
from shared.mapping.graph import LoadPlan
from shared.pipeline import load
from shared.runtime import Runtime
from shared.state.journal import Journal
from shared.state.migrations import Migration

TENANT = "practice-group-1"
STAGES = ("read", "transform", "write", "journal")
PROC_LOG_PER_PATIENT = 16


@contextlib.contextmanager
def memory_stack(work: Path, practice: Path, storage: azurite.AzuriteProcess | None = None
                 ) -> Iterator[LocalStack]:
    """Azurite (unless given), the emulator in its own process (fast: server costs at 1/300 of real time,
    keys active at once) with this practice's Dynamics users, and the local host."""
    work.mkdir(parents=True, exist_ok=True)
    own = storage is None
    storage = storage or azurite.start(log_file=work / "azurite.log")
    prefix = "bw" + uuid.uuid4().hex[:8]
    config = EmulatorConfig().model_copy(update={
        "time_scale": 300.0, "key_activation_seconds": 0.0,
        "users": [SeedUser.model_validate(u) for u in users_for_practice(practice)]})
    try:
        with run_emulator(config, subprocess=True) as emulator:
            env = {"BRIDGEWORK_TABLE_PREFIX": prefix, "BRIDGEWORK_DATAVERSE_AUTH_MODE": "factory",
                   "BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY": "emulator.credentials:EmulatorTokenCredential"}
            with run_host("function_app:app", storage.connection_string, prefix, env=env,
                          log_path=work / "host.log") as host:
                yield LocalStack(storage, emulator, host, prefix)
    finally:
        if own:
            storage.stop()


def ready_migration(stack: LocalStack, bundle: Path, timeout: float = 900) -> tuple[Runtime, Migration]:
    """A migration driven up to the sample decision: everything `load_batch` needs exists, nothing of the
    full load has run. Raises if it stops before."""
    migration_id, _ = create_and_start(stack, bundle, target=target_for(stack))
    reviewed = approve_until_sample(stack, migration_id, timeout)
    stage = (reviewed["view"].get("custom_status") or {}).get("stage")
    if reviewed["stopped"] or stage != "awaiting_sample_approval":
        raise RuntimeError(f"migration {migration_id} stopped at {stage!r} before its load")
    rt = stack.runtime()
    return rt, rt.migrations.get(TENANT, migration_id)


@dataclass
class BatchMemory:
    """The traced heap of one load batch, in bytes above what the process held before it."""

    map_name: str
    part: int
    source_rows: int
    counts: dict[str, int]
    peaks: dict[str, int] = field(default_factory=dict)
    top: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    """Per snapshot point: (file:line, bytes, blocks) above the baseline, largest first."""
    retained: int = 0
    """Still traced after the batch returned (caches, leaks)."""

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)

    def per_1000_rows_mb(self) -> float:
        return self.peak / 1e6 * 1000 / max(self.source_rows, 1)


class _Meter:
    """Splits a traced run into stages at function entries and keeps each stage's peak."""

    def __init__(self, base: int, top: int) -> None:
        self.base = base
        self.top = top
        self.stage = ""
        self.peaks: dict[str, int] = {}
        self.snapshots: dict[str, list[tuple[str, int, int]]] = {}
        self.baseline = tracemalloc.take_snapshot() if top else None

    def enter(self, stage: str, snapshot: str | None = None) -> None:
        if stage == self.stage:
            return
        self.close()
        if snapshot and self.baseline is not None:
            self.snapshots[snapshot] = self._top()
        tracemalloc.reset_peak()
        self.stage = stage

    def close(self) -> None:
        if self.stage:
            _, peak = tracemalloc.get_traced_memory()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), peak - self.base)

    def _top(self) -> list[tuple[str, int, int]]:
        assert self.baseline is not None
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snap.compare_to(self.baseline, "lineno")
        out = []
        for stat in stats[: self.top]:
            frame = stat.traceback[0]
            out.append((f"{os.path.relpath(frame.filename)}:{frame.lineno}", stat.size_diff, stat.count_diff))
        return out


async def measure_batch(rt: Runtime, migration: Migration, map_name: str, part: int = 0, top: int = 0
                        ) -> BatchMemory:
    """Run `load_batch` for one part under tracemalloc (started here if it is not) with stage markers."""
    from shared.pipeline.target import dataverse_client

    spec = load._approved(rt, migration).spec
    reader = load._bundle(rt, migration)
    async with dataverse_client(rt, migration) as client:  # the per-process context, outside the trace
        await load._context(rt, migration, client, reader, spec)
    source_rows = reader.table(spec.table(map_name).source_table).parts[part].rows

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    gc.collect()  # so that `retained` below counts what the batch keeps, not garbage a later pass would free
    base, _ = tracemalloc.get_traced_memory()
    meter = _Meter(base, top)
    real_transform, real_write, real_record = load.transform_row, BulkWriter.write, Journal.record

    def transform_row(*args: Any, **kwargs: Any) -> Any:
        meter.enter("transform", snapshot="transform starts")
        return real_transform(*args, **kwargs)

    async def write(self: BulkWriter, *args: Any, **kwargs: Any) -> Any:
        meter.enter("write", snapshot="write starts")
        return await real_write(self, *args, **kwargs)

    def record(self: Journal, *args: Any, **kwargs: Any) -> Any:
        meter.enter("journal", snapshot="journal write starts")
        return real_record(self, *args, **kwargs)

    load.transform_row = transform_row  # type: ignore[assignment]
    BulkWriter.write = write  # type: ignore[method-assign]
    Journal.record = record  # type: ignore[method-assign]
    try:
        meter.enter("read")
        info = await load.load_batch(rt, migration, map_name, part)
        meter.close()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        load.transform_row = real_transform  # type: ignore[assignment]
        BulkWriter.write = real_write  # type: ignore[method-assign]
        Journal.record = real_record  # type: ignore[method-assign]
        if started:
            tracemalloc.stop()
    return BatchMemory(map_name, part, source_rows, info.counts, meter.peaks, meter.snapshots, retained)


def largest_map(rt: Runtime, migration: Migration) -> str:
    """The loaded map that selects the most rows of its source table's part 0 (ties: by name)."""
    spec = load._approved(rt, migration).spec
    reader = load._bundle(rt, migration)
    selected: dict[str, int] = {}
    for table_map in load._loaded_maps(spec):
        if reader.part_count(table_map.source_table):
            selected[table_map.name] = sum(
                1 for item in reader.iter_part(table_map.source_table, 0)
                if isinstance(item, LoadedRow) and table_map.selects(item.row.model_dump()))
    return max(selected, key=lambda name: (selected[name], name))


async def load_parents(rt: Runtime, migration: Migration, map_name: str) -> list[str]:
    """Load (untraced) every part of the maps `map_name` looks up, parents first, so its rows' writes
    find their parent records as in a real run. Returns the maps loaded."""
    plan = LoadPlan.model_validate(rt.artifacts.get_json(migration.migration_id, load.LOAD_PLAN))
    needed: set[str] = set()
    todo = [map_name]
    while todo:
        for child, parent in plan.edges:
            if child == todo[-1] and parent not in needed:
                needed.add(parent)
                todo.insert(0, parent)
        todo.pop()
    spec = load._approved(rt, migration).spec
    reader = load._bundle(rt, migration)
    order = [name for wave in plan.waves for name in wave if name in needed]
    for name in order:
        for part in range(reader.part_count(spec.table(name).source_table)):
            await load.load_batch(rt, migration, name, part)
    return order


def report(result: BatchMemory) -> str:
    rows = max(result.source_rows, 1)
    lines = [f"load_batch {result.map_name}/{result.part}: {result.source_rows:,} source rows, "
             f"{', '.join(f'{k} {v}' for k, v in sorted(result.counts.items()))}",
             f"{'stage':<10} {'peak MB':>9} {'KB/row':>8}"]
    for stage in STAGES:
        if stage in result.peaks:
            peak = result.peaks[stage]
            lines.append(f"{stage:<10} {peak / 1e6:>9.1f} {peak / 1e3 / rows:>8.2f}")
    lines.append(f"{'batch':<10} {result.peak / 1e6:>9.1f} {result.peak / 1e3 / rows:>8.2f}   "
                 f"({result.per_1000_rows_mb():.2f} MB per 1,000 rows; retained after: {result.retained / 1e6:.2f} MB)")
    for point, stats in result.top.items():
        lines.append(f"held as the {point} (above the batch's start):")
        lines += [f"  {size / 1e6:>7.2f} MB {count:>8,} blocks  {where}" for where, size, count in stats]
    return "\n".join(lines)


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB: resident now, and the high-water mark."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def concurrent_rounds(rt: Runtime, migration: Migration, map_name: str, threads: int, rounds: int,
                      trim: bool) -> list[str]:
    """RSS as the local host sees it: `threads` deliveries of the same part at once, each on its own thread
    with its own event loop (as devhost runs activities), `rounds` times; RSS after each round (and after
    `malloc_trim(0)` with `trim`). A duplicate delivery is idempotent, so this is what the host holds
    for `threads` parts in flight."""
    from concurrent.futures import ThreadPoolExecutor

    from devhost.memory import trim_heap

    lines = [f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}; before: RSS {rss_mb()[0]:.0f} MB"]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="activity") as pool:
        for round_number in range(1, rounds + 1):
            list(pool.map(lambda _: asyncio.run(load.load_batch(rt, migration, map_name, 0)), range(threads)))
            now, high = rss_mb()
            line = f"round {round_number}: {threads} x {map_name}/0 at once: RSS {now:.0f} MB (high-water {high:.0f} MB)"
            if trim:
                trimmed = trim_heap()
                line += f"; after malloc_trim(0): {rss_mb()[0]:.0f} MB" if trimmed else "; malloc_trim unavailable"
            lines.append(line)
            print(line, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=320)
    parser.add_argument("--part-rows", type=int, default=5000)
    parser.add_argument("--map", default=None, help="the table map to load (default: the one with the largest part)")
    parser.add_argument("--top", type=int, default=12, help="allocation sites printed per snapshot (0: none)")
    parser.add_argument("--threads", type=int, default=0,
                        help="then deliver the part this many times at once on threads, as the host does, and print RSS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trim", action="store_true", help="call malloc_trim(0) after each round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-memory-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        practice, bundle = synthetic_practice(work, args.patients, 7, part_rows=args.part_rows)
        with memory_stack(work / "stack", practice) as stack:
            rt, migration = ready_migration(stack, bundle)
            print(f"practice of {args.patients} patients ready for its load in {time.monotonic() - started:.0f} s; "
                  f"load average {os.getloadavg()[0]:.2f}")
            map_name = args.map or largest_map(rt, migration)
            parents = asyncio.run(load_parents(rt, migration, map_name))
            print(f"parents loaded first (untraced): {', '.join(parents) or 'none'}")
            result = asyncio.run(measure_batch(rt, migration, map_name, 0, top=args.top))
            print(report(result))
            if args.threads:
                concurrent_rounds(rt, migration, map_name, args.threads, args.rounds, args.trim)


if __name__ == "__main__":
    main()
