"""Cutover, delta pickups and go-live: HTTP routes, the 15-minute timer, the cutover orchestration and
its activities (the engine is shared/pipeline/cutover.py and shared/pipeline/reconcile.py).

    POST /migrations/{id}/cutover             open the window after the full load ({"hours": 24-48, "deletions": ...})
    GET  /migrations/{id}/cutover             the window: applied deltas and their reports, what waits and why
    POST /migrations/{id}/deltas              a write-only SAS for the next delta and the bundle to diff against
    POST /migrations/{id}/go-live             apply what is pending, close the window, reconcile
    GET  /migrations/{id}/reconciliation      the reconciliation report: JSON, or ?format=csv|html (or by Accept)
    POST /migrations/{id}/reconciliation      reconcile again (after the window closed)

One cutover orchestration per migration, instance `<migration>:cutover`, applies every delta: the timer
only wakes it (or starts it again if it stopped), so two ticks never apply one delta twice.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel

from functions import names
from functions.api import WrongStage, _load, idempotent
from functions.http import api_route, json_response, problem, read_model, stored_report
from functions.openapi import documented
from shared.pipeline import cutover, load
from shared.pipeline import reconcile as recon
from shared.runtime import runtime
from shared.state.migrations import Migration
from shared.state.upload_sas import UploadGrant, grant_upload

bp = df.Blueprint()

PICKUP_SCHEDULE = "0 */15 * * * *"
"""Every 15 minutes (six-field NCRONTAB, seconds first)."""
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
_RUNNING = ("Running", "Pending")


def cutover_instance(migration_id: str) -> str:
    return f"{migration_id}:cutover"


def reconcile_instance(migration_id: str) -> str:
    return f"{migration_id}:reconcile"


def _closed(migration: Migration) -> func.HttpResponse:
    assert migration.cutover is not None
    return problem(409, "cutover_closed", "The cutover window is closed",
                   f"the cutover of migration {migration.migration_id} closed "
                   f"({migration.cutover.closed_reason}) at {migration.cutover.closed_at}: no delta is accepted "
                   f"after go-live; the reconciliation report is at /api/migrations/{migration.migration_id}"
                   f"/reconciliation")


async def _ensure_running(client: df.DurableOrchestrationClient, migration: Migration) -> str:
    """Start the migration's cutover orchestration unless it runs (a stopped one is started again: every
    step of it is idempotent)."""
    instance = cutover_instance(migration.migration_id)
    status = await client.get_status(instance)
    if status and status.runtime_status and status.runtime_status.value in _RUNNING:
        return "running"
    await client.start_new(names.CUTOVER_ORCHESTRATOR, instance_id=instance,
                           client_input={"migration_id": migration.migration_id, "tenant_id": migration.tenant_id})
    return "started"


# -- HTTP ----------------------------------------------------------------------------------------------------


class DeltaGrant(BaseModel):
    """What the agent needs for the next delta: extract with `--base <the folder of base_bundle_id>`, then
    upload with `upload.upload_url`."""

    base_bundle_id: str
    upload: UploadGrant


@bp.route(route="migrations/{migration_id}/cutover", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/cutover", "Open the cutover window after the full load "
            "(delta pickups every 15 minutes until go-live)", role="operator", request=cutover.CutoverRequest,
            responses={202: cutover.CutoverStatus}, idempotent=True, errors=(409,))
@api_route
@idempotent
async def open_cutover(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
    request = read_model(req, cutover.CutoverRequest)
    if migration.cutover is not None and migration.cutover.status == "closed":
        return _closed(migration)
    if migration.cutover is None:
        status = await client.get_status(migration.instance_id) if migration.instance_id else None
        stage = (status.custom_status or {}).get("stage") if status and isinstance(status.custom_status, dict) \
            else None
        if not status or not status.runtime_status or status.runtime_status.value != "Completed" or stage != "done":
            raise WrongStage("the full load is not done yet: the cutover opens after the migration completed")
    rt = runtime()
    try:
        migration = cutover.open_cutover(rt, migration, request, datetime.now(UTC))
    except cutover.CutoverClosed:
        return _closed(rt.migrations.get(migration.tenant_id, migration.migration_id))
    await _ensure_running(client, migration)
    return json_response(cutover.cutover_status(rt, migration), status=202)


@bp.route(route="migrations/{migration_id}/cutover", methods=["GET"])
@documented("GET", "migrations/{migration_id}/cutover", "The cutover window: applied deltas with their reports, "
            "deltas waiting (and why), refused ones", role="viewer", responses={200: cutover.CutoverStatus})
@api_route
async def get_cutover(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    return json_response(cutover.cutover_status(runtime(), migration))


@bp.route(route="migrations/{migration_id}/deltas", methods=["POST"])
@documented("POST", "migrations/{migration_id}/deltas", "A write-only SAS for the next delta bundle and the "
            "bundle to extract it against (409 cutover_closed after go-live)", role="operator",
            responses={200: DeltaGrant}, errors=(409,))
@api_route
async def request_delta(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
    if migration.cutover is None:
        raise WrongStage("no cutover window is open: open it with POST /cutover after the full load")
    if migration.cutover.status == "closed":
        return _closed(migration)
    rt = runtime()
    grant = grant_upload(rt.blobs, rt.settings.table_prefix, migration.migration_id, rt.settings.upload_sas_hours)
    return json_response(DeltaGrant(base_bundle_id=cutover.next_base(rt, migration), upload=grant))


@bp.route(route="migrations/{migration_id}/go-live", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/go-live", "Apply the pending deltas, close the cutover window "
            "and reconcile", role="operator", responses={202: cutover.CutoverStatus}, idempotent=True, errors=(409,))
@api_route
@idempotent
async def go_live(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
    if migration.cutover is not None and migration.cutover.status == "closed":
        return _closed(migration)
    rt = runtime()
    try:
        migration = cutover.request_go_live(rt, migration)
    except cutover.CutoverClosed:
        return _closed(rt.migrations.get(migration.tenant_id, migration.migration_id))
    if await _ensure_running(client, migration) == "running":
        await client.raise_event(cutover_instance(migration.migration_id), names.GO_LIVE_EVENT, {})
    return json_response(cutover.cutover_status(rt, migration), status=202)


@bp.route(route="migrations/{migration_id}/reconciliation", methods=["GET"])
@documented("GET", "migrations/{migration_id}/reconciliation", "The go-live reconciliation (JSON, CSV or HTML)",
            role="viewer", responses={200: recon.Reconciliation}, alternatives=("text/csv", "text/html"))
@api_route
async def get_reconciliation(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    return stored_report(req, migration.migration_id,
                         {"json": recon.REPORT_JSON, "csv": recon.REPORT_CSV, "html": recon.REPORT_HTML})


@bp.route(route="migrations/{migration_id}/reconciliation", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/reconciliation", "Reconcile again (after the cutover closed)",
            role="operator", responses={202: "object"}, idempotent=True, errors=(409,))
@api_route
@idempotent
async def rerun_reconciliation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
    if migration.cutover is None or migration.cutover.status != "closed":
        raise WrongStage("the reconciliation runs at go-live: close the cutover window first")
    instance = reconcile_instance(migration.migration_id)
    status = await client.get_status(instance)
    if status and status.runtime_status and status.runtime_status.value in _RUNNING:
        raise WrongStage("a reconciliation of this migration is already running")
    await client.start_new(names.RECONCILE_ORCHESTRATOR, instance_id=instance,
                           client_input={"migration_id": migration.migration_id, "tenant_id": migration.tenant_id})
    return json_response({"instance_id": instance}, status=202)


# -- the timer -----------------------------------------------------------------------------------------------


@bp.function_name(names.CUTOVER_PICKUP_TIMER)
@bp.timer_trigger(schedule=PICKUP_SCHEDULE, arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def cutover_pickup_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Wake the cutover orchestration of every open window with a delta ready (or a go-live to finish)."""
    rt = runtime()
    # The scan reads each open window's manifests: off the event loop the HTTP triggers share.
    for tenant_id, migration_id in await asyncio.to_thread(cutover.due_for_pickup, rt):
        migration = rt.migrations.get(tenant_id, migration_id)
        if await _ensure_running(client, migration) == "running":
            await client.raise_event(cutover_instance(migration_id), names.DELTAS_ARRIVED_EVENT, {})


