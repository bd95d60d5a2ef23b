"""Migration records and their progress rows in Table Storage, always scoped to one tenant.

A migration row lives in partition = tenant id, so a caller can only ever address its own
tenant's migrations: another tenant's id simply does not exist for it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import MigrationNotFound
from shared.state.cutovers import CutoverState

TStage = Literal["created", "started", "discovery", "mapping", "schema", "load", "attachments", "done", "failed",
                 "cutover", "completed", "rollback_recommended"]
TLicence = Literal["sales_professional", "sales_enterprise"]


class Target(BaseModel):
    """Where a migration writes: the customer's Dataverse environment, tenant and SharePoint site."""

    model_config = ConfigDict(extra="forbid")

    environment_url: str = Field(pattern=r"^https?://[^/?#]+/?$", max_length=200)
    """`https://org.crm.dynamics.com`: the Dataverse environment (no path)."""
    tenant_id: str | None = Field(default=None, max_length=64)
    """The customer's Entra tenant, where Bridgework's app registration has been consented to."""
    graph_url: str = Field(default="https://graph.microsoft.com/v1.0", pattern=r"^https?://", max_length=200)
    sharepoint_site: str | None = Field(default=None, max_length=300)
    """Graph site id (or `hostname:/sites/path`) that receives the attachments."""
    licence: TLicence = "sales_professional"
    """Decides the custom-table limit the schema plan checks (15 on Sales Professional)."""
    application_users: list[str] = Field(default_factory=list, max_length=8)
    """Client ids of the application users to spread load over; empty: the service's default one."""
    attachments: Literal["sharepoint", "notes"] = "sharepoint"
    fallback_owner: str | None = Field(default=None, max_length=64)
    """Systemuser id that owns clinical records of providers with no active user (chosen at plan review)."""


class Migration(BaseModel):
    """One migration of one practice into one Dataverse environment."""

    model_config = ConfigDict(extra="forbid")

    migration_id: str
    tenant_id: str
    name: str
    created_at: datetime
    target: Target
    stage: TStage = "created"
    instance_id: str | None = None
    """The Durable instance id of the migration orchestrator, once started."""
    bundle_id: str | None = None
    """The uploaded export bundle this migration loads (named at start)."""
    mapping_version: int | None = None
    """The approved, frozen field-map version the load uses."""
    schema_approved_by: str | None = None
    """Who approved the schema plan; a re-run of an approved migration does not ask again."""
    approval_timeout_hours: float = 168.0
    cutover: CutoverState | None = None
    """The cutover window (delta pickups until go-live), once opened (shared/state/cutovers.py)."""
    tolerance: float = Field(default=0.005, ge=0, le=1)
    """Reconciliation at go-live: the largest share of mismatched records per table map that still
    completes the migration; beyond it the status says rollback_recommended."""
    auto_rollback: bool = False
    """Beyond the tolerance, start the compensating rollback instead of only recommending it."""
    sample_patients: int = Field(default=150, ge=0, le=300)
    """Patients in the sample run before the full run (the API takes 0 or 100-300); 0: no sample stage."""
    sample_approved_by: str | None = None
    """Who approved the sample's diff; a re-run of a migration whose sample was approved does not sample again."""
    sample_approved_at: datetime | None = None
    sample_rejected_by: str | None = None
    """Who rejected the sample; the next start re-opens the field map for review (then samples again)."""
    sample_rejected_at: datetime | None = None


class StageProgress(BaseModel):
    """One progress row: a stage (or table) of a migration with its counts.

    Failures by error code ride on the row of the batch that journaled them (`errors`, `cleared`,
    `supersedes`), in fields of their own rather than folded into `counts`: `counts` is by action and
    summed per table by the operator view, codes are another key space, and `None` vs `{}` must tell a
    row that predates the field from one with no failures. How the view adds them up, and where that can
    differ from the journal, is in shared/state/failures.py."""

    migration_id: str
    stage: str
    status: str
    counts: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, int] | None = None
    """Rows this batch journaled as failed or quarantined, by code (the action where a row has no code).
    None: a stage that journals nothing, or a row written before the field existed."""
    cleared: dict[str, int] = Field(default_factory=dict)
    """Cutover delta batches: failures an earlier batch journaled that this batch's rows replaced, by code."""
    supersedes: str | None = None
    """The stage whose rows this batch journals again, all of them (the full run's batch over the sample's
    batch of the same part): that row's `errors` no longer count."""
    updated_at: datetime


class MigrationRepository:
    """Creates and reads migrations; every read names the tenant."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        self._migrations = service.create_table_if_not_exists(f"{prefix}migrations")
        self._progress = service.create_table_if_not_exists(f"{prefix}progress")

    def create(self, tenant_id: str, name: str, target: Target) -> Migration:
        migration = Migration(migration_id=f"m-{uuid.uuid4().hex[:16]}", tenant_id=tenant_id, name=name,
                              created_at=datetime.now(UTC), target=target)
        self._migrations.create_entity(self._to_entity(migration))
        return migration

    def get(self, tenant_id: str, migration_id: str) -> Migration:
        """Raises MigrationNotFound when the tenant has no migration with this id."""
        try:
            entity = self._migrations.get_entity(tenant_id, migration_id)
        except ResourceNotFoundError:
            raise MigrationNotFound(f"migration {migration_id} not found", migration_id=migration_id) from None
        return Migration.model_validate_json(entity["Document"])

    def save(self, migration: Migration) -> None:
        self._migrations.upsert_entity(self._to_entity(migration), mode=UpdateMode.REPLACE)

    def record_progress(self, migration_id: str, stage: str, status: str, counts: dict[str, int], *,
                        errors: dict[str, int] | None = None, cleared: dict[str, int] | None = None,
                        supersedes: str | None = None) -> StageProgress:
        """Upsert the progress row of one stage (idempotent: the same call twice leaves one row).
        `errors`, `cleared`, `supersedes`: see StageProgress (stages that journal rows pass them)."""
        progress = StageProgress(migration_id=migration_id, stage=stage, status=status, counts=counts,
                                 errors=errors, cleared=cleared or {}, supersedes=supersedes,
                                 updated_at=datetime.now(UTC))
        self._progress.upsert_entity(
            # Table keys may not hold / \ # ?: stage names like "load:patient/3" are percent-encoded.
            {"PartitionKey": migration_id, "RowKey": quote(stage, safe=":|"), "Document": progress.model_dump_json()},
            mode=UpdateMode.REPLACE,
        )
        return progress

    def progress(self, migration_id: str) -> list[StageProgress]:
        rows = self._progress.query_entities("PartitionKey eq @pk", parameters={"pk": migration_id})
        return sorted((StageProgress.model_validate_json(row["Document"]) for row in rows),
                      key=lambda p: p.updated_at)

    @staticmethod
    def _to_entity(migration: Migration) -> dict[str, str]:
        return {"PartitionKey": migration.tenant_id, "RowKey": migration.migration_id,
                "Document": migration.model_dump_json()}

