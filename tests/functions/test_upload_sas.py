"""The agent's SAS against a real Azurite: create and write in its own container only, and an applied
bundle's manifest cannot be overwritten or deleted once the migration started with it (sealed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient

from agent.upload import parse_sas_url
from shared.state.upload_sas import bundle_container, grant_upload, seal_bundle

MIGRATION = "m-0123456789abcdef"


@pytest.fixture
def granted(storage_connection_string: str, unique_name: str):
    service = BlobServiceClient.from_connection_string(storage_connection_string)
    grant = grant_upload(service, unique_name, MIGRATION, hours=24)
    agent = ContainerClient.from_container_url(parse_sas_url(grant.upload_url).container_url)
    return service, grant, agent, unique_name


def _refused(call) -> int:
    with pytest.raises(HttpResponseError) as raised:
        call()
    return raised.value.status_code


def test_the_sas_lasts_at_most_a_day_and_names_only_create_and_write(granted):
    _, grant, _, prefix = granted
    assert grant.container == bundle_container(prefix, MIGRATION)
    assert "sp=cw&" in grant.upload_url + "&"
    assert grant.expires_at <= datetime.now(UTC) + timedelta(hours=24, seconds=5)


def test_the_sas_writes_but_cannot_read_list_or_delete(granted):
    service, _, agent, _ = granted
    name = f"{MIGRATION}/b-1/tables/patient/part-0001.jsonl.gz"
    agent.get_blob_client(name).upload_blob(b"data", overwrite=True)
    assert service.get_blob_client(agent.container_name, name).download_blob().readall() == b"data"
    assert _refused(lambda: agent.get_blob_client(name).download_blob().readall()) == 403
    assert _refused(lambda: agent.get_blob_client(name).get_blob_properties()) == 403
    assert _refused(lambda: list(agent.list_blobs())) == 403
    assert _refused(lambda: agent.get_blob_client(name).delete_blob()) == 403


def test_the_sas_cannot_write_outside_its_container(granted):
    service, _, agent, prefix = granted
    other = bundle_container(prefix, "m-fedcba9876543210")
    service.create_container(other)
    # Same signature, another container in the URL: the service SAS is bound to its container.
    foreign_url = agent.url.replace(agent.container_name, other) + "?" + agent.url.split("?", 1)[1]
    foreign = ContainerClient.from_container_url(foreign_url)
    assert _refused(lambda: foreign.get_blob_client("x").upload_blob(b"x")) == 403
    assert not list(service.get_container_client(other).list_blobs())


def test_a_sealed_manifest_cannot_be_overwritten_or_deleted_by_the_sas(granted):
    service, _, agent, prefix = granted
    manifest = f"{MIGRATION}/b-1/manifest.json"
    agent.get_blob_client(manifest).upload_blob(b'{"v": 1}', overwrite=True)
    # Before the start the agent may still re-send it (a resumed upload).
    agent.get_blob_client(manifest).upload_blob(b'{"v": 2}', overwrite=True)
    lease = seal_bundle(service, prefix, MIGRATION, "b-1")
    assert seal_bundle(service, prefix, MIGRATION, "b-1") == lease  # a retried start seals again
    assert _refused(lambda: agent.get_blob_client(manifest).upload_blob(b'{"v": 3}', overwrite=True)) == 412
    assert _refused(lambda: agent.get_blob_client(manifest).delete_blob()) in (403, 412)
    assert service.get_blob_client(agent.container_name, manifest).download_blob().readall() == b'{"v": 2}'
    # Other bundles of the same migration stay writable.
    agent.get_blob_client(f"{MIGRATION}/b-2/manifest.json").upload_blob(b"{}", overwrite=True)


def test_a_lease_the_agent_took_first_is_broken_by_the_seal(granted):
    service, _, agent, prefix = granted
    manifest = f"{MIGRATION}/b-1/manifest.json"
    blob = agent.get_blob_client(manifest)
    blob.upload_blob(b"{}", overwrite=True)
    blob.acquire_lease(lease_duration=-1)  # write permits a lease: the agent could try to keep the blob
    seal_bundle(service, prefix, MIGRATION, "b-1")
    assert _refused(lambda: blob.upload_blob(b"{}", overwrite=True)) == 412