# -- orchestrations ------------------------------------------------------------------------------------------


def _utc(moment: datetime | str) -> datetime:
    """Aware UTC (the SDK's clock may be naive; stored times are aware)."""
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _status(context: df.DurableOrchestrationContext, stage: str, **extra: object) -> None:
    context.set_custom_status({"stage": stage, **extra})


def _apply_delta(context: df.DurableOrchestrationContext, ref: dict, bundle_id: str):
    """One delta: its batches wave by wave, the second pass, deletions, then the watermark."""
    job = {**ref, "bundle_id": bundle_id}
    plan = yield context.call_activity_with_retry(names.PLAN_DELTA, ACTIVITY_RETRY, job)
    if plan.get("refused"):  # failed verification: listed as refused, the chain waits for a good one
        return plan
    counts: dict[str, dict[str, int]] = {}
    for wave in plan["waves"]:
        results = yield context.task_all([
            context.call_activity_with_retry(names.DELTA_LOAD_BATCH, ACTIVITY_RETRY,
                                             {**job, "table": table["table"], "part": part})
            for table in wave for part in range(table["parts"])
        ])
        for result in results:
            into = counts.setdefault(result["table"], {})
            for key, value in result["counts"].items():
                into[key] = into.get(key, 0) + value
    if plan.get("refresh"):  # parents whose children alone changed: written again from the current source
        results = yield context.task_all([
            context.call_activity_with_retry(names.DELTA_LOAD_BATCH, ACTIVITY_RETRY,
                                             {**job, "table": item["table"], "part": number, "keys": item["keys"]})
            for number, item in enumerate(plan["refresh"])
        ])
        for result in results:
            into = counts.setdefault(result["table"], {})
            for key, value in result["counts"].items():
                into[key] = into.get(key, 0) + value
    if plan["deferred"]:
        yield context.task_all([
            context.call_activity_with_retry(names.DELTA_BIND_DEFERRED, ACTIVITY_RETRY,
                                             {**job, "table": item["table"], "part": part})
            for item in plan["deferred"] for part in range(item["parts"])
        ])
    if plan.get("attachment_parts"):  # new or changed documents: their files, like the full run's
        copied = yield context.task_all([
            context.call_activity_with_retry(names.COPY_ATTACHMENTS, ACTIVITY_RETRY, {**job, "part": part})
            for part in range(plan["attachment_parts"])
        ])
        into = counts.setdefault("attachments", {})
        for result in copied:
            into["copied"] = into.get("copied", 0) + result["copied"]
    if plan["deleted_keys"]:
        yield context.call_activity_with_retry(names.APPLY_DELETIONS, ACTIVITY_RETRY, job)
    report = yield context.call_activity_with_retry(names.COMMIT_DELTA, ACTIVITY_RETRY, {**job, "counts": counts})
    return report


