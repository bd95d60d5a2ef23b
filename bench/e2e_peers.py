"""The two peers the product is measured against, writing the same transformed records into a fresh emulator.

- naive: one request per record, as the import wizard and simple scripts do: a PATCH upsert per record
  (by source key, or by the deterministic id where a table has no alternate key), then a PATCH per
  activity to close and per record with a second-pass lookup. It goes through the product's
  `DataverseClient` (Retry-After honoured, concurrency from `x-ms-dop-hint`), so it is a well-behaved
  naive loader: what it loses is the request count, not manners.
- sdk: Microsoft's `powerplatform-dataverse-client` (1.1.0) bulk path as its documentation shows it:
  `records.upsert(table, [UpsertItem...])` (one UpsertMultiple per call) in chunks of 1,000, on
  `threads` threads with one SDK client per application user; tables without UpsertMultiple
  (appointment, annotation) go as `batch` creates of up to 1,000 operations with the deterministic id;
  closes and second-pass lookups as `batch` updates. The SDK does not retry 429s, so the loader
  catches them and sleeps Retry-After as a user of the SDK must. Over https (the SDK refuses http).

Both load the schema first with the product's schema builder (outside the measurement), in wave order.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel

from bench.e2e_workload import TableWrites, Workload
from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.schema import SchemaBuilder
from shared.dataverse.writer import BulkWriter, WriteRow, row_id

SDK_CHUNK = 1000
"""Microsoft's guidance for CreateMultiple/UpsertMultiple on standard tables: start at 100-1,000 records."""


class PeerRun(BaseModel):
    name: str
    records: int
    seconds: float
    requests_client: int
    throttled_client: int
    retry_after_wait_seconds: float


def product_client(emu: RunningEmulator, users: int) -> DataverseClient:
    transport = httpx.AsyncHTTPTransport(verify=emu.verify, limits=httpx.Limits(max_connections=None,
                                                                                 max_keepalive_connections=64))
    return DataverseClient(DataverseConfig(environment_url=emu.base_url),
                           [EmulatorTokenCredential(f"app-{u + 1}") for u in range(users)], transport=transport)


async def build_schema(emu: RunningEmulator, schema_spec: Any) -> None:
    """The migration's schema in a fresh emulator (the product's builder; not measured)."""
    async with product_client(emu, 1) as client:
        await SchemaBuilder(client, schema_spec).build()


async def bulk_support(emu: RunningEmulator, workload: Workload) -> dict[str, bool]:
    async with product_client(emu, 1) as client:
        writer = BulkWriter(client)
        return {t.target.logical_name: t.target.key_column is not None
                and await writer.supports_upsert_multiple(t.target.logical_name) for t in workload.tables}


def _dedupe(rows: list[Any]) -> list[Any]:
    # The product journals a repeated source key as `duplicate_in_input`; a peer simply writes it once.
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.source_key not in seen:
            seen.add(row.source_key)
            out.append(row)
    return out


def _key(t: TableWrites, sid: str) -> dict[str, str] | str:
    return {t.target.key_column: sid} if t.target.key_column else row_id(t.target.logical_name, sid)


# -- naive ----------------------------------------------------------------------------------------------


async def naive_load(emu: RunningEmulator, workload: Workload, users: int, workers: int = 64) -> PeerRun:
    async with product_client(emu, users) as client:
        started = time.monotonic()
        records = 0
        for wave in workload.waves:
            jobs: list[tuple[str, Any, dict[str, Any], str, str]] = []
            for t in wave:
                for row in _dedupe(t.rows):
                    jobs.append(("upsert", _key(t, row.source_key), row.values, t.target.entity_set,
                                 t.target.primary_id))
            for t in wave:  # a closed activity is read-only: close after every write of the wave
                jobs.extend(("update", _key(t, sid), state, t.target.entity_set, "")
                            for sid, state in sorted(t.closing.items()))
            records += sum(1 for j in jobs if j[0] == "upsert")
            await _drain(client, jobs, workers * users)
        second = [("update", _key(t, sid), later, t.target.entity_set, "")
                  for t in workload.tables for sid, later in sorted(t.deferred.items())]
        await _drain(client, second, workers * users)
        seconds = time.monotonic() - started
        return PeerRun(name="naive", records=records, seconds=seconds, requests_client=client.requests_sent,
                       throttled_client=client.throttled,
                       retry_after_wait_seconds=sum(lane.governor.held_back_seconds for lane in client.lanes))


