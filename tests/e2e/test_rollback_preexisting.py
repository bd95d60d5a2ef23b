"""Records that were in Dynamics before the migration, through the real layers: the front desk had
already typed in one patient (same e-mail and birth date) and an earlier import had left one insurance
carrier (same name); a second patient matches two contacts. The migration updates the two matched
records in place (origin `preexisting`, before-images kept), writes the ambiguous patient as its own
record (journaled `ambiguous_match`, the two look-alikes untouched), and a re-run keeps all of that.
Rollback then gives both matched records back exactly as they were and deletes everything created:
the emulator's records equal the snapshot from before the migration.

Two things a rollback cannot give back and the comparison leaves out, on the restored records only:
`modifiedon` / `versionnumber` (Dataverse stamps every write, a restore too), and columns the
migration's schema added to a standard table (contact's `bw_*`), which the restored record holds as
null where before the column did not exist (they go with `remove_schema`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.stack import LocalStack, drive_migration, fresh_environment, synthetic_practice
from emulator.testing import RunningEmulator
from shared.dataverse.metadata import ColumnSpec
from shared.dataverse.schema import column_payload, label
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.pipeline.bundle import open_bundle
from shared.pipeline.load import load_batch
from shared.pipeline.preexisting import load_image
from shared.pipeline.rollback import RollbackReport, record_watermark
from shared.pipeline.rollback_html import summary_numbers
from shared.pipeline.schema import created_components
from shared.state.journal import JournalEntry
from tests.e2e.support import restored_view
from tests.e2e.test_rollback import _rollback

PATIENTS = 12
TENANT = "practice-group-1"


def _post(emulator: RunningEmulator, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{emulator.api_url}{path}", json=body, verify=emulator.verify,
                      headers={**emulator.headers_for("app-2"), "Content-Type": "application/json"})


def _record(emulator: RunningEmulator, entity_set: str, body: dict[str, Any]) -> str:
    deadline = time.monotonic() + 30
    while True:  # a table created a moment ago may not take rows yet (metadata propagation)
        response = _post(emulator, entity_set, body)
        if response.status_code == 204 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 204, response.text[:300]
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def _carrier_table(emulator: RunningEmulator) -> None:
    """An earlier import's carrier table: the primary name column only (the migration adds the rest)."""
    name = ColumnSpec(schema_name="bw_name", type="string", display_name="Name",
                      max_length=200)
    body = {"@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata", "SchemaName": "bw_InsuranceCarrier",
            "DisplayName": label("Insurance Carrier"), "DisplayCollectionName": label("Insurance Carriers"),
            "Description": label("Carriers of an earlier import"), "OwnershipType": "UserOwned",
            "IsActivity": False, "HasActivities": False, "HasNotes": False,
            "Attributes": [column_payload(name, primary_name=True)]}
    response = _post(emulator, "EntityDefinitions", body)
    assert response.status_code == 204, response.text[:300]


class Seeded:
    def __init__(self, stack: LocalStack, result: dict[str, Any], before: dict[str, Any], ids: dict[str, Any]
                 ) -> None:
        self.stack, self.result, self.before, self.ids = stack, result, before, ids
        self.migration_id = result["migration_id"]
        self.rt = stack.runtime()

    def journal(self, table: str) -> dict[str, JournalEntry]:
        return {e.source_id: e for e in self.rt.journal.entries(self.migration_id, table)}


