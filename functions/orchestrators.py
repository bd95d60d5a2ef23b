"""Orchestrators: deterministic generators that move ids, counts and blob paths, never records.

The migration runs discovery -> proposal -> (mapping approval) -> schema plan -> (schema approval)
-> schema build -> loads in dependency waves (one sub-orchestration per table, fanning out one
activity per bundle part) -> second-pass lookups -> attachments -> final report. Each approval
wait races a durable timer; a timeout ends the run with a clear status instead of waiting forever.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from functions import names

bp = df.Blueprint()

# Activities retry transient failures themselves (the clients honour Retry-After); Durable's retry
# covers a lost worker or a storage hiccup. Activities are idempotent, so a repeat is harmless.
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
BATCHES_IN_FLIGHT = 16
"""Load activities a table runs at once; the Dataverse governor shares the real limit among them."""


def _status(context: df.DurableOrchestrationContext, stage: str, **extra: object) -> None:
    context.set_custom_status({"stage": stage, **extra})


def _wait_for_approval(context: df.DurableOrchestrationContext, event: str, hours: float):
    """Wait for `event` or the deadline; returns the event's data, or None when the wait timed out."""
    deadline = context.current_utc_datetime + timedelta(hours=hours)
    timer = context.create_timer(deadline)
    approval = context.wait_for_external_event(event)
    winner = yield context.task_any([approval, timer])
    if winner == approval:
        timer.cancel()
        return approval.result
    return None


@bp.orchestration_trigger(context_name="context", orchestration=names.MIGRATION_ORCHESTRATOR)
def migration_orchestrator(context: df.DurableOrchestrationContext):
    job = context.get_input()
    ref = {"migration_id": job["migration_id"], "tenant_id": job["tenant_id"]}
    wait_hours = float(job.get("approval_timeout_hours", 168))

    _status(context, "discovery")
    discovery = yield context.call_activity_with_retry(names.DISCOVER, ACTIVITY_RETRY, ref)
    proposal = yield context.call_activity_with_retry(names.PROPOSE_MAPPING, ACTIVITY_RETRY, ref)

    if proposal.get("approved_version") is not None:  # a re-run: the frozen map stands
        mapping = {"version": proposal["approved_version"]}
    else:
        _status(context, "awaiting_mapping_approval", discovery=discovery, proposal=proposal)
        mapping = yield from _wait_for_approval(context, names.MAPPING_APPROVED_EVENT, wait_hours)
    if mapping is None:
        yield context.call_activity(names.RECORD_PROGRESS, {**ref, "stage": "mapping", "status": "timed_out"})
        _status(context, "mapping_approval_timed_out")
        return {"stage": "mapping_approval_timed_out"}

    plan = yield context.call_activity_with_retry(names.PLAN_SCHEMA, ACTIVITY_RETRY,
                                                  {**ref, "mapping_version": mapping["version"]})
    _status(context, "awaiting_schema_approval", mapping_version=mapping["version"], plan=plan)
    while not plan.get("already_approved"):
        approval = yield from _wait_for_approval(context, names.SCHEMA_APPROVED_EVENT, wait_hours)
        if approval is None:
            yield context.call_activity(names.RECORD_PROGRESS, {**ref, "stage": "schema", "status": "timed_out"})
            _status(context, "schema_approval_timed_out")
            return {"stage": "schema_approval_timed_out"}
        if approval.get("replan"):
            # The user chose a fallback owner or changed the licence: plan again, wait again.
            plan = yield context.call_activity_with_retry(names.PLAN_SCHEMA, ACTIVITY_RETRY,
                                                          {**ref, "mapping_version": mapping["version"]})
            _status(context, "awaiting_schema_approval", mapping_version=mapping["version"], plan=plan)
            continue
        break

    _status(context, "schema_build")
    yield context.call_activity_with_retry(names.BUILD_SCHEMA, ACTIVITY_RETRY, ref)

    load_plan = yield context.call_activity_with_retry(names.PLAN_LOAD, ACTIVITY_RETRY, ref)
    loaded: dict[str, dict] = {}
    for number, wave in enumerate(load_plan["waves"], start=1):
        _status(context, "load", wave=number, waves=len(load_plan["waves"]))
        tables = yield context.task_all([
            context.call_sub_orchestrator(names.LOAD_TABLE_ORCHESTRATOR,
                                          {**ref, "table": table["table"], "parts": table["parts"]},
                                          instance_id=f"{context.instance_id}:load:{table['table']}")
            for table in wave
        ])
        for summary in tables:
            loaded[summary["table"]] = summary["counts"]
    if load_plan["deferred"]:
        _status(context, "second_pass")
        yield context.task_all([
            context.call_activity_with_retry(names.BIND_DEFERRED, ACTIVITY_RETRY,
                                             {**ref, "table": item["table"], "part": part})
            for item in load_plan["deferred"] for part in range(item["parts"])
        ])

    _status(context, "attachments")
    attachments = yield context.task_all([
        context.call_activity_with_retry(names.COPY_ATTACHMENTS, ACTIVITY_RETRY, {**ref, "part": part})
        for part in range(load_plan["attachment_parts"])
    ])

    report = yield context.call_activity_with_retry(names.FINISH_MIGRATION, ACTIVITY_RETRY, ref)
    _status(context, "done", report=report["report"])
    return {"stage": "done", "tables": loaded, "attachments": sum(a["copied"] for a in attachments),
            "report": report["report"]}


