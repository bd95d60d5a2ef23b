"""The compensating rollback: undo what a migration wrote, reading only its journal.

Steps (the orchestrator runs them in this order, one activity each, see `plan_rollback`):
  1. attachment maps: SharePoint files the migration uploaded (journal target_table "sharepoint",
     target_id = Graph item id, code = the contact's document location id), the contact folders they
     leave empty, those document locations; notes (target_table "annotation") are plain deletes;
  2. record maps in the load's dependency order turned around (children before parents): records the
     migration created (origin "created") are deleted; pre-existing records it updated (origin
     "preexisting", matched by shared/pipeline/preexisting.py) get their before-image written back, in
     one write with the images of the update maps that also wrote into them;
  3. with `remove_schema`: `remove_schema` deletes what the schema journal says the build created;
  4. `verify_rollback`: every journaled created record is gone unless it was deliberately kept.
After each chunk, the journal rows move to action "deleted" / "restored", so a rollback killed halfway
and run again carries on where it stopped and touches nothing twice.

Edited records: at the end of a migration `record_watermark` keeps the highest `versionnumber` of
the tables it wrote (Dataverse's row version, monotonic across the environment). A record whose
versionnumber is above it was changed by someone after the migration's last write: by default it is
not touched and is listed in the report; `override_edited` deletes / restores it anyway. We chose
versionnumber over `modifiedon` because it does not depend on two clocks agreeing, and the
migration's own later writes (second-pass lookups, closing appointments) all happen before the mark.
SharePoint files have no row version: the attachment step keeps each uploaded driveItem's stamp
(eTag, cTag, lastModifiedDateTime, size, content hashes; shared/pipeline/file_stamps.py) and a file
that no longer matches it is kept and listed the same way (`edited_after_upload`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.connections import target_credential
from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.schema import COMPONENT_KINDS, delete_component, read_component, read_table
from shared.errors import DataverseRecordRejected, MappingNotApproved, SharePointRequestFailed
from shared.mapping.graph import plan_loads
from shared.mapping.spec import MappingSpec
from shared.pipeline.file_stamps import edited, load_stamps
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.preexisting import load_image, lookup_attribute
from shared.pipeline.readback import in_filters
from shared.pipeline.schema import created_components
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.sharepoint.client import GraphClient, GraphConfig
from shared.sharepoint.locations import LOCATION_NAMESPACE
from shared.state.journal import JournalEntry, now
from shared.state.migrations import Migration

log = logging.getLogger("bridgework.rollback")

WATERMARK = "rollback/watermark.json"
REPORT = "rollback/report.json"
SCHEMA_REMOVAL = "rollback/schema.json"
FOLDERS = "rollback/folders.json"
LIBRARY_FOLDER = "contact"
"""The library folder shared/pipeline/attachments.py puts contact folders in (and its location's relative URL)."""
SHAREPOINT = "sharepoint"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
CHUNK = 50
"""Records undone between two journal writes: the most a killed rollback repeats (harmlessly)."""
IN_FLIGHT = 8


class RollbackPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override_edited: bool = False
    """Also delete / restore records someone changed after the migration wrote them (default: keep, list)."""
    remove_schema: bool = False
    """After the records: delete the tables, columns, keys, relationships and choices the migration's
    schema build created (its schema journal), those still holding someone's data excepted."""


class RollbackPlanInfo(BaseModel):
    steps: list[list[str]]
    """Groups of journal tables (map names), undone group after group; the tables of one group have no
    lookup between them (one load wave) and may be undone at the same time."""
    records: int
    """Journal rows with something to undo (created or pre-existing, not yet undone)."""


class KeptRecord(BaseModel):
    table: str
    source_id: str
    target_table: str | None
    target_id: str | None
    reason: str
    """`edited_after_migration`, `edited_after_upload` (a SharePoint file) or `no_before_image`."""


class StepInfo(BaseModel):
    table: str
    counts: dict[str, int]
    kept: list[KeptRecord] = Field(default_factory=list)


class RollbackReport(BaseModel):
    migration_id: str
    steps: list[StepInfo]
    kept: list[KeptRecord]
    remaining: list[KeptRecord]
    """Journaled created records still in the destination that were not deliberately kept (should be empty)."""
    verified: bool
    watermark: int | None
    schema_removed: list[str] = Field(default_factory=list)
    """Schema components (`kind:name`) the rollback deleted under `remove_schema`."""
    schema_kept: dict[str, str] = Field(default_factory=dict)
    """Components the migration created that stay (still holding data), with the reason."""


# -- the watermark, written at the end of the migration ---------------------------------------------------


async def _watermark(rt: Runtime, migration: Migration, tables: Iterable[str] | None) -> int | None:
    if tables is None:
        tables = {str(e.target_table) for e in rt.journal.entries(migration.migration_id) if written_record(e)}
    highest: int | None = None
    async with dataverse_client(rt, migration) as client:
        for table in sorted(tables):
            info = await read_table(client, table)
            if info is None:
                continue
            rows = await client.query_all(info.entity_set_name, select=["versionnumber"], top=1,
                                          extra={"$orderby": "versionnumber desc"})
            for row in rows:
                if row.get("versionnumber") is not None:
                    highest = max(highest or 0, int(row["versionnumber"]))
    return highest


def written_record(entry: JournalEntry) -> bool:
    """Whether the entry names a Dataverse record the migration wrote (a table the watermark reads)."""
    return bool(entry.target_table and entry.target_table != SHAREPOINT and entry.target_id)


def record_watermark(rt: Runtime, migration: Migration, tables: Iterable[str] | None = None) -> int | None:
    """Keep the highest row version of the written tables (callable from sync code, loop or not).
    `tables`: the Dataverse tables the journal names (`written_record`) when the caller has just read
    it; otherwise the journal is read for them."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        mark = pool.submit(asyncio.run, _watermark(rt, migration, tables)).result()
    rt.artifacts.put_json(migration.migration_id, WATERMARK, {"versionnumber": mark})
    return mark


def _stored_watermark(rt: Runtime, migration_id: str) -> int | None:
    if not rt.artifacts.exists(migration_id, WATERMARK):
        return None
    value = rt.artifacts.get_json(migration_id, WATERMARK).get("versionnumber")
    return int(value) if value is not None else None


# -- plan ----------------------------------------------------------------------------------------------------


def _to_undo(entry: JournalEntry) -> bool:
    if entry.action in ("deleted", "restored"):
        return False
    # A created row may lack its id (a re-run journals closed appointments as unchanged): deleted by key.
    return entry.origin == "created" or (entry.origin == "preexisting" and bool(entry.target_id))


def _deletion_groups(spec: MappingSpec) -> list[list[str]]:
    """The load's dependencies turned around: groups of maps, each group's records pointing at none
    left in later groups. An update map writes into its key parent's records (insurance fields on the
    patient's contact), so its lookups count as the parent's: the carrier goes after the contacts."""
    plan = plan_loads(spec)
    names = [name for wave in plan.waves for name in wave]

    def owner(name: str) -> str:
        table_map = spec.table(name)
        return table_map.key.parent if table_map.action == "update" and table_map.key.parent else name

    children: dict[str, set[str]] = {name: set() for name in names}  # parent -> maps pointing at it
    for child, parent in plan.edges:
        if owner(child) != parent and parent in children:
            children[parent].add(owner(child))
    groups: list[list[str]] = []
    left = set(names)
    while left:
        ready = sorted(n for n in left if not (children[n] & left))
        if not ready:  # a cycle the load broke with a second pass: the rest goes together
            ready = sorted(left)
        groups.append(ready)
        left -= set(ready)
    return groups


def plan_rollback(rt: Runtime, migration: Migration) -> RollbackPlanInfo:
    """Attachment maps first, then the load waves reversed, then any other journaled map."""
    spec = approved_mapping(rt, migration).spec
    journaled: dict[str, int] = {}
    for entry in rt.journal.entries(migration.migration_id):
        journaled.setdefault(entry.table, 0)
        if _to_undo(entry):
            journaled[entry.table] += 1
    attachments = sorted(t.name for t in spec.enabled_tables() if t.action == "attachment")
    waves = _deletion_groups(spec)
    ordered = {name for group in [attachments, *waves] for name in group}
    # A map outside the waves (none today) goes first: whatever points at it has to go before it anyway.
    others = sorted(t for t in journaled if t not in ordered)
    groups = [[name for name in group if name in journaled] for group in [others, attachments, *waves]]
    return RollbackPlanInfo(steps=[group for group in groups if group], records=sum(journaled.values()))


# -- one step ------------------------------------------------------------------------------------------------


async def _edited_ids(client: DataverseClient, entity_set: str, primary: str, mark: int | None) -> set[str]:
    if mark is None:
        return set()
    rows = await client.query_all(entity_set, select=[primary], filter=f"versionnumber gt {odata_literal(mark)}")
    return {str(row[primary]).lower() for row in rows if row.get(primary)}


async def _bounded(jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


def _moved(entry: JournalEntry, action: str) -> JournalEntry:
    return dataclasses.replace(entry, action=action, at=now())


def _kept(entry: JournalEntry, reason: str) -> KeptRecord:
    return KeptRecord(table=entry.table, source_id=entry.source_id, target_table=entry.target_table,
                      target_id=entry.target_id, reason=reason)


def _fold_plan(rt: Runtime, migration: Migration, table: str) -> tuple[bool, dict[str, list[JournalEntry]]]:
    """A pre-existing record an update map also wrote (insurance columns on a matched contact) is given
    back in one write with its own map's image: two restores would each raise its row version, and the
    second would take the first for someone else's edit. So an update map leaves its pre-existing rows
    to its parent map's step (True: drop them here), which gets them here (source id -> the update maps'
    rows). Read once per step, when its first pre-existing row comes by."""
    try:
        spec = approved_mapping(rt, migration).spec
    except MappingNotApproved:  # a journal written without a map (tests, hand repairs): nothing to fold
        return False, {}
    names = {t.name: t for t in spec.tables}
    this = names.get(table)
    if this is not None and this.action == "update":
        return True, {}
    children: dict[str, list[JournalEntry]] = {}
    for child in sorted(n for n, t in names.items() if t.action == "update" and t.key.parent == table):
        for entry in rt.journal.entries(migration.migration_id, child):
            if entry.origin == "preexisting" and entry.before_image and _to_undo(entry):
                children.setdefault(entry.source_id, []).append(entry)
    return False, children


PIECE = 5_000
"""Journal entries a step undoes (or the check looks up) at a time: a map's journal streams through, never
held whole (the 1M-record bench's proc_log alone has 601,156 rows)."""


def _pieces(entries: Iterable[JournalEntry], size: int) -> Iterator[list[JournalEntry]]:
    """Lists of up to `size` entries, in order (itertools.batched is Python 3.12)."""
    stream = iter(entries)
    while piece := list(itertools.islice(stream, size)):
        yield piece


async def rollback_table(rt: Runtime, migration: Migration, table: str, policy: RollbackPolicy) -> StepInfo:
    """Undo one journal table's records; safe to run again (undone rows are skipped). Records go a piece
    of the journal at a time (`PIECE`); an attachment map's files together, as its folders and
    locations are tidied after them, and even when every file is undone already (an interrupted attempt)."""
    counts: dict[str, int] = {}
    kept: list[KeptRecord] = []
    files: list[JournalEntry] | None = None
    fold: tuple[bool, dict[str, list[JournalEntry]]] | None = None
    targets: dict[str, tuple[Any, set[str]]] = {}
    async with dataverse_client(rt, migration) as client:
        for piece in _pieces(rt.journal.entries(migration.migration_id, table), PIECE):
            if files is not None or any(e.target_table == SHAREPOINT for e in piece):
                files = [*(files or []), *(e for e in piece if _to_undo(e))]
                continue
            entries = [e for e in piece if _to_undo(e)]
            if any(e.origin == "preexisting" for e in entries):
                fold = fold or _fold_plan(rt, migration, table)
                entries = [e for e in entries if e.origin != "preexisting"] if fold[0] else entries
            if entries:
                await _undo_records(rt, migration, client, entries, policy, counts, kept,
                                    fold[1] if fold else None, targets)
        if files is not None:
            await _undo_files(rt, migration, client, files, counts, policy, kept)
    info = StepInfo(table=table, counts=counts, kept=kept)
    rt.artifacts.put_json(migration.migration_id, f"rollback/steps/{table}.json", info)
    rt.migrations.record_progress(migration.migration_id, f"rollback:{table}", "done", counts)
    log.info("migration %s: rollback of %s (%s)", migration.migration_id, table,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return info


async def _undo_records(rt: Runtime, migration: Migration, client: DataverseClient, entries: list[JournalEntry],
                        policy: RollbackPolicy, counts: dict[str, int], kept: list[KeptRecord],
                        folded: dict[str, list[JournalEntry]] | None = None,
                        targets: dict[str, tuple[Any, set[str]]] | None = None) -> None:
    """`targets` keeps each target table's metadata and edited ids for the step's next piece."""
    folded = folded or {}
    targets = {} if targets is None else targets
    mark = _stored_watermark(rt, migration.migration_id)
    # Only an id-less created row needs the key column (and so the approved map).
    key_column = (approved_mapping(rt, migration).spec.source_id_column
                  if any(not e.target_id for e in entries) else "")
    by_table: dict[str, list[JournalEntry]] = {}
    for entry in entries:
        by_table.setdefault(str(entry.target_table), []).append(entry)
    for target_table, rows in sorted(by_table.items()):
        if target_table not in targets:
            info = await read_table(client, target_table)
            targets[target_table] = info, (set() if info is None or policy.override_edited else await _edited_ids(
                client, info.entity_set_name, info.primary_id_attribute, mark))
        info, edited = targets[target_table]
        if info is None:  # the table itself is gone: so are its records
            rt.journal.record([_moved(e, "deleted") for e in rows if e.origin == "created"])
            counts["already_gone"] = counts.get("already_gone", 0) + len(rows)
            continue
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            jobs: list[Callable[[], Awaitable[Any]]] = []
            for entry in chunk:
                if str(entry.target_id).lower() in edited and entry.origin == "preexisting" and entry.before_image \
                        and await _holds_image(rt, migration, client, info.entity_set_name,
                                               info.primary_id_attribute, entry, folded.get(entry.source_id, [])):
                    # Restored by an attempt killed before its journal write (the restore raised the row
                    # version above the mark): already as it was, nothing to do but record it.
                    jobs.append(_already_restored(entry))
                elif str(entry.target_id).lower() in edited:
                    kept.append(_kept(entry, "edited_after_migration"))
                    counts["kept_edited"] = counts.get("kept_edited", 0) + 1
                elif entry.origin == "created":
                    jobs.append(_delete_job(client, info.entity_set_name, entry, key_column))
                elif entry.before_image:
                    jobs.append(_restore_job(rt, client, info.entity_set_name, entry,
                                             folded.get(entry.source_id, [])))
                else:
                    kept.append(_kept(entry, "no_before_image"))
                    counts["kept_no_before_image"] = counts.get("kept_no_before_image", 0) + 1
            done: list[tuple[JournalEntry, str]] = await _bounded(jobs)
            for _, outcome in done:
                counts[outcome] = counts.get(outcome, 0) + 1
            # The update maps' rows first: a rollback killed in between redoes the parent's restore only.
            rt.journal.record([_moved(extra, "restored") for entry, outcome in done if outcome == "restored"
                               for extra in folded.get(entry.source_id, [])]
                              + [_moved(entry, "restored" if outcome == "restored" else "deleted")
                                 for entry, outcome in done])


def _delete_job(client: DataverseClient, entity_set: str, entry: JournalEntry, key_column: str
                ) -> Callable[[], Awaitable[tuple[JournalEntry, str]]]:
    async def job() -> tuple[JournalEntry, str]:
        key: dict[str, Any] | str = entry.target_id or {key_column: entry.source_id}
        existed = await client.delete(entity_set, key)
        return entry, "deleted" if existed else "already_gone"

    return job


def _merged_image(rt: Runtime, entry: JournalEntry, extras: list[JournalEntry]) -> dict[str, Any]:
    image: dict[str, Any] = {}
    for extra in extras:  # the update maps' columns; the record's own map wrote first, its values win
        image.update(load_image(rt, entry.migration_id, str(extra.before_image)))
    image.update(load_image(rt, entry.migration_id, str(entry.before_image)))
    return image


async def _holds_image(rt: Runtime, migration: Migration, client: DataverseClient, entity_set: str, primary: str,
                       entry: JournalEntry, extras: list[JournalEntry]) -> bool:
    """Whether the record holds exactly its before-image now (lookups compared by id)."""
    image = _merged_image(rt, entry, extras)
    prefix = approved_mapping(rt, migration).spec.publisher_prefix \
        if any(k.endswith("@odata.bind") for k in image) else ""
    wanted: dict[str, Any] = {}  # column as read -> value it must hold (lookups: the id, lower case)
    for column, value in image.items():
        if column.endswith("@odata.bind"):
            read_as = f"_{lookup_attribute(column[: -len('@odata.bind')], prefix)}_value"
            wanted[read_as] = str(value).rsplit("(", 1)[1].rstrip(")").lower() if value else None
        else:
            wanted[column] = value
    row = await client.get(entity_set, str(entry.target_id), select=sorted({primary, *wanted}))
    if row is None:
        return False

    def held(column: str) -> Any:
        value = row.get(column)
        return str(value).lower() if value is not None and column.startswith("_") else value

    return all(held(column) == value for column, value in wanted.items())


def _already_restored(entry: JournalEntry) -> Callable[[], Awaitable[tuple[JournalEntry, str]]]:
    async def job() -> tuple[JournalEntry, str]:
        return entry, "restored"

    return job


def _restore_job(rt: Runtime, client: DataverseClient, entity_set: str, entry: JournalEntry,
                 extras: list[JournalEntry] | None = None) -> Callable[[], Awaitable[tuple[JournalEntry, str]]]:
    async def job() -> tuple[JournalEntry, str]:
        image = _merged_image(rt, entry, extras or [])
        await client.update(entity_set, str(entry.target_id), image)
        return entry, "restored"

    return job


# -- SharePoint --------------------------------------------------------------------------------------------


def _graph(rt: Runtime, migration: Migration) -> GraphClient:
    credential = target_credential(rt.settings, migration.target.tenant_id,
                                   (migration.target.application_users or [None])[0])
    root = migration.target.graph_url.rsplit("/", 1)[0]
    return GraphClient(GraphConfig(graph_url=root, scope=GRAPH_SCOPE), credential)


async def _graph_delete(graph: GraphClient, url: str) -> bool:
    try:
        await graph.request("DELETE", url, what="delete item")
    except SharePointRequestFailed as exc:
        if exc.attrs.get("status") == 404:
            return False
        raise
    return True


async def _children(graph: GraphClient, drive_id: str, item_id: str) -> list[dict[str, Any]]:
    body = await graph.get_or_none(f"drives/{drive_id}/items/{item_id}/children")
    return list((body or {}).get("value", []))


async def _undo_files(rt: Runtime, migration: Migration, client: DataverseClient, entries: list[JournalEntry],
                      counts: dict[str, int], policy: RollbackPolicy | None = None,
                      kept: list[KeptRecord] | None = None) -> None:
    """Files, then the contact folders and document locations they leave without files, then the
    library location and site records Bridgework made when no other location still uses them.
    A file someone changed after the upload (its driveItem no longer matches the stamp the attachment
    step kept, see file_stamps.py) stays with its folder and location, and is listed like an edited
    record, unless the policy overrides."""
    policy = policy or RollbackPolicy()
    kept = kept if kept is not None else []
    stamps: dict[str, dict[str, dict[str, Any]]] = {}
    site = migration.target.sharepoint_site or ""
    async with _graph(rt, migration) as graph:
        site_info = await graph.get_json(f"sites/{site}")
        drive = await graph.get_drive(site_info["id"], "Documents")
        drive_id = drive["id"]
        # The files' folders, kept in Blob before the files go: a resumed attempt still knows them.
        folders: set[str] = set(rt.artifacts.get_json(migration.migration_id, FOLDERS)
                                if rt.artifacts.exists(migration.migration_id, FOLDERS) else [])
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start : start + CHUNK]
            items = {e.target_id: await graph.get_or_none(f"drives/{drive_id}/items/{e.target_id}") for e in chunk}
            parents = {str((item.get("parentReference") or {}).get("id")) for item in items.values()
                       if item is not None and (item.get("parentReference") or {}).get("id")}
            if not parents <= folders:
                folders |= parents
                rt.artifacts.put_json(migration.migration_id, FOLDERS, sorted(folders))
            keep: set[str] = set()
            for entry in chunk:
                item = items[entry.target_id]
                if entry.batch not in stamps:
                    stamps[entry.batch] = load_stamps(rt, migration.migration_id, entry.batch)
                recorded = stamps[entry.batch].get(str(entry.target_id))
                if item is not None and recorded and not policy.override_edited and edited(recorded, item):
                    keep.add(str(entry.target_id))
                    kept.append(_kept(entry, "edited_after_upload"))
                    counts["kept_edited_files"] = counts.get("kept_edited_files", 0) + 1
                    continue
                if item is not None:
                    await _graph_delete(graph, f"drives/{drive_id}/items/{entry.target_id}")
                    counts["files_deleted"] = counts.get("files_deleted", 0) + 1
                else:
                    counts["already_gone"] = counts.get("already_gone", 0) + 1
                if entry.code:
                    # The location regarding the contact: the contact's folder pointer (shared by its files).
                    if await client.delete("sharepointdocumentlocations", entry.code):
                        counts["locations_deleted"] = counts.get("locations_deleted", 0) + 1
            rt.journal.record([_moved(entry, "deleted") for entry in chunk if str(entry.target_id) not in keep])
        for folder_id in sorted(folders):
            folder = await graph.get_or_none(f"drives/{drive_id}/items/{folder_id}")
            if folder is None or await _children(graph, drive_id, folder_id):
                continue  # gone already, or somebody else's files are in it: it stays
            await _graph_delete(graph, f"drives/{drive_id}/items/{folder_id}")
            counts["folders_deleted"] = counts.get("folders_deleted", 0) + 1
        removed, library_gone = await _remove_scaffold(client, site_info["webUrl"])
        counts["scaffold_deleted"] = counts.get("scaffold_deleted", 0) + removed
        if library_gone:
            # The library folder the location pointed at (`contact`), once nothing is left in it.
            root = await graph.get_root(drive_id)
            for child in await _children(graph, drive_id, root["id"]):
                if child.get("name") == LIBRARY_FOLDER and "folder" in child \
                        and not await _children(graph, drive_id, child["id"]):
                    await _graph_delete(graph, f"drives/{drive_id}/items/{child['id']}")
                    counts["folders_deleted"] = counts.get("folders_deleted", 0) + 1


def _derived(*parts: str) -> str:
    """The ids shared/sharepoint/locations.py gives the records it upserts (uuid5, never changes)."""
    return str(uuid.uuid5(LOCATION_NAMESPACE, "|".join(parts)))


async def _remove_scaffold(client: DataverseClient, web_url: str) -> tuple[int, bool]:
    """Delete the library location and site record when they carry Bridgework's derived ids (so the
    migration made them; an admin's records have other ids) and no other location points at them.
    Returns (records deleted now, whether Bridgework's library location is gone)."""
    site_id = _derived("site", web_url.rstrip("/").lower())
    library_id = _derived("library", site_id, LIBRARY_FOLDER)
    locations = await client.query_all("sharepointdocumentlocations")
    ids = {str(row.get("sharepointdocumentlocationid")).lower() for row in locations}
    others = [row for row in locations if str(row.get("sharepointdocumentlocationid")).lower() != library_id]
    if any(str(row.get("_parentsiteorlocation_value") or "").lower() == library_id for row in others):
        return 0, library_id not in ids
    removed = int(await client.delete("sharepointdocumentlocations", library_id))
    if not any(str(row.get("_parentsiteorlocation_value") or "").lower() == site_id for row in others):
        removed += int(await client.delete("sharepointsites", site_id))
    return removed, True


# -- the custom schema -----------------------------------------------------------------------------------------


class SchemaRemoval(BaseModel):
    removed: list[str] = Field(default_factory=list)
    """Components (`kind:name`) deleted, by this attempt and earlier ones."""
    kept: dict[str, str] = Field(default_factory=dict)
    """Component -> why it stays (`holds_data`, `table_holds_records`, `not_custom`, `in_use`)."""
    already_gone: int = 0


async def _holds_data(client: DataverseClient, table: str, column: str | None = None) -> bool:
    info = await read_table(client, table)
    if info is None:
        return False
    rows = await client.query_all(info.entity_set_name, select=[info.primary_id_attribute], top=1,
                                  filter=f"{column} ne null" if column else None)
    return bool(rows)


async def remove_schema(rt: Runtime, migration: Migration) -> SchemaRemoval:
    """Delete what the migration's schema build created (the schema journal, shared/pipeline/schema.py),
    after the records: relationships, keys, columns, tables, then choices, so no delete meets a
    component that still depends on it. A created table that still holds records (kept ones, or
    someone's new ones), a created column on a standard table that still holds values (a kept record's),
    and whatever depends on those, stay and are listed. Safe to run again."""
    components = created_components(rt, migration.migration_id)
    done = SchemaRemoval.model_validate(rt.artifacts.get_json(migration.migration_id, SCHEMA_REMOVAL)) \
        if rt.artifacts.exists(migration.migration_id, SCHEMA_REMOVAL) else SchemaRemoval()
    out = SchemaRemoval(removed=list(done.removed))
    split = [(c.partition(":")[0], c.partition(":")[2], c) for c in components]
    async with dataverse_client(rt, migration) as client:
        tables: set[str] = set()  # created custom tables (a standard one in a journal is never "created")
        for kind, name, component in split:
            if kind == "table" and ((await read_component(client, component)) or {}).get("IsCustomEntity"):
                tables.add(name)
        full = {t for t in sorted(tables) if await _holds_data(client, t)}
        busy_columns: set[str] = set()  # "table.column" on tables that stay, still holding values
        for kind, name, component in split:
            table, _, column = name.partition(".")
            if kind == "column" and table not in tables and await read_component(client, component) is not None \
                    and await _holds_data(client, table, column):
                busy_columns.add(name)
        for order in COMPONENT_KINDS:
            for kind, name, component in split:
                if kind != order or (kind == "column" and name.partition(".")[0] in tables
                                     and name.partition(".")[0] not in full):
                    continue  # a column of a created table goes with its table
                reason = await _keep_reason(client, kind, name, component, tables, full, busy_columns)
                if reason == "gone":
                    out.already_gone += 1
                elif reason:
                    out.kept[component] = reason
                elif await delete_component(client, component):
                    out.removed.append(component)
                    rt.artifacts.put_json(migration.migration_id, SCHEMA_REMOVAL, out)
                else:
                    out.already_gone += 1
    rt.artifacts.put_json(migration.migration_id, SCHEMA_REMOVAL, out)
    rt.migrations.record_progress(migration.migration_id, "rollback:schema", "done",
                                  {"schema_removed": len(out.removed), "schema_kept": len(out.kept)})
    log.info("migration %s: schema removal (%d removed, %d kept)", migration.migration_id, len(out.removed),
             len(out.kept))
    return out


async def _keep_reason(client: DataverseClient, kind: str, name: str, component: str, tables: set[str],
                       full: set[str], busy_columns: set[str]) -> str | None:
    """Why a created component stays (None: delete it; "gone": nothing to delete)."""
    definition = await read_component(client, component)
    if definition is None:
        return "gone"
    table, _, column = name.partition(".")
    if kind == "relationship":
        referencing = str(definition.get("ReferencingEntity") or "")
        referenced = str(definition.get("ReferencedEntity") or "")
        if referencing in full or referenced in full:
            return "table_holds_records"
        attribute = str(definition.get("ReferencingAttribute") or "")
        if referencing not in tables and await _holds_data(client, referencing, f"_{attribute}_value"):
            return "holds_data"
        return None
    if kind == "key":
        if table in full or any(f"{table}.{c}" in busy_columns for c in definition.get("KeyAttributes") or []):
            return "in_use"
        return None
    if kind == "column":
        if table in full:
            return "table_holds_records"
        if definition.get("IsCustomAttribute") is False:
            return "not_custom"
        return "holds_data" if name in busy_columns else None
    if kind == "table":
        if definition.get("IsCustomEntity") is False:
            return "not_custom"  # never a standard table, whatever a journal says
        return "table_holds_records" if name in full else None
    # A choice stays while a kept column may still use it.
    return "in_use" if full or busy_columns else None


# -- verification -------------------------------------------------------------------------------------------


async def _still_there(rt: Runtime, migration: Migration, client: DataverseClient, entries: list[JournalEntry],
                       tables: dict[str, Any]) -> list[JournalEntry]:
    """The entries whose record or file is still in the destination. Records are looked up a few hundred
    per GET (`_present_ids`); files one Graph GET each. `tables` caches each table's metadata."""
    present: list[JournalEntry] = []
    by_table: dict[str, list[JournalEntry]] = {}
    for entry in entries:
        by_table.setdefault(str(entry.target_table), []).append(entry)
    for table, rows in sorted(by_table.items()):
        if table == SHAREPOINT:
            present += await _files_still_there(rt, migration, rows)
            continue
        if table not in tables:
            tables[table] = await read_table(client, table)
        info = tables[table]
        if info is None:  # the table itself is gone: so are its records
            continue
        found = await _present_ids(client, info.entity_set_name, info.primary_id_attribute,
                                   [str(e.target_id) for e in rows])
        present += [e for e in rows if str(e.target_id).lower() in found]
    return present


async def _present_ids(client: DataverseClient, entity_set: str, primary: str, ids: list[str]) -> set[str]:
    """Which of these record ids (lower case) the table holds: one `In` filter per few hundred ids, a GET per
    id where Dataverse refuses the filter (an odd table). One GET per record is a million GETs for a 1M-record
    migration: at 6,000 requests per 5 minutes per application user, over 13 hours of requests alone."""
    async def chunk(text: str, values: list[str]) -> set[str]:
        try:
            rows = await client.query_all(entity_set, select=[primary], filter=text)
            return {str(row[primary]).lower() for row in rows if row.get(primary)}
        except DataverseRecordRejected:
            return {value.lower() for value in values if await _record_there(client, entity_set, value)}

    found: set[str] = set()
    for part in await _bounded([functools.partial(chunk, text, values)
                                for text, values in in_filters(primary, ids, reserved=len(entity_set) + 40)]):
        found |= part
    return found


async def _record_there(client: DataverseClient, entity_set: str, record_id: str) -> bool:
    try:
        return await client.get(entity_set, record_id) is not None
    except DataverseRecordRejected:
        return False


async def _files_still_there(rt: Runtime, migration: Migration, entries: list[JournalEntry]) -> list[JournalEntry]:
    graph = _graph(rt, migration)
    try:
        site = await graph.get_json(f"sites/{migration.target.sharepoint_site}")
        drive_id = (await graph.get_drive(site["id"], "Documents"))["id"]
        return [entry for entry in entries
                if await graph.get_or_none(f"drives/{drive_id}/items/{entry.target_id}") is not None]
    finally:
        await graph.aclose()


async def verify_rollback(rt: Runtime, migration: Migration) -> RollbackReport:
    """Check the destination against the journal and write the rollback report."""
    steps: list[StepInfo] = []
    kept: list[KeptRecord] = []
    maps = rt.journal.tables(migration.migration_id)
    for entry_table in maps:
        name = f"rollback/steps/{entry_table}.json"
        if rt.artifacts.exists(migration.migration_id, name):
            step = StepInfo.model_validate(rt.artifacts.get_json(migration.migration_id, name))
            steps.append(step)
            kept.extend(step.kept)
    kept_keys = {(k.table, k.source_id) for k in kept}
    present: list[JournalEntry] = []
    tables: dict[str, Any] = {}
    async with dataverse_client(rt, migration) as client:
        for entry_table in maps:  # map by map, a piece at a time: a large practice's journal is never held whole
            created = (e for e in rt.journal.entries(migration.migration_id, entry_table)
                       if e.origin == "created" and e.target_id and e.target_table
                       and (e.table, e.source_id) not in kept_keys)
            for piece in _pieces(created, PIECE):
                present += await _still_there(rt, migration, client, piece, tables)
    removal = SchemaRemoval.model_validate(rt.artifacts.get_json(migration.migration_id, SCHEMA_REMOVAL)) \
        if rt.artifacts.exists(migration.migration_id, SCHEMA_REMOVAL) else SchemaRemoval()
    report = RollbackReport(migration_id=migration.migration_id, steps=steps, kept=kept,
                            remaining=[_kept(e, "still_present") for e in present], verified=not present,
                            watermark=_stored_watermark(rt, migration.migration_id),
                            schema_removed=removal.removed, schema_kept=removal.kept)
    rt.artifacts.put_json(migration.migration_id, REPORT, report)
    rt.migrations.record_progress(migration.migration_id, "rollback", "verified" if not present else "incomplete",
                                  {"kept": len(kept), "remaining": len(present)})
    return report
