"""The audit log: the journal of a migration as CSV, one line per target record, ids and codes only.

Rows come straight from the journal (the same source as the final report and the rollback), so the
audit log's counts per table and action are the report's counts by construction. `audit_lines`
yields the CSV line by line so the API and the Blob copy never hold more than one row at a time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator

from shared.runtime import Runtime
from shared.state.journal import JournalEntry

AUDIT_CSV = "reports/audit.csv"
COLUMNS = ("table", "source_id", "target_table", "target_id", "action", "origin", "batch", "at", "code", "reason")
"""Ids, codes and field names only: the journal never holds row values, and the audit log adds none."""


def _line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def _cells(entry: JournalEntry) -> list[str]:
    return [entry.table, entry.source_id, entry.target_table or "", entry.target_id or "", entry.action,
            entry.origin, entry.batch, entry.at.isoformat(), entry.code or "", entry.reason or ""]


def audit_lines(rt: Runtime, migration_id: str, *, table: str | None = None, action: str | None = None,
                observe: Callable[[JournalEntry], None] | None = None) -> Iterator[str]:
    """The header, then one CSV line per journal row of the migration (filtered by map name and action).
    `observe` sees every entry read, before the filters (the final report counts in the same pass)."""
    yield _line(list(COLUMNS))
    for entry in rt.journal.entries(migration_id, table):
        if observe is not None:
            observe(entry)
        if action is not None and entry.action != action:
            continue
        yield _line(_cells(entry))


CHUNK_BYTES = 1 << 20
"""Lines are gathered into chunks of about this size on their way to Blob."""


def write_audit(rt: Runtime, migration_id: str, observe: Callable[[JournalEntry], None] | None = None) -> str:
    """Keep the whole audit log in Blob next to the final report, streamed; returns its artifact path.
    `observe` sees every journal entry on the way."""
    return rt.artifacts.put_stream(migration_id, AUDIT_CSV, _chunks(audit_lines(rt, migration_id, observe=observe)),
                                   "text/csv; charset=utf-8")


def _chunks(lines: Iterator[str]) -> Iterator[bytes]:
    held: list[bytes] = []
    size = 0
    for line in lines:
        held.append(line.encode())
        size += len(held[-1])
        if size >= CHUNK_BYTES:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)
