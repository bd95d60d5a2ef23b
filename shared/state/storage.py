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


def _client(settings: Settings, kind: type, uri: str | None, setting: str):  # type: ignore[no-untyped-def]
    if settings.storage_connection_string is not None:
        return kind.from_connection_string(settings.storage_connection_string.get_secret_value())
    if uri:
        return kind(uri, credential=_credential(settings))
    raise ConfigurationError(
        f"no storage configured: set AzureWebJobsStorage (a connection string) or "
        f"AzureWebJobsStorage__{setting} (with a managed identity)"
    )


def table_service(settings: Settings) -> TableServiceClient:
    """The Table service, by connection string (Azurite) or by managed identity (Azure)."""
    return _client(settings, TableServiceClient, settings.table_service_uri, "tableServiceUri")


def blob_service(settings: Settings) -> BlobServiceClient:
    """The Blob service, by connection string (Azurite) or by managed identity (Azure)."""
    return _client(settings, BlobServiceClient, settings.blob_service_uri, "blobServiceUri")
