"""Helpers the end-to-end modules share: delta bundles and the cutover pickup timer on the virtual clock,
and the view of the emulator's rows a rollback can be compared by."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.extract import extract
from agent.synth import files_root_for
from agent.upload import upload_bundle
from devhost.testing import RunningHost
from devtools import azurite
from devtools.stack import FAST_EMULATOR, LocalStack, QuietProgress, practice_stack, synthetic_practice

TICK = 15 * 60
"""The cutover pickup timer's period (functions/cutover.py: `0 */15 * * * *`)."""
FIRED = "timer cutover_pickup_timer fired"
"""The host's log line for each invocation of the pickup timer."""
VOLATILE = {"modifiedon", "versionnumber"}
"""What Dataverse stamps on every write, a restore too: a rollback cannot give these back."""


@contextlib.contextmanager
def virtual_clock_practice(storage: azurite.AzuriteProcess, work: Path, patients: int, seed: int
                           ) -> Iterator[tuple[LocalStack, Path, Path]]:
    """A synthetic practice (bundle parts of 40 rows) and a local stack for it on the virtual clock, the
    emulator with `FAST_EMULATOR`, as the cutover modules use: (stack, practice database, bundle folder)."""
    practice, bundle = synthetic_practice(work, patients, seed, part_rows=40)
    with practice_stack(work, practice, storage, emulator_config=FAST_EMULATOR, clock="virtual") as stack:
        yield stack, practice, bundle


def extract_delta(practice: Path, base: Path, out_dir: Path, *, part_rows: int) -> tuple[str, Path]:
    """The agent's delta bundle of the synthetic practice's database against the bundle `base`:
    (bundle id, bundle folder)."""
    info = extract(str(practice), out_dir, base=base, files_root=files_root_for(practice), part_rows=part_rows)
    return json.loads((info.bundle_dir / "manifest.json").read_text())["bundle_id"], info.bundle_dir


def upload_delta(stack: LocalStack, migration_id: str, bundle_dir: Path) -> dict[str, Any]:
    """Ask the API for a delta upload as the operator (it must be granted) and upload the bundle with the
    SAS it returned; the grant."""
    grant = stack.request("POST", f"/migrations/{migration_id}/deltas")
    assert grant.status_code == 200, grant.text
    upload_bundle(bundle_dir, grant.json()["upload"]["upload_url"], progress=QuietProgress())
    return dict(grant.json())


def tick(host: RunningHost, seconds: float = TICK, *, timeout: float = 180) -> None:
    """Move the virtual clock, wait until the pickup timer has fired (read from the host's log), then idle."""
    log = host.log_path
    assert log is not None
    fired = log.read_text().count(FIRED)
    host.advance(seconds)
    deadline = time.monotonic() + 60
    while log.read_text().count(FIRED) <= fired:
        assert time.monotonic() < deadline, "the pickup timer did not fire"
        time.sleep(0.05)
    assert host.wait_idle(timeout=timeout)


def restored_view(rows: dict[str, dict[str, Any]], restored: set[str], before: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, Any]]:
    """Records by table (empty tables left out); a restored record without what a restore cannot give back:
    its row version stamps, and the nulls of columns the schema build added that it did not have before."""
    out: dict[str, dict[str, Any]] = {}
    for table, records in rows.items():
        if not records:
            continue
        out[table] = {}
        for record_id, row in records.items():
            if record_id in restored:
                known = before.get(table, {}).get(record_id, {})
                row = {k: v for k, v in row.items() if k not in VOLATILE and (k in known or v is not None)}
            out[table][record_id] = row
    return out
