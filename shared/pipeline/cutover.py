"""Cutover: the window after the full load in which the agent's delta bundles are applied in order, and
its close at go-live (or when it expires).

The window lives on the migration (`Migration.cutover`, shared/state/cutovers.py). A delta is applied
only when its `base_bundle_id` is the last applied bundle (the full bundle at first): the chain of bases
is the order, so a delta that arrives early waits, and one made from an older base is never applied
(its changes would be computed against rows the practice no longer has). A delta goes through
`plan_delta` (which seals its manifest), its batches (`load.load_batch(..., bundle_id=...)`), the second
pass, `apply_deletions` (per the migration's policy) and `commit_delta`, which writes the delta's report
and only then advances the watermark. Every step is idempotent, so a repeated timer tick or a replayed
orchestration changes nothing twice.

A deleted row of an update map (a patient's coverage row, a guardian link: columns another map's record
holds) never deletes or deactivates that record. Under `delete` and `deactivate` the columns the map wrote
are cleared (PATCHed to null, journaled `updated` with code `source_row_deleted`, origin and before-image
kept, so rollback still deletes a created record and restores a pre-existing one). Under `report` it is
listed like any other deletion. Whatever the policy, when another current row of the map still writes the
same record (a minor's second guardian), that row is written again instead (outcome `rewritten`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from pydantic import BaseModel, ConfigDict, Field

from shared.dentrix.manifest import MANIFEST_NAME, Manifest
from shared.errors import BundleRefused, DataverseRecordRejected, Fatal
from shared.mapping.graph import plan_loads
from shared.mapping.spec import MappingSpec, TableMap
from shared.pipeline import load
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.rollback import record_watermark
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.cutovers import (
    AppliedDelta,
    CutoverState,
    OpenCutovers,
    TCloseReason,
    TDeletionPolicy,
    TReconciliation,
)
from shared.state.journal import JournalEntry, now
from shared.state.migrations import Migration
from shared.state.upload_sas import bundle_container, seal_bundle

log = logging.getLogger("bridgework.cutover")

REPORTS = "cutover/deltas"
MIN_HOURS, MAX_HOURS, DEFAULT_HOURS = 24.0, 48.0, 48.0


class CutoverClosed(Fatal):
    """The cutover window of this migration is closed (go-live happened or it expired): no more deltas."""

    code = "cutover_closed"


class CutoverNotOpen(Fatal):
    """The migration has no open cutover window (or its full load is not done yet)."""

    code = "wrong_stage"


class DeltaOutOfOrder(Fatal):
    """A delta was asked to be applied whose base is not the last applied bundle."""

    code = "delta_out_of_order"


class CutoverRequest(BaseModel):
    """`POST /migrations/{id}/cutover`."""

    model_config = ConfigDict(extra="forbid")

    hours: float = Field(default=DEFAULT_HOURS, ge=MIN_HOURS, le=MAX_HOURS)
    """How long the window stays open for delta pickups (24 to 48 hours)."""
    deletions: TDeletionPolicy = "report"
    """Rows deleted at the practice: report them only, delete the records the migration created, or
    deactivate them."""
    tolerance: float | None = Field(default=None, ge=0, le=1)
    """Largest mismatch share per table map the go-live reconciliation accepts (default: the migration's, 0.005)."""
    diff_share: float = Field(default=1.0, gt=0, le=1)
    """Share of patients whose records the reconciliation diffs field by field (default all)."""
    auto_rollback: bool | None = None
    """Start the rollback by itself when the reconciliation is beyond the tolerance (default: recommend only)."""


# -- the migration record, updated safely ------------------------------------------------------------------


def mutate(rt: Runtime, tenant_id: str, migration_id: str, change: Callable[[Migration], None]) -> Migration:
    """Read, change and write a migration under its ETag, again on a conflict: the go-live request and
    the orchestration's watermark both write the record, and neither may undo the other."""
    from azure.core.exceptions import ResourceModifiedError

    table = rt.tables.get_table_client(f"{rt.settings.table_prefix}migrations")
    for _ in range(20):
        rt.migrations.get(tenant_id, migration_id)  # raises MigrationNotFound for another tenant's id
        entity = table.get_entity(tenant_id, migration_id)
        migration = Migration.model_validate_json(entity["Document"])
        change(migration)
        try:
            table.update_entity({"PartitionKey": tenant_id, "RowKey": migration_id,
                                 "Document": migration.model_dump_json()}, mode=UpdateMode.REPLACE,
                                etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            return migration
        except ResourceModifiedError:
            continue
    raise Fatal(f"migration {migration_id} kept changing under the cutover update; try again")


def _open_index(rt: Runtime) -> OpenCutovers:
    return OpenCutovers(rt.tables, rt.settings.table_prefix)


def open_cutover(rt: Runtime, migration: Migration, request: CutoverRequest, at: datetime) -> Migration:
    """Open the window (idempotent while it is open). Raises CutoverClosed once it closed."""

    def change(m: Migration) -> None:
        if m.cutover is not None:
            if m.cutover.status == "closed":
                raise CutoverClosed(f"the cutover of migration {m.migration_id} is closed "
                                    f"({m.cutover.closed_reason}); a new cutover cannot be opened")
            return
        m.cutover = CutoverState(opened_at=at, closes_at=at + timedelta(hours=request.hours), hours=request.hours,
                                 deletions=request.deletions, diff_share=request.diff_share,
                                 last_applied_bundle_id=str(m.bundle_id))
        if request.tolerance is not None:
            m.tolerance = request.tolerance
        if request.auto_rollback is not None:
            m.auto_rollback = request.auto_rollback
        m.stage = "cutover"

    updated = mutate(rt, migration.tenant_id, migration.migration_id, change)
    _open_index(rt).add(updated.tenant_id, updated.migration_id)
    return updated


class WindowInfo(BaseModel):
    opened_at: datetime
    closes_at: datetime
    status: str


def start_window(rt: Runtime, tenant_id: str, migration_id: str, at: datetime) -> WindowInfo:
    """Time the window by the orchestration's clock (the one its expiry timer runs on); once only."""

    def change(m: Migration) -> None:
        assert m.cutover is not None
        if not m.cutover.window_started:
            m.cutover.opened_at = at
            m.cutover.closes_at = at + timedelta(hours=m.cutover.hours)
            m.cutover.window_started = True

    m = mutate(rt, tenant_id, migration_id, change)
    assert m.cutover is not None
    return WindowInfo(opened_at=m.cutover.opened_at, closes_at=m.cutover.closes_at, status=m.cutover.status)


# -- which deltas are there, and in which order ---------------------------------------------------------------


class DeltaSeen(BaseModel):
    bundle_id: str
    base_bundle_id: str | None = None
    watermark: str | None = None
    reason: str | None = None
    """Why it is not applied (yet): waiting_for_base, base_superseded, forked, cutover_closed, manifest_invalid,
    bundle_refused (its parts, rows or files do not match its manifest: see `refusal_path`)."""


class PendingInfo(BaseModel):
    ready: list[str]
    """Uploaded deltas that apply now, in chain order."""
    waiting: list[DeltaSeen]
    refused: list[DeltaSeen]
    applied: list[str]
    go_live: bool
    status: str


def uploaded_deltas(rt: Runtime, migration: Migration) -> list[DeltaSeen]:
    """Every delta bundle whose manifest (the commit marker, uploaded last) is in the migration's container."""
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration.migration_id))
    out: list[DeltaSeen] = []
    for blob in container.list_blobs(name_starts_with=f"{migration.migration_id}/"):
        parts = blob.name.split("/")
        if len(parts) != 3 or parts[2] != MANIFEST_NAME or parts[1] == migration.bundle_id:
            continue
        try:
            data = json.loads(container.download_blob(blob.name).readall())
        except ValueError:
            out.append(DeltaSeen(bundle_id=parts[1], reason="manifest_invalid"))
            continue
        if not isinstance(data, dict) or data.get("kind") != "delta":
            continue  # a full bundle (or the reconciliation's view of the current source)
        if data.get("bundle_id") != parts[1]:
            out.append(DeltaSeen(bundle_id=parts[1], reason="manifest_invalid"))
            continue
        refused = rt.artifacts.exists(migration.migration_id, refusal_path(parts[1]))
        out.append(DeltaSeen(bundle_id=parts[1], base_bundle_id=data.get("base_bundle_id"),
                             watermark=data.get("watermark"), reason="bundle_refused" if refused else None))
    return sorted(out, key=lambda d: (d.watermark or "", d.bundle_id))


