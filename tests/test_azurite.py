"""The Azurite launcher starts a real emulator the current storage SDKs can use."""

from __future__ import annotations

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient


def test_current_storage_sdks_work_against_the_started_azurite(storage_connection_string: str, unique_name: str):
    blobs = BlobServiceClient.from_connection_string(storage_connection_string)
    container = blobs.create_container(unique_name)
    container.upload_blob("probe.txt", b"ok")
    assert container.download_blob("probe.txt").readall() == b"ok"

    tables = TableServiceClient.from_connection_string(storage_connection_string)
    table = tables.create_table(unique_name)
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})
    assert table.get_entity("p", "r")["n"] == 1
