"""The field map's life: proposed from discovery, edited by the user as a draft, frozen on approval.

Documents (in the migration's artifact folder):
    mapping/proposal.json      what the proposer suggested and left unmapped, with reasons
    mapping/draft.json         the map the user is editing (starts as the proposal's map)
    mapping/approved-v<N>.json the frozen versions; the migration records the one it loads with
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shared.errors import MappingInvalid
from shared.mapping.proposer import DiscoveryFacts, max_lengths_for, propose, source_contract_for
from shared.mapping.spec import (
    ApprovedMapping,
    FieldError,
    MappingSpec,
    approve,
    default_mapping,
    load_approved,
    parse_mapping,
)
from shared.runtime import Runtime
from shared.state.migrations import Migration

PROPOSAL = "mapping/proposal.json"
DRAFT = "mapping/draft.json"
FACTS = "discovery/facts.json"


class ProposalInfo(BaseModel):
    version: int
    proposed: int
    unmapped: int
    approved_version: int | None = None
    """Set when the migration already has an approved map (a re-run): no approval is asked again."""


class ApprovalInfo(BaseModel):
    version: int
    content_hash: str


def _facts(rt: Runtime, migration_id: str) -> DiscoveryFacts:
    return DiscoveryFacts.model_validate(rt.artifacts.get_json(migration_id, FACTS))


def propose_mapping(rt: Runtime, migration: Migration) -> ProposalInfo:
    """Propose a map from the default and the discovery facts; the draft starts as the proposal."""
    proposal = propose(_facts(rt, migration.migration_id), default_mapping())
    rt.artifacts.put_json(migration.migration_id, PROPOSAL, proposal)
    if not rt.artifacts.exists(migration.migration_id, DRAFT):  # a re-run keeps the user's edits
        rt.artifacts.put_json(migration.migration_id, DRAFT, proposal.spec.model_dump(mode="json"))
    return ProposalInfo(version=proposal.spec.version, proposed=len(proposal.proposals),
                        unmapped=len(proposal.unmapped), approved_version=migration.mapping_version)


def draft(rt: Runtime, migration: Migration) -> dict[str, Any]:
    return rt.artifacts.get_json(migration.migration_id, DRAFT)


def save_draft(rt: Runtime, migration: Migration, data: dict[str, Any]) -> MappingSpec:
    """Validate an edited map against the bundle (custom columns, lengths) and keep it as the draft.

    Raises MappingInvalid with every field-level problem; nothing is saved then.
    """
    sent = data.get("version", 0)
    if type(sent) is not int:  # int() of "two", a list or 1e400 raised out of here (a 500; found by fuzzing)
        raise MappingInvalid("mapping is invalid: 1 problem(s)", errors=[FieldError(
            loc=("version",), code="int_type", message="version must be a whole number").model_dump()])
    facts = _facts(rt, migration.migration_id)
    current = draft(rt, migration)
    data = {**data, "version": max(sent, int(current.get("version", 0)) + 1)}
    spec = parse_mapping(data, source_contract_for(facts), max_lengths_for(facts))
    rt.artifacts.put_json(migration.migration_id, DRAFT, spec.model_dump(mode="json"))
    return spec


def approve_draft(rt: Runtime, migration: Migration, approved_by: str) -> ApprovalInfo:
    """Freeze the draft as its version (re-validated first) and record it with the migration."""
    facts = _facts(rt, migration.migration_id)
    spec = parse_mapping(draft(rt, migration), source_contract_for(facts), max_lengths_for(facts))
    approved = approve(spec, approved_by=approved_by, approved_at=datetime.now(UTC).isoformat())
    rt.artifacts.put_json(migration.migration_id, f"mapping/approved-v{approved.version}.json", approved)
    migration.mapping_version = approved.version
    rt.migrations.save(migration)
    return ApprovalInfo(version=approved.version, content_hash=approved.content_hash)


def approved_mapping(rt: Runtime, migration: Migration) -> ApprovedMapping:
    """The frozen map the migration loads with (MappingNotApproved if it was altered after approval)."""
    if migration.mapping_version is None:
        from shared.errors import MappingNotApproved

        raise MappingNotApproved(f"migration {migration.migration_id} has no approved field map yet")
    return load_approved(rt.artifacts.get_json(migration.migration_id,
                                               f"mapping/approved-v{migration.mapping_version}.json"))
