"""Bundle fixtures shared with the agent tests (a synthetic practice extracted once per session)."""

from __future__ import annotations

from tests.agent.conftest import practice_factory, sas_url_for, small_bundle  # noqa: F401
