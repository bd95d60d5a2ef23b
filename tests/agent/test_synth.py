"""The synthetic practice imitates reality (dentrix.md §7) and its binaries are valid files."""

from __future__ import annotations

import sqlite3
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import sample_files
from agent.synth import synthesize


@pytest.fixture(scope="module")
def db(practice_factory: Callable[[int, int], Path]) -> sqlite3.Connection:
    conn = sqlite3.connect(practice_factory(200, 41))
    yield conn
    conn.close()


def _one(conn: sqlite3.Connection, sql: str) -> float:
    return conn.execute(sql).fetchone()[0]


def test_families_guarantors_guardians_and_duplicates(db):
    patients = _one(db, "SELECT COUNT(*) FROM v_patient WHERE status = 1")
    sizes = Counter(r[0] for r in db.execute(  # people, not rows: a duplicate stays in its family
        "SELECT COUNT(DISTINCT trim(first_name) || birth_date) FROM v_patient WHERE status = 1 GROUP BY fam_id"))
    assert max(sizes) <= 6 and min(sizes) >= 1
    assert _one(db, "SELECT COUNT(*) FROM v_patient WHERE status = 2 AND is_guar = 1") > 0  # non-patient guarantors
    assert _one(db, "SELECT COUNT(*) FROM v_patient_guardian") > 0
    dups = _one(db, "SELECT COUNT(*) FROM (SELECT trim(last_name), trim(first_name), birth_date FROM v_patient "
                    "GROUP BY 1, 2, 3 HAVING COUNT(*) > 1)")
    assert 0 < dups <= 0.06 * patients


def test_insurance_shares(db):
    patients = _one(db, "SELECT COUNT(*) FROM v_patient WHERE status = 1")
    primary = _one(db, "SELECT COUNT(*) FROM v_patient_insurance WHERE rank = 1") / patients
    secondary = _one(db, "SELECT COUNT(*) FROM v_patient_insurance WHERE rank = 2") / patients
    assert 0.2 <= primary <= 0.7 and 0.0 < secondary <= 0.2


def test_appointments_procedures_and_ledger_look_like_dentrix(db):
    minutes = {r[0] for r in db.execute("SELECT DISTINCT start_minute FROM v_appt")}
    assert minutes <= set(range(0, 60, 10)) or minutes <= set(range(0, 60, 15))
    assert _one(db, "SELECT COUNT(*) FROM v_appt WHERE patient_id = 0 AND patient_name IS NOT NULL") > 0
    assert _one(db, "SELECT COUNT(*) FROM v_appt WHERE broken = 1") > 0
    assert _one(db, "SELECT COUNT(*) FROM v_appthist WHERE deleted_flag = 1") > 0
    statuses = {r[0] for r in db.execute("SELECT DISTINCT chart_status FROM v_proclog")}
    assert {90, 101, 102, 105} <= statuses
    classes = {r[0] for r in db.execute("SELECT DISTINCT proc_class FROM v_proclog WHERE chart_status = 90")}
    assert {1, 2, 3} <= classes
    assert _one(db, "SELECT COUNT(*) FROM v_proclog WHERE ord = 904") > 0  # insurance write-offs
    teeth = {str(r[0]) for r in db.execute("SELECT DISTINCT tooth_range_start FROM v_proclog")}
    assert teeth & {"A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T"}
    assert any(t.isdigit() and 51 <= int(t) <= 82 for t in teeth)
    assert _one(db, "SELECT COUNT(*) FROM v_claim WHERE date_received IS NULL AND claim_type = 0") > 0
    assert _one(db, "SELECT COUNT(*) FROM v_claim WHERE claim_type = 1") > 0
    assert _one(db, "SELECT COUNT(*) FROM v_proclog WHERE surface_string LIKE '% '") > 0  # padded


def test_text_quirks_and_custom_columns(db):
    notes = [r[0] for r in db.execute("SELECT note_text FROM v_clinicalnote")]
    assert any("\r\n" in n for n in notes) and any(ch in "".join(notes) for ch in "éñü")
    columns = {r[1] for r in db.execute("PRAGMA table_info(v_patient)")}
    assert {"custom_referral_source", "custom_vip"} <= columns


def test_sample_files_follow_their_formats():
    jpeg = sample_files.jpeg("t")
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9" and b"\xff\xc0" in jpeg and b"\xff\xda" in jpeg
    pdf = sample_files.pdf("t")
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf.startswith(b"%PDF-1.4") and pdf[xref:xref + 4] == b"xref" and pdf.endswith(b"%%EOF\n")
    tiff = sample_files.tiff("t")
    (offset,) = struct.unpack("<I", tiff[4:8])
    (entries,) = struct.unpack("<H", tiff[offset:offset + 2])
    tags = [struct.unpack("<H", tiff[offset + 2 + 12 * i: offset + 4 + 12 * i])[0] for i in range(entries)]
    assert tiff[:4] == b"II*\x00" and tags == sorted(tags) and {256, 257, 273, 279} <= set(tags)
    dicom = sample_files.dicom("t")
    assert dicom[128:132] == b"DICM" and b"1.2.840.10008.1.2.1" in dicom
    for maker, media in ((sample_files.jpeg, "image/jpeg"), (sample_files.pdf, "application/pdf"),
                         (sample_files.tiff, "image/tiff"), (sample_files.dicom, "application/dicom")):
        assert sample_files.sniff_media_type(maker("x")[:132]) == media
        assert maker("a") != maker("b")


def test_practice_size_is_bounded(tmp_path: Path):
    with pytest.raises(ValueError, match="between 10 and 100,000"):
        synthesize(tmp_path / "x.db", 5, 1)
