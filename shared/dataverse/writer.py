"""The bulk writer: upsert many rows of one table by source key, at the service-protection limit, with a per-row outcome.

Every write is an upsert, so a retry, a rerun or a delta pickup never duplicates a row:
- tables with an alternate key on the source-key column and `UpsertMultiple` support: one
  `UpsertMultiple` per chunk (`@odata.id` = key reference, key columns kept out of the body);
- other tables (appointment, annotation): `$batch` of `PATCH <set>(<key>)` upserts with
  `Prefer: odata.continue-on-error`. Without an alternate key the row is addressed by a GUID derived
  from the table and source key (uuid5), so the same source row always lands on the same record.

`UpsertMultiple` on a standard table is all-or-nothing (reference/dataverse.md §6): when one row is
refused, the chunk is re-sent as a continue-on-error `$batch` so the bad row is reported and the
others are written. Chunks halve on 413 and on timeouts and grow back slowly after successes.
Create-only columns (`overriddencreatedon`) are sent only for rows that do not exist yet: existence
is read before writing, which also tells `created` from `updated` and gives the journal its ids.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shared.dataverse.batch import MAX_BATCH_OPERATIONS, BatchOperation, decode_batch, encode_batch
from shared.dataverse.client import SECONDS_EXTENSION, DataverseClient, format_key, odata_literal
from shared.errors import (
    DataverseRecordRejected,
    DataverseRequestFailed,
    DataverseRequestTooLarge,
    DataverseUnavailable,
)

ROW_ID_NAMESPACE = uuid.UUID("6d1f0c52-8a3e-4d8e-9a51-2b7e3c9f4a10")
"""Namespace of the deterministic record ids of tables without an alternate key. Never change it."""

MAX_FILTER_URL = 6_000
"""URL-encoded characters of key values per existence-read GET. Microsoft's SDK caps GET URLs at 32,768;
many HTTP front ends refuse request lines over 8 KiB, so a GET stays well under that and longer
reads go into a `$batch`."""

MAX_BATCH_URL = 60_000
"""URL-encoded characters of key values per GET inside a `$batch` (Dataverse allows 64 KB there)."""

Action = Literal["created", "updated", "failed"]

BeforeCreate = Callable[[list[str]], Awaitable[None]]
"""Called with the source keys of rows about to be written that do not exist yet, after the existence
read and before the request that writes them (so a caller can journal them ahead of the write)."""

_BULK_SUPPORT: dict[tuple[str, str], bool] = {}
"""(environment URL, table) -> UpsertMultiple support, shared by the writers of one process."""

_SLOW_ROWS: dict[tuple[str, str], float] = {}
"""(environment URL, table, or "*" for any table) -> seconds per row of the last write request that took
longer than `target_request_seconds`. Shared by the writers of one process: a load makes a writer per
batch, and a batch's chunks all go out before the first answer, so each new batch starts at a chunk
that fits instead of learning it again."""


@dataclass(frozen=True)
class WriteRow:
    """One row to write: its source key and its column values (logical names, `x@odata.bind` for lookups)."""

    source_key: str
    values: dict[str, Any] = field(repr=False)  # repr=False: values are patient data


class RowOutcome(BaseModel):
    """What happened to one row. Messages hold codes and names only, never values."""

    model_config = ConfigDict(hide_input_in_errors=True)

    source_key: str
    target_id: str | None = None
    action: Action
    error_code: str | None = None
    """The Dataverse error code (`0x80044331`), or one of ours: `duplicate_in_input`, `too_large`, `gave_up`."""
    status: int | None = None


class TableTarget(BaseModel):
    """Where rows go. Build it from `schema.read_table` (entity set names are read, never computed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    logical_name: str
    entity_set: str
    primary_id: str
    key_column: str | None = None
    """Logical name of the source-key column that has an Active alternate key; None: address by uuid5 id."""
    bulk: bool | None = None
    """Use UpsertMultiple; None = ask `sdkmessagefilters` once."""
    create_only: tuple[str, ...] = ("overriddencreatedon",)
    """Columns valid on create only: dropped from rows that already exist."""


class WriterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_chunk: int = Field(default=1000, ge=1)
    """Largest UpsertMultiple chunk; Microsoft suggests starting at 100-1,000 records."""
    batch_chunk: int = Field(default=200, ge=1, le=MAX_BATCH_OPERATIONS)
    """Largest $batch (operations)."""
    parallel_per_user: int = Field(default=8, ge=1)
    """Chunks in progress per application user (the governor still caps requests in flight). The
    execution-time limit allows 4 s of server time per second per user, so a 1,000-row chunk that
    takes ~10 s of server time needs 4+ chunks in flight to use it; 8 leaves room for the existence
    reads. Same-table bulk writes in parallel can deadlock on a real server (SQL 1205,
    reference/dataverse.md §6): lower this if the environment reports it."""
    min_spread_chunk: int = Field(default=100, ge=1)
    """A write of fewer rows than one chunk is spread over the workers, in chunks of at least this many
    rows: a table's 320 patients go as 4 requests, not 1, so the first table of a load (the one all the
    others wait for) uses more than one request's share of the user's budget (at the limit that one
    request took 30 s with three quarters of the budget unused). Bigger writes keep full chunks:
    spreading a 5,000-row part over 8 workers doubled the requests per record at default costs."""
    target_request_seconds: float = Field(default=60.0, gt=0)
    """Server seconds one write request should take at most. A chunk that took longer makes the next ones
    proportionally smaller, and chunks only grow while they stay under it: Dataverse times a request out
    at 2 minutes (this is half), so costly rows (plug-ins, many columns) need smaller chunks than 1,000.
    Not lower: the execution-time limit is checked when a request arrives and charged when it ends, so
    at the limit longer requests keep working through a Retry-After pause (single benchmark runs at the
    limit: 30 s, with every part spread, 78.6% of the steady bound; 60 s 97.8%: bench/README.md).
    Measured from sending to the answer (`client.SECONDS_EXTENSION`), not from the wait for a governor
    slot."""
    max_row_attempts: int = Field(default=5, ge=1)
    """Times one row may come back transient (5xx/429 part) before it is reported `gave_up`."""


class WriteReport(BaseModel):
    outcomes: list[RowOutcome]
    created: int = 0
    updated: int = 0
    failed: int = 0
    requests: int = 0
    """HTTP requests this write sent (including retries and existence reads)."""
    halvings: int = 0
    fallbacks: int = 0
    """Chunks re-sent as continue-on-error $batch after UpsertMultiple refused one of their rows."""


def row_id(logical_name: str, source_key: str) -> str:
    """The deterministic record id of a source row in a table without an alternate key."""
    return str(uuid.uuid5(ROW_ID_NAMESPACE, f"{logical_name}:{source_key}"))


class BulkWriter:
    """Writes rows to tables through one `DataverseClient`. Reusable across tables and calls."""

    def __init__(self, client: DataverseClient, config: WriterConfig | None = None) -> None:
        self.client = client
        self.config = config or WriterConfig()
        self._bulk_support: dict[str, bool] = {}
        self._api_path = "/" + client.config.api_base.split("://", 1)[1].split("/", 1)[1]

    async def supports_upsert_multiple(self, logical_name: str) -> bool:
        """Whether the table lists UpsertMultiple among its messages (reference/dataverse.md §6), cached
        per process: a load makes a writer per batch, and the answer does not change during a migration."""
        shared_key = (self.client.config.environment_url, logical_name)
        if logical_name not in self._bulk_support and shared_key in _BULK_SUPPORT:
            self._bulk_support[logical_name] = _BULK_SUPPORT[shared_key]
        if logical_name not in self._bulk_support:
            rows = await self.client.query_all(
                "sdkmessagefilters",
                select=["sdkmessagefilterid"],
                filter=(
                    "sdkmessageid/name eq 'UpsertMultiple' and primaryobjecttypecode eq "
                    f"{odata_literal(logical_name)}"
                ),
            )
            self._bulk_support[logical_name] = _BULK_SUPPORT[shared_key] = bool(rows)
        return self._bulk_support[logical_name]

    async def write(self, target: TableTarget, rows: Sequence[WriteRow], *,
                    before_create: BeforeCreate | None = None) -> WriteReport:
        """Upsert every row; return one outcome per input row, in input order.

        `before_create` hears which rows are about to be created, before they are (see `BeforeCreate`).
        Raises only Fatal errors (auth, retry budget exhausted, misconfiguration); per-row problems are outcomes.
        """
        return await self._write(target, rows, update_only=False, before_create=before_create)

    async def update(self, target: TableTarget, rows: Sequence[WriteRow]) -> WriteReport:
        """Update rows that already exist (closing activities, second-pass lookups): `$batch` of
        `PATCH` with `If-Match: *`, chunked and parallel like `write`, instead of one request per row.

        A row whose record does not exist is not created: it comes back `failed` with the 404's code.
        Create-only columns are dropped. One outcome per input row, in input order.
        """
        return await self._write(target, rows, update_only=True)

    async def _write(self, target: TableTarget, rows: Sequence[WriteRow], update_only: bool,
                     before_create: BeforeCreate | None = None) -> WriteReport:
        before = self.client.requests_sent
        outcomes: dict[int, RowOutcome] = {}
        seen: dict[str, int] = {}
        todo: list[int] = []
        for i, row in enumerate(rows):
            if row.source_key in seen:
                outcomes[i] = RowOutcome(
                    source_key=row.source_key, action="failed", error_code="duplicate_in_input"
                )
                continue
            seen[row.source_key] = i
            todo.append(i)
        bulk = not update_only and target.key_column is not None and (
            target.bulk
            if target.bulk is not None
            else await self.supports_upsert_multiple(target.logical_name)
        )
        run = _Run(self, target, rows, outcomes, bulk, update_only)
        run.before_create = before_create
        await run.go(todo)
        ordered = [outcomes[i] for i in range(len(rows))]
        return WriteReport(
            outcomes=ordered,
            created=sum(o.action == "created" for o in ordered),
            updated=sum(o.action == "updated" for o in ordered),
            failed=sum(o.action == "failed" for o in ordered),
            requests=self.client.requests_sent - before,
            halvings=run.halvings,
            fallbacks=run.fallbacks,
        )


class _Run:
    """One `write` call: a queue of slices worked by a few concurrent workers."""

    def __init__(
        self,
        writer: BulkWriter,
        target: TableTarget,
        rows: Sequence[WriteRow],
        outcomes: dict[int, RowOutcome],
        bulk: bool,
        update_only: bool = False,
    ) -> None:
        self.w = writer
        self.client = writer.client
        self.t = target
        self.rows = rows
        self.outcomes = outcomes
        self.bulk = bulk
        self.update_only = update_only
        self.before_create: BeforeCreate | None = None
        cfg = writer.config
        self.chunk = cfg.max_chunk if bulk else cfg.batch_chunk
        self.max_chunk = self.chunk
        environment = self.client.config.environment_url
        self._pace_keys = ((environment, target.logical_name), (environment, "*"))
        per_row = _SLOW_ROWS.get(self._pace_keys[0]) or _SLOW_ROWS.get(self._pace_keys[1])
        if per_row:
            self.chunk = max(1, min(self.chunk, int(cfg.target_request_seconds / per_row)))
        self.attempts: dict[int, int] = {}
        self.halvings = 0
        self.fallbacks = 0
        self.queue: asyncio.Queue[list[int]] = asyncio.Queue()
        self.pending_rows = 0

    # ---------------------------------------------------------------- scheduling
    async def go(self, todo: list[int]) -> None:
        if not todo:
            return
        self.pending_rows = len(todo)
        workers = self.w.config.parallel_per_user * len(self.client.lanes)
        if len(todo) < self.chunk:  # one chunk's worth: spread it (a bigger write keeps full chunks, fewer requests)
            self.chunk = max(self.w.config.min_spread_chunk, -(-len(todo) // workers))
        self._enqueue(todo)
        tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]
        try:
            await self.queue.join()
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def _enqueue(self, indices: list[int]) -> None:
        size = max(1, self.chunk)
        for start in range(0, len(indices), size):
            self.queue.put_nowait(indices[start : start + size])

    async def _worker(self) -> None:
        while True:
            piece = await self.queue.get()
            if len(piece) > self.chunk:  # chunks shrank since this piece was queued: send what fits
                self.queue.put_nowait(piece[self.chunk :])
                piece = piece[: self.chunk]
            try:
                await self._process(piece)
            except BaseException:
                # A Fatal error: drain the queue so `join` returns and the error surfaces from `go`.
                while not self.queue.empty():
                    self.queue.get_nowait()
                    self.queue.task_done()
                raise
            finally:
                self.queue.task_done()

    def _done(self, i: int, outcome: RowOutcome) -> None:
        self.outcomes[i] = outcome

    def _fail(self, i: int, code: str | None, status: int | None) -> None:
        self._done(
            i, RowOutcome(source_key=self.rows[i].source_key, action="failed", error_code=code, status=status)
        )

    def _split(self, piece: list[int], reason: str) -> None:
        """413 or timeout: halve this piece and shrink future chunks."""
        self.halvings += 1
        self.chunk = max(1, min(self.chunk, len(piece) // 2))
        half = len(piece) // 2
        self.queue.put_nowait(piece[:half])
        self.queue.put_nowait(piece[half:])

    def _grow(self) -> None:
        if self.chunk < self.max_chunk:
            self.chunk = min(self.max_chunk, max(self.chunk + 1, int(self.chunk * 1.25)))

    def _fit(self, rows: int, response: httpx.Response) -> None:
        """After a successful write of `rows` rows: shrink toward `target_request_seconds`, else grow."""
        seconds = float(response.extensions.get(SECONDS_EXTENSION, 0.0))
        target = self.w.config.target_request_seconds
        if seconds > target:
            self.chunk = max(1, min(self.chunk, int(rows * target / seconds)))
            for key in self._pace_keys:
                _SLOW_ROWS[key] = seconds / rows
        elif seconds * 1.25 <= target:
            self._grow()

    async def _process(self, piece: list[int]) -> None:
        try:
            if self.bulk:
                await self._upsert_multiple(piece)
            else:
                await self._batch(piece)
        except (DataverseRequestTooLarge, DataverseUnavailable) as exc:
            too_large = isinstance(exc, DataverseRequestTooLarge)
            if not too_large and not exc.attrs.get("timeout"):
                raise
            if len(piece) > 1:
                self._split(piece, "413" if too_large else "timeout")
            else:
                self._fail(piece[0], "too_large" if too_large else "timeout", 413 if too_large else None)
        except DataverseRecordRejected as exc:
            # The $batch itself was refused (not one of its parts): bisect until the culprit stands alone.
            if len(piece) > 1:
                half = len(piece) // 2
                self.queue.put_nowait(piece[:half])
                self.queue.put_nowait(piece[half:])
            else:
                self._fail(piece[0], exc.attrs.get("dataverse_code") or None, exc.attrs.get("status"))

    # ---------------------------------------------------------------- addressing
    def _key_of(self, i: int) -> dict[str, Any] | str:
        row = self.rows[i]
        if self.t.key_column is not None:
            return {self.t.key_column: row.source_key}
        return row_id(self.t.logical_name, row.source_key)

    def _path_of(self, i: int) -> str:
        key = self._key_of(i)
        if isinstance(key, str):
            return f"{self.t.entity_set}({key})"
        return f"{self.t.entity_set}({format_key(key)})"

    async def _existing(self, piece: list[int]) -> dict[str, str]:
        """source key -> record id for the rows of `piece` that already exist.

        One GET when the filter fits a URL; otherwise one `$batch` of GETs (URLs inside a batch may be
        far longer, and the whole read still counts as a single request against the limits).
        """
        column = self.t.key_column or self.t.primary_id
        values = (
            [self.rows[i].source_key for i in piece]
            if self.t.key_column
            else [row_id(self.t.logical_name, self.rows[i].source_key) for i in piece]
        )
        select = [self.t.primary_id] + ([column] if column != self.t.primary_id else [])
        literals = [_in_literal(v) for v in values]
        sizes = [len(quote(lit, safe="")) + 3 for lit in literals]
        # Short enough for a plain GET; otherwise GETs inside one $batch, whose URLs may be up to 64 KB.
        cap = MAX_FILTER_URL if sum(sizes) <= MAX_FILTER_URL else MAX_BATCH_URL
        groups: list[list[str]] = []
        group: list[str] = []
        length = 0
        for lit, encoded in zip(literals, sizes, strict=True):
            if group and length + encoded > cap:
                groups.append(group)
                group, length = [], 0
            group.append(lit)
            length += encoded
        if group:
            groups.append(group)
        filters = [
            f"Microsoft.Dynamics.CRM.In(PropertyName={odata_literal(column)},PropertyValues=[{','.join(g)}])"
            for g in groups
        ]
        found: dict[str, str] = {}
        if len(filters) == 1 and cap == MAX_FILTER_URL:
            async for row in self.client.query(self.t.entity_set, select=select, filter=filters[0]):
                found[str(row[column])] = str(row[self.t.primary_id])
        elif filters:
            ops = [
                BatchOperation(
                    "GET",
                    f"{self.t.entity_set}?"
                    + urlencode({"$select": ",".join(select), "$filter": f}, quote_via=quote),
                    None,
                    {"Prefer": "odata.maxpagesize=5000"},
                )
                for f in filters
            ]
            content, content_type = encode_batch(ops, self.w._api_path)
            response = await self.client.request(
                "POST", "$batch", content=content, headers={"Content-Type": content_type}
            )
            for part in decode_batch(response.content, response.headers.get("Content-Type", "")):
                if part.status != 200 or not isinstance(part.body, dict):
                    raise DataverseRequestFailed(
                        f"existence read of {self.t.entity_set} failed in $batch: HTTP {part.status}",
                        status=part.status,
                        dataverse_code=_part_code(part.body) or "",
                    )
                for row in part.body.get("value", []):
                    found[str(row[column])] = str(row[self.t.primary_id])
        if self.t.key_column:
            return found
        by_id = {row_id(self.t.logical_name, self.rows[i].source_key): self.rows[i].source_key for i in piece}
        return {by_id[k]: v for k, v in found.items() if k in by_id}

    def _body(self, i: int, exists: bool) -> dict[str, Any]:
        values = {k: v for k, v in self.rows[i].values.items() if k != self.t.key_column}
        if exists:
            for name in self.t.create_only:
                values.pop(name, None)
        return values

    # ---------------------------------------------------------------- UpsertMultiple
    async def _announce(self, piece: list[int], existing: dict[str, str]) -> None:
        if self.before_create is not None and not self.update_only:
            new = [self.rows[i].source_key for i in piece if self.rows[i].source_key not in existing]
            if new:
                await self.before_create(new)

    async def _upsert_multiple(self, piece: list[int]) -> None:
        existing = await self._existing(piece)
        await self._announce(piece, existing)
        targets = []
        for i in piece:
            body = self._body(i, self.rows[i].source_key in existing)
            body["@odata.type"] = f"Microsoft.Dynamics.CRM.{self.t.logical_name}"
            body["@odata.id"] = self._path_of(i)
            targets.append(body)
        try:
            response = await self.client.request(
                "POST",
                f"{self.t.entity_set}/Microsoft.Dynamics.CRM.UpsertMultiple",
                json={"Targets": targets},
                headers={"Content-Type": "application/json"},
                retry_timeouts=False,
            )
        except DataverseRecordRejected:
            # All-or-nothing on standard tables: one bad row refused the whole chunk. Isolate it.
            # Existence is read again: after a retried request that had in fact landed, the first read is stale.
            self.fallbacks += 1
            await self._batch(piece)
            return
        new = [i for i in piece if self.rows[i].source_key not in existing]
        created_ids = await self._existing(new) if new else {}
        for i in piece:
            key = self.rows[i].source_key
            if key in existing:
                self._done(i, RowOutcome(source_key=key, target_id=existing[key], action="updated"))
            else:
                self._done(i, RowOutcome(source_key=key, target_id=created_ids.get(key), action="created"))
        self._fit(len(piece), response)

    # ---------------------------------------------------------------- $batch
    async def _batch(self, piece: list[int], existing: dict[str, str] | None = None) -> None:
        if len(piece) > MAX_BATCH_OPERATIONS:
            half = len(piece) // 2
            await self._batch(piece[:half], existing)
            await self._batch(piece[half:], existing)
            return
        if existing is None and not self.update_only and (self.before_create is not None or any(
            name in self.rows[i].values for i in piece for name in self.t.create_only
        )):
            existing = await self._existing(piece)
        known = existing or {}
        await self._announce(piece, known)
        # If-Match: * makes the PATCH an update only: a missing record is a 404, never a new one.
        headers = {"Prefer": "return=representation", **({"If-Match": "*"} if self.update_only else {})}
        ops = [
            BatchOperation(
                "PATCH",
                f"{self._path_of(i)}?$select={self.t.primary_id}",
                self._body(i, self.update_only or self.rows[i].source_key in known),
                headers,
            )
            for i in piece
        ]
        content, content_type = encode_batch(ops, self.w._api_path)
        response = await self.client.request(
            "POST",
            "$batch",
            content=content,
            headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
            retry_timeouts=False,
        )
        parts = decode_batch(response.content, response.headers.get("Content-Type", ""))
        if len(parts) != len(piece):
            # The server stopped early (should not happen with continue-on-error): resend what has no answer.
            answered, rest = piece[: len(parts)], piece[len(parts) :]
        else:
            answered, rest = piece, []
        retry: list[int] = []
        for i, part in zip(answered, parts, strict=False):
            key = self.rows[i].source_key
            if 200 <= part.status < 300:
                target_id = None
                if isinstance(part.body, dict) and self.t.primary_id in part.body:
                    target_id = str(part.body[self.t.primary_id])
                elif part.header("OData-EntityId"):
                    try:
                        target_id = _id_in(part.header("OData-EntityId") or "")
                    except ValueError:
                        target_id = known.get(key)
                if target_id is None:
                    target_id = known.get(key)
                if part.status == 201:
                    action: Action = "created"
                elif part.status == 200:
                    action = "updated"
                else:
                    action = "updated" if self.update_only or key in known else "created"
                if target_id is None and self.t.key_column is None:
                    target_id = row_id(self.t.logical_name, key)
                self._done(i, RowOutcome(source_key=key, target_id=target_id, action=action))
            elif part.status == 429 or part.status >= 500:
                retry.append(i)
            else:
                code = _part_code(part.body)
                self._done(
                    i, RowOutcome(source_key=key, action="failed", error_code=code, status=part.status)
                )
        retry += rest
        again: list[int] = []
        for i in retry:
            self.attempts[i] = self.attempts.get(i, 0) + 1
            if self.attempts[i] >= self.w.config.max_row_attempts:
                self._fail(i, "gave_up", None)
            else:
                again.append(i)
        if again:
            await asyncio.sleep(0.5)
            self.queue.put_nowait(again)
        else:
            self._fit(len(piece), response)


def _in_literal(value: str) -> str:
    # PropertyValues is read as JSON: a value with an apostrophe must be double-quoted (Microsoft Learn,
    # "Query data using the Web API", In function); plain values keep the common single-quote form.
    if "'" in value:
        return json.dumps(value)
    return f"'{value}'"


def _id_in(entity_id: str) -> str:
    value = entity_id[entity_id.rindex("(") + 1 : entity_id.rindex(")")]
    uuid.UUID(value)  # a key-form reference (`contacts(k='v')`) is not an id
    return value


def _part_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code) if code else None
    return None


__all__ = [
    "ROW_ID_NAMESPACE",
    "BulkWriter",
    "RowOutcome",
    "TableTarget",
    "WriteReport",
    "WriteRow",
    "WriterConfig",
    "row_id",
]
