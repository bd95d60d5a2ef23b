"""The diff's batched read-back against the emulator: it finds exactly the records and values one GET per
record finds (keyed tables and tables addressed by derived id, lookups through the diff's walk, missing
records as None), in a few requests per thousand records, with every query under the URL limit and
`@odata.nextLink` paging followed; keyed lookup binds resolve to the same ids as one GET per bind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.writer import BulkWriter, TableTarget, WriteRow, row_id
from shared.pipeline.preexisting import MAX_FILTER_URL
from shared.pipeline.readback import RecordReader, in_filters, lookup_candidates, parse_keyed_bind, select_for
from shared.pipeline.sample import lookup_value
from tests.emulator.helpers import add_source_key

CONTACTS = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid", key_column="bw_sourceid")
APPOINTMENTS = TableTarget(logical_name="appointment", entity_set="appointments", primary_id="activityid")
PAGE = 100
"""The emulator's page size here: every chunk of a few hundred ids comes back over several pages."""
CONTACT_COLUMNS = ["firstname", "lastname", "birthdate", "bw_nosuchcolumn", "parentcustomerid_account@odata.bind",
                   "bw_nosuchnav@odata.bind"]
APPOINTMENT_COLUMNS = ["subject", "scheduledstart", "scheduledend", "regardingobjectid_contact_appointment@odata.bind"]


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 1000.0, "page_size": PAGE}) as running:
        with httpx.Client(base_url=running.api_url, headers=running.headers_for("app-1"), timeout=30) as api:
            add_source_key(api, "contact")
        asyncio.run(_seed(running))
        yield running


def _client(emu: RunningEmulator) -> DataverseClient:
    return DataverseClient(DataverseConfig(environment_url=emu.base_url), [EmulatorTokenCredential("app-1")])


def _sid(n: int) -> str:
    # Long keys every seventh record: more chunks, and chunks of uneven size.
    return f"P-{n}" if n % 7 else f"P-{n}-" + "x" * 60


CONTACT_COUNT = 900
APPOINTMENT_COUNT = 420


async def _seed(emu: RunningEmulator) -> None:
    async with _client(emu) as client:
        writer = BulkWriter(client)
        contacts = [WriteRow(_sid(n), {"bw_sourceid": _sid(n), "firstname": f"F{n}", "lastname": f"L{n}",
                                       "birthdate": f"19{50 + n % 40}-01-0{1 + n % 9}" if n % 3 else None})
                    for n in range(CONTACT_COUNT)]
        report = await writer.write(CONTACTS, contacts)
        assert report.failed == 0
        appointments = [WriteRow(f"A-{n}", {"subject": f"Visit {n}", "scheduledstart": "2026-01-05T09:00:00Z",
                                            "scheduledend": "2026-01-05T09:30:00Z",
                                            **({"regardingobjectid_contact_appointment@odata.bind":
                                                f"/contacts(bw_sourceid='{_sid(n)}')"} if n % 5 else {})})
                        for n in range(APPOINTMENT_COUNT)]
        report = await writer.write(APPOINTMENTS, appointments)
        assert report.failed == 0


def _projection(record: dict[str, Any] | None, columns: list[str]) -> dict[str, Any] | None:
    """What the diff reads of a record: plain columns by name, lookups through its walk."""
    if record is None:
        return None
    return {c: lookup_value(c[: -len("@odata.bind")], record) if c.endswith("@odata.bind") else record.get(c)
            for c in columns}


def _both(emu: RunningEmulator, target: TableTarget, sids: list[str], columns: list[str]
          ) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    async def run() -> tuple[dict[str, Any], dict[str, Any], int, int]:
        async with _client(emu) as client:
            reader = RecordReader(client, {"contacts": "contactid"})
            old = {}
            for sid in sids:
                key: dict[str, Any] | str = {target.key_column: sid} if target.key_column \
                    else row_id(target.logical_name, sid)
                old[sid] = await reader.record(target.entity_set, key)
            per_record = reader.requests
            before = client.requests_sent
            new = await reader.records(target, sids, columns)
            return old, new, per_record, client.requests_sent - before

    return asyncio.run(run())


def test_keyed_records_read_in_chunks_equal_one_get_per_record_and_missing_ones_are_none(emu: RunningEmulator):
    sids = [_sid(n) for n in range(CONTACT_COUNT)] + ["P-missing-1", "P-missing-2", _sid(3)]  # a duplicate too
    old, new, per_record, batched = _both(emu, CONTACTS, sids, CONTACT_COLUMNS)
    assert set(new) == set(sids)
    assert new["P-missing-1"] is None and new["P-missing-2"] is None and old["P-missing-1"] is None
    assert sum(r is not None for r in new.values()) == CONTACT_COUNT
    for sid in sids:
        assert _projection(new[sid], CONTACT_COLUMNS) == _projection(old[sid], CONTACT_COLUMNS), sid
    assert new[_sid(4)]["birthdate"] == old[_sid(4)]["birthdate"] and new[_sid(3)]["birthdate"] is None
    # Only the selected columns come back (plus the id and the key).
    assert set(new[_sid(1)]) - {"@odata.etag"} == {"contactid", "bw_sourceid", "firstname", "lastname", "birthdate",
                                                  "_parentcustomerid_value"}
    assert per_record == len(sids)
    chunks = len(in_filters("bw_sourceid", sids))
    assert chunks >= 3  # several chunks, each over several pages of PAGE records
    assert batched <= 1 + chunks + CONTACT_COUNT // PAGE + chunks  # metadata, then each chunk's pages
    assert batched * 20 < per_record


