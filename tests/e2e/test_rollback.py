"""Audit log and compensating rollback through the real layers: a migrated practice's journal as CSV,
then rollback back to the emulator's state from before the migration (data rows and SharePoint items),
uninterrupted, and with the host killed halfway while a record edited by someone else is kept.

The custom schema the migration built stays (rollback removes data, not tables), so the comparison is
over the records of `dump()["rows"]` (tables the schema build added are there, empty) and `dump()["graph"]`.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.stack import LocalStack
from shared.pipeline.audit import AUDIT_CSV, COLUMNS
from tests.e2e.browser import render
from tests.e2e.conftest import MigratedPractice


@pytest.fixture(scope="module")
def migrated(migrated_practice: MigratedPractice) -> MigratedPractice:
    """The shared migrated practice (25 patients, tests/e2e/conftest.py), as its migration left it, with
    the emulator's state from before the migration (`before`)."""
    shared = migrated_practice.restore()
    assert shared.result["view"]["runtime_status"] == "Completed"
    return shared


def _data(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by table, tables without records left out (the kept custom tables are empty after rollback)."""
    return {table: records for table, records in rows.items() if records}


def _get_text(stack: LocalStack, path: str, **params: str) -> httpx.Response:
    return stack.request("GET", path, params=params)


def _csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def test_the_audit_log_counts_equal_the_final_report_and_its_blob_copy(migrated: MigratedPractice):
    response = _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/audit")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = _csv(response.text)
    audit = Counter((row["table"], row["action"]) for row in rows)
    report = {(m["map"], action): n for m in migrated.result["report"]["maps"] for action, n in m["actions"].items()}
    assert dict(audit) == report
    assert sum(audit.values()) > 500
    # ... and the load's progress counters (one row per batch of a map).
    progress: Counter[tuple[str, str]] = Counter()
    for row in migrated.stack.api("GET", f"/migrations/{migrated.migration_id}")["progress"]:
        if row["stage"].startswith("load:"):
            table = row["stage"][len("load:"):].rsplit("/", 1)[0]
            progress.update({(table, action): n for action, n in row["counts"].items()})
    loaded = {key: n for key, n in audit.items() if key[0] in {t for t, _ in progress}}
    assert dict(progress) == loaded and len(loaded) > 10
    stored = migrated.rt.artifacts.get_bytes(migrated.migration_id, AUDIT_CSV).decode()
    assert _csv(stored) == rows

    table, action = next((m["map"], a) for m in migrated.result["report"]["maps"] for a in m["actions"]
                         if a == "created")
    filtered = _csv(_get_text(migrated.stack, f"/migrations/{migrated.migration_id}/audit",
                              table=table, action=action).text)
    assert len(filtered) == report[(table, action)]
    assert {(r["table"], r["action"]) for r in filtered} == {(table, action)}
    refused = _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/audit", action="exploded")
    assert refused.status_code == 400


def _sample_diff(migrated: MigratedPractice, timeout: float = 120) -> dict[str, Any]:
    stack = migrated.stack
    stack.api("POST", f"/migrations/{migrated.migration_id}/sample/diff", json={"patients": 150})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = stack.api("GET", f"/migrations/{migrated.migration_id}")
        status = migrated.stack.host.status(f"{migrated.migration_id}:sample-diff")
        if status and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            assert status["runtimeStatus"] == "Completed", view
            return stack.api("GET", f"/migrations/{migrated.migration_id}/sample/diff")
        time.sleep(0.2)
    raise TimeoutError("the sample diff did not end")


def test_a_clean_sample_matches_every_field_and_the_html_report_says_so(migrated: MigratedPractice):
    diff = _sample_diff(migrated)
    assert diff["patients"] == migrated.result["report"]["source_rows"]["patient"]  # all of them (<150)
    assert diff["fields_checked"] > 1000
    assert diff["fields_matched"] == diff["fields_checked"] and diff["match_rate"] == 1.0
    assert diff["mismatches"] == []
    assert all(check["passed"] for check in diff["checks"]), [c["name"] for c in diff["checks"] if not c["passed"]]
    assert {s.split("|")[0] for s in diff["strata"]} == {"none", "primary", "dual"}
    page = _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/sample/diff", format="html")
    assert page.headers["content-type"].startswith("text/html")
    assert f'<span id="fields-checked">{diff["fields_checked"]}</span>' in page.text
    assert '<span id="match-rate">100.00%</span>' in page.text


def test_the_html_report_renders_in_headless_chromium_with_its_summary_numbers(migrated: MigratedPractice,
                                                                                tmp_path: Path):
    diff = migrated.stack.api("GET", f"/migrations/{migrated.migration_id}/sample/diff")
    page = _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/sample/diff", format="html")
    assert page.status_code == 200
    dom = render(page.text, tmp_path, "diff", window="1100,900", docs_name="sample-diff.png")
    assert f'<span id="patients">{diff["patients"]}</span>' in dom
    assert f'<span id="fields-checked">{diff["fields_checked"]}</span>' in dom
    assert f'<span id="fields-matched">{diff["fields_matched"]}</span>' in dom
    assert '<span id="mismatch-count">0</span>' in dom


def test_the_sample_diff_reports_exactly_the_injected_error(migrated: MigratedPractice):
    emulator = migrated.stack.emulator
    contacts = sorted((row["bw_sourceid"], rid) for rid, row in emulator.rows("contact").items()
                      if str(row.get("bw_sourceid", "")).startswith("P-") and row.get("bw_chartnumber"))[:2]
    for _, record_id in contacts:  # a wrong value where the transform's result should be
        response = httpx.patch(f"{emulator.api_url}contacts({record_id})", json={"bw_chartnumber": "WRONG-1"},
                               headers={**emulator.headers_for("app-1"), "If-Match": "*"}, verify=emulator.verify)
        assert response.status_code == 204
    diff = _sample_diff(migrated)
    assert sorted((m["map"], m["field"], m["record"]) for m in diff["mismatches"]) == \
        [("patient", "bw_chartnumber", key) for key, _ in contacts]
    assert all(m["actual"] == "WRONG-1" and m["expected"] != "WRONG-1" for m in diff["mismatches"])
    assert diff["fields_matched"] == diff["fields_checked"] - 2
    rows = _csv_rows(_get_text(migrated.stack, f"/migrations/{migrated.migration_id}/sample/diff",
                               format="csv").text)
    assert sorted((r["map"], r["field"], r["record"]) for r in rows) == \
        [("patient", "bw_chartnumber", key) for key, _ in contacts]


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _rollback(migrated: MigratedPractice, kill_at_step: int | None = None, timeout: float = 240,
              policy: dict[str, Any] | None = None) -> dict[str, Any]:
    stack = migrated.stack
    stack.api("POST", f"/migrations/{migrated.migration_id}/rollback", json=policy or {})
    deadline = time.monotonic() + timeout
    killed = False
    while time.monotonic() < deadline:
        try:
            view = stack.api("GET", f"/migrations/{migrated.migration_id}/rollback")
        except httpx.TransportError:  # the host is restarting
            time.sleep(0.2)
            continue
        status = view.get("custom_status") or {}
        if kill_at_step is not None and not killed and status.get("stage") == "rollback" \
                and status.get("step", 0) >= kill_at_step:
            stack.host.kill()
            stack.host.start()
            killed = True
            continue
        if view.get("runtime_status") in ("Completed", "Failed", "Terminated"):
            view["killed"] = killed
            return view
        time.sleep(0.1)
    raise TimeoutError("the rollback did not end")


def test_rollback_returns_the_emulator_to_its_state_from_before_the_migration(migrated: MigratedPractice):
    migrated.restore()
    view = _rollback(migrated)
    assert view["runtime_status"] == "Completed"
    assert view["custom_status"]["stage"] == "rolled_back"
    after = migrated.stack.emulator.dump()
    assert _data(after["rows"]) == _data(migrated.before["rows"])
    assert after["graph"] == migrated.before["graph"]
    report = view["report"]
    assert report["verified"] and report["remaining"] == [] and report["kept"] == []
    actions = Counter(e.action for e in migrated.rt.journal.entries(migrated.migration_id) if e.origin == "created")
    assert set(actions) == {"deleted"}

    # Idempotent: a second rollback finds nothing left to do and changes nothing.
    again = _rollback(migrated)
    assert again["runtime_status"] == "Completed" and again["report"]["verified"]
    assert sum(n for step in again["report"]["steps"] for k, n in step["counts"].items()
               if k != "already_gone") == 0
    assert _data(migrated.stack.emulator.dump()["rows"]) == _data(migrated.before["rows"])


def test_a_rollback_killed_halfway_finishes_and_keeps_a_record_someone_else_edited(migrated: MigratedPractice):
    migrated.restore()
    emulator = migrated.stack.emulator
    edited_id, edited = next((rid, row) for rid, row in emulator.rows("contact").items()
                             if str(row.get("bw_sourceid", "")).startswith("P-"))
    response = httpx.patch(f"{emulator.api_url}contacts({edited_id})", json={"telephone2": "555-0100"},
                           headers={**emulator.headers_for("app-2"), "If-Match": "*"}, verify=emulator.verify)
    assert response.status_code == 204

    view = _rollback(migrated, kill_at_step=3)
    assert view["killed"], "the host was killed during the rollback"
    assert view["runtime_status"] == "Completed"
    report = view["report"]
    assert report["verified"] and report["remaining"] == []
    assert [(k["target_table"], k["target_id"], k["reason"]) for k in report["kept"]] == \
        [("contact", edited_id, "edited_after_migration")]

    after = emulator.dump()
    assert after["rows"]["contact"] == {edited_id: {**after["rows"]["contact"][edited_id]}}
    assert after["rows"]["contact"][edited_id]["telephone2"] == "555-0100"
    rows = {table: dict(records) for table, records in after["rows"].items()}
    rows["contact"] = {}
    assert _data(rows) == _data(migrated.before["rows"])
    assert after["graph"] == migrated.before["graph"]
    assert edited["bw_sourceid"] in {e.source_id for e in migrated.rt.journal.entries(migrated.migration_id)
                                     if e.action == "created"}


def test_the_rollback_report_renders_in_headless_chromium_with_its_summary_numbers(migrated: MigratedPractice,
                                                                                    tmp_path: Path):
    """After the killed rollback above (one contact kept): the HTML page from the API, rendered."""
    from shared.pipeline.rollback import RollbackReport
    from shared.pipeline.rollback_html import summary_numbers

    report = RollbackReport.model_validate(migrated.stack.api("GET", f"/migrations/{migrated.migration_id}/rollback")
                                           ["report"])
    numbers = summary_numbers(report)
    assert numbers["kept-edited"] == 1 and numbers["kept"] == 1 and numbers["remaining"] == 0
    assert numbers["deleted"] > 100 and numbers["files-deleted"] > 0
    page = _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/rollback", format="html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    dom = render(page.text, tmp_path, "rollback", docs_name="rollback-report.png")
    for element, value in numbers.items():
        assert f'<span id="{element}">{value}</span>' in dom, element
    kept = report.kept[0]
    assert f"<td>{kept.target_id}</td>" in dom and "edited_after_migration" in dom
    assert 'id="verdict">verified' in dom
    assert _get_text(migrated.stack, f"/migrations/{migrated.migration_id}/rollback",
                     format="pdf").status_code == 400


def test_a_sharepoint_file_edited_after_the_upload_is_kept_and_listed_unless_overridden(migrated: MigratedPractice):
    migrated.restore()
    emulator = migrated.stack.emulator
    entry = next(e for e in migrated.journal if e.target_table == "sharepoint" and e.origin == "created")
    drive = next(d for d in emulator.dump()["graph"]["drives"].values() if entry.target_id in d["items"])
    response = httpx.put(f"{emulator.graph_url}/drives/{drive['id']}/items/{entry.target_id}/content",
                         content=b"annotated by the hygienist", verify=emulator.verify,
                         headers={**emulator.headers_for("app-2", graph=True), "Content-Type": "application/pdf"})
    assert response.status_code == 200, response.text[:200]

    view = _rollback(migrated)
    report = view["report"]
    assert report["verified"] and report["remaining"] == []
    assert [(k["target_table"], k["target_id"], k["reason"]) for k in report["kept"]] == \
        [("sharepoint", entry.target_id, "edited_after_upload")]
    after = emulator.dump()
    kept_drive = next(d for d in after["graph"]["drives"].values() if entry.target_id in d["items"])
    assert kept_drive["items"][entry.target_id]["size"] == len(b"annotated by the hygienist")
    assert sum(1 for d in after["graph"]["drives"].values() for i in d["items"].values() if not i["folder"]) == 1
    # Every record is undone but the kept file's document location (and the library location and site
    # record it hangs from): the file stays reachable from Dynamics should its contact be restored.
    rows, before = _data(after["rows"]), _data(migrated.before["rows"])
    assert {t for t in rows.keys() | before.keys() if rows.get(t) != before.get(t)} == \
        {"sharepointdocumentlocation", "sharepointsite"}
    locations = rows["sharepointdocumentlocation"]
    assert entry.code in locations and len(locations) == 2 and len(rows["sharepointsite"]) == 1

    forced = _rollback(migrated, policy={"override_edited": True})
    assert forced["report"]["kept"] == [] and forced["report"]["verified"]
    final = emulator.dump()
    assert final["graph"] == migrated.before["graph"]
    assert _data(final["rows"]) == _data(migrated.before["rows"])
