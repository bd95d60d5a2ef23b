"""Activities: each parses its small input, calls one stage function in `shared/`, returns counts or ids.

Inputs carry `migration_id` and `tenant_id` (and a table and part for batches); outputs are the
stage's `...Info` as JSON. Nothing here catches an exception: a failure must reach Durable's retry
and the orchestration status.
"""

from __future__ import annotations

import azure.durable_functions as df

from functions import names
from shared.pipeline import attachments, discovery, finish, load, mapping, rollback, schema
from shared.runtime import runtime
from shared.state.migrations import Migration

bp = df.Blueprint()


def _migration(request: dict) -> Migration:
    return runtime().migrations.get(request["tenant_id"], request["migration_id"])


@bp.activity_trigger(input_name="request", activity=names.RECORD_PROGRESS)
def record_progress(request: dict) -> dict:
    progress = runtime().migrations.record_progress(
        request["migration_id"], request["stage"], request["status"], request.get("counts", {}))
    return {"stage": progress.stage, "status": progress.status}


@bp.activity_trigger(input_name="request", activity=names.DISCOVER)
def discover(request: dict) -> dict:
    return discovery.discover(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PROPOSE_MAPPING)
def propose_mapping(request: dict) -> dict:
    return mapping.propose_mapping(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_SCHEMA)
async def plan_schema(request: dict) -> dict:
    return (await schema.plan(runtime(), _migration(request))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.BUILD_SCHEMA)
async def build_schema(request: dict) -> dict:
    return (await schema.build(runtime(), _migration(request))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_LOAD)
def plan_load(request: dict) -> dict:
    return load.plan_load(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.LOAD_BATCH)
async def load_batch(request: dict) -> dict:
    info = await load.load_batch(runtime(), _migration(request), request["table"], int(request["part"]))
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.BIND_DEFERRED)
async def bind_deferred(request: dict) -> dict:
    info = await load.bind_deferred(runtime(), _migration(request), request["table"], int(request["part"]))
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.COPY_ATTACHMENTS)
async def copy_attachments(request: dict) -> dict:
    return (await attachments.copy_attachments(runtime(), _migration(request), int(request["part"]))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.FINISH_MIGRATION)
def finish_migration(request: dict) -> dict:
    return finish.finish(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_ROLLBACK)
def plan_rollback(request: dict) -> dict:
    return rollback.plan_rollback(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.ROLLBACK_TABLE)
async def rollback_table(request: dict) -> dict:
    policy = rollback.RollbackPolicy.model_validate(request.get("policy") or {})
    info = await rollback.rollback_table(runtime(), _migration(request), request["table"], policy)
    # Counts only: the kept records' ids are in the step's artifact and the final rollback report.
    return {"table": info.table, "counts": info.counts, "kept": len(info.kept)}


@bp.activity_trigger(input_name="request", activity=names.VERIFY_ROLLBACK)
async def verify_rollback(request: dict) -> dict:
    report = await rollback.verify_rollback(runtime(), _migration(request))
    return {"verified": report.verified, "kept": len(report.kept), "remaining": len(report.remaining),
            "report": rollback.REPORT}


@bp.activity_trigger(input_name="request", activity=names.SAMPLE_DIFF)
async def sample_diff(request: dict) -> dict:
    from shared.pipeline import sample

    diff = await sample.write_sample_diff(runtime(), _migration(request), request.get("patients"),
                                          int(request.get("size") or sample.DEFAULT_PATIENTS))
    return {"patients": diff.patients, "fields_checked": diff.fields_checked,
            "fields_matched": diff.fields_matched, "mismatches": len(diff.mismatches), "report": sample.DIFF_JSON}
