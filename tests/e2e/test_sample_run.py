"""The sample run before the full run, through the real layers: the orchestrator loads only a stratified
slice (its patients' records, the contacts they point at, the reference rows), diffs it and waits at
`awaiting_sample_approval`; approving runs the full load over it with no duplicate; rejecting ends the
run with `sample_rejected`, and the next start re-opens the map and samples again, still with no duplicate.

The API takes a sample of 0 or 100-300 patients; a 25-patient practice would be sampled whole, so the
tests set a smaller sample on the migration record before starting (the orchestrator reads it there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.upload import upload_bundle
from devhost.testing import run_sync
from devtools.stack import (
    LocalStack,
    QuietProgress,
    approve_until_sample,
    fresh_environment,
    target_for,
    wait_for_stage,
)
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.mapping.rows import source_id
from shared.mapping.spec import MappingSpec, load_approved
from shared.pipeline.sample_scope import SCOPE, SampleScope
from shared.state.failures import journal_errors_by_code
from shared.state.journal import JournalEntry
from tests.e2e.conftest import Practice as SharedPractice

SAMPLE = 6
TENANT = "practice-group-1"
RECORD_TABLES = ("contact", "appointment", "annotation")
"""Dataverse tables whose records the journal names one to one (plus every custom bw_ table)."""


class Practice:
    def __init__(self, stack: LocalStack, bundle: Path, started: list[str]) -> None:
        self.stack, self.bundle, self.started = stack, bundle, started
        self.rt = stack.runtime()
        self.reader = BundleReader.from_directory(bundle)

    def start(self, sample_patients: int = SAMPLE) -> str:
        """Create, set the sample's size on the record, upload and start, as the API's user would."""
        created = self.stack.api("POST", "/migrations", json={"name": "sample run", "target": target_for(self.stack)})
        migration_id = created["migration"]["migration_id"]
        migration = self.rt.migrations.get(TENANT, migration_id)
        migration.sample_patients = sample_patients
        self.rt.migrations.save(migration)
        upload = upload_bundle(self.bundle, created["upload"]["upload_url"], progress=QuietProgress())
        bundle_id = upload.prefix.rstrip("/").split("/")[-1]
        self.stack.api("POST", f"/migrations/{migration_id}/start", json={"bundle_id": bundle_id})
        self.started.append(migration_id)
        return migration_id

    def spec(self, migration_id: str) -> MappingSpec:
        migration = self.rt.migrations.get(TENANT, migration_id)
        return load_approved(self.rt.artifacts.get_json(
            migration_id, f"mapping/approved-v{migration.mapping_version}.json")).spec

    def scope(self, migration_id: str) -> SampleScope:
        return SampleScope.model_validate(self.rt.artifacts.get_json(migration_id, SCOPE))

    def journal(self, migration_id: str) -> list[JournalEntry]:
        return list(self.rt.journal.entries(migration_id))

    def post(self, path: str) -> Any:
        return self.stack.request("POST", path)


@pytest.fixture(scope="module")
def practice(e2e_stack: LocalStack, practice_25: SharedPractice) -> Iterator[Practice]:
    """The shared 25-patient practice and stack (tests/e2e/conftest.py), in an empty environment."""
    stack = fresh_environment(e2e_stack, practice_25.database)
    started: list[str] = []
    yield Practice(stack, practice_25.bundle, started)
    for migration_id in started:  # a run left waiting for its sample decision ends with the module
        if stack.host.status(migration_id).get("runtimeStatus") in ("Running", "Pending"):
            run_sync(stack.host.client().terminate(migration_id, "module done"))


def _records(stack: LocalStack) -> dict[str, dict[str, dict[str, Any]]]:
    rows = stack.emulator.dump()["rows"]
    return {table: records for table, records in rows.items()
            if table in RECORD_TABLES or table.startswith("bw_")}


def _files(stack: LocalStack) -> int:
    graph = stack.emulator.dump()["graph"]
    return sum(1 for drive in graph["drives"].values() for item in drive["items"].values() if not item.get("folder"))


def _expected_sample(practice: Practice, spec: MappingSpec, scope: SampleScope) -> dict[str, set[str]]:
    """Per written map, the source ids of the rows a sample of `scope` holds, worked out from the bundle:
    a sampled patient's own rows, the contact rows of `scope.contacts`, every row with no patient."""
    out: dict[str, set[str]] = {}
    for table_map in spec.enabled_tables():
        if table_map.action not in ("upsert", "attachment"):
            continue
        wanted = set(scope.contacts if table_map.source_table == "patient" else scope.patients)
        ids = set()
        for item in practice.reader.iter_table(table_map.source_table):
            if not isinstance(item, LoadedRow):
                continue
            row = item.row.model_dump()
            if table_map.selects(row) and ("patient_id" not in row or str(row["patient_id"]) in wanted):
                ids.add(source_id(table_map, row) or item.key)
        out[table_map.name] = ids
    return out