def pending_deltas(rt: Runtime, migration: Migration) -> PendingInfo:
    """The deltas that apply now, in the order of their base chain, and why the others wait."""
    state = migration.cutover
    if state is None:
        raise CutoverNotOpen(f"migration {migration.migration_id} has no cutover window")
    applied = state.applied_ids()
    seen = [d for d in uploaded_deltas(rt, migration) if d.bundle_id not in applied]
    if state.status == "closed":
        refused = [d if d.reason else d.model_copy(update={"reason": "cutover_closed"}) for d in seen]
        return PendingInfo(ready=[], waiting=[], refused=refused, applied=applied, go_live=False,
                           status="cutover_closed")
    ready: list[str] = []
    last = state.last_applied_bundle_id
    candidates = [d for d in seen if d.reason is None]
    while True:
        following = [d for d in candidates if d.base_bundle_id == last and d.bundle_id not in ready]
        if not following:
            break
        ready.append(following[0].bundle_id)  # the earliest watermark when two share a base
        last = following[0].bundle_id
    known = {state.last_applied_bundle_id, *applied, *ready, str(migration.bundle_id)}
    waiting: list[DeltaSeen] = []
    refused = [d for d in seen if d.reason is not None]
    for d in candidates:
        if d.bundle_id in ready:
            continue
        if d.base_bundle_id in ready or d.base_bundle_id == state.last_applied_bundle_id:
            reason = "forked"  # another delta of the same base came first: extract again from the newest
        elif d.base_bundle_id in known:
            reason = "base_superseded"
        else:
            reason = "waiting_for_base"
        waiting.append(d.model_copy(update={"reason": reason}))
    status = "applying" if ready else ("waiting_for_base" if waiting else "open")
    return PendingInfo(ready=ready, waiting=waiting, refused=refused, applied=applied,
                       go_live=state.go_live_requested, status=status)


