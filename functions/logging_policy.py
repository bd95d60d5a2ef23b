"""What the worker may log: transport loggers that print request URLs are held to warnings.

httpx logs every request's URL at INFO, and some URLs carry patient data (a SharePoint folder is named
after the contact, `<full name>_<id>`, as Dynamics names document locations). In Azure those lines go
to Application Insights. Bridgework's own loggers log ids, counts and codes only; the transport's
URL lines are not needed for operating the service (the Durable history and our progress rows are).
Found by tests/e2e/test_phi_markers.py.
"""

from __future__ import annotations

import logging

QUIETED = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy")


def apply() -> None:
    """Hold the URL-logging transport loggers to WARNING (idempotent)."""
    for name in QUIETED:
        logging.getLogger(name).setLevel(logging.WARNING)
