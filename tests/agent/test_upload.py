"""The upload takes a SAS URL only, sends the manifest last, resumes after a hard kill and retries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ServiceRequestError

from agent.upload import JOURNAL_NAME, parse_sas_url, upload_bundle
from shared.dentrix.manifest import Manifest
from shared.dentrix.reader import BundleReader
from shared.errors import BundleCredentialRefused, BundleHashMismatch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle(small_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    return copy


def _blob_count(bundle: Path) -> int:
    m = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    return sum(len(t.parts) + len(t.keys) + len(t.changes) for t in m.tables) + len(m.file_index.parts) + m.file_index.count + 1


def _names(container) -> set[str]:
    return {b.name for b in container.list_blobs()}


@pytest.mark.parametrize("credential", [
    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==;EndpointSuffix=core.windows.net",
    "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2024&sig=x",
    "https://a.blob.core.windows.net/bundles",  # no signature
    "http://a.blob.core.windows.net/bundles?sv=1&sig=x",  # plain http off the emulator
    "https://a.blob.core.windows.net/?sv=1&sig=x",  # no container
])
def test_anything_but_a_sas_url_is_refused_without_echoing_it(credential: str):
    with pytest.raises(BundleCredentialRefused) as caught:
        parse_sas_url(credential)
    assert "abc==" not in str(caught.value) and "sig=x" not in str(caught.value)


def test_sas_url_parts_for_azure_and_the_emulator():
    azure = parse_sas_url("https://acct.blob.core.windows.net/bundles/mig-7?sv=1&sp=cw&sig=abc")
    assert azure.container_url == "https://acct.blob.core.windows.net/bundles?sv=1&sp=cw&sig=abc"
    assert azure.path_prefix == "mig-7"
    local = parse_sas_url("http://127.0.0.1:10000/devstoreaccount1/bundles?sv=1&sig=abc")
    assert local.container_url == "http://127.0.0.1:10000/devstoreaccount1/bundles?sv=1&sig=abc"
    assert local.path_prefix == ""


def test_upload_killed_midway_resumes_and_sends_only_the_missing_blobs(bundle: Path, sas_url_for):
    url, container = sas_url_for("/mig-kill")
    total = _blob_count(bundle)
    command = [sys.executable, "-m", "agent", "upload", "--bundle", str(bundle), "--sas-url", url,
               "--concurrency", "1"]
    first = subprocess.run([*command, "--fail-after", "7"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 70, first.stderr  # died hard, as a killed process would
    names = _names(container)
    assert len(names) == 7
    assert not any(n.endswith("manifest.json") for n in names)  # the cloud never sees a half bundle

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"uploaded {total - 7} blobs" in second.stdout and "skipped 7 already present" in second.stdout
    assert "upload: " in second.stderr  # plain progress lines when not on a terminal
    assert len(_names(container)) == total

    bundle_id = json.loads((bundle / "manifest.json").read_text())["bundle_id"]
    reader = BundleReader.from_container(container, f"mig-kill/{bundle_id}/")
    assert reader.verify().files_checked == reader.manifest.file_index.count > 0

    third = upload_bundle(bundle, url)
    assert (third.uploaded, third.skipped) == (0, total)


def test_blob_whose_recorded_hash_differs_is_sent_again(bundle: Path, sas_url_for):
    url, container = sas_url_for()
    upload_bundle(bundle, url, migration_id="m1")
    journal = bundle / JOURNAL_NAME
    lines = journal.read_text().splitlines()
    first = json.loads(lines[0])
    # a later record wins: say the first blob went up with other bytes than the bundle now holds
    journal.write_text("\n".join(lines[1:] + [json.dumps({**first, "sha256": "0" * 64})]) + "\n")
    again = upload_bundle(bundle, url, migration_id="m1")
    assert again.uploaded == 1


def test_local_file_damaged_after_extract_is_not_uploaded(bundle: Path, sas_url_for):
    url, container = sas_url_for()
    m = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    part = bundle / m.tables[0].parts[0].file
    part.write_bytes(part.read_bytes() + b"x")
    with pytest.raises(BundleHashMismatch):
        upload_bundle(bundle, url, migration_id="m2", concurrency=1)
    assert not any(n.endswith("manifest.json") for n in _names(container))


def test_transient_errors_are_retried(bundle: Path, sas_url_for, monkeypatch):
    from azure.storage.blob import BlobClient

    url, container = sas_url_for()
    real = BlobClient.upload_blob
    failures = {"left": 3}

    def flaky(self, *args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ServiceRequestError("connection reset")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "upload_blob", flaky)
    monkeypatch.setattr("agent.upload.time.sleep", lambda s: None)
    report = upload_bundle(bundle, url, migration_id="m3", concurrency=1)
    assert failures["left"] == 0
    assert report.uploaded == _blob_count(bundle)
    assert os.path.exists(bundle / JOURNAL_NAME)


def test_large_blob_goes_up_in_blocks_each_with_its_md5(practice_factory, tmp_path: Path, sas_url_for,
                                                        storage_connection_string: str, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    from agent.extract import extract

    bundle = tmp_path / "big-parts"
    extract(str(practice_factory(40, 11)), bundle, part_rows=100_000, bundle_id="blocks")
    monkeypatch.setattr("agent.upload.BLOCK_SIZE", 8 * 1024)
    url, container = sas_url_for()
    upload_bundle(bundle, url, migration_id="m4")
    part = "m4/blocks/tables/proc_log/part-00000.jsonl.gz"
    size = (bundle / "tables/proc_log/part-00000.jsonl.gz").stat().st_size
    assert size > 8 * 1024
    service = BlobServiceClient.from_connection_string(storage_connection_string)
    committed, _ = service.get_blob_client(container.container_name, part).get_block_list("committed")
    assert len(committed) == -(-size // (8 * 1024))


def test_with_a_readable_sas_blobs_lost_in_the_cloud_are_sent_again(bundle: Path, sas_url_for,
                                                                    storage_connection_string: str):
    from azure.storage.blob import BlobServiceClient

    url, container = sas_url_for(read=True)
    first = upload_bundle(bundle, url, migration_id="m5")
    service = BlobServiceClient.from_connection_string(storage_connection_string)
    lost = sorted(n for n in _names(container) if "/files/" in n)[0]
    service.get_blob_client(container.container_name, lost).delete_blob()
    again = upload_bundle(bundle, url, migration_id="m5")
    assert (again.uploaded, again.skipped) == (1, first.uploaded - 1)
    assert lost in _names(container)