def next_base(rt: Runtime, migration: Migration) -> str:
    """The bundle the agent's next delta must be extracted against: the newest of the chain (applied or ready)."""
    pending = pending_deltas(rt, migration)
    assert migration.cutover is not None
    return pending.ready[-1] if pending.ready else migration.cutover.last_applied_bundle_id


def due_for_pickup(rt: Runtime) -> list[tuple[str, str]]:
    """(tenant, migration) of open windows with a delta ready to apply, or a go-live to finish."""
    due: list[tuple[str, str]] = []
    for tenant_id, migration_id in _open_index(rt).list():
        try:
            migration = rt.migrations.get(tenant_id, migration_id)
        except Fatal:
            continue
        if migration.cutover is None or migration.cutover.status != "open":
            _open_index(rt).remove(migration_id)
            continue
        pending = pending_deltas(rt, migration)
        if pending.ready or pending.go_live:
            due.append((tenant_id, migration_id))
    return due


# -- applying one delta ---------------------------------------------------------------------------------------


class DeltaTable(BaseModel):
    table: str
    parts: int


class DeltaRefresh(BaseModel):
    """Rows of a map to write again although the delta does not carry them: parents whose children alone
    changed (a procedure added to an appointment: the appointment's CDT codes come from its children)."""

    table: str
    keys: list[str]
    """Source keys (ids, never values), at most REFRESH_CHUNK per entry."""


REFRESH_CHUNK = 200


class DeltaPlanInfo(BaseModel):
    bundle_id: str
    base_bundle_id: str
    waves: list[list[DeltaTable]]
    refresh: list[DeltaRefresh] = []
    deferred: list[DeltaTable]
    deleted_keys: int
    refused: str | None = None
    """The error code when the delta failed verification: nothing of it is applied."""
    attachment_parts: int = 0
    """Parts of the delta's document table: their files are copied like the full run's."""


def refusal_path(bundle_id: str) -> str:
    """The artifact recording why a delta was refused (codes and locations only, no row values)."""
    return f"cutover/refused/{bundle_id}.json"


def _changed_parts(manifest: Manifest, source_table: str) -> int:
    entry = next((t for t in manifest.tables if t.name == source_table), None)
    if entry is None or entry.rows == 0:
        return 0
    return len(entry.parts)


