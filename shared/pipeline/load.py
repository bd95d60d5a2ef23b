"""The load stage: dependency waves from the approved map, one bundle part per activity, journal per row.

`plan_load` turns the map's lookups into waves (parents before children). `load_batch` reads one part
of one source table, transforms each row with every map that selects it, writes them with the bulk
writer (UpsertMultiple by source key, `$batch` elsewhere), closes finished appointments as their last
write, and records one journal entry per row: created / updated / skipped / quarantined / failed,
with the Dataverse id or the reason. `bind_deferred` writes the lookups a cycle held back.
Everything is idempotent: writes are upserts by source key, journal rows are keyed by source id.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from shared.dataverse.client import DataverseClient
from shared.dataverse.schema import read_table
from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow
from shared.dentrix.reader import BundleReader, LoadedRow, QuarantinedRow
from shared.mapping.graph import plan_loads
from shared.mapping.rows import (
    create_only_columns,
    final_state,
    index_children,
    make_context,
    record_key,
    reference_tables,
    source_id,
    split_deferred,
    transform_row,
)
from shared.mapping.spec import MappingSpec, TableMap
from shared.mapping.transforms import TransformContext
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.schema import stored_plan
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.journal import JournalEntry, TAction, TOrigin, now
from shared.state.migrations import Migration

log = logging.getLogger("bridgework.load")

LOAD_PLAN = "load/plan.json"


class TableLoad(BaseModel):
    table: str
    """The table map's name (a map may load a slice of a bundle table)."""
    source_table: str
    parts: int


class LoadPlanInfo(BaseModel):
    waves: list[list[TableLoad]]
    deferred: list[TableLoad]
    """Maps whose cycle-breaking lookups are written in a second pass, with their part counts."""
    attachment_parts: int
    rows: int


class BatchInfo(BaseModel):
    table: str
    part: int
    counts: dict[str, int]


def _loaded_maps(spec: MappingSpec) -> list[TableMap]:
    return [t for t in spec.enabled_tables() if t.action in ("upsert", "update")]


def _maps_reading(spec: MappingSpec, source_table: str) -> list[TableMap]:
    return [t for t in spec.enabled_tables()
            if t.source_table == source_table and t.action in ("upsert", "update", "attachment")]


def _owns_unmapped_rows(spec: MappingSpec, table_map: TableMap) -> bool:
    """The first map (by name) of a source table journals the rows no map selects, so each is counted once."""
    return min(t.name for t in _maps_reading(spec, table_map.source_table)) == table_map.name


def _selected_by_any(spec: MappingSpec, row: dict[str, Any], source_table: str) -> bool:
    return any(t.selects(row) for t in _maps_reading(spec, source_table))


def plan_load(rt: Runtime, migration: Migration) -> LoadPlanInfo:
    """The waves of table maps with the bundle's part counts (what the orchestrator fans out over)."""
    spec = approved_mapping(rt, migration).spec
    reader = open_bundle(rt, migration)
    plan = plan_loads(spec)
    rt.artifacts.put_json(migration.migration_id, LOAD_PLAN, plan)

    def load(name: str) -> TableLoad:
        source = spec.table(name).source_table
        return TableLoad(table=name, source_table=source, parts=reader.part_count(source))

    deferred_maps = sorted({d.table for d in plan.deferred})
    attachment_tables = [t.source_table for t in spec.enabled_tables() if t.action == "attachment"]
    attachment_parts = max((reader.part_count(t) for t in attachment_tables), default=0)
    rows = sum(entry.rows for entry in reader.manifest.tables)
    return LoadPlanInfo(waves=[[load(n) for n in wave] for wave in plan.waves],
                        deferred=[load(n) for n in deferred_maps], attachment_parts=attachment_parts, rows=rows)


# -- shared per-process context ----------------------------------------------------------------------

_CONTEXTS: dict[tuple[str, int, str], TransformContext] = {}


