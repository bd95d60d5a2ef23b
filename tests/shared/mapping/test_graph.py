"""Dependency waves from the map's lookups, and cycles broken by a second pass."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mapping.graph import plan_loads
from shared.mapping.spec import MappingSpec, default_mapping, default_mapping_data


def test_default_map_waves_put_parents_before_children():
    spec = default_mapping()
    plan = plan_loads(spec)
    w = plan.wave_of
    assert w("patient") == 0 and w("fee_schedule") == 0
    assert w("insurance_carrier") > w("fee_schedule")
    assert w("guardian") > w("patient")
    assert w("patient_insurance_primary") > w("insurance_carrier")
    assert w("patient_insurance_secondary") > w("insurance_carrier")
    assert w("appointment") > w("patient")
    assert w("treatment_plan_line") > w("treatment_plan") and w("lab_case") > w("treatment_plan")
    for child, parent in plan.edges:
        assert w(child) > w(parent)
    loaded = {n for wave in plan.waves for n in wave}
    assert "provider" not in loaded and "document" not in loaded and "clinical_note_table" not in loaded
    assert len(loaded) == sum(len(wave) for wave in plan.waves)


def test_guarantor_self_reference_is_deferred_to_a_second_pass():
    plan = plan_loads(default_mapping())
    assert [(d.table, d.nav, d.parent) for d in plan.deferred] == [
        ("patient", "parentcustomerid_contact", "patient")
    ]
    assert plan.deferred_navs("patient") == {"parentcustomerid_contact"}
    assert plan.deferred_navs("appointment") == set()


def test_two_maps_pointing_at_each_other_defer_both_lookups():
    data = copy.deepcopy(default_mapping_data())
    tp = next(t for t in data["tables"] if t["name"] == "treatment_plan")
    tp["lookups"].append({"source": "tx_case_id", "parent": "lab_case", "nav": "bw_LabCaseId"})
    spec = MappingSpec.model_validate(data)
    plan = plan_loads(spec)
    deferred = {(d.table, d.nav) for d in plan.deferred}
    assert ("treatment_plan", "bw_LabCaseId") in deferred and ("lab_case", "bw_TreatmentPlanId") in deferred
    assert plan.wave_of("treatment_plan") == plan.wave_of("lab_case") == 1
    assert plan.wave_of("treatment_plan_line") > plan.wave_of("treatment_plan")


def test_a_cycle_through_an_update_key_cannot_be_broken():
    data = copy.deepcopy(default_mapping_data())
    patient = next(t for t in data["tables"] if t["name"] == "patient")
    patient["lookups"].append({"source": "patient_id", "parent": "guardian", "nav": "bw_X"})
    with pytest.raises(ValueError, match="guardian"):
        plan_loads(
            MappingSpec.model_validate(
                {
                    **data,
                    "tables": [
                        t if t["name"] != "guardian" else {**t, "action": "update"} for t in data["tables"]
                    ],
                }
            )
        )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20))
def test_random_lookup_graphs_give_valid_waves(edges):
    data = copy.deepcopy(default_mapping_data())
    names = [
        "patient",
        "fee_schedule",
        "insurance_carrier",
        "treatment_plan",
        "prescription",
        "ledger",
        "recall",
        "lab_case",
    ]
    by = {t["name"]: t for t in data["tables"]}
    for n in names:
        by[n]["lookups"] = []
    for i, (a, b) in enumerate(edges):
        by[names[a]]["lookups"].append(
            {"source": by[names[a]]["key"]["columns"][0], "parent": names[b], "nav": f"bw_L{i}"}
        )
    plan = plan_loads(MappingSpec.model_validate(data))
    deferred = {(d.table, d.nav) for d in plan.deferred}

    def reaches(src: int, dst: int) -> bool:
        seen, todo = set(), [src]
        while todo:
            n = todo.pop()
            for a, b in edges:
                if a == n and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return dst in seen

    for i, (a, b) in enumerate(edges):
        in_cycle = a == b or reaches(b, a)
        assert ((names[a], f"bw_L{i}") in deferred) == in_cycle
        if not in_cycle:
            assert plan.wave_of(names[a]) > plan.wave_of(names[b])
