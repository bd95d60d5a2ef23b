"""PHI never leaks into what operators and Azure keep: a practice whose names and notes carry a marker
string is migrated end to end, then every host log line, every orchestration's input, output, custom
status and history (exception messages included) is searched for the marker.

The emulator's own state is not searched: it is the destination, where the data belongs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.extract import extract
from agent.synth import synthesize, view_name
from devtools.stack import LocalStack, drive_migration, fresh_environment
from shared.state.failures import journal_errors_by_code

MARKER = "ZZPHIMARKER"
PATIENTS = 12


def _mark(database: Path) -> int:
    """Put the marker into names, notes and free text, and into one value that fails validation
    (so a quarantine reason, an error path, sees it too). Returns how many values were marked."""
    conn = sqlite3.connect(database)
    with conn:
        patient, note, appt = view_name("patient"), view_name("clinical_note"), view_name("appointment")
        marked = conn.execute(f'UPDATE "{patient}" SET last_name = last_name || \'{MARKER}\', '
                              f"first_name = '{MARKER}' || first_name, preferred_name = '{MARKER}'").rowcount
        marked += conn.execute(f'UPDATE "{note}" SET note_text = COALESCE(note_text, \'\') || \' {MARKER} note\'').rowcount
        marked += conn.execute(f'UPDATE "{appt}" SET note = \'{MARKER} call first\', '
                               f"patient_name = '{MARKER}'").rowcount
        conn.execute(f'UPDATE "{patient}" SET birth_date = \'{MARKER}-not-a-date\' '
                     f'WHERE rowid = (SELECT MAX(rowid) FROM "{patient}")')
    conn.close()
    return marked


@pytest.fixture(scope="module")
def marked_run(e2e_stack: LocalStack,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStack, dict[str, Any], Path]:
    """The marked practice migrated in the shared end-to-end stack (tests/e2e/conftest.py). The host and its log
    are shared with the other end-to-end modules: every line and every orchestration of this migration is
    searched, and the other migrations' (unmarked practices) must be free of the marker anyway."""
    work = Path(tmp_path_factory.mktemp("phi"))
    practice = work / "practice.db"
    synth = synthesize(practice, PATIENTS, 7)
    assert _mark(practice) > PATIENTS
    bundle = extract(str(practice), work / "bundle", files_root=synth.files_root, part_rows=40)
    stack = fresh_environment(e2e_stack, practice)
    result = drive_migration(stack, bundle.bundle_dir, timeout=300)
    assert stack.host.log_path is not None
    return stack, result, stack.host.log_path


def test_the_marked_practice_reached_the_destination(marked_run):
    stack, result, _ = marked_run
    assert result["view"]["runtime_status"] == "Completed"
    contacts = stack.emulator.rows("contact").values()
    assert any(MARKER.lower() in json.dumps(row).lower() for row in contacts), "the marker must reach Dataverse"
    # The marked invalid birth date took the error path (quarantine), whose reason is logged and journaled.
    assert any(o["actions"].get("quarantined") for o in result["report"]["maps"]), result["report"]["maps"]


def test_no_marker_in_any_host_log_line(marked_run):
    _, _, log = marked_run
    text = log.read_text(errors="replace")
    assert "function " in text  # the log is the host's, and it logged the run
    leaking = [n for n, line in enumerate(text.splitlines(), 1) if MARKER.lower() in line.lower()]
    assert leaking == [], f"host.log lines {leaking[:10]} carry patient data"


def test_no_marker_in_any_orchestration_status_or_history(marked_run):
    stack, result, _ = marked_run
    http, key = stack.host.http(), stack.host.key
    instances = http.get("/runtime/webhooks/durabletask/instances",
                         params={"code": key, "showInput": "true"}).json()
    # The migration and its sub-orchestrations (`<id>:...`); the shared host holds other modules' too.
    ids = {i["instanceId"] for i in instances if i["instanceId"].split(":")[0] == result["migration_id"]}
    assert result["migration_id"] in ids and len(ids) > 1
    leaking = []
    for instance_id in sorted(ids):
        status = stack.host.status(instance_id, history=True)
        assert status.get("historyEvents"), instance_id
        if MARKER.lower() in json.dumps(status).lower():
            leaking.append(instance_id)
    assert leaking == [], f"instances {leaking} carry patient data in input, output, custom status or history"


def test_the_operator_view_and_report_carry_no_marker(marked_run):
    stack, result, _ = marked_run
    view = stack.api("GET", f"/migrations/{result['migration_id']}")
    assert view["tables"] and view["timings"]["started_at"] and view["links"]["history"]
    assert sum(view["errors_by_code"].values()) >= 1  # the quarantined patient, counted by its code
    # Kept on the progress rows (a status read scans no journal), it equals the journal's failures.
    assert view["errors_by_code"] == journal_errors_by_code(stack.runtime(), result["migration_id"])
    patient = next(t for t in view["tables"] if t["table"] == "patient")
    assert patient["batches_done"] >= 1 and sum(patient["counts"].values()) >= PATIENTS - 1
    assert "code=" not in json.dumps(view["links"])  # the system key is never handed out
    assert MARKER.lower() not in json.dumps(view).lower()
    assert MARKER.lower() not in json.dumps(result["report"]).lower()


def test_after_the_start_no_upload_sas_can_overwrite_the_applied_manifest(marked_run):
    # Not about PHI: it reuses this module's finished migration to prove the start route sealed the bundle.
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContainerClient

    from agent.upload import parse_sas_url

    stack, result, _ = marked_run
    grant = stack.api("POST", f"/migrations/{result['migration_id']}/upload-sas")
    container = ContainerClient.from_container_url(parse_sas_url(grant["upload_url"]).container_url)
    manifest = container.get_blob_client(f"{result['migration_id']}/{result['bundle_id']}/manifest.json")
    with pytest.raises(HttpResponseError) as refused:
        manifest.upload_blob(b"{}", overwrite=True)
    assert refused.value.status_code == 412