@bp.orchestration_trigger(context_name="context", orchestration=names.CUTOVER_ORCHESTRATOR)
def cutover_orchestrator(context: df.DurableOrchestrationContext):
    """Apply deltas as they arrive (woken by the timer), until go-live or the window's end; then close
    the window and reconcile. Beyond the tolerance, start the rollback when the migration says so."""
    job = context.get_input()
    ref = {"migration_id": job["migration_id"], "tenant_id": job["tenant_id"]}
    window = yield context.call_activity_with_retry(names.CUTOVER_WINDOW, ACTIVITY_RETRY,
                                                    {**ref, "at": _utc(context.current_utc_datetime).isoformat()})
    deadline = _utc(window["closes_at"])
    reason = None
    expired = False
    while reason is None:
        pending = yield context.call_activity_with_retry(names.PENDING_DELTAS, ACTIVITY_RETRY, ref)
        for number, bundle_id in enumerate(pending["ready"], start=1):
            _status(context, "applying_delta", bundle_id=bundle_id, of=len(pending["ready"]), number=number,
                    applied=len(pending["applied"]) + number - 1)
            yield from _apply_delta(context, ref, bundle_id)
        if pending["ready"]:
            continue  # more may have arrived meanwhile
        if pending["go_live"]:
            reason = "go_live"
        elif expired or _utc(context.current_utc_datetime) >= deadline:
            reason = "expired"
        else:
            _status(context, "cutover_open", closes_at=window["closes_at"], applied=len(pending["applied"]),
                    waiting=[{"bundle_id": w["bundle_id"], "reason": w["reason"]} for w in pending["waiting"]])
            timer = context.create_timer(deadline)
            arrived = context.wait_for_external_event(names.DELTAS_ARRIVED_EVENT)
            live = context.wait_for_external_event(names.GO_LIVE_EVENT)
            winner = yield context.task_any([arrived, live, timer])
            if winner == timer:
                expired = True  # one more look: a delta uploaded just before the end still applies
            else:
                timer.cancel()
    _status(context, "closing", reason=reason)
    yield context.call_activity_with_retry(names.CLOSE_CUTOVER, ACTIVITY_RETRY,
                                           {**ref, "reason": reason, "at": _utc(context.current_utc_datetime).isoformat()})
    _status(context, "reconciling", reason=reason)
    result = yield context.call_activity_with_retry(names.RECONCILE, ACTIVITY_RETRY, ref)
    if result["verdict"] == "rollback_started":
        _status(context, "rollback_started", reason=reason, worst_share=result["worst_share"])
        yield context.call_sub_orchestrator(names.ROLLBACK_ORCHESTRATOR, {**ref, "policy": {}},
                                            instance_id=f"{job['migration_id']}:rollback")
    _status(context, result["verdict"], reason=reason, worst_share=result["worst_share"],
            report=recon.REPORT_JSON)
    return {"reason": reason, **result}


