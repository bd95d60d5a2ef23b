"""Benchmark: the field-level diff's read-back, one GET per record (before) vs batched `In(...)` reads (after).

Runs the emulator in a child process at Dataverse's default limits (per application user: 6,000 requests
and 1,200 s of execution time per 5-minute window, 52 concurrent) and default costs (0.05 s server time
per request, 0.02 s latency), time-scaled like bench_e2e (`--time-scale 10`: 1 real s = 10 emulated s).
Seeds N contacts (keyed by `bw_sourceid`) and N/2 appointments (addressed by the writer's derived id,
each regarding its own contact), then reads them all back the way the diff does, twice, each with its
own application user (so neither spends the other's window):
- before: one GET per record (every column) and one GET per expected keyed lookup bind: the code the
  sample diff and the reconciliation ran until now (`RecordReader.record` / `bind_id` unchanged);
- after: `RecordReader.records` (chunked `Microsoft.Dynamics.CRM.In` GETs, `$select` of the diff's
  columns, paging followed) and `prefetch_binds`.
Prints per path: records/s (emulated and real), requests per 1,000 records, 429s; and checks that
both paths read the same values.

    .venv/bin/python -m bench.bench_readback [--records 3000] [--time-scale 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.bench_dataverse_load import SPEC
from emulator.config import EmulatorConfig
from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.schema import build_schema
from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow, row_id
from shared.pipeline.readback import RecordReader
from shared.pipeline.sample import lookup_value

CONTACTS = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", key_column="bw_sourceid")
APPOINTMENTS = TableTarget(logical_name="appointment", entity_set="appointments", primary_id="activityid")
CONTACT_COLUMNS = ["firstname", "lastname", "emailaddress1", "telephone1", "birthdate"]
REGARDING = "regardingobjectid_contact_appointment@odata.bind"
APPOINTMENT_COLUMNS = ["subject", "scheduledstart", "scheduledend", REGARDING]
PRIMARY = {"contacts": "contactid", "appointments": "activityid"}


def _client(emu: RunningEmulator, user: str) -> DataverseClient:
    return DataverseClient(DataverseConfig(environment_url=emu.base_url), [EmulatorTokenCredential(user)])


def _contact_rows(n: int) -> list[WriteRow]:
    # Synthetic, obviously fake values: no patient data anywhere near a benchmark.
    return [WriteRow(f"B-{i:07d}", {"bw_sourceid": f"B-{i:07d}", "firstname": f"First{i % 997}",
                                    "lastname": f"Last{i % 1009}", "emailaddress1": f"p{i}@example.invalid",
                                    "telephone1": f"555-{i % 10000:04d}", "birthdate": "1980-01-02"})
            for i in range(n)]


def _appointment_rows(n: int) -> list[WriteRow]:
    return [WriteRow(f"A-{i:07d}", {"subject": f"Visit {i}", "scheduledstart": "2026-01-05T09:00:00Z",
                                    "scheduledend": "2026-01-05T09:30:00Z",
                                    REGARDING: f"/contacts(bw_sourceid='B-{i:07d}')"}) for i in range(n)]


async def seed(emu: RunningEmulator, contacts: int, appointments: int) -> None:
    async with _client(emu, "app-3") as dv:
        await build_schema(dv, SPEC, key_poll_seconds=0.05)
        writer = BulkWriter(dv)
        for target, rows in ((CONTACTS, _contact_rows(contacts)), (APPOINTMENTS, _appointment_rows(appointments))):
            report = await writer.write(target, rows)
            if report.failed:
                raise SystemExit(f"seeding {target.logical_name}: {report.failed} rows failed")


def _seen(record: dict[str, Any] | None, columns: list[str]) -> Any:
    if record is None:
        return None
    return tuple(lookup_value(c[: -len("@odata.bind")], record) if c.endswith("@odata.bind") else record.get(c)
                 for c in columns)


async def read_back(emu: RunningEmulator, user: str, batched: bool, contacts: list[str], appointments: list[str],
                    binds: list[str]) -> tuple[float, int, dict[str, Any]]:
    """(real seconds, requests, what was read) for one path."""
    async with _client(emu, user) as dv:
        reader = RecordReader(dv, PRIMARY)
        seen: dict[str, Any] = {}
        started = time.monotonic()
        for target, sids, columns in ((CONTACTS, contacts, CONTACT_COLUMNS),
                                      (APPOINTMENTS, appointments, APPOINTMENT_COLUMNS)):
            if batched:
                found = await reader.records(target, sids, columns)
                await reader.prefetch_binds(binds if target is APPOINTMENTS else [])
            else:
                keys = [{"bw_sourceid": s} if target.key_column else row_id(target.logical_name, s) for s in sids]
                records = await asyncio.gather(*(reader.record(target.entity_set, k) for k in keys))
                found = dict(zip(sids, records, strict=True))
            for sid in sids:
                seen[sid] = _seen(found[sid], columns)
            if target is APPOINTMENTS:
                ids = await asyncio.gather(*(reader.bind_id(b) for b in binds))
                seen.update(zip(binds, ids, strict=True))
        return time.monotonic() - started, dv.requests_sent, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=3000, help="contacts; appointments are half as many")
    parser.add_argument("--time-scale", type=float, default=10.0)
    args = parser.parse_args()
    cfg = EmulatorConfig(time_scale=args.time_scale)
    n_app = args.records // 2
    contacts = [f"B-{i:07d}" for i in range(args.records)]
    appointments = [f"A-{i:07d}" for i in range(n_app)]
    binds = [f"/contacts(bw_sourceid='B-{i:07d}')" for i in range(n_app)]
    total = len(contacts) + len(appointments)
    c = cfg.costs
    print(f"emulator: default limits (6,000 requests, 1,200 s per 300 s window, 52 concurrent per user); "
          f"{c.per_request_seconds:g} s per request, {c.network_latency_seconds:g} s latency (emulated); "
          f"time scale {cfg.time_scale:g}")
    print(f"records read back: {len(contacts):,} contacts by key + {len(appointments):,} appointments by derived id "
          f"= {total:,}, plus {len(binds):,} expected lookup binds")
    with run_emulator(cfg, subprocess=True) as emu:
        asyncio.run(seed(emu, len(contacts), n_app))
        emu.reset_counters()
        results = {}
        for name, user, batched in (("before: one GET per record", "app-1", False),
                                    ("after: batched In() reads", "app-2", True)):
            seconds, requests, seen = asyncio.run(read_back(emu, user, batched, contacts, appointments, binds))
            throttled = int(emu.counters(user).get("throttled", 0))
            rate = total / (seconds * cfg.time_scale)
            results[name] = (rate, total / seconds, requests, seen)
            print(f"\n[{name}]")
            print(f"  real seconds            {seconds:,.2f}   ({seconds * cfg.time_scale:,.1f} emulated s)")
            print(f"  records/s (emulated)    {rate:,.1f}")
            print(f"  records/s (real)        {total / seconds:,.1f}")
            print(f"  requests per 1,000 rec  {requests * 1000 / total:,.1f}   ({requests:,} requests)")
            print(f"  429 responses           {throttled}")
        (before, before_real, before_req, before_seen), (after, after_real, after_req, after_seen) = results.values()
        print(f"\nafter / before: {after / before:,.1f}x records/s, {before_req / max(after_req, 1):,.0f}x fewer requests; "
              f"same values read: {before_seen == after_seen}")
        if before_seen != after_seen:
            raise SystemExit("the two paths read different values")


if __name__ == "__main__":
    main()
