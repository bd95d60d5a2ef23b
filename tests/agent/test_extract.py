"""Extraction edge cases: unsafe and missing files, unreadable values, version drift, custom columns,
money units, and sources that are not Dentrix G."""

from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.extract import extract
from agent.source import Source
from agent.validate import validate_directory
from shared.dentrix.reader import BundleReader, QuarantinedRow
from shared.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def practice(practice_factory: Callable[[int, int], Path], tmp_path: Path) -> Path:
    """An editable copy of a 15-patient practice with its files."""
    source = practice_factory(15, 31)
    db = tmp_path / "practice.db"
    shutil.copy(source, db)
    shutil.copytree(source.with_name("practice-files"), tmp_path / "practice-files")
    return db


def _sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()


def test_document_paths_escaping_the_folder_are_never_read(practice: Path, tmp_path: Path):
    (tmp_path / "secret.txt").write_text("not a dental file")
    _sql(practice,
         "INSERT INTO v_document (doc_id, attach_type, patient_id, file_path) VALUES (90001, 'patient', 1, '..\\secret.txt')",
         "INSERT INTO v_document (doc_id, attach_type, patient_id, file_path) VALUES (90002, 'patient', 1, "
         f"'{(tmp_path / 'secret.txt').as_posix()}')",
         "INSERT INTO v_document (doc_id, attach_type, patient_id, file_path) VALUES (90003, 'patient', 1, 'P000\\gone.jpg')",
         "INSERT INTO v_document (doc_id, attach_type, patient_id, file_path) VALUES (90004, 'patient', 1, "
         f"'{(tmp_path / 'practice-files' / 'inside.pdf').as_posix()}')")
    (tmp_path / "practice-files" / "inside.pdf").write_bytes(b"%PDF-1.4 tiny")
    info = extract(str(practice), tmp_path / "b")
    warnings = {w.code: w.count for w in info.warnings}
    assert warnings["file_path_outside_root"] == 2 and warnings["file_missing"] == 1
    reader = BundleReader.from_directory(tmp_path / "b")
    docs = {i.key: i.row for i in reader.iter_table("document")}
    assert all(docs[k].file_sha256 is None for k in ("90001", "90002", "90003"))
    assert docs["90004"].media_type == "application/pdf" and docs["90004"].file_name == "inside.pdf"
    secret = __import__("hashlib").sha256(b"not a dental file").hexdigest()
    assert not (tmp_path / "b" / "files" / secret).exists()
    assert reader.verify().tables["document"].quarantined == 0


def test_unreadable_source_value_is_kept_aside_and_quarantined_in_the_cloud(practice: Path, tmp_path: Path):
    _sql(practice, "UPDATE v_proclog SET tooth_range_start = 'Q7' WHERE proc_id = 3")
    info = extract(str(practice), tmp_path / "b")
    assert any(w.code == "value_unreadable" for w in info.warnings)
    out = io.StringIO()
    assert validate_directory(tmp_path / "b", out) == 1
    report = out.getvalue()
    assert "tooth_range_start: the agent could not normalise the source value [unparsed]" in report
    assert "Q7" not in report
    bad = [i for i in BundleReader.from_directory(tmp_path / "b").iter_table("proc_log") if isinstance(i, QuarantinedRow)]
    assert [(q.key, [p.field for p in q.problems]) for q in bad] == [("3", ["tooth_range_start"])]