async def _drain(client: DataverseClient, jobs: list[tuple[str, Any, dict[str, Any], str, str]],
                 workers: int) -> None:
    queue: asyncio.Queue[tuple[str, Any, dict[str, Any], str, str]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            kind, key, body, entity_set, primary = queue.get_nowait()
            if kind == "upsert":
                await client.upsert(entity_set, key, body, primary_id=primary)
            else:
                await client.update(entity_set, key, body)

    # The governor bounds what is in flight; the workers only keep it fed.
    await asyncio.gather(*(worker() for _ in range(workers)))


# -- Microsoft's SDK ---------------------------------------------------------------------------------------


class _Throttle:
    """What the SDK leaves to its user: 429 -> sleep Retry-After and send again. Counted here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.throttled = 0
        self.waited = 0.0
        self.requests = 0

    def call(self, send: Callable[[], Any]) -> Any:
        from PowerPlatform.Dataverse.core.errors import HttpError

        while True:
            with self.lock:
                self.requests += 1
            try:
                return send()
            except HttpError as exc:
                if exc.status_code != 429:
                    raise
                wait = float((getattr(exc, "details", None) or {}).get("retry_after") or 1)
                with self.lock:
                    self.throttled += 1
                    self.waited += wait
                time.sleep(wait)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sdk_load(emu: RunningEmulator, workload: Workload, users: int, bulk: dict[str, bool], threads: int
             ) -> PeerRun:
    from PowerPlatform.Dataverse.client import DataverseClient as SdkClient
    from PowerPlatform.Dataverse.models.upsert import UpsertItem

    os.environ["REQUESTS_CA_BUNDLE"] = str(emu.cert_file)  # the SDK (requests) trusts the emulator's certificate
    clients = [SdkClient(emu.base_url, EmulatorTokenCredential(f"app-{u + 1}")) for u in range(users)]
    throttle = _Throttle()
    records = 0

    def upsert_job(client: Any, t: TableWrites, rows: list[Any]) -> Callable[[], Any]:
        items = [UpsertItem(alternate_key={t.target.key_column: r.source_key}, record=dict(r.values)) for r in rows]
        return lambda: client.records.upsert(t.target.logical_name, items)

    def batch_job(client: Any, t: TableWrites, ops: list[tuple[str, str, dict[str, Any]]]) -> Callable[[], Any]:
        def send() -> Any:
            batch = client.batch.new()
            for kind, record_id, body in ops:
                if kind == "create":
                    batch.records.create(t.target.logical_name, {**body, t.target.primary_id: record_id})
                else:
                    batch.records.update(t.target.logical_name, record_id, body)
            result = batch.execute(continue_on_error=True)
            failed = [r for r in result.responses if r.status_code == 429]
            if failed:  # parts throttled inside the batch: treat the batch as throttled (rare; counted)
                from PowerPlatform.Dataverse.core.errors import HttpError
                raise HttpError("throttled part", status_code=429)
            return result
        return send

    def updates(t: TableWrites, changes: dict[str, dict[str, Any]]) -> list[Callable[[Any], Callable[[], Any]]]:
        """Closes or second-pass lookups: UpsertMultiple by key where the table has it, else batch updates."""
        later = [WriteRow(source_key=sid, values=v) for sid, v in sorted(changes.items())]
        if bulk.get(t.target.logical_name):
            return [lambda c, t=t, chunk=chunk: upsert_job(c, t, chunk) for chunk in _chunks(later, SDK_CHUNK)]
        ops = [("update", row_id(t.target.logical_name, r.source_key), r.values) for r in later]
        return [lambda c, t=t, chunk=chunk: batch_job(c, t, chunk) for chunk in _chunks(ops, SDK_CHUNK)]

    def run(jobs: list[Callable[[Any], Callable[[], Any]]]) -> None:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(lambda j=j, n=n: throttle.call(j(clients[n % users]))) for n, j in enumerate(jobs)]
            for future in futures:
                future.result()

    started = time.monotonic()
    try:
        for wave in workload.waves:
            jobs: list[Callable[[Any], Callable[[], Any]]] = []
            for t in wave:
                rows = _dedupe(t.rows)
                records += len(rows)
                if bulk.get(t.target.logical_name):
                    jobs += [lambda c, t=t, chunk=chunk: upsert_job(c, t, chunk) for chunk in _chunks(rows, SDK_CHUNK)]
                else:
                    ops = [("create", row_id(t.target.logical_name, r.source_key), dict(r.values)) for r in rows]
                    jobs += [lambda c, t=t, chunk=chunk: batch_job(c, t, chunk) for chunk in _chunks(ops, SDK_CHUNK)]
            run(jobs)
            run([job for t in wave for job in updates(t, t.closing)])
        run([job for t in workload.tables for job in updates(t, t.deferred)])
        seconds = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    return PeerRun(name="sdk", records=records, seconds=seconds, requests_client=throttle.requests,
                   throttled_client=throttle.throttled, retry_after_wait_seconds=throttle.waited)
