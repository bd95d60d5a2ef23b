"""Every setting the app reads, in one place (the only module that touches the environment).

Sources, highest precedence first: arguments passed to `Settings(...)`, then environment variables
(the Function App's application settings in Azure, `local.settings.json` values under the local host).
Bridgework's own settings carry the `BRIDGEWORK_` prefix; storage follows the Functions convention
(`AzureWebJobsStorage` as a connection string locally, or `AzureWebJobsStorage__blobServiceUri` /
`__tableServiceUri` with a managed identity in Azure, where no key exists).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AutomationKey(BaseModel):
    """A function key given to a customer's automation: the tenant it acts for and its one role."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=64)
    role: Literal["viewer", "operator"] = "viewer"
    name: str = Field(default="automation", min_length=1, max_length=64)
    """Who the key was issued to; it becomes the caller's user id (`key:<name>`) in audit fields."""


class Settings(BaseSettings):
    """Bridgework's settings. Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(env_prefix="BRIDGEWORK_", env_nested_delimiter="__", extra="ignore")

    environment: str = "local"
    """`local` (Azurite, emulator, local host) or the name of an Azure environment."""

    storage_connection_string: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage", "BRIDGEWORK_STORAGE_CONNECTION_STRING")
    )
    """A storage connection string (Azurite locally). Leave unset in Azure: identity is used instead."""

    blob_service_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__blobServiceUri", "BRIDGEWORK_BLOB_SERVICE_URI")
    )
    """Blob endpoint for identity-based access (Azure)."""

    table_service_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__tableServiceUri", "BRIDGEWORK_TABLE_SERVICE_URI"),
    )
    """Table endpoint for identity-based access (Azure)."""

    managed_identity_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__clientId", "BRIDGEWORK_MANAGED_IDENTITY_CLIENT_ID"),
    )
    """Client id of the user-assigned managed identity (Azure)."""

    task_hub: str = "bridgework"
    """Durable task hub name; also the prefix of the local host's own tables."""

    table_prefix: str = "bw"
    """Prefix of Bridgework's Table Storage tables and Blob containers, so deployments can share an account."""

    dataverse_auth_mode: Literal["client_secret", "federated", "managed_identity", "factory"] = "managed_identity"
    """How the service authenticates to customers' Dataverse and Graph: its multi-tenant app registration
    with a secret (from Key Vault) or a federated credential, a managed identity (single customer), or
    `factory` (dev and tests: `dataverse_credential_factory` builds the credential, e.g. the emulator's)."""

    dataverse_client_id: str | None = None
    """Client id of Bridgework's app registration (the application user in the customer's environment)."""

    dataverse_client_secret: SecretStr | None = None
    """Its secret: in Azure a Key Vault reference resolved by the platform; never stored anywhere else."""

    dataverse_federated_identity_client_id: str | None = None
    """Managed identity whose token is the federated assertion (federated mode)."""

    dataverse_credential_factory: str | None = None
    """`module:callable` taking (app_user) and returning a TokenCredential; only for `factory` mode."""

    key_vault_uri: str | None = None
    """The app's Key Vault (customer secrets, if any are ever accepted, go there only)."""

    load_bundle_bytes_in_flight: int = Field(default=1_500_000, ge=1)
    """Bundle bytes (parts as stored, gzip) the load batches of one process hold at once
    (shared/pipeline/in_flight.py): what bounds the worker's memory whatever the practice's size. A batch
    holds about 80-145 times its part's stored size at its peak; 1.5 MB is two to three full patient parts
    or seven ledger parts (bench/README.md has the figures)."""

    note_attachment_limit: int = Field(default=5_242_880, ge=1)
    """Largest note attachment as Base64 (the environment's `maxuploadfilesize`; 5 MB by default, an
    admin may raise it to 128 MB). Larger files are listed as skipped `too_large`, never dropped silently."""

    upload_sas_hours: float = Field(default=24.0, gt=0, le=24.0)
    """Lifetime of the agent's write-only upload SAS (at most 24 hours; renewable through the API)."""

    automation_keys: dict[str, AutomationKey] = Field(default_factory=dict)
    """Function keys mapped to a tenant, as JSON in `BRIDGEWORK_AUTOMATION_KEYS`:
    `{"sha256:<hex of the key>": {"tenant_id": "...", "role": "operator", "name": "nightly-sync"}}`.
    Only the key's sha256 is stored here, so the setting itself grants nothing if it leaks."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
