"""Discovery: profile an uploaded bundle into a report of counts, patterns, warnings and a load estimate."""

from __future__ import annotations

from shared.discovery.estimate import EstimateSettings, LoadEstimate, WriteLoad, estimate_load
from shared.discovery.output import report_documents, write_report
from shared.discovery.profile import profile_bundle
from shared.discovery.report import DiscoveryReport, DiscoveryWarning, facts_for_proposer
from shared.discovery.summary import render_summary

__all__ = [
    "DiscoveryReport",
    "DiscoveryWarning",
    "EstimateSettings",
    "LoadEstimate",
    "WriteLoad",
    "estimate_load",
    "facts_for_proposer",
    "profile_bundle",
    "render_summary",
    "report_documents",
    "write_report",
]