def plan_delta(rt: Runtime, migration: Migration, bundle_id: str) -> DeltaPlanInfo:
    """Check the delta is next in the chain, seal its manifest, and plan its batches (maps with changed rows)."""
    assert migration.cutover is not None
    reader = open_bundle(rt, migration, bundle_id)
    manifest = reader.manifest
    if manifest.kind != "delta" or manifest.base_bundle_id is None:
        raise DeltaOutOfOrder(f"bundle {bundle_id} is not a delta bundle", bundle_id=bundle_id)
    if bundle_id not in migration.cutover.applied_ids() and \
            manifest.base_bundle_id != migration.cutover.last_applied_bundle_id:
        raise DeltaOutOfOrder(f"delta {bundle_id} is based on {manifest.base_bundle_id}, but the last applied "
                              f"bundle is {migration.cutover.last_applied_bundle_id}", bundle_id=bundle_id)
    try:  # every part, row and file against the manifest before anything of it is loaded
        reader.verify(check_files=True)
    except BundleRefused as refused:
        log.warning("migration %s: delta %s refused (%s)", migration.migration_id, bundle_id, refused.code)
        rt.artifacts.put_json(migration.migration_id, refusal_path(bundle_id),
                              {"bundle_id": bundle_id, "code": refused.code, "message": str(refused)})
        return DeltaPlanInfo(bundle_id=bundle_id, base_bundle_id=manifest.base_bundle_id, waves=[], deferred=[],
                             deleted_keys=0, refused=refused.code)
    seal_bundle(rt.blobs, rt.settings.table_prefix, migration.migration_id, bundle_id)
    spec = approved_mapping(rt, migration).spec
    plan = plan_loads(spec)

    def item(name: str) -> DeltaTable:
        return DeltaTable(table=name, parts=_changed_parts(manifest, spec.table(name).source_table))

    waves = [[item(n) for n in wave if spec.table(n).action in ("upsert", "update")] for wave in plan.waves]
    waves = [[t for t in wave if t.parts] for wave in waves]
    deferred = [item(n) for n in sorted({d.table for d in plan.deferred})]
    deleted = sum(t.change_counts.deleted for t in manifest.tables if t.change_counts)
    documents = next((t for t in spec.enabled_tables() if t.action == "attachment"), None)
    return DeltaPlanInfo(bundle_id=bundle_id, base_bundle_id=manifest.base_bundle_id,
                         waves=[w for w in waves if w], refresh=_refresh(rt, migration, spec, reader),
                         deferred=[d for d in deferred if d.parts], deleted_keys=deleted,
                         attachment_parts=_changed_parts(manifest, documents.source_table) if documents else 0)


def _refresh(rt: Runtime, migration: Migration, spec: MappingSpec, reader: Any) -> list[DeltaRefresh]:
    """Parents (of maps that read child rows) whose children changed in this delta while they did not."""
    from shared.dentrix.reader import LoadedRow
    from shared.pipeline.overlay import CurrentSource

    assert migration.cutover is not None
    tables = {t.name for t in reader.manifest.tables}
    before: CurrentSource | None = None
    out: list[DeltaRefresh] = []
    for table_map in [t for t in spec.enabled_tables() if t.action == "upsert"]:
        parents: set[str] = set()
        for child_table, parent_column in sorted(load.child_tables_of(table_map)):
            if child_table not in tables:
                continue
            changes = list(reader.iter_changes(child_table))
            changed = {key for key, rule in changes if rule != "deleted"}
            gone = {key for key, rule in changes if rule == "deleted"}
            if changed:
                parents |= {str(item.row.model_dump().get(parent_column)) for item in reader.iter_table(child_table)
                            if isinstance(item, LoadedRow) and item.key in changed}
            if gone:  # their parent is in the rows before this delta
                before = before or CurrentSource(rt, migration, migration.cutover.applied_ids())
                rows = before.rows(child_table)
                parents |= {str(rows[key].get(parent_column)) for key in gone if key in rows}
        if not parents or table_map.source_table not in tables:
            continue
        carried = {item.key for item in reader.iter_table(table_map.source_table) if isinstance(item, LoadedRow)}
        alive = {key for key, _ in reader.iter_keys(table_map.source_table)}
        keys = sorted((parents - carried) & alive)
        out += [DeltaRefresh(table=table_map.name, keys=keys[i : i + REFRESH_CHUNK])
                for i in range(0, len(keys), REFRESH_CHUNK)]
    return out


