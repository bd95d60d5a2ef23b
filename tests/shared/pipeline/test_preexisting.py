"""Matching records that were in Dataverse before the migration, against the emulator: exactly one
match, ambiguity on either side, records already keyed, chunked queries, before-images with nulls and
lookups (a polymorphic one given back through its own table's navigation), first image kept; and the
map's match-rule checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.writer import TableTarget, WriteRow
from shared.errors import MappingInvalid
from shared.mapping.spec import default_mapping, default_mapping_data, parse_mapping
from shared.pipeline import preexisting
from shared.pipeline.preexisting import ImageReader, find_matches, write_matched
from tests.emulator.helpers import add_source_key

CONTACTS = TableTarget(logical_name="contact", entity_set="contacts", primary_id="contactid",
                       key_column="bw_sourceid")


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 1000.0}) as running:
        with httpx.Client(base_url=running.api_url, headers=running.headers_for("app-1"), timeout=30) as api:
            add_source_key(api, "contact")
        yield running


def _create(emu: RunningEmulator, entity_set: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{emu.api_url}{entity_set}", json=body, headers=emu.headers_for("app-2"))
    assert response.status_code == 204, response.text[:200]
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def _client(emu: RunningEmulator) -> DataverseClient:
    return DataverseClient(DataverseConfig(environment_url=emu.base_url), [EmulatorTokenCredential("app-1")])


def _row(sid: str, email: str | None, birth: str | None, **more: Any) -> WriteRow:
    return WriteRow(source_key=sid, values={"lastname": "Practice", "emailaddress1": email, "birthdate": birth, **more})


def test_one_match_is_matched_several_are_ambiguous_and_keyed_records_are_never_candidates(emu: RunningEmulator):
    one = _create(emu, "contacts", {"lastname": "Desk", "emailaddress1": "ONE@mail.example", "birthdate": "1980-02-03"})
    _create(emu, "contacts", {"lastname": "Twin A", "emailaddress1": "two@mail.example", "birthdate": "1990-01-01"})
    _create(emu, "contacts", {"lastname": "Twin B", "emailaddress1": "two@mail.example", "birthdate": "1990-01-01"})
    _create(emu, "contacts", {"lastname": "Other day", "emailaddress1": "three@mail.example", "birthdate": "1970-01-01"})
    _create(emu, "contacts", {"lastname": "Keyed", "emailaddress1": "four@mail.example", "birthdate": "1960-06-06",
                              "bw_sourceid": "OTHER-1"})
    shared = _create(emu, "contacts", {"lastname": "Shared", "emailaddress1": "five@mail.example",
                                       "birthdate": "1985-05-05"})
    rows = [_row("P-1", "one@mail.example", "1980-02-03"), _row("P-2", "two@mail.example", "1990-01-01"),
            _row("P-3", "three@mail.example", "1971-01-01"), _row("P-4", "four@mail.example", "1960-06-06"),
            _row("P-5", None, "1980-02-03"), _row("P-6", "five@mail.example", "1985-05-05"),
            _row("P-7", "five@mail.example", "1985-05-05")]

    async def run() -> preexisting.Matches:
        async with _client(emu) as client:
            return await find_matches(client, CONTACTS, default_mapping().table("patient"), rows)

    found = asyncio.run(run())
    assert found.matched == {"P-1": one}
    assert found.ambiguous == {"P-2": 2, "P-6": 2, "P-7": 2}
    assert shared not in found.matched.values()


def test_a_row_whose_own_record_exists_by_key_is_not_matched_again(emu: RunningEmulator):
    _create(emu, "contacts", {"lastname": "Ours", "emailaddress1": "six@mail.example", "bw_sourceid": "P-60"})
    _create(emu, "contacts", {"lastname": "Theirs", "emailaddress1": "six@mail.example"})

    async def run() -> preexisting.Matches:
        async with _client(emu) as client:
            return await find_matches(client, CONTACTS, default_mapping().table("patient"),
                                      [_row("P-60", "six@mail.example", None)])

    spec_map = default_mapping().table("patient").model_copy(update={"match": ["emailaddress1"]})
    assert asyncio.run(run()).matched == {}  # no birth date: never matched

    async def run_email_only() -> preexisting.Matches:
        async with _client(emu) as client:
            return await find_matches(client, CONTACTS, spec_map, [_row("P-60", "six@mail.example", None)])

    assert asyncio.run(run_email_only()).matched == {}  # its own record exists by key: no match


def test_many_values_are_queried_in_chunks_that_fit_a_url(emu: RunningEmulator):
    target = _create(emu, "contacts", {"lastname": "Needle", "emailaddress1": "needle@mail.example",
                                       "birthdate": "2001-01-01"})
    rows = [_row(f"P-{n}", f"somebody.with.a.long.address.{n}@mail.example", "2000-01-01") for n in range(400)]
    rows.append(_row("P-needle", "needle@mail.example", "2001-01-01"))
    chunks = preexisting._or_filters("emailaddress1", [r.values["emailaddress1"] for r in rows])
    assert len(chunks) > 1 and all(len(httpx.QueryParams({"$filter": c}).__str__()) < 8000 for c in chunks)
    before = emu.counters("app-1")["requests"]

    async def run() -> preexisting.Matches:
        async with _client(emu) as client:
            return await find_matches(client, CONTACTS, default_mapping().table("patient"), rows)

    assert asyncio.run(run()).matched == {"P-needle": target}
    assert emu.counters("app-1")["requests"] - before == len(chunks) + 1  # + the key check of the one match


def test_the_before_image_holds_old_values_nulls_and_lookups_and_the_write_sets_the_key(emu: RunningEmulator):
    account = _create(emu, "accounts", {"name": "Employer"})
    record = _create(emu, "contacts", {"lastname": "Before", "telephone1": "555-0100",
                                       "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    guarantor = _create(emu, "contacts", {"lastname": "Guarantor", "bw_sourceid": "P-900"})
    payload = {"lastname": "After", "telephone1": None, "mobilephone": "555-0199",
               "parentcustomerid_contact@odata.bind": "/contacts(bw_sourceid='P-900')",
               "overriddencreatedon": "2020-01-01T00:00:00Z"}

    async def run() -> tuple[dict[str, Any], list[preexisting.MatchedWrite]]:
        async with _client(emu) as client:
            images = await ImageReader(client, CONTACTS, "bw").read(
                "contactid", {"P-77": record}, {"P-77": {**payload, "bw_sourceid": "P-77"}},
                skip=CONTACTS.create_only)
            written = await write_matched(client, CONTACTS, [WriteRow("P-77", payload)], {"P-77": record})
            return images["P-77"], written

    image, written = asyncio.run(run())
    assert image == {"lastname": "Before", "telephone1": "555-0100", "mobilephone": None, "bw_sourceid": None,
                     "parentcustomerid_account@odata.bind": f"/accounts({account})"}
    assert [(w.source_key, w.ok) for w in written] == [("P-77", True)]
    row = emu.rows("contact")[record]
    assert (row["lastname"], row["bw_sourceid"], row["parentcustomerid"]["id"]) == ("After", "P-77", guarantor)

    # The image written back gives the record its old values, lookup to the account included.
    response = httpx.patch(f"{emu.api_url}contacts({record})", json=image,
                           headers={**emu.headers_for("app-1"), "If-Match": "*"})
    assert response.status_code == 204, response.text[:200]
    row = emu.rows("contact")[record]
    assert (row["lastname"], row["telephone1"], row.get("mobilephone"), row.get("bw_sourceid")) == \
        ("Before", "555-0100", None, None)
    assert row["parentcustomerid"] == {"id": account, "table": "account"}


def test_match_rules_are_checked_with_their_locations():
    data = default_mapping_data()
    tables = data["tables"]
    patient = next(i for i, t in enumerate(tables) if t["name"] == "patient")
    guardian = next(i for i, t in enumerate(tables) if t["name"] == "guardian")
    tables[patient]["match"] = ["emailaddress1", "nosuchcolumn", "emailaddress1"]
    tables[guardian]["match"] = ["bw_guardianisresponsible"]
    with pytest.raises(MappingInvalid) as info:
        parse_mapping(data)
    found = {(tuple(e["loc"]), e["code"]) for e in info.value.errors}
    assert (("tables", patient, "match", 1), "match_column_not_mapped") in found
    assert (("tables", patient, "match"), "duplicate_match_column") in found
    assert (("tables", guardian, "match"), "match_needs_upsert") in found
    tables[guardian]["match"] = []
    tables[patient]["match"] = ["birthdate"]
    with pytest.raises(MappingInvalid) as info:
        parse_mapping(data)
    assert [e["code"] for e in info.value.errors] == ["match_needs_string_column"]
    assert default_mapping().table("insurance_carrier").match == ["bw_name"]
