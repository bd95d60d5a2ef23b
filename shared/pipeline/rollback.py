"""The compensating rollback: undo what a migration wrote, reading only its journal.

Steps (the orchestrator runs them in this order, one activity each, see `plan_rollback`):
  1. attachment maps: SharePoint files the migration uploaded (journal target_table "sharepoint",
     target_id = Graph item id, code = the contact's document location id), the contact folders they
     leave empty, those document locations; notes (target_table "annotation") are plain deletes;
  2. record maps in the load's dependency order turned around (children before parents): records the
     migration created (origin "created") are deleted; pre-existing records it updated (origin
     "preexisting") get their before-image written back;
  3. `verify_rollback`: every journaled created record is gone unless it was deliberately kept.
After each chunk, the journal rows move to action "deleted" / "restored", so a rollback killed halfway
and run again carries on where it stopped and touches nothing twice.

Edited records: at the end of a migration `record_watermark` keeps the highest `versionnumber` of
the tables it wrote (Dataverse's row version, monotonic across the environment). A record whose
versionnumber is above it was changed by someone after the migration's last write: by default it is
not touched and is listed in the report; `override_edited` deletes / restores it anyway. We chose
versionnumber over `modifiedon` because it does not depend on two clocks agreeing, and the
migration's own later writes (second-pass lookups, closing appointments) all happen before the mark.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.connections import target_credential
from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.schema import read_table
from shared.errors import DataverseRecordRejected, SharePointRequestFailed
from shared.mapping.graph import plan_loads
from shared.mapping.spec import MappingSpec
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.sharepoint.client import GraphClient, GraphConfig
from shared.sharepoint.locations import LOCATION_NAMESPACE
from shared.state.journal import JournalEntry, now
from shared.state.migrations import Migration

log = logging.getLogger("bridgework.rollback")

WATERMARK = "rollback/watermark.json"
REPORT = "rollback/report.json"
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
    """`edited_after_migration` or `no_before_image`."""


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


# -- the watermark, written at the end of the migration ---------------------------------------------------


async def _watermark(rt: Runtime, migration: Migration) -> int | None:
    tables = sorted({e.target_table for e in rt.journal.entries(migration.migration_id)
                     if e.target_table and e.target_table != SHAREPOINT and e.target_id})
    highest: int | None = None
    async with dataverse_client(rt, migration) as client:
        for table in tables:
            info = await read_table(client, table)
            if info is None:
                continue
            rows = await client.query_all(info.entity_set_name, select=["versionnumber"], top=1,
                                          extra={"$orderby": "versionnumber desc"})
            for row in rows:
                if row.get("versionnumber") is not None:
                    highest = max(highest or 0, int(row["versionnumber"]))
    return highest


def record_watermark(rt: Runtime, migration: Migration) -> int | None:
    """Keep the highest row version of the written tables (callable from sync code, loop or not)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        mark = pool.submit(asyncio.run, _watermark(rt, migration)).result()
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
    return entry.model_copy(update={"action": action, "at": now()})


def _kept(entry: JournalEntry, reason: str) -> KeptRecord:
    return KeptRecord(table=entry.table, source_id=entry.source_id, target_table=entry.target_table,
                      target_id=entry.target_id, reason=reason)