def _one_record_per_journal_entry(practice: Practice, journal: list[JournalEntry]) -> None:
    """Every record in the emulator's record tables is named by exactly one `created` journal entry."""
    records = _records(practice.stack)
    for table, rows in records.items():
        created = [e.target_id for e in journal if e.target_table == table and e.origin == "created"]
        assert len(created) == len(set(created)), table
        assert set(created) == set(rows), table


def test_the_run_stops_at_the_sample_with_only_the_slice_loaded_then_the_full_run_has_no_duplicate(
        practice: Practice):
    stack = practice.stack
    migration_id = practice.start()
    reviewed = approve_until_sample(stack, migration_id, timeout=300)
    status = reviewed["view"]["custom_status"]
    assert status["stage"] == "awaiting_sample_approval", reviewed["view"]
    summary = status["sample"]
    # The custom status carries counts and the rate, no ids or values.
    assert set(summary) == {"patients", "contacts", "records", "missing", "fields_checked", "fields_matched",
                            "mismatches", "match_rate", "report", "html"}
    assert summary["patients"] == SAMPLE and summary["mismatches"] == 0 and summary["missing"] == 0
    assert summary["match_rate"] == 1.0 and summary["fields_checked"] > 100

    spec, scope = practice.spec(migration_id), practice.scope(migration_id)
    assert len(scope.patients) == SAMPLE and set(scope.patients) <= set(scope.contacts)
    expected = _expected_sample(practice, spec, scope)
    journal = practice.journal(migration_id)
    assert {e.batch.split(":")[0] for e in journal} == {"sample"}
    by_map: dict[str, set[str]] = {}
    for entry in journal:
        if entry.code != "not_mapped":  # rows no map selects are journaled under one map, by row key
            by_map.setdefault(entry.table, set()).add(entry.source_id)
    for name, ids in expected.items():
        assert by_map.get(name, set()) == ids, name
    # Only the slice is in Dataverse: fewer contacts than the practice, all carriers and fee schedules.
    records = _records(stack)
    contacts = {row.get("bw_sourceid") for row in records["contact"].values()}
    assert contacts == {f"P-{pid}" for pid in scope.contacts}
    assert len(contacts) < len(list(practice.reader.iter_table("patient")))
    for reference in ("insurance_carrier", "fee_schedule", "fee_schedule_item"):
        rows = [i for i in practice.reader.iter_table(reference) if isinstance(i, LoadedRow)]
        assert len(by_map[reference]) == len(rows) > 0
    _one_record_per_journal_entry(practice, journal)
    # The sampled patients' documents are in SharePoint already (and no one else's).
    copied = [e for e in journal if e.table == "document" and e.action == "created"]
    assert _files(stack) == len(copied) > 0

    sample_created = {(e.table, e.source_id) for e in journal if (e.origin, e.action) == ("created", "created")}
    assert len(sample_created) > 100
    approved = stack.api("POST", f"/migrations/{migration_id}/sample/approve")
    assert approved["approved"] is True and approved["decided_by"] == "operator-1"
    assert approved["sample"]["match_rate"] == 1.0
    assert practice.rt.migrations.get(TENANT, migration_id).sample_approved_by == "operator-1"
    view = wait_for_stage(stack, migration_id, {"done"}, timeout=300)
    assert view["runtime_status"] == "Completed", view

    journal = practice.journal(migration_id)
    _one_record_per_journal_entry(practice, journal)
    for table, rows in _records(stack).items():
        keys = [row.get("bw_sourceid") for row in rows.values() if row.get("bw_sourceid")]
        assert len(keys) == len(set(keys)), table
    assert len(_records(stack)["contact"]) > len(contacts)
    # The sample's records keep origin and action `created`: the run created them, once.
    entries = {(e.table, e.source_id): e for e in journal}
    for key in sample_created:
        assert (entries[key].origin, entries[key].action) == ("created", "created"), key
    # The journal's counts are the final report's, and every source row is accounted for.
    report = stack.api("GET", f"/migrations/{migration_id}/report")
    assert report["unaccounted"] == {}
    # The status read's failure counts (progress rows: the full run's batches replace the sample's) are the journal's.
    view = stack.api("GET", f"/migrations/{migration_id}")
    assert view["errors_by_code"] == journal_errors_by_code(practice.rt, migration_id)
    assert dict(Counter((e.table, e.action) for e in journal)) == \
        {(m["map"], action): n for m in report["maps"] for action, n in m["actions"].items()}
    assert _files(stack) == sum(1 for e in journal if e.table == "document" and e.action == "created")

    again = practice.post(f"/migrations/{migration_id}/sample/approve")
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["type"].endswith("wrong_stage")


