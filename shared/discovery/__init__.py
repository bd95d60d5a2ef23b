"""Discovery: profile an uploaded bundle into a report of counts, patterns, warnings and a load estimate."""

from __future__ import annotations

from shared.discovery.estimate import EstimateSettings, LoadEstimate, WriteLoad, estimate_load
from shared.discovery.profile import profile_bundle
from shared.discovery.report import DiscoveryReport, facts_for_proposer

__all__ = [
    "DiscoveryReport", "EstimateSettings", "LoadEstimate", "WriteLoad", "estimate_load", "facts_for_proposer",
    "profile_bundle",
]
