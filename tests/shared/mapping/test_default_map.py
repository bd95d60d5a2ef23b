"""The shipped default map against both contracts: the bundle registry and the schema plan."""

from __future__ import annotations

import yaml

from shared.dentrix import tables as bundle
from shared.mapping.contract import DATA_DIR, SourceContract, parse_path, standard_tables
from shared.mapping.schema_plan import build_schema_spec
from shared.mapping.spec import OBJECTS, ChildSource, check_mapping, default_mapping, default_mapping_data


def _source_paths(t):
    for f in t.fields:
        for s in f.source:
            if isinstance(s, ChildSource):
                yield s.children, s.parent_column
                yield s.children, s.column
            else:
                yield t.source_table, s
    for lk in t.lookups:
        yield t.source_table, lk.source
    for p in t.parties:
        yield t.source_table, p.source
    for c in t.key.columns:
        yield t.source_table, c
    for c in t.where:
        yield t.source_table, c
    if t.owner:
        yield t.source_table, t.owner
    if t.close:
        for c in [*t.close.completed_when, *t.close.canceled_when]:
            yield t.source_table, c


def test_every_source_column_in_the_default_map_exists_in_the_bundle_contract():
    spec = default_mapping()
    names = {t.name: set(t.column_names) for t in bundle.TABLES}
    keys = {t.name: t.key for t in bundle.TABLES}
    checked = 0
    for t in spec.tables:
        assert t.source_table in names, t.source_table
        for table, path in _source_paths(t):
            first, hops = parse_path(path)
            assert first in names[table], f"{t.name}: {table}.{first}"
            current = table
            for hop in hops:
                assert hop.table in names, f"{t.name}: {hop.table}"
                assert hop.column in names[hop.table], f"{t.name}: {hop.table}.{hop.column}"
                col = bundle.get_table(current).column(first) if current == table else None
                if col is not None and col.ref is not None:
                    assert col.ref == hop.table, f"{t.name}: {path} hops to {hop.table}, ref is {col.ref}"
                assert keys[hop.table], hop.table
                current = hop.table
            checked += 1
    assert checked > 150


def test_every_target_column_in_the_default_map_exists_in_the_schema_plan_or_is_standard():
    spec = default_mapping()
    schema = build_schema_spec(spec)
    std = standard_tables()
    planned = {t.logical_name: {c.logical_name for c in t.all_columns} for t in schema.tables}
    lookups = {(r.referencing_table, r.lookup_logical_name) for r in schema.relationships}
    for t in spec.enabled_tables():
        if t.action == "resolve":
            continue
        for f in t.fields:
            if f.target.startswith("bw_"):
                assert f.target in planned.get(t.target_table, set()), f"{t.target_table}.{f.target}"
            else:
                assert (
                    f.target in std.get(t.target_table, std["contact"]).columns
                    or f.target == "overriddencreatedon"
                )
        for lk in t.lookups:
            if lk.nav.startswith("bw_"):
                assert (t.target_table, lk.nav.lower()) in lookups, f"{t.target_table}.{lk.nav}"
            else:
                assert lk.nav in std[t.target_table].navs


def test_default_map_covers_all_13_objects_and_is_valid():
    spec = default_mapping()
    assert {t.object for t in spec.tables} == set(OBJECTS)
    assert check_mapping(spec, SourceContract.from_registry()) == []
    assert spec.version == 1 and spec.publisher_prefix == "bw"


def test_default_map_file_is_data_with_comments_and_picklists_are_merged_from_their_files():
    raw = (DATA_DIR / "default_map.yaml").read_text(encoding="utf-8")
    assert raw.count("#") > 10
    data = default_mapping_data()
    assert set(data["picklists"]) == set(yaml.safe_load((DATA_DIR / "picklists.yaml").read_text()))
    assert len(data["cdt_categories"]) == 12


def test_default_schema_plan_creates_source_keys_on_every_keyed_table():
    schema = build_schema_spec(default_mapping())
    keyed = {k.table for k in schema.keys}
    assert {
        "contact",
        "appointment",
        "bw_insurancecarrier",
        "bw_treatmentplan",
        "bw_treatmentplanline",
        "bw_prescription",
        "bw_patientledger",
        "bw_recalltask",
        "bw_labcase",
    } <= keyed
    assert "annotation" not in {t.logical_name for t in schema.tables}  # notes take no custom columns
    for k in schema.keys:
        assert k.columns == ["bw_sourceid"]
