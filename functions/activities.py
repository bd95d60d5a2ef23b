"""Activities: each parses its small input, calls one function in `shared/`, returns counts or ids."""

from __future__ import annotations

import azure.durable_functions as df

from functions import names
from shared.runtime import runtime

bp = df.Blueprint()


@bp.activity_trigger(input_name="request", activity=names.RECORD_PROGRESS)
def record_progress(request: dict) -> dict:
    progress = runtime().migrations.record_progress(
        request["migration_id"], request["stage"], request["status"], request.get("counts", {}))
    return {"stage": progress.stage, "status": progress.status}
