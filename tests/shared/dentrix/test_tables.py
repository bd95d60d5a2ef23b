"""The table registry is self-consistent and the committed JSON Schema matches the models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.dentrix import schema
from shared.dentrix.models import ROW_MODELS, row_model
from shared.dentrix.tables import JSON_TYPE_OF_KIND, TABLE_NAMES, TABLES, get_table


def test_every_reference_points_at_a_registered_table():
    for table in TABLES:
        for column, parent in table.parents.items():
            assert parent in TABLE_NAMES, (table.name, column, parent)


def test_every_table_has_a_required_unique_key_and_unique_columns():
    for table in TABLES:
        assert len(set(table.column_names)) == len(table.column_names), table.name
        key = table.column(table.key)
        assert key.required and key.kind == "id", table.name
        if table.modified_column:
            assert table.modified_column in table.column_names, table.name


def test_every_kind_has_a_json_type_and_a_model_field():
    kinds = {c.kind for t in TABLES for c in t.columns}
    assert kinds <= set(JSON_TYPE_OF_KIND)
    for table in TABLES:
        assert set(ROW_MODELS[table.name].model_fields) == set(table.column_names)


def test_committed_json_schema_matches_the_models():
    generated = schema.generate()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in schema.SCHEMA_DIR.glob("*.json")}
    assert on_disk == generated, "run `python -m shared.dentrix.schema` and commit the result"


def test_row_model_refuses_wrong_types_without_echoing_values():
    with pytest.raises(ValidationError) as caught:
        row_model("patient").model_validate({"patient_id": "1", "birth_date": "31/12/1990", "gender": "1"})
    text = str(caught.value)
    assert "31/12/1990" not in text
    assert {e["loc"][0] for e in caught.value.errors()} == {"birth_date", "gender"}


def test_row_model_keeps_custom_columns():
    row = row_model("patient").model_validate({"patient_id": "7", "custom_vip": True})
    assert row.model_extra == {"custom_vip": True}


def test_proc_log_surfaces_must_agree_with_flags():
    model = row_model("proc_log")
    model.model_validate(
        {
            "proc_id": "1",
            "patient_id": "2",
            "surface_string": "MOD",
            "surf_m": True,
            "surf_o": True,
            "surf_d": True,
        }
    )
    with pytest.raises(ValidationError):
        model.model_validate({"proc_id": "1", "patient_id": "2", "surface_string": "MO", "surf_m": True})


def test_unknown_table_is_named():
    with pytest.raises(KeyError, match="nosuch"):
        get_table("nosuch")


def test_public_names_are_exported_and_sorted():
    import shared.dentrix as package

    public = package.__all__
    assert public == sorted(public, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(package, name) for name in public)
