"""The host counts the Storage requests its functions send (devhost/storage_calls.py), for the benchmark's
requests per record: by service, method and table or container, exactly, through the SDKs' own transports."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableServiceClient as AsyncTableServiceClient
from azure.storage.blob import BlobServiceClient

from devhost import storage_calls
from devhost.testing import RunningHost, run_sync

BLOB_UA = "azsdk-python-storage-blob/12.27.0 Python/3.11.2 (Linux)"
TABLE_UA = "azsdk-python-data-tables/12.7.0 Python/3.11.2 (Linux)"


@pytest.mark.parametrize(("method", "url", "agent", "key"), [
    ("PUT", "http://127.0.0.1:10000/devstoreaccount1/bw-bundle-m1/b1/files/ab12", BLOB_UA, "blob PUT bw-bundle-m1"),
    ("PUT", "https://10.1.2.3/devstoreaccount1/bw-bundle-m1/b1/manifest.json", BLOB_UA, "blob PUT bw-bundle-m1"),
    ("GET", "https://acct.blob.core.windows.net/bw-migrations/m1/audit.jsonl?comp=x", BLOB_UA, "blob GET bw-migrations"),
    ("GET", "http://localhost:10000/devstoreaccount1/?comp=list", BLOB_UA, "blob GET (service)"),
    ("GET", "http://127.0.0.1:10002/devstoreaccount1/bwjournal02()?$filter=x", TABLE_UA, "table GET bwjournal02"),
    ("PATCH", "https://acct.table.core.windows.net/bwprogress(PartitionKey='a',RowKey='b')", TABLE_UA,
     "table PATCH bwprogress"),
    ("POST", "http://127.0.0.1:10002/devstoreaccount1/$batch", TABLE_UA, "table POST $batch"),
    ("POST", "http://127.0.0.1:10002/devstoreaccount1/Tables", TABLE_UA, "table POST Tables"),
])
def test_a_request_is_keyed_by_service_method_and_table_or_container(method, url, agent, key):
    assert storage_calls.request_key(method, url, agent) == key


def test_requests_of_other_clients_are_not_counted():
    assert storage_calls.request_key("POST", "https://org.crm.dynamics.com/api/data/v9.2/contacts", "python-httpx/0.28") is None


def test_sync_and_async_sdk_clients_are_counted_once_per_request(storage_connection_string: str):
    storage_calls.install()
    storage_calls.install()  # twice: still one count per request
    name = "calls" + uuid.uuid4().hex[:10]
    before = storage_calls.snapshot()
    container = BlobServiceClient.from_connection_string(storage_connection_string).create_container(name)
    container.upload_blob("a/one.bin", b"x" * 10)
    assert container.download_blob("a/one.bin").readall() == b"x" * 10
    table = TableServiceClient.from_connection_string(storage_connection_string).create_table(name)
    table.create_entity({"PartitionKey": "p", "RowKey": "1"})

    async def read_async() -> int:
        async with AsyncTableServiceClient.from_connection_string(storage_connection_string) as service:
            return len([e async for e in service.get_table_client(name).query_entities("PartitionKey eq 'p'")])

    assert asyncio.run(read_async()) == 1
    # Exact for this test's container and table; another thread of the process may create tables too.
    sent = storage_calls.difference(storage_calls.snapshot(), before)
    assert {key: n for key, n in sent.items() if key.endswith(f" {name}")} == {
        f"blob PUT {name}": 2, f"blob GET {name}": 1, f"table POST {name}": 1, f"table GET {name}": 1}
    assert sent["table POST Tables"] >= 1


def test_the_host_reports_what_its_activities_sent(host: RunningHost):
    def ledger_inserts() -> int:
        return host.http().get("/admin/host/status").json()["storageRequests"].get(f"table POST {host.ledger_table}", 0)

    before = ledger_inserts()
    instance_id = run_sync(host.client().start_new("fan_out", client_input=6))
    assert host.wait_for(instance_id)["output"] == sum(i * i for i in range(6))
    assert ledger_inserts() - before == 6  # one insert per activity run, no more
