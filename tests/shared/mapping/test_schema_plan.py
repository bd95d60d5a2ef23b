"""Schema plan: the SchemaSpec an approved map needs, licence counting, owner resolution."""

from __future__ import annotations

import copy

import pytest

from shared.dataverse.metadata import SchemaSpec
from shared.errors import SchemaPlanRefused
from shared.mapping.schema_plan import (
    ProviderRef,
    SystemUserRef,
    build_schema_spec,
    plan_schema,
    providers_from_rows,
    resolve_owners,
)
from shared.mapping.spec import approve, default_mapping, default_mapping_data, parse_mapping

USERS = [
    SystemUserRef(systemuserid="u-dds", internalemailaddress="Dr.Smith@Practice.example"),
    SystemUserRef(systemuserid="u-old", internalemailaddress="hyg@practice.example", isdisabled=True),
    SystemUserRef(systemuserid="u-twin1", internalemailaddress="front@practice.example"),
    SystemUserRef(systemuserid="u-twin2", internalemailaddress="front@practice.example"),
    SystemUserRef(systemuserid="u-admin", internalemailaddress="admin@practice.example"),
]
PROVIDERS = [
    ProviderRef(provider_id="DDS1", email=" dr.smith@practice.example "),
    ProviderRef(provider_id="HYG1", email="hyg@practice.example"),
    ProviderRef(provider_id="FRONT", email="front@practice.example"),
    ProviderRef(provider_id="DEF_PROV", email=None),
    ProviderRef(provider_id="NEW", email="new@practice.example"),
]


def test_providers_resolve_by_email_and_disabled_matches_count_as_unresolved():
    got = {r.provider_id: (r.status, r.systemuserid) for r in resolve_owners(PROVIDERS, USERS)}
    assert got == {
        "DDS1": ("resolved", "u-dds"),
        "HYG1": ("disabled", None),
        "FRONT": ("ambiguous", None),
        "DEF_PROV": ("no_email", None),
        "NEW": ("no_match", None),
    }


def test_unresolved_providers_block_the_plan_until_a_fallback_owner_is_chosen():
    approved = approve(default_mapping())
    plan = plan_schema(approved, licence="sales_professional", providers=PROVIDERS, systemusers=USERS)
    assert not plan.approvable
    assert [p.code for p in plan.report.problems] == ["owners_unresolved"]
    assert plan.report.unresolved_providers == ["DEF_PROV", "FRONT", "HYG1", "NEW"]
    assert (
        "u-old" not in plan.report.fallback_owner_choices and "u-admin" in plan.report.fallback_owner_choices
    )
    with pytest.raises(SchemaPlanRefused) as info:
        plan.require_approvable()
    assert "fallback owner" in str(info.value)
    assert plan.owner_map == {"DDS1": "u-dds"}

    ok = plan_schema(
        approved,
        licence="sales_professional",
        providers=PROVIDERS,
        systemusers=USERS,
        fallback_owner="u-admin",
    )
    ok.require_approvable()
    assert ok.owner_map == {
        "DDS1": "u-dds",
        "HYG1": "u-admin",
        "FRONT": "u-admin",
        "DEF_PROV": "u-admin",
        "NEW": "u-admin",
    }


def test_a_disabled_user_cannot_be_the_fallback_owner():
    plan = plan_schema(
        approve(default_mapping()),
        licence="sales_enterprise",
        providers=PROVIDERS,
        systemusers=USERS,
        fallback_owner="u-old",
    )
    assert {p.code for p in plan.report.problems} == {"fallback_owner_invalid", "owners_unresolved"}
    assert plan.report.fallback_owner is None


def _with_many_custom_tables(n_extra: int):
    data = copy.deepcopy(default_mapping_data())
    template = next(t for t in data["tables"] if t["name"] == "prescription")
    for i in range(n_extra):
        extra = copy.deepcopy(template)
        extra.update(name=f"prescription_copy{i}", target_table=f"bw_rxcopy{i}", schema_name=f"bw_RxCopy{i}")
        extra["key"]["prefix"] = "X" + "ABCDEFGHIJ"[i]
        data["tables"].append(extra)
    return approve(parse_mapping(data))


