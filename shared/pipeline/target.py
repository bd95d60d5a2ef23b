"""Clients for a migration's target environment, from its `Target` and the settings alone."""

from __future__ import annotations

import asyncio
import weakref

from shared.connections import target_credential
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.governor import Governor
from shared.runtime import Runtime
from shared.state.migrations import Migration

_GOVERNORS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Governor]] = (
    weakref.WeakKeyDictionary())
"""Per event loop, one governor per (environment, application user). Dataverse's service-protection
limits are per user, and a host runs many activities at once on one loop: sharing the governor lets
one activity's 429 hold back the others, and caps their concurrency together, instead of each
activity discovering the full window with its own 429. (Keyed by loop: a governor's condition
belongs to the loop it first waited on.)"""


def shared_governors(environment_url: str, users: list[str], config: DataverseConfig) -> list[Governor]:
    """The running loop's governors for these application users of one environment (created once)."""
    per_loop = _GOVERNORS.setdefault(asyncio.get_running_loop(), {})
    return [per_loop.setdefault((environment_url, user), Governor(config.governor)) for user in users]


def dataverse_client(rt: Runtime, migration: Migration) -> DataverseClient:
    """An async Dataverse client spreading work over the migration's application users; call it inside
    the activity's event loop (the governors are shared by the loop's clients)."""
    users = migration.target.application_users or [None]
    credentials = [target_credential(rt.settings, migration.target.tenant_id, user) for user in users]
    environment = migration.target.environment_url.rstrip("/")
    config = DataverseConfig(environment_url=environment)
    try:
        governors = shared_governors(environment, [str(user) for user in users], config)
    except RuntimeError:  # no running loop (a synchronous caller): a private governor per user
        governors = None
    return DataverseClient(config, credentials, governors=governors)
