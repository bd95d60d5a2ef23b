"""synth -> extract -> validate -> upload -> cloud reader returns exactly the source rows."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.__main__ import main as agent_main
from agent.extract import extract
from agent.synth import CUSTOM_COLUMNS, files_root_for, view_name
from agent.upload import upload_bundle
from agent.validate import validate_directory
from shared.dentrix import normalise as n
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.dentrix.tables import TABLES, Column


def _expected(column: Column, value: Any) -> Any:
    """The documented normalisation of one source value (tables.py module docstring)."""
    kind = column.kind
    if kind == "id":
        return n.normalise_id(value)
    if kind == "text":
        return n.normalise_text(value)
    if kind == "int":
        return n.normalise_int(value)
    if kind == "bool":
        return n.normalise_bool(value)
    if kind == "money":
        return n.to_cents(value, "cents")
    if kind == "date":
        return n.normalise_date(value)
    if kind == "datetime":
        return n.normalise_local_datetime(value, ZoneInfo("America/Denver"))
    if kind == "tooth":
        return n.normalise_tooth(value)
    if kind == "surface":
        return n.normalise_surface(value)
    if kind == "json":
        import json

        return None if value is None else json.loads(value)
    raise AssertionError(kind)


def _source_rows(db: Path, table: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f'SELECT * FROM "{view_name(table)}"')]
    finally:
        conn.close()


def _assert_bundle_equals_source(reader: BundleReader, db: Path) -> None:
    root = files_root_for(db)
    for spec in TABLES:
        source = _source_rows(db, spec.name)
        got = {}
        for item in reader.iter_table(spec.name):
            assert isinstance(item, LoadedRow), (spec.name, item)
            got[item.key] = item.row.model_dump()
        assert len(got) == len(source) == reader.table(spec.name).rows, spec.name
        for raw in source:
            key = n.normalise_id(raw[spec.key])
            row = got[key]
            for column in spec.columns:
                if column.source_name in raw:
                    assert row[column.name] == _expected(column, raw[column.source_name]), (spec.name, key, column.name)
            for custom in CUSTOM_COLUMNS.get(spec.name, ()):
                assert row[custom] == (n.normalise_text(raw[custom]) if isinstance(raw[custom], str) else raw[custom])
            if spec.name == "appointment":
                assert row["start_at"] == n.appointment_start(row["appointment_date"], row["start_hour"], row["start_minute"])
            if spec.name == "document":
                content = (root / raw["file_path"].replace("\\", "/")).read_bytes()
                assert row["file_sha256"] == hashlib.sha256(content).hexdigest()
                assert row["file_bytes"] == len(content)
                chunks = b"".join(reader.iter_file(row["file_sha256"]))
                assert chunks == content


@pytest.mark.parametrize("patients,seed", [(20, 1), (60, 2)])
def test_synth_extract_validate_upload_read_returns_exactly_the_source_rows(
        patients: int, seed: int, practice_factory: Callable[[int, int], Path], tmp_path: Path, sas_url_for):
    db = practice_factory(patients, seed)
    bundle = tmp_path / "bundle"
    info = extract(str(db), bundle, part_rows=250)
    out = io.StringIO()
    assert validate_directory(bundle, out) == 0, out.getvalue()

    url, container = sas_url_for()
    report = upload_bundle(bundle, url, migration_id="mig-1", concurrency=3)
    assert report.skipped == 0 and report.uploaded > 1
    reader = BundleReader.from_container(container, f"mig-1/{info.bundle_id}/")
    verified = reader.verify()
    assert all(t.quarantined == 0 and t.loaded == t.rows for t in verified.tables.values())
    assert verified.files_checked == info.files > 0
    _assert_bundle_equals_source(reader, db)


def test_documented_normalisation_shows_in_the_bundle(small_bundle: Path):
    reader = BundleReader.from_directory(small_bundle)
    patients = [i.row for i in reader.iter_table("patient")]
    assert all(p.last_name == p.last_name.strip() for p in patients if p.last_name)
    assert any(any(ch in (p.last_name or "") + (p.first_name or "") for ch in "éñüöåí") for p in patients)
    appts = [i.row for i in reader.iter_table("appointment")]
    assert any(a.patient_id is None and a.patient_name for a in appts)  # new-patient appointments
    assert {a.start_minute % 5 for a in appts} == {0}
    notes = [i.row.note_text for i in reader.iter_table("clinical_note")]
    assert any("\r\n" in t for t in notes if t)
    procs = [i.row for i in reader.iter_table("proc_log")]
    assert {p.chart_status for p in procs} >= {90, 102, 105}
    assert all(isinstance(p.amount_cents, int) for p in procs if p.amount_cents is not None)
    custom = {c.name: c.type for c in reader.table("patient").columns if c.custom}
    assert custom == {"custom_referral_source": "string", "custom_vip": "integer", "custom_balance_note": "string"}
    codes = {w.code for w in reader.manifest.warnings}
    assert {"appointment_without_patient", "custom_columns"} <= codes
    assert reader.manifest.practice_timezone == "America/Denver"
    assert len(reader.table("proc_log").parts) > 1


def test_cli_runs_synth_extract_validate(tmp_path: Path, capsys):
    db = tmp_path / "p.db"
    assert agent_main(["synth", "--patients", "10", "--seed", "5", "--out", str(db)]) == 0
    assert agent_main(["extract", "--source", str(db), "--out", str(tmp_path / "b")]) == 0
    assert agent_main(["validate", str(tmp_path / "b")]) == 0
    assert "ok:" in capsys.readouterr().out


def test_synth_is_deterministic_for_a_seed(tmp_path: Path):
    from agent.synth import synthesize

    a = synthesize(tmp_path / "a.db", 15, 9)
    b = synthesize(tmp_path / "b.db", 15, 9)
    assert a.rows == b.rows
    for spec in TABLES:
        assert _source_rows(tmp_path / "a.db", spec.name) == _source_rows(tmp_path / "b.db", spec.name)
