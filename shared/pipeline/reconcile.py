"""Reconciliation at go-live: per table map, the source as the practice holds it now vs the journal vs the
records in Dataverse, plus a field-level diff, judged against the migration's tolerance.

The source is the full bundle overlaid with every applied delta, deletions taken out (shared/pipeline/
overlay.py writes it as a bundle of its own, so the sample diff reads it as it reads any bundle). Per map:
- expected: the current rows the map selects, minus those the journal quarantined or skipped (bad source
  data the final report already lists);
- journal: records written (created, updated, unchanged) and deleted;
- Dataverse: records by the source-key column (`bw_sourceid`) with the map's key prefix (maps that
  write by alternate key); for update maps, the parent's records holding a value in any column the map
  writes (a record whose source rows were deleted and its columns cleared, `source_row_deleted` in the
  journal, is then neither written nor in Dataverse: it counts as cleared, not as a mismatch);
- diff: `sample.diff_sample` over a share of the patients (default all), each record's every mapped field.
A record is mismatched when it is missing from, or extra in, the journal or Dataverse, or has a field
that differs. A completed or canceled appointment the practice edited after Dataverse closed it (journal
code `closed_read_only`, shared/pipeline/closed.py) is read-only there: its differing fields are a known
limitation, listed on their own (`kept_read_only`: map, record, field names; never values), not mismatches. Records deleted at the practice but kept in Dataverse on purpose (deletion policy report
or deactivate, or pre-existing records) are expected extras, not mismatches. The mismatch share (per
map, mismatched records / expected records) beyond the tolerance anywhere recommends the rollback.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import math
import random
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, computed_field

from shared.dentrix.reader import LoadedRow
from shared.mapping.rows import record_key
from shared.mapping.spec import MappingSpec, TableMap
from shared.pipeline import load, sample
from shared.pipeline.bundle import open_bundle
from shared.pipeline.closed import CLOSED_READ_ONLY
from shared.pipeline.cutover import CLEARED
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.overlay import materialise
from shared.pipeline.preexisting import lookup_attribute
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.cutovers import TReconciliation
from shared.state.migrations import Migration

REPORT_JSON = "reconciliation/report.json"
REPORT_CSV = "reconciliation/report.csv"
REPORT_HTML = "reconciliation/report.html"
MAX_IDS = 1000
"""Ids listed per problem kind and map (the counts are always complete)."""
WRITTEN = ("created", "updated", "unchanged")
RETAINED = {"reported", "deactivated", "kept_preexisting", "no_state"}
"""Deletion outcomes that leave the record in Dataverse on purpose."""


class KeptReadOnly(BaseModel):
    """A closed (completed or canceled) record whose source changed after Dataverse closed it: not applied."""

    map: str
    target_table: str
    record: str
    """The record's source key (`A-12`)."""
    fields: list[str]
    """The mapped fields the source holds differently from Dataverse (names only)."""


class MapReconciliation(BaseModel):
    map: str
    target_table: str
    action: str
    source_rows: int
    """Current rows of the source table the map selects."""
    quarantined: int
    expected: int
    journal_written: int
    journal_deleted: int
    journal_cleared: int = 0
    """Update maps: records whose columns the map cleared because its source rows were deleted at the practice."""
    target_records: int | None
    """Records in Dataverse with this map's source keys (update maps: their parent's records holding a value in
    one of the map's columns); None where the map has no key of its own."""
    retained_deletions: int
    missing_in_journal: list[str]
    extra_in_journal: list[str]
    missing_in_target: list[str]
    extra_in_target: list[str]
    field_mismatched_records: list[str]
    kept_read_only: int = 0
    """Closed records the practice changed after Dataverse closed them (read-only there): listed, not mismatched."""
    fields_checked: int
    fields_matched: int
    mismatched_records: int
    mismatch_share: float
    within_tolerance: bool


