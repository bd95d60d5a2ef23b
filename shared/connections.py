"""Credentials and clients for a migration's target: Dataverse and Graph, by configuration alone.

Production builds azure-identity credentials for the customer's tenant (the service's multi-tenant
app registration, with a secret from Key Vault or a federated credential, or a managed identity for a
single customer). Dev and tests set `BRIDGEWORK_DATAVERSE_AUTH_MODE=factory` and name a factory
(the emulator's credential) in `BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY`: no code changes either way.
"""

from __future__ import annotations

import importlib
from typing import Any

from shared.errors import ConfigurationError
from shared.settings import Settings


def target_credential(settings: Settings, tenant_id: str | None, app_user: str | None = None) -> Any:
    """A TokenCredential for one application user of the customer's tenant.

    Raises ConfigurationError naming the missing setting.
    """
    mode = settings.dataverse_auth_mode
    if mode == "factory":
        if not settings.dataverse_credential_factory:
            raise ConfigurationError("BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY is required in factory mode")
        module_name, _, attribute = settings.dataverse_credential_factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(app_user or "app-1")
    from azure.identity import (
        ClientAssertionCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
    )

    if mode == "managed_identity":
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    client_id = app_user or settings.dataverse_client_id
    if not client_id or not tenant_id:
        raise ConfigurationError("BRIDGEWORK_DATAVERSE_CLIENT_ID and the migration's tenant id are required")
    if mode == "client_secret":
        if settings.dataverse_client_secret is None:
            raise ConfigurationError("BRIDGEWORK_DATAVERSE_CLIENT_SECRET is required in client_secret mode")
        return ClientSecretCredential(tenant_id, client_id, settings.dataverse_client_secret.get_secret_value())
    identity = ManagedIdentityCredential(client_id=settings.dataverse_federated_identity_client_id)

    def assertion() -> str:
        return identity.get_token("api://AzureADTokenExchange/.default").token

    return ClientAssertionCredential(tenant_id, client_id, assertion)
