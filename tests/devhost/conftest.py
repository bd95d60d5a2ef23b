"""A local host running the sample app on a virtual clock, shared by the tests of one module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.testing import RunningHost, run_host

SAMPLE_APP = "tests.devhost.sample_app:app"


@pytest.fixture(scope="module")
def host(storage_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    hub = "h" + uuid.uuid4().hex[:10]
    log_path = Path(tmp_path_factory.mktemp("devhost")) / "host.log"
    with run_host(SAMPLE_APP, storage_connection_string, hub, clock="virtual",
                  env={"SAMPLE_LEDGER_TABLE": f"ledger{hub}"}, log_path=log_path) as running:
        yield running


def run(coroutine):
    """Run one SDK client coroutine (the client is async-only)."""
    return asyncio.run(coroutine)
