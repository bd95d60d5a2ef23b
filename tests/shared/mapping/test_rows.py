"""One bundle row -> one Dataverse payload, with binds, owners, parties and errors without values."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.dentrix.tables import get_table
from shared.mapping.rows import (
    child_tables,
    derived_id,
    final_state,
    index_children,
    key_ref,
    make_context,
    record_ref,
    reference_tables,
    split_deferred,
    transform_row,
)
from shared.mapping.spec import approve, default_mapping

DDS1 = "11111111-1111-1111-1111-111111111111"
FALLBACK = "99999999-9999-9999-9999-999999999999"


@pytest.fixture(scope="module")
def spec():
    return default_mapping()


def ctx_for(spec, **kw):
    base = dict(
        owners={"DDS1": DDS1},
        references={
            "definition": {
                "7": {"descript": "Complete"},
                "8": {"descript": "Exam"},
                "9": {"descript": "Payment - Check"},
            },
            "operatory": {"1": {"op_title": " OP-1 "}},
            "proc_code": {"5": {"ada_code": "d1110"}, "6": {"ada_code": "D0120"}},
            "insured": {
                "I1": {
                    "id_num": "SUB-1",
                    "ins_plan_id": "C1",
                    "ins_party_id": "10",
                    "effective_date": "2023-01-01",
                }
            },
            "insurance_carrier": {"C1": {"group_number": " G-77 ", "max_cov_person_cents": 150000}},
            "recall_type": {"R1": {"name": "PROPHY", "descript": "Prophylaxis"}},
        },
        children={
            ("appointment_procedure", "appointment_id"): index_children(
                [
                    {"appointment_id": "A9", "proc_code_id": "6"},
                    {"appointment_id": "A9", "proc_code_id": "5"},
                ],
                "appointment_id",
            )
        },
    )
    base.update(kw)
    return make_context(approve(spec), "America/Denver", **base)


PATIENT = {
    "patient_id": "12",
    "first_name": "  Ana ",
    "last_name": "Ruiz",
    "gender": 2,
    "birth_date": "1984-02-29",
    "email": "Ana@Example.COM",
    "home_phone": "303 555 0100",
    "mobile_phone": "bad",
    "status": 1,
    "fampos": 3,
    "guar_id": "10",
    "pri_provider_id": "DDS1",
    "privacy_flags": 2,
    "created_at": "2015-06-01T09:00:00",
    "chart_num": "RU0001",
}


def test_patient_row_becomes_a_contact_payload(spec):
    payload, errors = transform_row(spec.table("patient"), PATIENT, ctx_for(spec))
    assert payload["bw_sourceid"] == "P-12"
    assert payload["firstname"] == "Ana" and payload["lastname"] == "Ruiz"
    assert payload["gendercode"] == 2 and payload["birthdate"] == "1984-02-29"
    assert payload["emailaddress1"] == "Ana@example.com" and payload["telephone2"] == "+13035550100"
    assert payload["bw_patientstatus"] == 727000000 and payload["bw_familyposition"] == 727000002
    assert payload["donotphone"] is False and payload["donotemail"] is True
    assert payload["overriddencreatedon"] == "2015-06-01T15:00:00Z"
    assert payload["parentcustomerid_contact@odata.bind"] == "/contacts(bw_sourceid='P-10')"
    assert payload["ownerid@odata.bind"] == f"/systemusers({DDS1})"
    assert "mobilephone" not in payload
    assert [(e.loc, e.code, e.fatal) for e in errors] == [
        (("patient", "mobilephone"), "invalid_phone", False)
    ]
    json.dumps(payload)  # ready to send


def test_errors_never_contain_row_values(spec):
    row = dict(PATIENT, last_name=None, email="Ruiz-Ana-secret", birth_date="1984-13-45")
    _payload, errors = transform_row(spec.table("patient"), row, ctx_for(spec))
    text = " ".join(f"{e.loc} {e.code} {e.message}" for e in errors)
    assert {e.code for e in errors} >= {"required_value_missing", "invalid_email", "not_date"}
    for value in ("Ruiz", "secret", "1984", "Ana"):
        assert value not in text


def test_missing_required_value_or_key_is_fatal(spec):
    _p, errors = transform_row(spec.table("patient"), dict(PATIENT, last_name="   "), ctx_for(spec))
    assert any(e.fatal and e.code == "required_value_missing" for e in errors)
    _p, errors = transform_row(spec.table("patient"), dict(PATIENT, patient_id=None), ctx_for(spec))
    assert any(e.fatal and e.code == "missing_key" for e in errors)


def test_clinical_record_needs_a_valid_owner_and_takes_the_fallback(spec):
    rx = {
        "rx_id": "3",
        "patient_id": "12",
        "provider_id": "GONE",
        "drug_name": "Amoxicillin",
        "refills": 2,
        "rx_date": "2024-02-01",
    }
    _p, errors = transform_row(spec.table("prescription"), rx, ctx_for(spec))
    assert [(e.code, e.fatal) for e in errors] == [("no_valid_owner", True)]
    payload, errors = transform_row(spec.table("prescription"), rx, ctx_for(spec, fallback_owner=FALLBACK))
    assert errors == [] and payload["ownerid@odata.bind"] == f"/systemusers({FALLBACK})"
    assert payload["bw_PatientId@odata.bind"] == "/contacts(bw_sourceid='P-12')"
    assert payload["bw_name"] == "Amoxicillin" and payload["bw_refills"] == 2


def test_appointment_has_parties_regarding_owner_codes_and_closes_last(spec):
    row = {
        "appointment_id": "A9",
        "patient_id": "12",
        "appointment_date": "2024-07-01",
        "start_hour": 8,
        "start_minute": 40,
        "length": 50,
        "operatory_id": "1",
        "provider_id": "DDS1",
        "addtnl_provider_id": "HYG9",
        "status_id": "7",
        "appt_type_id": None,
        "reason": None,
        "broken": False,
        "amount_cents": 9900,
    }
    ctx = ctx_for(spec)
    payload, errors = transform_row(spec.table("appointment"), row, ctx)
    assert errors == [], errors
    assert payload["subject"] == "Appointment"
    assert (
        payload["scheduledstart"] == "2024-07-01T14:40:00Z"
        and payload["scheduledend"] == "2024-07-01T15:30:00Z"
    )
    assert payload["location"] == "OP-1" and payload["bw_cdtcodes"] == "D0120, D1110"
    assert payload["regardingobjectid_contact_appointment@odata.bind"] == "/contacts(bw_sourceid='P-12')"
    assert payload["appointment_activity_parties"] == [
        {"partyid_systemuser@odata.bind": f"/systemusers({DDS1})", "participationtypemask": 7},
        {"partyid_contact@odata.bind": "/contacts(bw_sourceid='P-12')", "participationtypemask": 5},
    ]  # the unresolved optional attendee is left out
    assert "statecode" not in payload
    assert final_state(spec.table("appointment"), row, ctx) == {"statecode": 1, "statuscode": 3}
    assert final_state(spec.table("appointment"), dict(row, broken=True), ctx) == {
        "statecode": 2,
        "statuscode": 4,
    }
    assert final_state(spec.table("appointment"), dict(row, status_id="8"), ctx) is None


def test_new_patient_appointment_without_patient_is_written_without_regarding(spec):
    row = {
        "appointment_id": "A1",
        "patient_id": None,
        "appointment_date": "2024-07-01",
        "start_hour": 8,
        "start_minute": 0,
        "length": 30,
        "provider_id": "DDS1",
        "reason": "New patient",
    }
    payload, errors = transform_row(spec.table("appointment"), row, ctx_for(spec))
    assert errors == []
    assert "regardingobjectid_contact_appointment@odata.bind" not in payload
    assert len(payload["appointment_activity_parties"]) == 1


def test_dual_coverage_updates_the_patient_contact_with_carrier_lookups(spec):
    row = {
        "pat_ins_id": "12|1",
        "patient_id": "12",
        "rank": 1,
        "insured_id": "I1",
        "relationship_code": 1,
        "benefits_used_cents": 40000,
    }
    primary = spec.table("patient_insurance_primary")
    assert primary.selects(row) and not spec.table("patient_insurance_secondary").selects(row)
    ctx = ctx_for(spec)
    payload, errors = transform_row(primary, row, ctx)
    assert errors == []
    assert "bw_sourceid" not in payload
    assert record_ref(primary, row, ctx) == "contacts(bw_sourceid='P-12')"
    assert payload["bw_primarysubscriberid"] == "SUB-1" and payload["bw_primarygroupnumber"] == "G-77"
    assert payload["bw_primaryremainingbenefits"] == 1100.0 and payload["bw_primaryrelationship"] == 727000000
    assert payload["bw_PrimaryCarrierId@odata.bind"] == "/bw_insurancecarriers(bw_sourceid='IC-C1')"
    assert payload["bw_PrimarySubscriberContactId@odata.bind"] == "/contacts(bw_sourceid='P-10')"


def test_entity_sets_read_from_dataverse_win_over_the_default(spec):
    row = {"pat_ins_id": "12|2", "patient_id": "12", "rank": 2, "insured_id": "I1"}
    ctx = ctx_for(spec, entity_sets={"bw_insurancecarrier": "bw_insurancecarrierset"})
    payload, _ = transform_row(spec.table("patient_insurance_secondary"), row, ctx)
    assert payload["bw_SecondaryCarrierId@odata.bind"] == "/bw_insurancecarrierset(bw_sourceid='IC-C1')"


def test_orphans_are_quarantined_or_left_out_when_parent_ids_are_known(spec):
    ctx = ctx_for(spec, parent_ids={"patient": {"12"}, "treatment_plan": {"T1"}}, fallback_owner=FALLBACK)
    line = {
        "proc_id": "900",
        "patient_id": "12",
        "tx_case_id": "T404",
        "chart_status": 105,
        "ada_code": "D2391",
        "tooth_range_start": "3",
        "tooth_range_end": "3",
        "surface_string": "MO",
        "surf_m": True,
        "surf_o": True,
        "amount_cents": 18000,
        "provider_id": "DDS1",
    }
    _p, errors = transform_row(spec.table("treatment_plan_line"), line, ctx)
    assert [(e.code, e.fatal) for e in errors] == [("orphan", True)]
    ledger = {
        "proc_id": "901",
        "patient_id": "12",
        "guar_id": "55",
        "chart_status": 90,
        "proc_class": 1,
        "ord": "9",
        "amount_cents": -5000,
        "provider_id": "DDS1",
        "proc_date": "2024-03-01",
    }
    payload, errors = transform_row(spec.table("ledger"), ledger, ctx)
    assert [(e.code, e.fatal) for e in errors] == [("parent_missing", False)]
    assert "bw_GuarantorId@odata.bind" not in payload
    assert payload["bw_ledgertype"] == 727000001 and payload["bw_amount"] == -50.0
    assert payload["bw_dentrixtype"] == "Payment - Check"


def test_treatment_line_carries_code_category_tooth_surface_fee_and_plan(spec):
    line = {
        "proc_id": "900",
        "patient_id": "12",
        "tx_case_id": "T1",
        "chart_status": 105,
        "ada_code": "d2391",
        "tooth_range_start": "3",
        "tooth_range_end": "3",
        "surface_string": "MO",
        "surf_m": True,
        "surf_o": True,
        "surf_d": False,
        "surf_l": False,
        "surf_f": False,
        "surf_5": False,
        "amount_cents": 18000,
        "provider_id": "DDS1",
    }
    payload, errors = transform_row(spec.table("treatment_plan_line"), line, ctx_for(spec))
    assert errors == []
    assert (payload["bw_cdtcode"], payload["bw_cdtcategory"], payload["bw_tooth"], payload["bw_surface"]) == (
        "D2391",
        727000002,
        "3",
        "MO",
    )
    assert payload["bw_fee"] == 180.0 and payload["bw_status"] == 727000000
    assert payload["bw_TreatmentPlanId@odata.bind"] == "/bw_treatmentplans(bw_sourceid='TP-T1')"


def test_notes_get_a_stable_primary_key_instead_of_a_source_id_column(spec):
    note = {
        "note_id": "77",
        "patient_id": "12",
        "provider_id": "DDS1",
        "note_type_id": "8",
        "note_text": "Exam done.\r\nNo caries.",
        "note_date": "2024-02-02T10:00:00",
    }
    ctx = ctx_for(spec)
    payload, errors = transform_row(spec.table("clinical_note"), note, ctx)
    assert errors == []
    assert payload["annotationid"] == derived_id("annotation", "N-77")
    assert transform_row(spec.table("clinical_note"), note, ctx)[0]["annotationid"] == payload["annotationid"]
    assert "bw_sourceid" not in payload and payload["subject"] == "Clinical note: Exam"
    assert payload["objectid_contact@odata.bind"] == "/contacts(bw_sourceid='P-12')"
    assert record_ref(spec.table("clinical_note"), note, ctx) == f"annotations({payload['annotationid']})"


def test_custom_rows_without_a_name_use_their_source_id(spec):
    payload, _ = transform_row(
        spec.table("recall"),
        {"recall_id": "12|R404", "patient_id": "12", "recall_type_id": "R404", "due_date": "2024-01-01"},
        ctx_for(spec),
    )
    assert payload["bw_name"] == "Recall"
    payload, _ = transform_row(spec.table("fee_schedule"), {"fee_sched_id": "1"}, ctx_for(spec))
    assert payload["bw_name"] == "Fee schedule"


def test_reference_table_not_loaded_is_a_fatal_row_error_not_a_crash(spec):
    ctx = make_context(spec, "America/Denver", owners={"DDS1": DDS1})
    _p, errors = transform_row(
        spec.table("recall"), {"recall_id": "1|R1", "patient_id": "12", "recall_type_id": "R1"}, ctx
    )
    assert {e.code for e in errors} == {"reference_table_not_loaded"}
    assert {
        "definition",
        "insured",
        "insurance_carrier",
        "operatory",
        "proc_code",
        "recall_type",
    } == reference_tables(spec)
    assert child_tables(spec) == {("appointment_procedure", "appointment_id")}


def test_second_pass_split_and_key_quoting():
    payload = {
        "bw_sourceid": "P-1",
        "firstname": "A",
        "parentcustomerid_contact@odata.bind": "/contacts(x)",
        "ownerid@odata.bind": "/systemusers(u)",
    }
    first, later = split_deferred(payload, {"parentcustomerid_contact"})
    assert later == {"parentcustomerid_contact@odata.bind": "/contacts(x)"}
    assert "parentcustomerid_contact@odata.bind" not in first and first["ownerid@odata.bind"]
    assert key_ref("contacts", "bw_sourceid", "P-O'Hara") == "contacts(bw_sourceid='P-O''Hara')"


# --- property: any row the bundle contract allows gives a JSON payload or field errors, never a crash ---

_MARK = "Zq"  # every generated text value carries it, so a leak into an error message is detectable

_KIND_VALUES = {
    "id": st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True)),
    "text": st.one_of(st.none(), st.text(min_size=1, max_size=30).map(lambda s: _MARK + s + _MARK)),
    "int": st.one_of(st.none(), st.integers(-5, 200)),
    "bool": st.one_of(st.none(), st.booleans()),
    "money": st.one_of(st.none(), st.integers(-(10**9), 10**9)),
    "date": st.one_of(st.none(), st.dates().map(lambda d: d.isoformat())),
    "datetime": st.one_of(st.none(), st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat())),
    "tooth": st.one_of(st.none(), st.sampled_from(["1", "32", "A", "T", "51", "AS"])),
    "surface": st.one_of(st.none(), st.sampled_from(["M", "MOD", "DL", "F5"])),
    "sha256": st.none(),
    "json": st.one_of(
        st.none(), st.dictionaries(st.sampled_from(["1", "2"]), st.lists(st.integers(0, 9), max_size=6))
    ),
}


def _row_strategy(table: str):
    cols = get_table(table).columns
    return st.fixed_dictionaries({c.name: _KIND_VALUES[c.kind] for c in cols})


_SPEC = default_mapping()
_WRITTEN = [t for t in _SPEC.enabled_tables() if t.action in ("upsert", "update", "attachment")]


# No shrinking: a many-table draw shrinks for minutes; the failing example is printed as drawn.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_any_contract_row_gives_a_json_payload_or_field_errors(data):
    ctx = make_context(
        _SPEC, "America/Denver", references={t: {} for t in reference_tables(_SPEC)}, owners={"DDS1": DDS1}
    )
    for tm in _WRITTEN:
        row = data.draw(_row_strategy(tm.source_table))
        payload, errors = transform_row(tm, row, ctx)
        json.dumps(payload)
        for e in errors:
            assert e.loc[0] == tm.name
            assert _MARK not in e.message and _MARK not in repr(e.loc)
        if not any(e.fatal for e in errors) and tm.action == "upsert":
            assert record_ref(tm, row, ctx) is not None
