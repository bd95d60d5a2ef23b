"""The agent's credential: a short-lived SAS that can only create and write in its migration's container.

Each migration uploads into its own container, so a container-scoped SAS reaches nothing of any
other migration. Locally (Azurite) it is a service SAS signed with the account key; in Azure, where
the account has no key, a user-delegation SAS signed through the app's managed identity.

The SAS carries `c` and `w` only: no read, list or delete. Write is needed because the agent's upload
is resumable (it re-sends a blob whose upload was cut off, `overwrite=True`), so the SAS alone could
also overwrite a committed manifest. The policy for that: when a migration starts with a bundle,
`seal_bundle` takes an infinite lease on the bundle's manifest. A leased blob cannot be overwritten or
deleted without the lease id, which only the service knows; and every data part is checked against
the manifest's sha256 when it is read, so a part replaced after the start is refused, not loaded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from pydantic import BaseModel


class UploadGrant(BaseModel):
    """What the agent needs: `python -m agent upload --bundle DIR --sas-url <upload_url>`."""

    upload_url: str
    container: str
    expires_at: datetime


def bundle_container(prefix: str, migration_id: str) -> str:
    return f"{prefix}-bundle-{migration_id}".lower()


def grant_upload(service: BlobServiceClient, prefix: str, migration_id: str, hours: float) -> UploadGrant:
    """Create the migration's bundle container if needed and sign a create/write-only SAS for it."""
    container = bundle_container(prefix, migration_id)
    try:
        service.create_container(container)
    except ResourceExistsError:
        pass
    now = datetime.now(UTC)
    expires = now + timedelta(hours=hours)
    permission = ContainerSasPermissions(create=True, write=True)
    credential = service.credential
    account_key = getattr(credential, "account_key", None)
    if account_key:
        token = generate_container_sas(service.account_name, container, account_key=account_key,
                                       permission=permission, expiry=expires, start=now - timedelta(minutes=5))
    else:
        delegation = service.get_user_delegation_key(now - timedelta(minutes=5), expires)
        token = generate_container_sas(service.account_name, container, user_delegation_key=delegation,
                                       permission=permission, expiry=expires, start=now - timedelta(minutes=5))
    url = f"{service.get_container_client(container).url}/{migration_id}?{token}"
    return UploadGrant(upload_url=url, container=container, expires_at=expires)


MANIFEST_NAME = "manifest.json"


def seal_bundle(service: BlobServiceClient, prefix: str, migration_id: str, bundle_id: str) -> str:
    """Lease the bundle's manifest for good, so no SAS can overwrite or delete it. Idempotent.

    The lease id is derived from the migration and bundle, so sealing again (a retried start) acquires
    the same lease. A lease someone else took first (the agent's SAS may lease: it has write) is
    broken and replaced by ours. Returns the lease id.
    """
    from azure.core.exceptions import ResourceExistsError as LeaseHeld

    lease_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bridgework:{migration_id}/{bundle_id}"))
    blob = service.get_blob_client(bundle_container(prefix, migration_id), f"{migration_id}/{bundle_id}/{MANIFEST_NAME}")
    try:
        blob.acquire_lease(lease_duration=-1, lease_id=lease_id)
    except LeaseHeld:
        from azure.storage.blob import BlobLeaseClient

        BlobLeaseClient(blob).break_lease(lease_break_period=0)
        blob.acquire_lease(lease_duration=-1, lease_id=lease_id)
    return lease_id
