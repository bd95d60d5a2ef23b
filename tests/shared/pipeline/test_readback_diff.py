"""The whole field-level diff of a migrated practice gives the same report read back in batches as read
one GET per record (the old path, `per_record=True`): the same mismatches, match rates, named checks and
missing records, on a practice with a wrong value, a wrong lookup and a deleted record injected."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import azurite
from devtools.stack import FAST_EMULATOR, drive_migration, practice_stack, synthetic_practice
from shared.pipeline.sample import SampleDiff, diff_sample

PATIENTS = 10
TENANT = "practice-group-1"


class Diffs:
    def __init__(self, old: SampleDiff, new: SampleDiff, injected: dict[str, Any]) -> None:
        self.old, self.new, self.injected = old, new, injected


def _errors(log: Path) -> list[str]:
    """The host log's error lines (ids, codes and names only: the host logs no values)."""
    return [line[:300] for line in log.read_text(errors="replace").splitlines() if "Error" in line][-8:]


def _patch(emulator: Any, path: str, body: dict[str, Any]) -> None:
    response = httpx.patch(f"{emulator.api_url}{path}", json=body,
                           headers={**emulator.headers_for("app-1"), "If-Match": "*"}, verify=emulator.verify)
    assert response.status_code == 204, response.status_code


@pytest.fixture(scope="module")
def diffs(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Diffs]:
    work = Path(tmp_path_factory.mktemp("readback"))
    practice, bundle_dir = synthetic_practice(work, PATIENTS, 23, part_rows=40)
    with practice_stack(work, practice, azurite, emulator_config=FAST_EMULATOR) as stack:
        result = drive_migration(stack, bundle_dir, timeout=300, sample_patients=0)  # no sample stage: the full run
        assert result["view"]["runtime_status"] == "Completed", (result["view"].get("custom_status"),
                                                                 _errors(work / "stack" / "host.log"))
        emulator = stack.emulator
        contacts = sorted((row["bw_sourceid"], rid) for rid, row in emulator.rows("contact").items()
                          if str(row.get("bw_sourceid", "")).startswith("P-"))
        (wrong_sid, wrong_id), (other_sid, other_id) = contacts[0], contacts[1]
        _patch(emulator, f"contacts({wrong_id})", {"lastname": "WRONG-1"})
        appointments = sorted((rid, row) for rid, row in emulator.rows("appointment").items()
                              if (row.get("regardingobjectid") or {}).get("id"))
        # An open one (closed activities are read-only): its lookup pointed at another patient.
        moved_id, moved = next((rid, row) for rid, row in appointments if row.get("statecode") in (0, 3, None))
        target = other_id if moved["regardingobjectid"]["id"] != other_id else wrong_id
        _patch(emulator, f"appointments({moved_id})", {"regardingobjectid_contact_appointment@odata.bind":
                                                       f"/contacts({target})"})
        gone_id = next(rid for rid, _ in appointments if rid != moved_id)
        response = httpx.delete(f"{emulator.api_url}appointments({gone_id})", headers=emulator.headers_for("app-1"),
                                verify=emulator.verify)
        assert response.status_code == 204
        rt = stack.runtime()
        migration = rt.migrations.get(TENANT, result["migration_id"])
        old = asyncio.run(diff_sample(rt, migration, patients=None, size=PATIENTS * 2, per_record=True))
        new = asyncio.run(diff_sample(rt, migration, patients=None, size=PATIENTS * 2))
        yield Diffs(old, new, {"wrong": wrong_sid, "other": other_sid})


def _report(diff: SampleDiff) -> dict[str, Any]:
    data = diff.model_dump(mode="json")
    data.pop("generated_at")
    return data


def test_the_batched_diff_reports_exactly_what_one_get_per_record_reports(diffs: Diffs):
    old, new = _report(diffs.old), _report(diffs.new)
    # On failure, name the parts and records that differ, never their values.
    assert sorted(old) == sorted(new) and [k for k in old if old[k] != new[k]] == []
    assert [(m.map, m.record, m.field) for m in diffs.new.mismatches] == \
        [(m.map, m.record, m.field) for m in diffs.old.mismatches]


def test_the_injected_value_lookup_and_deletion_are_all_reported(diffs: Diffs):
    new = diffs.new
    assert new.patients >= PATIENTS and new.fields_checked > 500  # every patient, and the guardians they point at
    fields = {(m.map, m.field) for m in new.mismatches}
    assert ("patient", "lastname") in fields
    assert any(m.map == "appointment" and m.field.endswith("@odata.bind") for m in new.mismatches)
    assert [m.record for m in new.mismatches if m.field == "lastname"] == [diffs.injected["wrong"]]
    assert [m.actual for m in new.mismatches if m.field == "lastname"] == ["WRONG-1"]
    appointments = next(t for t in new.tables if t.map == "appointment")
    assert appointments.missing == 1 and appointments.match_rate < 1.0
    assert new.fields_matched == new.fields_checked - len(new.mismatches)
