"""SchemaSpec validation: the mistakes Dataverse would refuse are refused before any request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.dataverse.metadata import (
    ColumnSpec,
    KeySpec,
    OptionSetSpec,
    OptionSpec,
    RelationshipSpec,
    SchemaSpec,
    TableSpec,
)


def col(name: str, type_: str = "string", **kw) -> ColumnSpec:
    return ColumnSpec(schema_name=name, display_name=name, type=type_, **kw)


def treatment(**kw) -> TableSpec:
    return TableSpec(
        schema_name="bw_Treatment",
        display_name="Treatment",
        display_collection_name="Treatments",
        primary_name=col("bw_Name"),
        columns=[col("bw_SourceId")],
        **kw,
    )


def spec(**kw) -> SchemaSpec:
    base = dict(
        publisher_prefix="bw",
        tables=[TableSpec(schema_name="contact", existing=True, columns=[col("bw_SourceId")]), treatment()],
        relationships=[
            RelationshipSpec(
                schema_name="bw_contact_bw_treatment",
                referenced_table="contact",
                referencing_table="bw_treatment",
                lookup_schema_name="bw_PatientId",
                lookup_display_name="Patient",
            )
        ],
        keys=[KeySpec(schema_name="bw_treatment_sourceid", table="bw_treatment", columns=["bw_sourceid"])],
    )
    base.update(kw)
    return SchemaSpec(**base)


def test_a_valid_spec_derives_names() -> None:
    s = spec()
    assert s.custom_table_count == 1
    assert s.table("bw_treatment").primary_id_attribute == "bw_treatmentid"
    assert s.relationships[0].bind_name == "bw_PatientId"
    assert s.relationships[0].parent_key == "contactid"
    assert s.tables[0].columns[0].logical_name == "bw_sourceid"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {
                "tables": [
                    TableSpec(
                        schema_name="new_Thing",
                        display_name="T",
                        display_collection_name="Ts",
                        primary_name=col("new_Name"),
                    )
                ]
            },
            "prefix",
        ),
        ({"keys": [KeySpec(schema_name="bw_k", table="bw_treatment", columns=["bw_nope"])]}, "not defined"),
        ({"keys": [KeySpec(schema_name="bw_k", table="account", columns=["x"])]}, "not in the spec"),
        (
            {
                "relationships": [
                    RelationshipSpec(
                        schema_name="bw_r",
                        referenced_table="contact",
                        referencing_table="bw_treatment",
                        lookup_schema_name="bw_SourceId",
                        lookup_display_name="x",
                    )
                ]
            },
            "clashes",
        ),
    ],
)
def test_inconsistent_specs_are_refused(kwargs, fragment) -> None:
    with pytest.raises(ValidationError, match=fragment):
        spec(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "integer", "max_length": 10},
        {"type": "datetime"},
        {"type": "string", "datetime_behavior": "DateOnly"},
        {"type": "picklist"},
        {"type": "picklist", "options": [OptionSpec(value=1, label="a")], "global_option_set": "bw_x"},
        {"type": "string", "max_length": 5000},
        {"type": "money", "precision": 6},
    ],
)
def test_column_type_rules(kwargs) -> None:
    with pytest.raises(ValidationError):
        ColumnSpec(schema_name="bw_X", display_name="X", **kwargs)


def test_picklist_must_name_a_known_global_option_set() -> None:
    contact = TableSpec(
        schema_name="contact",
        existing=True,
        columns=[col("bw_Status", "picklist", global_option_set="bw_status")],
    )
    with pytest.raises(ValidationError, match="global option set"):
        SchemaSpec(publisher_prefix="bw", tables=[contact])
    ok = SchemaSpec(
        publisher_prefix="bw",
        tables=[contact],
        option_sets=[
            OptionSetSpec(name="bw_status", display_name="Status", options=[OptionSpec(value=1, label="A")])
        ],
    )
    assert ok.option_sets[0].name == "bw_status"
