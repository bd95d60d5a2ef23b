"""The final report: per source table and per map, what the bundle held and what became of it.

Built from the bundle manifest and the journal only, in the same read of the journal that writes the audit
log, so it says exactly what the audit log says.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from shared.pipeline.audit import write_audit
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.rollback import record_watermark, written_record
from shared.runtime import Runtime
from shared.state.journal import JournalEntry
from shared.state.migrations import Migration

REPORT_JSON = "reports/final.json"
REPORT_TEXT = "reports/final.md"


class MapOutcome(BaseModel):
    map: str
    source_table: str
    target_table: str
    actions: dict[str, int] = Field(default_factory=dict)
    reasons: dict[str, int] = Field(default_factory=dict)
    """Codes of quarantined, failed and skipped rows, counted."""


class FinalReport(BaseModel):
    migration_id: str
    bundle_id: str
    source_rows: dict[str, int]
    maps: list[MapOutcome]
    unaccounted: dict[str, int]
    """Source tables some map reads whose rows the journal does not account for (should be empty)."""


class FinishInfo(BaseModel):
    report: str
    unaccounted: int
    audit: str | None = None
    """Blob path of the audit log (the journal as CSV, see shared/pipeline/audit.py)."""
    watermark: int | None = None
    """Highest Dataverse row version after the run (shared/pipeline/rollback.py `record_watermark`)."""


class JournalTally:
    """Actions and failure codes per map, counted from journal entries as they stream past."""

    def __init__(self) -> None:
        self.actions: dict[str, Counter[str]] = {}
        self.reasons: dict[str, Counter[str]] = {}
        self.written_tables: set[str] = set()
        """Dataverse tables the entries name a written record in (what the rollback watermark reads)."""

    def add(self, entry: JournalEntry) -> None:
        self.actions.setdefault(entry.table, Counter())[entry.action] += 1
        if written_record(entry):
            self.written_tables.add(str(entry.target_table))
        if entry.action in ("quarantined", "failed", "skipped") and entry.code:
            self.reasons.setdefault(entry.table, Counter())[entry.code] += 1

    @classmethod
    def of(cls, rt: Runtime, migration_id: str) -> JournalTally:
        tally = cls()
        for entry in rt.journal.entries(migration_id):
            tally.add(entry)
        return tally


def build_report(rt: Runtime, migration: Migration, tally: JournalTally | None = None) -> FinalReport:
    """The report from the journal's counts (`tally`, else one read of the journal)."""
    tally = tally if tally is not None else JournalTally.of(rt, migration.migration_id)
    spec = approved_mapping(rt, migration).spec
    reader = open_bundle(rt, migration)
    source_rows = {entry.name: entry.rows for entry in reader.manifest.tables}
    maps = [t for t in spec.enabled_tables() if t.action in ("upsert", "update", "attachment")]
    outcomes = [MapOutcome(map=t.name, source_table=t.source_table, target_table=t.target_table,
                           actions=dict(tally.actions.get(t.name, {})), reasons=dict(tally.reasons.get(t.name, {})))
                for t in maps]
    # Rows of a mapped source table that no map's journal mentions (selected by no map, or lost).
    unaccounted: dict[str, int] = {}
    for table in sorted({t.source_table for t in maps}):
        journaled = sum(sum(tally.actions.get(t.name, {}).values()) for t in maps if t.source_table == table)
        missing = source_rows.get(table, 0) - journaled
        if missing > 0:
            unaccounted[table] = missing
    return FinalReport(migration_id=migration.migration_id, bundle_id=str(migration.bundle_id),
                       source_rows=source_rows, maps=outcomes, unaccounted=unaccounted)


def render(report: FinalReport) -> str:
    lines = [f"# Migration {report.migration_id}: final report", "", f"Bundle {report.bundle_id}.", "",
             "| map | source table | rows | " + " | ".join(ACTIONS) + " | reasons |",
             "|---|---|---|" + "---|" * len(ACTIONS) + "---|"]
    for outcome in report.maps:
        reasons = ", ".join(f"{code} {n}" for code, n in sorted(outcome.reasons.items())) or ""
        counts = " | ".join(str(outcome.actions.get(a, 0)) for a in ACTIONS)
        lines.append(f"| {outcome.map} | {outcome.source_table} | {report.source_rows.get(outcome.source_table, 0)} "
                     f"| {counts} | {reasons} |")
    if report.unaccounted:
        lines += ["", "Unaccounted rows: " + ", ".join(f"{t} {n}" for t, n in report.unaccounted.items())]
    return "\n".join(lines) + "\n"


ACTIONS = ("created", "updated", "unchanged", "skipped", "quarantined", "failed")


def finish(rt: Runtime, migration: Migration) -> FinishInfo:
    # One read of the journal: the audit log streams to Blob while the report's counts and the tables the
    # watermark reads are taken from it (the watermark read the whole journal again for those).
    tally = JournalTally()
    audit = write_audit(rt, migration.migration_id, observe=tally.add)
    report = build_report(rt, migration, tally)
    path = rt.artifacts.put_json(migration.migration_id, REPORT_JSON, report)
    rt.artifacts.put_text(migration.migration_id, REPORT_TEXT, render(report))
    # After the migration's last write: what a rollback uses to tell later edits by people apart.
    watermark = record_watermark(rt, migration, tally.written_tables)
    return FinishInfo(report=path, unaccounted=sum(report.unaccounted.values()), audit=audit,
                      watermark=watermark)
