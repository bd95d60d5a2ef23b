"""The attachment stage: bundle files (x-rays, forms) to SharePoint, one folder per patient, with a
document location regarding the contact; or, when the migration says so, to note attachments.

A file over the destination's limit is never dropped silently: its journal row says `skipped` with
the code `too_large` and the limit, and the final report lists it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from shared.connections import target_credential
from shared.dataverse.client import DataverseClient
from shared.dentrix.reader import BundleReader, LoadedRow, QuarantinedRow
from shared.errors import Fatal, Retriable
from shared.mapping.rows import derived_id, make_context, source_id, transform_row
from shared.mapping.spec import MappingSpec, TableMap
from shared.pipeline.bundle import open_bundle
from shared.pipeline.file_stamps import stamp, store_stamps
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.sample_scope import SampleScope, in_sample
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.sharepoint.client import GraphClient, GraphConfig
from shared.sharepoint.documents import LibraryTarget, upload_contact_document
from shared.sharepoint.locations import contact_folder_name, ensure_library_location, ensure_site
from shared.state import failures
from shared.state.journal import JournalEntry, TAction, now
from shared.state.migrations import Migration

log = logging.getLogger("bridgework.attachments")

SHAREPOINT_FILE_LIMIT = 250 * 1024 * 1024 * 1024
"""SharePoint Online's largest file (250 GB)."""


GRAPH_SCOPE = "https://graph.microsoft.com/.default"

PATIENTS_IN_FLIGHT = 8
"""Patients whose files this process copies at once (each patient's files one after another), whatever
the number of parts: the orchestrator starts every part together, and a limit per part let a large
practice (four parts at 16,000 documents) hold four times the files in memory."""
LARGE_FILE_BYTES = 16 * 1024 * 1024
"""A file over this is read and sent while no other such file is in this process's memory (a CBCT scan
can be 500 MB)."""

_LIMITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def _copy_limits() -> tuple[asyncio.Semaphore, asyncio.Lock]:
    """The process's patient slots and large-file lock (one pair per event loop: asyncio's belong to one)."""
    loop = asyncio.get_running_loop()
    limits = _LIMITS.get(loop)
    if limits is None:
        limits = _LIMITS[loop] = (asyncio.Semaphore(PATIENTS_IN_FLIGHT), asyncio.Lock())
    return limits


class AttachmentInfo(BaseModel):
    part: int
    copied: int
    skipped: int
    failed: int


def _document_map(spec: MappingSpec) -> TableMap | None:
    return next((t for t in spec.enabled_tables() if t.action == "attachment"), None)


def _file_column(reader: BundleReader, table: str) -> str:
    from shared.dentrix.tables import get_table

    return next(c.name for c in get_table(table).columns if c.kind == "sha256")


def _patient_column(table_map: TableMap) -> str:
    lookup = next(lk for lk in table_map.lookups if lk.parent == "patient")
    return lookup.source


def _read_file(reader: BundleReader, digest: str) -> bytes:
    return b"".join(reader.iter_file(digest))


async def _library(graph: GraphClient, dv: DataverseClient, site: str) -> LibraryTarget:
    """The site's document library, its `contact` folder and their Dataverse locations (idempotent)."""
    site_info = await graph.get_json(f"sites/{site}")
    drive = await graph.get_drive(site_info["id"], "Documents")
    root = await graph.get_root(drive["id"])
    folder = await graph.ensure_folder(drive["id"], root["id"], "contact")
    site_record = await ensure_site(dv, site_info["webUrl"])
    location = await ensure_library_location(dv, site_record, "contact")
    return LibraryTarget(drive_id=drive["id"], folder_item_id=folder["id"], parent_location_id=location)


