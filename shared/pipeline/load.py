"""The load stage: dependency waves from the approved map, one bundle part per activity, journal per row.

`plan_load` turns the map's lookups into waves (parents before children). `load_batch` reads one part
of one source table, transforms each row with every map that selects it, writes them with the bulk
writer (UpsertMultiple by source key, `$batch` elsewhere), closes finished appointments as their last
write, and records one journal entry per row: created / updated / skipped / quarantined / failed,
with the Dataverse id or the reason. `bind_deferred` writes the lookups a cycle held back.
Everything is idempotent: writes are upserts by source key, journal rows are keyed by source id.
A map with a `match` rule first looks for records that were in Dataverse before the migration
(shared/pipeline/preexisting.py): one match is updated by id with its before-image kept (origin
`preexisting`), several are left alone and the row is written as its own record (`ambiguous_match`).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.schema import read_table
from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow, row_id
from shared.dentrix.reader import BundleReader, LoadedRow, QuarantinedRow
from shared.errors import DataverseRecordRejected
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
from shared.mapping.spec import ApprovedMapping, MappingSpec, TableMap
from shared.mapping.transforms import TransformContext
from shared.pipeline import closed
from shared.pipeline.bundle import open_bundle
from shared.pipeline.in_flight import budget_for
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.overlay import CurrentSource, chain_for, children_for
from shared.pipeline.preexisting import ImageReader, Matches, find_matches, store_images, write_matched
from shared.pipeline.sample_scope import SampleScope, in_sample
from shared.pipeline.schema import stored_plan
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state import failures
from shared.state.journal import WRITE_IN_PROGRESS, JournalEntry, TAction, TOrigin, now
from shared.state.migrations import Migration

log = logging.getLogger("bridgework.load")
_T = TypeVar("_T")

LOAD_PLAN = "load/plan.json"


class TableLoad(BaseModel):
    table: str
    """The table map's name (a map may load a slice of a bundle table)."""
    source_table: str
    parts: int
    after: list[str] = []
    """Maps that must finish first (its lookups' parents): the orchestrator starts a map as soon as they have."""


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
        after = sorted(parent for child, parent in plan.edges if child == name)
        return TableLoad(table=name, source_table=source, parts=reader.part_count(source), after=after)

    deferred_maps = sorted({d.table for d in plan.deferred})
    attachment_tables = [t.source_table for t in spec.enabled_tables() if t.action == "attachment"]
    attachment_parts = max((reader.part_count(t) for t in attachment_tables), default=0)
    rows = sum(entry.rows for entry in reader.manifest.tables)
    return LoadPlanInfo(waves=[[load(n) for n in wave] for wave in plan.waves],
                        deferred=[load(n) for n in deferred_maps], attachment_parts=attachment_parts, rows=rows)


# -- shared per-process context ----------------------------------------------------------------------

_CONTEXTS: dict[tuple[str, int, str], TransformContext] = {}

_KEPT = 8
"""Approved maps, bundle readers and load plans kept per process: a few migrations (and their delta
bundles) at once; the oldest goes first."""
_APPROVED: dict[tuple[str, int], ApprovedMapping] = {}
_READERS: dict[tuple[str, str], BundleReader] = {}
_DEFERRED: dict[tuple[str, int], list[Any]] = {}


def _kept(cache: dict, key: Any, make: Callable[[], Any]) -> Any:
    """The cached value, or a new one made and kept (bounded: the oldest entry is dropped)."""
    if key in cache:
        return cache[key]
    value = make()
    while len(cache) >= _KEPT:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def _approved(rt: Runtime, migration: Migration) -> ApprovedMapping:
    """The approved map, read and verified once per process and mapping version: every batch of a
    migration reads the same frozen artifact (`approved-v<N>.json` is written once, at approval)."""
    version = migration.mapping_version
    if version is None:  # approved_mapping raises the clear error
        return approved_mapping(rt, migration)
    return _kept(_APPROVED, (migration.migration_id, int(version)), lambda: approved_mapping(rt, migration))


