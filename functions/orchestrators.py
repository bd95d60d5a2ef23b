"""Orchestrators: deterministic generators that move ids, counts and blob paths, never records.

The migration runs discovery -> proposal -> (mapping approval) -> schema plan -> (schema approval)
-> schema build -> the sample run (the stratified slice loaded in the same order, its second pass
and attachments, the field-level diff) -> (sample approval, or rejection: stage `sample_rejected`)
-> table loads in dependency order (one sub-orchestration per table map, started when its parents
have finished, fanning out one activity per bundle part) -> second-pass lookups -> attachments
-> final report. Each approval wait races a durable timer; a timeout ends the run with a clear
status instead of waiting forever. A migration created with `sample_patients: 0`, or re-run after
its sample was approved, skips the sample stage.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

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

    # A start after a rejected sample re-opens the map (and so the schema plan) for review first.
    yield context.call_activity_with_retry(names.REOPEN_AFTER_REJECTION, ACTIVITY_RETRY, ref)
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

    sample = yield context.call_activity_with_retry(names.PREPARE_SAMPLE, ACTIVITY_RETRY, ref)
    if sample["run"]:
        ended = yield from _sample_stage(context, ref, load_plan, wait_hours)
        if ended is not None:
            return ended

    # The full run; right after a sample it upserts over the sample's records (`over_sample`).
    mode = {"mode": "over_sample"} if sample["run"] or sample.get("over_sample") else {}
    loaded = yield from _load_tables(context, {**ref, **mode}, load_plan, "load")
    yield from _second_pass(context, ref, load_plan, "second_pass")

    _status(context, "attachments")
    attachments = yield context.task_all([
        context.call_activity_with_retry(names.COPY_ATTACHMENTS, ACTIVITY_RETRY, {**ref, "part": part})
        for part in range(load_plan["attachment_parts"])
    ])

    report = yield context.call_activity_with_retry(names.FINISH_MIGRATION, ACTIVITY_RETRY, ref)
    _status(context, "done", report=report["report"])
    return {"stage": "done", "tables": loaded, "attachments": sum(a["copied"] for a in attachments),
            "report": report["report"]}


def _load_tables(context: df.DurableOrchestrationContext, ref: dict, load_plan: dict, stage: str):
    """The table loads (one sub-orchestration per table map), each started as soon as the maps it
    depends on (`after`) have finished rather than wave by wave: a wave would wait for its slowest
    table (appointments, the ledger) while tables that only need a small parent sat idle.
    A plan without `after` keeps wave order. `ref` may carry a `mode`."""
    loaded: dict[str, dict] = {}
    # Sub-orchestration ids: `<id>:load:<map>` for the full run, `<id>:sample:<map>` for the sample.
    kind = "sample" if ref.get("mode") == "sample" else "load"
    waiting: list[tuple[dict, set[str]]] = []
    earlier: set[str] = set()
    for wave in load_plan["waves"]:
        for table in wave:
            waiting.append((table, set(table["after"]) if "after" in table else set(earlier)))
        earlier |= {table["table"] for table in wave}
    total = len(waiting)
    running: dict[str, TaskBase] = {}
    while waiting or running:
        for table, after in [item for item in waiting if item[1] <= loaded.keys()]:
            waiting.remove((table, after))
            running[table["table"]] = context.call_sub_orchestrator(
                names.LOAD_TABLE_ORCHESTRATOR, {**ref, "table": table["table"], "parts": table["parts"]},
                instance_id=f"{context.instance_id}:{kind}:{table['table']}")
        _status(context, stage, tables_done=len(loaded), tables=total, loading=sorted(running))
        if not running:  # never: plan_loads orders every map after its parents
            raise RuntimeError(f"load plan of {context.instance_id} has maps waiting on maps it never loads")
        finished = yield context.task_any(list(running.values()))
        name = next(name for name, task in running.items() if task is finished)
        del running[name]
        loaded[name] = finished.result["counts"]
    return loaded


def _second_pass(context: df.DurableOrchestrationContext, ref: dict, load_plan: dict, stage: str):
    if load_plan["deferred"]:
        _status(context, stage)
        yield context.task_all([
            context.call_activity_with_retry(names.BIND_DEFERRED, ACTIVITY_RETRY,
                                             {**ref, "table": item["table"], "part": part})
            for item in load_plan["deferred"] for part in range(item["parts"])
        ])


def _sample_stage(context: df.DurableOrchestrationContext, ref: dict, load_plan: dict, wait_hours: float):
    """Load the stratified slice (its own waves, second pass and attachments), diff it, and wait for the
    operator. Returns None when the sample is approved (the full run follows), else the run's end.
    Inputs carry `mode: sample`; the patients are in the run's `sample/scope.json`, read by each activity."""
    sample_ref = {**ref, "mode": "sample"}
    yield from _load_tables(context, sample_ref, load_plan, "sample_load")
    yield from _second_pass(context, sample_ref, load_plan, "sample_second_pass")
    if load_plan["attachment_parts"]:
        _status(context, "sample_attachments")
        yield context.task_all([
            context.call_activity_with_retry(names.COPY_ATTACHMENTS, ACTIVITY_RETRY, {**sample_ref, "part": part})
            for part in range(load_plan["attachment_parts"])
        ])
    _status(context, "sample_diff")
    summary = yield context.call_activity_with_retry(names.SAMPLE_RUN_DIFF, ACTIVITY_RETRY, ref)
    _status(context, "awaiting_sample_approval", sample=summary)

    deadline = context.current_utc_datetime + timedelta(hours=wait_hours)
    timer = context.create_timer(deadline)
    approved = context.wait_for_external_event(names.SAMPLE_APPROVED_EVENT)
    rejected = context.wait_for_external_event(names.SAMPLE_REJECTED_EVENT)
    winner = yield context.task_any([approved, rejected, timer])
    if winner == approved:
        timer.cancel()
        yield context.call_activity(names.RECORD_PROGRESS, {**ref, "stage": "sample", "status": "approved"})
        return None
    if winner == rejected:
        timer.cancel()
        yield context.call_activity(names.RECORD_PROGRESS, {**ref, "stage": "sample", "status": "rejected"})
        _status(context, "sample_rejected", sample=summary)
        return {"stage": "sample_rejected", "sample": summary}
    yield context.call_activity(names.RECORD_PROGRESS, {**ref, "stage": "sample", "status": "timed_out"})
    _status(context, "sample_approval_timed_out", sample=summary)
    return {"stage": "sample_approval_timed_out", "sample": summary}


@bp.orchestration_trigger(context_name="context", orchestration=names.LOAD_TABLE_ORCHESTRATOR)
def load_table_orchestrator(context: df.DurableOrchestrationContext):
    """Loads one table: one activity per bundle part, a bounded number in flight, counts summed.
    A `mode` in the input (sample / over_sample) goes to every batch as is."""
    job = context.get_input()
    totals: dict[str, int] = {}
    parts = list(range(job["parts"]))
    mode = {"mode": job["mode"]} if job.get("mode") else {}
    for start in range(0, len(parts), BATCHES_IN_FLIGHT):
        results = yield context.task_all([
            context.call_activity_with_retry(names.LOAD_BATCH, ACTIVITY_RETRY,
                                             {"migration_id": job["migration_id"], "tenant_id": job["tenant_id"],
                                              "table": job["table"], "part": part, **mode})
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
    tables of one group at once), the custom schema when asked (`remove_schema`), then a verification
    of the destination against the journal. Each
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
    if (job.get("policy") or {}).get("remove_schema"):
        _status(context, "rollback_schema", counts=totals)
        removal = yield context.call_activity_with_retry(names.REMOVE_SCHEMA, ACTIVITY_RETRY, ref)
        totals.update(removal["counts"])
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
