"""The Bridgework function app on the local host, against the session's Azurite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.testing import RunningHost
from shared.identity import key_fingerprint, principal_header

AUTOMATION_TENANT = "tenant-automation"


@pytest.fixture(scope="module")
def app_host(storage_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    hub = "bw" + uuid.uuid4().hex[:10]
    log_path = Path(tmp_path_factory.mktemp("app")) / "host.log"
    host = RunningHost("function_app:app", storage_connection_string, hub, "virtual",
                       {"BRIDGEWORK_TABLE_PREFIX": hub}, log_path)
    # The local host knows one key (its own); mapping it makes it an automation key of one tenant, as a
    # named host key would be in Azure. Requests that also carry a principal are the principal's.
    host.extra_env["BRIDGEWORK_AUTOMATION_KEYS"] = json.dumps(
        {key_fingerprint(host.key): {"tenant_id": AUTOMATION_TENANT, "role": "operator", "name": "nightly"}})
    host.start()
    try:
        yield host
    finally:
        host.stop()


def as_tenant(tenant: str, roles: tuple[str, ...] = ("operator",)) -> dict[str, str]:
    return {"x-ms-client-principal": principal_header(tenant, f"user-of-{tenant}", list(roles))}
