"""The default map end to end against the Dataverse emulator: its schema plan builds, and the payloads of a
small practice, written wave by wave with the deferred lookups in a second pass and appointments closed
last, are accepted and read back with the right links, owners and values. Twice, with nothing duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.schema import build_schema
from shared.mapping.contract import standard_tables
from shared.mapping.graph import plan_loads
from shared.mapping.rows import (
    create_only_columns,
    entity_set,
    final_state,
    index_children,
    make_context,
    record_key,
    reference_tables,
    split_deferred,
    transform_row,
)
from shared.mapping.schema_plan import SystemUserRef, build_schema_spec, plan_schema, providers_from_rows
from shared.mapping.spec import approve, default_mapping

pytestmark = pytest.mark.slow

DR_ONE = "00000000-0000-0000-0000-000000000101"  # emulator seed user provider1@example.com
DR_TWO = "00000000-0000-0000-0000-000000000102"

PRACTICE: dict[str, list[dict[str, Any]]] = {
    "provider": [
        {"provider_id": "DDS1", "email": "Provider1@Example.com"},
        {"provider_id": "HYG1", "email": "former@example.com"},  # a disabled user: unresolved
    ],
    "patient": [
        {"patient_id": "10", "first_name": "Guar", "last_name": "Antor", "guar_id": "10", "status": 2,
         "pri_provider_id": "DDS1", "created_at": "2012-05-01T09:00:00"},
        {"patient_id": "12", "first_name": "Kid", "last_name": "Antor", "guar_id": "10", "status": 1, "fampos": 3,
         "birth_date": "2015-02-28", "email": "kid@example.org", "home_phone": "303-555-0100",
         "pri_provider_id": "HYG1", "created_at": "2016-06-01T09:00:00"},
    ],
    "guardian": [{"guardian_link_id": "G1", "patient_id": "12", "guardian_id": "10", "relationship": 1}],
    "fee_schedule": [{"fee_sched_id": "1", "fee_sched_name": "UCR"}],
    "fee_schedule_item": [{"fee_id": "1|5", "fee_sched_id": "1", "proc_code_id": "5", "amount_cents": 9500}],
    "insurance_carrier": [
        {"ins_id": "C1", "ins_co_name": "Delta", "group_number": "G-1", "payor_id": "DDCA1", "fee_sched_id": "1",
         "max_cov_person_cents": 150000},
        {"ins_id": "C2", "ins_co_name": "Metlife", "group_number": "G-2", "max_cov_person_cents": 100000},
    ],
    "patient_insurance": [
        {"pat_ins_id": "12|1", "patient_id": "12", "rank": 1, "insured_id": "I1", "relationship_code": 3,
         "benefits_used_cents": 40000},
        {"pat_ins_id": "12|2", "patient_id": "12", "rank": 2, "insured_id": "I2", "relationship_code": 3},
    ],
    "appointment": [
        {"appointment_id": "A1", "patient_id": "12", "appointment_date": "2024-07-01", "start_hour": 8,
         "start_minute": 40, "length": 50, "operatory_id": "1", "provider_id": "DDS1", "status_id": "7",
         "reason": "Cleaning", "broken": False, "created_at": "2024-06-01T10:00:00"},
        {"appointment_id": "A2", "patient_id": None, "appointment_date": "2024-07-02", "start_hour": 9,
         "start_minute": 0, "length": 30, "provider_id": "HYG1", "reason": "New patient", "broken": True},
    ],
    "tx_case": [{"tx_case_id": "T1", "patient_id": "12", "provider_id": "DDS1", "case_name": "Fillings",
                 "created_date": "2024-05-01"}],
    "proc_log": [
        {"proc_id": "900", "patient_id": "12", "guar_id": "10", "tx_case_id": "T1", "chart_status": 105,
         "ada_code": "D2391", "tooth_range_start": "3", "tooth_range_end": "3", "surface_string": "MO",
         "amount_cents": 18000, "provider_id": "DDS1", "create_date": "2024-05-01T10:00:00"},
        {"proc_id": "901", "patient_id": "12", "guar_id": "10", "chart_status": 90, "proc_class": 0,
         "amount_cents": 2500, "provider_id": "DDS1", "proc_date": "2024-01-01"},
    ],
    "clinical_note": [{"note_id": "N1", "patient_id": "12", "provider_id": "DDS1", "note_type_id": "8",
                       "note_text": "Exam.\r\nNo caries.", "note_date": "2024-07-01T09:40:00"}],
    "perio_exam": [{"exam_id": "E1", "patient_id": "12", "provider_id": "DDS1", "exam_date": "2024-07-01",
                    "readings": {"3": [2, 3, 2, 2, 2, 3]}}],
    "prescription": [{"rx_id": "R1", "patient_id": "12", "provider_id": "HYG1", "drug_name": "Amoxicillin",
                      "refills": 1, "rx_date": "2024-07-01"}],
    "recall": [{"recall_id": "12|P", "patient_id": "12", "recall_type_id": "P", "due_date": "2025-01-01",
                "provider_id": "DDS1"}],
    "lab_case": [{"lab_case_id": "L1", "patient_id": "12", "tx_case_id": "T1", "provider_id": "DDS1",
                  "lab_name": "Smile Lab", "description": "Crown #3", "cost_cents": 12000}],
}

REFERENCES = {
    "definition": {"7": {"descript": "Complete"}, "8": {"descript": "Exam"}},
    "operatory": {"1": {"op_title": "OP-1"}},
    "proc_code": {"5": {"ada_code": "D1110"}},
    "insured": {"I1": {"id_num": "SUB-1", "ins_plan_id": "C1", "ins_party_id": "10", "effective_date": "2023-01-01"},
                "I2": {"id_num": "SUB-2", "ins_plan_id": "C2", "ins_party_id": "10"}},
    "insurance_carrier": {r["ins_id"]: r for r in PRACTICE["insurance_carrier"]},
    "recall_type": {"P": {"name": "PROPHY", "descript": "Prophylaxis"}},
}


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 300.0, "key_activation_seconds": 1.0}) as running:
        yield running


def _client(emu: RunningEmulator) -> DataverseClient:
    config = DataverseConfig(environment_url=emu.base_url, backoff_base_seconds=0.05, not_ready_delay_seconds=0.2)
    return DataverseClient(config, [EmulatorTokenCredential("app-1")])


async def _migrate(client: DataverseClient) -> dict[str, Any]:
    spec = default_mapping()
    approved = approve(spec)

    info = await build_schema(client, build_schema_spec(spec), key_poll_seconds=0.05)
    assert not info.conflicts
    entity_sets = {name: t.entity_set_name for name, t in info.tables.items()}
    users = [SystemUserRef(**u) for u in await client.list_systemusers()]
    plan = plan_schema(approved, licence="sales_professional",
                       providers=providers_from_rows(spec, PRACTICE["provider"]), systemusers=users,
                       fallback_owner=DR_TWO)
    plan.require_approvable()
    assert {o.provider_id: o.status for o in plan.report.owners} == {"DDS1": "resolved", "HYG1": "disabled"}
    assert set(REFERENCES) == reference_tables(spec)
    ctx = make_context(approved, "America/Denver", references=REFERENCES, owners=plan.owner_map,
                       fallback_owner=plan.report.fallback_owner, entity_sets=entity_sets,
                       children={("appointment_procedure", "appointment_id"): index_children([], "appointment_id")})
    order = plan_loads(spec)
    second_pass: list[tuple[str, Any, dict[str, Any]]] = []
    closes: list[tuple[str, Any, dict[str, int]]] = []
    actions: dict[str, list[str]] = {}
    for wave in order.waves:
        for name in wave:
            tm = spec.table(name)
            std_key = "bw_sourceid"
            for row in PRACTICE.get(tm.source_table, []):
                if not tm.selects(row):
                    continue
                payload, errors = transform_row(tm, row, ctx)
                assert not [e for e in errors if e.fatal], (name, errors)
                first, later = split_deferred(payload, order.deferred_navs(name))
                es = entity_set(ctx, tm.target_table)
                sid = record_key(tm, row, ctx)
                if std_key in first:
                    key: Any = {std_key: first.pop(std_key)}
                elif tm.action == "update":
                    key = {std_key: sid}
                else:  # notes: their derived primary key
                    pk = next(k for k in first if k.endswith("id") and not k.endswith("@odata.bind"))
                    key = first.pop(pk)
                existing = await client.get(es, key)
                if existing is not None:
                    for col in create_only_columns():
                        first.pop(col, None)
                    if tm.target_table == "appointment" and existing.get("statecode") in (1, 2):
                        actions.setdefault(name, []).append("unchanged")
                        continue  # closed appointments are read-only; the re-run leaves them be
                primary = (info.tables[tm.target_table].primary_id_attribute if tm.target_table in info.tables
                           else standard_tables()[tm.target_table].primary_id)
                _id, action = await client.upsert(es, key, first, primary_id=primary)
                actions.setdefault(name, []).append(action)
                if later:
                    second_pass.append((es, key, later))
                state = final_state(tm, row, ctx)
                if state:
                    closes.append((es, key, state))
    for es, key, binds in second_pass:
        await client.update(es, key, binds)
    for es, key, state in closes:
        await client.update(es, key, state)
    return actions


async def _read_back(client: DataverseClient) -> dict[str, Any]:
    """Every record the test checks, read through the Web API as any consumer would."""
    async def by_key(es: str, sid: str) -> dict[str, Any]:
        row = await client.get(es, {"bw_sourceid": sid})
        assert row is not None, sid
        return row

    out: dict[str, Any] = {}
    for es, sid in [("contacts", "P-10"), ("contacts", "P-12"), ("bw_insurancecarriers", "IC-C1"),
                    ("bw_insurancecarriers", "IC-C2"), ("appointments", "A-A1"), ("appointments", "A-A2"),
                    ("bw_treatmentplans", "TP-T1"), ("bw_treatmentplanlines", "TPL-900"), ("bw_labcases", "LC-L1"),
                    ("bw_patientledgers", "L-901"), ("bw_prescriptions", "RX-R1")]:
        out[sid] = await by_key(es, sid)
    out["contacts"] = await client.query_all("contacts", select=["contactid", "bw_sourceid"])
    out["notes"] = await client.query_all("annotations")
    out["parties"] = await client.query_all("activityparties")
    return out


def test_default_map_loads_a_small_practice_into_the_emulator_and_reruns_change_nothing(emu: RunningEmulator):
    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with _client(emu) as client:
            first = await _migrate(client)
            snapshot = emu.dump()
            second = await _migrate(client)
            after = emu.dump()
            diffs = set()
            for table, rows in snapshot["rows"].items():
                assert set(after["rows"][table]) == set(rows), table  # no record added or lost
                for rid, row in rows.items():
                    diffs |= {k for k in set(row) | set(after["rows"][table][rid])
                              if row.get(k) != after["rows"][table][rid].get(k)}
            assert diffs <= {"modifiedon", "versionnumber"}, diffs  # what an update always bumps
            return first, second, await _read_back(client)

    first, second, got = asyncio.run(run())
    assert set(first["patient"]) == {"created"} and set(second["patient"]) == {"updated"}
    assert "created" not in {a for acts in second.values() for a in acts}

    assert sorted(c["bw_sourceid"] for c in got["contacts"]) == ["P-10", "P-12"]
    guarantor, kid = got["P-10"], got["P-12"]
    gid, kid_id = guarantor["contactid"], kid["contactid"]
    assert kid["_parentcustomerid_value"] == gid and guarantor["_parentcustomerid_value"] == gid
    assert kid["_bw_guardianid_value"] == gid and kid["_bw_primarysubscribercontactid_value"] == gid
    assert kid["_bw_primarycarrierid_value"] == got["IC-C1"]["bw_insurancecarrierid"]
    assert kid["_bw_secondarycarrierid_value"] == got["IC-C2"]["bw_insurancecarrierid"]
    assert kid["bw_primarysubscriberid"] == "SUB-1" and float(kid["bw_primaryremainingbenefits"]) == 1100.0
    assert kid["birthdate"].startswith("2015-02-28") and kid["telephone2"] == "+13035550100"
    assert kid["_ownerid_value"] == DR_TWO  # HYG1's user is disabled: the fallback owner
    assert guarantor["_ownerid_value"] == DR_ONE
    assert guarantor["createdon"].startswith("2012-05-01T15:00:00")  # original create date kept

    a1, a2 = got["A-A1"], got["A-A2"]
    assert a1["statecode"] == 1 and a1["statuscode"] == 3 and a1["_ownerid_value"] == DR_ONE
    assert a1["_regardingobjectid_value"] == kid_id
    assert a1["scheduledstart"].startswith("2024-07-01T14:40:00")
    assert a2["statecode"] == 2 and a2["_ownerid_value"] == DR_TWO
    masks = sorted(p["participationtypemask"] for p in got["parties"] if p["_activityid_value"] == a1["activityid"])
    assert masks == [5, 7]

    plan_id = got["TP-T1"]["bw_treatmentplanid"]
    line = got["TPL-900"]
    assert line["_bw_treatmentplanid_value"] == plan_id and line["_bw_patientid_value"] == kid_id
    assert (line["bw_cdtcode"], line["bw_tooth"], line["bw_surface"]) == ("D2391", "3", "MO")
    assert got["LC-L1"]["_bw_patientid_value"] == kid_id and got["LC-L1"]["_bw_treatmentplanid_value"] == plan_id
    ledger = got["L-901"]
    assert ledger["bw_ledgertype"] == 727000005 and ledger["_bw_guarantorid_value"] == gid  # balance forward
    assert got["RX-R1"]["_ownerid_value"] == DR_TWO
    notes = got["notes"]
    assert len(notes) == 2 and {n["_objectid_value"] for n in notes} == {kid_id}
    assert {n["subject"] for n in notes} == {"Clinical note: Exam", "Clinical note: Perio chart"}
