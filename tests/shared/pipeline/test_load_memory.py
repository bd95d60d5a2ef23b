"""One load batch's Python heap stays proportional to its part, and small: a bound in MB per 1,000 source rows.

A synthetic practice (70 patients, 1,000-row parts) is driven through the real stack up to the sample
decision; the `ledger` map (most of `proc_log`) is then loaded in this process under tracemalloc, its
parent `patient` first. Measured on this 1,000-row part (bench/bench_load_memory.py): the streamed read
peaks at 3.3 MB and the whole batch at 6.5 MB (about 3 MB of it the write's fixed cost); the old
read-everything path at 6.7 and 10.8 MB. On a 5,000-row part: 17.0 MB against 43.5 MB. The bounds sit
between, with room: memory, unlike time, does not depend on the machine's load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_load_memory import BatchMemory, load_parents, measure_batch, memory_stack, ready_migration
from devtools import azurite as azurite_launcher
from devtools.stack import synthetic_practice
from shared.mapping.spec import MappingSpec
from shared.pipeline import load
from shared.pipeline.in_flight import budget_for
from shared.runtime import Runtime
from shared.state.migrations import Migration

PART_ROWS = 1000
FIXED_MB = 4.0
"""What a batch holds whatever its size: clients, the writer's request machinery."""
MB_PER_1000_ROWS = 5.0
"""The whole batch: FIXED_MB plus this per 1,000 source rows."""
READ_MB_PER_1000_ROWS = 5.0
"""Reading and transforming alone (streamed: about 3.3; all typed rows held at once: 6.7 and more)."""


@pytest.fixture(scope="module")
def ledger_ready(tmp_path_factory: pytest.TempPathFactory, azurite: azurite_launcher.AzuriteProcess
                 ) -> Iterator[tuple[Runtime, Migration]]:
    """A migration at its sample decision with the `ledger` map's parents loaded."""
    work: Path = tmp_path_factory.mktemp("load-memory")
    practice, bundle = synthetic_practice(work, 70, 7, part_rows=PART_ROWS)
    with memory_stack(work / "stack", practice, storage=azurite) as stack:
        rt, migration = ready_migration(stack, bundle)
        asyncio.run(load_parents(rt, migration, "ledger"))
        yield rt, migration


@pytest.fixture(scope="module")
def ledger_batch(ledger_ready: tuple[Runtime, Migration]) -> tuple[BatchMemory, MappingSpec]:
    rt, migration = ledger_ready
    return asyncio.run(measure_batch(rt, migration, "ledger", 0)), load._approved(rt, migration).spec


def test_a_batch_holds_a_bounded_heap_per_source_row(ledger_batch: tuple[BatchMemory, MappingSpec]) -> None:
    result, _ = ledger_batch
    assert result.source_rows == PART_ROWS
    assert result.counts.get("created", 0) > PART_ROWS // 2  # the batch really wrote its rows
    assert set(result.peaks) == {"read", "transform", "write", "journal"}
    thousands = result.source_rows / 1000
    for stage in ("read", "transform"):
        assert result.peaks[stage] / 1e6 < READ_MB_PER_1000_ROWS * thousands, \
            f"{stage}: {result.peaks[stage] / 1e6:.2f} MB for {result.source_rows} rows"
    assert result.peak / 1e6 < FIXED_MB + MB_PER_1000_ROWS * thousands, \
        f"batch: {result.peak / 1e6:.2f} MB for {result.source_rows} rows"


RETAINED_MB = 1.0
"""What may stay after a batch of this 1,000-row part, whatever the batch filled that outlives it (the
per-process caches, the loop's thread pool its storage calls run in): 0.15 MB measured, with a collection
before and after the batch. The part's rows, read and validated, are ~3.3 MB, so keeping them fails this.
(Without the collection the figure counted cyclic garbage, and hence the suite's GC timing: 2.02 MB in a
full run, 2.15 with the collector off, 0.58 alone.)"""


def test_a_batch_keeps_nothing_of_its_rows(ledger_batch: tuple[BatchMemory, MappingSpec]) -> None:
    result, _ = ledger_batch
    assert result.retained / 1e6 < RETAINED_MB, f"{result.retained / 1e6:.2f} MB still held after the batch"


def test_full_payloads_are_kept_only_for_maps_that_image_preexisting_records(
        ledger_batch: tuple[BatchMemory, MappingSpec]) -> None:
    _, spec = ledger_batch
    matching = [t for t in spec.enabled_tables() if t.match]
    assert matching, "the default map matches pre-existing contacts"
    assert all(load._needs_full_payloads(spec, t) for t in matching)
    assert not load._needs_full_payloads(spec, spec.table("ledger"))


def test_drained_yields_in_order_and_lets_go() -> None:
    rows = [("a", 1), ("b", 2), ("c", 3)]
    seen = []
    for item in load._drained(rows):
        seen.append((item, len(rows)))
    assert seen == [(("a", 1), 2), (("b", 2), 1), (("c", 3), 0)]
    assert rows == []


def test_a_batch_waits_until_its_part_fits_in_the_process_budget(ledger_ready: tuple[Runtime, Migration],
                                                                  ledger_batch: tuple[BatchMemory, MappingSpec]
                                                                  ) -> None:
    rt, migration = ledger_ready  # after ledger_batch: this runs part 0 a second time (batches are idempotent)
    stored = load._bundle(rt, migration).table("proc_log").parts[0].bytes
    assert load._batch_weight(rt, migration, "ledger", 0, None, None) == stored > 0

    async def scenario() -> tuple[bool, int, int, load.BatchInfo, int]:
        budget = budget_for(rt.settings.load_bundle_bytes_in_flight)
        async with budget.hold(budget.size - stored // 2):  # other batches hold all but half this part
            batch = asyncio.create_task(load.load_batch(rt, migration, "ledger", 0))
            await asyncio.sleep(0.5)
            started, waiting, free = batch.done(), budget.waiting, budget.free
        return started, waiting, free, await batch, budget.free

    started, waiting, free_while_held, info, free_after = asyncio.run(scenario())
    assert not started and waiting == 1 and free_while_held == stored - stored // 2
    assert info.counts.get("created", 0) > PART_ROWS // 2  # then it ran, and journaled its rows as created
    assert free_after == rt.settings.load_bundle_bytes_in_flight