def _bundle(rt: Runtime, migration: Migration, bundle_id: str | None = None) -> BundleReader:
    """The bundle's reader, its manifest read and checked once per process and bundle: a bundle is
    immutable once its manifest (the commit marker) is in, and the reader still checks every part's
    hash as it reads it. A bundle that fails to open is not kept."""
    key = (migration.migration_id, str(bundle_id or migration.bundle_id))
    return _kept(_READERS, key, lambda: open_bundle(rt, migration, bundle_id))


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
    """The transform context of a migration (reference tables, owners, entity sets), cached per process.

    Built once: the first batches of a stage start together, and each building its own copy read the
    patient and parent tables that many times and held that many copies at once (`_BUILDING`)."""
    cache_key = (migration.migration_id, int(migration.mapping_version or 0), str(migration.bundle_id))
    cached = _CONTEXTS.get(cache_key)
    if cached is not None:
        return cached
    loop = asyncio.get_running_loop()
    building = _BUILDING.get(cache_key)
    if building is None or building.get_loop() is not loop:
        building = loop.create_task(_build_context(rt, migration, client, reader, spec, cache_key))
        _BUILDING[cache_key] = building
        # A failed build is forgotten, so the activity's retry builds again instead of re-raising it.
        building.add_done_callback(lambda task: _BUILDING.pop(cache_key, None) if _BUILDING.get(cache_key) is task
                                   else None)
    # shield: one waiting batch cancelled (its activity failed) must not cancel the others' build.
    return await asyncio.shield(building)


_BUILDING: dict[tuple[str, int, str], asyncio.Task[TransformContext]] = {}
"""Context builds in progress, by `_context`'s key: later batches wait for the first one's build."""


async def _build_context(rt: Runtime, migration: Migration, client: DataverseClient, reader: BundleReader,
                         spec: MappingSpec, cache_key: tuple[str, int, str]) -> TransformContext:
    def read() -> tuple[Any, Any, Any]:  # storage and bundle reads: off the event loop
        return stored_plan(rt, migration), _references(reader, sorted(reference_tables(spec))), \
            _parent_ids(reader, spec)

    plan, references, parent_ids = await asyncio.to_thread(read)
    context = make_context(spec, reader.manifest.practice_timezone, references=references,
                           owners=plan.owner_map, fallback_owner=plan.report.fallback_owner,
                           entity_sets=await _entity_sets(client, spec), parent_ids=parent_ids)
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
    """Child rows of this part's parents only (treatment-plan lines of these plans, for example), read
    from the child table's parts that can hold them (`_child_part_spans`), not from the whole table."""
    wanted = _whole_numbers(parent_ids)
    out: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for child_table, parent_column in sorted(child_tables_of(table_map)):
        spans = _child_part_spans(reader, child_table, parent_column)
        parts = [index for index, span in enumerate(spans) if span is None or wanted is None or _meets(wanted, span)]
        rows = [item.row.model_dump() for index in parts for item in reader.iter_part(child_table, index)
                if isinstance(item, LoadedRow) and str(getattr(item.row, parent_column, None)) in parent_ids]
        out[(child_table, parent_column)] = index_children(rows, parent_column)
    return out


_SPANS: weakref.WeakKeyDictionary[BundleReader, dict[tuple[str, str], list[tuple[int, int] | None]]] = \
    weakref.WeakKeyDictionary()
_SPANS_LOCK = threading.Lock()


def _child_part_spans(reader: BundleReader, child_table: str, parent_column: str) -> list[tuple[int, int] | None]:
    """Per part of a child table, the lowest and highest parent id in it; None when one of them is not a
    whole number (that part is always read). Read once per process and bundle, under a lock: the first
    batches start together. Every appointment part used to read the whole appointment_procedure table
    (5.4 s of CPU per part at 1M records, 33 parts). Children are written about when their parents are
    (an appointment's procedures), so a part's span is narrow and a part of parents meets a few of them."""
    with _SPANS_LOCK:
        by_table = _SPANS.setdefault(reader, {})
        if (child_table, parent_column) not in by_table:
            by_table[(child_table, parent_column)] = [
                _span(getattr(item.row, parent_column, None) for item in reader.iter_part(child_table, index)
                      if isinstance(item, LoadedRow))
                for index in range(reader.part_count(child_table))]
        return by_table[(child_table, parent_column)]


_EMPTY_SPAN = (1, 0)
"""The span of a part without a parent id: it meets nothing."""


