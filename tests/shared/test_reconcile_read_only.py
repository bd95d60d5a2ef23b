"""Reconciliation accounting of closed records kept read-only: their field differences are listed (ids, tables,
field names), never counted as mismatches, and appear in the JSON, CSV and HTML renderings."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from shared.pipeline import closed, reconcile
from shared.pipeline.sample import Mismatch


def _m(record: str, field: str, map_name: str = "appointment") -> Mismatch:
    return Mismatch(map=map_name, target_table="appointment", record=record, field=field,
                    source="x", expected="y", actual="z")


def _map(name: str, expected: int, mismatched: int, kept: int, tolerance: float) -> reconcile.MapReconciliation:
    share = mismatched / expected
    return reconcile.MapReconciliation(
        map=name, target_table="appointment", action="upsert", source_rows=expected, quarantined=0, expected=expected,
        journal_written=expected, journal_deleted=0, target_records=expected, retained_deletions=0,
        missing_in_journal=[], extra_in_journal=[], missing_in_target=[], extra_in_target=[],
        field_mismatched_records=[f"A-{i}" for i in range(mismatched)], kept_read_only=kept, fields_checked=10,
        fields_matched=9, mismatched_records=mismatched, mismatch_share=share, within_tolerance=share <= tolerance)


def test_split_keeps_read_only_records_apart_with_their_field_names():
    mismatches = [_m("A-1", "description"), _m("A-1", "scheduledstart"), _m("A-2", "description"),
                  _m("A-3", "subject")]
    kept, counted = reconcile.split_read_only("appointment", mismatches, read_only={"A-1", "A-3", "A-9"})
    assert [(k.record, k.fields) for k in kept] == [("A-1", ["description", "scheduledstart"]), ("A-3", ["subject"])]
    assert all(k.map == "appointment" and k.target_table == "appointment" for k in kept)
    assert [(m.record, m.field) for m in counted] == [("A-2", "description")]
    # A read-only record without a difference is not listed; nothing read-only: everything counts.
    kept, counted = reconcile.split_read_only("appointment", mismatches, read_only=set())
    assert kept == [] and counted == mismatches


def test_kept_read_only_records_carry_no_values():
    kept, _ = reconcile.split_read_only("appointment", [_m("A-1", "description")], read_only={"A-1"})
    dumped = kept[0].model_dump_json()
    assert '"x"' not in dumped and '"y"' not in dumped and '"z"' not in dumped


def _report() -> reconcile.Reconciliation:
    kept, counted = reconcile.split_read_only(
        "appointment", [_m("A-1", "description"), _m("A-2", "description"), _m("A-5", "subject")],
        read_only={"A-1", "A-2"})
    maps = [_map("appointment", 20, 1, len(kept), 0.1), _map("patient", 10, 0, 0, 0.1)]
    return reconcile.Reconciliation(
        migration_id="m-1", generated_at=datetime(2026, 1, 1, tzinfo=UTC), source_bundle_id="b", deltas_applied=["d1"],
        tolerance=0.1, diff_share=1.0, patients_diffed=10, fields_checked=20, fields_matched=17, maps=maps,
        mismatches=counted, kept_read_only=kept, verdict="completed")


def test_report_counts_and_renderings_list_the_kept_records():
    report = _report()
    dumped = report.model_dump(mode="json")
    assert dumped["records_kept_read_only"] == 2 and dumped["records_mismatched"] == 1
    assert [k["record"] for k in dumped["kept_read_only"]] == ["A-1", "A-2"]
    assert [m["record"] for m in dumped["mismatches"]] == ["A-5"]
    rows = list(csv.DictReader(io.StringIO(reconcile.render_csv(report))))
    assert {r["map"]: (r["kept_read_only"], r["mismatched_records"]) for r in rows} == \
        {"appointment": ("2", "1"), "patient": ("0", "0")}
    page = reconcile.render_html(report)
    assert '<span id="kept-read-only">2</span>' in page
    assert "<td>A-1</td><td>description</td>" in page and "<td>A-2</td><td>description</td>" in page
    kept_table, mismatch_table = page.split('id="kept-read-only-table"')[1].split('id="mismatches"')
    assert "A-5" not in kept_table and "A-5" in mismatch_table and "A-1" not in mismatch_table


def test_within_tolerance_once_read_only_records_are_left_out():
    # 3 of 20 differ; 2 are closed and read-only: 1/20 = 5% is within a 10% tolerance, 3/20 = 15% would not be.
    mismatches = [_m("A-1", "description"), _m("A-2", "description"), _m("A-5", "subject")]
    _, counted = reconcile.split_read_only("appointment", mismatches, read_only={"A-1", "A-2"})
    assert len({m.record for m in counted}) / 20 <= 0.1 < len({m.record for m in mismatches}) / 20


def test_reason_names_changed_fields_only_and_reads_back():
    assert closed.reason_for([]) == closed.REASON
    reason = closed.reason_for(["scheduledstart", "description"])
    assert reason.startswith(closed.REASON) and reason.endswith("description,scheduledstart")
    assert closed.changed_in_reason(reason) == ["description", "scheduledstart"]
    assert closed.changed_in_reason(closed.REASON) == [] and closed.changed_in_reason(None) == []
