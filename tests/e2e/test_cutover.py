"""Cutover on the virtual clock through the real layers: a migrated practice keeps working, the agent
extracts delta bundles from its database (an edit, an insert, a deletion) and uploads them with the SAS
the API hands out; the 15-minute timer has them applied in the order of their base chain, a repeated tick
applies nothing twice, go-live reconciles, and a delta after go-live is refused.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.upload import upload_bundle
from devtools import azurite
from devtools.canonical import canonical_state
from devtools.stack import (
    LocalStack,
    QuietProgress,
    drive_migration,
)
from shared.pipeline.cutover import refusal_path
from shared.state.failures import journal_errors_by_code
from shared.state.upload_sas import bundle_container
from tests.e2e.browser import render
from tests.e2e.support import extract_delta, tick, upload_delta, virtual_clock_practice

PATIENTS = 10
EDITED, NEW_PATIENT, NEW_APPOINTMENT, NEW_DOCUMENT = 3, 99001, 99001, 99001


class Cutover:
    def __init__(self, stack: LocalStack, migration_id: str, practice: Path, bundle: Path, work: Path) -> None:
        self.stack, self.migration_id, self.practice, self.bundle, self.work = stack, migration_id, practice, bundle, work
        self.rt = stack.runtime()
        self.bundles: dict[str, Path] = {}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.stack.request(method, f"/migrations/{self.migration_id}{path}", **kwargs)

    def state(self) -> dict[str, dict[str, Any]]:
        return canonical_state(self.stack.emulator.dump())

    def edit(self, *statements: str, params: tuple[Any, ...] = ()) -> None:
        conn = sqlite3.connect(self.practice)
        with conn:
            for sql in statements:
                conn.execute(sql, params if "?" in sql else ())
        conn.close()

    def extract_delta(self, name: str, base: Path) -> tuple[str, Path]:
        bundle_id, bundle_dir = extract_delta(self.practice, base, self.work / name, part_rows=40)
        self.bundles[bundle_id] = bundle_dir
        return bundle_id, bundle_dir

    def upload(self, bundle_dir: Path) -> dict[str, Any]:
        return upload_delta(self.stack, self.migration_id, bundle_dir)

    def tick(self) -> None:
        tick(self.stack.host, timeout=120)

    def cutover(self) -> dict[str, Any]:
        response = self.api("GET", "/cutover")
        assert response.status_code == 200, response.text
        return response.json()

    def journal(self) -> list[tuple[str, str, str, str]]:
        return sorted((e.table, e.source_id, e.action, e.batch + "@" + e.at.isoformat())
                      for e in self.rt.journal.entries(self.migration_id))

    def progress(self) -> list[tuple[str, str]]:
        return sorted((p.stage, p.updated_at.isoformat()) for p in self.rt.migrations.progress(self.migration_id))


@pytest.fixture(scope="module")
def cut(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cutover]:
    work = Path(tmp_path_factory.mktemp("cutover"))
    # The emulator's clock 300x the wall clock (60x is the default) and keys active at once: its per-request
    # server time is not this test's subject, and the suite has a time budget (devtools/stack.py FAST_EMULATOR).
    with virtual_clock_practice(azurite, work, PATIENTS, 23) as (stack, practice, bundle):
        result = drive_migration(stack, bundle, timeout=300, sample_patients=0)  # no sample stage: not this test's subject
        assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
        yield Cutover(stack, result["migration_id"], practice, bundle, work)


def _changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
             ) -> dict[str, tuple[set[str], set[str], set[str]]]:
    """table -> (added keys, removed keys, changed keys), tables without change left out."""
    out = {}
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, {}), after.get(table, {})
        added, removed = set(new) - set(old), set(old) - set(new)
        changed = {k for k in set(old) & set(new) if old[k] != new[k]}
        if added or removed or changed:
            out[table] = (added, removed, changed)
    return out


def test_cutover_and_deltas_wait_for_the_full_load(cut: Cutover):
    stack = cut.stack
    created = stack.api("POST", "/migrations", json={"name": "not started", "target": {
        "environment_url": stack.emulator.base_url}})
    other = created["migration"]["migration_id"]
    refused = stack.request("POST", f"/migrations/{other}/cutover", json={})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/wrong_stage")
    assert stack.request("POST", f"/migrations/{other}/deltas").status_code == 409
    assert cut.api("POST", "/cutover", json={"hours": 72}).status_code == 400  # 24 to 48 hours


def test_three_deltas_apply_exactly_their_changes_in_base_order(cut: Cutover):
    opened = cut.api("POST", "/cutover", json={"deletions": "delete"})
    assert opened.status_code == 202, opened.text
    assert opened.json()["cutover"]["status"] == "open" and opened.json()["cutover"]["hours"] == 48
    assert cut.stack.host.wait_idle(timeout=60)
    full_id = opened.json()["cutover"]["last_applied_bundle_id"]
    window = cut.cutover()["cutover"]
    assert window["window_started"]  # timed by the orchestration's (virtual) clock, which its expiry timer uses
    assert datetime.fromisoformat(window["closes_at"]) - datetime.fromisoformat(window["opened_at"]) == timedelta(hours=48)
    migrated = cut.state()

    # 1. edits: a patient's home phone (the contact's telephone2), with a fresh change stamp; and a procedure
    #    added to an open appointment whose own row does not change (its CDT codes come from its children)
    cut.edit(f"UPDATE v_patient SET home_phone = '303-555-0101', modified_at = '2099-01-01 08:00:00.000' "
             f"WHERE patient_id = {EDITED}")
    conn = sqlite3.connect(cut.practice)
    grown = conn.execute(
        "SELECT a.appointment_id FROM v_appt a JOIN v_definition d ON d.def_id = a.status_id WHERE a.broken = 0 "
        "AND lower(d.descript) NOT IN ('complete', 'completed', 'posted', 'checkout', 'checked out') "
        "AND a.patient_id != ? ORDER BY a.appointment_id LIMIT 1", (EDITED,)).fetchone()[0]
    code = conn.execute("SELECT proc_code_id FROM v_appt_proc WHERE proc_code_id NOT IN (SELECT proc_code_id FROM "
                        "v_appt_proc WHERE appointment_id = ?) ORDER BY proc_code_id LIMIT 1", (grown,)).fetchone()[0]
    conn.close()
    cut.edit("INSERT INTO v_appt_proc (appt_proc_id, appointment_id, seq, code_type, proc_id, proc_code_id, "
             "modified_at) VALUES (?, ?, 9, 1, NULL, ?, '2025-12-01 08:00:00.000')", params=(f"{grown}|9", grown, code))
    d1, d1_dir = cut.extract_delta("delta-1", cut.bundle)
    grant = cut.upload(d1_dir)
    assert grant["base_bundle_id"] == full_id
    assert cut.cutover()["ready"] == [d1]
    cut.tick()
    after_1 = cut.state()
    assert _changes(migrated, after_1) == {"contact": (set(), set(), {f"contact:P-{EDITED}"}),
                                           "appointment": (set(), set(), {f"appointment:A-{grown}"})}
    old_codes = migrated["appointment"][f"appointment:A-{grown}"].get("bw_cdtcodes")
    new_codes = after_1["appointment"][f"appointment:A-{grown}"].get("bw_cdtcodes")
    assert new_codes != old_codes and len(str(new_codes)) > len(str(old_codes or ""))
    assert after_1["contact"][f"contact:P-{EDITED}"]["telephone2"] != migrated["contact"][f"contact:P-{EDITED}"]["telephone2"]
    assert "303" in after_1["contact"][f"contact:P-{EDITED}"]["telephone2"]
    status = cut.cutover()
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [d1]
    assert status["cutover"]["last_applied_bundle_id"] == d1
    assert status["reports"][0]["tables"]["patient"]["upserted"] == 1
    assert status["reports"][0]["tables"]["appointment"]["upserted"] == 1

    # 2. an insert: a new patient with an appointment and its procedure
    conn = sqlite3.connect(cut.practice)
    conn.row_factory = sqlite3.Row
    patient = dict(conn.execute("SELECT * FROM v_patient WHERE patient_id = 1").fetchone())
    appointment = dict(conn.execute("SELECT * FROM v_appt ORDER BY appointment_id LIMIT 1").fetchone())
    procedure = dict(conn.execute("SELECT * FROM v_appt_proc WHERE appointment_id = ? LIMIT 1",
                                  (appointment["appointment_id"],)).fetchone())
    document = dict(conn.execute("SELECT * FROM v_document WHERE attach_type = 'patient' ORDER BY doc_id LIMIT 1"
                                 ).fetchone())
    conn.close()
    patient.update(patient_id=NEW_PATIENT, guar_id=NEW_PATIENT, fam_id=NEW_PATIENT, chart_num="NEW99001",
                   patient_guid="{00000000-0000-0000-0000-000000099001}", pri_insured_id=None, sec_insured_id=None,
                   modified_at="2099-01-02 09:00:00.000", created_at="2025-12-01 09:00:00.000")
    appointment.update(appointment_id=NEW_APPOINTMENT, patient_id=NEW_PATIENT, modified_at="2099-01-02 09:05:00.000")
    procedure.update(appt_proc_id=f"{NEW_APPOINTMENT}|1", appointment_id=NEW_APPOINTMENT,
                     modified_at="2099-01-02 09:05:00.000")
    document.update(doc_id=NEW_DOCUMENT, patient_id=NEW_PATIENT)  # an X-ray of the new patient (same file)
    if "modified_at" in document:
        document["modified_at"] = "2099-01-02 09:10:00.000"
    for table, row in (("v_patient", patient), ("v_appt", appointment), ("v_appt_proc", procedure),
                       ("v_document", document)):
        cut.edit(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                 params=tuple(row.values()))
    d2, d2_dir = cut.extract_delta("delta-2", d1_dir)

    # 3. a deletion: an appointment of another patient (and its procedures), extracted against delta 2
    conn = sqlite3.connect(cut.practice)
    deleted = conn.execute("SELECT appointment_id FROM v_appt WHERE patient_id NOT IN (?, ?) AND appointment_id != ? "
                           "ORDER BY appointment_id DESC LIMIT 1", (EDITED, NEW_PATIENT, grown)).fetchone()[0]
    conn.close()
    cut.edit(f"DELETE FROM v_appt WHERE appointment_id = {deleted}",
             f"DELETE FROM v_appt_proc WHERE appointment_id = {deleted}")
    d3, d3_dir = cut.extract_delta("delta-3", d2_dir)

    # Delta 3 arrives first: it waits for its base, and nothing changes.
    cut.upload(d3_dir)
    cut.tick()
    status = cut.cutover()
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [d1]
    assert [(w["bundle_id"], w["reason"]) for w in status["waiting"]] == [(d3, "waiting_for_base")]
    assert status["status"] == "waiting_for_base"
    assert cut.state() == after_1

    # Delta 2 arrives: one tick applies delta 2, then delta 3, in that order.
    cut.upload(d2_dir)
    cut.tick()
    status = cut.cutover()
    refused = [(e.table, e.source_id, e.code, e.reason) for e in cut.rt.journal.entries(cut.migration_id)
               if e.action in ("failed", "quarantined")]
    assert refused == [], str(refused)
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [d1, d2, d3]
    assert status["waiting"] == [] and status["ready"] == []
    applied_at = [d["applied_at"] for d in status["cutover"]["applied"]]
    assert applied_at == sorted(applied_at)
    after_3 = cut.state()
    changes = _changes(after_1, after_3)
    added_contacts, removed_contacts, changed_contacts = changes.pop("contact")
    assert (added_contacts, removed_contacts, changed_contacts) == ({f"contact:P-{NEW_PATIENT}"}, set(), set())
    added, removed, changed = changes.pop("appointment")
    assert added == {f"appointment:A-{NEW_APPOINTMENT}"} and removed == {f"appointment:A-{deleted}"}
    assert changed == set()
    new_appointment = after_3["appointment"][f"appointment:A-{NEW_APPOINTMENT}"]
    assert new_appointment["regardingobjectid"] == f"contact:P-{NEW_PATIENT}"
    assert new_appointment.get("bw_cdtcodes"), "the new appointment's procedure (a child row) was not applied"
    # The only other records touched: the appointments' activity parties and the new patient's SharePoint
    # folder location (its document's file went there).
    assert set(changes) <= {"activityparty", "sharepointdocumentlocation"}, sorted(changes)
    reports = {r["bundle_id"]: r for r in status["reports"]}
    assert reports[d2]["tables"]["patient"]["created"] == 1 and reports[d2]["tables"]["appointment"]["created"] == 1
    assert reports[d3]["tables"]["appointment"]["deleted"] == 1
    # The new patient's document: its file copied by the delta, journaled with the delta's batch.
    assert reports[d2]["tables"]["attachments"]["copied"] == 1
    copied = [e for e in cut.rt.journal.entries(cut.migration_id) if e.source_id == f"D-{NEW_DOCUMENT}"]
    # (Stamped after delta 2's watermark, the row travels again in delta 3: copied again, replacing the file.)
    assert [e.action for e in copied] == ["created"] and copied[0].batch.split(":")[0] in (d2, d3)
    assert copied[0].target_id
    journal = {(e.table, e.source_id): e for e in cut.rt.journal.entries(cut.migration_id)}
    assert journal[("appointment", f"A-{deleted}")].action == "deleted"
    # Rows stamped after a delta's watermark travel again in the next delta: re-applied, unchanged.
    assert journal[("patient", f"P-{NEW_PATIENT}")].action in ("created", "updated")
    assert status["cutover"]["watermark"] == reports[d3]["watermark"]

    # A repeated tick applies nothing twice: journal, progress and Dataverse stay as they are.
    journal_before, progress_before = cut.journal(), cut.progress()
    cut.tick()
    cut.tick()
    assert cut.journal() == journal_before and cut.progress() == progress_before
    assert cut.state() == after_3
    assert [d["bundle_id"] for d in cut.cutover()["cutover"]["applied"]] == [d1, d2, d3]
    # The status read's failure counts, kept on the progress rows through the deltas, are the journal's.
    view = cut.stack.api("GET", f"/migrations/{cut.migration_id}")
    assert view["errors_by_code"] == journal_errors_by_code(cut.rt, cut.migration_id)


def test_a_damaged_delta_is_refused_whole_and_the_chain_goes_on(cut: Cutover):
    # A delta whose table part no longer matches its manifest (damaged after upload) is refused as a whole:
    # nothing of it reaches Dataverse, the status names it, and the next delta is extracted from the last good one.
    cut.edit(f"UPDATE v_patient SET work_phone = '303-555-0909', modified_at = '2099-01-02 09:00:00.000' "
             f"WHERE patient_id = {EDITED}")
    last_base = cut.bundles[cut.cutover()["cutover"]["last_applied_bundle_id"]]
    damaged, damaged_dir = cut.extract_delta("delta-damaged", last_base)
    grant = cut.upload(damaged_dir)
    assert grant["base_bundle_id"] == cut.cutover()["cutover"]["last_applied_bundle_id"]
    manifest = json.loads((damaged_dir / "manifest.json").read_text())
    part = next(p["file"] for t in manifest["tables"] if t["name"] == "patient" for p in t["parts"] if p["rows"])
    container = cut.rt.blobs.get_container_client(bundle_container(cut.stack.prefix, cut.migration_id))
    # Same lines, other bytes (a gzip header with another time): the part's sha256 no longer matches.
    lines = gzip.decompress((damaged_dir / part).read_bytes())
    container.upload_blob(f"{cut.migration_id}/{damaged}/{part}", gzip.compress(lines, mtime=1), overwrite=True)
    before, applied = cut.state(), cut.cutover()["cutover"]["applied"]
    cut.tick()
    status = cut.cutover()
    assert cut.state() == before and status["cutover"]["applied"] == applied
    assert [(d["bundle_id"], d["reason"]) for d in status["refused"]] == [(damaged, "bundle_refused")]
    refusal = cut.rt.artifacts.get_json(cut.migration_id, refusal_path(damaged))
    assert refusal["code"] == "bundle_hash_mismatch" and part in refusal["message"]
    assert "303-555-0909" not in json.dumps(refusal)
    cut.tick()  # a refused delta is not tried again
    assert cut.state() == before
    assert cut.api("POST", "/deltas").json()["base_bundle_id"] == status["cutover"]["last_applied_bundle_id"]


def test_go_live_reconciles_to_completed_and_refuses_later_deltas(cut: Cutover):
    # A last delta uploaded right before go-live is applied by it.
    cut.edit(f"UPDATE v_patient SET work_phone = '303-555-0202', modified_at = '2099-01-03 08:00:00.000' "
             f"WHERE patient_id = {EDITED}")
    last_base = cut.bundles[cut.cutover()["cutover"]["last_applied_bundle_id"]]
    d4, d4_dir = cut.extract_delta("delta-4", last_base)
    cut.upload(d4_dir)
    response = cut.api("POST", "/go-live")
    assert response.status_code == 202, response.text
    final = cut.stack.host.wait_for(f"{cut.migration_id}:cutover", timeout=180)
    assert final["runtimeStatus"] == "Completed", final
    assert final["customStatus"]["stage"] == "completed" and final["output"]["reason"] == "go_live"
    status = cut.cutover()
    assert status["status"] == "cutover_closed" and status["cutover"]["closed_reason"] == "go_live"
    assert [d["bundle_id"] for d in status["cutover"]["applied"]][-1] == d4
    assert status["stage"] == "completed" and status["cutover"]["reconciliation"] == "completed"
    # The operator's view shows the migration's own stage, not the ended migration orchestrator's "done".
    assert cut.stack.api("GET", f"/migrations/{cut.migration_id}")["stage"] == "completed"
    assert "303" in str(cut.state()["contact"][f"contact:P-{EDITED}"]["telephone1"])

    report = cut.api("GET", "/reconciliation").json()
    assert report["verdict"] == "completed" and report["records_mismatched"] == 0
    assert report["deltas_applied"] == [d["bundle_id"] for d in status["cutover"]["applied"]]
    maps = {m["map"]: m for m in report["maps"]}
    conn = sqlite3.connect(cut.practice)
    patients = conn.execute("SELECT count(*) FROM v_patient").fetchone()[0]
    conn.close()
    assert maps["patient"]["expected"] == patients == maps["patient"]["target_records"]
    assert maps["appointment"]["journal_deleted"] == 1
    assert report["fields_checked"] > 500 and report["fields_matched"] == report["fields_checked"]
    csv_text = cut.api("GET", "/reconciliation", params={"format": "csv"}).text
    assert csv_text.splitlines()[0].startswith("map,target_table,action,source_rows")
    assert len(csv_text.splitlines()) == len(report["maps"]) + 1

    # No row value of the deltas reaches the orchestration's history (inputs, outputs, statuses) or the host log.
    history = json.dumps(cut.stack.host.status(f"{cut.migration_id}:cutover", history=True))
    assert cut.stack.host.log_path is not None
    log = cut.stack.host.log_path.read_text()
    for value in ("303-555-0101", "303-555-0202", "NEW99001"):
        assert value not in history and value not in log

    # After go-live: no SAS for a delta, and a delta uploaded anyway (an old SAS) is never applied.
    refused = cut.api("POST", "/deltas")
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/cutover_closed")
    assert cut.api("POST", "/go-live").json()["type"].endswith("/cutover_closed")
    cut.edit(f"UPDATE v_patient SET home_phone = '303-555-0303', modified_at = '2099-01-04 08:00:00.000' "
             f"WHERE patient_id = {EDITED}")
    d5, d5_dir = cut.extract_delta("delta-5", d4_dir)
    before = cut.state()
    upload_bundle(d5_dir, grant_url(cut), progress=QuietProgress())
    cut.tick()
    assert cut.state() == before
    refused = {r["bundle_id"]: r["reason"] for r in cut.cutover()["refused"]}
    assert refused[d5] == "cutover_closed" and "bundle_refused" in refused.values()  # the damaged one keeps its reason


def grant_url(cut: Cutover) -> str:
    """An upload SAS from the migration's general route (as an agent holding an older grant would have)."""
    return cut.stack.api("POST", f"/migrations/{cut.migration_id}/upload-sas")["upload_url"]


