"""Failures by error code kept on the progress rows, so a status read costs the progress rows, not the journal.

What the figure means: the journal rows whose current action is `failed` or `quarantined`, counted by
code (the action where a row has no code), as the journal scan counts them (`journal_errors_by_code`).
A progress row is per batch and overwritten by each delivery of that batch, so the figure is built from:

- `errors` of each batch: the failures among the rows this batch journaled (one per source id, the last
  of the batch winning, as the journal keeps them). A batch delivered twice overwrites its own row:
  counted once; a delivery that fixes a row its earlier delivery failed leaves no trace of it.
- `supersedes`: the full run's batch of a part journals again every row the sample run's batch of that
  part journaled (same map, same bundle part, a superset of its rows), so once it has run the sample's row
  no longer counts. Before it has run the sample's failures are still the journal's, and still count.
- `cleared` of a cutover delta batch: failures an earlier batch journaled (the full run, the sample, an
  earlier delta) for rows this batch journals again; they are subtracted (this batch's own `errors` count
  the row again if it still fails). A delta batch reads them from the journal before it writes, for its
  own rows only (one range read per journal bucket its ids fall in, filtered to failures) and, when
  any, keeps them in an artifact (`progress/cleared/<stage>.json`) before its journal write, so a
  delivery after a crash between the journal and the progress row still subtracts what the first
  delivery replaced.
- Deletions of a delta never touch a failed or quarantined row (they are `not_migrated`), and the second
  pass journals nothing (a refused lookup fails the activity): neither changes the figure.

Where it can differ from the journal scan:
- While a batch runs: its journal rows are in before its progress row (a batch killed in between counts
  its old figure until a delivery completes it).
- A rollback moves failed rows that an earlier attempt had created to `deleted`: the figure stays the
  load's (the rollback's own progress rows say what it undid).
- A sample re-run after a rejection with a different slice: the old slice's rows outside the new one
  keep their journal state but their batch's row is overwritten, until the full run journals them again.
- Two deliveries of one delta batch at the same moment: the second may read the first's rows as its
  own and subtract nothing for them (the first's artifact, if written in time, is used instead).
- Rows recorded before these fields existed (`errors` None with failures in `counts`): the caller falls
  back to the journal scan for that migration (`progress_errors` returns None).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.state.artifacts import ArtifactMissing
from shared.state.journal import JournalEntry
from shared.state.migrations import StageProgress

if TYPE_CHECKING:
    from shared.runtime import Runtime

FAILURES = ("failed", "quarantined")
CLEARED = "progress/cleared"
"""Artifact folder of the failures a delta batch replaced, kept before its journal write."""
JOURNALING = ("load", "sample", "attachments", "sample-attachments")
"""Stage kinds whose rows journal records (and so carry `errors` once written by this code)."""


def code_of(action: str, code: str | None) -> str:
    return code or action


def errors_of(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Failed and quarantined rows among one batch's entries by code; one per row, the last one wins
    (what `Journal.record` keeps)."""
    latest = {(entry.table, entry.source_id): entry for entry in entries}
    counts = Counter(code_of(e.action, e.code) for e in latest.values() if e.action in FAILURES)
    return dict(sorted(counts.items()))


def _prior_failures(rt: Runtime, migration_id: str, table: str, source_ids: set[str]) -> dict[str, tuple[str, str]]:
    """source id -> (code, batch) of those rows the journal holds as failed or quarantined now. Reads
    only the key ranges the ids span, filtered to failures server-side (a delta's rows only)."""
    return {source_id: (code_of(row["action"], row.get("code")), str(row.get("batch") or ""))
            for source_id, row in rt.journal.own_rows(migration_id, table, source_ids, ["action", "code", "batch"],
                                                     where="action eq 'failed' or action eq 'quarantined'")}


def cleared_by(rt: Runtime, migration_id: str, batch: str, stage: str, entries: list[JournalEntry]) -> dict[str, int]:
    """Call before the batch's `journal.record`: the failures of other batches its rows replace, by code.
    Kept as an artifact (when any) so a later delivery of the batch gets the same answer."""
    path = f"{CLEARED}/{stage}.json"
    try:
        return dict(rt.artifacts.get_json(migration_id, path))
    except ArtifactMissing:
        pass
    by_table: dict[str, set[str]] = {}
    for entry in entries:
        by_table.setdefault(entry.table, set()).add(entry.source_id)
    cleared: Counter[str] = Counter()
    for table, source_ids in sorted(by_table.items()):
        for code, earlier in _prior_failures(rt, migration_id, table, source_ids).values():
            if earlier != batch:  # its own earlier delivery's rows: never counted by another row
                cleared[code] += 1
    if cleared:
        rt.artifacts.put_json(migration_id, path, dict(sorted(cleared.items())))
    return dict(sorted(cleared.items()))


def _kind(stage: str) -> str:
    return stage.partition(":")[0]


def progress_errors(rows: Iterable[StageProgress]) -> dict[str, int] | None:
    """The journal's current failures by code from a migration's progress rows (see the module doc);
    None when a row of a journaling stage predates `errors` and had failures (scan the journal then)."""
    rows = list(rows)
    superseded = {row.supersedes for row in rows if row.supersedes}
    total: Counter[str] = Counter()
    for row in rows:
        if row.stage in superseded:
            continue
        if row.errors is None:
            if _kind(row.stage) in JOURNALING and any(row.counts.get(a, 0) > 0 for a in FAILURES):
                return None
            continue
        total.update(row.errors)
        total.subtract(row.cleared)
    return {code: n for code, n in sorted(total.items()) if n > 0}


def journal_errors_by_code(rt: Runtime, migration_id: str) -> dict[str, int]:
    """The journal scan: every row of the migration, failed or quarantined, by code. Its cost grows with
    the journal (8.5 s to 159 s at ~100,000 rows on Azurite): tests, audits and legacy rows only."""
    counts = Counter(code_of(row["action"], row.get("code")) for row in rt.journal.failures(migration_id))
    return dict(sorted(counts.items()))
