"""What one status read (`GET /migrations/{id}`'s operator view) costs with 0 and with N journal rows.

Writes a synthetic load into a fresh Azurite (journal rows per batch, 1% failed or quarantined, and each
batch's progress row as load_batch records it), then times, per size:
- before: the old read, the progress rows plus the scan of the migration's whole journal for failures;
- after: the operator view as built now, from the progress rows alone (shared/state/failures.py).
Both figures are checked to agree. Run: `.venv/bin/python -m bench.bench_status [--rows 100000]`.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from datetime import UTC, datetime

from devtools import azurite
from functions.views import operator_view
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.failures import errors_of, journal_errors_by_code
from shared.state.journal import JournalEntry
from shared.state.migrations import Migration, Target

MAPS = ("patient", "appointment", "procedure_log", "ledger")
PART_ROWS = 2_000
CODES = ("0x80040237", "bad_date", "contact_missing")


def _load(rt: Runtime, migration: Migration, rows: int) -> None:
    """`rows` journal rows over the maps in parts of PART_ROWS, with one progress row per part."""
    mid = migration.migration_id
    at = datetime.now(UTC)
    done = 0
    part = 0
    while done < rows:
        name = MAPS[part % len(MAPS)]
        size = min(PART_ROWS, rows - done)
        entries = []
        for n in range(size):
            number = done + n
            failing = number % 100 == 7
            entries.append(JournalEntry(
                migration_id=mid, table=name, source_id=str(number), batch=f"{name}/{part}", at=at,
                action=("failed" if number % 200 == 7 else "quarantined") if failing else "created",
                code=CODES[number % len(CODES)] if failing else None, origin="none" if failing else "created"))
        rt.journal.record(entries)
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.action] = counts.get(entry.action, 0) + 1
        rt.migrations.record_progress(mid, f"load:{name}/{part}", "done", counts, errors=errors_of(entries))
        done += size
        part += 1


def _timed(read, repeats: int) -> tuple[float, dict[str, int]]:
    """The median seconds of `repeats` reads, and what the last one returned."""
    times, result = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = read()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(rt: Runtime, rows: int, repeats: int) -> dict[str, float]:
    migration = rt.migrations.create("tenant-bench", f"bench {rows}", Target(environment_url="https://org.crm.dynamics.com"))
    start = time.perf_counter()
    _load(rt, migration, rows)
    written = time.perf_counter() - start
    print(f"journal rows {rows}: written in {written:.1f} s", flush=True)
    mid = migration.migration_id

    def before() -> dict[str, int]:
        rt.migrations.progress(mid)
        return journal_errors_by_code(rt, mid)

    def after() -> dict[str, int]:
        return operator_view(rt, migration, None, None).errors_by_code

    after_s, counted = _timed(after, repeats)
    before_s, scanned = _timed(before, repeats)
    assert counted == scanned, "the progress rows' figure differs from the journal scan"
    return {"rows": rows, "write_s": written, "before_s": before_s, "after_s": after_s,
            "progress_rows": len(rt.migrations.progress(mid)), "failures": sum(counted.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    # A SIGTERM (`timeout`, Ctrl-C of a wrapper) still stops this run's Azurite in the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    running = azurite.start()
    try:
        rt = Runtime.create(Settings(AzureWebJobsStorage=running.connection_string, table_prefix="benchstatus"))
        for rows in (0, args.rows):
            r = measure(rt, rows, args.repeats)
            print(f"journal rows {r['rows']:>7} (written in {r['write_s']:.1f} s), progress rows {r['progress_rows']}, "
                  f"failures {r['failures']}: status read before {r['before_s'] * 1000:.0f} ms "
                  f"(progress + journal scan), after {r['after_s'] * 1000:.0f} ms (progress rows only)", flush=True)
    finally:
        running.stop()


if __name__ == "__main__":
    main()
