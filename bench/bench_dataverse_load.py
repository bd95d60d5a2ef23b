"""Benchmark: load contacts through the product's bulk writer under the default service-protection limits.

Runs the emulator in a child process (its own CPU) with the default limits (6,000 requests and 1,200 s
of execution time per 5-minute window, 52 concurrent, per application user) and a time scale, then:
1. builds the schema and loads N contacts with `BulkWriter` (UpsertMultiple by source key);
2. loads the same N records again into a fresh environment, one PATCH upsert per record;
and prints for each: records per emulated second, records per real second, requests per 1,000
records, 429s, and the fraction of the emulator's computable upper bound; then the ratio.

Rates are compared in *emulated* seconds (real seconds x time scale), so the two phases may run at
different time scales: the per-record phase needs a lower one, or it measures this machine's CPU
instead of the limits.

    .venv/bin/python -m bench.bench_dataverse_load [--records 100000] [--time-scale 10]
        [--single-records N] [--single-time-scale 20] [--users 1] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from emulator.config import EmulatorConfig
from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from emulator.throttle import upper_bound_records_per_second
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.governor import GovernorConfig
from shared.dataverse.metadata import ColumnSpec, KeySpec, SchemaSpec, TableSpec
from shared.dataverse.schema import build_schema
from shared.dataverse.writer import BulkWriter, TableTarget, WriterConfig, WriteRow

SPEC = SchemaSpec(
    publisher_prefix="bw",
    tables=[
        TableSpec(
            schema_name="contact",
            existing=True,
            columns=[
                ColumnSpec(schema_name="bw_SourceId", display_name="Source id", type="string", max_length=64)
            ],
        )
    ],
    keys=[KeySpec(schema_name="bw_contact_sourceid", table="contact", columns=["bw_sourceid"])],
)


def rows(n: int) -> list[WriteRow]:
    # Synthetic, obviously fake values: no patient data anywhere near a benchmark.
    return [
        WriteRow(
            f"B-{i:07d}",
            {
                "firstname": f"First{i % 997}",
                "lastname": f"Last{i % 1009}",
                "emailaddress1": f"p{i}@example.invalid",
                "telephone1": f"555-{i % 10000:04d}",
                "overriddencreatedon": "2019-03-04T09:00:00Z",
            },
        )
        for i in range(n)
    ]


def client(emu: RunningEmulator, users: int) -> DataverseClient:
    return DataverseClient(
        DataverseConfig(environment_url=emu.base_url, governor=GovernorConfig()),
        [EmulatorTokenCredential(f"app-{u + 1}") for u in range(users)],
    )


def totals(counters: dict[str, Any]) -> dict[str, float]:
    keys = ("requests", "throttled", "records", "execution_seconds", "early_requests")
    return {k: sum(float(c.get(k, 0)) for c in counters.values()) for k in keys}


def report(
    name: str, n: int, seconds: float, scale: float, counters: dict[str, float], bound: float
) -> float:
    emulated = seconds * scale
    rate = n / emulated
    print(f"\n[{name}]")
    print(f"  records                 {n:,}")
    print(f"  real seconds            {seconds:,.1f}   (time scale {scale:g}: {emulated:,.0f} emulated s)")
    print(f"  records/s (emulated)    {rate:,.1f}")
    print(f"  records/s (real)        {n / seconds:,.1f}")
    print(f"  requests per 1,000 rec  {counters['requests'] * 1000 / n:,.1f}")
    print(f"  server time (emulated)  {counters['execution_seconds']:,.0f} s (window budget 1,200 s per 300 s)")
    print(f"  429 responses           {int(counters['throttled'])}")
    print(f"  early requests (emu)    {int(counters['early_requests'])}")
    print(f"  upper bound (emulated)  {bound:,.1f} records/s")
    print(f"  fraction of bound       {rate / bound:.1%}")
    return rate


async def bulk_phase(emu: RunningEmulator, n: int, users: int, chunk: int) -> float:
    async with client(emu, users) as dv:
        await build_schema(dv, SPEC, key_poll_seconds=0.05)
        # The schema build's few requests stay in the window: a handful of seconds of 1,200, noted, not waited out.
        emu.reset_counters()
        target = TableTarget(
            logical_name="contact", entity_set="contacts", primary_id="contactid", key_column="bw_sourceid"
        )
        data = rows(n)
        started = time.monotonic()
        result = await BulkWriter(dv, WriterConfig(max_chunk=chunk)).write(target, data)
        seconds = time.monotonic() - started
        if result.created != n:
            raise SystemExit(f"bulk phase wrote {result.created} of {n} (failed {result.failed})")
        return seconds


async def single_phase(emu: RunningEmulator, n: int, users: int) -> float:
    async with client(emu, users) as dv:
        await build_schema(dv, SPEC, key_poll_seconds=0.05)
        # The schema build's few requests stay in the window: a handful of seconds of 1,200, noted, not waited out.
        emu.reset_counters()
        data = rows(n)
        queue: asyncio.Queue[WriteRow] = asyncio.Queue()
        for r in data:
            queue.put_nowait(r)

        async def worker() -> None:
            while not queue.empty():
                r = queue.get_nowait()
                await dv.upsert("contacts", {"bw_sourceid": r.source_key}, r.values, primary_id="contactid")

        started = time.monotonic()
        # The governor bounds what is in flight; the workers only keep it fed.
        await asyncio.gather(*(worker() for _ in range(64 * users)))
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--single-records", type=int, default=None, help="default: same as --records")
    parser.add_argument("--single-time-scale", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument(
        "--per-record-cost",
        type=float,
        default=None,
        help="emulated server seconds per record (emulator default 0.01). At the default, 100,000 records need"
        " ~1,015 s of server time: less than one window's 1,200 s, so the window never fills.",
    )
    args = parser.parse_args()
    single_n = args.single_records if args.single_records is not None else args.records

    cfg = EmulatorConfig(time_scale=args.time_scale, affinity_cookie=True, key_activation_seconds=1.0)
    if args.per_record_cost is not None:
        cfg = cfg.model_copy(
            update={"costs": cfg.costs.model_copy(update={"per_record_seconds": args.per_record_cost})}
        )
    print("limits per user:", cfg.limits.model_dump(), "costs:", cfg.costs.model_dump())
    with run_emulator(cfg, subprocess=True) as emu:
        seconds = asyncio.run(bulk_phase(emu, args.records, args.users, args.chunk))
        bound = upper_bound_records_per_second(cfg, args.chunk, args.users)
        bulk_rate = report(
            "bulk: UpsertMultiple by source key",
            args.records,
            seconds,
            args.time_scale,
            totals(emu.counters()),
            bound,
        )

    single_cfg = cfg.model_copy(update={"time_scale": args.single_time_scale})
    with run_emulator(single_cfg, subprocess=True) as emu:
        seconds = asyncio.run(single_phase(emu, single_n, args.users))
        bound = upper_bound_records_per_second(single_cfg, 1, args.users)
        single_rate = report(
            "one request per record (PATCH upsert)",
            single_n,
            seconds,
            args.single_time_scale,
            totals(emu.counters()),
            bound,
        )

    print(f"\nbulk / one-per-record throughput ratio (emulated records/s): {bulk_rate / single_rate:,.1f}x")


if __name__ == "__main__":
    main()
