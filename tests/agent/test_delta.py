"""A delta bundle after edits, inserts and deletes holds exactly those changes, each with its rule."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.extract import extract
from agent.validate import validate_directory
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.errors import ConfigurationError


def _edit(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()


def test_delta_contains_exactly_the_edits_inserts_and_deletes(practice_factory: Callable[[int, int], Path],
                                                              tmp_path: Path):
    source = practice_factory(30, 21)
    db = tmp_path / "practice.db"
    shutil.copy(source, db)
    shutil.copytree(source.with_name("practice-files"), tmp_path / "practice-files")
    base = tmp_path / "base"
    extract(str(db), base, part_rows=200)

    _edit(db,
          # edited with a fresh change stamp
          "UPDATE v_patient SET home_phone = '303-555-0000', modified_at = '2099-01-01 08:00:00.000' WHERE patient_id = 3",
          # edited without touching the stamp (Dentrix stamps are unreliable): only the row hash sees it
          "UPDATE v_proclog SET amount = amount + 100 WHERE proc_id = 5",
          "UPDATE v_appt SET note = 'moved by phone' WHERE appointment_id = 4",
          # inserted
          "INSERT INTO v_patient (patient_id, last_name, first_name, status, guar_id, modified_at) "
          "VALUES (99001, 'Peña', 'Zoë', 1, 99001, '2099-01-02 09:00:00.000')",
          "INSERT INTO v_recallpending (recall_id, patient_id, recall_type_id, due_date) VALUES ('99001|1', 99001, 1, '2027-01-01')",
          # deleted
          "DELETE FROM v_appt WHERE appointment_id = 2",
          "DELETE FROM v_appt_proc WHERE appointment_id = 2",
          "DELETE FROM v_proclog WHERE proc_id = 7")

    delta = tmp_path / "delta"
    info = extract(str(db), delta, base=base, part_rows=200)
    assert validate_directory(delta, open(tmp_path / "report.txt", "w")) == 0
    reader = BundleReader.from_directory(delta)
    m = reader.manifest
    assert m.kind == "delta" and m.base_bundle_id == BundleReader.from_directory(base).manifest.bundle_id
    assert m.since == BundleReader.from_directory(base).manifest.watermark

    changes = {t.name: sorted(reader.iter_changes(t.name)) for t in m.tables}
    expected_appt_procs = sorted((k, "deleted") for k, _ in BundleReader.from_directory(base).iter_keys(
        "appointment_procedure") if k.startswith("2|"))
    assert changes == {
        **{t.name: [] for t in m.tables},
        "patient": [("3", "stamp"), ("99001", "new")],
        "proc_log": [("5", "hash"), ("7", "deleted")],
        "appointment": [("2", "deleted"), ("4", "hash")],
        "appointment_procedure": expected_appt_procs,
        "recall": [("99001|1", "new")],
    }
    assert info.rows["patient"] == 2 and info.rows["proc_log"] == 1 and info.rows["appointment"] == 1
    rows = {i.key: i.row for i in reader.iter_table("patient") if isinstance(i, LoadedRow)}
    assert rows["3"].home_phone == "303-555-0000" and rows["99001"].first_name == "Zoë"
    assert m.table("proc_log").change_counts.hash == 1
    assert any(w.code == "changes_missed_by_stamp" for w in m.warnings)
    # the full key list travels with the delta, so deletions are visible without the change list too
    keys = {k for k, _ in reader.iter_keys("appointment")}
    assert "2" not in keys and "4" in keys
    assert (m.file_index.count, m.file_index.parts) == (0, [])  # no document changed: no binaries shipped again
    assert not (tmp_path / "delta" / "files").exists() or not any((tmp_path / "delta" / "files").iterdir())


def test_delta_of_an_unchanged_practice_is_empty(practice_factory: Callable[[int, int], Path], tmp_path: Path):
    db = practice_factory(12, 22)
    extract(str(db), tmp_path / "base")
    extract(str(db), tmp_path / "delta", base=tmp_path / "base")
    reader = BundleReader.from_directory(tmp_path / "delta")
    assert all(t.rows == 0 and not list(reader.iter_changes(t.name)) for t in reader.manifest.tables)


def test_delta_needs_a_readable_base(practice_factory: Callable[[int, int], Path], tmp_path: Path):
    with pytest.raises(ConfigurationError, match="--base"):
        extract(str(practice_factory(12, 22)), tmp_path / "d", base=tmp_path / "nothing")


def test_delta_ships_only_the_files_of_its_changed_documents(practice_factory: Callable[[int, int], Path],
                                                              tmp_path: Path):
    source = practice_factory(12, 22)
    db = tmp_path / "practice.db"
    shutil.copy(source, db)
    shutil.copytree(source.with_name("practice-files"), tmp_path / "practice-files")
    base = tmp_path / "base"
    extract(str(db), base)
    conn = sqlite3.connect(db)
    doc_id = conn.execute("SELECT MIN(doc_id) FROM v_document WHERE file_path IS NOT NULL").fetchone()[0]
    conn.close()
    _edit(db, f"UPDATE v_document SET description = 'rescanned' WHERE doc_id = {doc_id}")

    delta = tmp_path / "delta"
    extract(str(db), delta, base=base, index_rows=1)
    assert validate_directory(delta, open(tmp_path / "report.txt", "w")) == 0
    reader = BundleReader.from_directory(delta)
    rows = [i.row for i in reader.iter_table("document") if isinstance(i, LoadedRow)]
    assert [r.doc_id for r in rows] == [str(doc_id)]
    listed = list(reader.iter_files())
    assert [(f.sha256, f.bytes, f.media_type) for f in listed] == [(rows[0].file_sha256, rows[0].file_bytes,
                                                                     rows[0].media_type)]
    assert sorted(p.name for p in (delta / "files").iterdir()) == sorted(["index-00000.jsonl.gz", rows[0].file_sha256])
    assert reader.verify().files_checked == 1
