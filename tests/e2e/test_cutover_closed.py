"""Closed appointments through cutover, on the virtual clock: one small practice, one migration, one delta.

Completed and canceled appointments are read-only in Dataverse (dataverse.md §4.7). The delta edits the note
of a completed, a canceled and an open appointment, and completes another open one. The open one is updated;
the one completed during cutover is written and closed (it was still open in Dataverse); the completed and
canceled ones stay as Dataverse holds them, journaled `closed_read_only` with the changed field named (never
its value) and counted `kept_read_only` in the delta report. Go-live completes: the reconciliation lists them
as kept read-only instead of counting them as mismatches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import azurite
from devtools.stack import (
    LocalStack,
    drive_migration,
)
from shared.pipeline import closed
from tests.e2e.support import extract_delta, tick, upload_delta, virtual_clock_practice

PATIENTS, SEED = 10, 2
"""Seed 2: its ten patients have completed, canceled and at least two open appointments."""
DONE = "('complete', 'completed', 'posted', 'checkout', 'checked out')"
EDITED = "2099-01-01 08:00:00.000"


def _pick(practice: Path) -> dict[str, int]:
    """Appointment ids (ids only: no row values in the test output): completed, canceled, two open ones, and a
    status id meaning completed."""
    conn = sqlite3.connect(practice)
    base = "SELECT a.appointment_id, a.status_id FROM v_appt a JOIN v_definition d ON d.def_id = a.status_id WHERE "
    completed = conn.execute(base + f"a.broken = 0 AND lower(d.descript) IN {DONE} ORDER BY 1").fetchone()
    canceled = conn.execute(base + "a.broken = 1 ORDER BY 1").fetchone()
    open_ = conn.execute(base + f"a.broken = 0 AND lower(d.descript) NOT IN {DONE} ORDER BY 1 LIMIT 2").fetchall()
    conn.close()
    assert completed and canceled and len(open_) == 2, "the synthetic practice lacks an appointment kind"
    return {"completed": completed[0], "done_status": completed[1], "canceled": canceled[0],
            "open": open_[0][0], "completing": open_[1][0]}


class Closed:
    def __init__(self, stack: LocalStack, practice: Path, bundle: Path, work: Path) -> None:
        self.stack, self.practice, self.bundle, self.work = stack, practice, bundle, work
        self.rt = stack.runtime()
        self.picks = _pick(practice)
        result = drive_migration(stack, bundle, timeout=300, sample_patients=0)
        assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
        self.migration_id = result["migration_id"]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.stack.request(method, f"/migrations/{self.migration_id}{path}", **kwargs)

    def record(self, sid: str) -> dict[str, Any]:
        return next(r for r in self.stack.emulator.rows("appointment").values() if r.get("bw_sourceid") == sid)

    def delta(self) -> str:
        """Edit the notes of the four appointments and complete one open one; extract and upload the delta."""
        p = self.picks
        conn = sqlite3.connect(self.practice)
        with conn:
            conn.execute("UPDATE v_appt SET note = 'edited at the front desk ' || appointment_id, modified_at = ? "
                         "WHERE appointment_id IN (?, ?, ?, ?)",
                         (EDITED, p["completed"], p["canceled"], p["open"], p["completing"]))
            conn.execute("UPDATE v_appt SET status_id = ? WHERE appointment_id = ?", (p["done_status"], p["completing"]))
        conn.close()
        bundle_id, bundle_dir = extract_delta(self.practice, self.bundle, self.work / "delta", part_rows=4)
        upload_delta(self.stack, self.migration_id, bundle_dir)
        return bundle_id

    def tick(self) -> None:
        tick(self.stack.host)


@pytest.fixture(scope="module")
def run(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    work = Path(tmp_path_factory.mktemp("cutover-closed"))
    with virtual_clock_practice(azurite, work, PATIENTS, SEED) as (stack, practice, bundle):
        yield Closed(stack, practice, bundle, work)


def test_a_delta_editing_closed_appointments_keeps_them_read_only_and_go_live_does_not_count_them(run: Closed):
    p = run.picks
    completed, canceled, open_, completing = (f"A-{p[k]}" for k in ("completed", "canceled", "open", "completing"))
    before = {sid: run.record(sid) for sid in (completed, canceled, open_, completing)}
    assert [before[sid]["statecode"] for sid in (completed, canceled, open_, completing)] == [1, 2, 0, 0]
    assert run.api("POST", "/cutover", json={"hours": 48}).status_code == 202
    assert run.stack.host.wait_idle(timeout=60)

    delta_id = run.delta()
    run.tick()
    status = run.api("GET", "/cutover").json()
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [delta_id]
    appointments = status["reports"][0]["tables"]["appointment"]
    assert appointments[closed.KEPT_COUNT] == 2 and appointments.get("failed", 0) == 0, appointments

    # The open one is updated; the one completed at the practice is written, then closed as completed.
    assert run.record(open_).get("description") != before[open_].get("description")
    assert run.record(open_)["statecode"] == 0
    assert run.record(completing).get("description") != before[completing].get("description")
    assert (run.record(completing)["statecode"], run.record(completing)["statuscode"]) == (1, 3)
    # The closed ones are as Dataverse held them, journaled read-only with the field named, no value.
    journal = {e.source_id: e for e in run.rt.journal.entries(run.migration_id, "appointment")}
    for sid in (completed, canceled):
        assert {k: v for k, v in run.record(sid).items() if k not in ("modifiedon", "versionnumber")} == \
            {k: v for k, v in before[sid].items() if k not in ("modifiedon", "versionnumber")}, sid
        entry = journal[sid]
        assert (entry.action, entry.code, entry.batch.startswith(delta_id)) == \
            ("unchanged", closed.CLOSED_READ_ONLY, True), sid
        assert closed.changed_in_reason(entry.reason) == ["description"], sid
        assert "front desk" not in str(entry.reason)
    assert journal[open_].action == "updated" and journal[completing].action == "updated"
    assert journal[open_].code != closed.CLOSED_READ_ONLY

    # Go-live: the read-only records are listed, not mismatched; the migration completes.
    assert run.api("POST", "/go-live").status_code == 202
    final = run.stack.host.wait_for(f"{run.migration_id}:cutover", timeout=180)
    assert final["runtimeStatus"] == "Completed" and final["output"]["reason"] == "go_live", final
    report = run.api("GET", "/reconciliation").json()
    maps = {m["map"]: m for m in report["maps"]}
    assert report["verdict"] == "completed" and report["records_mismatched"] == 0, \
        [(m["map"], m["mismatched_records"]) for m in report["maps"] if m["mismatched_records"]]
    assert [(k["map"], k["record"], k["fields"]) for k in report["kept_read_only"]] == \
        sorted([("appointment", completed, ["description"]), ("appointment", canceled, ["description"])])
    assert maps["appointment"]["kept_read_only"] == 2 and report["records_kept_read_only"] == 2
    assert all(m["record"] not in (completed, canceled) for m in report["mismatches"])
    page = run.api("GET", "/reconciliation", params={"format": "html"}).text
    assert '<span id="kept-read-only">2</span>' in page and f"<td>{completed}</td>" in page
