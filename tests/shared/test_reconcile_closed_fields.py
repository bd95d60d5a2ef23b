"""`closed.changed_fields` against the emulator: which mapped fields of closed appointments the source now
holds differently from Dataverse (plain columns and lookups), names only; a record not found lists nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow
from shared.mapping import default_mapping
from shared.pipeline import closed
from tests.emulator.helpers import add_source_key

CONTACTS = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", key_column="bw_sourceid")
APPOINTMENTS = TableTarget(logical_name="appointment", entity_set="appointments", primary_id="activityid")
REGARDING = "regardingobjectid_contact_appointment@odata.bind"


def _client(emu: RunningEmulator) -> DataverseClient:
    return DataverseClient(DataverseConfig(environment_url=emu.base_url), [EmulatorTokenCredential("app-1")])


def _payload(n: int, description: str, contact: str) -> dict[str, str]:
    return {"subject": f"Visit {n}", "scheduledstart": "2026-01-05T09:00:00Z", "scheduledend": "2026-01-05T09:30:00Z",
            "description": description, REGARDING: f"/contacts(bw_sourceid='{contact}')"}


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 1000.0}) as running:
        with httpx.Client(base_url=running.api_url, headers=running.headers_for("app-1"), timeout=30) as api:
            add_source_key(api, "contact")
        asyncio.run(_seed(running))
        yield running


async def _seed(emu: RunningEmulator) -> None:
    async with _client(emu) as client:
        writer = BulkWriter(client)
        report = await writer.write(CONTACTS, [WriteRow(f"P-{n}", {"bw_sourceid": f"P-{n}", "lastname": f"L{n}"})
                                               for n in (1, 2)])
        assert report.failed == 0
        report = await writer.write(APPOINTMENTS, [WriteRow(f"A-{n}", _payload(n, "as migrated", "P-1"))
                                                   for n in (1, 2, 3)])
        assert report.failed == 0
        closing = {"A-1": {"statecode": 1, "statuscode": 3}, "A-2": {"statecode": 2, "statuscode": 4}}
        report = await writer.update(APPOINTMENTS, [WriteRow(sid, state) for sid, state in closing.items()])
        assert report.failed == 0


def test_changed_fields_names_the_differing_columns_and_lookups(emu: RunningEmulator):
    async def run() -> dict[str, list[str]]:
        async with _client(emu) as client:
            return await closed.changed_fields(client, default_mapping(), APPOINTMENTS, {
                "A-1": _payload(1, "edited at the practice", "P-1"),   # a note edited
                "A-2": _payload(2, "as migrated", "P-2"),              # the patient changed (a lookup)
                "A-3": _payload(3, "as migrated", "P-1"),              # nothing changed
                "A-9": _payload(9, "never written", "P-1"),            # not in Dataverse
            })

    assert asyncio.run(run()) == {"A-1": ["description"], "A-2": [REGARDING], "A-3": [], "A-9": []}


def test_no_payloads_read_nothing(emu: RunningEmulator):
    async def run() -> dict[str, list[str]]:
        async with _client(emu) as client:
            return await closed.changed_fields(client, default_mapping(), APPOINTMENTS, {})

    assert asyncio.run(run()) == {}
