"""One patient document into SharePoint: the contact's folder, the file, and the Dataverse location pointing at it.

Order matters for idempotency: folder (ensure), file (upload with `replace`, so a rerun overwrites
the same file), then the location record (upsert by a derived id). A crash between steps leaves
nothing that a rerun would duplicate.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.dataverse.client import DataverseClient
from shared.sharepoint.client import ConflictBehavior, GraphClient
from shared.sharepoint.locations import ensure_contact_location


class LibraryTarget(BaseModel):
    """Where contact folders live: the drive and its root folder for contacts, and its Dataverse location."""

    drive_id: str
    folder_item_id: str
    """Graph item id of the library folder that holds one folder per contact (e.g. the drive root)."""
    parent_location_id: str
    """`sharepointdocumentlocation` id of that library folder (see locations.ensure_library_location)."""


class DocumentResult(BaseModel):
    contact_id: str
    folder_item_id: str
    file_item_id: str
    size: int
    location_id: str


async def upload_contact_document(
    graph: GraphClient,
    dv: DataverseClient,
    library: LibraryTarget,
    *,
    contact_id: str,
    folder_name: str,
    file_name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    conflict: ConflictBehavior = "replace",
) -> DocumentResult:
    """Ensure the contact's folder, upload the file into it, ensure the location regarding the contact.

    Raises SharePointError / DataverseError subclasses (shared/errors.py). Folder and file names may be
    patient names: they appear in no message.
    """
    folder = await graph.ensure_folder(library.drive_id, library.folder_item_id, folder_name)
    item = await graph.upload(
        library.drive_id, folder["id"], file_name, data, conflict=conflict, content_type=content_type
    )
    location_id = await ensure_contact_location(dv, library.parent_location_id, contact_id, folder_name)
    return DocumentResult(
        contact_id=contact_id,
        folder_item_id=folder["id"],
        file_item_id=item["id"],
        size=int(item.get("size", len(data))),
        location_id=location_id,
    )


__all__ = ["DocumentResult", "LibraryTarget", "upload_contact_document"]
