"""A local host running the sample app on a virtual clock, shared by the tests of one module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devhost.testing import RunningHost, run_host

SAMPLE_APP = "tests.devhost.sample_app:app"


def ledger_counts(storage: str, table: str, kind: str) -> dict[str, int]:
    """How many times each activity input of `kind` really ran (from the sample app's ledger)."""
    service = TableServiceClient.from_connection_string(storage)
    service.create_table_if_not_exists(table)
    counts: dict[str, int] = {}
    for row in service.get_table_client(table).query_entities("PartitionKey eq @kind", parameters={"kind": kind}):
        key = row["RowKey"].rsplit("-", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def host(storage_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    hub = "h" + uuid.uuid4().hex[:10]
    log_path = Path(tmp_path_factory.mktemp("devhost")) / "host.log"
    with run_host(SAMPLE_APP, storage_connection_string, hub, clock="virtual",
                  env={"SAMPLE_LEDGER_TABLE": f"ledger{hub}"}, log_path=log_path) as running:
        running.ledger_table = f"ledger{hub}"
        yield running
