"""The per-record journal: what the migration did to every target record, the source of truth for
the audit log, the reconciliation and the rollback.

One row per (migration, source table, source id); a batch that runs twice rewrites the same rows.
`origin` remembers whether the migration created the record (rollback deletes it) or found it
already there (rollback restores its before-image); `action` is what the latest write did.

Partitions: each (migration, table) is split into `BUCKETS` partitions by a hash of the id without its
last three characters (`bucket`). One partition per table capped a large load: Azure Table Storage
serves about 2,000 entities/s per partition, and Azurite finds an entity by scanning its partition, which
made each batch's journal write slower than the last (`python -m bench.bench_journal`). A bundle part (a
run of consecutive ids) still touches a handful of partitions, so its transactions of up to 100 rows and
its origin reads stay few.

Tables: the partitions are spread over `SHARDS` tables, `<prefix>journal00` to `<prefix>journal03` (bucket
modulo `SHARDS`), and the intents have a table of their own, `<prefix>journalintents`. Azure would need
one table; Azurite answers every query by scanning the whole table it is asked, so with one table each
batch's origin and intent reads cost what the whole journal held, and a load grew quadratic again from
about 100,000 rows (bench/README.md, "Cost per record with the practice's size").

Keys: a row's PartitionKey is `<migration>~<table>~<bucket, three digits>`; a table's intents live in
`<migration>~<table>~!`. Readers rely on two orderings, which hold because map names are `[a-z0-9_]`
and migration ids `m-<hex>` (neither contains `~`): every partition of a table sorts below
`<migration>~<table>~\x7f` (`tables` skips past it), and `!` sorts below the digits (a range from `~0`
to `~:` holds a table's rows and not its intents). `BUCKETS`, `SHARDS` and `_BLOCK` are part of the
storage format: changing one moves rows to other partitions or tables, where a re-run would no longer
find them. A journal written in the single table `<prefix>journal` (one partition per table before
2026-12-01, 64 buckets until 2026-12-02; nothing was deployed) is refused (`JournalLayoutOutdated`),
not read as empty.

Write-ahead intents: before a load creates records it `announce`s their source ids as ONE intent entity
per write (RowKey `!intent-<uuid>` in the table's intent partition), not one entity per row; once the
batch's rows are journaled it `settle`s (deletes) its intents. Readers merge them: an announced id with
no row of its own reads as a row `failed` / origin `created` / code `write_in_progress` (a host stopped
between the write and its journal), so `entries` and `existing_origins` see exactly what one write-ahead
row per record used to give.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import pydantic.dataclasses
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from pydantic import BaseModel, ConfigDict, TypeAdapter

from shared.errors import JournalLayoutOutdated

log = logging.getLogger("bridgework.journal")

TAction = Literal["created", "updated", "unchanged", "skipped", "quarantined", "failed", "deleted", "restored"]
TOrigin = Literal["created", "preexisting", "none"]

_TRANSACTION = 100
_PARALLEL_TRANSACTIONS = 2
"""Table transactions one `record` call has in flight at once."""
_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.5

WRITE_IN_PROGRESS = "write_in_progress"
"""Code of a row whose write started and whose outcome was never recorded (an unsettled intent)."""
_INTENT_PREFIX = "!intent-"
"""RowKey prefix of intents: a marker only (they have a partition of their own, `_intent_partition`)."""
BUCKETS = 256
"""Row partitions per (migration, table); part of the storage format (see the module doc). Azure alone
would need fewer: a few partitions at ~2,000 entities/s each are above what Dataverse's limits let
several application users write. 256 is for Azurite, whose cost per upsert grows with the partition's
size (LokiJS scans the partition for the RowKey, twice for a new row); bench/README.md has the figures
of 1, 16, 64 and 256."""
SHARDS = 4
"""Tables the row partitions are spread over (bucket modulo `SHARDS`); part of the storage format. For
Azurite, which scans the whole table per query (see the module doc). Not more: reading a map costs one
query per shard, which a small migration feels (16 made the end-to-end tests a third slower)."""
_PAGE = 1_000
"""Entities per query page (the service's maximum)."""
_BLOCK = 3
"""Ids that differ only in their last `_BLOCK` characters share a bucket (1,000 consecutive numbers);
part of the storage format."""
_INTENT_CHARS_PER_PROPERTY = 30_000
"""A Table string property holds 64 KiB of UTF-16: 32K characters; the ids' JSON is split below that."""
_INTENT_PROPERTIES = 12
"""Properties per intent entity (an entity holds 1 MiB): more ids go into further entities."""
_INTENTS_PER_TRANSACTION = 8


@pydantic.dataclasses.dataclass(slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class JournalEntry:
    """One target record's journal row. `reason` holds codes and field names, never values.

    A slotted (pydantic) dataclass, not a BaseModel: a load batch holds one per source row of its part and
    readers hold a map's worth, and a BaseModel instance (its `__dict__` and fields-set) took 1,468 bytes
    where this takes 324 (bench/README.md). `dataclasses.replace` copies one with changes."""

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


_ENTRY = TypeAdapter(JournalEntry)
_ENTRY_FIELDS = frozenset(field.name for field in dataclasses.fields(JournalEntry))


def _entry_from(entity: Mapping[str, Any]) -> JournalEntry:
    """A journal entry from a stored entity (its keys and timestamps left out)."""
    return _ENTRY.validate_python({name: value for name, value in entity.items() if name in _ENTRY_FIELDS})


_PART_STATUS = re.compile(rb"\r\nHTTP/1\.1 (\d{3}) ")
"""The status line of each operation's answer inside a `$batch` response."""


def _url_key(key: str) -> str:
    # As the SDK addresses an entity: quotes doubled (OData), then every reserved character percent-encoded.
    return quote(key.replace("'", "''"), safe="")


def row_key(source_id: str) -> str:
    # Table keys may not contain / \ # ? or control characters; ids are percent-encoded to stay unique.
    # The length comes first so unpadded numeric ids sort as numbers ("9" before "10"): a bundle part
    # (a run of consecutive ids) is then one contiguous RowKey range, which `existing_origins` reads
    # through the index instead of scanning the whole partition (that made a load quadratic in its size).
    return f"{len(source_id):04d}-{quote(source_id, safe='')}"


def bucket(source_id: str) -> int:
    """The row's partition among its table's `BUCKETS` (crc32: the same in every process and release)."""
    return zlib.crc32(source_id[:-_BLOCK].encode()) % BUCKETS


def _bucket_partition(migration_id: str, table: str, number: int) -> str:
    return f"{migration_id}~{table}~{number:03d}"


def _intent_partition(migration_id: str, table: str) -> str:
    return f"{migration_id}~{table}~!"


def _table_of(partition: str) -> str:
    return partition.split("~")[1]


class Journal:
    """Writes and reads journal rows in the `<prefix>journal<shard>` tables and their intents in
    `<prefix>journalintents`."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        self._shards = [service.create_table_if_not_exists(f"{prefix}journal{n:02d}") for n in range(SHARDS)]
        self._intent_table = service.create_table_if_not_exists(f"{prefix}journalintents")
        self._legacy = service.get_table_client(f"{prefix}journal")  # read only, to refuse an older layout
        # The lean transaction path uses two of the SDK's private attributes (azure-data-tables 12.x); an
        # SDK without them gets its own transactions, slower but the same.
        self._lean = all(hasattr(self._intent_table, name) for name in ("_client", "_primary_hostname", "scheme"))

    def _shard(self, bucket_number: int) -> TableClient:
        """The table a bucket's partition lives in."""
        return self._shards[bucket_number % SHARDS]

    def _table_of_partition(self, partition: str) -> TableClient:
        """The table a partition lives in: its bucket's shard, or the intents' table."""
        number = partition.rsplit("~", 1)[1]
        return self._intent_table if number == "!" else self._shard(int(number))

    @staticmethod
    def partition(migration_id: str, table: str, source_id: str) -> str:
        """The PartitionKey of one row."""
        return _bucket_partition(migration_id, table, bucket(source_id))

    def own_rows(self, migration_id: str, table: str, source_ids: Iterable[str], select: list[str] | None = None,
                 where: str | None = None) -> Iterator[tuple[str, dict]]:
        """(source id, entity) of those of these ids that have a row of their own (intents not merged).

        One query per bucket the ids fall in, over the RowKey range they span there (a bundle part's
        rows when its ids are consecutive): on Azure an index range, so a batch's cost does not grow with
        the rows before it (Azurite scans the whole table per query). `where` filters further,
        server-side (an OData clause over the row's properties)."""
        keys = {row_key(source_id): source_id for source_id in source_ids}
        by_bucket: dict[int, list[str]] = {}
        for key, source_id in keys.items():
            by_bucket.setdefault(bucket(source_id), []).append(key)
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high" + (f" and ({where})" if where else "")
        for number, bucket_keys in sorted(by_bucket.items()):
            parameters = {"pk": _bucket_partition(migration_id, table, number),
                          "low": min(bucket_keys), "high": max(bucket_keys)}
            for entity in self._shard(number).query_entities(
                    query, parameters=parameters, select=None if select is None else ["RowKey", *select]):
                source_id = keys.get(entity["RowKey"])
                if source_id is not None:
                    yield source_id, entity

    def entries_of(self, migration_id: str, table: str, source_ids: Iterable[str]) -> dict[str, JournalEntry]:
        """The entries of these rows only, by source id (`entries` merged the same way: a row of its own
        wins over an intent), read as `own_rows` reads: a batch's rows, not its whole map."""
        wanted = set(source_ids)
        if not wanted:
            return {}
        found = {source_id: _entry_from(entity) for source_id, entity in self.own_rows(migration_id, table, wanted)}
        for intent in self._intents(migration_id, table):
            for entry in _Intent.of(intent).entries(migration_id, table):
                if entry.source_id in wanted:
                    found.setdefault(entry.source_id, entry)
        return found

    def existing_origins(self, migration_id: str, table: str, source_ids: Iterable[str]) -> dict[str, TOrigin]:
        """The recorded origin of these rows, so a re-run keeps 'created' rather than 'preexisting'.
        Ids only announced (an unsettled intent) are `created`."""
        wanted = set(source_ids)
        if not wanted:
            return {}
        found: dict[str, TOrigin] = {source_id: entity["origin"]
                                     for source_id, entity in self.own_rows(migration_id, table, wanted, ["origin"])}
        for entity in self._intents(migration_id, table):
            for source_id in _Intent.of(entity).ids:
                if source_id in wanted and source_id not in found:
                    found[source_id] = "created"
        return found

    def announce(self, migration_id: str, table: str, batch: str, target_table: str | None,
                 source_ids: list[str], target_ids: list[str] | None = None) -> list[str]:
        """Record, before the write, that these rows are about to be created (one entity per few thousand
        ids, one transaction); returns the intents' keys for `settle`. `target_ids` (aligned with
        `source_ids`) when the record ids are known in advance (tables addressed by a derived id)."""
        if not source_ids:
            return []
        partition = _intent_partition(migration_id, table)
        entities: list[dict] = []
        for ids, targets in _intent_pieces(source_ids, target_ids):
            payload = json.dumps({"ids": ids, "targets": targets}, separators=(",", ":"))
            pieces = [payload[i : i + _INTENT_CHARS_PER_PROPERTY]
                      for i in range(0, len(payload), _INTENT_CHARS_PER_PROPERTY)]
            entity: dict = {"PartitionKey": partition, "RowKey": f"{_INTENT_PREFIX}{uuid.uuid4().hex}",
                            "kind": "intent", "batch": batch, "at": now().isoformat(), "pieces": len(pieces)}
            if target_table is not None:
                entity["target_table"] = target_table
            entity.update({f"p{n}": piece for n, piece in enumerate(pieces)})
            entities.append(entity)
        # A transaction's body may not exceed 4 MiB: at most 8 full intents (~360,000 characters each) go in one.
        for start in range(0, len(entities), _INTENTS_PER_TRANSACTION):
            self._submit([("upsert", e, {"mode": UpdateMode.REPLACE})
                          for e in entities[start : start + _INTENTS_PER_TRANSACTION]])
        log.info("journal wrote %d entities in %d transactions", len(entities),
                 -(-len(entities) // _INTENTS_PER_TRANSACTION))
        return [e["RowKey"] for e in entities]

    def settle(self, migration_id: str, table: str, intents: list[str]) -> None:
        """Delete intents whose rows are journaled now (call only after `record` of those rows returned)."""
        if not intents:
            return
        partition = _intent_partition(migration_id, table)
        for start in range(0, len(intents), _TRANSACTION):
            self._submit([("delete", {"PartitionKey": partition, "RowKey": key})
                          for key in intents[start : start + _TRANSACTION]])
        log.info("journal wrote %d entities in %d transactions", len(intents), -(-len(intents) // _TRANSACTION))

    def _intents(self, migration_id: str, table: str) -> Iterator[dict]:
        return iter(self._intent_table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": _intent_partition(migration_id, table)}))

    def record(self, entries: list[JournalEntry], new: Collection[str] = ()) -> None:
        """Upsert entries (idempotent), grouped into Table transactions per partition.

        `new`: source ids the caller read as having no row yet (not in `existing_origins`). Their rows go
        as inserts, which Azurite finds in the partition once instead of twice (an upsert's existence check,
        then its insert's: 104 s of a 1M load, bench/README.md). A row that exists after all (a duplicate
        delivery of the batch wrote it meanwhile) fails its transaction, which is then sent again as upserts."""
        by_partition: dict[str, dict[str, tuple[str, dict]]] = {}
        for entry in entries:
            entity = {"PartitionKey": self.partition(entry.migration_id, entry.table, entry.source_id),
                      "RowKey": row_key(entry.source_id), **_ENTRY.dump_python(entry, mode="json")}
            entity = {key: value for key, value in entity.items() if value is not None}
            # One row per key, the last wins: a transaction refuses two operations on one entity.
            kind = "create" if entry.source_id in new else "upsert"
            by_partition.setdefault(entity["PartitionKey"], {})[entity["RowKey"]] = (kind, entity)
        transactions = [
            [(kind, row, {"mode": UpdateMode.REPLACE}) for kind, row in rows[start : start + _TRANSACTION]]
            for rows in (list(keyed.values()) for keyed in by_partition.values())
            for start in range(0, len(rows), _TRANSACTION)
        ]
        # The benchmark counts journal writes from this line (bench/e2e_run.py `_journal_writes`).
        log.info("journal wrote %d entities in %d transactions", sum(map(len, transactions)), len(transactions))
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
        # must not fail a load batch of thousands of rows: the transaction is upserts (or inserts, which a
        # row already there turns into upserts), so sending it again is harmless. The SDK does not retry a
        # POST whose response was lost.
        table = self._table_of_partition(operations[0][1]["PartitionKey"])  # one partition per transaction
        inserts = any(kind == "create" for kind, *_ in operations)
        upserts = [("upsert", *rest) for _, *rest in operations] if inserts else operations
        for attempt in range(_ATTEMPTS):
            try:
                # Inserts only on the lean path: any refusal (a row that exists after all) sends upserts.
                if not (self._lean and (self._send_lean(table, operations)
                                        or (inserts and self._send_lean(table, upserts)))):
                    self._send_sdk(table, upserts)
                return
            except (ServiceRequestError, ServiceResponseError):
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_BACKOFF_SECONDS * 2**attempt)

    @staticmethod
    def _send_sdk(table: TableClient, operations: list) -> None:
        """The SDK's own transaction: its typed errors (TableTransactionError, RequestTooLargeError)."""
        if operations[0][0] == "delete":
            # Deletes one by one: a settle sent again after a lost answer finds some intents gone, and a
            # transaction would refuse all of them for that; delete_entity ignores a missing entity.
            for _, entity in operations:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            return
        table.submit_transaction(operations)

    @staticmethod
    def _send_lean(table: TableClient, operations: list) -> bool:
        """The transaction as one hand-built `$batch` request; True if storage applied every operation.

        The SDK builds and parses a transaction's multipart body through the `email` package: the
        benchmark's profile showed that as half of the host's CPU during a load. The body here is the
        same wire format (Table service `$batch`: one changeset of PUT upserts, POST inserts or DELETEs, keys
        quoted as the SDK quotes them), sent through the table client's own pipeline (auth, retries,
        transport). Anything but a 2xx for every operation is False: the caller sends the operations again,
        inserts as upserts, and then through the SDK, which raises its typed errors (upserts and a
        delete-if-present are safe to send twice)."""
        base = f"{table.scheme}://{table._primary_hostname}"  # noqa: SLF001 - the SDK's own base URL
        changeset, batch = f"changeset_{uuid.uuid4()}", f"batch_{uuid.uuid4()}"
        parts: list[bytes] = []
        for number, (kind, entity, *_) in enumerate(operations):
            address = (f"{base}/{table.table_name}(PartitionKey='{_url_key(entity['PartitionKey'])}',"
                       f"RowKey='{_url_key(entity['RowKey'])}')")
            head = (f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                    f"Content-ID: {number}\r\n\r\n")
            if kind in ("upsert", "create"):
                if not all(type(v) is str or (type(v) is int and -(2**31) <= v < 2**31) for v in entity.values()):
                    return False  # typed properties (Edm annotations) are the SDK's job: none of ours have them
                body = json.dumps(entity).encode()
                # REPLACE: PUT without If-Match is insert-or-replace; an insert is a POST to the table.
                request = (f"PUT {address} HTTP/1.1\r\n" if kind == "upsert" else
                           f"POST {base}/{table.table_name} HTTP/1.1\r\nPrefer: return-no-content\r\n")
                parts.append(f"{head}{request}Content-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\nx-ms-version: {table.api_version}\r\n"
                             "DataServiceVersion: 3.0\r\nAccept: application/json\r\n\r\n".encode() + body + b"\r\n")
            else:
                parts.append(f"{head}DELETE {address} HTTP/1.1\r\nx-ms-version: {table.api_version}\r\n"
                             "DataServiceVersion: 3.0\r\nAccept: application/json;odata=minimalmetadata\r\n"
                             "If-Match: *\r\n\r\n\r\n".encode())
        content = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()
                   + b"".join(parts) + f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
        request = HttpRequest("POST", f"{base}/$batch", content=content, headers={
            "x-ms-version": table.api_version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"})
        # stream=True: the pipeline would otherwise try to decode a multipart answer as JSON.
        response = table._client.send_request(request, stream=True)  # noqa: SLF001 - the client's signed pipeline
        content = response.read()
        if response.status_code != 202:
            return False
        statuses = _PART_STATUS.findall(content)
        return len(statuses) == len(operations) and all(status.startswith(b"2") for status in statuses)

    def entries(self, migration_id: str, table: str | None = None) -> Iterator[JournalEntry]:
        """Every entry of a migration (optionally one table), tables by name; within a table in storage
        order (shard, then bucket, then key), then the ids of an unsettled intent without a row of their own as
        write-ahead entries. No reader needs key order: sets, counts and the audit log (sort it to read it
        by id)."""
        for name in [table] if table is not None else self.tables(migration_id):
            yield from self._table_entries(migration_id, name)

    def tables(self, migration_id: str) -> list[str]:
        """The tables a migration has journal rows or intents in, by name. In each storage table, one
        single-entity query per journaled table: each skips past the whole key range of the table it
        found (a skip scan, not a read of every row)."""
        if _first_partition(self._legacy, migration_id, f"{migration_id}~") is not None:
            raise JournalLayoutOutdated(migration_id)
        storages = [*self._shards, self._intent_table]
        with ThreadPoolExecutor(max_workers=len(storages)) as pool:  # round trips, side by side
            return sorted(set().union(*pool.map(lambda storage: _tables_in(storage, migration_id), storages)))

    def _table_entries(self, migration_id: str, table: str) -> Iterator[JournalEntry]:
        # Ids announced by an unsettled intent; those that turn out to have a row of their own are dropped
        # (the row wins), the rest come after the table's rows as write-ahead entries.
        announced: dict[str, JournalEntry] = {}
        for intent in self._intents(migration_id, table):
            for entry in _Intent.of(intent).entries(migration_id, table):
                announced.setdefault(entry.source_id, entry)  # twin deliveries may announce an id twice
        # One query per shard over the table's buckets (`~0` to `~:`), pages of 1,000 in storage order:
        # on Azurite every page is a scan of the whole shard, so fewer is faster.
        for shard in self._shards:
            for entity in shard.query_entities("PartitionKey ge @low and PartitionKey lt @high",
                                               parameters={"low": f"{migration_id}~{table}~0",
                                                           "high": f"{migration_id}~{table}~:"},
                                               results_per_page=_PAGE):
                entry = _entry_from(entity)
                announced.pop(entry.source_id, None)
                yield entry
        yield from announced.values()

    def failures(self, migration_id: str) -> Iterator[dict]:
        """`action` and `code` of every failed or quarantined row of a migration: a scan of the whole
        journal (intents, which have no action, are not read)."""
        for shard in self._shards:
            yield from shard.query_entities(
                "PartitionKey ge @low and PartitionKey lt @high and (action eq 'failed' or action eq 'quarantined')",
                parameters={"low": f"{migration_id}~", "high": f"{migration_id}~\x7f"}, select=["code", "action"])


def _tables_in(storage: TableClient, migration_id: str) -> set[str]:
    """The journaled tables that have partitions of this migration in this storage table (a skip scan)."""
    found: set[str] = set()
    low = f"{migration_id}~"
    while (partition := _first_partition(storage, migration_id, low)) is not None:
        found.add(_table_of(partition))
        low = f"{migration_id}~{_table_of(partition)}~\x7f"  # past every partition of that table
    return found


def _first_partition(storage: TableClient, migration_id: str, low: str) -> str | None:
    """The first PartitionKey of a migration's rows from `low` on in this storage table (None if none or no
    such table)."""
    pages = storage.query_entities("PartitionKey ge @low and PartitionKey lt @high", select=["PartitionKey"],
                                   parameters={"low": low, "high": f"{migration_id}~\x7f"}, results_per_page=1)
    try:
        first = next(iter(pages), None)
    except ResourceNotFoundError:
        return None
    return None if first is None else first["PartitionKey"]


class _Intent(BaseModel):
    """One intent entity read back: the announced ids (and their record ids when known in advance)."""

    ids: list[str]
    targets: list[str] | None
    batch: str
    target_table: str | None
    at: datetime

    @classmethod
    def of(cls, entity: dict) -> _Intent:
        payload = json.loads("".join(entity[f"p{n}"] for n in range(int(entity["pieces"]))))
        return cls(ids=payload["ids"], targets=payload["targets"], batch=entity["batch"],
                   target_table=entity.get("target_table"), at=entity["at"])

    def entries(self, migration_id: str, table: str) -> list[JournalEntry]:
        """A write-ahead entry per announced id."""
        targets = self.targets or [None] * len(self.ids)
        return [JournalEntry(
            migration_id=migration_id, table=table, source_id=source_id, target_table=self.target_table,
            target_id=target, action="failed", origin="created", batch=self.batch, at=self.at,
            code=WRITE_IN_PROGRESS, reason="the write started; its outcome was not recorded")
            for source_id, target in zip(self.ids, targets, strict=True)]


def _intent_pieces(source_ids: list[str], target_ids: list[str] | None
                   ) -> Iterator[tuple[list[str], list[str] | None]]:
    """The ids split so one intent entity's JSON fits its properties."""
    budget = _INTENT_CHARS_PER_PROPERTY * _INTENT_PROPERTIES - 100
    start, size = 0, 0
    for i, source_id in enumerate(source_ids):
        cost = len(json.dumps(source_id)) + 1 + (len(json.dumps(target_ids[i])) + 1 if target_ids else 0)
        if size + cost > budget and i > start:
            yield source_ids[start:i], (target_ids[start:i] if target_ids else None)
            start, size = i, 0
        size += cost
    yield source_ids[start:], (target_ids[start:] if target_ids else None)


def now() -> datetime:
    return datetime.now(UTC)
