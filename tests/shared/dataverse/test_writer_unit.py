"""BulkWriter against a compact in-test fake (MockTransport): chunking, halving, isolation, outcomes, create-only fields."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
import uuid

import httpx

from shared.dataverse.writer import BulkWriter, TableTarget, WriterConfig, WriteRow, row_id

from .conftest import make_client

KEY = "bw_sourceid"


class FakeTable:
    """Rows of one table keyed by source key; UpsertMultiple all-or-nothing; $batch per part; GET with In()."""

    def __init__(self, max_targets: int = 10_000, max_len: int = 100) -> None:
        self.rows: dict[str, dict] = {}
        self.by_id: dict[str, dict] = {}
        self.max_targets = max_targets
        self.max_len = max_len
        self.calls: list[tuple[str, int]] = []

    def _bad(self, body: dict) -> bool:
        return any(isinstance(v, str) and len(v) > self.max_len for v in body.values())

    def _upsert(self, key: str | None, rid: str | None, body: dict) -> tuple[int, str]:
        existing = self.rows.get(key) if key is not None else self.by_id.get(rid or "")
        if existing is not None:
            assert "overriddencreatedon" not in body, "create-only column sent on update"
            existing.update(body)
            return 200, existing["contactid"]
        new_id = rid or str(uuid.uuid4())
        row = {"contactid": new_id, KEY: key, **body}
        self.by_id[new_id] = row
        if key is not None:
            self.rows[key] = row
        return 201, new_id

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/data/v9.2/")
        if request.method == "GET":
            flt = request.url.params["$filter"]
            prop = re.search(r"PropertyName='(\w+)'", flt).group(1)
            values = json.loads(
                "[" + re.search(r"PropertyValues=\[(.*)\]\)", flt).group(1).replace("'", '"') + "]"
            )
            self.calls.append(("GET", len(values)))
            source = self.rows if prop == KEY else self.by_id
            return httpx.Response(
                200,
                json={
                    "value": [{"contactid": source[v]["contactid"], prop: v} for v in values if v in source]
                },
            )
        if path.endswith("UpsertMultiple"):
            targets = json.loads(request.content)["Targets"]
            self.calls.append(("UpsertMultiple", len(targets)))
            if len(targets) > self.max_targets:
                return httpx.Response(413, json={"error": {"code": "", "message": "too large"}})
            if any(self._bad(t) for t in targets):
                return httpx.Response(400, json={"error": {"code": "0x80044331", "message": "too long"}})
            for t in targets:
                assert t["@odata.type"] == "Microsoft.Dynamics.CRM.contact" and KEY not in t
                key = re.search(r"='(.*)'\)$", t["@odata.id"]).group(1)
                body = {k: v for k, v in t.items() if not k.startswith("@")}
                self._upsert(key, None, body)
            return httpx.Response(204)
        if path == "$batch":
            return self._batch(request)
        raise AssertionError(f"unexpected {request.method} {path}")

    def _query(self, flt: str) -> tuple[str, list]:
        prop = re.search(r"PropertyName='(\w+)'", flt).group(1)
        values = json.loads(
            "[" + re.search(r"PropertyValues=\[(.*)\]\)", flt).group(1).replace("'", '"') + "]"
        )
        source = self.rows if prop == KEY else self.by_id
        return prop, [{"contactid": source[v]["contactid"], prop: v} for v in values if v in source]

    def _batch(self, request: httpx.Request) -> httpx.Response:
        raw = request.content.decode()
        gets = re.findall(r"GET /api/data/v9.2/contacts\?(\S+) HTTP/1.1", raw)
        if gets:
            self.calls.append(("$batch-GET", len(gets)))
            boundary = "batchresponse_g"
            parts = []
            for qs in gets:
                flt = dict(urllib.parse.parse_qsl(qs))["$filter"]
                _, found = self._query(flt)
                parts.append(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps({"value": found})
                )
            text = (
                "".join(f"--{boundary}\r\nContent-Type: application/http\r\n\r\n{p}\r\n" for p in parts)
                + f"--{boundary}--\r\n"
            )
            return httpx.Response(
                200, content=text.encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
            )
        assert request.headers["Prefer"] == "odata.continue-on-error"
        ops = re.findall(
            r"PATCH /api/data/v9.2/contacts\(([^)]*)\)\?\$select=contactid HTTP/1.1\r\n(?:.*\r\n)*?\r\n(.*)\r\n",
            raw,
        )
        self.calls.append(("$batch", len(ops)))
        if len(ops) > self.max_targets:
            return httpx.Response(413, json={"error": {"code": "", "message": "too large"}})
        out = []
        for addr, body_text in ops:
            body = json.loads(body_text)
            if self._bad(body):
                out.append(
                    'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{"error":{"code":"0x80044331","message":"x"}}'
                )
                continue
            m = re.fullmatch(r"bw_sourceid='(.*)'", addr)
            status, rid = self._upsert(m.group(1), None, body) if m else self._upsert(None, addr, body)
            reason = "Created" if status == 201 else "OK"
            out.append(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\r\n"
                + json.dumps({"contactid": rid})
            )
        boundary = "batchresponse_x"
        text = (
            "".join(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{p}\r\n"
                for p in out
            )
            + f"--{boundary}--\r\n"
        )
        return httpx.Response(
            200, content=text.encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
        )


TARGET = TableTarget(
    logical_name="contact", entity_set="contacts", primary_id="contactid", key_column=KEY, bulk=True
)


def rows(n: int, start: int = 0) -> list[WriteRow]:
    return [
        WriteRow(f"P-{i}", {"lastname": f"L{i}", "overriddencreatedon": "2019-01-01T00:00:00Z"})
        for i in range(start, start + n)
    ]


def write(fake: FakeTable, target: TableTarget, data: list[WriteRow], **cfg):
    async def go():
        async with make_client(fake.handler) as client:
            return await BulkWriter(client, WriterConfig(**cfg)).write(target, data)

    return asyncio.run(go())


def test_upsert_multiple_creates_then_updates_with_ids_and_no_create_only_fields_on_update() -> None:
    fake = FakeTable()
    first = write(fake, TARGET, rows(250), max_chunk=100)
    assert (first.created, first.updated, first.failed) == (250, 0, 0)
    assert all(o.target_id == fake.rows[o.source_key]["contactid"] for o in first.outcomes)
    second = write(
        fake, TARGET, rows(250), max_chunk=100
    )  # FakeTable asserts no overriddencreatedon on update
    assert (second.created, second.updated, second.failed) == (0, 250, 0)
    assert [o.target_id for o in second.outcomes] == [o.target_id for o in first.outcomes]
    assert len(fake.rows) == 250
    assert max(n for kind, n in fake.calls if kind == "UpsertMultiple") <= 100


def test_one_poisoned_row_is_isolated_and_reported() -> None:
    fake = FakeTable()
    data = rows(1000)
    data[417] = WriteRow("P-417", {"lastname": "x" * 500})
    report = write(fake, TARGET, data)
    assert report.created == 999 and report.failed == 1 and report.fallbacks == 1
    bad = report.outcomes[417]
    assert bad.action == "failed" and bad.error_code == "0x80044331" and bad.status == 400
    assert "P-417" not in fake.rows and len(fake.rows) == 999


def test_413_halves_the_chunk_until_it_fits() -> None:
    fake = FakeTable(max_targets=130)
    report = write(fake, TARGET, rows(1000), parallel_per_user=1)  # one worker: chunks of 1,000, not spread
    assert report.created == 1000 and report.halvings >= 3
    assert len(fake.rows) == 1000


def test_duplicate_source_keys_in_input_are_reported_not_sent() -> None:
    fake = FakeTable()
    data = rows(5) + [WriteRow("P-2", {"lastname": "again"})]
    report = write(fake, TARGET, data)
    assert report.outcomes[5].action == "failed" and report.outcomes[5].error_code == "duplicate_in_input"
    assert report.created == 5


def test_batch_path_without_alternate_key_uses_deterministic_ids() -> None:
    fake = FakeTable()
    target = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", bulk=False)
    data = rows(300)
    data[5] = WriteRow("P-5", {"lastname": "y" * 300})
    first = write(fake, target, data, batch_chunk=100)
    assert (first.created, first.failed) == (299, 1) and first.outcomes[5].error_code == "0x80044331"
    assert first.outcomes[0].target_id == row_id("contact", "P-0")
    again = write(fake, target, rows(300), batch_chunk=100)
    assert (again.created, again.updated) == (1, 299)
    assert len(fake.by_id) == 300


def test_decode_of_fake_batch_matches_part_count() -> None:
    fake = FakeTable()
    report = write(
        fake,
        TableTarget(
            logical_name="contact", entity_set="contacts", primary_id="contactid", key_column=KEY, bulk=False
        ),
        rows(10),
    )
    assert report.created == 10
    assert ("$batch", 10) in fake.calls


def test_a_refused_whole_batch_is_bisected_down_to_the_bad_row() -> None:
    fake = FakeTable()
    inner = fake.handler

    def handler(request: httpx.Request) -> httpx.Response:
        # A server that refuses the whole $batch when any part is bad (no per-part answers).
        if (
            request.url.path.endswith("$batch")
            and b"PATCH" in request.content
            and b"x" * 200 in request.content
        ):
            return httpx.Response(400, json={"error": {"code": "0x80044331", "message": "x"}})
        return inner(request)

    fake.handler = handler  # type: ignore[method-assign]
    target = TableTarget(
        logical_name="contact", entity_set="contacts", primary_id="contactid", key_column=KEY, bulk=False
    )
    data = rows(64)
    data[9] = WriteRow("P-9", {"lastname": "x" * 300})
    report = write(fake, target, data, batch_chunk=64)
    assert (report.created, report.failed) == (63, 1)
    assert report.outcomes[9].error_code == "0x80044331" and report.outcomes[9].status == 400


def test_slow_requests_shrink_the_chunks_of_this_write_and_of_the_next_writer(monkeypatch) -> None:
    """A chunk that takes longer than `target_request_seconds` (costly rows: plug-ins, Dataverse's 2-minute
    timeout) makes the queued chunks smaller at once, and a new writer of the same process starts small."""
    from shared.dataverse import writer as writer_module

    monkeypatch.setattr(writer_module, "_SLOW_ROWS", {})
    fake = FakeTable()
    slow = fake.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("UpsertMultiple"):
            time.sleep(0.002 * len(json.loads(request.content)["Targets"]))  # 2 ms of server time per row
        return slow(request)

    async def go(data: list[WriteRow]):
        async with make_client(handler) as client:
            config = WriterConfig(max_chunk=200, parallel_per_user=1, target_request_seconds=0.1)
            return await BulkWriter(client, config).write(TARGET, data)

    first = asyncio.run(go(rows(600)))
    assert first.created == 600
    sizes = [n for kind, n in fake.calls if kind == "UpsertMultiple"]
    assert sizes[0] == 200  # nothing known yet: the configured chunk
    assert sizes[1:] and max(sizes[1:]) <= 60  # ~0.4 s for 200 rows: the rest go ~50 at a time
    assert sum(sizes) == 600
    fake.calls.clear()
    second = asyncio.run(go(rows(200, start=600)))  # the next batch of the table, a new writer
    assert second.created == 200
    assert max(n for kind, n in fake.calls if kind == "UpsertMultiple") <= 60


def test_a_write_smaller_than_one_chunk_is_spread_over_the_workers() -> None:
    fake = FakeTable()
    report = write(fake, TARGET, rows(320), parallel_per_user=8, min_spread_chunk=50)
    assert report.created == 320
    assert sorted(n for kind, n in fake.calls if kind == "UpsertMultiple") == [20] + [50] * 6
    fake.calls.clear()
    write(fake, TARGET, rows(3000, start=320), parallel_per_user=8, max_chunk=1000)  # more than a chunk: full ones
    assert sorted(n for kind, n in fake.calls if kind == "UpsertMultiple") == [1000] * 3
