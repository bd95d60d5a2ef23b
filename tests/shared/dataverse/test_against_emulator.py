"""The Dataverse client against the local emulator: schema build twice, throttled loads, poisoned rows, faults, two users.

The emulator runs time-scaled (a 5-minute window passes in about a second) with tiny limits, so the
throttling paths are exercised in seconds. Speed is printed, never asserted against the wall clock;
the two-user test asserts a throughput *ratio* of two runs under identical per-user limits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.governor import GovernorConfig
from shared.dataverse.schema import build_schema
from shared.dataverse.writer import BulkWriter, TableTarget, WriterConfig, WriteReport, WriteRow

from .specs import dental_spec

pytestmark = pytest.mark.slow

BASE_CONFIG = {
    "time_scale": 300.0,
    "key_activation_seconds": 3.0,
    "customization_lock": True,
}


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator(BASE_CONFIG) as running:
        yield running


@pytest.fixture
def fresh(emu: RunningEmulator) -> RunningEmulator:
    emu.configure(
        limits={
            "window_seconds": 300.0,
            "max_requests": 6000,
            "max_execution_seconds": 1200.0,
            "max_concurrent": 52,
            "dop_hint": 16,
        },
        faults=[],
    )
    emu.reset()
    return emu


@dataclass
class Sent:
    user: str
    started: float
    finished: float
    status: int
    retry_after: float | None


class RecordingTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport and records, per application user, when each request left and what came back."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.log: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        user = _appid(request.headers.get("Authorization", ""))
        started = time.monotonic()
        response = await self.inner.handle_async_request(request)
        finished = time.monotonic()
        ra = response.headers.get("Retry-After")
        self.log.append(Sent(user, started, finished, response.status_code, float(ra) if ra else None))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def early_sends(self) -> list[tuple[str, float]]:
        """Requests that left while their user was inside a Retry-After the client had already received."""
        bad = []
        for t in (x for x in self.log if x.status == 429 and x.retry_after is not None):
            until = t.finished + t.retry_after
            for s in self.log:
                if s.user == t.user and t.finished < s.started < until:
                    bad.append((s.user, until - s.started))
        return bad


def _appid(auth: str) -> str:
    try:
        payload = auth.split(" ", 1)[1].split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["appid"]
    except (IndexError, ValueError, KeyError):
        return "?"


def client_for(
    emu: RunningEmulator, users: list[str], transport: httpx.AsyncBaseTransport | None = None, **cfg
) -> DataverseClient:
    config = DataverseConfig(
        environment_url=emu.base_url,
        backoff_base_seconds=0.05,
        not_ready_delay_seconds=0.2,
        governor=cfg.pop("governor", GovernorConfig()),
        **cfg,
    )
    return DataverseClient(config, [EmulatorTokenCredential(u) for u in users], transport=transport)


def contacts(n: int, start: int = 0) -> list[WriteRow]:
    return [
        WriteRow(
            f"P-{i:06d}",
            {"firstname": f"F{i}", "lastname": f"L{i}", "overriddencreatedon": "2019-03-04T09:00:00Z"},
        )
        for i in range(start, start + n)
    ]


async def _schema_then_load(
    client: DataverseClient,
    rows: list[WriteRow],
    writer_cfg: WriterConfig | None = None,
    bulk: bool | None = None,
) -> tuple[WriteReport, float]:
    info = await build_schema(client, dental_spec(), key_poll_seconds=0.05)
    t = info.tables["contact"]
    target = TableTarget(
        logical_name="contact",
        entity_set=t.entity_set_name,
        primary_id=t.primary_id_attribute,
        key_column="bw_sourceid",
        bulk=bulk,
    )
    started = time.monotonic()
    report = await BulkWriter(client, writer_cfg).write(target, rows)
    return report, time.monotonic() - started


def assert_written_once(emu: RunningEmulator, report: WriteReport, expected: int) -> None:
    stored = emu.rows("contact")
    keys = Counter(r.get("bw_sourceid") for r in stored.values() if r.get("bw_sourceid"))
    assert len(keys) == expected, "every row written"
    assert all(n == 1 for n in keys.values()), "no row written twice"
    by_key = {r["bw_sourceid"]: rid for rid, r in stored.items() if r.get("bw_sourceid")}
    for o in report.outcomes:
        if o.action != "failed":
            assert o.target_id == by_key[o.source_key]


def test_schema_build_twice_second_run_writes_nothing(fresh: RunningEmulator) -> None:
    async def go() -> None:
        async with client_for(fresh, ["app-1"]) as client:
            first = await build_schema(client, dental_spec(), key_poll_seconds=0.05)
            assert first.writes > 0 and first.published and not first.conflicts
            assert (
                "table:bw_treatmentplan" in first.created
                and "key:contact.bw_contact_sourceid" in first.created
            )
            assert first.tables["bw_treatmentplan"].entity_set_name == "bw_treatmentplans"
            before = fresh.dump()
            second = await build_schema(client, dental_spec(), key_poll_seconds=0.05)
            assert second.writes == 0 and second.created == [] and not second.published
            assert fresh.dump() == before, "the second run changed nothing"
            keys = await client.query_all(
                "EntityDefinitions(LogicalName='contact')/Keys", select=["SchemaName", "EntityKeyIndexStatus"]
            )
            assert {k["SchemaName"].lower(): k["EntityKeyIndexStatus"] for k in keys}[
                "bw_contact_sourceid"
            ] == "Active"

    asyncio.run(go())


def test_20000_rows_under_tiny_limits_written_once_429s_absorbed_none_sent_early(
    fresh: RunningEmulator,
) -> None:
    # The request-count limit bites only if this machine is fast enough to fill a window, so injected
    # 429s (with their own Retry-After) make sure throttling is exercised whatever the CPU load.
    fresh.configure(
        limits={"max_requests": 12, "max_concurrent": 6, "dop_hint": 4},
        faults=[{"kind": "status", "status": 429, "methods": ["POST"], "every": 9, "retry_after_seconds": 0.3}],
    )
    recorder = RecordingTransport()

    async def go() -> tuple[WriteReport, float, int]:
        async with client_for(fresh, ["app-1"], transport=recorder) as client:
            report, seconds = await _schema_then_load(client, contacts(20_000), WriterConfig(max_chunk=1000))
            return report, seconds, client.throttled

    report, seconds, throttled = asyncio.run(go())
    counters = fresh.counters("app-1")
    print(
        f"\n20k rows: {seconds:.2f} s, {report.requests} requests, {throttled} x 429, emulator counters {counters}"
    )
    assert report.created == 20_000 and report.failed == 0
    assert throttled >= 3, "429s were met and absorbed"
    assert recorder.early_sends() == [], "a request left before its Retry-After"
    assert counters["affinity_cookie_requests"] == 0, "the ARRAffinity cookie was sent back"
    assert_written_once(fresh, report, 20_000)


def test_one_poisoned_row_in_1000_leaves_999_written_and_one_reported(fresh: RunningEmulator) -> None:
    rows = contacts(1000)
    rows[321] = WriteRow(rows[321].source_key, {"firstname": "F", "lastname": "x" * 5000})

    async def go() -> WriteReport:
        async with client_for(fresh, ["app-1"]) as client:
            report, _ = await _schema_then_load(client, rows, WriterConfig(max_chunk=1000))
            return report

    report = asyncio.run(go())
    assert (report.created, report.failed) == (999, 1)
    bad = report.outcomes[321]
    assert bad.action == "failed" and bad.error_code == "0x80044331" and bad.status == 400
    assert bad.source_key == "P-000321"
    stored = {r.get("bw_sourceid") for r in fresh.rows("contact").values()}
    assert "P-000321" not in stored and len(stored & {r.source_key for r in rows}) == 999


@pytest.mark.parametrize("bulk", [True, False], ids=["UpsertMultiple", "batch"])
def test_faults_lose_nothing_and_duplicate_nothing(fresh: RunningEmulator, bulk: bool) -> None:
    fresh.configure(
        faults=[
            {"kind": "status", "status": 503, "methods": ["POST"], "every": 5},
            {"kind": "status", "status": 500, "methods": ["GET"], "every": 7},
            {"kind": "drop_before", "methods": ["POST"], "every": 7},
            {"kind": "drop_after", "methods": ["POST"], "every": 4},
        ]
    )

    async def go() -> WriteReport:
        async with client_for(fresh, ["app-1"], max_attempts=20) as client:
            first, _ = await _schema_then_load(
                client, contacts(3000), WriterConfig(max_chunk=250, batch_chunk=250), bulk=bulk
            )
            assert first.failed == 0
            # a rerun (delta pickup, or Durable retrying the activity) updates, never duplicates
            info = await build_schema(client, dental_spec(), key_poll_seconds=0.05)
            assert info.writes == 0
            target = TableTarget(
                logical_name="contact",
                entity_set="contacts",
                primary_id="contactid",
                key_column="bw_sourceid",
                bulk=bulk,
            )
            second = await BulkWriter(client, WriterConfig(max_chunk=250, batch_chunk=250)).write(
                target, contacts(3000)
            )
            assert (second.updated, second.failed) == (3000, 0)
            return first

    report = asyncio.run(go())
    errors = fresh.counters("app-1")["errors"]
    print(
        f"\nfaults ({'bulk' if bulk else 'batch'}): emulator counted {errors} errors; report {report.created} created"
    )
    assert_written_once(fresh, report, 3000)


def _load_with_users(emu: RunningEmulator, users: list[str], n: int) -> tuple[float, dict, list]:
    emu.configure(
        limits={"window_seconds": 300.0, "max_requests": 6, "max_concurrent": 52, "dop_hint": 8},
        faults=[],
    )
    emu.reset()

    recorder = RecordingTransport()

    async def go() -> float:
        async with client_for(emu, users, transport=recorder) as client:
            info = await build_schema(client, dental_spec(), key_poll_seconds=0.05)
            t = info.tables["contact"]
            target = TableTarget(
                logical_name="contact",
                entity_set=t.entity_set_name,
                primary_id=t.primary_id_attribute,
                key_column="bw_sourceid",
            )
            await asyncio.sleep(1.1)  # let the schema build's requests leave the window (300 emulated s)
            emu.reset_counters()
            started = time.monotonic()
            report = await BulkWriter(client, WriterConfig(max_chunk=250)).write(target, contacts(n))
            assert report.created == n
            return time.monotonic() - started

    seconds = asyncio.run(go())
    return n / seconds, emu.counters(), recorder.early_sends()


def test_two_application_users_share_the_work_and_honour_retry_after(emu: RunningEmulator) -> None:
    try:
        one, c1, early1 = _load_with_users(emu, ["app-1"], 3000)
        two, c2, early2 = _load_with_users(emu, ["app-1", "app-2"], 3000)
    finally:
        emu.configure(limits={"window_seconds": 300.0, "max_requests": 6000})
    print(f"\none user {one:.0f} rows/s, two users {two:.0f} rows/s, ratio {two / one:.2f}")
    print(f"counters one user: {c1}\ncounters two users: {c2}")
    assert c1["app-1"]["throttled"] > 0, "one user is limited by its budget"
    r1, r2 = c2["app-1"]["requests"], c2["app-2"]["requests"]
    assert min(r1, r2) >= 0.35 * (r1 + r2), "work spread over both users"
    assert early1 == [] and early2 == [], "a request left before its Retry-After"
    # The speed-up itself is printed, not asserted (a rate depends on the machine's load): bench/ measures it.


def test_reads_by_alternate_key_paged_queries_whoami_and_systemusers(fresh: RunningEmulator) -> None:
    async def go() -> None:
        async with client_for(fresh, ["app-1"]) as client:
            report, _ = await _schema_then_load(client, contacts(120))
            assert report.created == 120
            row = await client.get(
                "contacts", {"bw_sourceid": "P-000007"}, select=["contactid", "bw_sourceid"]
            )
            assert row is not None and row["contactid"] == report.outcomes[7].target_id
            assert await client.get("contacts", {"bw_sourceid": "P-999999"}) is None
            rows = await client.query_all(
                "contacts", select=["contactid"], filter="startswith(bw_sourceid,'P-0000')", page_size=25
            )
            assert len(rows) == 100  # P-000000 .. P-000099, fetched over four pages
            me = await client.who_am_i()
            assert me["UserId"] and client.lanes[0].governor.dop_hint == 16
            users = await client.list_systemusers()
            assert any(u["isdisabled"] for u in users) and any(not u["isdisabled"] for u in users)
            provider = await client.find_systemuser_by_email("PROVIDER1@example.com")
            assert provider is not None and provider["isdisabled"] is False
            assert await client.find_systemuser_by_email("nobody@example.com") is None

    asyncio.run(go())


def test_load_right_after_schema_build_waits_out_metadata_propagation(fresh: RunningEmulator) -> None:
    fresh.configure(metadata_propagation_seconds=600.0)  # new columns invisible for 2 s real

    async def go() -> WriteReport:
        async with client_for(fresh, ["app-1"]) as client:
            report, _ = await _schema_then_load(client, contacts(50))
            return report

    try:
        report = asyncio.run(go())
    finally:
        fresh.configure(metadata_propagation_seconds=0.0)
    assert (report.created, report.failed) == (50, 0)


def test_update_changes_existing_rows_in_few_requests_and_creates_nothing(fresh: RunningEmulator) -> None:
    # Closing activities and second-pass lookups were one PATCH per record; `update` batches them.
    target = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid",
                         key_column="bw_sourceid")

    async def load() -> None:
        async with client_for(fresh, ["app-1"]) as client:
            report, _ = await _schema_then_load(client, contacts(300), WriterConfig(max_chunk=1000))
            assert report.created == 300

    async def update() -> WriteReport:
        changes = [WriteRow(f"P-{i:06d}", {"telephone1": f"555-{i:04d}", "overriddencreatedon": "2001-01-01T00:00:00Z"})
                   for i in range(50, 300)]
        changes += [WriteRow("P-999998", {"telephone1": "1"}), WriteRow("P-999999", {"telephone1": "2"})]
        async with client_for(fresh, ["app-1"]) as client:
            return await BulkWriter(client).update(target, changes)

    asyncio.run(load())
    before = {rid: dict(row) for rid, row in fresh.rows("contact").items()}
    report = asyncio.run(update())
    stored = fresh.rows("contact")
    assert set(stored) == set(before), "nothing created, nothing lost"
    assert (report.updated, report.failed, report.created) == (250, 2, 0)
    assert [o.status for o in report.outcomes[-2:]] == [404, 404]
    by_key = {row["bw_sourceid"]: (rid, row) for rid, row in stored.items()}
    for outcome in report.outcomes[:-2]:
        rid, row = by_key[outcome.source_key]
        assert outcome.target_id == rid and row["telephone1"] == f"555-{int(outcome.source_key[2:]):04d}"
        assert row.get("overriddencreatedon") == before[rid].get("overriddencreatedon"), "create-only kept"
    assert by_key["P-000049"][1].get("telephone1") is None
    assert report.requests <= 4, f"{report.requests} requests for 252 updates"
