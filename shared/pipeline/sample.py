"""The field-level diff of a sample: a stratified slice of patients and their related rows, every mapped
field read back from Dataverse and compared with the value the approved map gives and the raw source.

`select_sample` (sample_scope.py) picks patients across insurance (none / primary / dual), appointment history (none,
past, future, broken), treatment-plan status and ledger activity. `diff_sample` transforms each
sampled row exactly as the load does (same context, same writer target), reads the records back by
key, hundreds per request (shared/pipeline/readback.py), and reports per map and per field the match rate, every mismatch, and the brief's named
checks. `render_csv` / `render_html` give the same report to a spreadsheet and to a practice manager.

The report holds patient values (source, expected, actual of each mismatch): it lives in the
migration's own storage and is served only to its tenant; nothing here logs a value.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import html
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, computed_field

from shared.dataverse.client import DataverseClient
from shared.dataverse.schema import read_table
from shared.dentrix.reader import BundleReader
from shared.mapping.rows import record_key, split_deferred, transform_row
from shared.mapping.spec import MappingSpec, TableMap
from shared.mapping.transforms import TransformContext
from shared.pipeline import load
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.readback import RecordReader
from shared.pipeline.sample_scope import (
    DEFAULT_PATIENTS,
    SampleScope,
    build_scope,
    in_sample,
    rows_of,
    select_sample,
    strata,
)
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.migrations import Migration

DIFF_JSON = "sample/diff.json"
DIFF_CSV = "sample/diff.csv"
DIFF_HTML = "sample/diff.html"
SKIPPED_COLUMNS = {"overriddencreatedon"}
"""The actual creation time of the write, not a mapped value (createdon carries the source's date)."""


class Mismatch(BaseModel):
    map: str
    target_table: str
    record: str
    """The record's source key (`P-12`)."""
    field: str
    source: Any = None
    expected: Any = None
    actual: Any = None


class FieldStat(BaseModel):
    map: str
    field: str
    checked: int = 0
    matched: int = 0


class TableStat(BaseModel):
    map: str
    target_table: str
    records: int = 0
    missing: int = 0
    """Sampled records not found in Dataverse at all."""
    fields_checked: int = 0
    fields_matched: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def match_rate(self) -> float:
        return self.fields_matched / self.fields_checked if self.fields_checked else 1.0


class NamedCheck(BaseModel):
    name: str
    checked: int
    matched: int
    passed: bool


class SampleDiff(BaseModel):
    migration_id: str
    generated_at: datetime
    patients: int
    strata: dict[str, int]
    tables: list[TableStat]
    fields: list[FieldStat]
    checks: list[NamedCheck]
    mismatches: list[Mismatch]
    fields_checked: int
    fields_matched: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def match_rate(self) -> float:
        return self.fields_matched / self.fields_checked if self.fields_checked else 1.0


# -- the sample (chosen in shared/pipeline/sample_scope.py) ------------------------------------------------

_rows = rows_of


# -- reading back and comparing ------------------------------------------------------------------------------


def same_value(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(float(expected) - float(actual)) < 0.005
    if isinstance(expected, str) and isinstance(actual, str) and "T" in expected and expected.endswith("Z"):
        return expected.replace(".000", "") == actual.replace(".000", "")
    return bool(expected == actual)


def lookup_value(nav: str, record: dict[str, Any]) -> Any:
    """`regardingobjectid_contact_appointment` -> the record's `_regardingobjectid_value`."""
    name = nav.lower()
    while f"_{name}_value" not in record and "_" in name:
        name = name.rsplit("_", 1)[0]
    return record.get(f"_{name}_value")


def _source_value(table_map: TableMap, column: str, row: dict[str, Any]) -> Any:
    if column.endswith("@odata.bind"):
        nav = column[: -len("@odata.bind")]
        lookup = next((lk for lk in table_map.lookups if lk.nav == nav), None)
        return row.get(lookup.source.split(">")[0]) if lookup else None
    field = next((f for f in table_map.fields if f.target == column), None)
    if field is None:
        return None
    values = [row.get(s.split(">")[0]) for s in field.source if isinstance(s, str)]
    return values[0] if len(values) == 1 else (values or None)


async def diff_sample(rt: Runtime, migration: Migration, patients: list[str] | None = None,
                      size: int = DEFAULT_PATIENTS, *, scope: SampleScope | None = None,
                      per_record: bool = False) -> SampleDiff:
    """Compare every mapped field of every sampled record in Dataverse with its expected value.

    The sample is `scope` (the one a sample run loaded), else `patients`, else a fresh stratified
    choice of `size`; either way closed over the contacts its rows point at, as the sample load does.
    Records are read back hundreds per GET (shared/pipeline/readback.py); `per_record` reads them the
    old way, one GET per record and per expected lookup, to show both give the same report."""
    def choose() -> tuple[MappingSpec, BundleReader, dict[str, str], SampleScope]:
        spec = approved_mapping(rt, migration).spec
        reader = open_bundle(rt, migration)
        chosen_scope = scope if scope is not None else build_scope(
            reader, spec, patients if patients is not None else select_sample(reader, size), size=size)
        return spec, reader, strata(reader), chosen_scope

    # Reading the bundle is synchronous work: in a thread, off the event loop the Dataverse reads share.
    spec, reader, by_patient, scope = await asyncio.to_thread(choose)
    chosen = set(scope.patients)
    tables: list[TableStat] = []
    fields: dict[tuple[str, str], FieldStat] = {}
    mismatches: list[Mismatch] = []
    async with dataverse_client(rt, migration) as client:
        context = await load._context(rt, migration, client, reader, spec)
        primary_of_set = await primary_ids(client, spec)
        readback = RecordReader(client, primary_of_set)
        for table_map in spec.enabled_tables():
            if table_map.action not in ("upsert", "update"):
                continue
            stat = TableStat(map=table_map.name, target_table=table_map.target_table)
            tables.append(stat)
            ctx, work = await asyncio.to_thread(_expected, reader, table_map, scope, context)
            target = load._target(spec, table_map, ctx, {})
            records = await _read_back(readback, target, work, spec.source_id_column, per_record)
            for (row, sid, payload), record in zip(work, records, strict=True):
                stat.records += 1
                if record is None:
                    stat.missing += 1
                    continue
                for column, value in payload.items():
                    if column in SKIPPED_COLUMNS or column == spec.source_id_column or isinstance(value, list):
                        continue  # party lists are written as their own rows
                    if column.endswith("@odata.bind"):
                        wanted: Any = await readback.bind_id(value)
                        actual: Any = lookup_value(column[: -len("@odata.bind")], record)
                        actual = str(actual).lower() if actual else None
                    else:
                        wanted, actual = value, record.get(column)
                    ok = same_value(wanted, actual)
                    field = fields.setdefault((table_map.name, column), FieldStat(map=table_map.name, field=column))
                    field.checked += 1
                    stat.fields_checked += 1
                    if ok:
                        field.matched += 1
                        stat.fields_matched += 1
                    else:
                        mismatches.append(Mismatch(map=table_map.name, target_table=table_map.target_table,
                                                   record=sid, field=column,
                                                   source=_jsonable(_source_value(table_map, column, row)),
                                                   expected=_jsonable(value), actual=_jsonable(record.get(column)
                                                                                              if not column.endswith("@odata.bind") else actual)))
    field_list = sorted(fields.values(), key=lambda f: (f.map, f.field))
    counts: dict[str, int] = {}
    for pid in chosen:
        stratum = by_patient.get(pid, "unknown")
        counts[stratum] = counts.get(stratum, 0) + 1
    return SampleDiff(migration_id=migration.migration_id, generated_at=datetime.now(UTC), patients=len(chosen),
                      strata=dict(sorted(counts.items())), tables=tables, fields=field_list,
                      checks=named_checks(field_list), mismatches=mismatches,
                      fields_checked=sum(f.checked for f in field_list),
                      fields_matched=sum(f.matched for f in field_list))


def _expected(reader: BundleReader, table_map: TableMap, scope: SampleScope, context: TransformContext
              ) -> tuple[TransformContext, list[tuple[dict[str, Any], str, dict[str, Any]]]]:
    """The map's sampled rows as (row, source id, expected payload), and the transform context they used;
    rows the transform quarantines are left out (never written: the audit log accounts for them)."""
    rows = [r for r in _rows(reader, table_map.source_table)
            if table_map.selects(r) and in_sample(table_map.source_table, r, scope)]
    ctx = context
    if load.child_tables_of(table_map):
        own = {str(r.get(table_map.key.columns[0])) for r in rows}
        ctx = dataclasses.replace(context, children=load._children_for(reader, table_map, own), cache={})
    work = []
    for row in rows:
        payload, errors = transform_row(table_map, row, ctx)
        if any(e.fatal for e in errors):
            continue
        payload, _ = split_deferred(payload, set())
        sid = record_key(table_map, row, ctx)
        if sid:
            work.append((row, sid, payload))
    return ctx, work


async def _read_back(readback: RecordReader, target: Any, work: list[tuple[dict[str, Any], str, dict[str, Any]]],
                     source_id_column: str, per_record: bool) -> list[dict[str, Any] | None]:
    """The record of each work item (None: not in Dataverse), in order; expected keyed binds resolved ahead."""
    if per_record:
        return list(await asyncio.gather(*(
            readback.record(target.entity_set, {target.key_column: sid} if target.key_column else _derived(target, sid))
            for _, sid, _ in work)))
    columns = {c for _, _, payload in work for c, v in payload.items()
               if c not in SKIPPED_COLUMNS and c != source_id_column and not isinstance(v, list)}
    found = await readback.records(target, [sid for _, sid, _ in work], columns)
    await readback.prefetch_binds(v for _, _, payload in work for c, v in payload.items()
                                  if c.endswith("@odata.bind") and isinstance(v, str))
    return [found[sid] for _, sid, _ in work]


def _derived(target: Any, sid: str) -> str:
    from shared.mapping.rows import derived_id

    return derived_id(target.logical_name, sid)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


async def primary_ids(client: DataverseClient, spec: MappingSpec) -> dict[str, str]:
    out = {"systemusers": "systemuserid"}
    for name in sorted({t.target_table for t in spec.enabled_tables() if t.action in ("upsert", "update")}):
        info = await read_table(client, name)
        if info is not None:
            out[info.entity_set_name] = info.primary_id_attribute
    return out


# -- the brief's named checks ------------------------------------------------------------------------------

_CHECKS: dict[str, tuple[set[str] | None, tuple[str, ...]]] = {
    # name: (maps, or None for any; substrings of the target field)
    "cdt_code_mapping": ({"treatment_plan_line", "ledger"}, ("code", "cdt", "ada")),
    "insurance_field_completeness": ({"patient_insurance_primary", "patient_insurance_secondary"}, ("",)),
    "operatory_populated": ({"appointment"}, ("operatory", "location")),
    "owner_resolution": (None, ("ownerid@odata.bind",)),
    "dual_coverage_lookups": ({"patient_insurance_secondary"}, ("@odata.bind",)),
}


def named_checks(fields: list[FieldStat]) -> list[NamedCheck]:
    """Each check passes when it checked something and every checked field of its kind matched."""
    out: list[NamedCheck] = []
    for name, (maps, parts) in _CHECKS.items():
        chosen = [f for f in fields if (maps is None or f.map in maps) and any(p in f.field.lower() for p in parts)]
        checked, matched = sum(f.checked for f in chosen), sum(f.matched for f in chosen)
        out.append(NamedCheck(name=name, checked=checked, matched=matched, passed=checked > 0 and checked == matched))
    return out


# -- renderings --------------------------------------------------------------------------------------------

CSV_COLUMNS = ("map", "target_table", "record", "field", "source", "expected", "actual")


def render_csv(diff: SampleDiff) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for m in diff.mismatches:
        writer.writerow([m.map, m.target_table, m.record, m.field, _cell(m.source), _cell(m.expected),
                         _cell(m.actual)])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def mismatch_rows_html(mismatches: Iterable[Mismatch]) -> str:
    """The `<tr>` rows of a mismatch list (map, record, field, source, expected, actual), escaped."""
    e = html.escape
    return "".join(
        f"<tr><td>{e(m.map)}</td><td>{e(m.record)}</td><td>{e(m.field)}</td><td>{e(_cell(m.source))}</td>"
        f"<td>{e(_cell(m.expected))}</td><td>{e(_cell(m.actual))}</td></tr>" for m in mismatches)


def render_html(diff: SampleDiff) -> str:
    """One self-contained page: summary first, then named checks, tables, and a filterable mismatch list."""
    e = html.escape
    rate = f"{diff.match_rate * 100:.2f}%"
    tables = "".join(
        f"<tr><td>{e(t.map)}</td><td>{e(t.target_table)}</td><td>{t.records}</td><td>{t.missing}</td>"
        f"<td>{t.fields_checked}</td><td>{t.match_rate * 100:.2f}%</td></tr>" for t in diff.tables)
    checks = "".join(
        f"<tr class='{'ok' if c.passed else 'bad'}'><td>{e(c.name)}</td><td>{c.matched} / {c.checked}</td>"
        f"<td>{'passed' if c.passed else 'FAILED'}</td></tr>" for c in diff.checks)
    rows = mismatch_rows_html(diff.mismatches)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sample migration: field-level diff</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}.ok td:last-child{{color:#176b2c}}
.bad td:last-child{{color:#b00020;font-weight:bold}}#summary span{{font-size:1.4rem;font-weight:bold}}</style></head>
<body><h1>Sample migration: field-level diff</h1>
<section id="summary"><p>Patients sampled: <span id="patients">{diff.patients}</span></p>
<p>Fields checked: <span id="fields-checked">{diff.fields_checked}</span>, matching:
<span id="fields-matched">{diff.fields_matched}</span> (<span id="match-rate">{rate}</span>)</p>
<p>Mismatches: <span id="mismatch-count">{len(diff.mismatches)}</span></p></section>
<h2>Checks</h2><table id="checks"><tr><th>check</th><th>matched / checked</th><th>result</th></tr>{checks}</table>
<h2>Tables</h2><table id="tables"><tr><th>map</th><th>Dynamics table</th><th>records</th><th>missing</th>
<th>fields checked</th><th>match rate</th></tr>{tables}</table>
<h2>Mismatches</h2><input id="filter" placeholder="filter by map, record or field" size="40">
<table id="mismatches"><tr><th>map</th><th>record</th><th>field</th><th>source</th><th>expected</th><th>actual</th></tr>
{rows}</table>
<script>document.getElementById('filter').addEventListener('input',function(ev){{var q=ev.target.value.toLowerCase();
document.querySelectorAll('#mismatches tr+tr').forEach(function(r){{r.style.display=r.textContent.toLowerCase()
.indexOf(q)<0?'none':''}})}})</script></body></html>
"""


async def write_sample_diff(rt: Runtime, migration: Migration, patients: list[str] | None = None,
                            size: int = DEFAULT_PATIENTS, *, scope: SampleScope | None = None) -> SampleDiff:
    """Run the diff and keep it in Blob as JSON, CSV and HTML."""
    diff = await diff_sample(rt, migration, patients, size, scope=scope)
    rt.artifacts.put_json(migration.migration_id, DIFF_JSON, diff.model_dump(mode="json"))
    rt.artifacts.put_text(migration.migration_id, DIFF_CSV, render_csv(diff), "text/csv")
    rt.artifacts.put_text(migration.migration_id, DIFF_HTML, render_html(diff), "text/html")
    return diff