def test_records_addressed_by_derived_id_equal_one_get_per_record_with_the_polymorphic_lookup(emu: RunningEmulator):
    sids = [f"A-{n}" for n in range(APPOINTMENT_COUNT)] + ["A-missing"]
    old, new, per_record, batched = _both(emu, APPOINTMENTS, sids, APPOINTMENT_COLUMNS)
    assert new["A-missing"] is None and old["A-missing"] is None
    for sid in sids:
        assert _projection(new[sid], APPOINTMENT_COLUMNS) == _projection(old[sid], APPOINTMENT_COLUMNS), sid
    regarding = _projection(new["A-1"], APPOINTMENT_COLUMNS)["regardingobjectid_contact_appointment@odata.bind"]
    assert regarding and _projection(new["A-5"], APPOINTMENT_COLUMNS)[
        "regardingobjectid_contact_appointment@odata.bind"] is None
    assert new["A-1"]["activityid"] == row_id("appointment", "A-1")
    assert batched * 20 < per_record


def test_keyed_binds_resolve_to_the_ids_one_get_per_bind_gives(emu: RunningEmulator):
    binds = [f"/contacts(bw_sourceid='{quote(_sid(n), safe='-')}')" for n in range(0, CONTACT_COUNT, 2)]
    binds += ["/systemusers(00000000-0000-0000-0000-000000000101)"]

    async def run() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with _client(emu) as client:
            one = RecordReader(client, {"contacts": "contactid"})
            old = {b: await one.bind_id(b) for b in binds}
            grouped = RecordReader(client, {"contacts": "contactid"})
            await grouped.prefetch_binds(binds)
            prefetch = grouped.requests
            new = {b: await grouped.bind_id(b) for b in binds}
            assert grouped.requests == prefetch  # every bind was answered by the grouped read
            return old, new, prefetch

    old, new, requests = asyncio.run(run())
    assert new == old and all(new.values())
    assert requests < len(binds) / 20


def test_a_bind_the_grouped_read_does_not_find_still_gets_its_own_get(emu: RunningEmulator):
    async def run() -> None:
        async with _client(emu) as client:
            reader = RecordReader(client, {"contacts": "contactid"})
            await reader.prefetch_binds(["/contacts(bw_sourceid='P-nobody')"])
            assert "contacts(bw_sourceid='P-nobody')" not in reader.ids
            with pytest.raises(Exception) as caught:  # as before: a bind to nothing is not silently None
                await reader.bind_id("/contacts(bw_sourceid='P-nobody')")
            assert getattr(caught.value, "attrs", {}).get("status") == 404

    asyncio.run(run())


def test_a_table_whose_columns_cannot_be_read_falls_back_to_one_get_per_record(emu: RunningEmulator):
    ghost = TableTarget(logical_name="bw_ghost", entity_set="bw_ghosts", primary_id="bw_ghostid",
                        key_column="bw_sourceid")

    async def run() -> tuple[dict[str, Any], int]:
        async with _client(emu) as client:
            reader = RecordReader(client, {})
            found = await reader.records(ghost, ["G-1", "G-2"], ["bw_name"])
            return found, reader.requests

    found, requests = asyncio.run(run())
    assert found == {"G-1": None, "G-2": None}
    assert requests == 3  # the metadata read, then one GET each


def test_every_filter_fits_the_url_limit_and_every_value_is_asked_once():
    values = [f"P-{n}" for n in range(5000)] + ["P-it's"] + ["Q-" + "y" * 300]
    reserved = 700
    chunks = in_filters("bw_sourceid", values, reserved=reserved)
    assert len(chunks) > 5
    for text, _ in chunks:
        assert len(quote(text, safe="")) + reserved <= MAX_FILTER_URL
        assert text.startswith("Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=[")
    asked = [v for _, group in chunks for v in group]
    assert sorted(asked) == sorted(set(values))
    quoted = next(text for text, group in chunks if "P-it's" in group)
    assert '"P-it\'s"' in quoted  # PropertyValues is JSON: an apostrophe's value is double-quoted


def test_select_holds_what_a_full_get_would_show_of_the_diffs_columns():
    attributes = {"firstname": "String", "parentcustomerid": "Customer", "regardingobjectid": "Lookup",
                  "ownerid": "Owner", "requiredattendees": "PartyList", "entityimage": "Virtual"}
    select = select_for(["firstname", "missing", "parentcustomerid_account@odata.bind",
                         "regardingobjectid_contact_appointment@odata.bind", "ownerid@odata.bind",
                         "requiredattendees", "entityimage", "parentcustomerid"], attributes, always=["contactid"])
    assert select == ["_ownerid_value", "_parentcustomerid_value", "_regardingobjectid_value", "contactid",
                      "firstname"]
    assert lookup_candidates("regardingobjectid_contact_appointment") == [
        "regardingobjectid_contact_appointment", "regardingobjectid_contact", "regardingobjectid"]
    assert parse_keyed_bind("/contacts(bw_sourceid='P-1%2F2''s')") == ("contacts", "bw_sourceid", "P-1/2's")
    assert parse_keyed_bind("/systemusers(00000000-0000-0000-0000-000000000101)") is None
    assert parse_keyed_bind("/x(a='1',b='2')") is None