class Reconciliation(BaseModel):
    migration_id: str
    generated_at: datetime
    source_bundle_id: str
    """The bundle the source was counted from (the full bundle, or its overlay with the applied deltas)."""
    deltas_applied: list[str]
    tolerance: float
    diff_share: float
    patients_diffed: int
    fields_checked: int
    fields_matched: int
    maps: list[MapReconciliation]
    mismatches: list[sample.Mismatch]
    """Field differences that count (those of records kept read-only are in `kept_read_only` instead)."""
    kept_read_only: list[KeptReadOnly] = []
    verdict: TReconciliation

    @computed_field  # type: ignore[prop-decorator]
    @property
    def records_expected(self) -> int:
        return sum(m.expected for m in self.maps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def records_mismatched(self) -> int:
        return sum(m.mismatched_records for m in self.maps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def records_kept_read_only(self) -> int:
        return sum(m.kept_read_only for m in self.maps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def worst_share(self) -> float:
        return max((m.mismatch_share for m in self.maps), default=0.0)


def _patients(reader: Any, share: float, seed: int = 7) -> list[str]:
    ids = sorted(item.key for item in reader.iter_table("patient") if isinstance(item, LoadedRow))
    if share >= 1:
        return ids
    return sorted(random.Random(seed).sample(ids, max(1, math.ceil(len(ids) * share))))


def _retained(rt: Runtime, migration: Migration) -> dict[str, set[str]]:
    """map -> source ids deleted at the practice but kept in Dataverse on purpose."""
    from shared.pipeline.cutover import REPORTS, DeletionInfo

    out: dict[str, set[str]] = {}
    for delta in (migration.cutover.applied if migration.cutover else []):
        path = f"{REPORTS}/{delta.bundle_id}/deletions.json"
        if not rt.artifacts.exists(migration.migration_id, path):
            continue
        info = DeletionInfo.model_validate(rt.artifacts.get_json(migration.migration_id, path))
        for record in info.records:
            if record.outcome in RETAINED:
                out.setdefault(record.map, set()).add(record.source_id)
    return out


class _Journaled(NamedTuple):
    """A map's journal as the sets of source ids reconciliation compares."""

    set_aside: set[str]
    written: set[str]
    """Written (created, updated, unchanged), not counting `cleared`."""
    cleared: set[str]
    deleted: set[str]
    read_only: set[str]


def _journaled(rt: Runtime, migration_id: str, map_name: str) -> _Journaled:
    """One pass over a map's journal keeping ids only: a large map's entries are never held."""
    out = _Journaled(set(), set(), set(), set(), set())
    for entry in rt.journal.entries(migration_id, map_name):
        if entry.action in ("quarantined", "skipped"):
            out.set_aside.add(entry.source_id)
        elif entry.action == "updated" and entry.code == CLEARED:
            out.cleared.add(entry.source_id)
        elif entry.action == "deleted":
            out.deleted.add(entry.source_id)
        if entry.action in WRITTEN:
            out.written.add(entry.source_id)
        if entry.code == CLOSED_READ_ONLY:
            out.read_only.add(entry.source_id)
    out.written.difference_update(out.cleared)
    return out


async def _holding(client: Any, spec: MappingSpec, table_map: TableMap, entity_set: str, key_column: str
                   ) -> set[str]:
    """Source ids of the records an update map's columns hold a value in (its parent's key prefix)."""
    parent = spec.table(table_map.key.parent)
    prefix = f"{parent.key.prefix}-" if parent.key.prefix else ""
    columns = sorted({f.target for f in table_map.fields}
                     | {f"_{lookup_attribute(lk.nav, spec.publisher_prefix)}_value" for lk in table_map.lookups})
    out: set[str] = set()
    async for row in client.query(entity_set, select=[key_column, *columns]):
        sid = str(row.get(key_column) or "")
        if sid.startswith(prefix) and sid and any(row.get(c) is not None for c in columns):
            out.add(sid)
    return out


async def reconcile(rt: Runtime, migration: Migration) -> Reconciliation:
    """Count and diff the migration's current source against the journal and Dataverse."""
    chain = migration.cutover.applied_ids() if migration.cutover else []
    source_id = migration.bundle_id or ""
    if chain:
        source_id = materialise(rt, migration, chain, f"current.{chain[-1]}"[:100])
    view = migration.model_copy(update={"bundle_id": source_id})
    spec = approved_mapping(rt, view).spec
    reader = open_bundle(rt, view)
    share = migration.cutover.diff_share if migration.cutover else 1.0
    patients = _patients(reader, share)
    diff = await sample.diff_sample(rt, view, patients=patients)
    retained = _retained(rt, migration)
    maps: list[MapReconciliation] = []
    kept_all: list[KeptReadOnly] = []
    counted: list[sample.Mismatch] = []
    async with dataverse_client(rt, view) as client:
        context = await load._context(rt, view, client, reader, spec)
        for table_map in spec.enabled_tables():
            if table_map.action not in ("upsert", "update"):
                continue
            selected: set[str] = set()
            quarantined_rows = 0
            for item in reader.iter_table(table_map.source_table):
                if not isinstance(item, LoadedRow):
                    quarantined_rows += 1
                    continue
                row = item.row.model_dump()
                if table_map.selects(row):
                    sid = record_key(table_map, row, context)
                    if sid:
                        selected.add(sid)
            journaled = await asyncio.to_thread(_journaled, rt, migration.migration_id, table_map.name)
            set_aside, written, cleared, deleted, read_only = journaled
            keep = retained.get(table_map.name, set())
            expected = selected - set_aside
            target = load._target(spec, table_map, context, {})
            in_target: set[str] | None = None
            if table_map.action == "upsert" and target.key_column:
                prefix = f"{table_map.key.prefix}-" if table_map.key.prefix else ""
                in_target = {str(r.get(target.key_column)) async for r in
                             client.query(target.entity_set, select=[target.key_column])
                             if str(r.get(target.key_column) or "").startswith(prefix) and r.get(target.key_column)}
            elif table_map.action == "update" and target.key_column:
                in_target = await _holding(client, spec, table_map, target.entity_set, target.key_column)
            missing_journal = expected - written
            extra_journal = written - expected - keep
            missing_target = expected - in_target if in_target is not None else set()
            extra_target = in_target - expected - keep if in_target is not None else set()
            kept, bad = split_read_only(table_map.name, [m for m in diff.mismatches if m.map == table_map.name],
                                        read_only)
            kept_all.extend(kept)
            counted.extend(bad)
            bad_fields = {m.record for m in bad}
            stat = next((t for t in diff.tables if t.map == table_map.name), None)
            mismatched = missing_journal | extra_journal | missing_target | extra_target | bad_fields
            share_bad = len(mismatched) / max(len(expected), 1)
            maps.append(MapReconciliation(
                map=table_map.name, target_table=table_map.target_table, action=table_map.action,
                source_rows=len(selected), quarantined=quarantined_rows + len(selected & set_aside),
                expected=len(expected), journal_written=len(written), journal_deleted=len(deleted),
                journal_cleared=len(cleared),
                target_records=len(in_target) if in_target is not None else None, retained_deletions=len(keep),
                missing_in_journal=sorted(missing_journal)[:MAX_IDS], extra_in_journal=sorted(extra_journal)[:MAX_IDS],
                missing_in_target=sorted(missing_target)[:MAX_IDS], extra_in_target=sorted(extra_target)[:MAX_IDS],
                field_mismatched_records=sorted(bad_fields)[:MAX_IDS], kept_read_only=len(kept),
                fields_checked=stat.fields_checked if stat else 0, fields_matched=stat.fields_matched if stat else 0,
                mismatched_records=len(mismatched), mismatch_share=share_bad,
                within_tolerance=share_bad <= migration.tolerance))
    verdict: TReconciliation = "completed" if all(m.within_tolerance for m in maps) else "rollback_recommended"
    return Reconciliation(migration_id=migration.migration_id, generated_at=datetime.now(UTC),
                          source_bundle_id=source_id, deltas_applied=chain, tolerance=migration.tolerance,
                          diff_share=share, patients_diffed=diff.patients, fields_checked=diff.fields_checked,
                          fields_matched=diff.fields_matched, maps=maps, mismatches=counted,
                          kept_read_only=kept_all, verdict=verdict)


def split_read_only(map_name: str, mismatches: list[sample.Mismatch], read_only: set[str]
                    ) -> tuple[list[KeptReadOnly], list[sample.Mismatch]]:
    """(records kept read-only with their differing field names, the mismatches that count) of one map:
    a record whose journal entry is `closed_read_only` differs because Dataverse refuses edits to it."""
    fields: dict[str, set[str]] = {}
    target: dict[str, str] = {}
    bad: list[sample.Mismatch] = []
    for m in mismatches:
        if m.record in read_only:
            fields.setdefault(m.record, set()).add(m.field)
            target[m.record] = m.target_table
        else:
            bad.append(m)
    kept = [KeptReadOnly(map=map_name, target_table=target[sid], record=sid, fields=sorted(fields[sid]))
            for sid in sorted(fields)]
    return kept, bad


# -- renderings --------------------------------------------------------------------------------------------

CSV_COLUMNS = ("map", "target_table", "action", "source_rows", "quarantined", "expected", "journal_written",
               "journal_deleted", "target_records", "retained_deletions", "missing_in_journal", "extra_in_journal",
               "missing_in_target", "extra_in_target", "field_mismatched_records", "mismatched_records",
               "mismatch_share", "within_tolerance", "kept_read_only")


def render_csv(report: Reconciliation) -> str:
    """One line per table map (the problem lists as counts; the JSON has the ids)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for m in report.maps:
        writer.writerow([m.map, m.target_table, m.action, m.source_rows, m.quarantined, m.expected, m.journal_written,
                         m.journal_deleted, "" if m.target_records is None else m.target_records, m.retained_deletions,
                         len(m.missing_in_journal), len(m.extra_in_journal), len(m.missing_in_target),
                         len(m.extra_in_target), len(m.field_mismatched_records), m.mismatched_records,
                         f"{m.mismatch_share:.6f}", "yes" if m.within_tolerance else "no", m.kept_read_only])
    return buffer.getvalue()


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def render_html(report: Reconciliation) -> str:
    """One self-contained page: the verdict and totals first, then the maps, then filterable field mismatches."""
    e = html.escape
    verdict = "Completed: within tolerance" if report.verdict == "completed" else "Rollback recommended"
    maps = "".join(
        f"<tr class='{'ok' if m.within_tolerance else 'bad'}'><td>{e(m.map)}</td><td>{e(m.target_table)}</td>"
        f"<td>{m.expected}</td><td>{m.journal_written}</td>"
        f"<td>{'' if m.target_records is None else m.target_records}</td><td>{m.retained_deletions}</td>"
        f"<td>{len(m.missing_in_target) + len(m.missing_in_journal)}</td>"
        f"<td>{len(m.extra_in_target) + len(m.extra_in_journal)}</td><td>{len(m.field_mismatched_records)}</td>"
        f"<td>{m.mismatched_records}</td><td>{m.kept_read_only}</td><td>{_pct(m.mismatch_share)}</td>"
        f"<td>{'within' if m.within_tolerance else 'BEYOND'}</td></tr>" for m in report.maps)
    rows = sample.mismatch_rows_html(report.mismatches)
    kept_rows = "".join(f"<tr><td>{e(k.map)}</td><td>{e(k.target_table)}</td><td>{e(k.record)}</td>"
                        f"<td>{e(', '.join(k.fields))}</td></tr>" for k in report.kept_read_only)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Go-live reconciliation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}.ok td:last-child{{color:#176b2c}}
.bad td:last-child{{color:#b00020;font-weight:bold}}#summary span{{font-size:1.3rem;font-weight:bold}}
#verdict.completed{{color:#176b2c}}#verdict.rollback_recommended{{color:#b00020}}</style></head>
<body><h1>Go-live reconciliation</h1>
<section id="summary"><p>Verdict: <span id="verdict" class="{e(report.verdict)}">{e(verdict)}</span></p>
<p>Tolerance (mismatched records per table): <span id="tolerance">{_pct(report.tolerance)}</span>;
worst table: <span id="worst-share">{_pct(report.worst_share)}</span></p>
<p>Records expected: <span id="records-expected">{report.records_expected}</span>, mismatched:
<span id="records-mismatched">{report.records_mismatched}</span> in <span id="maps">{len(report.maps)}</span> tables</p>
<p>Fields compared: <span id="fields-checked">{report.fields_checked}</span>, matching:
<span id="fields-matched">{report.fields_matched}</span> (patients diffed: <span id="patients">{report.patients_diffed}</span>)</p>
<p>Delta bundles applied during cutover: <span id="deltas-applied">{len(report.deltas_applied)}</span></p></section>
<h2>Tables</h2><table id="maps-table"><tr><th>map</th><th>Dynamics table</th><th>expected</th><th>journal</th>
<th>in Dynamics</th><th>kept deletions</th><th>missing</th><th>extra</th><th>field mismatches</th>
<th>mismatched records</th><th>kept read-only</th><th>share</th><th>tolerance</th></tr>{maps}</table>
<h2>Changed after they were closed in Dynamics: not applied</h2>
<p id="kept-read-only-note"><span id="kept-read-only">{report.records_kept_read_only}</span> completed or canceled
appointments changed in Dentrix after they were closed in Dynamics; Dynamics keeps closed appointments read-only,
so these changes were not applied. They are listed here and do not count as mismatches.</p>
<table id="kept-read-only-table"><tr><th>map</th><th>Dynamics table</th><th>record</th><th>fields changed</th></tr>
{kept_rows}</table>
<h2>Field mismatches</h2><input id="filter" placeholder="filter by map, record or field" size="40">
<table id="mismatches"><tr><th>map</th><th>record</th><th>field</th><th>source</th><th>expected</th><th>actual</th></tr>
{rows}</table>
<script>document.getElementById('filter').addEventListener('input',function(ev){{var q=ev.target.value.toLowerCase();
document.querySelectorAll('#mismatches tr+tr').forEach(function(r){{r.style.display=r.textContent.toLowerCase()
.indexOf(q)<0?'none':''}})}})</script></body></html>
"""


async def write_reconciliation(rt: Runtime, migration: Migration) -> Reconciliation:
    """Reconcile and keep the report in Blob as JSON, CSV and HTML."""
    report = await reconcile(rt, migration)
    rt.artifacts.put_json(migration.migration_id, REPORT_JSON, report.model_dump(mode="json"))
    rt.artifacts.put_text(migration.migration_id, REPORT_CSV, render_csv(report), "text/csv")
    rt.artifacts.put_text(migration.migration_id, REPORT_HTML, render_html(report), "text/html")
    return report