def test_the_reconciliation_report_renders_in_headless_chromium(cut: Cutover, tmp_path: Path):
    report = cut.api("GET", "/reconciliation").json()
    page = cut.api("GET", "/reconciliation", params={"format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    dom = render(page.text, tmp_path, "reconciliation", window="1200,1000", docs_name="reconciliation.png")
    assert f'<span id="records-expected">{report["records_expected"]}</span>' in dom
    assert '<span id="records-mismatched">0</span>' in dom
    assert f'<span id="fields-checked">{report["fields_checked"]}</span>' in dom
    assert f'<span id="deltas-applied">{len(report["deltas_applied"])}</span>' in dom
    assert 'id="verdict" class="completed"' in dom


def test_a_mismatch_beyond_the_tolerance_recommends_the_rollback(cut: Cutover):
    emulator = cut.stack.emulator
    record_id = next(rid for rid, row in emulator.rows("contact").items() if row.get("bw_sourceid") == "P-1")
    response = httpx.patch(f"{emulator.api_url}contacts({record_id})", json={"telephone2": "000-000-0000"},
                           headers={**emulator.headers_for("app-1"), "If-Match": "*"}, verify=emulator.verify)
    assert response.status_code == 204
    assert cut.api("POST", "/reconciliation").status_code == 202
    final = cut.stack.host.wait_for(f"{cut.migration_id}:reconcile", timeout=120)
    assert final["runtimeStatus"] == "Completed" and final["customStatus"]["stage"] == "rollback_recommended"
    report = cut.api("GET", "/reconciliation").json()
    assert report["verdict"] == "rollback_recommended"
    patient = next(m for m in report["maps"] if m["map"] == "patient")
    assert patient["field_mismatched_records"] == ["P-1"] and not patient["within_tolerance"]
    assert [(m["map"], m["record"], m["field"]) for m in report["mismatches"]] == [("patient", "P-1", "telephone2")]
    assert cut.cutover()["stage"] == "rollback_recommended"
