"""The bulk writer's `before_create` hook, the write-ahead the loader journals through (a finding of the
chaos run: a host stopped between a write and its journal turned created records into updates of
unknown origin, which a rollback would have left behind)."""

from __future__ import annotations

import asyncio

from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow
from tests.shared.dataverse.conftest import make_client
from tests.shared.dataverse.test_writer_unit import KEY, FakeTable

TARGET = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", key_column=KEY,
                     bulk=True)
BATCH_TARGET = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", key_column=KEY,
                           bulk=False)


def _write(fake: FakeTable, target: TableTarget, rows: list[WriteRow]) -> tuple[list[list[str]], list[int]]:
    heard: list[list[str]] = []
    stored_when_heard: list[int] = []

    async def before_create(keys: list[str]) -> None:
        heard.append(sorted(keys))
        stored_when_heard.append(sum(1 for key in keys if key in fake.rows))

    async def go() -> None:
        async with make_client(fake.handler) as client:
            await BulkWriter(client).write(target, rows, before_create=before_create)

    asyncio.run(go())
    return heard, stored_when_heard


def _rows(*keys: str) -> list[WriteRow]:
    return [WriteRow(key, {"lastname": "L"}) for key in keys]


def test_new_rows_are_announced_before_they_are_written_and_existing_ones_never():
    for target in (TARGET, BATCH_TARGET):
        fake = FakeTable()
        heard, stored = _write(fake, target, _rows("P-1", "P-2"))
        assert heard == [["P-1", "P-2"]] and stored == [0], "announced before the write, once"
        heard, _ = _write(fake, target, _rows("P-1", "P-2", "P-3"))
        assert heard == [["P-3"]], "rows that exist are updates: not announced"
        assert set(fake.rows) == {"P-1", "P-2", "P-3"}
