"""profile_bundle on a faulted 60-patient synthetic practice: every figure checked against the SQLite source."""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

from agent.synth import CUSTOM_COLUMNS
from shared.dentrix import normalise as n
from shared.dentrix.reader import BundleReader
from shared.dentrix.tables import TABLES, get_table
from shared.discovery import EstimateSettings, profile_bundle
from shared.discovery.report import DiscoveryReport
from tests.agent.test_pipeline import _expected, _source_rows
from tests.shared.discovery.conftest import MISSING_CLAIM, Case


def _truth(db: Path, table: str) -> dict[str, dict[str, Any]]:
    """key -> the bundle row the source row becomes (registry columns read from the source, plus custom columns)."""
    spec = get_table(table)
    out = {}
    for raw in _source_rows(db, table):
        row = {
            c.name: _expected(c, raw[c.source_name])
            if c.kind != "tooth" or raw[c.source_name] != "ZZ"
            else None
            for c in spec.columns
            if c.source_name in raw
        }
        for custom in CUSTOM_COLUMNS.get(table, ()):
            row[custom] = n.normalise_text(raw[custom]) if isinstance(raw[custom], str) else raw[custom]
        out[n.normalise_id(raw[spec.key])] = row
    return out


def _loaded(case: Case, table: str) -> dict[str, dict[str, Any]]:
    rows = _truth(case.db, table)
    rows.pop(case.quarantined_proc if table == "proc_log" else None, None)
    return rows


def test_row_counts_and_quarantined_rows_match_the_source(case: Case) -> None:
    for spec in TABLES:
        t = case.report.table(spec.name)
        assert t.rows == len(_truth(case.db, spec.name)), spec.name
        expected_q = 1 if spec.name == "proc_log" else 0
        assert (t.quarantined, t.loaded) == (expected_q, t.rows - expected_q), spec.name
    proc = case.report.table("proc_log")
    assert proc.quarantined_ids.ids == [case.quarantined_proc]
    assert [(p.field, p.code, p.count) for p in proc.problems] == [("tooth_range_start", "unparsed", 1)]


def test_null_and_distinct_counts_match_the_source_for_every_column(case: Case) -> None:
    checked = 0
    for spec in TABLES:
        rows = _loaded(case, spec.name)
        profiles = {c.name: c for c in case.report.table(spec.name).columns}
        for name in next(iter(rows.values())).keys() if rows else ():
            values = [r[name] for r in rows.values()]
            nulls = sum(v is None for v in values)
            distinct = {json.dumps(v, sort_keys=True) for v in values if v is not None}
            p = profiles[name]
            assert (p.null_count, p.distinct_count, p.distinct_exact) == (nulls, len(distinct), True), (
                spec.name,
                name,
            )
            assert p.null_rate == round(nulls / len(values), 6)
            checked += 1
    assert checked > 300


def test_value_patterns_recognise_emails_phones_dates_codes_teeth_surfaces_and_money(case: Case) -> None:
    def share(table: str, column: str, pattern: str) -> float:
        return next(c for c in case.report.table(table).columns if c.name == column).patterns.get(
            pattern, 0.0
        )

    assert share("patient", "email", "email") == 1.0
    assert share("patient", "home_phone", "phone") == 1.0
    assert share("patient", "mobile_phone", "phone") == 1.0
    assert share("patient", "zip_code", "zip") == 1.0
    assert share("appointment", "appointment_date", "date") == 1.0
    assert share("appointment", "created_at", "datetime") == 1.0
    assert share("proc_log", "ada_code", "cdt_code") == 1.0
    assert share("proc_log", "tooth_range_end", "tooth") == 1.0
    assert share("proc_log", "surface_string", "surface") == 1.0
    assert share("proc_log", "amount_cents", "money") == 1.0
    last_name = next(c for c in case.report.table("patient").columns if c.name == "last_name")
    assert not {"email", "phone", "date", "cdt_code"} & set(last_name.patterns)


def test_date_ranges_are_table_level_min_max_and_never_given_for_birth_dates(case: Case) -> None:
    rows = _loaded(case, "appointment").values()
    cols = {c.name: c for c in case.report.table("appointment").columns}
    dates = [r["appointment_date"] for r in rows if r["appointment_date"]]
    created = [r["created_at"] for r in rows if r["created_at"]]
    assert (cols["appointment_date"].min, cols["appointment_date"].max) == (min(dates), max(dates))
    assert (cols["created_at"].min, cols["created_at"].max) == (min(created), max(created))
    birth = next(c for c in case.report.table("patient").columns if c.name == "birth_date")
    assert birth.min is None and birth.max is None and birth.distinct_count > 1
    assert all(c.min is None for c in case.report.table("patient").columns if c.custom)


