"""The cutover's edges through the real layers, on the virtual clock: one stack, one small practice, one delta
bundle extracted once and applied to three migrations of the same bundle (the emulator taken back to its
empty snapshot before each):

1. `deactivate`: a deleted appointment is canceled, deleted coverage and guardian rows (update maps) have
   the columns their map wrote cleared while the contacts stay; go-live reconciles them as cleared, not
   as mismatches; rollback still gives the emulator back its state from before the migration (a created
   contact deleted, a pre-existing one restored, their cleared columns included).
2. `report`, with the host killed in the middle of applying the delta and restarted: the delta ends
   applied exactly once (the canonical state and journal of the uninterrupted run of 1, but for the four
   records the two policies treat differently), its deletions only listed; then the window's expiry on
   the virtual clock closes the cutover and reconciles without go-live.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import azurite
from devtools.canonical import canonical_state, now_iso
from devtools.stack import (
    LocalStack,
    drive_migration,
)
from shared.pipeline import cutover
from tests.e2e.support import TICK, extract_delta, restored_view, tick, upload_delta, virtual_clock_practice

PATIENTS, SEED = 10, 11
TENANT = "practice-group-1"
"""The tenant of devtools.stack's OPERATOR."""
PRIMARY = ("bw_primarysubscriberid", "bw_primarygroupnumber", "bw_primaryrelationship", "bw_primaryeffectivedate",
           "bw_primarybenefitsused", "bw_primarydeductibleused", "bw_primaryremainingbenefits",
           "_bw_primarycarrierid_value")
GUARDIAN = ("bw_guardianrelationship", "bw_guardianisresponsible", "_bw_guardianid_value")


class Edges:
    """The shared stack, the practice, its full bundle and the one delta every migration here applies."""

    def __init__(self, stack: LocalStack, practice: Path, bundle: Path, work: Path) -> None:
        self.stack, self.practice, self.bundle, self.work = stack, practice, bundle, work
        self.rt = stack.runtime()
        self.empty = stack.emulator.snapshot()
        self.started = now_iso()
        self.picks = _pick(practice)
        self.delta_id, self.delta_dir = self._delta()
        self.reference: dict[str, Any] = {}
        """The uninterrupted `deactivate` run right after the delta: canonical state and journal counts."""

    def _delta(self) -> tuple[str, Path]:
        """Deletions (two primary coverages, a guardian link, an open appointment) and edits across several
        load waves (every patient, the other coverages, the other appointments), so a kill lands mid-delta."""
        p = self.picks
        conn = sqlite3.connect(self.practice)
        with conn:
            conn.execute("DELETE FROM v_patient_insurance WHERE pat_ins_id IN (?, ?)",
                         (f"{p['preexisting']}|1", f"{p['created']}|1"))
            conn.execute("DELETE FROM v_patient_guardian WHERE guardian_link_id = ?", (p["link"],))
            conn.execute("DELETE FROM v_appt WHERE appointment_id = ?", (p["appointment"],))
            conn.execute("DELETE FROM v_appt_proc WHERE appointment_id = ?", (p["appointment"],))
            conn.execute("UPDATE v_patient SET home_phone = '303-555-' || printf('%04d', patient_id), "
                         "modified_at = '2099-01-01 08:00:00.000'")
            conn.execute("UPDATE v_patient_insurance SET benefits_used = coalesce(benefits_used, 0) + 100, "
                         "modified_at = '2099-01-01 08:00:00.000'")
            # Open appointments only: a completed one is read-only in Dynamics once closed (the load keeps it).
            conn.execute("UPDATE v_appt SET note = 'moved by the front desk', modified_at = '2099-01-01 08:00:00.000' "
                         "WHERE broken = 0 AND status_id IN (SELECT def_id FROM v_definition WHERE lower(descript) "
                         "NOT IN ('complete', 'completed', 'posted', 'checkout', 'checked out'))")
        conn.close()
        return extract_delta(self.practice, self.bundle, self.work / "delta", part_rows=4)

    def migrate(self, deletions: str, hours: int = 48) -> Run:
        """A fresh environment (the front desk's one contact in it), the full migration, the window opened."""
        self.stack.emulator.restore(self.empty)
        p = self.picks
        response = httpx.post(f"{self.stack.emulator.api_url}contacts", verify=self.stack.emulator.verify,
                              headers={**self.stack.emulator.headers_for("app-2"), "Content-Type": "application/json"},
                              json={"firstname": "Entered", "lastname": "At the front desk", "telephone1": "555-0101",
                                    "emailaddress1": p["email"], "birthdate": p["birth_date"]})
        assert response.status_code == 204, response.text[:300]
        before = self.stack.emulator.dump()
        result = drive_migration(self.stack, self.bundle, timeout=300, sample_patients=0)
        assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
        run = Run(self, result["migration_id"], before)
        opened = run.api("POST", "/cutover", json={"deletions": deletions, "hours": hours})
        assert opened.status_code == 202, opened.text
        assert self.stack.host.wait_idle(timeout=60)
        return run


