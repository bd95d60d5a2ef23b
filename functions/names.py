"""Names of the orchestrators and activities, in one place, so calls and registrations agree."""

from __future__ import annotations

MIGRATION_ORCHESTRATOR = "migration_orchestrator"

RECORD_PROGRESS = "record_progress"
