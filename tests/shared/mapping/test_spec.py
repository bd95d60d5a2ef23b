"""Editing and approving a map: refusals come back as field-level errors, approval freezes a version."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from shared.errors import MappingInvalid, MappingNotApproved
from shared.mapping.contract import SourceContract
from shared.mapping.spec import approve, default_mapping, default_mapping_data, load_approved, parse_mapping


def _edit(fn):
    data = copy.deepcopy(default_mapping_data())
    fn(data)
    return data


def _table(data, name):
    return next(t for t in data["tables"] if t["name"] == name)


def _field(data, table, target):
    return next(f for f in _table(data, table)["fields"] if f["target"] == target)


def _errors(data, **kw):
    with pytest.raises(MappingInvalid) as info:
        parse_mapping(data, **kw)
    return info.value.errors


def test_edit_naming_a_standard_column_that_does_not_exist_is_refused_with_its_location():
    data = _edit(lambda d: _field(d, "patient", "firstname").update(target="firstnme"))
    errs = _errors(data)
    idx = [t["name"] for t in data["tables"]].index("patient")
    assert any(
        e["code"] == "column_cannot_exist" and e["loc"][:2] == ("tables", idx) and e["loc"][-1] == "target"
        for e in errs
    ), errs


def test_edit_naming_an_unprefixed_column_on_a_custom_table_is_refused():
    data = _edit(lambda d: _field(d, "prescription", "bw_refills").update(target="refills"))
    assert [e["code"] for e in _errors(data)] == ["column_cannot_exist"]


def test_edit_with_an_invalid_custom_column_name_is_refused():
    data = _edit(lambda d: _field(d, "prescription", "bw_refills").update(target="bw_Refills!"))
    assert "column_cannot_exist" in [e["code"] for e in _errors(data)]


def test_edit_naming_a_source_column_the_bundle_lacks_is_refused():
    data = _edit(lambda d: _field(d, "patient", "firstname").update(source="firstname_typo"))
    errs = _errors(data)
    assert errs[0]["code"] == "unknown_source_column" and errs[0]["loc"][-2:] == ("source", 0)


def test_type_that_cannot_hold_the_data_is_refused():
    # a date column mapped as a whole number
    data = _edit(lambda d: _field(d, "patient", "birthdate").update(type="integer"))
    assert "type_cannot_hold" in [e["code"] for e in _errors(data)]
    # a local datetime copied unchanged into a datetime column would be off by the zone offset
    data = _edit(lambda d: _field(d, "patient", "overriddencreatedon").update(transform={"name": "copy"}))
    assert "type_cannot_hold" in [e["code"] for e in _errors(data)]
    # money cents into a string column through the money transform
    data = _edit(lambda d: _field(d, "ledger", "bw_amount").update(type="string"))
    assert "type_cannot_hold" in [e["code"] for e in _errors(data)]


def test_string_column_shorter_than_the_longest_value_discovery_saw_is_refused():
    data = _edit(lambda d: _field(d, "patient", "bw_chartnumber").update(max_length=5))
    errs = _errors(data, max_lengths={("patient", "chart_num"): 12})
    assert [e["code"] for e in errs] == ["type_cannot_hold"]
    assert errs[0]["loc"][-1] == "max_length"
    parse_mapping(data, max_lengths={("patient", "chart_num"): 5})


def test_standard_column_length_cannot_be_raised_above_dataverse_s():
    data = _edit(lambda d: _field(d, "patient", "firstname").update(max_length=500))
    assert [e["code"] for e in _errors(data)] == ["exceeds_column_length"]


def test_picklist_value_not_in_its_set_is_refused():
    def edit(d):
        _field(d, "patient", "bw_patientstatus")["transform"]["args"]["codes"] = {"9": 123}
        _field(d, "patient", "bw_familyposition")["transform"]["args"]["default"] = 42

    errs = _errors(_edit(edit))
    assert sorted(e["code"] for e in errs) == ["picklist_value_not_in_set", "picklist_value_not_in_set"]
    assert {e["loc"][-1] for e in errs} == {"9", "default"}


def test_picklist_for_a_standard_column_must_use_its_values():
    def edit(d):
        d["picklists"]["contact_gender"]["options"].append({"value": 3, "label": "Other", "codes": [3]})

    errs = _errors(_edit(edit))
    assert [e["code"] for e in errs] == ["picklist_value_not_in_set"]


def test_unknown_keys_and_bad_types_are_reported_all_at_once_pydantic_style():
    def edit(d):
        _table(d, "patient")["fields"][0]["colour"] = "x"
        _table(d, "patient")["fields"][1]["type"] = "text"

    errs = _errors(_edit(edit))
    assert len(errs) == 2
    assert all(e["loc"][0] == "tables" for e in errs)
    assert {e["code"] for e in errs} == {"extra_forbidden", "literal_error"}


def test_lookup_to_a_missing_map_or_unknown_navigation_is_refused():
    def edit(d):
        _table(d, "prescription")["lookups"][0]["parent"] = "nobody"
        _table(d, "appointment")["lookups"][0]["nav"] = "regardingobjectid_account_appointment"

    codes = sorted(e["code"] for e in _errors(_edit(edit)))
    assert codes == ["column_cannot_exist", "unknown_parent"]


def test_clinical_map_without_owner_is_refused():
    data = _edit(lambda d: _table(d, "prescription").update(owner=None))
    assert [e["code"] for e in _errors(data)] == ["clinical_needs_owner"]


def test_custom_columns_discovered_in_the_bundle_may_be_mapped():
    field = {
        "source": "favourite_hygienist",
        "target": "bw_favouritehygienist",
        "type": "string",
        "transform": {"name": "trim"},
    }
    data = _edit(lambda d: _table(d, "patient")["fields"].append(field))
    assert [e["code"] for e in _errors(data)] == ["unknown_source_column"]
    contract = SourceContract.from_registry().with_custom_columns(
        [("patient", "favourite_hygienist", "text")]
    )
    spec = parse_mapping(data, source=contract)
    assert spec.table("patient").fields[-1].target == "bw_favouritehygienist"


def test_errors_never_echo_the_values_an_edit_sent():
    secret = "Ana-Ruiz-1984"
    data = _edit(lambda d: _field(d, "patient", "firstname").update(max_length=secret, required=secret))
    errs = _errors(data)
    assert {e["code"] for e in errs} == {"int_parsing", "bool_parsing"}
    assert "Ruiz" not in repr(errs)
    data = _edit(
        lambda d: _field(d, "patient", "bw_patientstatus")["transform"]["args"].update(codes={"1": secret})
    )
    errs = _errors(data)
    assert [e["code"] for e in errs] == ["picklist_value_not_in_set"] and "Ruiz" not in repr(errs)


def test_approval_freezes_the_version_under_its_content_hash():
    spec = default_mapping()
    approved = approve(spec, approved_by="user-1", approved_at="2026-11-30T10:00:00Z")
    assert approved.content_hash == spec.content_hash() and len(approved.content_hash) == 64
    stored = approved.model_dump(mode="json", by_alias=True)
    assert load_approved(stored) == approved
    with pytest.raises(ValidationError):
        approved.spec.version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        approved.spec.tables[0].target_table = "account"  # type: ignore[misc]
    tampered = copy.deepcopy(stored)
    tampered["spec"]["tables"][0]["fields"][0]["target"] = "lastname"
    with pytest.raises(MappingNotApproved):
        load_approved(tampered)


def test_content_hash_changes_with_any_edit_and_not_with_key_order():
    a = parse_mapping(default_mapping_data())
    reordered = dict(reversed(list(default_mapping_data().items())))
    assert parse_mapping(reordered).content_hash() == a.content_hash()
    edited = _edit(lambda d: _field(d, "patient", "firstname")["transform"].update(name="concat"))
    assert parse_mapping(edited).content_hash() != a.content_hash()


def test_json_round_trip_and_schema_for_the_api():
    spec = default_mapping()
    as_json = spec.model_dump(mode="json", by_alias=True)
    assert parse_mapping(as_json) == spec
    schema = type(spec).model_json_schema(by_alias=True)
    assert "tables" in schema["properties"]


def test_revise_bumps_the_version_only_when_something_changed():
    from shared.mapping.spec import revise

    current = default_mapping()
    same = revise(current, current.model_dump(mode="json", by_alias=True))
    assert same is current
    edited = _edit(lambda d: _field(d, "patient", "firstname").update(required=True))
    edited["version"] = 99
    new = revise(current, edited)
    assert new.version == 2 and new.content_hash() != current.content_hash()
    with pytest.raises(MappingInvalid) as info:
        revise(current, _edit(lambda d: d.update(publisher_prefix="xx")))
    assert info.value.errors[0]["code"] == "prefix_is_permanent"


def test_disabling_a_map_others_point_at_is_refused_everywhere_it_is_used():
    errs = _errors(_edit(lambda d: _table(d, "treatment_plan").update(enabled=False)))
    where = sorted(data_name for data_name in {e["loc"][1] for e in errs})
    assert {e["code"] for e in errs} == {"parent_disabled"}
    names = [t["name"] for t in default_mapping_data()["tables"]]
    assert sorted(names[i] for i in where) == ["lab_case", "treatment_plan_line"]
    # disabling the leaf maps is fine
    parse_mapping(_edit(lambda d: [_table(d, n).update(enabled=False) for n in ("lab_case", "recall")]))


def test_lookup_to_records_without_a_source_key_is_refused():
    data = _edit(
        lambda d: _table(d, "prescription")["lookups"].append(
            {"source": "rx_id", "parent": "clinical_note", "nav": "bw_NoteId"}
        )
    )
    assert [e["code"] for e in _errors(data)] == ["parent_not_addressable"]


def test_edit_naming_a_target_table_that_cannot_exist_is_refused():
    data = _edit(lambda d: _table(d, "recall").update(target_table="task"))
    errs = _errors(data)
    assert [e["code"] for e in errs] == ["table_cannot_exist"] and errs[0]["loc"][-1] == "target_table"
    data = _edit(lambda d: _table(d, "provider").update(action="upsert", key={"columns": ["provider_id"], "prefix": "PR"}))
    assert "systemuser_not_writable" in [e["code"] for e in _errors(data)]


def test_two_maps_writing_one_column_must_agree_on_type_and_option_set():
    def edit(d):
        f = _field(d, "patient_insurance_secondary", "bw_secondaryrelationship")
        f["target"] = "bw_primaryrelationship"
        f["transform"]["args"]["picklist"] = "guardian_relationship"
    errs = _errors(_edit(edit))
    assert [e["code"] for e in errs] == ["type_conflict"]
    assert "insurance_relationship" in errs[0]["message"]
