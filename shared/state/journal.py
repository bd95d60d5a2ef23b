"""The per-record journal: what the migration did to every target record, the source of truth for
the audit log, the reconciliation and the rollback.

One row per (migration, source table, source id), partitioned by migration and table, so a batch's
entries go in as Table transactions of up to 100 and a batch that runs twice rewrites the same rows.
`origin` remembers whether the migration created the record (rollback deletes it) or found it
already there (rollback restores its before-image); `action` is what the latest write did.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote, unquote

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient, UpdateMode
from pydantic import BaseModel, ConfigDict

TAction = Literal["created", "updated", "unchanged", "skipped", "quarantined", "failed", "deleted", "restored"]
TOrigin = Literal["created", "preexisting", "none"]

_TRANSACTION = 100


class JournalEntry(BaseModel):
    """One target record's journal row. `reason` holds codes and field names, never values."""

    model_config = ConfigDict(extra="forbid")

    migration_id: str
    table: str
    """The Dentrix bundle table the row came from."""
    source_id: str
    target_table: str | None = None
    target_id: str | None = None
    action: TAction
    origin: TOrigin = "none"
    batch: str
    at: datetime
    code: str | None = None
    reason: str | None = None
    before_image: str | None = None
    """Blob path of the record as it was before the migration first updated it (pre-existing only)."""


def _row_key(source_id: str) -> str:
    # Table keys may not contain / \ # ? or control characters; ids are percent-encoded to stay unique.
    return quote(source_id, safe="")


class Journal:
    """Writes and reads journal rows in the `<prefix>journal` table."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        name = f"{prefix}journal"
        try:
            service.create_table(name)
        except ResourceExistsError:
            pass
        self._table = service.get_table_client(name)

    @staticmethod
    def partition(migration_id: str, table: str) -> str:
        return f"{migration_id}~{table}"

    def existing_origins(self, migration_id: str, table: str, source_ids: Iterable[str]) -> dict[str, TOrigin]:
        """The recorded origin of these rows, so a re-run keeps 'created' rather than 'preexisting'."""
        wanted = set(source_ids)
        found: dict[str, TOrigin] = {}
        for entity in self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": self.partition(migration_id, table)}, select=["RowKey", "origin"]
        ):
            source_id = unquote(entity["RowKey"])
            if source_id in wanted:
                found[source_id] = entity["origin"]
        return found

    def record(self, entries: list[JournalEntry]) -> None:
        """Upsert entries (idempotent), grouped into Table transactions per partition."""
        by_partition: dict[str, list[dict]] = {}
        for entry in entries:
            entity = {"PartitionKey": self.partition(entry.migration_id, entry.table),
                      "RowKey": _row_key(entry.source_id), **entry.model_dump(mode="json")}
            entity = {key: value for key, value in entity.items() if value is not None}
            by_partition.setdefault(entity["PartitionKey"], []).append(entity)
        for rows in by_partition.values():
            for start in range(0, len(rows), _TRANSACTION):
                self._table.submit_transaction(
                    [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows[start : start + _TRANSACTION]]
                )

    def entries(self, migration_id: str, table: str | None = None) -> Iterator[JournalEntry]:
        """Every entry of a migration (optionally one table), in partition and key order."""
        if table is not None:
            query, parameters = "PartitionKey eq @pk", {"pk": self.partition(migration_id, table)}
        else:
            query = "PartitionKey ge @low and PartitionKey lt @high"
            parameters = {"low": f"{migration_id}~", "high": f"{migration_id}~\x7f"}
        fields = set(JournalEntry.model_fields)
        for entity in self._table.query_entities(query, parameters=parameters):
            yield JournalEntry.model_validate({key: value for key, value in entity.items() if key in fields})


def now() -> datetime:
    return datetime.now(UTC)
