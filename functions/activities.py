"""Activities: each parses its small input, calls one stage function in `shared/`, returns counts or ids.

Inputs carry `migration_id` and `tenant_id` (and a table and part for batches); outputs are the
stage's `...Info` as JSON. Nothing here catches an exception: a failure must reach Durable's retry
and the orchestration status.
"""

from __future__ import annotations

import asyncio

import azure.durable_functions as df

from functions import names
from shared.pipeline import attachments, discovery, finish, load, mapping, rollback, schema
from shared.runtime import runtime
from shared.state.migrations import Migration

bp = df.Blueprint()


def _migration(request: dict) -> Migration:
    return runtime().migrations.get(request["tenant_id"], request["migration_id"])


async def _migration_off_loop(request: dict) -> Migration:
    """`_migration` for async activities: they share the worker's event loop with every other async
    function, so a storage read there (slow under load) would stall all of them."""
    return await asyncio.to_thread(_migration, request)


@bp.activity_trigger(input_name="request", activity=names.RECORD_PROGRESS)
def record_progress(request: dict) -> dict:
    # Stage markers (approval waits, time-outs) journal nothing: no failure codes of their own.
    progress = runtime().migrations.record_progress(
        request["migration_id"], request["stage"], request["status"], request.get("counts", {}),
        errors=request.get("errors"))
    return {"stage": progress.stage, "status": progress.status}


@bp.activity_trigger(input_name="request", activity=names.DISCOVER)
def discover(request: dict) -> dict:
    return discovery.discover(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PROPOSE_MAPPING)
def propose_mapping(request: dict) -> dict:
    return mapping.propose_mapping(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_SCHEMA)
async def plan_schema(request: dict) -> dict:
    return (await schema.plan(runtime(), await _migration_off_loop(request))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.BUILD_SCHEMA)
async def build_schema(request: dict) -> dict:
    return (await schema.build(runtime(), await _migration_off_loop(request))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_LOAD)
def plan_load(request: dict) -> dict:
    return load.plan_load(runtime(), _migration(request)).model_dump()


def _sample_mode(request: dict, migration: Migration) -> dict:
    """`mode` in an input: `sample` (load only the slice) or `over_sample` (the full run after it). The
    slice itself is read from the run's artifact, never carried in the input."""
    from shared.pipeline.sample_scope import stored_scope

    mode = request.get("mode")
    if mode is None:
        return {}
    if mode not in ("sample", "over_sample"):
        raise ValueError(f"unknown load mode {mode!r}")
    return {mode: stored_scope(runtime(), migration)}


@bp.activity_trigger(input_name="request", activity=names.LOAD_BATCH)
async def load_batch(request: dict) -> dict:
    migration = await _migration_off_loop(request)
    info = await load.load_batch(runtime(), migration, request["table"], int(request["part"]),
                                 **await asyncio.to_thread(_sample_mode, request, migration))
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.BIND_DEFERRED)
async def bind_deferred(request: dict) -> dict:
    migration = await _migration_off_loop(request)
    sample = (await asyncio.to_thread(_sample_mode, request, migration)).get("sample")
    info = await load.bind_deferred(runtime(), migration, request["table"], int(request["part"]), sample=sample)
    return info.model_dump()


@bp.activity_trigger(input_name="request", activity=names.COPY_ATTACHMENTS)
async def copy_attachments(request: dict) -> dict:
    migration = await _migration_off_loop(request)
    sample = (await asyncio.to_thread(_sample_mode, request, migration)).get("sample")
    return (await attachments.copy_attachments(runtime(), migration, int(request["part"]), sample=sample,
                                                bundle_id=request.get("bundle_id"))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.FINISH_MIGRATION)
def finish_migration(request: dict) -> dict:
    return finish.finish(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PLAN_ROLLBACK)
def plan_rollback(request: dict) -> dict:
    return rollback.plan_rollback(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.ROLLBACK_TABLE)
async def rollback_table(request: dict) -> dict:
    policy = rollback.RollbackPolicy.model_validate(request.get("policy") or {})
    info = await rollback.rollback_table(runtime(), await _migration_off_loop(request), request["table"], policy)
    # Counts only: the kept records' ids are in the step's artifact and the final rollback report.
    return {"table": info.table, "counts": info.counts, "kept": len(info.kept)}


@bp.activity_trigger(input_name="request", activity=names.VERIFY_ROLLBACK)
async def verify_rollback(request: dict) -> dict:
    report = await rollback.verify_rollback(runtime(), await _migration_off_loop(request))
    return {"verified": report.verified, "kept": len(report.kept), "remaining": len(report.remaining),
            "report": rollback.REPORT}


@bp.activity_trigger(input_name="request", activity=names.SAMPLE_DIFF)
async def sample_diff(request: dict) -> dict:
    from shared.pipeline import sample

    diff = await sample.write_sample_diff(runtime(), await _migration_off_loop(request), request.get("patients"),
                                          int(request.get("size") or sample.DEFAULT_PATIENTS))
    return {"patients": diff.patients, "fields_checked": diff.fields_checked,
            "fields_matched": diff.fields_matched, "mismatches": len(diff.mismatches), "report": sample.DIFF_JSON}


@bp.activity_trigger(input_name="request", activity=names.REOPEN_AFTER_REJECTION)
def reopen_after_rejection(request: dict) -> dict:
    from shared.pipeline import sample_run

    return sample_run.reopen_after_rejection(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.PREPARE_SAMPLE)
def prepare_sample(request: dict) -> dict:
    from shared.pipeline import sample_run

    return sample_run.prepare_sample(runtime(), _migration(request)).model_dump()


@bp.activity_trigger(input_name="request", activity=names.SAMPLE_RUN_DIFF)
async def sample_run_diff(request: dict) -> dict:
    from shared.pipeline import sample_run

    return (await sample_run.diff_summary(runtime(), await _migration_off_loop(request))).model_dump()


@bp.activity_trigger(input_name="request", activity=names.REMOVE_SCHEMA)
async def remove_schema(request: dict) -> dict:
    removal = await rollback.remove_schema(runtime(), await _migration_off_loop(request))
    return {"counts": {"schema_removed": len(removal.removed), "schema_kept": len(removal.kept)}}
