"""The local host runs each Durable pattern through the SDK's replay engine, driven by the SDK's client."""

from __future__ import annotations

import httpx
import pytest

from devhost.testing import RunningHost, run_sync
from tests.devhost.conftest import ledger_counts


def _events(status: dict, event_type: str) -> list[dict]:
    return [e for e in status.get("historyEvents", []) if e["EventType"] == event_type]


def test_fan_out_of_200_activities_fans_in_to_the_right_sum(host: RunningHost):
    instance_id = run_sync(host.client().start_new("fan_out", client_input=200))
    status = host.wait_for(instance_id)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == sum(i * i for i in range(200))
    history = host.status(instance_id, history=True)
    assert len(_events(history, "TaskScheduled")) == 200
    assert len(_events(history, "TaskCompleted")) == 200


def test_sub_orchestrations_with_and_without_explicit_ids_return_to_the_parent(host: RunningHost):
    instance_id = run_sync(host.client().start_new("parent"))
    status = host.wait_for(instance_id)
    assert status["output"] == 2 * ((0 + 1 + 4) + (0 + 1 + 4 + 9))
    child = host.status(f"{instance_id}-child")
    assert child["runtimeStatus"] == "Completed" and child["output"] == 14
    created = _events(host.status(instance_id, history=True), "SubOrchestrationInstanceCreated")
    assert {e["InstanceId"] for e in created} >= {f"{instance_id}-child"}


def test_retry_recovers_after_failures_with_the_sdks_task_id_sequence(host: RunningHost):
    client = host.client()
    instance_id = run_sync(client.start_new("retrying", client_input={"interval_ms": 5000, "attempts": 4,
                                                                        "key": "recovers:2"}))
    for _ in range(3):  # each retry waits 5 s on the virtual clock
        assert host.wait_idle()
        host.advance(5)
    status = host.wait_for(instance_id)
    assert status["output"] == {"ok": "recovers ok after 3"}
    history = host.status(instance_id, history=True)
    # As in the SDK's own tests: attempt 0, timer 1, attempt 2, timer 3, attempt 4.
    assert [e["EventId"] for e in _events(history, "TaskScheduled")] == [0, 2, 4]
    assert [e["EventId"] for e in _events(history, "TimerCreated")] == [1, 3]


def test_retry_exhaustion_surfaces_the_activity_error_after_the_last_timer(host: RunningHost):
    instance_id = run_sync(host.client().start_new("retrying", client_input={"interval_ms": 1000, "attempts": 3,
                                                                               "key": "exhausts:99"}))
    for _ in range(4):
        assert host.wait_idle()
        host.advance(1)
    status = host.wait_for(instance_id)
    assert status["output"]["failed"].startswith("attempt 3 of exhausts failed on purpose")
    history = host.status(instance_id, history=True)
    assert [e["EventId"] for e in _events(history, "TaskScheduled")] == [0, 2, 4]
    assert [e["EventId"] for e in _events(history, "TimerCreated")] == [1, 3, 5]
    assert ledger_counts(host.storage, host.ledger_table, "flaky")["exhausts"] == 3


def test_approval_event_wins_and_cancels_its_timeout_timer(host: RunningHost):
    client = host.client()
    instance_id = run_sync(client.start_new("approval", client_input=24))
    assert host.wait_idle()
    assert host.status(instance_id)["customStatus"] == {"stage": "waiting"}
    run_sync(client.raise_event(instance_id, "Approval", {"user": "operator-7"}))
    status = host.wait_for(instance_id)
    assert status["output"] == {"approved": True, "by": {"user": "operator-7"}}
    assert status["customStatus"] == {"stage": "approved"}
    host.advance(25 * 3600)  # past the deadline: the cancelled timer must never fire
    assert host.wait_idle()
    assert _events(host.status(instance_id, history=True), "TimerFired") == []


def test_approval_times_out_when_no_event_arrives(host: RunningHost):
    instance_id = run_sync(host.client().start_new("approval", client_input=1))
    assert host.wait_idle()
    assert host.status(instance_id)["runtimeStatus"] == "Running"
    host.advance(3600)
    status = host.wait_for(instance_id)
    assert status["output"] == {"approved": False, "reason": "timeout"}
    assert len(_events(host.status(instance_id, history=True), "TimerFired")) == 1


def test_event_raised_before_the_orchestrator_waits_is_buffered(host: RunningHost):
    client = host.client()
    instance_id = run_sync(client.start_new("early_event"))
    assert host.wait_idle()
    run_sync(client.raise_event(instance_id, "Go", "green"))  # the orchestrator is still on its timer
    assert host.wait_idle()
    assert host.status(instance_id)["runtimeStatus"] == "Running"
    host.advance(3600)
    status = host.wait_for(instance_id)
    assert status["output"] == {"first": 2, "gate": "green"}


