"""The practice manager's summary, and the facts the mapping proposer reads."""

from __future__ import annotations

from shared.discovery import facts_for_proposer
from shared.discovery.summary import render_summary
from shared.mapping.proposer import DiscoveryFacts, propose
from shared.mapping.spec import default_mapping
from tests.shared.discovery.conftest import Case


def test_summary_leads_with_the_cutover_warning_and_gives_counts_ids_and_the_estimate(case: Case) -> None:
    r = case.report
    text = render_summary(r)
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Settle before cutover"
    assert f"**{r.open_claims.count:,} insurance claims are sent but not paid**" in text
    assert ", ".join(r.open_claims.ids[:5]) in text
    assert f"{r.duplicate_patients.patients:,} patients in {r.duplicate_patients.groups:,} group" in text
    assert f"{r.appointments_without_patient.count:,} appointments have no patient record" in text
    assert "proc_log: 1 row quarantined" in text and "tooth_range_start (unparsed) x1" in text
    assert f"| patient | {r.table('patient').rows:,} | 0 |" in text
    assert f"| patient | patient | contact | upsert | {r.estimate.records_by_target['contact']:,} |" in text
    assert f"{r.estimate.load.records:,} writes in {r.estimate.load.requests:,} requests" in text
    assert "paced by the server-time limit" in text
    assert len(text.splitlines()) < 120


def test_facts_for_proposer_carry_every_column_profile(case: Case) -> None:
    facts = facts_for_proposer(case.report)
    assert isinstance(facts, DiscoveryFacts)
    assert [t.name for t in facts.tables] == [t.name for t in case.report.tables]
    patient = next(t for t in facts.tables if t.name == "patient")
    email = next(c for c in patient.columns if c.name == "email")
    profile = next(c for c in case.report.table("patient").columns if c.name == "email")
    assert (email.inferred_type, email.null_rate, email.distinct_count, email.max_length, email.patterns) == (
        profile.inferred_type,
        profile.null_rate,
        profile.distinct_count,
        profile.max_length,
        profile.patterns,
    )
    assert {c.name for c in patient.columns if c.custom} == set(case.report.custom_columns["patient"])


def test_the_proposer_maps_the_practice_custom_columns_from_discovery_facts(case: Case) -> None:
    proposal = propose(facts_for_proposer(case.report), default_mapping())
    decided = {(p.source_table, p.source_column) for p in [*proposal.proposals, *proposal.unmapped]}
    for table, columns in case.report.custom_columns.items():
        assert {(table, c) for c in columns} <= decided
    empty = next(p for p in proposal.unmapped if p.source_column == "custom_balance_note")
    assert "always empty" in empty.reason


def test_summary_lists_each_orphan_reference_with_its_ids(case: Case) -> None:
    text = render_summary(case.report)
    for o in case.report.orphans:
        line = next(
            x
            for x in text.splitlines()
            if x.startswith(f"- {o.table}: {o.count} row") and f"(column {o.column})" in x
        )
        assert line.endswith(f"Ids: {', '.join(o.ids[:20])}.") or "more." in line
