"""What operators read: one migration's state at a glance, and a tenant's migrations, paged and filtered.

Built from the migration record, its progress rows (failure codes included) and the orchestration
status, never from a scan of the journal; nothing here carries row values, only ids, counts, stage names and error codes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from functions.openapi import MIGRATION_ID_PATTERN
from shared.runtime import Runtime
from shared.state.failures import journal_errors_by_code, progress_errors
from shared.state.migrations import Migration, StageProgress, TStage


class TableProgress(BaseModel):
    """One source table's load: batches done and the summed counts (created, updated, failed, ...)."""

    table: str
    batches_done: int
    counts: dict[str, int]


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None = None
    last_updated_at: datetime | None = None
    stage_updated_at: dict[str, datetime] = Field(default_factory=dict)
    """Per stage group (discovery, load, bind, attachments, ...): when it last reported progress."""


class ManagementLinks(BaseModel):
    """The Durable Functions management API for this instance. The URLs carry no key: in Azure add the
    `durabletask_extension` system key (`code=`) from the portal; on the local host add the host key."""

    status: str
    history: str
    terminate: str
    raise_event: str
    purge: str


class OperatorView(BaseModel):
    migration: Migration
    stage: str
    """The orchestration's current stage (its custom status), else the record's stage."""
    runtime_status: str | None
    custom_status: Any = None
    progress: list[StageProgress]
    tables: list[TableProgress]
    errors_by_code: dict[str, int]
    """Journal rows that are failed or quarantined now, counted by error code; kept per batch on the
    progress rows (shared/state/failures.py), so reading it costs the progress rows, not the journal."""
    timings: Timings
    links: ManagementLinks | None = None


class MigrationSummary(BaseModel):
    migration_id: str
    name: str
    stage: str
    created_at: datetime
    bundle_id: str | None = None


class MigrationList(BaseModel):
    items: list[MigrationSummary]
    next_cursor: str | None = None
    """Pass as `cursor` to get the next page; absent on the last page."""


class ListQuery(BaseModel):
    """Filters and paging of `GET /migrations` (query parameters)."""

    model_config = ConfigDict(extra="forbid")

    stage: TStage | None = None
    name_contains: str | None = Field(default=None, min_length=1, max_length=120)
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    limit: int = Field(default=25, ge=1, le=100)
    cursor: str | None = Field(default=None, pattern=MIGRATION_ID_PATTERN)
    """The last migration id of the previous page."""


def _strip_key(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "code"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def management_links(payload: dict[str, str]) -> ManagementLinks:
    """Links from the Durable client's management payload, with the system key removed."""
    status = _strip_key(payload["statusQueryGetUri"])
    separator = "&" if "?" in status else "?"
    return ManagementLinks(status=status, history=f"{status}{separator}showHistory=true&showHistoryOutput=true",
                           terminate=_strip_key(payload["terminatePostUri"]),
                           raise_event=_strip_key(payload["sendEventPostUri"]),
                           purge=_strip_key(payload["purgeHistoryDeleteUri"]))


def _group(stage: str) -> tuple[str, str | None]:
    """`load:patient/3` -> (`load`, `patient`); `discovery` -> (`discovery`, None)."""
    kind, _, rest = stage.partition(":")
    return kind, (rest.split("/")[0] or None) if rest else None


def errors_by_code(rt: Runtime, migration_id: str, progress: list[StageProgress]) -> dict[str, int]:
    """Failed and quarantined journal rows by code, from the progress rows (shared/state/failures.py has
    the semantics); the journal is scanned only for a migration whose rows predate the per-batch codes."""
    counted = progress_errors(progress)
    return counted if counted is not None else journal_errors_by_code(rt, migration_id)


AFTER_THE_LOAD = {"cutover", "completed", "rollback_recommended"}
"""Stages the cutover records on the migration itself, after the migration orchestrator has ended."""


def operator_view(rt: Runtime, migration: Migration, status: Any, links: ManagementLinks | None) -> OperatorView:
    progress = rt.migrations.progress(migration.migration_id)
    tables: dict[str, TableProgress] = {}
    stage_times: dict[str, datetime] = {}
    for row in progress:
        kind, table = _group(row.stage)
        stage_times[kind] = max(stage_times.get(kind, row.updated_at), row.updated_at)
        if kind == "load" and table:
            entry = tables.setdefault(table, TableProgress(table=table, batches_done=0, counts={}))
            entry.batches_done += 1
            for name, count in row.counts.items():
                entry.counts[name] = entry.counts.get(name, 0) + count
    custom = status.custom_status if status else None
    stage = (custom.get("stage") if isinstance(custom, dict) else None) or migration.stage
    if migration.stage in AFTER_THE_LOAD:  # the migration orchestrator has finished: its "done" is stale
        stage = migration.stage
    return OperatorView(
        migration=migration, stage=str(stage),
        runtime_status=status.runtime_status.value if status and status.runtime_status else None,
        custom_status=custom, progress=progress, tables=sorted(tables.values(), key=lambda t: t.table),
        errors_by_code=errors_by_code(rt, migration.migration_id, progress),
        timings=Timings(created_at=migration.created_at, started_at=status.created_time if status else None,
                        last_updated_at=status.last_updated_time if status else None,
                        stage_updated_at=stage_times),
        links=links,
    )


def list_migrations(rt: Runtime, tenant_id: str, query: ListQuery) -> MigrationList:
    """A page of the tenant's migrations in id order, filtered; keyset paging on the migration id."""
    rt.migrations  # noqa: B018 - makes sure the table exists
    table = rt.tables.get_table_client(f"{rt.settings.table_prefix}migrations")
    items: list[MigrationSummary] = []
    for row in table.query_entities("PartitionKey eq @t and RowKey gt @after",
                                    parameters={"t": tenant_id, "after": query.cursor or ""},
                                    select=["RowKey", "Document"]):
        migration = Migration.model_validate_json(row["Document"])
        if query.stage and migration.stage != query.stage:
            continue
        if query.name_contains and query.name_contains.lower() not in migration.name.lower():
            continue
        if query.created_after and migration.created_at <= query.created_after:
            continue
        if query.created_before and migration.created_at >= query.created_before:
            continue
        if len(items) == query.limit:
            return MigrationList(items=items, next_cursor=items[-1].migration_id)
        items.append(MigrationSummary(migration_id=migration.migration_id, name=migration.name,
                                      stage=migration.stage, created_at=migration.created_at,
                                      bundle_id=migration.bundle_id))
    return MigrationList(items=items)