@bp.orchestration_trigger(context_name="context", orchestration=names.LOAD_TABLE_ORCHESTRATOR)
def load_table_orchestrator(context: df.DurableOrchestrationContext):
    """Loads one table: one activity per bundle part, a bounded number in flight, counts summed."""
    job = context.get_input()
    totals: dict[str, int] = {}
    parts = list(range(job["parts"]))
    for start in range(0, len(parts), BATCHES_IN_FLIGHT):
        results = yield context.task_all([
            context.call_activity_with_retry(names.LOAD_BATCH, ACTIVITY_RETRY,
                                             {"migration_id": job["migration_id"], "tenant_id": job["tenant_id"],
                                              "table": job["table"], "part": part})
            for part in parts[start : start + BATCHES_IN_FLIGHT]
        ])
        for result in results:
            for key, value in result["counts"].items():
                totals[key] = totals.get(key, 0) + value
        context.set_custom_status({"table": job["table"], "parts_done": min(start + BATCHES_IN_FLIGHT, len(parts)),
                                   "parts": len(parts)})
    return {"table": job["table"], "counts": totals}


@bp.orchestration_trigger(context_name="context", orchestration=names.ROLLBACK_ORCHESTRATOR)
def rollback_orchestrator(context: df.DurableOrchestrationContext):
    """Undo a migration from its journal: group after group of tables, children before parents (the
    tables of one group at once), then a verification of the destination against the journal. Each
    step skips what an earlier (interrupted) attempt already undid, so a restart simply carries on."""
    job = context.get_input()
    ref = {"migration_id": job["migration_id"], "tenant_id": job["tenant_id"]}
    _status(context, "rollback_planning")
    plan = yield context.call_activity_with_retry(names.PLAN_ROLLBACK, ACTIVITY_RETRY, ref)
    totals: dict[str, int] = {}
    for number, group in enumerate(plan["steps"], start=1):
        _status(context, "rollback", step=number, steps=len(plan["steps"]), tables=group, counts=totals)
        results = yield context.task_all([
            context.call_activity_with_retry(names.ROLLBACK_TABLE, ACTIVITY_RETRY,
                                             {**ref, "table": table, "policy": job.get("policy") or {}})
            for table in group
        ])
        for result in results:
            for key, value in result["counts"].items():
                totals[key] = totals.get(key, 0) + value
    _status(context, "rollback_verification", counts=totals)
    verification = yield context.call_activity_with_retry(names.VERIFY_ROLLBACK, ACTIVITY_RETRY, ref)
    stage = "rolled_back" if verification["verified"] else "rollback_incomplete"
    _status(context, stage, counts=totals, kept=verification["kept"], remaining=verification["remaining"],
            report=verification["report"])
    return {"stage": stage, "counts": totals, **verification}


@bp.orchestration_trigger(context_name="context", orchestration=names.SAMPLE_DIFF_ORCHESTRATOR)
def sample_diff_orchestrator(context: df.DurableOrchestrationContext):
    """The field-level diff of a stratified sample over the records already in Dataverse (one activity)."""
    job = context.get_input()
    _status(context, "sample_diff")
    result = yield context.call_activity_with_retry(names.SAMPLE_DIFF, ACTIVITY_RETRY, job)
    _status(context, "sample_diff_done", **result)
    return result
