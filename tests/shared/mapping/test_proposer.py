"""The proposer: renamed and custom columns mapped with confidence and reason, the doubtful left out."""

from __future__ import annotations

import pytest

from shared.dentrix.tables import get_table
from shared.errors import MappingInvalid
from shared.mapping.proposer import (
    ColumnFacts,
    DiscoveryFacts,
    TableFacts,
    max_lengths_for,
    name_similarity,
    propose,
    source_contract_for,
)
from shared.mapping.spec import check_mapping, default_mapping, parse_mapping

KIND_TO_TYPE = {
    "id": "string",
    "text": "string",
    "int": "integer",
    "bool": "boolean",
    "money": "money",
    "date": "date",
    "datetime": "datetime",
    "tooth": "string",
    "surface": "string",
    "sha256": "string",
    "json": "object",
}


def registry_facts(table: str, drop: tuple[str, ...] = ()) -> list[ColumnFacts]:
    return [
        ColumnFacts(name=c.name, inferred_type=KIND_TO_TYPE[c.kind])
        for c in get_table(table).columns
        if c.name not in drop
    ]


def facts_with(*extra: ColumnFacts, drop: tuple[str, ...] = ()) -> DiscoveryFacts:
    return DiscoveryFacts(
        tables=[
            TableFacts(name="patient", row_count=500, columns=registry_facts("patient", drop) + list(extra))
        ]
    )


def test_bundle_matching_the_registry_gets_the_default_map_unchanged():
    base = default_mapping()
    tables = [
        TableFacts(name=t, row_count=10, columns=registry_facts(t))
        for t in ("patient", "appointment", "proc_log")
    ]
    out = propose(DiscoveryFacts(tables=tables), base)
    assert out.proposals == [] and out.unmapped == []
    assert out.spec.content_hash() == base.content_hash()


def test_custom_columns_are_mapped_by_value_pattern_with_confidence_and_reason():
    out = propose(
        facts_with(
            ColumnFacts(name="alt_contact", inferred_type="string", patterns={"email": 0.97}, custom=True),
            ColumnFacts(name="cell2", inferred_type="string", patterns={"phone": 0.93}, custom=True),
            ColumnFacts(name="last_perio_visit", inferred_type="date", custom=True),
            ColumnFacts(name="referral_source", inferred_type="string", max_length=240, custom=True),
            ColumnFacts(name="deposit_cents", inferred_type="integer", custom=True),
        ),
        default_mapping(),
    )
    got = {p.source_column: p for p in out.proposals}
    assert set(got) == {"alt_contact", "cell2", "last_perio_visit", "referral_source", "deposit_cents"}
    assert (got["alt_contact"].target, got["alt_contact"].transform.name) == ("bw_altcontact", "email")
    assert got["alt_contact"].confidence == pytest.approx(0.97) and "e-mail" in got["alt_contact"].reason
    assert (got["cell2"].type, got["cell2"].transform.name) == ("string", "phone")
    assert (got["last_perio_visit"].type, got["last_perio_visit"].transform.name) == ("date", "date_only")
    assert (got["deposit_cents"].type, got["deposit_cents"].transform.name) == ("money", "cents_to_money")
    assert all(p.map == "patient" and p.accepted for p in out.proposals)
    added = {f.target: f for f in out.spec.table("patient").fields}
    assert added["bw_referralsource"].max_length == 240
    # the proposed map passes the map rules against the bundle plus its custom columns
    contract = source_contract_for(
        facts_with(
            ColumnFacts(name="alt_contact", inferred_type="string"),
            ColumnFacts(name="cell2", inferred_type="string"),
            ColumnFacts(name="last_perio_visit", inferred_type="date"),
            ColumnFacts(name="referral_source", inferred_type="string"),
            ColumnFacts(name="deposit_cents", inferred_type="integer"),
        )
    )
    assert check_mapping(out.spec, contract) == []


