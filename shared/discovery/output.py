"""Write a discovery report to Blob Storage as JSON plus its readable summary (idempotent: same names, overwritten)."""

from __future__ import annotations

from typing import Any

from shared.discovery.report import DiscoveryReport
from shared.discovery.summary import render_summary

REPORT_JSON = "discovery.json"
REPORT_SUMMARY = "discovery.md"


def report_documents(report: DiscoveryReport) -> dict[str, tuple[bytes, str]]:
    """file name -> (content, content type) for the report and its summary."""
    return {
        REPORT_JSON: (report.model_dump_json(indent=2).encode("utf-8"), "application/json"),
        REPORT_SUMMARY: (render_summary(report).encode("utf-8"), "text/markdown; charset=utf-8"),
    }


def write_report(container: Any, prefix: str, report: DiscoveryReport) -> list[str]:
    """Upload both documents under `prefix` in an azure.storage.blob ContainerClient; returns the blob names.

    Overwrites: running discovery twice leaves the same two blobs. Raises the SDK's errors unchanged
    (the activity's retry policy decides about transient ones).
    """
    from azure.storage.blob import ContentSettings

    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    names = []
    for name, (content, content_type) in report_documents(report).items():
        container.upload_blob(base + name, content, overwrite=True,
                              content_settings=ContentSettings(content_type=content_type))
        names.append(base + name)
    return names