def test_custom_columns_come_from_the_manifest_with_inferred_types(case: Case) -> None:
    assert {t: set(c) for t, c in case.report.custom_columns.items()} == {
        t: set(c) for t, c in CUSTOM_COLUMNS.items()
    }
    cols = {c.name: c for c in case.report.table("patient").columns}
    assert cols["custom_vip"].custom and cols["custom_vip"].kind == "custom"
    assert cols["custom_vip"].inferred_type == "integer"
    assert cols["custom_referral_source"].inferred_type == "string"
    assert (
        cols["custom_balance_note"].inferred_type == "null" and cols["custom_balance_note"].null_rate == 1.0
    )


def _source_keys(case: Case) -> dict[str, set[str]]:
    return {spec.name: set(_truth(case.db, spec.name)) for spec in TABLES}


def test_orphans_are_exactly_the_dangling_references_of_the_source(case: Case) -> None:
    keys = _source_keys(case)
    expected: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for spec in TABLES:
        for key, row in _loaded(case, spec.name).items():
            for column in spec.columns:
                if (
                    column.ref
                    and row.get(column.name) is not None
                    and row[column.name] not in keys[column.ref]
                ):
                    expected[(spec.name, column.name, column.ref)].add(key)
    got = {(o.table, o.column, o.parent_table): set(o.ids) for o in case.report.orphans}
    assert got == dict(expected)
    assert all(o.count == len(o.ids) and not o.truncated for o in case.report.orphans)
    # the injected faults are among them
    assert case.orphaned_proc in got[("proc_log", "claim_id", "claim")]
    assert MISSING_CLAIM not in json.dumps([o.ids for o in case.report.orphans])  # child keys, not parent ids
    deleted_appts = {
        k for k, r in _truth(case.db, "appointment").items() if r["patient_id"] == case.deleted_patient
    }
    assert deleted_appts and deleted_appts <= got[("appointment", "patient_id", "patient")]


def _name(text: str | None) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text or "").casefold() if ch.isalnum())


def test_duplicate_patients_by_name_and_birth_date_match_the_source(case: Case) -> None:
    by_person: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    injected = set()
    for raw in _source_rows(case.db, "patient"):
        by_person[(_name(raw["first_name"]), _name(raw["last_name"]), raw["birth_date"])].add(
            str(raw["patient_id"])
        )
        first = str(raw["first_name"])
        if first.endswith("  ") and not first.endswith("   "):
            injected.add(str(raw["patient_id"]))
    expected = {frozenset(ids) for ids in by_person.values() if len(ids) > 1}
    d = case.report.duplicate_patients
    assert {frozenset(g) for g in d.id_groups} == expected
    assert (d.groups, d.patients) == (len(expected), sum(len(g) for g in expected))
    assert injected and injected <= set().union(*expected)


def test_appointments_without_patient_are_new_patient_bookings_and_missing_patients(case: Case) -> None:
    patients = set(_truth(case.db, "patient"))
    rows = _truth(case.db, "appointment")
    no_id = {k for k, r in rows.items() if r["patient_id"] is None}
    missing = {k for k, r in rows.items() if r["patient_id"] is not None and r["patient_id"] not in patients}
    a = case.report.appointments_without_patient
    assert no_id and missing
    assert (a.count, a.no_patient_id, a.missing_patient) == (len(no_id | missing), len(no_id), len(missing))
    assert set(a.ids) == no_id | missing


def test_open_claims_are_unpaid_claims_with_their_billed_total(case: Case) -> None:
    rows = _truth(case.db, "claim")
    open_ = {k: r for k, r in rows.items() if r["date_received"] is None and r["claim_type"] != 1}
    predeterminations = [k for k, r in rows.items() if r["date_received"] is None and r["claim_type"] == 1]
    oc = case.report.open_claims
    assert open_ and (oc.count, set(oc.ids)) == (len(open_), set(open_))
    assert oc.billed_cents == sum(r["total_billed_cents"] or 0 for r in open_.values())
    assert oc.open_predeterminations == len(predeterminations)
    warning = next(w for w in case.report.warnings if w.code == "open_claims")
    assert (warning.severity, warning.count) == ("cutover", len(open_))


