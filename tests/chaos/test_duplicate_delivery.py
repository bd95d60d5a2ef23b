"""The local host's duplicate delivery (`DEVHOST_DUPLICATE_ACTIVITIES`): activities really run twice with
the same input, and the orchestration sees the first result only."""

from __future__ import annotations

import uuid
from pathlib import Path

from devhost.testing import run_host, run_sync
from tests.devhost.conftest import SAMPLE_APP, ledger_counts

FAN_OUT = 30


def _fan_out(storage: str, tmp_path: Path, rate: str) -> tuple[dict, dict[int, int], int]:
    hub = "d" + uuid.uuid4().hex[:10]
    ledger = f"ledger{hub}"
    env = {"SAMPLE_LEDGER_TABLE": ledger, "DEVHOST_DUPLICATE_ACTIVITIES": rate, "DEVHOST_DUPLICATE_SEED": "7"}
    with run_host(SAMPLE_APP, storage, hub, env=env, log_path=tmp_path / "host.log") as host:
        instance_id = run_sync(host.client().start_new("fan_out", client_input=FAN_OUT))
        status = host.wait_for(instance_id)
        duplicated = host.http().get("/admin/host/status").json()["duplicatedActivities"]
    runs = {int(key): count for key, count in ledger_counts(storage, ledger, "square").items()}
    return status, runs, duplicated


def test_every_activity_delivered_twice_runs_twice_and_the_result_is_unchanged(
        storage_connection_string: str, tmp_path: Path):
    status, runs, duplicated = _fan_out(storage_connection_string, tmp_path, "1.0")
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == sum(i * i for i in range(FAN_OUT))
    assert runs == {i: 2 for i in range(FAN_OUT)}
    assert duplicated == FAN_OUT


def test_a_partial_rate_duplicates_some_activities_only(storage_connection_string: str, tmp_path: Path):
    status, runs, duplicated = _fan_out(storage_connection_string, tmp_path, "0.5")
    assert status["output"] == sum(i * i for i in range(FAN_OUT))
    twice = [i for i, count in runs.items() if count == 2]
    assert set(runs) == set(range(FAN_OUT)) and set(runs.values()) <= {1, 2}
    assert 0 < len(twice) < FAN_OUT and len(twice) == duplicated
