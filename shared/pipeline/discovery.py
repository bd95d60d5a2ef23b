"""The discovery stage: verify the uploaded bundle, profile it, and keep the report for the user.

Writes `discovery/report.json` (the whole profile), `discovery/summary.md` (for a practice manager)
and `discovery/facts.json` (what the field-map proposer reads). A bundle that does not match its
manifest is refused here, before anything is proposed or loaded.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.discovery import EstimateSettings, facts_for_proposer, profile_bundle, render_summary
from shared.pipeline.bundle import open_bundle
from shared.runtime import Runtime
from shared.state.migrations import Migration

REPORT = "discovery/report.json"
SUMMARY = "discovery/summary.md"
FACTS = "discovery/facts.json"


class DiscoveryInfo(BaseModel):
    tables: int
    rows: int
    quarantined: int
    warnings: int


def discover(rt: Runtime, migration: Migration) -> DiscoveryInfo:
    reader = open_bundle(rt, migration)
    reader.verify(check_files=True)
    settings = EstimateSettings(app_users=max(1, len(migration.target.application_users)),
                                attachment_destination=migration.target.attachments)
    report = profile_bundle(reader, settings=settings)
    rt.artifacts.put_json(migration.migration_id, REPORT, report)
    rt.artifacts.put_text(migration.migration_id, SUMMARY, render_summary(report))
    rt.artifacts.put_json(migration.migration_id, FACTS, facts_for_proposer(report))
    return DiscoveryInfo(tables=len(report.tables), rows=sum(t.rows for t in report.tables),
                         quarantined=sum(t.quarantined for t in report.tables), warnings=len(report.warnings))
