"""Table and Blob service clients from the settings: a connection string locally, identity in Azure."""

from __future__ import annotations

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from shared.errors import ConfigurationError
from shared.settings import Settings


def _credential(settings: Settings):  # type: ignore[no-untyped-def]
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return DefaultAzureCredential()


def table_service(settings: Settings) -> TableServiceClient:
    """The Table service, by connection string (Azurite) or by managed identity (Azure)."""
    if settings.storage_connection_string is not None:
        return TableServiceClient.from_connection_string(settings.storage_connection_string.get_secret_value())
    if settings.table_service_uri:
        return TableServiceClient(settings.table_service_uri, credential=_credential(settings))
    raise ConfigurationError(
        "no Table Storage configured: set AzureWebJobsStorage (a connection string) or "
        "AzureWebJobsStorage__tableServiceUri (with a managed identity)"
    )


def blob_service(settings: Settings) -> BlobServiceClient:
    """The Blob service, by connection string (Azurite) or by managed identity (Azure)."""
    if settings.storage_connection_string is not None:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string.get_secret_value())
    if settings.blob_service_uri:
        return BlobServiceClient(settings.blob_service_uri, credential=_credential(settings))
    raise ConfigurationError(
        "no Blob Storage configured: set AzureWebJobsStorage (a connection string) or "
        "AzureWebJobsStorage__blobServiceUri (with a managed identity)"
    )
