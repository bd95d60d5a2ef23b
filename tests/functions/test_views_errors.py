"""The operator view's `errors_by_code` comes from the progress rows: a status read never scans the journal
(but for a migration whose rows predate the per-batch codes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools import azurite
from functions import views
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.failures import journal_errors_by_code
from shared.state.journal import JournalEntry
from shared.state.migrations import Migration, Target

T = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def rt(azurite: azurite.AzuriteProcess, unique_name: str) -> Runtime:
    return Runtime.create(Settings(AzureWebJobsStorage=azurite.connection_string, table_prefix=f"ve{unique_name[:10]}"))


@pytest.fixture
def migration(rt: Runtime) -> Migration:
    return rt.migrations.create("tenant-views", "practice", Target(environment_url="https://org.crm.dynamics.com"))


def _journal(rt: Runtime, migration: Migration, rows: list[tuple[str, str, str, str | None]]) -> None:
    rt.journal.record([JournalEntry(migration_id=migration.migration_id, table=table, source_id=sid, action=action,
                                    code=code, batch=f"{table}/0", at=T) for table, sid, action, code in rows])


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(*_: object) -> dict[str, int]:
        raise AssertionError("the status read scanned the journal")

    monkeypatch.setattr(views, "journal_errors_by_code", scan)


def test_the_view_counts_failures_from_the_progress_rows_alone(rt: Runtime, migration: Migration,
                                                               monkeypatch: pytest.MonkeyPatch):
    mid = migration.migration_id
    _journal(rt, migration, [("patient", "1", "quarantined", "bad_date"), ("patient", "2", "created", None),
                             ("appointment", "7", "failed", "0x80040237"), ("documents", "D-1", "failed", None)])
    rt.migrations.record_progress(mid, "sample:patient/0", "done", {"quarantined": 1}, errors={"stale": 1})
    rt.migrations.record_progress(mid, "load:patient/0", "done", {"quarantined": 1, "created": 1},
                                  errors={"bad_date": 1}, supersedes="sample:patient/0")
    rt.migrations.record_progress(mid, "load:appointment/0", "done", {"failed": 1}, errors={"0x80040237": 1})
    rt.migrations.record_progress(mid, "attachments:0", "done", {"failed": 1}, errors={"failed": 1})
    rt.migrations.record_progress(mid, "bind:appointment/0", "done", {"bound": 1})
    _no_scan(monkeypatch)
    view = views.operator_view(rt, migration, None, None)
    assert view.errors_by_code == {"0x80040237": 1, "bad_date": 1, "failed": 1}
    assert view.errors_by_code == journal_errors_by_code(rt, mid)
    patient = next(t for t in view.tables if t.table == "patient")
    assert patient.counts == {"quarantined": 1, "created": 1}  # counts by action are unchanged


def test_a_delta_that_fixed_a_failure_is_not_counted(rt: Runtime, migration: Migration,
                                                      monkeypatch: pytest.MonkeyPatch):
    mid = migration.migration_id
    rt.migrations.record_progress(mid, "load:patient/0", "done", {"failed": 2}, errors={"x": 2})
    rt.migrations.record_progress(mid, "load:d1:patient/0", "done", {"created": 1}, errors={}, cleared={"x": 1})
    _no_scan(monkeypatch)
    assert views.operator_view(rt, migration, None, None).errors_by_code == {"x": 1}


def test_rows_recorded_before_the_codes_are_counted_by_scanning_the_journal(rt: Runtime, migration: Migration):
    mid = migration.migration_id
    _journal(rt, migration, [("patient", "1", "quarantined", "bad_date"), ("patient", "2", "created", None)])
    rt.migrations.record_progress(mid, "load:patient/0", "done", {"quarantined": 1, "created": 1})  # no errors
    assert views.operator_view(rt, migration, None, None).errors_by_code == {"bad_date": 1}


def test_a_migration_with_no_progress_has_no_errors(rt: Runtime, migration: Migration,
                                                    monkeypatch: pytest.MonkeyPatch):
    _no_scan(monkeypatch)
    assert views.operator_view(rt, migration, None, None).errors_by_code == {}