class Run:
    """One migration of the shared bundle."""

    def __init__(self, edges: Edges, migration_id: str, before: dict[str, Any]) -> None:
        self.edges, self.migration_id, self.before = edges, migration_id, before
        self.stack, self.rt = edges.stack, edges.rt

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.stack.request(method, f"/migrations/{self.migration_id}{path}", **kwargs)

    def upload_delta(self) -> None:
        grant = upload_delta(self.stack, self.migration_id, self.edges.delta_dir)
        assert grant["base_bundle_id"] == json.loads((self.edges.bundle / "manifest.json").read_text())["bundle_id"]

    def tick(self, seconds: float = TICK) -> None:
        tick(self.stack.host, seconds)

    def cutover(self) -> dict[str, Any]:
        response = self.api("GET", "/cutover")
        assert response.status_code == 200, response.text
        return response.json()

    def contacts(self) -> dict[str, dict[str, Any]]:
        """Contacts by source key, lookups as `_<column>_value` ids (as the Web API reads them)."""
        out = {}
        for row in self.stack.emulator.rows("contact").values():
            if row.get("bw_sourceid"):
                view = {k: v for k, v in row.items() if not isinstance(v, dict)}
                view.update({f"_{k}_value": v["id"] for k, v in row.items() if isinstance(v, dict) and "id" in v})
                out[str(row["bw_sourceid"])] = view
        return out

    def record(self, table: str, sid: str) -> dict[str, Any]:
        return next(row for row in self.stack.emulator.rows(table).values() if row.get("bw_sourceid") == sid)

    def journal(self) -> dict[tuple[str, str], Any]:
        return {(e.table, e.source_id): e for e in self.rt.journal.entries(self.migration_id)}

    def journal_counts(self, skip: Collection[tuple[str, str]] = ()) -> Counter[tuple[str, str, str, str]]:
        """(map, action, origin, code) counts of the rows not in `skip` ((map, source id)); a file's code is its
        document location's generated id: left out."""
        return Counter((e.table, e.action, e.origin, str(e.code) if e.target_table != "sharepoint" else "-")
                       for e in self.rt.journal.entries(self.migration_id) if (e.table, e.source_id) not in skip)

    def canonical(self) -> dict[str, dict[str, Any]]:
        return canonical_state(self.stack.emulator.dump(), created_after=self.edges.started)

    def reconciliation(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        report = self.api("GET", "/reconciliation").json()
        return report, {m["map"]: m for m in report["maps"]}


def _pick(practice: Path) -> dict[str, Any]:
    """Ids of the rows the delta deletes (ids only: the test output carries no row values)."""
    conn = sqlite3.connect(practice)
    insured = [r for r in conn.execute(
        "SELECT p.patient_id, p.email, p.birth_date FROM v_patient_insurance i JOIN v_patient p USING (patient_id) "
        "WHERE i.rank = 1 AND p.patient_id NOT IN (SELECT patient_id FROM v_patient_insurance WHERE rank = 2) "
        "ORDER BY p.patient_id").fetchall()]
    preexisting = next(r for r in insured if r[1] and r[2])  # the front desk typed this one in (e-mail, birth date)
    created = next(r for r in insured if r[0] != preexisting[0])
    link, minor = conn.execute(
        "SELECT guardian_link_id, patient_id FROM v_patient_guardian WHERE patient_id NOT IN (?, ?) AND patient_id IN "
        "(SELECT patient_id FROM v_patient_guardian GROUP BY patient_id HAVING count(*) = 1) ORDER BY patient_id",
        (preexisting[0], created[0])).fetchone()
    appointment = conn.execute(
        "SELECT a.appointment_id FROM v_appt a JOIN v_definition d ON d.def_id = a.status_id WHERE a.broken = 0 "
        "AND lower(d.descript) NOT IN ('complete', 'completed', 'posted', 'checkout', 'checked out') "
        "ORDER BY a.appointment_id LIMIT 1").fetchone()[0]
    coverages = conn.execute("SELECT count(*) FROM v_patient_insurance WHERE rank = 1").fetchone()[0]
    guardians = conn.execute("SELECT count(DISTINCT patient_id) FROM v_patient_guardian").fetchone()[0]
    conn.close()
    return {"preexisting": preexisting[0], "email": preexisting[1], "birth_date": str(preexisting[2])[:10],
            "created": created[0], "link": link, "minor": minor, "appointment": appointment,
            "coverages": coverages, "guardians": guardians}


@pytest.fixture(scope="module")
def edges(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    work = Path(tmp_path_factory.mktemp("cutover-edges"))
    with virtual_clock_practice(azurite, work, PATIENTS, SEED) as (stack, practice, bundle):
        yield Edges(stack, practice, bundle, work)


def _sids(edges: Edges) -> tuple[str, str, str, str]:
    p = edges.picks
    return f"P-{p['preexisting']}", f"P-{p['created']}", f"P-{p['minor']}", f"A-{p['appointment']}"


def test_deactivate_clears_update_map_columns_cancels_created_records_and_rollback_undoes_it(edges: Edges):
    run = edges.migrate("deactivate")
    preexisting, created, minor, appointment = _sids(edges)
    migrated = run.contacts()
    assert all(migrated[sid].get(c) is not None for sid in (preexisting, created) for c in PRIMARY)
    assert all(migrated[minor].get(c) is not None for c in GUARDIAN)
    assert run.journal()[("patient", preexisting)].origin == "preexisting"

    run.upload_delta()
    run.tick()
    status = run.cutover()
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [edges.delta_id]
    tables = status["reports"][0]["tables"]
    assert tables["patient_insurance_primary"]["cleared"] == 2 and tables["guardian"]["cleared"] == 1
    assert tables["appointment"]["deactivated"] == 1 and status["reports"][0]["reported_deletions"] == []
    assert "deleted" not in tables.get("patient", {}) and "deactivated" not in tables.get("patient", {})

    after = run.contacts()
    for sid in (preexisting, created):  # the columns the coverage map wrote are cleared; the contact stays, active
        assert all(after[sid].get(c) is None for c in PRIMARY), sid
        assert after[sid]["statecode"] == 0
        assert "".join(ch for ch in str(after[sid]["telephone2"]) if ch.isdigit()).endswith(f"555{int(sid[2:]):04d}")
    assert all(after[minor].get(c) is None for c in GUARDIAN) and after[minor]["statecode"] == 0
    insured_left = [sid for sid, row in after.items() if row.get("bw_primarysubscriberid") is not None]
    assert len(insured_left) == edges.picks["coverages"] - 2  # the other coverages untouched (and updated)
    assert (run.record("appointment", appointment)["statecode"], run.record("appointment", appointment)["statuscode"]) \
        == (2, 4)

    journal = run.journal()
    for key, origin in ((("patient_insurance_primary", preexisting), "preexisting"),
                        (("patient_insurance_primary", created), "none"), (("guardian", minor), "none")):
        entry = journal[key]
        assert (entry.action, entry.code, entry.origin, entry.batch) == \
            ("updated", cutover.CLEARED, origin, f"{edges.delta_id}:deletions"), key
    assert journal[("patient_insurance_primary", preexisting)].before_image  # rollback gives the image back
    assert (journal[("appointment", appointment)].action, journal[("appointment", appointment)].code) == \
        ("updated", "source_deleted:deactivated")
    assert journal[("patient", created)].action != "deleted" and journal[("patient", preexisting)].action == "updated"
    records = {(r["map"], r["source_id"]): r for r in
               run.rt.artifacts.get_json(run.migration_id, f"{cutover.REPORTS}/{edges.delta_id}/deletions.json")["records"]}
    assert records[("patient_insurance_primary", created)]["source_key"] == f"{edges.picks['created']}|1"

    # Idempotent: the deletions applied again (a retried activity) write nothing and say the same.
    state, entries = edges.stack.emulator.dump()["rows"], sorted(map(repr, run.rt.journal.entries(run.migration_id)))
    first = run.rt.artifacts.get_json(run.migration_id, f"{cutover.REPORTS}/{edges.delta_id}/deletions.json")
    migration = run.rt.migrations.get(TENANT, run.migration_id)
    again = asyncio.run(cutover.apply_deletions(run.rt, migration, edges.delta_id))
    assert again.model_dump(mode="json") == first
    assert edges.stack.emulator.dump()["rows"] == state
    assert sorted(map(repr, run.rt.journal.entries(run.migration_id))) == entries
    edges.reference = {"canonical": run.canonical(), "journal": run.journal_counts(skip={
        ("patient_insurance_primary", preexisting), ("patient_insurance_primary", created), ("guardian", minor),
        ("appointment", appointment)})}

    # Go-live: the cleared records count as cleared (journal and Dataverse agree), not as mismatches.
    assert run.api("POST", "/go-live").status_code == 202
    final = edges.stack.host.wait_for(f"{run.migration_id}:cutover", timeout=180)
    assert final["runtimeStatus"] == "Completed" and final["output"]["reason"] == "go_live", final
    report, maps = run.reconciliation()
    assert report["verdict"] == "completed" and report["records_mismatched"] == 0, \
        [(m["map"], m["mismatched_records"]) for m in report["maps"] if m["mismatched_records"]]
    primary = maps["patient_insurance_primary"]
    assert (primary["expected"], primary["journal_written"], primary["journal_cleared"], primary["target_records"]) \
        == (edges.picks["coverages"] - 2,) * 2 + (2, edges.picks["coverages"] - 2)
    guardian = maps["guardian"]
    assert (guardian["expected"], guardian["journal_cleared"], guardian["target_records"]) == \
        (edges.picks["guardians"] - 1, 1, edges.picks["guardians"] - 1)
    assert maps["appointment"]["retained_deletions"] == 1

    # Rollback over the cutover: the created contact goes with its cleared columns, the front desk's contact
    # gets its image back, and the emulator holds what it held before the migration.
    rolled = _rollback(run)
    assert rolled["runtime_status"] == "Completed" and rolled["report"]["verified"], rolled.get("custom_status")
    assert rolled["report"]["kept"] == [] and rolled["report"]["remaining"] == []
    front_desk = next(rid for rid, row in run.before["rows"]["contact"].items() if row.get("telephone1") == "555-0101")
    after_rows = edges.stack.emulator.dump()["rows"]
    assert restored_view(after_rows, {front_desk}, run.before["rows"]) == \
        restored_view(run.before["rows"], {front_desk}, run.before["rows"])


def _rollback(run: Run, timeout: float = 240) -> dict[str, Any]:
    run.stack.api("POST", f"/migrations/{run.migration_id}/rollback", json={})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = run.stack.api("GET", f"/migrations/{run.migration_id}/rollback")
        if view.get("runtime_status") in ("Completed", "Failed", "Terminated"):
            return view
        time.sleep(0.2)
    raise TimeoutError("the rollback did not end")


def _outside(state: dict[str, dict[str, Any]], records: set[str]) -> dict[str, dict[str, Any]]:
    """A canonical state without these records (`table:source key`)."""
    return {table: {k: v for k, v in rows.items() if k not in records} for table, rows in state.items()}


def test_report_lists_deletions_a_host_killed_mid_delta_applies_it_once_and_the_window_expires(edges: Edges):
    assert edges.reference, "runs after the uninterrupted deactivate run (its state is the reference)"
    run = edges.migrate("report", hours=24)
    preexisting, created, minor, appointment = _sids(edges)
    migrated, journal_before = run.contacts(), run.journal()
    appointment_before = run.record("appointment", appointment)
    run.upload_delta()

    # The pickup starts; the host dies (SIGKILL) after the delta's first batch, and comes back on the same clock.
    stage = f"load:{edges.delta_id}:"
    host = run.stack.host
    host.advance(TICK)
    deadline = time.monotonic() + 120
    while not any(p.stage.startswith(stage) for p in run.rt.migrations.progress(run.migration_id)):
        assert time.monotonic() < deadline, "the delta did not start"
        time.sleep(0.02)
    host.clock_start = host.http().get("/admin/devhost/clock").json()["now"]
    host.kill()
    done_at_kill = {p.stage for p in run.rt.migrations.progress(run.migration_id) if p.stage.startswith(stage)}
    assert not _window(run)["applied"]  # killed before the delta's commit
    host.start()
    deadline = time.monotonic() + 240
    while not _window(run)["applied"]:
        assert time.monotonic() < deadline, "the delta was not finished after the restart"
        time.sleep(0.2)
    assert host.wait_idle(timeout=180)
    done = {p.stage for p in run.rt.migrations.progress(run.migration_id) if p.stage.startswith(stage)}
    assert done_at_kill < done  # batches were still to run when the host died

    # Applied exactly once: the same records and journal as the uninterrupted run, but for the four records
    # whose deletion the two policies treat differently (checked below).
    deleted = {f"contact:{preexisting}", f"contact:{created}", f"contact:{minor}", f"appointment:{appointment}"}
    assert _outside(run.canonical(), deleted) == _outside(edges.reference["canonical"], deleted)
    keys = {("patient_insurance_primary", preexisting), ("patient_insurance_primary", created), ("guardian", minor),
            ("appointment", appointment)}
    assert run.journal_counts(skip=keys) == edges.reference["journal"]
    status = run.cutover()
    assert [d["bundle_id"] for d in status["cutover"]["applied"]] == [edges.delta_id]

    # `report`: the deletions listed, nothing of them changed in Dynamics or in the journal.
    delta = status["reports"][0]
    assert {(r["map"], r["source_id"], r["outcome"]) for r in delta["reported_deletions"]} == {
        ("patient_insurance_primary", preexisting, "reported"), ("patient_insurance_primary", created, "reported"),
        ("guardian", minor, "reported"), ("appointment", appointment, "reported")}
    assert delta["tables"]["patient_insurance_primary"]["reported_deletions"] == 2
    after = run.contacts()
    for sid in (preexisting, created):
        assert {c: after[sid].get(c) for c in PRIMARY} == {c: migrated[sid].get(c) for c in PRIMARY}
    assert {c: after[minor].get(c) for c in GUARDIAN} == {c: migrated[minor].get(c) for c in GUARDIAN}
    held = run.record("appointment", appointment)
    assert (held["statecode"], held["statuscode"]) == (appointment_before["statecode"], appointment_before["statuscode"])
    journal = run.journal()
    for key in keys:
        assert (journal[key].action, journal[key].code, journal[key].batch) == \
            (journal_before[key].action, journal_before[key].code, journal_before[key].batch), key

    # A tick after the restart applies nothing again.
    state, entries = run.canonical(), sorted(map(repr, run.rt.journal.entries(run.migration_id)))
    run.tick()
    assert run.canonical() == state and sorted(map(repr, run.rt.journal.entries(run.migration_id))) == entries

    # The window's end on the virtual clock: no go-live, the cutover closes as expired and reconciles.
    assert status["cutover"]["hours"] == 24 and not status["cutover"]["go_live_requested"]
    host.advance(24 * 3600)
    final = host.wait_for(f"{run.migration_id}:cutover", timeout=180)
    assert final["runtimeStatus"] == "Completed" and final["output"]["reason"] == "expired", final
    status = run.cutover()
    assert status["status"] == "cutover_closed" and status["cutover"]["closed_reason"] == "expired"
    assert status["stage"] == "completed" and status["cutover"]["reconciliation"] == "completed"
    report, maps = run.reconciliation()
    assert report["verdict"] == "completed" and report["records_mismatched"] == 0, \
        [(m["map"], m["mismatched_records"]) for m in report["maps"] if m["mismatched_records"]]
    assert report["deltas_applied"] == [edges.delta_id]
    primary = maps["patient_insurance_primary"]
    # Reported deletions stay in the journal and in Dynamics on purpose: kept, not mismatched.
    assert (primary["expected"], primary["journal_written"], primary["target_records"], primary["retained_deletions"],
            primary["journal_cleared"]) == (edges.picks["coverages"] - 2, edges.picks["coverages"],
                                            edges.picks["coverages"], 2, 0)
    assert (maps["guardian"]["retained_deletions"], maps["appointment"]["retained_deletions"]) == (1, 1)
    refused = run.api("POST", "/deltas")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/cutover_closed")


def _window(run: Run) -> dict[str, Any]:
    migration = run.rt.migrations.get(TENANT, run.migration_id)
    assert migration.cutover is not None
    return migration.cutover.model_dump()