class DeletedRecord(BaseModel):
    """A row deleted at the practice: ids only."""

    map: str
    source_id: str
    target_table: str | None = None
    target_id: str | None = None
    outcome: str
    """reported, deleted, already_gone, deactivated, kept_preexisting, not_migrated, no_state (cannot deactivate);
    update maps: cleared (its columns on the record set to null), rewritten (from the map's remaining row)."""
    source_key: str | None = None
    """The deleted row's own key where it differs from `source_id` (update maps: `source_id` is the record's)."""


class DeletionInfo(BaseModel):
    bundle_id: str
    policy: TDeletionPolicy
    counts: dict[str, dict[str, int]]
    """map -> outcome -> count."""
    records: list[DeletedRecord]


_ACTIVITY_TABLES = {"appointment", "phonecall", "task", "email", "letter", "fax"}
_NO_STATE_TABLES = {"annotation", "activityparty", "sharepointdocumentlocation"}


def _inactive(target_table: str) -> dict[str, int] | None:
    """The state a deactivated record gets: inactive for tables, canceled for activities, none for notes."""
    if target_table in _NO_STATE_TABLES:
        return None
    if target_table in _ACTIVITY_TABLES:
        return {"statecode": 2, "statuscode": 4}
    return {"statecode": 1, "statuscode": 2}


def _sid(table_map: TableMap, key: str) -> str:
    return f"{table_map.key.prefix}-{key}" if table_map.key.prefix else key


def _deleted_keys(rt: Runtime, migration: Migration, bundle_id: str) -> dict[str, list[str]]:
    reader = open_bundle(rt, migration, bundle_id)
    out: dict[str, list[str]] = {}
    for entry in reader.manifest.tables:
        if entry.change_counts and entry.change_counts.deleted:
            out[entry.name] = sorted(k for k, rule in reader.iter_changes(entry.name) if rule == "deleted")
    return out


def _deletion_order(spec: MappingSpec) -> list[TableMap]:
    """Upsert and update maps, children before parents (the load's waves reversed): an update map's columns
    are cleared before its parent's record may go."""
    waves = plan_loads(spec).waves
    ordered = [spec.table(n) for wave in reversed(waves) for n in sorted(wave)]
    return [t for t in ordered if t.action in ("upsert", "update")]


CLEARED = "source_row_deleted"
"""Journal code of an update map's record whose columns were cleared because its source row was deleted."""


def clearing_payload(table_map: TableMap) -> dict[str, None]:
    """What clears an update map's columns on its record: every field's column and every lookup's
    navigation property (`<nav>@odata.bind: null` disassociates) set to null."""
    out: dict[str, None] = {f.target: None for f in table_map.fields}
    out.update({f"{lookup.nav}@odata.bind": None for lookup in table_map.lookups})
    return out


class _UpdateMapRecords(BaseModel):
    """An update map's deleted rows grouped by the record they wrote (source id of the parent's record)."""

    deleted: dict[str, list[str]]
    """record source id -> deleted row keys."""
    remaining: dict[str, list[str]]
    """record source id -> keys of the map's current rows that still write it."""


def _update_map_records(table_map: TableMap, keys: list[str], before: Any, after: Any, context: Any
                        ) -> _UpdateMapRecords:
    """Which records the deleted rows of an update map wrote (read from the source before this delta: a
    deleted row is in no later bundle), and which current rows still write the same records."""
    from shared.mapping.rows import record_key

    rows_before = before.rows(table_map.source_table)
    deleted: dict[str, list[str]] = {}
    for key in keys:
        row = rows_before.get(key)
        if row is None or not table_map.selects(row):
            continue  # another map's slice of the table (a secondary coverage row for the primary map)
        sid = record_key(table_map, row, context)
        if sid:
            deleted.setdefault(sid, []).append(key)
    remaining: dict[str, list[str]] = {}
    if deleted:
        for key, row in after.rows(table_map.source_table).items():
            if table_map.selects(row) and (sid := record_key(table_map, row, context)) in deleted:
                remaining.setdefault(str(sid), []).append(key)
    return _UpdateMapRecords(deleted=deleted, remaining={k: sorted(v) for k, v in sorted(remaining.items())})


