"""Helpers the end-to-end modules share: the cutover pickup timer on the virtual clock, and the view of
the emulator's rows a rollback can be compared by."""

from __future__ import annotations

import time
from typing import Any

from devhost.testing import RunningHost

TICK = 15 * 60
"""The cutover pickup timer's period (functions/cutover.py: `0 */15 * * * *`)."""
FIRED = "timer cutover_pickup_timer fired"
"""The host's log line for each invocation of the pickup timer."""
VOLATILE = {"modifiedon", "versionnumber"}
"""What Dataverse stamps on every write, a restore too: a rollback cannot give these back."""


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