def test_a_rejected_sample_ends_the_run_and_the_next_start_reviews_the_map_and_samples_again(practice: Practice):
    stack = practice.stack
    stack.emulator.reset()
    migration_id = practice.start()
    early = practice.post(f"/migrations/{migration_id}/sample/reject")
    assert early.status_code == 409 and early.json()["type"].endswith("wrong_stage")

    reviewed = approve_until_sample(stack, migration_id, timeout=300)
    assert reviewed["view"]["custom_status"]["stage"] == "awaiting_sample_approval"
    first = _records(stack)
    rejected = stack.api("POST", f"/migrations/{migration_id}/sample/reject")
    assert rejected["approved"] is False
    view = wait_for_stage(stack, migration_id, {"sample_rejected"}, timeout=120)
    assert view["custom_status"]["stage"] == "sample_rejected"
    assert practice.stack.host.wait_for(migration_id)["runtimeStatus"] == "Completed"
    migration = practice.rt.migrations.get(TENANT, migration_id)
    assert migration.sample_rejected_by == "operator-1" and migration.mapping_version is not None
    late = practice.post(f"/migrations/{migration_id}/sample/approve")
    assert late.status_code == 409 and "not waiting" in late.json()["detail"]
    assert _records(stack) == first  # nothing beyond the sample was written

    # Start again: the map is open for review again (the user would fix it here), then a new sample.
    bundle_id = view["migration"]["bundle_id"]
    stack.api("POST", f"/migrations/{migration_id}/start", json={"bundle_id": bundle_id})
    reviewed = approve_until_sample(stack, migration_id, timeout=300)
    assert reviewed["view"]["custom_status"]["stage"] == "awaiting_sample_approval"
    migration = practice.rt.migrations.get(TENANT, migration_id)
    assert migration.sample_rejected_by is None and migration.mapping_version is not None
    assert practice.rt.artifacts.exists(migration_id, "sample/rejected-v1.json")
    again = _records(stack)
    assert {t: set(r) for t, r in again.items()} == {t: set(r) for t, r in first.items()}
    _one_record_per_journal_entry(practice, practice.journal(migration_id))
    # (approving now runs the full run as in the test above)