def test_validate_cli_exits_non_zero_and_names_the_damaged_file(practice: Path, tmp_path: Path):
    extract(str(practice), tmp_path / "b")
    part = next((tmp_path / "b" / "tables" / "patient").glob("part-*.jsonl.gz"))
    part.write_bytes(part.read_bytes()[:-5])
    run = subprocess.run([sys.executable, "-m", "agent", "validate", str(tmp_path / "b")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "tables/patient/part-00000.jsonl.gz" in run.stdout and "truncated" in run.stdout


def test_older_dentrix_reads_prescriptions_from_the_legacy_view(practice: Path, tmp_path: Path):
    _sql(practice, "UPDATE options SET optionvalue = '15.0.1' WHERE optionkey = 'Data_Version'",
         "CREATE TABLE v_rxpatient AS SELECT * FROM v_rxrec WHERE 0",
         "INSERT INTO v_rxpatient (rx_id, patient_id, drug_name) VALUES (5, 1, 'Amoxicillin')")
    extract(str(practice), tmp_path / "b")
    reader = BundleReader.from_directory(tmp_path / "b")
    assert reader.table("prescription").source == "admin.v_rxpatient"
    assert [i.key for i in reader.iter_table("prescription")] == ["5"]


def test_missing_source_columns_are_null_and_reported(practice: Path, tmp_path: Path):
    _sql(practice, "ALTER TABLE v_patient DROP COLUMN ssn_last4")
    info = extract(str(practice), tmp_path / "b")
    assert any(w.code == "columns_missing_in_source" and w.table == "patient" for w in info.warnings)
    rows = [i.row for i in BundleReader.from_directory(tmp_path / "b").iter_table("patient")]
    assert rows and all(r.ssn_last4 is None for r in rows)


def test_custom_column_with_mixed_values_is_kept_as_mixed(practice: Path, tmp_path: Path):
    _sql(practice, "ALTER TABLE v_provider ADD COLUMN custom_badge",
         "UPDATE v_provider SET custom_badge = 7 WHERE rowid = 1",
         "UPDATE v_provider SET custom_badge = 'gold' WHERE rowid = 2")
    extract(str(practice), tmp_path / "b")
    reader = BundleReader.from_directory(tmp_path / "b")
    assert {c.name: c.type for c in reader.table("provider").columns if c.custom} == {"custom_badge": "mixed"}
    values = {i.row.model_extra["custom_badge"] for i in reader.iter_table("provider")}
    assert {7, "gold"} <= values
    assert reader.verify().tables["provider"].quarantined == 0


def test_money_in_dollars_is_converted_to_cents_once(practice: Path, tmp_path: Path):
    _sql(practice, "UPDATE v_feeschedule SET amount = 123.45 WHERE fee_id = '1|1'",
         "UPDATE v_feeschedule SET amount = amount / 100.0 WHERE fee_id != '1|1'")
    extract(str(practice), tmp_path / "b", money_unit="dollars")
    reader = BundleReader.from_directory(tmp_path / "b")
    fees = {i.key: i.row.amount_cents for i in reader.iter_table("fee_schedule_item")}
    assert fees["1|1"] == 12345 and fees["1|2"] == 9500  # D0150, $95.00
    assert reader.manifest.money_source_unit == "dollars"


def test_time_zone_must_be_known_and_valid(practice: Path, tmp_path: Path):
    _sql(practice, "DELETE FROM options WHERE optionkey = 'PracticeTimeZone'")
    with pytest.raises(ConfigurationError, match="--timezone"):
        extract(str(practice), tmp_path / "a")
    with pytest.raises(ConfigurationError, match="IANA"):
        extract(str(practice), tmp_path / "b", timezone="Mountain Time")
    extract(str(practice), tmp_path / "c", timezone="America/Denver")


def test_enterprise_and_non_dentrix_sources_are_named(tmp_path: Path):
    enterprise = tmp_path / "ent.db"
    sqlite3.connect(enterprise).execute("CREATE TABLE DDB_PAT_BASE (PATID)").connection.commit()
    conn = sqlite3.connect(":memory:")
    conn.execute("ATTACH DATABASE ? AS dbo", (str(enterprise),))
    with pytest.raises(ConfigurationError) as caught:
        Source(conn, "sqlite", None)
    assert caught.value.attrs["code"] == "enterprise_not_supported"
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(ConfigurationError, match="does not look like Dentrix G"):
        extract(str(other), tmp_path / "b")


def test_extract_refuses_a_non_empty_output_folder(practice: Path, tmp_path: Path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        extract(str(practice), tmp_path / "b")


def test_agent_does_not_import_the_functions_host():
    code = ("import sys, agent.__main__, agent.extract, agent.upload, agent.validate, agent.synth; "
            "bad = [m for m in sys.modules if m.startswith(('azure.functions', 'azure.durable_functions', 'functions'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