def _span(values: Iterable[Any]) -> tuple[int, int] | None:
    numbers = _whole_numbers(str(value) for value in values if value is not None)
    if numbers is None:
        return None
    return (numbers[0], numbers[-1]) if numbers else _EMPTY_SPAN


def _whole_numbers(ids: Iterable[str]) -> list[int] | None:
    """The ids as sorted integers, or None if one is not a whole number."""
    try:
        return sorted(int(text) for text in ids)
    except ValueError:
        return None


def _meets(wanted: list[int], span: tuple[int, int]) -> bool:
    """Whether a sorted list holds a number within the span."""
    at = bisect.bisect_left(wanted, span[0])
    return at < len(wanted) and wanted[at] <= span[1]


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


def _current_source(rt: Runtime, migration: Migration, spec: MappingSpec, bundle_id: str | None
                    ) -> CurrentSource | None:
    """For a delta: the source as it is after the deltas applied so far and this one (None for the full load)."""
    if not bundle_id or bundle_id == migration.bundle_id:
        return None
    return CurrentSource(rt, migration, chain_for(migration, bundle_id))


# -- one batch -----------------------------------------------------------------------------------------


async def load_batch(rt: Runtime, migration: Migration, map_name: str, part: int, *,
                     bundle_id: str | None = None, sample: SampleScope | None = None,
                     over_sample: SampleScope | None = None, keys: list[str] | None = None) -> BatchInfo:
    """Load one part of one table map; safe to run twice (upserts by source key, journal by source id).

    The rows come from the migration's full bundle, or from `bundle_id` (a delta bundle during cutover);
    the transform context (reference tables, owners) always comes from the full bundle.
    `sample`: the sample run, only the rows `in_sample` (batch `sample:<map>/<part>`, progress under
    `sample:`; quarantined rows wait for the full run). `over_sample`: the full run right after that
    sample: it upserts over the sample's records and still reports the ones the sample created as
    `created` (the same run created them). `keys` (with a delta's `bundle_id`): instead of a part, these rows
    of the current source (shared/pipeline/overlay.py), parents whose children alone changed in the delta.

    The batch first waits until its part fits in the process's budget of bundle bytes in flight
    (shared/pipeline/in_flight.py): that, not the practice's size, bounds the worker's memory."""
    weight = _batch_weight(rt, migration, map_name, part, bundle_id, keys)
    async with budget_for(rt.settings.load_bundle_bytes_in_flight).hold(weight):
        return await _load_batch(rt, migration, map_name, part, bundle_id=bundle_id, sample=sample,
                                 over_sample=over_sample, keys=keys)


def _batch_weight(rt: Runtime, migration: Migration, map_name: str, part: int, bundle_id: str | None,
                  keys: list[str] | None) -> int:
    """The bundle bytes (as stored) the batch reads: its part's, from the manifest; for `keys`, that many
    rows at the table's bytes per row; 0 for a part the batch will refuse."""
    source_table = _approved(rt, migration).spec.table(map_name).source_table
    reader = _bundle(rt, migration, bundle_id) if bundle_id else _bundle(rt, migration)
    try:
        entry = reader.table(source_table)
    except KeyError:
        return 0
    if keys is not None:
        stored = sum(p.bytes for p in entry.parts)
        return len(keys) * stored // max(entry.rows, 1)
    return entry.parts[part].bytes if 0 <= part < len(entry.parts) else 0