def _references(reader: BundleReader, tables: Iterable[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Whole reference tables (definitions, parents a path hops through), keyed by their key."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for table in tables:
        rows: dict[str, Mapping[str, Any]] = {}
        for item in reader.iter_table(table):
            if isinstance(item, LoadedRow):
                rows[item.key] = item.row.model_dump()
        out[table] = rows
    return out


async def _entity_sets(client: DataverseClient, spec: MappingSpec) -> dict[str, str]:
    names = {t.target_table for t in _loaded_maps(spec)}
    sets: dict[str, str] = {}
    for name in sorted(names):
        info = await read_table(client, name)
        if info is not None:
            sets[name] = info.entity_set_name
    return sets


async def _context(rt: Runtime, migration: Migration, client: DataverseClient, reader: BundleReader,
                   spec: MappingSpec) -> TransformContext:
    """The transform context of a migration (reference tables, owners, entity sets), cached per process."""
    cache_key = (migration.migration_id, int(migration.mapping_version or 0), str(migration.bundle_id))
    cached = _CONTEXTS.get(cache_key)
    if cached is not None:
        return cached
    plan = stored_plan(rt, migration)
    context = make_context(spec, reader.manifest.practice_timezone,
                           references=_references(reader, sorted(reference_tables(spec))),
                           owners=plan.owner_map, fallback_owner=plan.report.fallback_owner,
                           entity_sets=await _entity_sets(client, spec),
                           parent_ids=_parent_ids(reader, spec))
    _CONTEXTS.clear()  # one migration at a time per worker is the common case; keep memory flat
    _CONTEXTS[cache_key] = context
    return context


def _parent_ids(reader: BundleReader, spec: MappingSpec) -> dict[str, set[str]]:
    """Ids each lookup parent really has in the bundle, so a lookup to an orphan is left out (or the
    row quarantined when the lookup is required) instead of failing a write on a missing key."""
    parents = {lookup.parent for t in _loaded_maps(spec) for lookup in t.lookups}
    out: dict[str, set[str]] = {}
    for name in sorted(parents):
        parent = spec.table(name)
        if parent.action not in ("upsert", "update") or len(parent.key.columns) != 1:
            continue
        out[name] = {item.key for item in reader.iter_table(parent.source_table)
                     if isinstance(item, LoadedRow) and parent.selects(item.row.model_dump())}
    return out


def _children_for(reader: BundleReader, table_map: TableMap, parent_ids: set[str]
                  ) -> dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]]:
    """Child rows of this part's parents only (treatment-plan lines of these plans, for example)."""
    out: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for child_table, parent_column in sorted(child_tables_of(table_map)):
        rows = [item.row.model_dump() for item in reader.iter_table(child_table)
                if isinstance(item, LoadedRow) and str(getattr(item.row, parent_column, None)) in parent_ids]
        out[(child_table, parent_column)] = index_children(rows, parent_column)
    return out


def child_tables_of(table_map: TableMap) -> set[tuple[str, str]]:
    from shared.mapping.spec import ChildSource

    return {(s.children, s.parent_column) for f in table_map.fields for s in f.source if isinstance(s, ChildSource)}


def _target(spec: MappingSpec, table_map: TableMap, context: TransformContext, primary_ids: dict[str, str]
            ) -> TableTarget:
    from shared.mapping.contract import standard_tables

    name = table_map.target_table
    standard = standard_tables().get(name)
    keyed = standard is None or standard.custom_columns
    entity_set = context.entity_sets.get(name) or (standard.entity_set if standard else f"{name}s")
    primary = primary_ids.get(name) or (standard.primary_id if standard else f"{name}id")
    return TableTarget(logical_name=name, entity_set=entity_set, primary_id=primary,
                       key_column=spec.source_id_column if keyed else None,
                       create_only=tuple(sorted(create_only_columns())))


# -- one batch -----------------------------------------------------------------------------------------


