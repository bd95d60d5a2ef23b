"""The attachment copy runs several patients at once and each patient's files one after another, and a
failure inside it surfaces as its own error type (the retry policy classifies by type), not as a group."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.extract import extract
from agent.synth import synthesize
from devtools import azurite
from devtools.stack import FAST_EMULATOR, LocalStack, drive_migration, practice_stack
from shared.errors import SharePointConflict, SharePointUnavailable
from shared.pipeline import attachments
from shared.sharepoint.documents import DocumentResult

TENANT = "practice-group-1"


@dataclass
class Migrated:
    stack: LocalStack
    migration_id: str
    documents_by_patient: Counter[str]


@pytest.fixture(scope="module")
def migrated(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    work = Path(tmp_path_factory.mktemp("attachments"))
    practice = work / "practice.db"
    synth = synthesize(practice, 30, 11)
    with sqlite3.connect(practice) as db:  # one patient gets a second document (same file, its own row)
        columns = [row[1] for row in db.execute("PRAGMA table_info(v_document)") if row[1] != "doc_id"]
        db.execute(f"INSERT INTO v_document (doc_id, {', '.join(columns)}) "
                   f"SELECT 990001, {', '.join(columns)} FROM v_document ORDER BY doc_id LIMIT 1")
        per_patient = Counter(str(row[0]) for row in db.execute("SELECT patient_id FROM v_document"))
    bundle = extract(str(practice), work / "bundle", files_root=synth.files_root).bundle_dir
    with practice_stack(work, practice, storage=azurite, emulator_config=FAST_EMULATOR) as stack:
        result = drive_migration(stack, bundle, timeout=300, sample_patients=0)
        assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
        yield Migrated(stack, str(result["migration_id"]), per_patient)


def _copy_again(m: Migrated) -> attachments.AttachmentInfo:
    rt = m.stack.runtime()
    migration = rt.migrations.get(TENANT, m.migration_id)
    return asyncio.run(attachments.copy_attachments(rt, migration, 0))


def test_patients_are_copied_side_by_side_and_each_patients_files_in_turn(
        migrated: Migrated, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sum(n > 1 for n in migrated.documents_by_patient.values()) >= 1, "needs a patient with two documents"
    in_flight: Counter[str] = Counter()
    most_at_once = 0
    most_per_contact = 0
    most_tasks = 0

    async def upload(graph: Any, dv: Any, library: Any, *, contact_id: str, data: bytes, **_: Any) -> DocumentResult:
        nonlocal most_at_once, most_per_contact, most_tasks
        in_flight[contact_id] += 1
        most_at_once = max(most_at_once, sum(in_flight.values()))
        most_per_contact = max(most_per_contact, in_flight[contact_id])
        # Tasks of the copy's own (other tasks of the loop, such as a client's, come and go: a CI run saw one).
        most_tasks = max(most_tasks, sum(getattr(task.get_coro(), "__qualname__", "").startswith(
            "copy_attachments.<locals>.copy_patient") for task in asyncio.all_tasks()))
        await asyncio.sleep(0.05)  # a request's latency: the others run meanwhile
        in_flight[contact_id] -= 1
        return DocumentResult(contact_id=contact_id, folder_item_id="f", file_item_id=f"i-{contact_id}",
                              size=len(data), location_id="l")

    monkeypatch.setattr(attachments, "upload_contact_document", upload)
    rt = migrated.stack.runtime()
    copied_first = sum(e.action == "created" for e in rt.journal.entries(migrated.migration_id, "document"))
    info = _copy_again(migrated)
    assert info.copied == copied_first > 1
    assert most_per_contact == 1
    assert 1 < most_at_once <= attachments.PATIENTS_IN_FLIGHT
    # A few workers take the patients in turn: not a task per patient waiting.
    assert len(migrated.documents_by_patient) > attachments.PATIENTS_IN_FLIGHT
    assert 1 < most_tasks <= attachments.PATIENTS_IN_FLIGHT


def test_parts_copied_at_once_share_the_process_limit(migrated: Migrated, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator starts every part together: the patients in flight are the process's, not each part's."""
    assert len(migrated.documents_by_patient) > attachments.PATIENTS_IN_FLIGHT, "two parts must be able to exceed it"
    in_flight = 0
    most_at_once = 0
    limit_reached = asyncio.Event()

    async def upload(graph: Any, dv: Any, library: Any, *, contact_id: str, data: bytes, **_: Any) -> DocumentResult:
        nonlocal in_flight, most_at_once
        in_flight += 1
        most_at_once = max(most_at_once, in_flight)
        if in_flight >= attachments.PATIENTS_IN_FLIGHT:
            limit_reached.set()
        # Each upload stays until the limit is reached (or 2 s pass), so a busy machine cannot hide either
        # a limit per part (more at once) or a lower one (never reached).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(limit_reached.wait(), 2)
        in_flight -= 1
        return DocumentResult(contact_id=contact_id, folder_item_id="f", file_item_id=f"i-{contact_id}",
                              size=len(data), location_id="l")

    monkeypatch.setattr(attachments, "upload_contact_document", upload)
    rt = migrated.stack.runtime()
    migration = rt.migrations.get(TENANT, migrated.migration_id)

    async def two_parts() -> None:  # part 0 twice (a twin delivery): the same work as two parts side by side
        await asyncio.gather(attachments.copy_attachments(rt, migration, 0),
                             attachments.copy_attachments(rt, migration, 0))

    asyncio.run(two_parts())
    assert most_at_once == attachments.PATIENTS_IN_FLIGHT


def test_a_failed_copy_raises_its_own_error_and_journals_the_files_already_copied(
        migrated: Migrated, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = migrated.stack.runtime()
    calls = 0

    async def upload(graph: Any, dv: Any, library: Any, *, contact_id: str, data: bytes, **_: Any) -> DocumentResult:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return DocumentResult(contact_id=contact_id, folder_item_id="f", file_item_id=f"partial-{calls}",
                                  size=len(data), location_id="l")
        if calls == 3:
            raise SharePointUnavailable("Graph answered 503", status=503)
        await asyncio.Event().wait()  # still uploading when the failure cancels it
        raise AssertionError("unreachable")

    monkeypatch.setattr(attachments, "upload_contact_document", upload)
    with pytest.raises(SharePointUnavailable):
        _copy_again(migrated)
    journaled = {e.target_id for e in rt.journal.entries(migrated.migration_id, "document")}
    assert {"partial-1", "partial-2"} <= journaled  # a rollback of a run that stops here finds them


def test_the_error_raised_for_several_failures_is_the_one_no_retry_mends() -> None:
    retriable, fatal, bug = SharePointUnavailable("503", status=503), SharePointConflict("409"), ValueError("bug")
    assert attachments._most_telling([retriable, bug, fatal]) is fatal
    assert attachments._most_telling([retriable, bug]) is bug
    assert attachments._most_telling([retriable]) is retriable