def test_low_confidence_columns_are_left_unmapped_with_a_reason():
    out = propose(
        facts_with(
            ColumnFacts(name="always_empty", inferred_type="null", null_rate=1.0, custom=True),
            ColumnFacts(name="constant_flag", inferred_type="boolean", distinct_count=1, custom=True),
            ColumnFacts(name="rarely_used", inferred_type="string", null_rate=0.99, custom=True),
            ColumnFacts(name="blob", inferred_type="object", custom=True),
        ),
        default_mapping(),
    )
    assert out.proposals == []
    reasons = {p.source_column: p.reason for p in out.unmapped}
    assert set(reasons) == {"always_empty", "constant_flag", "rarely_used", "blob"}
    assert "always empty" in reasons["always_empty"] and "single value" in reasons["constant_flag"]
    assert "almost always empty" in reasons["rarely_used"] and "type" in reasons["blob"]
    assert all(not p.accepted and p.confidence < 0.6 for p in out.unmapped)
    assert out.spec.content_hash() == default_mapping().content_hash()


def test_a_renamed_column_takes_over_the_default_fields():
    out = propose(
        facts_with(
            ColumnFacts(name="email_address", inferred_type="string", patterns={"email": 0.99}),
            ColumnFacts(name="cell_phone", inferred_type="string", patterns={"phone": 0.9}),
            drop=("email", "mobile_phone"),
        ),
        default_mapping(),
    )
    renamed = {p.source_column: p.replaces for p in out.proposals if p.kind == "renamed"}
    assert renamed == {"email_address": "email", "cell_phone": "mobile_phone"}
    fields = {f.target: f.source for f in out.spec.table("patient").fields}
    assert fields["emailaddress1"] == ["email_address"] and fields["mobilephone"] == ["cell_phone"]


def test_threshold_decides_what_is_accepted():
    col = ColumnFacts(name="nickname2", inferred_type="string", custom=True)
    assert propose(facts_with(col), default_mapping(), threshold=0.6).proposals
    strict = propose(facts_with(col), default_mapping(), threshold=0.9)
    assert not strict.proposals and strict.unmapped[0].confidence == pytest.approx(0.7)


def test_custom_columns_on_tables_whose_target_takes_none_are_left_unmapped():
    facts = DiscoveryFacts(
        tables=[
            TableFacts(
                name="clinical_note",
                row_count=5,
                columns=registry_facts("clinical_note")
                + [ColumnFacts(name="tooth_chart_ref", inferred_type="string", custom=True)],
            )
        ]
    )
    out = propose(facts, default_mapping())
    assert out.proposals == [] and "no writable map" in out.unmapped[0].reason


def test_name_similarity_knows_dentrix_synonyms():
    assert name_similarity("email", "EmailAddr") >= 0.75
    assert name_similarity("zip_code", "postal_code") >= 0.75
    assert name_similarity("birth_date", "dob") >= 0.75
    assert name_similarity("first_name", "balance") < 0.5


def test_discovery_lengths_feed_the_too_short_check():
    facts = facts_with(drop=("chart_num",))
    facts = DiscoveryFacts(
        tables=[
            TableFacts(
                name="patient",
                columns=facts.tables[0].columns
                + [ColumnFacts(name="chart_num", inferred_type="string", max_length=64)],
            )
        ]
    )
    with pytest.raises(MappingInvalid) as info:
        parse_mapping(
            default_mapping().model_dump(mode="json", by_alias=True), max_lengths=max_lengths_for(facts)
        )
    assert info.value.errors[0]["code"] == "type_cannot_hold"


def test_facts_models_hide_input_in_errors():
    with pytest.raises(Exception) as info:
        ColumnFacts(name="x", inferred_type="string", null_rate="Ruiz-secret")
    assert "Ruiz-secret" not in str(info.value)


def test_a_rename_the_map_rules_refuse_is_undone_and_left_for_the_user():
    # a similarly named column holding numbers cannot feed the e-mail transform
    out = propose(
        facts_with(ColumnFacts(name="email_addr", inferred_type="integer"), drop=("email",)),
        default_mapping(),
    )
    assert out.proposals == []
    assert [(p.kind, p.source_column, p.replaces) for p in out.unmapped] == [
        ("renamed", "email_addr", "email")
    ]
    assert "refused" in out.unmapped[0].reason
    fields = {f.target: f.source for f in out.spec.table("patient").fields}
    assert fields["emailaddress1"] == ["email"]