@bp.orchestration_trigger(context_name="context", orchestration=names.RECONCILE_ORCHESTRATOR)
def reconcile_orchestrator(context: df.DurableOrchestrationContext):
    """Reconcile again on request (one activity)."""
    job = context.get_input()
    _status(context, "reconciling")
    result = yield context.call_activity_with_retry(names.RECONCILE, ACTIVITY_RETRY,
                                                    {**job, "auto_rollback": False})
    _status(context, result["verdict"], worst_share=result["worst_share"], report=recon.REPORT_JSON)
    return result


# -- activities ----------------------------------------------------------------------------------------------


def _migration(request: dict) -> Migration:
    return runtime().migrations.get(request["tenant_id"], request["migration_id"])


@bp.activity_trigger(input_name="request", activity=names.CUTOVER_WINDOW)
def cutover_window(request: dict) -> dict:
    info = cutover.start_window(runtime(), request["tenant_id"], request["migration_id"],
                                _utc(request["at"]))
    return info.model_dump(mode="json")


@bp.activity_trigger(input_name="request", activity=names.PENDING_DELTAS)
def pending_deltas(request: dict) -> dict:
    return cutover.pending_deltas(runtime(), _migration(request)).model_dump(mode="json")


@bp.activity_trigger(input_name="request", activity=names.PLAN_DELTA)
def plan_delta(request: dict) -> dict:
    return cutover.plan_delta(runtime(), _migration(request), request["bundle_id"]).model_dump()


@bp.activity_trigger(input_name="request", activity=names.DELTA_LOAD_BATCH)
async def delta_load_batch(request: dict) -> dict:
    info = await load.load_batch(runtime(), _migration(request), request["table"], int(request["part"]),
                                 bundle_id=request["bundle_id"], keys=request.get("keys"))
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.DELTA_BIND_DEFERRED)
async def delta_bind_deferred(request: dict) -> dict:
    info = await load.bind_deferred(runtime(), _migration(request), request["table"], int(request["part"]),
                                    bundle_id=request["bundle_id"])
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.APPLY_DELETIONS)
async def apply_deletions(request: dict) -> dict:
    info = await cutover.apply_deletions(runtime(), _migration(request), request["bundle_id"])
    return {"bundle_id": info.bundle_id, "counts": info.counts}  # counts only: the ids are in the artifact


@bp.activity_trigger(input_name="request", activity=names.COMMIT_DELTA)
def commit_delta(request: dict) -> dict:
    report = cutover.commit_delta(runtime(), _migration(request), request["bundle_id"], request.get("counts") or {})
    return {"bundle_id": report.bundle_id, "tables": report.tables}


@bp.activity_trigger(input_name="request", activity=names.CLOSE_CUTOVER)
def close_cutover(request: dict) -> dict:
    migration = cutover.close_cutover(runtime(), request["tenant_id"], request["migration_id"], request["reason"],
                                      _utc(request["at"]))
    assert migration.cutover is not None
    return {"status": migration.cutover.status, "reason": migration.cutover.closed_reason}


@bp.activity_trigger(input_name="request", activity=names.RECONCILE)
async def reconcile(request: dict) -> dict:
    rt = runtime()
    migration = _migration(request)
    report = await recon.write_reconciliation(rt, migration)
    verdict = report.verdict
    if verdict == "rollback_recommended" and migration.auto_rollback and request.get("auto_rollback", True):
        verdict = "rollback_started"
    cutover.record_verdict(rt, migration.tenant_id, migration.migration_id, verdict)
    return {"verdict": verdict, "worst_share": report.worst_share, "records_mismatched": report.records_mismatched,
            "report": recon.REPORT_JSON}

