"""Clients for a migration's target environment, from its `Target` and the settings alone."""

from __future__ import annotations

from shared.connections import target_credential
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.runtime import Runtime
from shared.state.migrations import Migration


def dataverse_client(rt: Runtime, migration: Migration) -> DataverseClient:
    """An async Dataverse client spreading work over the migration's application users."""
    users = migration.target.application_users or [None]
    credentials = [target_credential(rt.settings, migration.target.tenant_id, user) for user in users]
    return DataverseClient(DataverseConfig(environment_url=migration.target.environment_url.rstrip("/")),
                           credentials)
