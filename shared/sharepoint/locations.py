"""Dataverse's pointers to SharePoint: the `sharepointsite`, the library location and a folder location per contact.

Creating these records does not touch SharePoint (reference/dataverse.md §8.5): the folder is made
with Graph first, then the pointer is written here. Each record is upserted by a GUID derived from
what it points at (uuid5), so running the step twice leaves exactly one record of each.
The hierarchy mirrors the built-in integration: site -> library location (relative URL = the
library's folder, `contact`) -> one location per contact folder, regarding the contact.
"""

from __future__ import annotations

import uuid

from shared.dataverse.client import DataverseClient

LOCATION_NAMESPACE = uuid.UUID("3c1b5c0e-2f7a-4e61-8f0d-5d2b9e4a7c21")
"""Namespace of the deterministic ids of site and location records. Never change it."""


def _id(*parts: str) -> str:
    return str(uuid.uuid5(LOCATION_NAMESPACE, "|".join(parts)))


def contact_folder_name(name: str, contact_id: str) -> str:
    """The built-in integration's folder name: `<primary name>_<GUID without hyphens, uppercase>`.

    The primary name of a contact is a patient name: never log the result.
    """
    cleaned = "".join(ch for ch in name if ch not in '"*:<>?/\\|#%').strip() or "contact"
    return f"{cleaned[:60]}_{contact_id.replace('-', '').upper()}"


async def ensure_site(dv: DataverseClient, absolute_url: str, name: str = "Default Site") -> str:
    """The `sharepointsite` record for a site URL (created if missing); returns its id."""
    site_id = _id("site", absolute_url.rstrip("/").lower())
    await dv.request(
        "PATCH",
        f"sharepointsites({site_id})",
        json={"name": name, "absoluteurl": absolute_url},
        headers={"Content-Type": "application/json"},
    )
    return site_id


async def ensure_library_location(
    dv: DataverseClient, site_id: str, relative_url: str = "contact", name: str = "Documents on Default Site"
) -> str:
    """The document location of the library folder under the site (the parent of every contact folder)."""
    location_id = _id("library", site_id, relative_url.lower())
    await dv.request(
        "PATCH",
        f"sharepointdocumentlocations({location_id})",
        json={
            "name": name,
            "relativeurl": relative_url,
            "parentsiteorlocation_sharepointsite@odata.bind": f"/sharepointsites({site_id})",
        },
        headers={"Content-Type": "application/json"},
    )
    return location_id


async def ensure_contact_location(
    dv: DataverseClient, parent_location_id: str, contact_id: str, folder_name: str, name: str = "Documents"
) -> str:
    """The document location regarding a contact, pointing at its folder; returns its id (idempotent)."""
    location_id = _id("contact", parent_location_id, contact_id.lower())
    await dv.request(
        "PATCH",
        f"sharepointdocumentlocations({location_id})",
        json={
            "name": name,
            "relativeurl": folder_name,
            "parentsiteorlocation_sharepointdocumentlocation@odata.bind": f"/sharepointdocumentlocations({parent_location_id})",
            "regardingobjectid_contact@odata.bind": f"/contacts({contact_id})",
            "locationtype": 0,
            "servicetype": 0,
        },
        headers={"Content-Type": "application/json"},
    )
    return location_id


__all__ = [
    "LOCATION_NAMESPACE",
    "contact_folder_name",
    "ensure_contact_location",
    "ensure_library_location",
    "ensure_site",
]
