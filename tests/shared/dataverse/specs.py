"""A small but complete SchemaSpec used by the integration tests (prefix `bw`, the emulator's default publisher)."""

from __future__ import annotations

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
    return ColumnSpec(schema_name=name, display_name=name.split("_", 1)[1], type=type_, **kw)


def dental_spec() -> SchemaSpec:
    return SchemaSpec(
        publisher_prefix="bw",
        option_sets=[
            OptionSetSpec(
                name="bw_procstatus",
                display_name="Procedure status",
                options=[
                    OptionSpec(value=101230000, label="Planned"),
                    OptionSpec(value=101230001, label="Completed"),
                ],
            ),
        ],
        tables=[
            TableSpec(
                schema_name="contact",
                existing=True,
                columns=[
                    col("bw_SourceId", max_length=64),
                    col("bw_SubscriberId", max_length=40),
                    col("bw_Balance", "money", precision=2),
                    col("bw_FirstVisit", "datetime", datetime_behavior="DateOnly"),
                ],
            ),
            TableSpec(
                schema_name="bw_TreatmentPlan",
                display_name="Treatment plan",
                display_collection_name="Treatment plans",
                primary_name=col("bw_Name", max_length=200),
                has_notes=True,
                columns=[
                    col("bw_SourceId", max_length=64),
                    col("bw_Notes", "memo", max_length=4000),
                    col("bw_Fee", "decimal", precision=2, min_value=0, max_value=1000000),
                    col("bw_Tooth", "integer", min_value=1, max_value=32),
                    col("bw_Accepted", "boolean"),
                    col("bw_Status", "picklist", global_option_set="bw_procstatus"),
                    col(
                        "bw_Surface",
                        "picklist",
                        options=[
                            OptionSpec(value=101230000, label="M"),
                            OptionSpec(value=101230001, label="O"),
                        ],
                    ),
                    col("bw_PlannedOn", "datetime", datetime_behavior="TimeZoneIndependent"),
                ],
            ),
        ],
        relationships=[
            RelationshipSpec(
                schema_name="bw_contact_bw_treatmentplan",
                referenced_table="contact",
                referencing_table="bw_treatmentplan",
                lookup_schema_name="bw_PatientId",
                lookup_display_name="Patient",
            ),
        ],
        keys=[
            KeySpec(schema_name="bw_contact_sourceid", table="contact", columns=["bw_sourceid"]),
            KeySpec(
                schema_name="bw_treatmentplan_sourceid", table="bw_treatmentplan", columns=["bw_sourceid"]
            ),
        ],
    )