async def copy_attachments(rt: Runtime, migration: Migration, part: int, *,
                           sample: SampleScope | None = None, bundle_id: str | None = None) -> AttachmentInfo:
    """Copy the files of one part of the document table; safe to run twice (replace + upserts).
    `sample`: only the sampled patients' documents (the sample run; the full run copies them again).
    `bundle_id`: the document rows (and files) of a delta bundle during cutover."""
    mapping = approved_mapping(rt, migration)
    spec = mapping.spec
    table_map = _document_map(spec)
    if table_map is None:
        return AttachmentInfo(part=part, copied=0, skipped=0, failed=0)
    reader = open_bundle(rt, migration, bundle_id)
    file_column = _file_column(reader, table_map.source_table)
    patient_column = _patient_column(table_map)
    counts = {"created": 0, "skipped": 0, "failed": 0}
    entries: list[JournalEntry] = []
    delta = bool(bundle_id) and bundle_id != migration.bundle_id
    batch = f"{'sample:' if sample else ''}{bundle_id + ':' if bundle_id else ''}{table_map.name}/{part}"
    stamps_key = f"{'sample:' if sample else ''}{table_map.name}/{part}"
    stamps: dict[str, dict[str, Any]] = {}

    def journal(sid: str, action: TAction, **fields: Any) -> None:
        key = "created" if action in ("created", "updated") else action
        counts[key] = counts.get(key, 0) + 1
        entries.append(JournalEntry(migration_id=migration.migration_id, table=table_map.name, source_id=sid,
                                    action=action, batch=batch, at=now(), **fields))

    to_notes = migration.target.attachments == "notes" or not migration.target.sharepoint_site
    limit = rt.settings.note_attachment_limit if to_notes else SHAREPOINT_FILE_LIMIT
    async with dataverse_client(rt, migration) as dv:
        graph: GraphClient | None = None
        library: LibraryTarget | None = None
        if not to_notes:
            credential = target_credential(rt.settings, migration.target.tenant_id,
                                           (migration.target.application_users or [None])[0])
            graph_root = migration.target.graph_url.rsplit("/", 1)[0]
            # Graph tokens are always for Graph's resource, wherever its endpoint is (the emulator's too).
            graph = GraphClient(GraphConfig(graph_url=graph_root, scope=GRAPH_SCOPE), credential)
            library = await _library(graph, dv, migration.target.sharepoint_site or "")
        context = make_context(spec, reader.manifest.practice_timezone)

        async def copy_one(sid: str, row: dict[str, Any], digest: str, contact: dict[str, Any]) -> None:
            data = await asyncio.to_thread(_read_file, reader, digest)
            if to_notes:
                payload, errors = transform_row(table_map, row, context)
                if any(e.fatal for e in errors):
                    journal(sid, "quarantined", code=",".join(sorted({e.code for e in errors})))
                    return
                payload.update({"documentbody": base64.b64encode(data).decode(), "isdocument": True})
                note_id = derived_id("annotation", sid)
                await dv.request("PATCH", f"annotations({note_id})", json=payload,
                                 headers={"Content-Type": "application/json"})
                journal(sid, "created", target_table="annotation", target_id=note_id, origin="created")
                return
            assert graph is not None and library is not None
            result = await upload_contact_document(
                graph, dv, library, contact_id=contact["contactid"],
                folder_name=contact_folder_name(contact.get("fullname") or "", contact["contactid"]),
                file_name=_file_name(row, sid), data=data,
                content_type=str(row.get("media_type") or "application/octet-stream"))
            journal(sid, "created", target_table="sharepoint", target_id=result.file_item_id,
                    origin="created", code=result.location_id)
            # The file as uploaded: rollback deletes it only if nobody edited it since (file_stamps.py).
            uploaded = await graph.get_or_none(f"drives/{library.drive_id}/items/{result.file_item_id}")
            if uploaded is not None:
                stamps[result.file_item_id] = stamp(uploaded)

        # Several patients at once, each patient's files in turn: a file is a handful of dependent
        # requests, so one file at a time spends the stage waiting on latency; in turn, because a part
        # creates each patient's folder from one task (parts run side by side, and ensure_folder
        # tolerates a create racing its own). Slots and the large-file lock are the process's (`_copy_limits`).
        by_patient: dict[str, list[tuple[str, dict[str, Any], str, int]]] = {}
        try:
            for item in reader.iter_part(table_map.source_table, part):
                if sample is not None and (not isinstance(item, LoadedRow) or not in_sample(
                        table_map.source_table, item.row.model_dump(), sample)):
                    continue  # not the sample's (quarantined rows wait for the full run)
                if isinstance(item, QuarantinedRow):
                    journal(item.key or f"{item.file}:{item.line}", "quarantined",
                            code=",".join(sorted({p.code for p in item.problems})),
                            reason=f"{item.file} line {item.line}")
                    continue
                assert isinstance(item, LoadedRow)
                row = item.row.model_dump()
                sid = source_id(table_map, row) or item.key
                digest, patient = row.get(file_column), row.get(patient_column)
                if not digest or not patient:
                    journal(sid, "skipped", code="no_file_or_patient",
                            reason="the document names no file or no patient")
                    continue
                # the row carries its file's size (format 2: no whole file index in memory);
                # verify() at discovery checked it against the index, and iter_file re-checks the hash
                size = int(row.get("file_bytes") or 0)
                if to_notes:  # the note limit applies to the Base64 text Dataverse stores
                    size = 4 * ((size + 2) // 3)
                if size > limit:
                    journal(sid, "skipped", code="too_large",
                            reason=f"{size} bytes is over the destination's limit of {limit} bytes")
                    continue
                by_patient.setdefault(str(patient), []).append((sid, row, str(digest), size))

            slots, large = _copy_limits()

            async def copy_patient(patient: str, files: list[tuple[str, dict[str, Any], str, int]]) -> None:
                async with slots:
                    patient_key = f"{spec.table('patient').key.prefix}-{patient}"
                    contact = await dv.get("contacts", {spec.source_id_column: patient_key},
                                           select=["contactid", "fullname"])
                    for sid, row, digest, size in files:
                        if contact is None:
                            journal(sid, "failed", code="contact_missing",
                                    reason=f"the patient's contact {patient_key} is not in Dataverse")
                        elif size > LARGE_FILE_BYTES:
                            async with large:
                                await copy_one(sid, row, digest, contact)
                        else:
                            await copy_one(sid, row, digest, contact)

            patients = iter(by_patient.items())

            async def copy_patients() -> None:
                # One of a few workers per part, each taking the next patient: a task per patient left tens
                # of thousands of tasks waiting for a slot at 1M records (bench/README.md).
                for patient, files in patients:
                    await copy_patient(patient, files)

            try:
                async with asyncio.TaskGroup() as group:  # the first failure cancels the rest; the activity reruns
                    for _ in range(min(PATIENTS_IN_FLIGHT, len(by_patient))):
                        group.create_task(copy_patients())
            except ExceptionGroup as failed:
                # Journal what reached SharePoint before the failure, so a rollback of a run that never
                # finishes still finds those files; the part itself is not marked done. Not for a delta:
                # its failures-cleared count must be taken before any of its rows are journaled.
                if not delta:
                    await asyncio.to_thread(_keep_done, rt, migration.migration_id, entries, stamps, stamps_key)
                raise _most_telling(failed.exceptions) from None
        finally:
            if graph is not None:
                await graph.aclose()
    store_stamps(rt, migration.migration_id, stamps_key, stamps)
    # A delta's part has a row of its own (it used to overwrite the full run's `attachments:<part>`).
    stage = (f"sample-attachments:{part}" if sample is not None
             else f"attachments:{bundle_id}:{part}" if bundle_id else f"attachments:{part}")
    # Failures by code on the progress row (shared/state/failures.py): a delta first reads which earlier
    # failures its rows replace; the full run's part journals the sample's rows again.

    def journal_and_report() -> None:  # storage calls: off the event loop the other activities share
        cleared = failures.cleared_by(rt, migration.migration_id, batch, stage, entries) if delta else {}
        rt.journal.record(entries)
        rt.migrations.record_progress(
            migration.migration_id, stage, "done", counts, errors=failures.errors_of(entries), cleared=cleared,
            supersedes=f"sample-attachments:{part}" if sample is None and not bundle_id else None)

    await asyncio.to_thread(journal_and_report)
    return AttachmentInfo(part=part, copied=counts["created"], skipped=counts["skipped"] + counts.get("quarantined", 0),
                          failed=counts["failed"])


def _keep_done(rt: Runtime, migration_id: str, entries: list[JournalEntry], stamps: dict[str, dict[str, Any]],
               stamps_key: str) -> None:
    rt.journal.record(entries)
    store_stamps(rt, migration_id, stamps_key, stamps)


def _most_telling(errors: Sequence[BaseException]) -> BaseException:
    """The error to raise for a part whose copies failed in several ways: one that no retry can mend first,
    then an unexpected one (a bug), then a retriable one. The others' types go to the log (no content)."""
    def rank(error: BaseException) -> int:
        if isinstance(error, Fatal):
            return 0
        return 2 if isinstance(error, Retriable) else 1
    chosen = min(errors, key=rank)
    others = [type(e).__name__ for e in errors if e is not chosen]
    if others:
        log.warning("attachment copy failed with %s; also %s", type(chosen).__name__, ", ".join(others))
    return chosen


def _file_name(row: dict[str, Any], sid: str) -> str:
    """The file's own name when it is safe, else the document's source id (names never reach a log)."""
    name = str(row.get("file_name") or "").strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return sid
    return name
