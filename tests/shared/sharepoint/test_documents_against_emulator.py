"""SharePoint end to end against the emulator: site, library, contact folder, small and large uploads, 429s, location."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import run_emulator
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.errors import SharePointConflict
from shared.sharepoint.client import FRAGMENT_UNIT, GraphClient, GraphConfig
from shared.sharepoint.documents import LibraryTarget, upload_contact_document
from shared.sharepoint.locations import contact_folder_name, ensure_library_location, ensure_site

pytestmark = pytest.mark.slow

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def test_documents_land_once_in_the_contact_folder_with_a_location() -> None:
    small = b"%PDF-1.4 small test document" * 10
    large = bytes(range(256)) * 5000  # 1,280,000 bytes: four 320 KiB fragments
    with run_emulator({"time_scale": 300}) as emu:
        emu.configure(
            faults=[
                {
                    "kind": "status",
                    "status": 429,
                    "path_prefix": "/v1.0/",
                    "every": 4,
                    "times": 3,
                    "retry_after_seconds": 0.2,
                }
            ]
        )

        async def go() -> tuple[dict, GraphClient]:
            graph_cfg = GraphConfig(
                graph_url=emu.base_url,
                scope=GRAPH_SCOPE,
                simple_upload_max_bytes=100_000,
                fragment_bytes=FRAGMENT_UNIT,
                backoff_base_seconds=0.05,
            )
            async with (
                DataverseClient(
                    DataverseConfig(environment_url=emu.base_url), EmulatorTokenCredential()
                ) as dv,
                GraphClient(graph_cfg, EmulatorTokenCredential()) as graph,
            ):
                site = await graph.get_site("contoso.sharepoint.com", "sites/dental")
                drive = await graph.get_drive(site["id"], "contact")
                root = await graph.get_root(drive["id"])
                site_id = await ensure_site(dv, site["webUrl"])
                library = LibraryTarget(
                    drive_id=drive["id"],
                    folder_item_id=root["id"],
                    parent_location_id=await ensure_library_location(dv, site_id),
                )
                contact_id = await dv.create("contacts", {"firstname": "Test", "lastname": "Patient"})
                folder = contact_folder_name("Test Patient", contact_id)
                results = []
                for _ in range(2):  # the whole step run twice: same folder, same files, same location
                    for name, data in (("note.pdf", small), ("xray.dcm", large)):
                        results.append(
                            await upload_contact_document(
                                graph,
                                dv,
                                library,
                                contact_id=contact_id,
                                folder_name=folder,
                                file_name=name,
                                data=data,
                            )
                        )
                assert results[0].file_item_id == results[2].file_item_id
                assert results[1].file_item_id == results[3].file_item_id
                assert (
                    len({r.folder_item_id for r in results}) == 1
                    and len({r.location_id for r in results}) == 1
                )
                folder_item = await graph.get_json(f"drives/{drive['id']}/items/{results[0].folder_item_id}")
                assert folder_item["folder"]["childCount"] == 2
                big = await graph.get_json(f"drives/{drive['id']}/items/{results[1].file_item_id}")
                assert big["size"] == len(large)
                assert big["file"]["hashes"]["sha256Hash"] == hashlib.sha256(large).hexdigest().upper()
                with pytest.raises(SharePointConflict):
                    await graph.upload(
                        drive["id"], results[0].folder_item_id, "note.pdf", small, conflict="fail"
                    )
                assert graph.throttled >= 1
                return {"location": results[0].location_id, "contact": contact_id}, graph

        ids, _ = asyncio.run(go())
        locations = emu.rows("sharepointdocumentlocation")
        assert locations[ids["location"]]["regardingobjectid"]["id"] == ids["contact"]
        assert len(locations) == 2  # the library location and the contact's