async def apply_deletions(rt: Runtime, migration: Migration, bundle_id: str) -> DeletionInfo:
    """Rows the delta lists as deleted, per the window's policy; safe to run twice (the journal says what
    this delta already did, and every write sets the same values again)."""
    from shared.pipeline.overlay import CurrentSource, chain_for

    assert migration.cutover is not None
    policy = migration.cutover.deletions
    spec = approved_mapping(rt, migration).spec
    deleted = _deleted_keys(rt, migration, bundle_id)
    counts: dict[str, dict[str, int]] = {}
    records: list[DeletedRecord] = []
    if not deleted:
        return DeletionInfo(bundle_id=bundle_id, policy=policy, counts={}, records=[])
    batch = f"{bundle_id}:deletions"
    chain = chain_for(migration, bundle_id)
    sources: dict[str, Any] = {}

    def source(which: str) -> Any:  # read only when an update map lost rows
        if which not in sources:
            sources[which] = CurrentSource(rt, migration, chain[:-1] if which == "before" else chain)
        return sources[which]

    rewrite: dict[str, list[str]] = {}
    """update map -> current row keys to write again (their record lost another row of the map)."""
    reader = open_bundle(rt, migration)
    async with dataverse_client(rt, migration) as client:
        context = await load._context(rt, migration, client, reader, spec)
        for table_map in _deletion_order(spec):
            keys = deleted.get(table_map.source_table)
            if not keys:
                continue
            target = load._target(spec, table_map, context, {})
            grouped = (_update_map_records(table_map, keys, source("before"), source("after"), context)
                       if table_map.action == "update" else None)
            wanted = set(grouped.deleted) if grouped else {_sid(table_map, k) for k in keys}
            journaled = {e.source_id: e for e in rt.journal.entries(migration.migration_id, table_map.name)
                         if e.source_id in wanted}
            entries: list[JournalEntry] = []
            for sid in sorted(wanted):
                entry = journaled.get(sid)
                if grouped is None:
                    outcome = await _delete_one(client, target, policy, entry, sid, batch)
                elif grouped.remaining.get(sid) and entry is not None \
                        and entry.action not in ("quarantined", "skipped", "failed"):
                    # Whatever the policy: the record then holds the practice's current row (nothing is
                    # deleted), as it would had that row changed in this delta.
                    outcome = "rewritten"
                    rewrite.setdefault(table_map.name, []).extend(grouped.remaining[sid])
                else:
                    outcome = await _clear_one(client, target, table_map, policy, entry, sid, batch)
                counts.setdefault(table_map.name, {})
                counts[table_map.name][outcome] = counts[table_map.name].get(outcome, 0) + 1
                records.append(DeletedRecord(
                    map=table_map.name, source_id=sid, target_table=table_map.target_table,
                    target_id=entry.target_id if entry else None, outcome=outcome,
                    source_key=",".join(grouped.deleted[sid]) if grouped else None))
                if entry is None or entry.batch == batch:
                    continue  # this delta's deletions already journaled it (a retried activity)
                if outcome in ("deleted", "already_gone", "deactivated"):
                    entries.append(dataclasses.replace(
                        entry, action="deleted" if outcome != "deactivated" else "updated",
                        batch=batch, at=now(), code=f"source_deleted:{outcome}",
                        reason="deleted at the practice during cutover"))
                elif outcome == "cleared":
                    # Origin, target id and before-image stay: rollback deletes a created record with its
                    # own map and gives a pre-existing one its image back, the cleared columns included.
                    entries.append(dataclasses.replace(
                        entry, action="updated", batch=batch, at=now(), code=CLEARED,
                        reason="source row deleted at the practice during cutover: the map's columns cleared"))
            rt.journal.record(entries)
    for name, row_keys in sorted(rewrite.items()):  # after the client above is closed: the load opens its own
        await load.load_batch(rt, migration, name, 0, bundle_id=bundle_id, keys=sorted(set(row_keys)))
    info = DeletionInfo(bundle_id=bundle_id, policy=policy, counts=counts, records=records)
    rt.artifacts.put_json(migration.migration_id, f"{REPORTS}/{bundle_id}/deletions.json", info)
    return info


def _done_by(entry: JournalEntry, batch: str | None) -> bool:
    return batch is not None and entry.batch == batch


