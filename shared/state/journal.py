"""The per-record journal: what the migration did to every target record, the source of truth for
the audit log, the reconciliation and the rollback.

One row per (migration, source table, source id), partitioned by migration and table, so a batch's
entries go in as Table transactions of up to 100 and a batch that runs twice rewrites the same rows.
`origin` remembers whether the migration created the record (rollback deletes it) or found it
already there (rollback restores its before-image); `action` is what the latest write did.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote, unquote

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableServiceClient, UpdateMode
from pydantic import BaseModel, ConfigDict

TAction = Literal["created", "updated", "unchanged", "skipped", "quarantined", "failed", "deleted", "restored"]
TOrigin = Literal["created", "preexisting", "none"]

_TRANSACTION = 100
_PARALLEL_TRANSACTIONS = 2
"""Table transactions one `record` call has in flight at once."""
_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.5


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
    # The length comes first so unpadded numeric ids sort as numbers ("9" before "10"): a bundle part
    # (a run of consecutive ids) is then one contiguous RowKey range, which `existing_origins` reads
    # through the index instead of scanning the whole partition (that made a load quadratic in its size).
    return f"{len(source_id):04d}-{quote(source_id, safe='')}"


class Journal:
    """Writes and reads journal rows in the `<prefix>journal` table."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        self._table = service.create_table_if_not_exists(f"{prefix}journal")

    @staticmethod
    def partition(migration_id: str, table: str) -> str:
        return f"{migration_id}~{table}"

    def existing_origins(self, migration_id: str, table: str, source_ids: Iterable[str]) -> dict[str, TOrigin]:
        """The recorded origin of these rows, so a re-run keeps 'created' rather than 'preexisting'.

        Reads only the RowKey range the wanted ids span (one bundle part's rows when its ids are
        consecutive), not the whole partition: a batch's cost no longer grows with the rows before it."""
        wanted = set(source_ids)
        if not wanted:
            return {}
        keys = sorted(_row_key(source_id) for source_id in wanted)
        found: dict[str, TOrigin] = {}
        for entity in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": self.partition(migration_id, table), "low": keys[0], "high": keys[-1]},
            select=["RowKey", "origin"],
        ):
            source_id = unquote(entity["RowKey"].split("-", 1)[1])
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
        transactions = [
            [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows[start : start + _TRANSACTION]]
            for rows in by_partition.values()
            for start in range(0, len(rows), _TRANSACTION)
        ]
        if len(transactions) <= 1:
            for operations in transactions:
                self._submit(operations)
            return
        # A load batch journals thousands of rows: its transactions go a few at a time, not one after
        # another (each is a storage round trip; the benchmark showed them as most of a batch's time).
        with ThreadPoolExecutor(max_workers=min(_PARALLEL_TRANSACTIONS, len(transactions))) as pool:
            for _ in pool.map(self._submit, transactions):
                pass

    def _submit(self, operations: list) -> None:
        # A dropped connection (a pooled keep-alive connection the server had closed, a storage hiccup)
        # must not fail a load batch of thousands of rows: the transaction is upserts, so sending it
        # again is harmless. The SDK does not retry a POST whose response was lost.
        for attempt in range(_ATTEMPTS):
            try:
                self._table.submit_transaction(operations)
                return
            except (ServiceRequestError, ServiceResponseError):
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_BACKOFF_SECONDS * 2**attempt)

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
