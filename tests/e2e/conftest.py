"""Fixtures the end-to-end modules share, so the suite pays once for what they have in common.

- `e2e_stack`: one local stack (emulator with `FAST_EMULATOR`, local host on the real clock, the session's
  Azurite) for the package: it stops after the last end-to-end test, before tests/chaos. A module gets a
  new empty environment for its practice with `fresh_environment(e2e_stack, practice)` at its start; the
  host's state (migrations, journal, artifacts, orchestrations) stays, each migration under its own id, so
  a test names its own migration and never lists all of them. A module that changes the host (its
  environment, a kill) leaves it running as it found it. Virtual-clock modules start their own stack.
- `practice_25`: the 25-patient practice (seed 11, parts of 40 rows) and its bundle, read only.
- `migrated_practice`: that practice migrated once in `e2e_stack` (the API's default sample stage, then
  the full run), with the emulator's state from before (`before`) and a snapshot from after. A module
  that uses it calls `restore()` first: emulator, users, journal and schema plan as the migration left
  them. Tests may change the emulator and the journal (restore undoes both), but must not re-run this
  migration or write its other artifacts: start a migration of your own for that.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from devtools import azurite
from devtools.canonical import canonical_state, now_iso
from devtools.stack import (
    FAST_EMULATOR,
    LocalStack,
    drive_migration,
    fresh_environment,
    local_stack,
    synthetic_practice,
    users_for_practice,
)
from shared.pipeline.schema import PLAN
from shared.runtime import Runtime
from shared.state.journal import JournalEntry


@pytest.fixture(scope="package")
def e2e_stack(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One emulator and local host for every real-clock end-to-end module."""
    work = Path(tmp_path_factory.mktemp("e2e-stack"))
    with local_stack(work, storage=azurite, emulator_config=FAST_EMULATOR) as stack:
        yield stack


@dataclass
class Practice:
    database: Path
    bundle: Path


@pytest.fixture(scope="package")
def practice_25(tmp_path_factory: pytest.TempPathFactory) -> Practice:
    """25 patients, seed 11, bundle parts of 40 rows. Read only: copy it before editing the database."""
    work = Path(tmp_path_factory.mktemp("practice-25"))
    return Practice(*synthetic_practice(work, 25, 11, part_rows=40))


@dataclass
class MigratedPractice:
    stack: LocalStack
    practice: Path
    bundle: Path
    result: dict[str, Any]
    before: dict[str, Any]
    """The emulator's dump from before the migration."""
    started: str
    """UTC time (ISO, seconds) right before the migration was created."""
    snapshot: str = ""
    journal: list[JournalEntry] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def migration_id(self) -> str:
        return str(self.result["migration_id"])

    @cached_property
    def rt(self) -> Runtime:
        return self.stack.runtime()

    def canonical(self) -> dict[str, dict[str, Any]]:
        """The emulator's records now, by source key, those the migration created (after `started`)."""
        return canonical_state(self.stack.emulator.dump(), created_after=self.started)

    def keep(self) -> None:
        """Remember the state to go back to (called once, right after the migration)."""
        self.snapshot = self.stack.emulator.snapshot()
        rt = self.rt
        self.journal = list(rt.journal.entries(self.migration_id))
        self.plan = rt.artifacts.get_json(self.migration_id, PLAN)

    def restore(self) -> MigratedPractice:
        """The environment (its users, records, schema and files), the journal and the schema plan exactly
        as the migration left them."""
        self.stack.emulator.configure(users=users_for_practice(self.practice))
        self.stack.emulator.restore(self.snapshot)
        rt = self.rt
        rt.journal.record(self.journal)
        rt.artifacts.put_json(self.migration_id, PLAN, self.plan)
        return self


@pytest.fixture(scope="package")
def migrated_practice(e2e_stack: LocalStack, practice_25: Practice) -> MigratedPractice:
    stack = fresh_environment(e2e_stack, practice_25.database)
    before = stack.emulator.dump()
    started = now_iso()
    result = drive_migration(stack, practice_25.bundle, timeout=300)
    assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
    migrated = MigratedPractice(stack, practice_25.database, practice_25.bundle, result, before, started)
    migrated.keep()
    return migrated
