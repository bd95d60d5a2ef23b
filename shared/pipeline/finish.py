"""The final report: per source table and per map, what the bundle held and what became of it.

Built from the bundle manifest and the journal only, so it says exactly what the audit log says.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from shared.pipeline.audit import write_audit
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.rollback import record_watermark
from shared.runtime import Runtime
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


def build_report(rt: Runtime, migration: Migration) -> FinalReport:
    spec = approved_mapping(rt, migration).spec
    reader = open_bundle(rt, migration)
    source_rows = {entry.name: entry.rows for entry in reader.manifest.tables}
    outcomes: list[MapOutcome] = []
    for table_map in spec.enabled_tables():
        if table_map.action not in ("upsert", "update", "attachment"):
            continue
        actions: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for entry in rt.journal.entries(migration.migration_id, table_map.name):
            actions[entry.action] += 1
            if entry.action in ("quarantined", "failed", "skipped") and entry.code:
                reasons[entry.code] += 1
        outcomes.append(MapOutcome(map=table_map.name, source_table=table_map.source_table,
                                   target_table=table_map.target_table, actions=dict(actions),
                                   reasons=dict(reasons)))
    unaccounted = _unaccounted(rt, migration, spec, source_rows)
    return FinalReport(migration_id=migration.migration_id, bundle_id=str(migration.bundle_id),
                       source_rows=source_rows, maps=outcomes, unaccounted=unaccounted)


def _unaccounted(rt: Runtime, migration: Migration, spec: Any, source_rows: dict[str, int]) -> dict[str, int]:
    """Rows of a mapped source table that no map's journal mentions (selected by no map, or lost)."""
    by_table: dict[str, int] = {}
    for table in sorted({t.source_table for t in spec.enabled_tables()
                         if t.action in ("upsert", "update", "attachment")}):
        maps = [t for t in spec.enabled_tables() if t.source_table == table
                and t.action in ("upsert", "update", "attachment")]
        journaled = sum(1 for m in maps for _ in rt.journal.entries(migration.migration_id, m.name))
        missing = source_rows.get(table, 0) - journaled
        if missing > 0:
            by_table[table] = missing
    return by_table


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
    report = build_report(rt, migration)
    path = rt.artifacts.put_json(migration.migration_id, REPORT_JSON, report)
    rt.artifacts.put_text(migration.migration_id, REPORT_TEXT, render(report))
    audit = write_audit(rt, migration.migration_id)
    # After the migration's last write: what a rollback uses to tell later edits by people apart.
    watermark = record_watermark(rt, migration)
    return FinishInfo(report=path, unaccounted=sum(report.unaccounted.values()), audit=audit,
                      watermark=watermark)
