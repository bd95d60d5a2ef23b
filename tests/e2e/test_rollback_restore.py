"""Rollback of pre-existing records against the emulator, without the host: a record the migration
updated gets its before-image back, one someone edited after the migration is kept and listed (or
restored under the override), a created one is deleted, and a second run changes nothing.

The journal rows and images are written here the way the load writes them (shared/pipeline/preexisting.py;
tests/e2e/test_rollback_preexisting.py proves the whole path through the host).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools import azurite
from devtools.stack import emulator_runtime
from emulator.testing import RunningEmulator, run_emulator
from shared.pipeline import rollback
from shared.pipeline.rollback import RollbackPolicy, record_watermark, rollback_table, verify_rollback
from shared.runtime import Runtime
from shared.state.journal import JournalEntry, now
from shared.state.migrations import Migration, Target


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with run_emulator({}) as running:
        yield running


@pytest.fixture
def rt(azurite: azurite.AzuriteProcess, unique_name: str) -> Runtime:
    return emulator_runtime(azurite.connection_string, f"rb{unique_name[:10]}")


def _write(emulator: RunningEmulator, method: str, path: str, body: dict[str, Any], user: str = "app-1"
           ) -> httpx.Response:
    headers = {**emulator.headers_for(user), "Content-Type": "application/json"}
    if method == "PATCH":
        headers["If-Match"] = "*"
    response = httpx.request(method, f"{emulator.api_url}{path}", json=body, headers=headers, verify=emulator.verify)
    assert response.status_code in (201, 204), response.status_code
    return response


def _create_contact(emulator: RunningEmulator, phone: str) -> str:
    response = _write(emulator, "POST", "contacts", {"lastname": "Preexisting", "telephone2": phone})
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def _create_contacts(emulator: RunningEmulator, count: int) -> list[str]:
    """Record ids of `count` new contacts, made in one CreateMultiple."""
    response = httpx.post(f"{emulator.api_url}contacts/Microsoft.Dynamics.CRM.CreateMultiple",
                          json={"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "Created"}
                                            for _ in range(count)]},
                          headers=emulator.headers_for("app-1"), verify=emulator.verify)
    assert response.status_code == 200, response.status_code
    return list(response.json()["Ids"])


def _entry(migration: Migration, sid: str, target_id: str, origin: str, action: str,
           before_image: str | None = None) -> JournalEntry:
    return JournalEntry(migration_id=migration.migration_id, table="patient", source_id=sid, target_table="contact",
                        target_id=target_id, action=action, origin=origin, batch="patient/0", at=now(),
                        before_image=before_image)


def test_before_images_come_back_edits_by_others_are_kept_and_created_records_go(emulator: RunningEmulator,
                                                                                  rt: Runtime):
    emulator.reset()
    migration = rt.migrations.create("tenant-1", "restore", Target(environment_url=emulator.base_url,
                                                                    application_users=["app-1"]))
    updated, edited = _create_contact(emulator, "100"), _create_contact(emulator, "200")
    # The migration: updates two pre-existing contacts (keeping their before-images), creates one.
    for sid, record in (("P-1", updated), ("P-2", edited)):
        rt.artifacts.put_json(migration.migration_id, f"rollback/before/{sid}.json",
                              {"telephone2": "100" if record == updated else "200"})
        _write(emulator, "PATCH", f"contacts({record})", {"telephone2": "999"})
    created = _create_contact(emulator, "300")
    rt.journal.record([
        _entry(migration, "P-1", updated, "preexisting", "updated", "rollback/before/P-1.json"),
        _entry(migration, "P-2", edited, "preexisting", "updated", "rollback/before/P-2.json"),
        _entry(migration, "P-3", created, "created", "created"),
    ])
    assert record_watermark(rt, migration) is not None
    _write(emulator, "PATCH", f"contacts({edited})", {"telephone2": "555"}, user="app-2")  # the front desk

    info = asyncio.run(rollback_table(rt, migration, "patient", RollbackPolicy()))
    contacts = emulator.rows("contact")
    assert contacts[updated]["telephone2"] == "100"
    assert contacts[edited]["telephone2"] == "555"
    assert created not in contacts
    assert info.counts == {"restored": 1, "deleted": 1, "kept_edited": 1}
    assert [(k.source_id, k.reason) for k in info.kept] == [("P-2", "edited_after_migration")]
    actions = {e.source_id: e.action for e in rt.journal.entries(migration.migration_id)}
    assert actions == {"P-1": "restored", "P-2": "updated", "P-3": "deleted"}

    again = asyncio.run(rollback_table(rt, migration, "patient", RollbackPolicy()))
    assert again.counts == {"kept_edited": 1}
    assert emulator.rows("contact")[updated]["telephone2"] == "100"

    # Killed after a restore but before its journal write: the record holds its image already, so the
    # raised row version is not taken for someone's edit; it is recorded as restored, nothing is written.
    rt.journal.record([_entry(migration, "P-1", updated, "preexisting", "updated", "rollback/before/P-1.json")])
    version = emulator.rows("contact")[updated]["versionnumber"]
    resumed = asyncio.run(rollback_table(rt, migration, "patient", RollbackPolicy()))
    assert resumed.counts == {"restored": 1, "kept_edited": 1}
    assert emulator.rows("contact")[updated]["versionnumber"] == version

    forced = asyncio.run(rollback_table(rt, migration, "patient", RollbackPolicy(override_edited=True)))
    assert forced.counts == {"restored": 1}
    assert emulator.rows("contact")[edited]["telephone2"] == "200"


def test_the_check_lists_exactly_the_created_records_still_there_a_few_hundred_per_request(
        emulator: RunningEmulator, rt: Runtime):
    emulator.reset()
    migration = rt.migrations.create("tenant-1", "verify", Target(environment_url=emulator.base_url,
                                                                   application_users=["app-1"]))
    created = {f"P-{n}": record for n, record in enumerate(_create_contacts(emulator, 400))}
    gone = {sid: created.pop(sid) for sid in ("P-7", "P-250")}  # deleted by the rollback
    for record in gone.values():
        response = httpx.delete(f"{emulator.api_url}contacts({record})", headers=emulator.headers_for("app-1"),
                                verify=emulator.verify)
        assert response.status_code == 204
    rt.journal.record([_entry(migration, sid, record, "created", "deleted" if sid in gone else "created")
                       for sid, record in {**created, **gone}.items()]
                      + [_entry(migration, "P-900", created["P-1"], "preexisting", "updated")])  # not the migration's
    emulator.reset_counters()

    report = asyncio.run(verify_rollback(rt, migration))
    assert not report.verified
    assert {k.source_id for k in report.remaining} == set(created)  # every one still there, none that is gone
    assert all(k.reason == "still_present" for k in report.remaining)
    requests = emulator.counters("app-1")["requests"]
    assert 0 < requests <= 10, requests  # one GET per record would be 400


def test_a_step_undoes_its_map_a_piece_of_the_journal_at_a_time(emulator: RunningEmulator, rt: Runtime,
                                                                 monkeypatch: pytest.MonkeyPatch):
    emulator.reset()
    migration = rt.migrations.create("tenant-1", "pieces", Target(environment_url=emulator.base_url,
                                                                   application_users=["app-1"]))
    created = {f"P-{n}": record for n, record in enumerate(_create_contacts(emulator, 30))}
    assert set(created.values()) <= set(emulator.rows("contact"))
    rt.journal.record([_entry(migration, sid, record, "created", "created") for sid, record in created.items()])
    assert record_watermark(rt, migration) is not None
    pieces: list[int] = []
    undo_records = rollback._undo_records

    async def counting(rt: Runtime, migration: Migration, client: Any, entries: list[JournalEntry], *args: Any) -> None:
        pieces.append(len(entries))
        await undo_records(rt, migration, client, entries, *args)

    monkeypatch.setattr(rollback, "PIECE", 7)
    monkeypatch.setattr(rollback, "_undo_records", counting)
    info = asyncio.run(rollback_table(rt, migration, "patient", RollbackPolicy()))
    assert pieces == [7, 7, 7, 7, 2]
    assert info.counts == {"deleted": 30}
    assert not set(created.values()) & set(emulator.rows("contact"))
    assert asyncio.run(verify_rollback(rt, migration)).verified