@pytest.fixture(scope="module")
def seeded(e2e_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A 12-patient practice migrated in the shared end-to-end stack (tests/e2e/conftest.py) into an environment
    that already holds the front desk's and an earlier import's records."""
    work = Path(tmp_path_factory.mktemp("preexisting"))
    practice, bundle_dir = synthetic_practice(work, PATIENTS, 17, part_rows=40)
    reader = BundleReader.from_directory(bundle_dir)
    patients = [item.row.model_dump() for item in reader.iter_table("patient") if isinstance(item, LoadedRow)]
    insured = {str(item.row.model_dump()["patient_id"]) for item in reader.iter_table("patient_insurance")
               if isinstance(item, LoadedRow) and item.row.model_dump().get("rank") == 1}
    with_both = [p for p in patients if p.get("email") and p.get("birth_date")]
    # The matched patient has a primary coverage: an update map writes into the pre-existing contact too.
    matched = next(p for p in with_both if str(p["patient_id"]) in insured)
    ambiguous = next(p for p in with_both if p is not matched)
    carriers = [item.row.model_dump() for item in reader.iter_table("insurance_carrier")
                if isinstance(item, LoadedRow)]
    names = [str(c["ins_co_name"]).strip() for c in carriers if c.get("ins_co_name")]
    carrier = next(c for c in carriers if c.get("ins_co_name") and names.count(str(c["ins_co_name"]).strip()) == 1)
    stack = fresh_environment(e2e_stack, practice)
    emulator = stack.emulator
    _carrier_table(emulator)
    ids = {
        "contact": _record(emulator, "contacts", {
            "firstname": "Entered", "lastname": "At the front desk", "telephone1": "555-0101",
            "emailaddress1": matched["email"].upper(), "birthdate": str(matched["birth_date"])[:10]}),
        "carrier": _record(emulator, "bw_insurancecarriers", {"bw_name": str(carrier["ins_co_name"]).upper()}),
        "lookalikes": [_record(emulator, "contacts", {
            "lastname": f"Look-alike {n}", "emailaddress1": ambiguous["email"],
            "birthdate": str(ambiguous["birth_date"])[:10]}) for n in (1, 2)],
        "other": _record(emulator, "contacts", {"lastname": "Unrelated", "emailaddress1": "someone@else.example"}),
        "patient": f"P-{matched['patient_id']}", "ambiguous": f"P-{ambiguous['patient_id']}",
        "ins": f"IC-{carrier['ins_id']}",
    }
    before = emulator.dump()
    result = drive_migration(stack, bundle_dir, timeout=300)
    assert result["view"]["runtime_status"] == "Completed"
    return Seeded(stack, result, before, ids)


def test_the_matching_records_are_updated_in_place_with_their_before_images(seeded: Seeded):
    contacts = seeded.stack.emulator.rows("contact")
    patient = seeded.journal("patient")[seeded.ids["patient"]]
    assert (patient.action, patient.origin, patient.target_id) == ("updated", "preexisting", seeded.ids["contact"])
    assert contacts[seeded.ids["contact"]]["bw_sourceid"] == seeded.ids["patient"]
    assert contacts[seeded.ids["contact"]]["lastname"] != "At the front desk"  # the practice's values now
    image = load_image(seeded.rt, seeded.migration_id, str(patient.before_image))
    before = seeded.before["rows"]["contact"][seeded.ids["contact"]]
    assert image["lastname"] == "At the front desk" and image["telephone1"] == "555-0101"
    assert image["bw_sourceid"] is None and image["bw_chartnumber"] is None  # nulls are part of the image
    assert image["emailaddress1"] == before["emailaddress1"]

    carrier = seeded.journal("insurance_carrier")[seeded.ids["ins"]]
    assert (carrier.action, carrier.origin, carrier.target_id) == ("updated", "preexisting", seeded.ids["carrier"])
    assert seeded.stack.emulator.rows("bw_insurancecarrier")[seeded.ids["carrier"]]["bw_sourceid"] == seeded.ids["ins"]

    # The insurance columns an update map wrote on the matched contact have their own image.
    coverage = seeded.journal("patient_insurance_primary")[seeded.ids["patient"]]
    assert (coverage.action, coverage.origin, coverage.target_id) == ("updated", "preexisting", seeded.ids["contact"])
    coverage_image = load_image(seeded.rt, seeded.migration_id, str(coverage.before_image))
    assert "bw_primarysubscriberid" in coverage_image and "bw_PrimaryCarrierId@odata.bind" in coverage_image
    assert all(v is None for v in coverage_image.values())

    # Nobody else was matched: one record per other patient, created.
    origins = {e.origin for sid, e in seeded.journal("patient").items() if sid != seeded.ids["patient"]}
    assert origins == {"created"}


def test_an_ambiguous_patient_is_written_as_its_own_record_and_the_lookalikes_are_left_alone(seeded: Seeded):
    entry = seeded.journal("patient")[seeded.ids["ambiguous"]]
    assert (entry.action, entry.origin, entry.code) == ("created", "created", "ambiguous_match")
    assert entry.target_id not in seeded.ids["lookalikes"]
    contacts = seeded.stack.emulator.rows("contact")
    for record in seeded.ids["lookalikes"]:
        assert contacts[record] == seeded.before["rows"]["contact"][record]
    assert contacts[seeded.ids["other"]] == seeded.before["rows"]["contact"][seeded.ids["other"]]


def test_a_duplicate_delivery_that_read_the_journal_before_the_other_created_the_rows_keeps_them_created(
        seeded: Seeded, monkeypatch: pytest.MonkeyPatch):
    """Two deliveries of one batch side by side: the second read the journal's origins before the first had
    announced its rows, then found the records and updated them (the chaos run's seed 20261130 did this to a
    prescription). The journal must still say this migration created them, or a rollback leaves them behind."""
    migration = seeded.rt.migrations.get(TENANT, seeded.migration_id)
    first = seeded.journal("prescription")
    assert first and {(e.action, e.origin) for e in first.values()} == {("created", "created")}
    journal = seeded.rt.journal
    real = journal.existing_origins
    reads: list[int] = []

    def stale_first_read(migration_id: str, table: str, source_ids: Any) -> dict[str, Any]:
        reads.append(1)
        return {} if len(reads) == 1 else real(migration_id, table, source_ids)

    monkeypatch.setattr(journal, "existing_origins", stale_first_read)
    asyncio.run(load_batch(seeded.rt, migration, "prescription", 0))
    monkeypatch.undo()
    again = seeded.journal("prescription")
    assert reads, "the stale read was served"
    assert {sid: (e.action, e.origin, e.target_id) for sid, e in again.items()} == \
        {sid: ("created", "created", e.target_id) for sid, e in first.items()}


def test_a_rerun_keeps_the_origin_and_the_first_before_image_and_rollback_restores_everything(seeded: Seeded):
    migration = seeded.rt.migrations.get(TENANT, seeded.migration_id)
    first = {t: seeded.journal(t) for t in ("patient", "insurance_carrier")}
    # The two maps loaded again (a retried activity): the records are found by their source key now.
    reader = open_bundle(seeded.rt, migration)
    for table in ("patient", "insurance_carrier"):
        for part in range(reader.part_count(table)):
            asyncio.run(load_batch(seeded.rt, migration, table, part))
    for table, sid in (("patient", seeded.ids["patient"]), ("insurance_carrier", seeded.ids["ins"])):
        again = seeded.journal(table)[sid]
        assert (again.action, again.origin) == ("updated", "preexisting")
        assert (again.before_image, again.target_id) == (first[table][sid].before_image, first[table][sid].target_id)
    ambiguous = seeded.journal("patient")[seeded.ids["ambiguous"]]
    assert (ambiguous.origin, ambiguous.code) == ("created", "ambiguous_match")
    record_watermark(seeded.rt, migration)  # as the end of a re-run does: its own writes are not edits by others

    view = _rollback(seeded)  # type: ignore[arg-type] - it needs .stack and .migration_id only
    assert view["runtime_status"] == "Completed", view
    report = view["report"]
    assert report["verified"] and report["kept"] == [] and report["remaining"] == []
    numbers = summary_numbers(RollbackReport.model_validate(report))
    assert numbers["restored"] == 2  # the contact (its insurance columns in the same write) and the carrier
    page = seeded.stack.request("GET", f"/migrations/{seeded.migration_id}/rollback", params={"format": "html"})
    assert '<span id="restored">2</span>' in page.text
    assert f'<span id="deleted">{numbers["deleted"]}</span>' in page.text and numbers["deleted"] > 100
    after = seeded.stack.emulator.dump()
    restored = {seeded.ids["contact"], seeded.ids["carrier"]}
    assert restored_view(after["rows"], restored, seeded.before["rows"]) == \
        restored_view(seeded.before["rows"], restored, seeded.before["rows"])
    assert after["graph"] == seeded.before["graph"]
    undone = {(e.origin, e.action) for e in seeded.rt.journal.entries(seeded.migration_id)
              if e.origin in ("preexisting", "created")}
    assert undone == {("preexisting", "restored"), ("created", "deleted")}


def _schema(dump: dict[str, Any]) -> dict[str, Any]:
    """The metadata a schema build touches: tables with their columns, keys and navigation properties,
    relationships and global choices."""
    return {
        "tables": {name: {"columns": sorted(e["Attributes"]), "keys": sorted(e["Keys"]), "navs": sorted(e["Nav"]),
                          "collections": sorted(e["Collections"])} for name, e in dump["entities"].items()},
        "relationships": sorted(dump["relationships"]),
        "optionsets": sorted(dump["optionsets"]),
    }


def test_rollback_with_remove_schema_deletes_exactly_what_the_build_created(seeded: Seeded):
    created = created_components(seeded.rt, seeded.migration_id)
    assert "table:bw_treatmentplan" in created and "column:contact.bw_sourceid" in created
    assert "table:bw_insurancecarrier" not in created  # the earlier import's table: found, not created
    assert "column:bw_insurancecarrier.bw_groupnumber" in created and not any(
        c.startswith("table:") and not c.startswith("table:bw_") for c in created)

    view = _rollback(seeded, policy={"remove_schema": True})  # type: ignore[arg-type]
    assert view["runtime_status"] == "Completed", view
    report = view["report"]
    assert report["verified"] and report["schema_kept"] == {}
    assert set(report["schema_removed"]) == {c for c in created if not (
        c.startswith("column:") and c.split(":")[1].split(".")[0] in
        {t.split(":")[1] for t in created if t.startswith("table:")})}
    after = seeded.stack.emulator.dump()
    assert _schema(after) == _schema(seeded.before)
    restored = {seeded.ids["contact"], seeded.ids["carrier"]}
    # With the migration's columns gone, the restored records hold exactly their old values (a column the
    # emulator never stored reads as null, as it was); only the write stamps differ.
    assert restored_view(after["rows"], restored, {}) == restored_view(seeded.before["rows"], restored, {})
    for record, table in ((seeded.ids["contact"], "contact"), (seeded.ids["carrier"], "bw_insurancecarrier")):
        assert {k for k in after["rows"][table][record] if k.startswith("bw_")} <= \
            set(seeded.before["rows"][table][record])  # the migration's columns are gone with their values

    again = _rollback(seeded, policy={"remove_schema": True})  # type: ignore[arg-type]
    assert again["runtime_status"] == "Completed" and again["report"]["schema_kept"] == {}
    assert _schema(seeded.stack.emulator.dump()) == _schema(seeded.before)
