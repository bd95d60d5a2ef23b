"""Failure counts kept on the progress rows equal the journal's current failures (shared/state/failures.py).

Each step journals a batch and records its progress the way load_batch and copy_attachments do
(`cleared_by` before the journal write for a delta, `errors_of` and `supersedes` on the row), then the
figure from the progress rows alone is compared with the journal scan.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devtools import azurite
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state import failures
from shared.state.failures import errors_of, journal_errors_by_code, progress_errors
from shared.state.journal import JournalEntry
from shared.state.migrations import StageProgress

MID = "m-progress1"
T = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def rt(azurite: azurite.AzuriteProcess, unique_name: str) -> Runtime:
    return Runtime.create(Settings(AzureWebJobsStorage=azurite.connection_string, table_prefix=f"pe{unique_name[:10]}"))


def _entry(sid: str, action: str = "created", code: str | None = None, *, table: str = "patient",
           batch: str = "patient/0") -> JournalEntry:
    return JournalEntry(migration_id=MID, table=table, source_id=sid, action=action, batch=batch, at=T, code=code,
                        origin="created" if action == "created" else "none")


def _batch(rt: Runtime, batch: str, stage: str, rows: list[tuple[str, str, str | None]], *, delta: bool = False,
           supersedes: str | None = None, table: str = "patient", progress: bool = True) -> None:
    """One batch as the pipeline runs it; `progress=False`: the host died after the journal write."""
    entries = [_entry(sid, action, code, table=table, batch=batch) for sid, action, code in rows]
    cleared = failures.cleared_by(rt, MID, batch, stage, entries) if delta else {}
    rt.journal.record(entries)
    if progress:
        rt.migrations.record_progress(MID, stage, "done", {}, errors=errors_of(entries), cleared=cleared,
                                      supersedes=supersedes)


def _figure(rt: Runtime) -> dict[str, int] | None:
    return progress_errors(rt.migrations.progress(MID))


def _agrees(rt: Runtime) -> dict[str, int]:
    scanned = journal_errors_by_code(rt, MID)
    assert _figure(rt) == scanned
    return scanned


def test_sample_full_run_and_deltas_keep_the_figure_equal_to_the_journal(rt: Runtime):
    # The sample: part 0 has a failure, part 1 a quarantined row.
    _batch(rt, "sample:patient/0", "sample:patient/0", [("1", "created", None), ("2", "failed", "0x80040237")])
    _batch(rt, "sample:patient/1", "sample:patient/1", [("11", "quarantined", "bad_date")])
    assert _agrees(rt) == {"0x80040237": 1, "bad_date": 1}

    # The full run's part 0 writes the sample's failure this time; part 1 has not run: its sample still counts.
    _batch(rt, "patient/0", "load:patient/0",
           [("1", "created", None), ("2", "created", None), ("3", "quarantined", "bad_date"), ("4", "failed", None)],
           supersedes="sample:patient/0")
    assert _agrees(rt) == {"bad_date": 2, "failed": 1}  # no code: counted by its action

    _batch(rt, "patient/1", "load:patient/1", [("11", "quarantined", "bad_date"), ("12", "created", None)],
           supersedes="sample:patient/1")
    assert _agrees(rt) == {"bad_date": 2, "failed": 1}

    # A duplicate delivery of part 0 that now writes row 4: its row is overwritten, nothing counts twice.
    _batch(rt, "patient/0", "load:patient/0",
           [("1", "created", None), ("2", "created", None), ("3", "quarantined", "bad_date"), ("4", "created", None)],
           supersedes="sample:patient/0")
    assert _agrees(rt) == {"bad_date": 2}

    # Delta 1 fixes row 3, fails row 12 (written by the full run) and row 20 (new).
    _batch(rt, "d1:patient/0", "load:d1:patient/0",
           [("3", "updated", None), ("12", "failed", "0x8004431a"), ("20", "failed", "0x8004431a")], delta=True)
    assert _agrees(rt) == {"0x8004431a": 2, "bad_date": 1}

    # Delta 2 writes row 12 again, still failing with another code, and fixes row 20 (delta 1's).
    _batch(rt, "d2:patient/0", "load:d2:patient/0", [("12", "quarantined", "bad_date"), ("20", "created", None)],
           delta=True)
    assert _agrees(rt) == {"bad_date": 2}


def test_a_delta_delivered_again_after_a_crash_before_its_progress_row_subtracts_once(rt: Runtime):
    _batch(rt, "patient/0", "load:patient/0", [("1", "failed", "x"), ("2", "failed", "x"), ("3", "created", None)])
    # The first delivery journals the fix of rows 1 and 2, and dies before its progress row.
    _batch(rt, "d1:patient/0", "load:d1:patient/0", [("1", "created", None), ("2", "created", None)], delta=True,
           progress=False)
    assert journal_errors_by_code(rt, MID) == {} and _figure(rt) == {"x": 2}  # the window the doc names
    # The journal now says its own batch wrote them: the answer comes from the kept artifact.
    _batch(rt, "d1:patient/0", "load:d1:patient/0", [("1", "created", None), ("2", "created", None)], delta=True)
    assert _agrees(rt) == {}
    # And again, once complete: the same row, the same figure.
    _batch(rt, "d1:patient/0", "load:d1:patient/0", [("1", "created", None), ("2", "created", None)], delta=True)
    assert _agrees(rt) == {}
    [row] = [p for p in rt.migrations.progress(MID) if p.stage == "load:d1:patient/0"]
    assert row.cleared == {"x": 2} and row.errors == {}


def test_a_delta_that_replaces_no_failure_keeps_no_artifact(rt: Runtime):
    _batch(rt, "patient/0", "load:patient/0", [("1", "created", None), ("5", "failed", "x")])
    _batch(rt, "d1:patient/0", "load:d1:patient/0", [("1", "updated", None)], delta=True)
    assert not rt.artifacts.exists(MID, f"{failures.CLEARED}/load:d1:patient/0.json")
    assert _agrees(rt) == {"x": 1}


def test_failures_of_other_maps_and_ids_outside_the_batch_are_not_cleared(rt: Runtime):
    # Row keys sort by length first: "5" and "40" bracket "7", which the delta does not write.
    _batch(rt, "patient/0", "load:patient/0", [("5", "failed", "x"), ("7", "failed", "x"), ("40", "failed", "x")])
    _batch(rt, "guardian/0", "load:guardian/0", [("5", "failed", "y")], table="guardian")
    _batch(rt, "d1:patient/0", "load:d1:patient/0", [("5", "created", None), ("40", "created", None)], delta=True)
    assert _agrees(rt) == {"x": 1, "y": 1}


def test_attachments_of_a_delta_keep_their_own_row(rt: Runtime):
    _batch(rt, "sample:documents/0", "sample-attachments:0", [("D-1", "failed", "contact_missing")],
           table="documents")
    _batch(rt, "documents/0", "attachments:0", [("D-1", "failed", "contact_missing"), ("D-2", "created", None)],
           table="documents", supersedes="sample-attachments:0")
    assert _agrees(rt) == {"contact_missing": 1}
    _batch(rt, "d1:documents/0", "attachments:d1:0", [("D-1", "created", None)], table="documents", delta=True)
    assert _agrees(rt) == {}


def test_one_row_journaled_twice_in_a_batch_counts_as_its_last_entry():
    entries = [_entry("1", "failed", "x"), _entry("1", "created"), _entry("2", "quarantined", "q"),
               _entry("3", "skipped", "not_mapped")]
    assert errors_of(entries) == {"q": 1}


def _row(stage: str, *, errors: dict[str, int] | None = None, counts: dict[str, int] | None = None,
         cleared: dict[str, int] | None = None, supersedes: str | None = None) -> StageProgress:
    return StageProgress(migration_id=MID, stage=stage, status="done", counts=counts or {}, errors=errors,
                         cleared=cleared or {}, supersedes=supersedes, updated_at=T)


def test_rows_from_before_the_codes_fall_back_to_the_scan_only_when_they_had_failures():
    assert progress_errors([_row("discovery"), _row("load:patient/0", counts={"created": 3}),
                            _row("rollback:patient", counts={"deleted": 2}), _row("bind:patient/0")]) == {}
    assert progress_errors([_row("load:patient/0", counts={"failed": 1})]) is None
    assert progress_errors([_row("attachments:0", counts={"created": 1, "failed": 0, "skipped": 0})]) == {}
    # A superseded legacy row no longer matters; a cleared figure never goes below zero.
    assert progress_errors([_row("sample:patient/0", counts={"quarantined": 1}),
                            _row("load:patient/0", errors={"x": 1}, supersedes="sample:patient/0"),
                            _row("load:d1:patient/0", errors={}, cleared={"x": 1, "y": 2})]) == {}


def test_a_stored_row_without_the_new_fields_still_reads(rt: Runtime):
    legacy = json.dumps({"migration_id": MID, "stage": "load:patient/0", "status": "done", "counts": {"created": 2},
                         "updated_at": "2026-11-30T00:00:00Z"})
    rt.migrations.record_progress(MID, "discovery", "done", {})  # creates the table
    table = rt.tables.get_table_client(f"{rt.settings.table_prefix}progress")
    table.upsert_entity({"PartitionKey": MID, "RowKey": "load:patient%2F0", "Document": legacy})
    [row] = [p for p in rt.migrations.progress(MID) if p.stage == "load:patient/0"]
    assert row.errors is None and row.cleared == {} and row.supersedes is None
