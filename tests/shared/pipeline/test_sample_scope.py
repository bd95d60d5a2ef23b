"""The sample's scope on a synthetic practice: stratified, deterministic, and closed over the contacts its
rows bind to (checked with the real transform, so a sampled record never points at a missing contact)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.extract import extract
from agent.synth import synthesize
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.mapping.rows import make_context, reference_tables, transform_row
from shared.mapping.spec import default_mapping
from shared.pipeline.sample_scope import SampleScope, build_scope, in_sample, select_sample, strata

CONTACT_BIND = re.compile(r"^/contacts\(bw_sourceid='P-(.+)'\)$")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundleReader]:
    work = Path(tmp_path_factory.mktemp("scope"))
    synth = synthesize(work / "practice.db", 60, 5)
    bundle = extract(str(work / "practice.db"), work / "bundle", files_root=synth.files_root, part_rows=500)
    yield BundleReader.from_directory(bundle.bundle_dir)


def _rows(reader: BundleReader, table: str) -> list[dict]:
    return [i.row.model_dump() for i in reader.iter_table(table) if isinstance(i, LoadedRow)]


def test_the_sample_is_stratified_sized_and_the_same_for_the_same_seed(reader: BundleReader):
    chosen = select_sample(reader, 12)
    assert len(chosen) == len(set(chosen)) == 12
    assert chosen == select_sample(reader, 12)
    kinds = strata(reader)
    assert {kinds[p].split("|")[0] for p in chosen} == {k.split("|")[0] for k in kinds.values()}
    assert select_sample(reader, 10_000) == sorted(kinds)  # more than the practice: every patient


def test_each_patients_stratum_names_its_insurance_ranks_first_visit_kind_plans_and_ledger(reader: BundleReader):
    # Worked out here from the rows with sets, as strata() did before it kept bit masks.
    ranks: dict[str, set[int]] = {}
    for row in _rows(reader, "patient_insurance"):
        ranks.setdefault(str(row["patient_id"]), set()).add(int(row["rank"] or 1))
    kinds: dict[str, set[str]] = {}
    for row in _rows(reader, "appointment"):
        start = row.get("start_at")
        future = isinstance(start, datetime) and start.replace(tzinfo=start.tzinfo or UTC) > datetime.now(UTC)
        kinds.setdefault(str(row.get("patient_id")), set()).add(
            "broken" if row.get("broken") else "future" if future else "past")
    plans: dict[str, set[str]] = {}
    for row in _rows(reader, "tx_case"):
        plans.setdefault(str(row["patient_id"]), set()).add(str(row.get("status_id")))
    ledger = {str(row.get("patient_id")) for row in _rows(reader, "proc_log")}
    expected = {}
    for row in _rows(reader, "patient"):
        pid = str(row["patient_id"])
        held, seen = len(ranks.get(pid, ())), kinds.get(pid, set())
        expected[pid] = "|".join([
            "dual" if held >= 2 else "primary" if held else "none",
            next((kind for kind in ("broken", "future", "past") if kind in seen), "none"),
            ",".join(sorted(plans.get(pid, ()))) or "none", "ledger" if pid in ledger else "no_ledger"])
    assert strata(reader) == expected
    assert {e.split("|")[0] for e in expected.values()} == {"none", "primary", "dual"}  # the practice has all three
    assert len({e.split("|")[1] for e in expected.values()}) >= 3


def test_the_predicate_takes_a_patients_own_rows_the_contacts_it_points_at_and_every_reference_row():
    scope = SampleScope(patients=["1"], contacts=["1", "9"])
    assert in_sample("appointment", {"patient_id": "1"}, scope)
    assert not in_sample("appointment", {"patient_id": "9"}, scope)  # a guarantor's own visits stay out
    assert not in_sample("appointment", {"patient_id": None}, scope)  # a new-patient appointment
    assert in_sample("patient", {"patient_id": "9"}, scope)
    assert not in_sample("patient", {"patient_id": "2"}, scope)
    assert in_sample("insurance_carrier", {"ins_id": "4"}, scope)


def test_every_contact_a_sampled_record_binds_to_is_in_the_sample(reader: BundleReader):
    spec = default_mapping()
    scope = build_scope(reader, spec, select_sample(reader, 10))
    assert set(scope.patients) < set(scope.contacts)  # guarantors, guardians, subscribers came along
    references = {t: {i.key: i.row.model_dump() for i in reader.iter_table(t) if isinstance(i, LoadedRow)}
                  for t in sorted(reference_tables(spec))}
    context = make_context(spec, reader.manifest.practice_timezone, references=references)
    binds = 0
    for table_map in spec.enabled_tables():
        if table_map.action not in ("upsert", "update"):
            continue
        for row in _rows(reader, table_map.source_table):
            if not table_map.selects(row) or not in_sample(table_map.source_table, row, scope):
                continue
            payload, _ = transform_row(table_map, row, context)
            parties = [p for value in payload.values() if isinstance(value, list) for p in value]
            for value in [*payload.values(), *(v for p in parties for v in p.values())]:
                match = CONTACT_BIND.match(value) if isinstance(value, str) else None
                if match:
                    binds += 1
                    assert match.group(1) in scope.contacts, (table_map.name, match.group(1))
    assert binds > len(scope.patients)


def test_the_closure_adds_only_what_is_pointed_at(reader: BundleReader):
    spec = default_mapping()
    guarantors = {str(r["patient_id"]): str(r["guar_id"]) for r in _rows(reader, "patient") if r.get("guar_id")}
    lonely = next(p for p, g in sorted(guarantors.items()) if g == p)  # their own guarantor
    scope = build_scope(reader, spec, [lonely])
    pointed = {str(r["guardian_id"]) for r in _rows(reader, "guardian") if str(r["patient_id"]) == lonely}
    assert set(scope.contacts) >= {lonely} | pointed
    assert len(scope.contacts) < len(guarantors)
