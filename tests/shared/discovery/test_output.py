"""The report and its summary land in Blob Storage (Azurite), and a second run overwrites rather than duplicates."""

from __future__ import annotations

from azure.storage.blob import BlobServiceClient

from shared.dentrix.reader import BundleReader
from shared.discovery import EstimateSettings, profile_bundle
from shared.discovery.output import REPORT_JSON, REPORT_SUMMARY, write_report
from shared.discovery.report import DiscoveryReport
from shared.discovery.summary import render_summary
from tests.shared.discovery.conftest import Case


def test_report_is_written_to_blob_twice_without_duplicates_and_reads_back(
    case: Case, storage_connection_string: str, unique_name: str
) -> None:
    container = BlobServiceClient.from_connection_string(storage_connection_string).create_container(
        unique_name
    )
    names = write_report(container, "mig-1/discovery", case.report)
    assert names == [f"mig-1/discovery/{REPORT_JSON}", f"mig-1/discovery/{REPORT_SUMMARY}"]
    assert write_report(container, "mig-1/discovery/", case.report) == names
    assert sorted(b.name for b in container.list_blobs()) == sorted(names)
    stored = DiscoveryReport.model_validate_json(container.download_blob(names[0]).readall())
    assert stored == case.report
    assert container.download_blob(names[1]).readall().decode("utf-8") == render_summary(case.report)
    assert (
        container.get_blob_client(names[0]).get_blob_properties().content_settings.content_type
        == "application/json"
    )


def test_a_bundle_in_blob_storage_profiles_the_same_as_on_disk(
    case: Case, storage_connection_string: str, unique_name: str
) -> None:
    container = BlobServiceClient.from_connection_string(storage_connection_string).create_container(
        unique_name
    )
    for path in case.bundle.rglob("*"):
        if path.is_file():
            container.upload_blob(f"mig-1/b/{path.relative_to(case.bundle).as_posix()}", path.read_bytes())
    report = profile_bundle(BundleReader.from_container(container, "mig-1/b/"), settings=EstimateSettings())
    assert report == case.report
