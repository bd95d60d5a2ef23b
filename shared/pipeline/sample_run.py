"""The sample stage of a migration run: whether to sample, the slice it loads, the diff summary the
orchestrator shows while it waits, and the operator's decision (approve / reject) on the migration.

Order in the orchestrator: `reopen_after_rejection` (first thing of every run) -> ... schema build ->
`prepare_sample` -> sample loads (load_batch / bind_deferred / copy_attachments with `sample=`) ->
`diff_summary` -> wait for approval -> full run (load_batch with `over_sample=`).

A rejected sample leaves its records in Dataverse (journaled, origin `created`) and the map frozen,
so a rollback still works; the next start re-opens the map for review and samples again, upserting
over the old sample's records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from shared.pipeline.bundle import open_bundle
from shared.pipeline.finish import REPORT_JSON
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.sample import DIFF_HTML, DIFF_JSON, write_sample_diff
from shared.pipeline.sample_scope import SCOPE, choose_scope, stored_scope
from shared.runtime import Runtime
from shared.state.migrations import Migration

REJECTED = "sample/rejected-v{version}.json"


class SamplePlan(BaseModel):
    run: bool
    reason: Literal["sampling", "disabled", "already_approved"]
    """`disabled`: the migration's sample_patients is 0; `already_approved`: a re-run after approval."""
    patients: int = 0
    contacts: int = 0
    over_sample: bool = False
    """The full run goes over an approved sample whose full run never finished (a restart after a failure):
    it still reports the sample's records as created."""


class SampleSummary(BaseModel):
    """Counts and rates only (it goes into the orchestration's custom status): no ids, no values."""

    patients: int
    contacts: int
    records: int
    missing: int
    fields_checked: int
    fields_matched: int
    mismatches: int
    match_rate: float
    report: str = DIFF_JSON
    html: str = DIFF_HTML


class ReopenInfo(BaseModel):
    reopened: bool
    rejected_version: int | None = None


def reopen_after_rejection(rt: Runtime, migration: Migration) -> ReopenInfo:
    """A start after a rejected sample: unfreeze the map and the schema approval (the user fixes the map
    and approves again), keep the rejection as an artifact, and clear it from the migration."""
    if migration.sample_rejected_by is None:
        return ReopenInfo(reopened=False)
    version = migration.mapping_version
    rt.artifacts.put_json(migration.migration_id, REJECTED.format(version=version), {
        "mapping_version": version, "rejected_by": migration.sample_rejected_by,
        "rejected_at": migration.sample_rejected_at.isoformat() if migration.sample_rejected_at else None})
    migration.mapping_version = None
    migration.schema_approved_by = None
    migration.sample_rejected_by = None
    migration.sample_rejected_at = None
    migration.sample_approved_by = None
    migration.sample_approved_at = None
    rt.migrations.save(migration)
    return ReopenInfo(reopened=True, rejected_version=version)


def prepare_sample(rt: Runtime, migration: Migration) -> SamplePlan:
    """Decide whether this run samples; if so choose and store the slice (`sample/scope.json`)."""
    if migration.sample_patients == 0:
        return SamplePlan(run=False, reason="disabled")
    if migration.sample_approved_by is not None:
        unfinished = not rt.artifacts.exists(migration.migration_id, REPORT_JSON) \
            and rt.artifacts.exists(migration.migration_id, SCOPE)
        return SamplePlan(run=False, reason="already_approved", over_sample=unfinished)
    spec = approved_mapping(rt, migration).spec
    scope = choose_scope(rt, migration, open_bundle(rt, migration), spec, migration.sample_patients)
    return SamplePlan(run=True, reason="sampling", patients=len(scope.patients), contacts=len(scope.contacts))


async def diff_summary(rt: Runtime, migration: Migration) -> SampleSummary:
    """Diff the loaded sample (the stored slice), keep the JSON / CSV / HTML report, return its counts."""
    scope = stored_scope(rt, migration)
    diff = await write_sample_diff(rt, migration, scope=scope)
    return SampleSummary(patients=diff.patients, contacts=len(scope.contacts),
                         records=sum(t.records for t in diff.tables), missing=sum(t.missing for t in diff.tables),
                         fields_checked=diff.fields_checked, fields_matched=diff.fields_matched,
                         mismatches=len(diff.mismatches), match_rate=diff.match_rate)


def record_decision(rt: Runtime, migration: Migration, approved: bool, by: str) -> Migration:
    """Write the operator's decision on the migration record (who and when)."""
    at = datetime.now(UTC)
    if approved:
        migration.sample_approved_by, migration.sample_approved_at = by, at
        migration.sample_rejected_by = migration.sample_rejected_at = None
    else:
        migration.sample_rejected_by, migration.sample_rejected_at = by, at
        migration.sample_approved_by = migration.sample_approved_at = None
    rt.migrations.save(migration)
    return migration