async def rollback_table(rt: Runtime, migration: Migration, table: str, policy: RollbackPolicy) -> StepInfo:
    """Undo one journal table's records; safe to run again (undone rows are skipped)."""
    journaled = list(rt.journal.entries(migration.migration_id, table))
    entries = [e for e in journaled if _to_undo(e)]
    counts: dict[str, int] = {}
    kept: list[KeptRecord] = []
    # Files: run even when every row is undone already, to tidy folders an interrupted attempt left.
    files = any(e.target_table == SHAREPOINT for e in journaled)
    if entries or files:
        async with dataverse_client(rt, migration) as client:
            if files:
                await _undo_files(rt, migration, client, entries, counts)
            else:
                await _undo_records(rt, migration, client, entries, policy, counts, kept)
    info = StepInfo(table=table, counts=counts, kept=kept)
    rt.artifacts.put_json(migration.migration_id, f"rollback/steps/{table}.json", info)
    rt.migrations.record_progress(migration.migration_id, f"rollback:{table}", "done", counts)
    log.info("migration %s: rollback of %s (%s)", migration.migration_id, table,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return info


async def _undo_records(rt: Runtime, migration: Migration, client: DataverseClient, entries: list[JournalEntry],
                        policy: RollbackPolicy, counts: dict[str, int], kept: list[KeptRecord]) -> None:
    mark = _stored_watermark(rt, migration.migration_id)
    # Only an id-less created row needs the key column (and so the approved map).
    key_column = (approved_mapping(rt, migration).spec.source_id_column
                  if any(not e.target_id for e in entries) else "")
    by_table: dict[str, list[JournalEntry]] = {}
    for entry in entries:
        by_table.setdefault(str(entry.target_table), []).append(entry)
    for target_table, rows in sorted(by_table.items()):
        info = await read_table(client, target_table)
        if info is None:  # the table itself is gone: so are its records
            rt.journal.record([_moved(e, "deleted") for e in rows if e.origin == "created"])
            counts["already_gone"] = counts.get("already_gone", 0) + len(rows)
            continue
        edited = set() if policy.override_edited else await _edited_ids(
            client, info.entity_set_name, info.primary_id_attribute, mark)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            jobs: list[Callable[[], Awaitable[Any]]] = []
            for entry in chunk:
                if str(entry.target_id).lower() in edited:
                    kept.append(_kept(entry, "edited_after_migration"))
                    counts["kept_edited"] = counts.get("kept_edited", 0) + 1
                elif entry.origin == "created":
                    jobs.append(_delete_job(client, info.entity_set_name, entry, key_column))
                elif entry.before_image:
                    jobs.append(_restore_job(rt, client, info.entity_set_name, entry))
                else:
                    kept.append(_kept(entry, "no_before_image"))
                    counts["kept_no_before_image"] = counts.get("kept_no_before_image", 0) + 1
            done: list[tuple[JournalEntry, str]] = await _bounded(jobs)
            for _, outcome in done:
                counts[outcome] = counts.get(outcome, 0) + 1
            rt.journal.record([_moved(entry, "restored" if outcome == "restored" else "deleted")
                               for entry, outcome in done])


def _delete_job(client: DataverseClient, entity_set: str, entry: JournalEntry, key_column: str
                ) -> Callable[[], Awaitable[tuple[JournalEntry, str]]]:
    async def job() -> tuple[JournalEntry, str]:
        key: dict[str, Any] | str = entry.target_id or {key_column: entry.source_id}
        existed = await client.delete(entity_set, key)
        return entry, "deleted" if existed else "already_gone"

    return job


def _restore_job(rt: Runtime, client: DataverseClient, entity_set: str, entry: JournalEntry
                 ) -> Callable[[], Awaitable[tuple[JournalEntry, str]]]:
    async def job() -> tuple[JournalEntry, str]:
        image = rt.artifacts.get_json(entry.migration_id, str(entry.before_image))
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
                      counts: dict[str, int]) -> None:
    """Files, then the contact folders and document locations they leave without files, then the
    library location and site records Bridgework made when no other location still uses them."""
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
            for entry in chunk:
                item = items[entry.target_id]
                if item is not None:
                    await _graph_delete(graph, f"drives/{drive_id}/items/{entry.target_id}")
                    counts["files_deleted"] = counts.get("files_deleted", 0) + 1
                else:
                    counts["already_gone"] = counts.get("already_gone", 0) + 1
                if entry.code:
                    # The location regarding the contact: the contact's folder pointer (shared by its files).
                    if await client.delete("sharepointdocumentlocations", entry.code):
                        counts["locations_deleted"] = counts.get("locations_deleted", 0) + 1
            rt.journal.record([_moved(entry, "deleted") for entry in chunk])
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


# -- verification -------------------------------------------------------------------------------------------


async def _still_there(rt: Runtime, migration: Migration, client: DataverseClient,
                       entries: list[JournalEntry]) -> list[JournalEntry]:
    sets: dict[str, str | None] = {}
    present: list[JournalEntry] = []
    graph: GraphClient | None = None
    drive_id = ""
    try:
        for entry in entries:
            if entry.target_table == SHAREPOINT:
                if graph is None:
                    graph = _graph(rt, migration)
                    site = await graph.get_json(f"sites/{migration.target.sharepoint_site}")
                    drive_id = (await graph.get_drive(site["id"], "Documents"))["id"]
                if await graph.get_or_none(f"drives/{drive_id}/items/{entry.target_id}") is not None:
                    present.append(entry)
                continue
            table = str(entry.target_table)
            if table not in sets:
                info = await read_table(client, table)
                sets[table] = info.entity_set_name if info else None
            if sets[table] is None:
                continue
            try:
                if await client.get(str(sets[table]), str(entry.target_id)) is not None:
                    present.append(entry)
            except DataverseRecordRejected:
                continue
    finally:
        if graph is not None:
            await graph.aclose()
    return present


async def verify_rollback(rt: Runtime, migration: Migration) -> RollbackReport:
    """Check the destination against the journal and write the rollback report."""
    steps: list[StepInfo] = []
    kept: list[KeptRecord] = []
    for entry_table in sorted({e.table for e in rt.journal.entries(migration.migration_id)}):
        name = f"rollback/steps/{entry_table}.json"
        if rt.artifacts.exists(migration.migration_id, name):
            step = StepInfo.model_validate(rt.artifacts.get_json(migration.migration_id, name))
            steps.append(step)
            kept.extend(step.kept)
    kept_keys = {(k.table, k.source_id) for k in kept}
    created = [e for e in rt.journal.entries(migration.migration_id)
               if e.origin == "created" and e.target_id and e.target_table and (e.table, e.source_id) not in kept_keys]
    async with dataverse_client(rt, migration) as client:
        present = await _still_there(rt, migration, client, created)
    report = RollbackReport(migration_id=migration.migration_id, steps=steps, kept=kept,
                            remaining=[_kept(e, "still_present") for e in present], verified=not present,
                            watermark=_stored_watermark(rt, migration.migration_id))
    rt.artifacts.put_json(migration.migration_id, REPORT, report)
    rt.migrations.record_progress(migration.migration_id, "rollback", "verified" if not present else "incomplete",
                                  {"kept": len(kept), "remaining": len(present)})
    return report