async def _delete_one(client: Any, target: Any, policy: TDeletionPolicy, entry: JournalEntry | None, sid: str,
                      batch: str | None = None) -> str:
    """One record of an upsert map. `batch`: this delta's deletions batch (a repeat reports what it did)."""
    if entry is None or entry.action in ("quarantined", "skipped", "failed"):
        return "not_migrated"
    if policy == "report":
        return "reported"
    if entry.action == "deleted":
        return "deleted" if _done_by(entry, batch) and entry.code == "source_deleted:deleted" else "already_gone"
    if entry.origin != "created":
        return "kept_preexisting"  # a record that was there before the migration is the practice's to remove
    if _done_by(entry, batch) and entry.code == "source_deleted:deactivated":
        return "deactivated"
    key: dict[str, Any] | str = entry.target_id or {target.key_column: sid}
    if policy == "delete":
        return "deleted" if await client.delete(target.entity_set, key) else "already_gone"
    state = _inactive(target.logical_name)
    if state is None:
        return "no_state"
    await client.update(target.entity_set, key, state)
    return "deactivated"


async def _clear_one(client: Any, target: Any, table_map: TableMap, policy: TDeletionPolicy,
                     entry: JournalEntry | None, sid: str, batch: str | None = None) -> str:
    """One record an update map wrote into, its rows all deleted: `delete` and `deactivate` both clear the
    map's columns (the record belongs to another map and stays); `report` lists it."""
    if entry is None or entry.action in ("quarantined", "skipped", "failed"):
        return "not_migrated"
    if policy == "report":
        return "reported"
    if entry.action == "deleted":
        return "already_gone"
    if entry.code == CLEARED:
        return "cleared" if _done_by(entry, batch) else "already_cleared"
    key: dict[str, Any] | str = entry.target_id or {target.key_column: sid}
    try:
        await client.update(target.entity_set, key, clearing_payload(table_map))
    except DataverseRecordRejected as exc:
        if exc.attrs.get("status") == 404:
            return "already_gone"  # the record itself was removed (by its own map, or by someone)
        raise
    return "cleared"


class DeltaReport(BaseModel):
    """What one delta did, per table map: upserts by outcome, deletions by outcome."""

    bundle_id: str
    base_bundle_id: str
    watermark: str
    applied_at: datetime
    deletions_policy: TDeletionPolicy
    tables: dict[str, dict[str, int]]
    """map -> {created, updated, unchanged, quarantined, failed, upserted, deleted, deactivated, reported_deletions,
    cleared, rewritten (update maps), ...}."""
    reported_deletions: list[DeletedRecord]


def commit_delta(rt: Runtime, migration: Migration, bundle_id: str, counts: dict[str, dict[str, int]]) -> DeltaReport:
    """Write the delta's report, then advance the watermark past it (once: a repeat returns the report)."""
    assert migration.cutover is not None
    path = f"{REPORTS}/{bundle_id}/report.json"
    if bundle_id in migration.cutover.applied_ids():
        return DeltaReport.model_validate(rt.artifacts.get_json(migration.migration_id, path))
    manifest = open_bundle(rt, migration, bundle_id).manifest
    deletions_path = f"{REPORTS}/{bundle_id}/deletions.json"
    deletions = (DeletionInfo.model_validate(rt.artifacts.get_json(migration.migration_id, deletions_path))
                 if rt.artifacts.exists(migration.migration_id, deletions_path) else None)
    tables: dict[str, dict[str, int]] = {}
    for name, by_action in counts.items():
        row = tables.setdefault(name, {})
        row.update(by_action)
        row["upserted"] = sum(by_action.get(a, 0) for a in ("created", "updated", "unchanged"))
    renamed = {"reported": "reported_deletions"}
    for name, by_outcome in (deletions.counts if deletions else {}).items():
        row = tables.setdefault(name, {})
        for outcome, n in by_outcome.items():
            row[renamed.get(outcome, outcome)] = row.get(renamed.get(outcome, outcome), 0) + n
    report = DeltaReport(bundle_id=bundle_id, base_bundle_id=str(manifest.base_bundle_id),
                         watermark=manifest.watermark, applied_at=now(),
                         deletions_policy=migration.cutover.deletions, tables=dict(sorted(tables.items())),
                         reported_deletions=[r for r in (deletions.records if deletions else [])
                                             if r.outcome == "reported"])
    rt.artifacts.put_json(migration.migration_id, path, report)
    # The delta's writes are the migration's own: the rollback's edit mark (the highest row version after
    # the migration's last write) moves past them, or a rollback would keep every record a delta touched
    # as edited by someone else. Before the watermark below, so a delta never counts as applied without it.
    record_watermark(rt, migration)

    def change(m: Migration) -> None:
        assert m.cutover is not None
        if bundle_id in m.cutover.applied_ids():
            return
        if manifest.base_bundle_id != m.cutover.last_applied_bundle_id:
            raise DeltaOutOfOrder(f"delta {bundle_id} does not follow {m.cutover.last_applied_bundle_id}",
                                  bundle_id=bundle_id)
        m.cutover.applied.append(AppliedDelta(bundle_id=bundle_id, base_bundle_id=str(manifest.base_bundle_id),
                                              watermark=manifest.watermark, applied_at=report.applied_at,
                                              report=path))
        m.cutover.last_applied_bundle_id = bundle_id
        m.cutover.watermark = manifest.watermark

    mutate(rt, migration.tenant_id, migration.migration_id, change)
    log.info("migration %s: delta %s applied (%d maps)", migration.migration_id, bundle_id, len(tables))
    return report