def test_target_estimate_counts_records_per_object_and_attachments(case: Case) -> None:
    est = case.report.estimate
    records = {o.map: o.records for o in est.objects}
    proc = _loaded(case, "proc_log").values()
    assert records["patient"] == len(_truth(case.db, "patient"))
    assert records["ledger"] == sum(r["chart_status"] in (90, 102) for r in proc)
    assert records["treatment_plan_line"] == sum(
        r["chart_status"] in (101, 102, 103, 105) and r["tx_case_id"] is not None for r in proc
    )
    ins = _truth(case.db, "patient_insurance").values()
    assert records["patient_insurance_primary"] == sum(r["rank"] == 1 for r in ins)
    assert records["patient_insurance_secondary"] == sum(r["rank"] == 2 for r in ins)
    assert "clinical_note_table" not in records  # disabled in the default map
    assert est.records_by_target["contact"] == records["patient"]
    assert est.records_by_target["annotation"] == records["clinical_note"] + records["perio_exam"]
    appts = _truth(case.db, "appointment").values()
    assert est.closing_writes == sum(bool(r["broken"]) or r["status_id"] == "154" for r in appts)
    docs = _truth(case.db, "document")
    manifest = json.loads((case.bundle / "manifest.json").read_text())
    att = est.attachments
    assert att.documents == len(docs)
    binaries = [p for p in (case.bundle / "files").iterdir() if not p.name.startswith("index-")]
    assert att.files == manifest["file_index"]["count"] == len(binaries)
    assert att.bytes == manifest["file_index"]["bytes"] == sum(p.stat().st_size for p in binaries)
    assert att.patient_folders == len({r["patient_id"] for r in docs.values() if r["patient_id"]})
    writes = sum(o.records for o in est.objects if o.action in ("upsert", "update"))
    assert est.load.records == writes + est.closing_writes + att.patient_folders
    assert est.load.seconds > 0 and est.load.bound in ("requests", "execution_time", "concurrency")


def test_files_over_the_note_attachment_limit_are_listed_by_document_id(case: Case) -> None:
    limit = 400
    settings = EstimateSettings(attachment_destination="notes", note_max_upload_bytes=limit)
    report = profile_bundle(BundleReader.from_directory(case.bundle), settings=settings)
    sizes = {f.sha256: f.bytes for f in BundleReader.from_directory(case.bundle).iter_files()}
    docs = _truth(case.db, "document")
    ids = {
        d["doc_id"]
        for d in _bundle_rows(case.bundle, "document")
        if 4 * -(-sizes[d["file_sha256"]] // 3) > limit
    }
    att = report.estimate.attachments
    assert ids and len(ids) < len(docs)
    assert (set(att.over_limit.ids), att.over_limit.count, att.limit_bytes) == (ids, len(ids), limit)
    assert any(w.code == "attachments_over_limit" and w.count == len(ids) for w in report.warnings)
    # notes: every document becomes a note write instead of one document location per patient folder
    assert (
        report.estimate.load.records
        == case.report.estimate.load.records - att.patient_folders + att.documents
    )


def _bundle_rows(bundle: Path, table: str) -> list[dict[str, Any]]:
    reader = BundleReader.from_directory(bundle)
    return [item.row.model_dump() for item in reader.iter_table(table)]


def test_caps_bound_distinct_counts_and_id_lists_but_counts_stay_exact(case: Case) -> None:
    report = profile_bundle(
        BundleReader.from_directory(case.bundle), settings=EstimateSettings(), distinct_cap=5, id_cap=3
    )
    for table in report.tables:
        full = {c.name: c for c in case.report.table(table.name).columns}
        for c in table.columns:
            if full[c.name].distinct_count > 5:
                assert (c.distinct_count, c.distinct_exact) == (5, False), (table.name, c.name)
            else:
                assert (c.distinct_count, c.distinct_exact) == (full[c.name].distinct_count, True)
    oc = report.open_claims
    assert (oc.count, len(oc.ids), oc.truncated) == (case.report.open_claims.count, 3, True)
    assert oc.ids == case.report.open_claims.ids[:3]


def test_report_round_trips_through_json(case: Case) -> None:
    text = case.report.model_dump_json()
    assert DiscoveryReport.model_validate_json(text) == case.report
    assert json.loads(text)["format"] == "bridgework.discovery/1"
