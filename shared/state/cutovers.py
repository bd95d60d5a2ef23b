"""Cutover state: the window of one migration (kept on its Migration record) and the index of open windows.

A migration's `cutover` field holds its window: when it opened and closes, the deletion policy, which
delta bundles were applied (in order) and the watermark they reached. The `<prefix>cutovers` table lists
the migrations whose window is open, so the 15-minute timer finds them without scanning every tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from pydantic import BaseModel, ConfigDict, Field

TDeletionPolicy = Literal["report", "delete", "deactivate"]
TCutoverStatus = Literal["open", "closed"]
TCloseReason = Literal["go_live", "expired"]
TReconciliation = Literal["completed", "rollback_recommended", "rollback_started"]


class AppliedDelta(BaseModel):
    """One delta bundle that was applied completely (the watermark moved past it)."""

    model_config = ConfigDict(extra="forbid")

    bundle_id: str
    base_bundle_id: str
    watermark: str
    """The delta's own watermark (practice-local time): the next delta's `since`."""
    applied_at: datetime
    report: str
    """Artifact path of the delta's report (counts per map)."""


class CutoverState(BaseModel):
    """The cutover window of a migration."""

    model_config = ConfigDict(extra="forbid")

    status: TCutoverStatus = "open"
    opened_at: datetime
    closes_at: datetime
    hours: float
    deletions: TDeletionPolicy = "report"
    """What a row deleted at the practice does in Dataverse: report it only (default), delete the record
    the migration created, or deactivate it (statecode inactive where the table has one). A row of an update
    map (coverage, guardian link: columns on another map's record) is never deleted or deactivated: under
    `delete` and `deactivate` the columns its map wrote are cleared."""
    applied: list[AppliedDelta] = Field(default_factory=list)
    last_applied_bundle_id: str
    """The watermark's bundle: the full bundle until the first delta is applied."""
    watermark: str | None = None
    """The watermark (practice-local) of the last applied bundle."""
    go_live_requested: bool = False
    closed_at: datetime | None = None
    closed_reason: TCloseReason | None = None
    reconciliation: TReconciliation | None = None
    """The go-live reconciliation's verdict (None until it ran)."""
    diff_share: float = Field(default=1.0, gt=0, le=1)
    """Share of patients whose records the reconciliation diffs field by field."""
    window_started: bool = False
    """True once the cutover orchestration timed the window by its own clock (the expiry timer's)."""

    def applied_ids(self) -> list[str]:
        return [d.bundle_id for d in self.applied]


class OpenCutovers:
    """The `<prefix>cutovers` table: one row per open window (partition "open", row = migration id)."""

    PARTITION = "open"

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        self._table = service.create_table_if_not_exists(f"{prefix}cutovers")

    def add(self, tenant_id: str, migration_id: str) -> None:
        self._table.upsert_entity({"PartitionKey": self.PARTITION, "RowKey": migration_id, "tenant_id": tenant_id},
                                  mode=UpdateMode.REPLACE)

    def remove(self, migration_id: str) -> None:
        try:
            self._table.delete_entity(self.PARTITION, migration_id)
        except ResourceNotFoundError:
            pass

    def list(self) -> list[tuple[str, str]]:
        """(tenant id, migration id) of every open window."""
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": self.PARTITION})
        return sorted((str(row["tenant_id"]), str(row["RowKey"])) for row in rows)
