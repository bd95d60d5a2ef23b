"""The Bridgework function app on the local host, against the session's Azurite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.testing import RunningHost, run_host
from shared.identity import principal_header


@pytest.fixture(scope="module")
def app_host(storage_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    hub = "bw" + uuid.uuid4().hex[:10]
    log_path = Path(tmp_path_factory.mktemp("app")) / "host.log"
    env = {"BRIDGEWORK_TABLE_PREFIX": hub}
    with run_host("function_app:app", storage_connection_string, hub, clock="virtual", env=env,
                  log_path=log_path) as host:
        yield host


def as_tenant(tenant: str, roles: tuple[str, ...] = ("operator",)) -> dict[str, str]:
    return {"x-ms-client-principal": principal_header(tenant, f"user-of-{tenant}", list(roles))}
