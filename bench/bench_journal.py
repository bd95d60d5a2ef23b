"""What one load batch's journal work costs as a map's journal grows, on the real Azurite.

Each part does what `load_batch` does to the journal for one bundle part of consecutive ids: read the
part's earlier origins (`existing_origins`), `announce` the rows, `record` them, `settle` the intents.
All parts go to one map, as a large practice's ledger does. Prints the seconds per part in tenths of
the run and how much the last tenth costs against the first (a cost that grows with the rows before
it makes a load quadratic: the 100k end-to-end run stopped on exactly that), then the time and traced
memory of reading the map back (`Journal.entries`).
Run: `.venv/bin/python -m bench.bench_journal [--rows 100000] [--part 5000]`.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime

from devtools import azurite
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.journal import JournalEntry

MAP = "ledger"


def _part_entries(migration_id: str, part: int, start: int, size: int) -> list[JournalEntry]:
    at = datetime.now(UTC)
    return [JournalEntry(migration_id=migration_id, table=MAP, source_id=str(number), target_table="bw_ledger",
                         target_id=f"00000000-0000-0000-0000-{number:012d}", action="created", origin="created",
                         batch=f"{MAP}/{part}", at=at)
            for number in range(start, start + size)]


def run(rt: Runtime, rows: int, part_rows: int) -> list[float]:
    """Seconds of each part's journal work, in load order."""
    migration_id = f"bench-{int(time.time())}"
    seconds: list[float] = []
    for part, start in enumerate(range(1, rows + 1, part_rows)):
        entries = _part_entries(migration_id, part, start, min(part_rows, rows + 1 - start))
        ids = [e.source_id for e in entries]
        steps: dict[str, float] = {}
        began = time.perf_counter()
        origins = rt.journal.existing_origins(migration_id, MAP, ids)
        steps["origins"] = time.perf_counter() - began
        intents = rt.journal.announce(migration_id, MAP, f"{MAP}/{part}", "bw_ledger", ids)
        steps["announce"] = time.perf_counter() - began - sum(steps.values())
        rt.journal.record(entries, set(ids) - origins.keys())  # as the load does: rows read as new are inserted
        steps["record"] = time.perf_counter() - began - sum(steps.values())
        rt.journal.settle(migration_id, MAP, intents)
        steps["settle"] = time.perf_counter() - began - sum(steps.values())
        seconds.append(time.perf_counter() - began)
        print(f"part {part:>4} (journal at {start - 1:>8} rows): {seconds[-1]:.2f} s ("
              + ", ".join(f"{name} {value:.2f}" for name, value in steps.items()) + ")", flush=True)
    began = time.perf_counter()
    read = sum(1 for _ in rt.journal.entries(migration_id, MAP))
    took = time.perf_counter() - began
    tracemalloc.start()  # a second read: tracing slows Python several times over
    sum(1 for _ in rt.journal.entries(migration_id, MAP))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"read back {read} entries in {took:.1f} s; traced peak of a read {peak / 2**20:.1f} MB", flush=True)
    assert read == rows, "the journal lost or doubled rows"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--part", type=int, default=5_000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stops this run's Azurite
    running = azurite.start()
    try:
        rt = Runtime.create(Settings(AzureWebJobsStorage=running.connection_string, table_prefix="benchjournal"))
        seconds = run(rt, args.rows, args.part)
        tenth = max(1, len(seconds) // 10)
        tenths = [seconds[i : i + tenth] for i in range(0, len(seconds), tenth)]
        for n, chunk in enumerate(tenths):
            rows_before = n * tenth * args.part
            print(f"parts {n * tenth:>4}-{n * tenth + len(chunk) - 1:<4} (journal at {rows_before:>8} rows): "
                  f"{statistics.mean(chunk):.2f} s per part of {args.part}", flush=True)
        first, last = statistics.mean(tenths[0]), statistics.mean(tenths[-1])
        print(f"{args.rows} rows in {len(seconds)} parts: {sum(seconds):.1f} s; "
              f"last tenth {last / first:.1f}x the first ({first:.2f} -> {last:.2f} s per part)", flush=True)
    finally:
        running.stop()


if __name__ == "__main__":
    main()