def test_continue_as_new_loops_over_timer_windows_on_the_virtual_clock(host: RunningHost):
    instance_id = run_sync(host.client().start_new("ticking", client_input={"value": 1, "windows": 0, "limit": 4}))
    for window in range(1, 5):
        assert host.wait_idle()
        assert host.status(instance_id)["runtimeStatus"] == "Running"
        host.advance(15 * 60)
        assert host.wait_idle()
        if window < 4:
            assert host.status(instance_id)["customStatus"] == {"windows": window}
    status = host.wait_for(instance_id)
    assert status["output"] == {"windows": 4, "value": 16}
    # Only the last generation's history is kept, as continue-as-new intends.
    history = host.status(instance_id, history=True)
    assert len(_events(history, "TimerFired")) == 1


def test_activity_failure_runs_compensation_then_fails_with_the_error(host: RunningHost):
    instance_id = run_sync(host.client().start_new("compensating", client_input=["a", "b", "boom", "c"]))
    status = host.wait_for(instance_id)
    assert status["runtimeStatus"] == "Failed"
    assert "disk full" in status["output"]
    released = ledger_counts(host.storage, host.ledger_table, "release")
    assert released == {"a": 1, "b": 1}
    assert "c" not in ledger_counts(host.storage, host.ledger_table, "reserve")


def test_non_deterministic_orchestrator_fails_naming_itself_and_the_position(host: RunningHost):
    instance_id = run_sync(host.client().start_new("nondeterministic"))
    status = host.wait_for(instance_id)
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic orchestrator 'nondeterministic'" in status["output"]
    assert "at action 1" in status["output"]


def test_terminate_stops_a_waiting_instance_and_late_events_are_gone(host: RunningHost):
    client = host.client()
    instance_id = run_sync(client.start_new("approval", client_input=24))
    assert host.wait_idle()
    run_sync(client.terminate(instance_id, "operator cancelled"))
    status = host.wait_for(instance_id)
    assert status["runtimeStatus"] == "Terminated"
    with pytest.raises(Exception, match="is gone"):
        run_sync(client.raise_event(instance_id, "Approval", True))


def test_timer_trigger_fires_on_the_virtual_clock(host: RunningHost):
    client = host.client()
    before = {s.instance_id for s in run_sync(client.get_status_all()) if s.name == "fan_out"}
    host.advance(15 * 60)
    assert host.wait_idle()
    after = [s for s in run_sync(client.get_status_all()) if s.name == "fan_out" and s.instance_id not in before]
    assert len(after) == 1 and after[0].output == 0 + 1


def test_http_starter_returns_management_links_that_work_with_plain_http(host: RunningHost):
    response = host.http().post("/api/start/fan_out", json=5)
    assert response.status_code == 202
    links = response.json()
    status_url = links["statusQueryGetUri"]
    assert status_url.startswith(host.url) and response.headers["Location"] == status_url
    host.wait_for(links["id"])
    status = httpx.get(status_url).json()  # the link carries its own key, as in Azure
    assert status["runtimeStatus"] == "Completed" and status["output"] == 30


def test_function_keys_are_enforced_like_the_real_host(host: RunningHost):
    assert httpx.post(f"{host.url}/api/start/fan_out", json=1).status_code == 401
    assert httpx.get(f"{host.url}/api/echo/hello").text == "hello"  # anonymous route
    assert httpx.get(f"{host.url}/api/echo").text == "nothing"  # optional route parameter
    assert httpx.get(f"{host.url}/runtime/webhooks/durabletask/instances/").status_code == 401


def test_management_api_queries_by_status_and_purges(host: RunningHost):
    client = host.client()
    instance_id = run_sync(client.start_new("fan_out", client_input=1))
    host.wait_for(instance_id)
    from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

    completed = run_sync(client.get_status_by(runtime_status=[OrchestrationRuntimeStatus.Completed]))
    assert instance_id in {s.instance_id for s in completed}
    assert all(s.runtime_status == OrchestrationRuntimeStatus.Completed for s in completed)
    result = run_sync(client.purge_instance_history(instance_id))
    assert result.instances_deleted == 1
    assert not run_sync(client.get_status(instance_id))


def test_starting_an_unknown_orchestrator_is_refused_clearly(host: RunningHost):
    with pytest.raises(Exception, match="doesn't exist"):
        run_sync(host.client().start_new("no_such_orchestrator"))


def test_ended_instances_leave_the_hosts_memory_and_are_read_back_from_storage(host: RunningHost):
    """A long-running host must not keep every instance it ever ran (the soak saw it creep per migration)."""
    cached = host.http().get("/admin/host/status").json()["cachedInstances"]  # other tests' waiting instances
    ids = [run_sync(host.client().start_new("parent")) for _ in range(3)]
    for instance_id in ids:
        assert host.wait_for(instance_id)["runtimeStatus"] == "Completed"
    assert host.wait_idle()
    assert host.http().get("/admin/host/status").json()["cachedInstances"] <= cached  # 9 instances ran
    for instance_id in ids:  # read back from storage, history and children included, and not cached again
        history = host.status(instance_id, history=True)
        assert history["output"] == 2 * ((0 + 1 + 4) + (0 + 1 + 4 + 9))
        assert {e["InstanceId"] for e in _events(history, "SubOrchestrationInstanceCreated")} >= {f"{instance_id}-child"}
        assert host.status(f"{instance_id}-child")["runtimeStatus"] == "Completed"
    assert host.http().get("/admin/host/status").json()["cachedInstances"] <= cached