def test_plan_over_the_sales_professional_limit_is_refused_saying_what_to_change():
    approved = _with_many_custom_tables(7)  # 9 default + 7 = 16 > 15
    plan = plan_schema(approved, licence="sales_professional", providers=PROVIDERS[:1], systemusers=USERS)
    assert plan.report.custom_table_count == 16 and plan.report.custom_table_limit == 15
    assert not plan.report.fits_licence
    assert [p.code for p in plan.report.problems] == ["licence_exceeded"]
    message = plan.report.problems[0].message
    assert "16" in message and "15" in message and "Disable 1" in message and "Enterprise" in message
    with pytest.raises(SchemaPlanRefused) as info:
        plan.require_approvable()
    assert info.value.problems[0]["code"] == "licence_exceeded"
    # the same map fits an Enterprise licence, and 15 tables fit Sales Professional exactly
    assert plan_schema(
        approved, licence="sales_enterprise", providers=PROVIDERS[:1], systemusers=USERS
    ).approvable
    assert plan_schema(
        _with_many_custom_tables(6), licence="sales_professional", providers=PROVIDERS[:1], systemusers=USERS
    ).approvable


def test_enabling_clinical_note_table_counts_one_more_custom_table():
    data = copy.deepcopy(default_mapping_data())
    for t in data["tables"]:
        if t["name"] == "clinical_note_table":
            t["enabled"] = True
        if t["name"] == "clinical_note":
            t["enabled"] = False
    schema = build_schema_spec(parse_mapping(data))
    assert schema.custom_table_count == build_schema_spec(default_mapping()).custom_table_count + 1
    note = schema.table("bw_clinicalnote")
    assert {c.logical_name for c in note.columns} >= {"bw_notetype", "bw_notetext", "bw_sourceid"}
    notetype = next(c for c in note.columns if c.logical_name == "bw_notetype")
    assert notetype.global_option_set == "bw_note_type"


def test_schema_spec_shapes_columns_choices_lookups_and_keys():
    schema = build_schema_spec(default_mapping())
    SchemaSpec.model_validate(schema.model_dump())  # passes the client engineer's own checks again
    contact = schema.table("contact")
    assert contact.existing
    cols = {c.logical_name: c for c in contact.columns}
    assert "firstname" not in cols  # standard columns are not created
    assert cols["bw_firstvisitdate"].datetime_behavior == "DateOnly"
    assert cols["bw_primarybenefitsused"].type == "money" and cols["bw_primarybenefitsused"].precision == 2
    assert cols["bw_patientstatus"].global_option_set == "bw_patient_status"
    assert cols["bw_sourceid"].type == "string" and cols["bw_sourceid"].max_length == 100
    plan = schema.table("bw_treatmentplan")
    assert not plan.existing and plan.primary_name.logical_name == "bw_name" and plan.has_notes
    rel = {(r.referencing_table, r.lookup_schema_name): r for r in schema.relationships}
    assert rel[("bw_treatmentplanline", "bw_TreatmentPlanId")].referenced_table == "bw_treatmentplan"
    assert rel[("contact", "bw_PrimaryCarrierId")].referenced_table == "bw_insurancecarrier"
    assert rel[("contact", "bw_SecondaryCarrierId")].bind_name == "bw_SecondaryCarrierId"
    ledger = {o.name: o for o in schema.option_sets}["bw_ledger_type"]
    assert [o.label for o in ledger.options] == [
        "Charge",
        "Payment",
        "Adjustment",
        "InsurancePayment",
        "WrittenOff",
        "BalanceForward",
    ]
    assert build_schema_spec(default_mapping()) == schema  # deterministic


def test_plan_records_the_mapping_version_and_hash():
    approved = approve(default_mapping())
    plan = plan_schema(approved, licence="sales_enterprise", providers=[], systemusers=[])
    assert plan.mapping_hash == approved.content_hash and plan.mapping_version == 1
    assert plan.approvable  # no providers, nothing unresolved


def test_providers_read_from_bundle_rows_with_the_map_s_email_column():
    rows = [
        {"provider_id": "DDS1", "email": "a@b.example"},
        {"provider_id": " ", "email": "x@y.example"},
        {"provider_id": "HYG1", "email": None},
    ]
    refs = providers_from_rows(default_mapping(), rows)
    assert refs == [
        ProviderRef(provider_id="DDS1", email="a@b.example"),
        ProviderRef(provider_id="HYG1", email=None),
    ]
