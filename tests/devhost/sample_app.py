"""A function app that exercises every Durable pattern the local host must run (test-only).

Activities record each invocation in the table named by the SAMPLE_LEDGER_TABLE setting, so tests can
count how many times each one really ran.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func
from azure.data.tables import TableServiceClient

bp = df.Blueprint()


def _ledger():
    service = TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    return service.create_table_if_not_exists(os.environ.get("SAMPLE_LEDGER_TABLE", "ledger"))


def _record(kind: str, key: str) -> None:
    _ledger().create_entity({"PartitionKey": kind, "RowKey": f"{key}-{uuid.uuid4().hex}"})


# Activities ---------------------------------------------------------------------------------------

@bp.activity_trigger(input_name="n")
def square(n: int) -> int:
    _record("square", str(n))
    time.sleep(float(os.environ.get("SAMPLE_ACTIVITY_SECONDS", "0")))
    return n * n


@bp.activity_trigger(input_name="n")
async def double(n: int) -> int:
    return 2 * n


@bp.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails until it has been called `fail_times` times for this key (counted in the ledger)."""
    name, _, fail_times = key.partition(":")
    _record("flaky", name)
    calls = sum(1 for _ in _ledger().query_entities("PartitionKey eq 'flaky'")
                if _["RowKey"].startswith(f"{name}-"))
    if calls <= int(fail_times):
        raise RuntimeError(f"attempt {calls} of {name} failed on purpose")
    return f"{name} ok after {calls}"


@bp.activity_trigger(input_name="step")
def reserve(step: str) -> str:
    _record("reserve", step)
    if step == "boom":
        raise ValueError("disk full")
    return step


@bp.activity_trigger(input_name="step")
def release(step: str) -> str:
    _record("release", step)
    return step


# Orchestrators ------------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity("square", i) for i in range(count)])
    return sum(results)


@bp.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    children = [
        context.call_sub_orchestrator("fan_out", 3),
        context.call_sub_orchestrator("fan_out", 4, instance_id=f"{context.instance_id}-child"),
    ]
    results = yield context.task_all(children)
    doubled = yield context.call_activity("double", results[0] + results[1])
    return doubled


@bp.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=spec["interval_ms"],
                              max_number_of_attempts=spec["attempts"])
    try:
        result = yield context.call_activity_with_retry("flaky", options, spec["key"])
        return {"ok": result}
    except Exception as exc:
        return {"failed": str(exc).splitlines()[0]}


@bp.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    deadline = context.current_utc_datetime + timedelta(hours=context.get_input() or 24)
    timer = context.create_timer(deadline)
    event = context.wait_for_external_event("Approval")
    context.set_custom_status({"stage": "waiting"})
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        context.set_custom_status({"stage": "approved"})
        return {"approved": True, "by": event.result}
    context.set_custom_status({"stage": "timed out"})
    return {"approved": False, "reason": "timeout"}


@bp.orchestration_trigger(context_name="context")
def early_event(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("double", 1)
    # The test raises "Go" while this timer runs, so the event surely arrives before the wait.
    yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    gate = yield context.wait_for_external_event("Go")
    return {"first": first, "gate": gate}


@bp.orchestration_trigger(context_name="context")
def ticking(context: df.DurableOrchestrationContext):
    state = context.get_input()
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=15))
    value = yield context.call_activity("double", state["value"])
    windows = state["windows"] + 1
    context.set_custom_status({"windows": windows})
    if windows >= state["limit"]:
        return {"windows": windows, "value": value}
    context.continue_as_new({"value": value, "windows": windows, "limit": state["limit"]})
    return None


@bp.orchestration_trigger(context_name="context")
def compensating(context: df.DurableOrchestrationContext):
    done = []
    try:
        for step in context.get_input():
            yield context.call_activity("reserve", step)
            done.append(step)
    except Exception:
        for step in reversed(done):
            yield context.call_activity("release", step)
        raise
    return done


@bp.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    # Wrong on purpose: the real clock and a random id change on every replay.
    yield context.call_activity("double", 1)
    yield context.call_activity("double", uuid.uuid4().int % 1000)
    return "unreachable"


# Triggers -----------------------------------------------------------------------------------------

@bp.route(route="start/{name}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["name"], client_input=req.get_json() if body else None)
    return client.create_check_status_response(req, instance_id)


@bp.route(route="echo/{word?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("word", "nothing"), status_code=200)


@bp.timer_trigger(schedule="0 */15 * * * *", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def every_quarter_hour(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await client.start_new("fan_out", client_input=2)


app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
