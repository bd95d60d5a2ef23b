"""Orchestrators: deterministic generators that move ids, counts and blob paths, never records."""

from __future__ import annotations

import azure.durable_functions as df

from functions import names

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.MIGRATION_ORCHESTRATOR)
def migration_orchestrator(context: df.DurableOrchestrationContext):
    job = context.get_input()
    context.set_custom_status({"stage": "started"})
    yield context.call_activity(names.RECORD_PROGRESS,
                                {"migration_id": job["migration_id"], "stage": "started", "status": "done"})
    return {"migration_id": job["migration_id"], "stage": "started"}
