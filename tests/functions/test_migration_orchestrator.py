"""The migration orchestrator's calls, checked with the SDK's own generator driver."""

from __future__ import annotations

from unittest.mock import MagicMock

from azure.durable_functions.testing import orchestrator_generator_wrapper

import function_app  # noqa: F401  (registers the blueprints, as the host does)
from functions import names
from functions.orchestrators import migration_orchestrator


def _completed(value):
    task = MagicMock()
    task.result = value
    return task


def test_records_the_started_stage_then_returns_it():
    context = MagicMock()
    context.get_input.return_value = {"migration_id": "m-1", "tenant_id": "t"}
    context.call_activity.side_effect = lambda name, payload: _completed({"stage": payload["stage"]})
    generator = migration_orchestrator.build().get_user_function().orchestrator_function(context)
    results = list(orchestrator_generator_wrapper(generator))
    assert context.call_activity.call_args_list[0].args == (
        names.RECORD_PROGRESS, {"migration_id": "m-1", "stage": "started", "status": "done"})
    assert results[-1] == {"migration_id": "m-1", "stage": "started"}
