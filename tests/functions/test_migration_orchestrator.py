"""The migration orchestrator's calls, checked with the SDK's own generator driver (no host)."""

from __future__ import annotations

from unittest.mock import MagicMock

from azure.durable_functions.testing import orchestrator_generator_wrapper

import function_app  # noqa: F401  (registers the blueprints, as the host does)
from functions import names
from functions.orchestrators import load_table_orchestrator


def _completed(value):
    task = MagicMock()
    task.result = value
    return task


def test_load_table_fans_out_one_batch_per_part_and_sums_the_counts():
    context = MagicMock()
    context.get_input.return_value = {"migration_id": "m-1", "tenant_id": "t", "table": "patient", "parts": 3}
    context.call_activity_with_retry.side_effect = lambda name, retry, payload: (name, payload)
    context.task_all.side_effect = lambda calls: _completed(
        [{"counts": {"created": 10 + payload["part"]}} for _, payload in calls])
    generator = load_table_orchestrator.build().get_user_function().orchestrator_function(context)
    results = list(orchestrator_generator_wrapper(generator))
    calls = [c.args for c in context.call_activity_with_retry.call_args_list]
    assert [(name, payload["part"]) for name, _, payload in calls] == [(names.LOAD_BATCH, p) for p in range(3)]
    assert results[-1] == {"table": "patient", "counts": {"created": 33}}
