"""Document-location records in the emulator's Dataverse: site -> library -> contact folder, idempotent."""

from __future__ import annotations

import asyncio

import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.sharepoint.locations import (
    contact_folder_name,
    ensure_contact_location,
    ensure_library_location,
    ensure_site,
)

pytestmark = pytest.mark.slow


def test_locations_are_created_once_and_point_at_the_contact() -> None:
    with run_emulator({"time_scale": 300}) as emu:

        async def go() -> tuple[str, str, str, str]:
            async with DataverseClient(
                DataverseConfig(environment_url=emu.base_url), EmulatorTokenCredential()
            ) as dv:
                contact_id = await dv.create("contacts", {"firstname": "Test", "lastname": "Patient"})
                folder = contact_folder_name("Test Patient", contact_id)
                ids = []
                for _ in range(2):  # a rerun must not add records
                    site = await ensure_site(dv, "https://contoso.sharepoint.com/sites/dental")
                    library = await ensure_library_location(dv, site)
                    location = await ensure_contact_location(dv, library, contact_id, folder)
                    ids.append((site, library, location))
                assert ids[0] == ids[1]
                return (*ids[0], contact_id)

        site, library, location, contact_id = asyncio.run(go())
        sites = emu.rows("sharepointsite")
        locations = emu.rows("sharepointdocumentlocation")
        assert list(sites) == [site]
        assert set(locations) == {library, location}
        row = locations[location]
        assert row["regardingobjectid"]["id"] == contact_id and row["regardingobjectid"]["table"] == "contact"
        assert row["parentsiteorlocation"]["id"] == library
        assert row["relativeurl"].endswith("_" + contact_id.replace("-", "").upper())
        assert locations[library]["parentsiteorlocation"] == {"id": site, "table": "sharepointsite"}


def test_contact_folder_name_follows_the_built_in_pattern() -> None:
    name = contact_folder_name('Ana "Ruiz"/x', "9f8e7d6c-0000-1111-2222-333344445555")
    assert name == "Ana Ruizx_9F8E7D6C000011112222333344445555"
