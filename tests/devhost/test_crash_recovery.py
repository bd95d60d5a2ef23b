"""A host killed with SIGKILL mid-fan-out resumes from storage: nothing completed runs again."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from azure.data.tables import TableServiceClient

from devhost.protocol import HistoryEventType
from devhost.testing import run_host, run_sync
from tests.devhost.conftest import SAMPLE_APP, ledger_counts

FAN_OUT = 200


def _persisted_completions(storage: str, hub: str, instance_id: str) -> set[int]:
    """The activity inputs whose TaskCompleted the killed host had written to its history table."""
    table = TableServiceClient.from_connection_string(storage).get_table_client(f"{hub}History")
    events = [json.loads(row["Event"]) for row in table.query_entities("PartitionKey eq @pk",
                                                                           parameters={"pk": instance_id})]
    inputs = {e["EventId"]: json.loads(e["Input"]) for e in events
              if e["EventType"] == HistoryEventType.TASK_SCHEDULED}
    return {inputs[e["TaskScheduledId"]] for e in events if e["EventType"] == HistoryEventType.TASK_COMPLETED}


def test_sigkill_mid_fan_out_then_restart_finishes_with_completed_activities_run_once(
    storage_connection_string: str, tmp_path: Path
):
    hub = "k" + uuid.uuid4().hex[:10]
    ledger = f"ledger{hub}"
    env = {"SAMPLE_LEDGER_TABLE": ledger, "SAMPLE_ACTIVITY_SECONDS": "0.05"}
    with run_host(SAMPLE_APP, storage_connection_string, hub, env=env, log_path=tmp_path / "host.log") as host:
        instance_id = run_sync(host.client().start_new("fan_out", client_input=FAN_OUT))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = ledger_counts(storage_connection_string, ledger, "square")
            if len(done) >= FAN_OUT // 3:
                break
            time.sleep(0.05)
        host.kill()
        completed_before_kill = _persisted_completions(storage_connection_string, hub, instance_id)
        assert 0 < len(completed_before_kill) < FAN_OUT, "the kill must land mid-fan-out"

        host.start()  # same task hub, new process
        status = host.wait_for(instance_id)

    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == sum(i * i for i in range(FAN_OUT))
    runs = {int(key): count for key, count in ledger_counts(storage_connection_string, ledger, "square").items()}
    assert set(runs) == set(range(FAN_OUT)), "every activity ran"
    assert all(runs[i] == 1 for i in completed_before_kill), "a completed activity never runs again"
    rerun = sorted(i for i, count in runs.items() if count > 1)
    print(f"killed after {len(completed_before_kill)} persisted completions; re-ran in-flight: {len(rerun)}")