async def load_batch(rt: Runtime, migration: Migration, map_name: str, part: int, *,
                     bundle_id: str | None = None) -> BatchInfo:
    """Load one part of one table map; safe to run twice (upserts by source key, journal by source id).

    The rows come from the migration's full bundle, or from `bundle_id` (a delta bundle during cutover);
    the transform context (reference tables, owners) always comes from the full bundle."""
    mapping = approved_mapping(rt, migration)
    spec = mapping.spec
    table_map = spec.table(map_name)
    reader = open_bundle(rt, migration)
    rows_reader = open_bundle(rt, migration, bundle_id) if bundle_id else reader
    batch = f"{map_name}/{part}" if not bundle_id else f"{bundle_id}:{map_name}/{part}"
    counts: dict[str, int] = {}
    entries: list[JournalEntry] = []

    def journal(sid: str, action: TAction, *, target_id: str | None = None, code: str | None = None,
                reason: str | None = None, origin: TOrigin = "none") -> None:
        counts[action] = counts.get(action, 0) + 1
        entries.append(JournalEntry(migration_id=migration.migration_id, table=map_name, source_id=sid,
                                    target_table=table_map.target_table, target_id=target_id, action=action,
                                    origin=origin, batch=batch, at=now(), code=code, reason=reason))

    async with dataverse_client(rt, migration) as client:
        context = await _context(rt, migration, client, reader, spec)
        items = list(rows_reader.iter_part(table_map.source_table, part))
        selected: list[LoadedRow] = []
        for item in items:
            if isinstance(item, QuarantinedRow):
                fields = ",".join(sorted({p.field for p in item.problems}))
                codes = ",".join(sorted({p.code for p in item.problems}))
                journal(item.key or f"{item.file}:{item.line}", "quarantined", code=codes,
                        reason=f"{item.file} line {item.line}: invalid {fields}")
            elif table_map.selects(item.row.model_dump()):
                selected.append(item)
            elif _owns_unmapped_rows(spec, table_map) and not _selected_by_any(spec, item.row.model_dump()
                                                                                   , table_map.source_table):
                journal(item.key, "skipped", code="not_mapped",
                        reason=f"no map selects this {table_map.source_table} row")
        own_ids = {item.key for item in selected}
        if child_tables_of(table_map):  # a per-batch copy: batches of one process share the context
            context = dataclasses.replace(context, children=_children_for(reader, table_map, own_ids), cache={})

        deferred_navs = {d.nav for d in _deferred(rt, migration) if d.table == map_name}
        rows: list[WriteRow] = []
        closing: dict[str, dict[str, int]] = {}
        for item in selected:
            row = item.row.model_dump()
            sid = record_key(table_map, row, context) or item.key
            payload, errors = transform_row(table_map, row, context)
            fatal = [e for e in errors if e.fatal]
            if fatal:
                journal(sid, "quarantined", code=",".join(sorted({e.code for e in fatal})),
                        reason="fields: " + ",".join(sorted({str(e.loc[-1]) for e in fatal})))
                continue
            payload, _ = split_deferred(payload, deferred_navs)
            payload.pop(spec.source_id_column, None)
            rows.append(WriteRow(source_key=sid, values=payload))
            state = final_state(table_map, row, context)
            if state is not None:
                closing[sid] = state

        primary_ids: dict[str, str] = {}
        target = _target(spec, table_map, context, primary_ids)
        origins = rt.journal.existing_origins(migration.migration_id, map_name, [r.source_key for r in rows])
        closed_before = {sid for sid, origin in origins.items() if sid in closing}
        # A closed appointment is read-only in Dataverse: a re-run leaves it as it is.
        to_write = [r for r in rows if r.source_key not in closed_before]
        for sid in sorted(closed_before):
            journal(sid, "unchanged", reason="closed activity: read-only after completion",
                    origin=origins[sid])
        report = await BulkWriter(client).write(target, to_write) if to_write else None
        outcomes = report.outcomes if report else []
        written_ids: dict[str, str] = {}
        for outcome in outcomes:
            if outcome.action == "failed":
                journal(outcome.source_key, "failed", code=outcome.error_code,
                        reason=f"Dataverse refused the record (HTTP {outcome.status})")
                continue
            origin: TOrigin = origins.get(outcome.source_key) or (
                "created" if outcome.action == "created" else "none")
            if table_map.action == "update":
                origin = "none"
            written_ids[outcome.source_key] = outcome.target_id or ""
            journal(outcome.source_key, outcome.action, target_id=outcome.target_id, origin=origin)
        await _close(client, target, {sid: state for sid, state in closing.items() if sid in written_ids})
    rt.journal.record(entries)
    rt.migrations.record_progress(migration.migration_id, f"load:{batch}", "done", counts)
    log.info("migration %s: %s loaded (%s)", migration.migration_id, batch,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return BatchInfo(table=map_name, part=part, counts=counts)


async def _close(client: DataverseClient, target: TableTarget, states: dict[str, dict[str, int]]) -> None:
    """Close finished activities as their last write (completed or canceled are read-only after)."""
    for sid, state in sorted(states.items()):
        key = {target.key_column: sid} if target.key_column else sid
        await client.update(target.entity_set, key, state)


def _deferred(rt: Runtime, migration: Migration) -> list[Any]:
    from shared.mapping.graph import LoadPlan

    if not rt.artifacts.exists(migration.migration_id, LOAD_PLAN):
        return []
    return LoadPlan.model_validate(rt.artifacts.get_json(migration.migration_id, LOAD_PLAN)).deferred


async def bind_deferred(rt: Runtime, migration: Migration, map_name: str, part: int) -> BatchInfo:
    """Second pass: write the lookups a dependency cycle held back (guarantor -> contact, for example)."""
    spec = approved_mapping(rt, migration).spec
    table_map = spec.table(map_name)
    navs = {d.nav for d in _deferred(rt, migration) if d.table == map_name}
    reader = open_bundle(rt, migration)
    counts: dict[str, int] = {}
    async with dataverse_client(rt, migration) as client:
        context = await _context(rt, migration, client, reader, spec)
        target = _target(spec, table_map, context, {})
        for item in reader.iter_part(table_map.source_table, part):
            if not isinstance(item, LoadedRow) or not table_map.selects(item.row.model_dump()):
                continue
            row = item.row.model_dump()
            payload, errors = transform_row(table_map, row, context)
            if any(e.fatal for e in errors):
                continue
            _, later = split_deferred(payload, navs)
            if not later:
                continue
            sid = source_id(table_map, row)
            key = {target.key_column: sid} if target.key_column else sid
            await client.update(target.entity_set, key, later)
            counts["bound"] = counts.get("bound", 0) + 1
    rt.migrations.record_progress(migration.migration_id, f"bind:{map_name}/{part}", "done", counts)
    return BatchInfo(table=map_name, part=part, counts=counts)