# -- closing ---------------------------------------------------------------------------------------------------


def request_go_live(rt: Runtime, migration: Migration) -> Migration:
    """Mark the window for go-live (the orchestration applies what is pending, then closes it)."""

    def change(m: Migration) -> None:
        if m.cutover is None:
            raise CutoverNotOpen(f"migration {m.migration_id} has no cutover window: open it first")
        if m.cutover.status == "closed":
            raise CutoverClosed(f"the cutover of migration {m.migration_id} is already closed "
                                f"({m.cutover.closed_reason})")
        m.cutover.go_live_requested = True

    return mutate(rt, migration.tenant_id, migration.migration_id, change)


def close_cutover(rt: Runtime, tenant_id: str, migration_id: str, reason: TCloseReason, at: datetime) -> Migration:
    """Close the window (idempotent): no delta is applied or accepted after this."""

    def change(m: Migration) -> None:
        assert m.cutover is not None
        if m.cutover.status == "closed":
            return
        m.cutover.status = "closed"
        m.cutover.closed_reason = reason
        m.cutover.closed_at = at

    migration = mutate(rt, tenant_id, migration_id, change)
    _open_index(rt).remove(migration_id)
    return migration


def record_verdict(rt: Runtime, tenant_id: str, migration_id: str, verdict: TReconciliation) -> Migration:
    def change(m: Migration) -> None:
        if m.cutover is not None:
            m.cutover.reconciliation = verdict
        m.stage = "completed" if verdict == "completed" else "rollback_recommended"

    return mutate(rt, tenant_id, migration_id, change)


# -- status ----------------------------------------------------------------------------------------------------


class CutoverStatus(BaseModel):
    """`GET /migrations/{id}/cutover`: the window, what was applied, what waits and why."""

    migration_id: str
    stage: str
    cutover: CutoverState | None
    status: Literal["not_open", "open", "applying", "waiting_for_base", "cutover_closed"]
    next_base_bundle_id: str | None
    ready: list[str]
    waiting: list[DeltaSeen]
    refused: list[DeltaSeen]
    reports: list[DeltaReport]


def cutover_status(rt: Runtime, migration: Migration) -> CutoverStatus:
    if migration.cutover is None:
        return CutoverStatus(migration_id=migration.migration_id, stage=migration.stage, cutover=None,
                             status="not_open", next_base_bundle_id=None, ready=[], waiting=[], refused=[], reports=[])
    pending = pending_deltas(rt, migration)
    reports = [DeltaReport.model_validate(rt.artifacts.get_json(migration.migration_id, d.report))
               for d in migration.cutover.applied]
    closed = migration.cutover.status == "closed"
    return CutoverStatus(migration_id=migration.migration_id, stage=migration.stage, cutover=migration.cutover,
                         status="cutover_closed" if closed else pending.status,  # type: ignore[arg-type]
                         next_base_bundle_id=None if closed else next_base(rt, migration),
                         ready=pending.ready, waiting=pending.waiting, refused=pending.refused, reports=reports)
