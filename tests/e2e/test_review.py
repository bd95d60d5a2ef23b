"""The review steps a user takes through the API: a bad map edit is refused field by field, and a schema
plan over the licence is refused before anything is built in Dataverse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from devhost.testing import run_sync
from devtools.stack import (
    LocalStack,
    create_and_start,
    fresh_environment,
    synthetic_practice,
    target_for,
    wait_for_stage,
)
from shared.dentrix.reader import BundleReader


@pytest.fixture(scope="module")
def stack_and_bundle(e2e_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStack, Path]:
    """A 12-patient practice and the shared end-to-end stack (tests/e2e/conftest.py) with an environment for it."""
    work = Path(tmp_path_factory.mktemp("review"))
    practice, bundle = synthetic_practice(work, 12, 5)
    return fresh_environment(e2e_stack, practice), bundle


def _started(stack: LocalStack, bundle: Path) -> str:
    migration_id, _ = create_and_start(stack, bundle, name="review")
    wait_for_stage(stack, migration_id, {"awaiting_mapping_approval"})
    return migration_id


def _put(stack: LocalStack, migration_id: str, draft: dict[str, Any]) -> Any:
    return stack.request("PUT", f"/migrations/{migration_id}/mapping", json=draft)


def test_a_bad_map_edit_is_refused_with_field_level_errors_and_nothing_is_saved(stack_and_bundle):
    stack, bundle = stack_and_bundle
    migration_id = _started(stack, bundle)
    draft = stack.api("GET", f"/migrations/{migration_id}/mapping")["draft"]
    edited = copy.deepcopy(draft)
    patient = next(t for t in edited["tables"] if t["name"] == "patient")
    patient["fields"].append({"source": "no_such_column", "target": "bw_whatever", "type": "string"})
    gender = next(f for f in patient["fields"] if f["target"] == "gendercode")
    gender["type"] = "integer"  # a picklist column cannot hold a plain integer
    response = _put(stack, migration_id, edited)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/mapping_invalid")
    patient_index = draft["tables"].index(next(t for t in draft["tables"] if t["name"] == "patient"))
    gender_index = next(i for i, f in enumerate(patient["fields"]) if f["target"] == "gendercode")
    found = {(tuple(error["loc"]), error["code"]) for error in problem["errors"]}
    assert found == {
        (("tables", patient_index, "fields", gender_index, "type"), "type_cannot_hold"),
        (("tables", patient_index, "fields", len(patient["fields"]) - 1, "source", 0), "unknown_source_column"),
    }
    assert stack.api("GET", f"/migrations/{migration_id}/mapping")["draft"] == draft
    run_sync(stack.host.client().terminate(migration_id, "test done"))


def test_a_schema_plan_over_the_licence_is_refused_before_anything_is_built(stack_and_bundle):
    stack, bundle = stack_and_bundle
    stack.emulator.reset()
    migration_id = _started(stack, bundle)
    draft = stack.api("GET", f"/migrations/{migration_id}/mapping")["draft"]
    recall = next(t for t in draft["tables"] if t["name"] == "recall")
    # Seven more custom tables on top of the default nine: over Sales Professional's 15.
    for number in range(2, 9):
        extra = copy.deepcopy(recall)
        extra.update(name=f"recall_copy{number}", target_table=f"bw_recalltask{number}",
                     schema_name=f"bw_RecallTask{number}", display_name=f"Recall Task {number}",
                     display_collection_name=f"Recall Tasks {number}")
        extra["key"] = {**extra["key"], "prefix": "R" + "ABCDEFGH"[number - 1]}
        draft["tables"].append(extra)
    response = _put(stack, migration_id, draft)
    assert response.status_code == 200, response.text[:500]
    stack.api("POST", f"/migrations/{migration_id}/mapping/approve")
    wait_for_stage(stack, migration_id, {"awaiting_schema_approval"})
    plan = stack.api("GET", f"/migrations/{migration_id}/schema-plan")
    assert plan["report"]["custom_table_count"] == 16 and plan["report"]["fits_licence"] is False
    assert "licence_exceeded" in {p["code"] for p in plan["report"]["problems"]}
    refused = stack.request("POST", f"/migrations/{migration_id}/schema-plan/approve", json={})
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/schema_plan_refused")
    assert "custom tables" in refused.json()["detail"]
    assert [name for name in stack.emulator.dump()["entities"] if name.startswith("bw_")] == []
    run_sync(stack.host.client().terminate(migration_id, "test done"))


def test_an_approval_that_never_comes_times_out_with_a_clear_status(stack_and_bundle):
    stack, bundle = stack_and_bundle
    migration_id, _ = create_and_start(stack, bundle, name="unattended", approval_timeout_hours=0.001)  # 3.6 s
    view = wait_for_stage(stack, migration_id, {"mapping_approval_timed_out"}, timeout=120)
    assert view["custom_status"]["stage"] == "mapping_approval_timed_out"
    assert stack.host.wait_for(migration_id)["runtimeStatus"] == "Completed"
    assert ("mapping", "timed_out") in {(p["stage"], p["status"]) for p in view["progress"]}


def test_attachments_can_go_to_notes_and_files_over_the_limit_are_listed_not_dropped(stack_and_bundle):
    from devtools.stack import drive_migration

    stack, bundle = stack_and_bundle
    stack.emulator.reset()
    files = sorted(4 * ((entry.bytes + 2) // 3) for entry in BundleReader.from_directory(bundle).iter_files())
    limit = files[len(files) // 2]  # as Base64, about half the files are over it
    try:
        # The host runs in its own process: it reads the limit from the environment of a new host.
        stack.host.stop()
        stack.host.extra_env["BRIDGEWORK_NOTE_ATTACHMENT_LIMIT"] = str(limit)
        stack.host.start()
        result = drive_migration(stack, bundle, target=target_for(stack, attachments="notes"), timeout=300)
    finally:
        stack.host.stop()
        stack.host.extra_env.pop("BRIDGEWORK_NOTE_ATTACHMENT_LIMIT", None)
        stack.host.start()
    document = next(m for m in result["report"]["maps"] if m["map"] == "document")
    over = sum(1 for size in files if size > limit)
    assert document["reasons"].get("too_large") == over > 0
    assert document["actions"]["created"] == len(files) - over
    notes = [row for row in stack.emulator.rows("annotation").values() if row.get("isdocument")]
    assert len(notes) == len(files) - over
    assert result["report"]["unaccounted"] == {}
