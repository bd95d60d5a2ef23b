"""A local Dataverse Web API v9.2 + Microsoft Graph (SharePoint) emulator for development and tests only.

Public entry points: `python -m emulator` (CLI), `emulator.testing.run_emulator` (tests),
`emulator.credentials.EmulatorTokenCredential` / `AsyncEmulatorTokenCredential` (azure-core credentials),
`emulator.config.EmulatorConfig`, `emulator.throttle.upper_bound_records_per_second`. See README.md.
"""

from __future__ import annotations

__all__: list[str] = []