async def _load_batch(rt: Runtime, migration: Migration, map_name: str, part: int, *,
                      bundle_id: str | None, sample: SampleScope | None, over_sample: SampleScope | None,
                      keys: list[str] | None) -> BatchInfo:
    mapping = _approved(rt, migration)
    spec = mapping.spec
    table_map = spec.table(map_name)
    reader = _bundle(rt, migration)
    rows_reader = _bundle(rt, migration, bundle_id) if bundle_id else reader
    batch = f"{map_name}/{part}" if not bundle_id else f"{bundle_id}:{map_name}/{'parents-' if keys else ''}{part}"
    delta = bool(bundle_id) and bundle_id != migration.bundle_id
    if sample is not None:
        batch = f"sample:{map_name}/{part}"
    counts: dict[str, int] = {}
    entries: list[JournalEntry] = []
    sampled: set[str] = set()
    """Source ids of this batch the sample run wrote (only with `over_sample`)."""

    def journal(sid: str, action: TAction, *, target_id: str | None = None, code: str | None = None,
                reason: str | None = None, origin: TOrigin = "none", before_image: str | None = None) -> None:
        if action in ("updated", "unchanged") and origin == "created" and sid in sampled:
            action = "created"  # the sample created it earlier in this very run (see `over_sample`)
        if action in ("updated", "unchanged") and origin == "created" and not delta:
            # This migration created the record: a re-run, a duplicate delivery of this batch or a write
            # retried after a lost answer does not make it an update (found by the chaos run).
            action = "created"
        counts[action] = counts.get(action, 0) + 1
        entries.append(JournalEntry(migration_id=migration.migration_id, table=map_name, source_id=sid,
                                    target_table=table_map.target_table, target_id=target_id, action=action,
                                    origin=origin, batch=batch, at=now(), code=code, reason=reason,
                                    before_image=before_image))

    async with dataverse_client(rt, migration) as client:
        context = await _context(rt, migration, client, reader, spec)

        def prepare(context: TransformContext) -> tuple[TransformContext, list[WriteRow],
                                                        dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
            # Read, select and transform the part: synchronous work (blob reads, validation, transforms) that
            # runs off the event loop, which the other activities' Dataverse requests and the orchestrations share.
            # Concurrent batches' threads share the cached context: read-only but for its memo `cache`, where a
            # race only computes a step twice.
            current = _current_source(rt, migration, spec, bundle_id)
            if current is not None:  # a delta: its rows' parents as the practice holds them now (new patients too)
                context = dataclasses.replace(context, cache={}, parent_ids=current.parent_ids(
                    spec, _loaded_maps(spec), context.parent_ids))
            items = (current.items(table_map.source_table, set(keys)) if keys is not None and current is not None
                     else rows_reader.iter_part(table_map.source_table, part))
            # Streamed: the part's typed rows are never all held at once, only the selected rows' plain values
            # (a validated pydantic row holds about 3 times its dict: bench/bench_load_memory.py).
            selected: list[tuple[str, dict[str, Any]]] = []
            for item in items:
                if isinstance(item, QuarantinedRow):
                    if sample is not None:  # quarantined rows wait for the full run
                        continue
                    fields = ",".join(sorted({p.field for p in item.problems}))
                    codes = ",".join(sorted({p.code for p in item.problems}))
                    journal(item.key or f"{item.file}:{item.line}", "quarantined", code=codes,
                            reason=f"{item.file} line {item.line}: invalid {fields}")
                    continue
                values = item.row.model_dump()
                if sample is not None and not in_sample(table_map.source_table, values, sample):
                    continue
                if table_map.selects(values):
                    selected.append((item.key, values))
                elif _owns_unmapped_rows(spec, table_map) and not _selected_by_any(spec, values,
                                                                                   table_map.source_table):
                    journal(item.key, "skipped", code="not_mapped",
                            reason=f"no map selects this {table_map.source_table} row")
            del items
            own_ids = {key for key, _ in selected}
            for key, values in selected if over_sample is not None else []:
                if in_sample(table_map.source_table, values, over_sample):
                    sampled.add(record_key(table_map, values, context) or key)
            if child_tables_of(table_map):  # a per-batch copy: batches of one process share the context
                children = (_children_for(reader, table_map, own_ids) if current is None
                            else children_for(current, child_tables_of(table_map), own_ids))
                context = dataclasses.replace(context, children=children, cache={})

            deferred_navs = {d.nav for d in _deferred(rt, migration) if d.table == map_name}
            rows: list[WriteRow] = []
            full_payloads: dict[str, dict[str, Any]] = {}
            closing: dict[str, dict[str, int]] = {}
            # Rows of an update map that write the same record (a minor's two guardian links): the last one
            # in the part is written, the others are journaled under their own key as superseded.
            writer_of = {record_key(table_map, values, context) or key: key for key, values in selected}
            keep_full = _needs_full_payloads(spec, table_map)
            for key, row in _drained(selected):  # each source row let go of once transformed
                sid = record_key(table_map, row, context) or key
                if writer_of[sid] != key:
                    journal(key, "skipped", code="superseded",
                            reason=f"a later {table_map.source_table} row of the same record is written "
                                   "(the map keeps the last)")
                    continue
                payload, errors = transform_row(table_map, row, context)
                fatal = [e for e in errors if e.fatal]
                if fatal:
                    journal(sid, "quarantined", code=",".join(sorted({e.code for e in fatal})),
                            reason="fields: " + ",".join(sorted({str(e.loc[-1]) for e in fatal})))
                    continue
                if keep_full:  # deferred lookups included: their old values belong in a before-image
                    full_payloads[sid] = payload
                payload, _ = split_deferred(payload, deferred_navs)
                payload.pop(spec.source_id_column, None)
                rows.append(WriteRow(source_key=sid, values=payload))
                state = final_state(table_map, row, context)
                if state is not None:
                    closing[sid] = state
            return context, rows, full_payloads, closing

        context, rows, full_payloads, closing = await asyncio.to_thread(prepare, context)
        primary_ids: dict[str, str] = {}
        target = _target(spec, table_map, context, primary_ids)
        origins = await asyncio.to_thread(rt.journal.existing_origins, migration.migration_id, map_name,
                                          [r.source_key for r in rows])
        unseen = {r.source_key for r in rows if r.source_key not in origins}  # no row yet: journaled by insert
        closed_before = {sid for sid, origin in origins.items() if sid in closing}
        if delta and table_map.close is not None and origins:
            # A delta asks Dataverse: an appointment completed at the practice during cutover is still open
            # there (written and closed as usual), one closed there stays read-only whatever the source says.
            ids = sorted(origins)  # 100 ids per GET: the filter stays well under the URL limit
            closed_before = set().union(*[await _closed_now(client, target, set(ids[i:i + 100]))
                                          for i in range(0, len(ids), 100)])
        elif closed_before:  # a write started but never journaled may or may not have closed the record
            unfinished = await asyncio.to_thread(_unfinished, rt, migration, map_name, closed_before)
            closed_before -= unfinished - await _closed_now(client, target, unfinished)
        # A closed appointment is read-only in Dataverse: a re-run leaves it as it is (never reopened).
        to_write = [r for r in rows if r.source_key not in closed_before]
        # ... and keeps its target id in the journal (the sample run, or an earlier run, wrote it).
        closed_ids = (await asyncio.to_thread(_journaled_target_ids, rt, migration, map_name, closed_before)
                      if closed_before else {})
        changed = (await closed.changed_fields(client, spec, target, {r.source_key: r.values for r in rows
                                                                      if r.source_key in closed_before})
                   if delta and closed_before else {})
        for sid in sorted(closed_before):
            journal(sid, "unchanged", target_id=closed_ids.get(sid), code=closed.CLOSED_READ_ONLY,
                    reason=closed.reason_for(changed.get(sid, [])), origin=origins[sid])
            if changed.get(sid):  # the delta report's count: changed at the practice, not applied
                counts[closed.KEPT_COUNT] = counts.get(closed.KEPT_COUNT, 0) + 1
        # Records that were there before the migration: matched, imaged, written by id (shared/pipeline/preexisting.py).
        found, images = await _preexisting(rt, migration, client, spec, table_map, target, to_write, origins,
                                           full_payloads, batch)
        matched_rows = [r for r in to_write if r.source_key in found.matched]
        to_write = [r for r in to_write if r.source_key not in found.matched]
        written_ids: dict[str, str] = {}
        for done in await write_matched(client, target, matched_rows, found.matched):
            if not done.ok:
                journal(done.source_key, "failed", code=done.code,
                        reason=f"Dataverse refused the update of the matching record (HTTP {done.status})")
                continue
            written_ids[done.source_key] = done.target_id
            journal(done.source_key, "updated", target_id=done.target_id, origin="preexisting",
                    before_image=images.get(done.source_key))
        announced: set[str] = set()
        intents: list[str] = []

        async def before_create(keys: list[str]) -> None:
            # Write-ahead: rows about to be created are announced (one intent entity per write, read back as
            # origin created, code write_in_progress) before the request goes out, so a host stopped between
            # the write and the journal cannot turn them into updates of unknown origin that a rollback would
            # leave behind (found by the chaos run). Settled once this batch's rows are journaled.
            if table_map.action == "update":  # writes into records another map created: never their origin
                return
            fresh = [k for k in keys if k not in origins and k not in announced]
            announced.update(keys)
            if fresh:
                intents.extend(await asyncio.to_thread(
                    rt.journal.announce,
                    migration.migration_id, map_name, batch, table_map.target_table, fresh,
                    None if target.key_column else [row_id(target.logical_name, k) for k in fresh]))

        report = await BulkWriter(client).write(target, to_write, before_create=before_create) if to_write else None
        del rows, to_write, matched_rows, full_payloads  # written: the journal needs the outcomes, not the payloads
        outcomes = report.outcomes if report else []
        # A duplicate delivery of this batch running beside this one may have announced and created rows
        # after `origins` was read: this write then found them and updated them. Its announce came before
        # its create, and the create before this write's existence read, so the journal read again now
        # tells (found by the chaos run: a created prescription journaled as an update of unknown origin).
        unexplained = [o.source_key for o in outcomes if o.source_key not in origins and o.source_key not in announced]
        if unexplained:
            origins = {**origins, **await asyncio.to_thread(rt.journal.existing_origins, migration.migration_id,
                                                            map_name, unexplained)}
        for outcome in outcomes:
            if outcome.action == "failed":
                # An earlier attempt of this migration may have created the record: keep that origin, or a
                # rollback would leave it behind (a record never created is simply already gone then).
                journal(outcome.source_key, "failed", code=outcome.error_code,
                        reason=f"Dataverse refused the record (HTTP {outcome.status})",
                        origin="created" if origins.get(outcome.source_key) == "created"
                        or outcome.source_key in announced else "none")
                continue
            origin: TOrigin = origins.get(outcome.source_key) or (
                "created" if outcome.action == "created" or outcome.source_key in announced else "none")
            if table_map.action == "update":
                origin = "preexisting" if outcome.source_key in images else "none"
            written_ids[outcome.source_key] = outcome.target_id or ""
            ambiguous = found.ambiguous.get(outcome.source_key)
            flag = (f"{ambiguous} candidates match on {','.join(table_map.match)}: written as its own record"
                    if ambiguous else found.flagged.get(outcome.source_key))
            journal(outcome.source_key, outcome.action, target_id=outcome.target_id, origin=origin,
                    before_image=images.get(outcome.source_key) if origin == "preexisting" else None,
                    code="ambiguous_match" if flag is not None else None, reason=flag)
        await _close(client, target, {sid: state for sid, state in closing.items() if sid in written_ids})
    stage = f"load:{batch}" if sample is None else batch
    # Failures by code on the progress row, so a status read never scans the journal (shared/state/failures.py):
    # a delta first reads which earlier failures its rows replace; the full run's part replaces the sample's.
    cleared = (await asyncio.to_thread(failures.cleared_by, rt, migration.migration_id, batch, stage, entries)
               if delta else {})
    # Storage calls leave the event loop: the activity shares it with every other activity's Dataverse requests
    # and with the orchestrations (a 48-transaction journal write on Azurite stalled them all for 23 s).
    # Rows the origin reads found no trace of go as inserts (cheaper on Azurite; a conflict falls back).
    await asyncio.to_thread(rt.journal.record, entries, unseen - origins.keys())
    await asyncio.to_thread(rt.journal.settle, migration.migration_id, map_name, intents)  # all journaled now
    await asyncio.to_thread(functools.partial(
        rt.migrations.record_progress, migration.migration_id, stage, "done", counts,
        errors=failures.errors_of(entries), cleared=cleared,
        supersedes=_sample_stage(map_name, part, sample, bundle_id)))
    log.info("migration %s: %s loaded (%s)", migration.migration_id, batch,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return BatchInfo(table=map_name, part=part, counts=counts)


def _sample_stage(map_name: str, part: int, sample: SampleScope | None, bundle_id: str | None) -> str | None:
    """The sample run's progress row a full-run batch journals again in full (None for others)."""
    return f"sample:{map_name}/{part}" if sample is None and not bundle_id else None


def _needs_full_payloads(spec: MappingSpec, table_map: TableMap) -> bool:
    """Whether `_preexisting` reads the rows' full payloads (the before-images of matched records, or of the
    pre-existing parent records an update map writes into): only then are they kept beside the write rows."""
    return bool(table_map.match) or (table_map.action == "update" and bool(table_map.key.parent)
                                      and bool(spec.table(table_map.key.parent).match))


def _drained(rows: list[_T]) -> Iterator[_T]:
    """The items in order, each let go of by the list as it is yielded (the list ends empty)."""
    rows.reverse()
    while rows:
        yield rows.pop()


async def _preexisting(rt: Runtime, migration: Migration, client: DataverseClient, spec: MappingSpec,
                       table_map: TableMap, target: TableTarget, rows: list[WriteRow], origins: dict[str, TOrigin],
                       payloads: dict[str, dict[str, Any]], batch: str) -> tuple[Matches, dict[str, str]]:
    """Matches of rows never written by this migration (maps with a match rule), and the before-image
    references of every pre-existing record this batch writes: the first one journaled is kept, a new
    one is read just before the record's first write (a matched record, or the pre-existing parent
    record an update map writes into)."""
    mid = migration.migration_id
    found = Matches()
    images: dict[str, str] = {}
    if not target.key_column or not rows:
        return found, images
    wanted = {r.source_key for r in rows}
    # Earlier rows' images (and ambiguity flags) are read only when a row was written before: a first run skips it.
    if any(origins.get(sid) == "preexisting" or (table_map.match and origins.get(sid) == "created")
           for sid in wanted):
        for entry in (await asyncio.to_thread(rt.journal.entries_of, mid, table_map.name, wanted)).values():
            if entry.origin == "preexisting" and entry.before_image:
                images[entry.source_id] = entry.before_image
            elif entry.code == "ambiguous_match" and entry.origin == "created":
                found.flagged[entry.source_id] = entry.reason or ""  # a re-run keeps the duplicate's flag
    reader = ImageReader(client, target, spec.publisher_prefix)
    skip = set(target.create_only)
    if table_map.match:
        flagged = found.flagged
        found = await find_matches(client, target, table_map,
                                   [r for r in rows if origins.get(r.source_key) in (None, "none")])
        found.flagged = flagged
        if found.matched:
            # The source key is part of the image (null before): rollback takes it off again.
            fresh = await reader.read(target.primary_id, found.matched,
                                      {sid: {**payloads.get(sid, {}), target.key_column: sid} for sid in found.matched},
                                      skip=skip)
            stored = await asyncio.to_thread(store_images, rt, mid, batch, fresh)
            images.update({sid: ref for sid, ref in stored.items() if sid not in images})
    elif table_map.action == "update" and table_map.key.parent and spec.table(table_map.key.parent).match:
        parents = await asyncio.to_thread(rt.journal.existing_origins, mid, table_map.key.parent, wanted)
        missing = sorted(sid for sid in wanted if parents.get(sid) == "preexisting" and sid not in images)
        if missing:
            fresh = await reader.read(target.key_column, {sid: sid for sid in missing},
                                      {sid: payloads.get(sid, {}) for sid in missing}, skip=skip | {target.key_column})
            images.update(await asyncio.to_thread(store_images, rt, mid, batch, fresh))
    return found, images


async def _close(client: DataverseClient, target: TableTarget, states: dict[str, dict[str, int]]) -> None:
    """Close finished activities as their last write (completed or canceled are read-only after), 200
    updates per `$batch` rather than one request each."""
    if not states:
        return
    report = await BulkWriter(client).update(target, [WriteRow(sid, state) for sid, state in sorted(states.items())])
    if report.failed:
        codes = sorted({o.error_code or "unknown" for o in report.outcomes if o.action == "failed"})
        raise DataverseRecordRejected(f"{report.failed} activities of {target.logical_name} could not be closed",
                                      dataverse_code=",".join(codes))


def _unfinished(rt: Runtime, migration: Migration, map_name: str, source_ids: set[str]) -> set[str]:
    """Rows among these whose journal entry is still a write-ahead (their batch stopped mid-way) or a
    failure: whether their record was written and closed is read from Dataverse, not assumed."""
    return {sid for sid, entry in rt.journal.entries_of(migration.migration_id, map_name, source_ids).items()
            if entry.code == WRITE_IN_PROGRESS or entry.action == "failed"}


async def _closed_now(client: DataverseClient, target: TableTarget, source_ids: set[str]) -> set[str]:
    """Rows among these whose record exists and is no longer open (statecode other than 0)."""
    if not source_ids:
        return set()
    column = target.key_column or target.primary_id
    by_value = {(sid if target.key_column else row_id(target.logical_name, sid)): sid for sid in source_ids}
    values = ",".join(odata_literal(v) for v in sorted(by_value))
    closed: set[str] = set()
    async for row in client.query(target.entity_set, select=sorted({column, "statecode"}),
                                  filter=f"Microsoft.Dynamics.CRM.In(PropertyName={odata_literal(column)},"
                                         f"PropertyValues=[{values}])"):
        if row.get("statecode") not in (0, None):
            closed.add(by_value[str(row[column]).lower() if not target.key_column else str(row[column])])
    return closed


def _journaled_target_ids(rt: Runtime, migration: Migration, map_name: str, source_ids: set[str]) -> dict[str, str]:
    """The target ids the journal already holds for these rows of a map."""
    return {sid: entry.target_id for sid, entry in rt.journal.entries_of(migration.migration_id, map_name,
                                                                          source_ids).items() if entry.target_id}


def _deferred(rt: Runtime, migration: Migration) -> list[Any]:
    """The load plan's deferred lookups; kept per process and mapping version once the plan exists
    (plan_load derives it from the approved map alone, so a version's plan never changes)."""
    from shared.mapping.graph import LoadPlan

    key = (migration.migration_id, int(migration.mapping_version or 0))
    if key in _DEFERRED:
        return _DEFERRED[key]
    if not rt.artifacts.exists(migration.migration_id, LOAD_PLAN):
        return []
    return _kept(_DEFERRED, key, lambda: LoadPlan.model_validate(
        rt.artifacts.get_json(migration.migration_id, LOAD_PLAN)).deferred)


async def bind_deferred(rt: Runtime, migration: Migration, map_name: str, part: int, *,
                        bundle_id: str | None = None, sample: SampleScope | None = None) -> BatchInfo:
    """Second pass: write the lookups a dependency cycle held back (guarantor -> contact, for example).
    Rows come from the full bundle, or from `bundle_id` (a delta during cutover); `sample`: only the
    sample run's rows (progress under `sample-bind:`)."""
    spec = _approved(rt, migration).spec
    table_map = spec.table(map_name)
    navs = {d.nav for d in _deferred(rt, migration) if d.table == map_name}
    reader = _bundle(rt, migration)
    rows_reader = _bundle(rt, migration, bundle_id) if bundle_id else reader
    counts: dict[str, int] = {}
    async with dataverse_client(rt, migration) as client:
        context = await _context(rt, migration, client, reader, spec)

        def prepare(context: TransformContext) -> tuple[TransformContext, list[WriteRow]]:
            # Synchronous (blob reads, transforms): off the event loop, as in `load_batch`.
            current = _current_source(rt, migration, spec, bundle_id)
            if current is not None:
                context = dataclasses.replace(context, cache={}, parent_ids=current.parent_ids(
                    spec, _loaded_maps(spec), context.parent_ids))
            binds: list[WriteRow] = []
            for item in rows_reader.iter_part(table_map.source_table, part):
                if not isinstance(item, LoadedRow) or not table_map.selects(item.row.model_dump()):
                    continue
                row = item.row.model_dump()
                if sample is not None and not in_sample(table_map.source_table, row, sample):
                    continue
                payload, errors = transform_row(table_map, row, context)
                if any(e.fatal for e in errors):
                    continue
                _, later = split_deferred(payload, navs)
                if not later:
                    continue
                binds.append(WriteRow(source_id(table_map, row), later))
            return context, binds

        context, binds = await asyncio.to_thread(prepare, context)
        target = _target(spec, table_map, context, {})
        if binds:  # 200 updates per `$batch`, not one request per record
            report = await BulkWriter(client).update(target, binds)
            if report.failed:
                codes = sorted({o.error_code or "unknown" for o in report.outcomes if o.action == "failed"})
                raise DataverseRecordRejected(f"{report.failed} second-pass lookups of {map_name} were refused",
                                              dataverse_code=",".join(codes))
            counts["bound"] = len(binds)
    stage = f"bind:{map_name}/{part}" if not bundle_id else f"bind:{bundle_id}:{map_name}/{part}"
    if sample is not None:
        stage = f"sample-bind:{map_name}/{part}"
    await asyncio.to_thread(rt.migrations.record_progress, migration.migration_id, stage, "done", counts)
    return BatchInfo(table=map_name, part=part, counts=counts)
