"""A 60-patient synthetic practice with injected faults, extracted and profiled once per session."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.extract import extract
from agent.synth import files_root_for
from shared.dentrix.reader import BundleReader
from shared.discovery import EstimateSettings, profile_bundle
from shared.discovery.report import DiscoveryReport
from tests.agent.conftest import practice_factory  # noqa: F401

PATIENTS, SEED = 60, 2
MISSING_CLAIM = "999999"
BAD_TOOTH = "ZZ"


@dataclass(frozen=True)
class Case:
    """The faulted source database, its bundle, and the report profiled from it."""

    db: Path
    bundle: Path
    report: DiscoveryReport
    deleted_patient: str
    orphaned_proc: str
    quarantined_proc: str


def _inject_faults(db: Path) -> tuple[str, str, str]:
    """Delete a patient who has appointments, point one procedure at a missing claim, break one tooth value."""
    conn = sqlite3.connect(db)
    try:
        dup_names = {
            (r[0].strip(), r[1].strip())
            for r in conn.execute(
                "SELECT first_name, last_name FROM v_patient WHERE first_name LIKE '%  ' AND first_name NOT LIKE '%   '"
            )
        }
        candidates = conn.execute(
            "SELECT p.patient_id, p.first_name, p.last_name FROM v_patient p WHERE p.status = 1 AND p.patient_id IN "
            "(SELECT patient_id FROM v_appt) AND p.patient_id != p.guar_id ORDER BY p.patient_id DESC"
        ).fetchall()
        victim = next(pid for pid, f, la in candidates if (str(f).strip(), str(la).strip()) not in dup_names)
        conn.execute("DELETE FROM v_patient WHERE patient_id = ?", (victim,))
        orphan = conn.execute("SELECT MIN(proc_id) FROM v_proclog WHERE claim_id != 0").fetchone()[0]
        conn.execute("UPDATE v_proclog SET claim_id = ? WHERE proc_id = ?", (int(MISSING_CLAIM), orphan))
        bad = conn.execute(
            "SELECT MIN(proc_id) FROM v_proclog WHERE chart_status = 102 AND tooth_range_start != 0 "
            "AND proc_id != ?",
            (orphan,),
        ).fetchone()[0]
        conn.execute("UPDATE v_proclog SET tooth_range_start = ? WHERE proc_id = ?", (BAD_TOOTH, bad))
        conn.commit()
    finally:
        conn.close()
    return str(victim), str(orphan), str(bad)


@pytest.fixture(scope="session")
def case(practice_factory: Callable[[int, int], Path], tmp_path_factory: pytest.TempPathFactory) -> Case:  # noqa: F811
    source = practice_factory(PATIENTS, SEED)
    folder = tmp_path_factory.mktemp("discovery-practice")
    db = folder / "practice.db"
    shutil.copy(source, db)
    shutil.copytree(files_root_for(source), files_root_for(db))
    deleted, orphaned, quarantined = _inject_faults(db)
    bundle = folder / "bundle"
    extract(str(db), bundle, part_rows=200, bundle_id="discovery-60-2")
    report = profile_bundle(BundleReader.from_directory(bundle), settings=EstimateSettings())
    return Case(db, bundle, report, deleted, orphaned, quarantined)
