"""The agent's credential: a short-lived SAS that can only create and write in its migration's container.

Each migration uploads into its own container, so a container-scoped SAS reaches nothing of any
other migration. Locally (Azurite) it is a service SAS signed with the account key; in Azure, where
the account has no key, a user-delegation SAS signed through the app's managed identity.
"""

from __future__ import annotations

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
