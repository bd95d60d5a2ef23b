"""The migration orchestrator's calls, checked with the SDK's own generator driver (no host)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest.mock import MagicMock

from azure.durable_functions.testing import orchestrator_generator_wrapper

import function_app  # noqa: F401  (registers the blueprints, as the host does)
from functions import names
from functions.orchestrators import load_table_orchestrator, migration_orchestrator


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


# -- the sample run before the full run ------------------------------------------------------------------

SUMMARY = {"patients": 150, "contacts": 171, "records": 4000, "missing": 0, "fields_checked": 50000,
           "fields_matched": 50000, "mismatches": 0, "match_rate": 1.0}
LOAD_PLAN = {"waves": [[{"table": "patient", "parts": 2}], [{"table": "appointment", "parts": 1}]],
             "deferred": [{"table": "patient", "parts": 2}], "attachment_parts": 1, "rows": 100}


class _Run:
    """A fake orchestration context: activities answer from a table, events are decided up front."""

    def __init__(self, sample_run: bool, decision: str | None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.statuses: list[dict] = []
        self.decision = decision
        self.answers = {
            names.REOPEN_AFTER_REJECTION: {"reopened": False},
            names.DISCOVER: {"tables": 1}, names.PROPOSE_MAPPING: {"approved_version": 1},
            names.PLAN_SCHEMA: {"already_approved": True}, names.BUILD_SCHEMA: {},
            names.PLAN_LOAD: LOAD_PLAN,
            names.PREPARE_SAMPLE: {"run": sample_run, "reason": "sampling" if sample_run else "disabled"},
            names.BIND_DEFERRED: {"counts": {"bound": 1}}, names.COPY_ATTACHMENTS: {"copied": 2},
            names.SAMPLE_RUN_DIFF: SUMMARY, names.RECORD_PROGRESS: {},
            names.FINISH_MIGRATION: {"report": "reports/final.json"},
        }
        self.context = MagicMock()
        self.context.get_input.return_value = {"migration_id": "m-1", "tenant_id": "t", "approval_timeout_hours": 1}
        self.context.instance_id = "m-1"
        self.context.current_utc_datetime = datetime(2026, 1, 1, tzinfo=UTC)
        self.context.call_activity_with_retry.side_effect = lambda name, retry, payload: self._call(name, payload)
        self.context.call_activity.side_effect = lambda name, payload: self._call(name, payload)
        self.context.call_sub_orchestrator.side_effect = self._sub
        self.context.task_all.side_effect = lambda tasks: _completed([t.result for t in tasks])
        self.context.wait_for_external_event.side_effect = lambda name: _completed(name)
        self.context.task_any.side_effect = self._any
        self.context.set_custom_status.side_effect = self.statuses.append

    def _call(self, name: str, payload: dict):
        self.calls.append((name, payload))
        return _completed(self.answers[name])

    def _sub(self, name: str, payload: dict, instance_id: str):
        self.calls.append((f"{name}@{instance_id}", payload))
        return _completed({"table": payload["table"], "counts": {"created": 1}})

    def _any(self, tasks):
        wanted = {"approve": names.SAMPLE_APPROVED_EVENT, "reject": names.SAMPLE_REJECTED_EVENT}.get(self.decision)
        winner = next((t for t in tasks if t.result == wanted), tasks[-1])  # no decision: the timer fires
        return _completed(winner)

    def run(self):
        generator = migration_orchestrator.build().get_user_function().orchestrator_function(self.context)
        return list(orchestrator_generator_wrapper(generator))[-1]

    def names_called(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_the_sample_is_loaded_diffed_and_approved_before_the_full_run_which_upserts_over_it():
    run = _Run(sample_run=True, decision="approve")
    result = run.run()
    assert result["stage"] == "done"
    called = run.names_called()
    sub = names.LOAD_TABLE_ORCHESTRATOR
    assert called == [
        names.REOPEN_AFTER_REJECTION, names.DISCOVER, names.PROPOSE_MAPPING, names.PLAN_SCHEMA, names.BUILD_SCHEMA,
        names.PLAN_LOAD, names.PREPARE_SAMPLE,
        f"{sub}@m-1:sample:patient", f"{sub}@m-1:sample:appointment",
        names.BIND_DEFERRED, names.BIND_DEFERRED, names.COPY_ATTACHMENTS, names.SAMPLE_RUN_DIFF,
        names.RECORD_PROGRESS,
        f"{sub}@m-1:load:patient", f"{sub}@m-1:load:appointment",
        names.BIND_DEFERRED, names.BIND_DEFERRED, names.COPY_ATTACHMENTS, names.FINISH_MIGRATION,
    ]
    modes = [payload.get("mode") for _, payload in run.calls]
    assert modes[7:12] == ["sample"] * 5  # the sample's loads, second pass and attachments
    assert modes[14:16] == ["over_sample"] * 2  # the full run's loads report the sample's records as created
    assert modes[16:] == [None] * 4
    assert run.calls[13][1] == {"migration_id": "m-1", "tenant_id": "t", "stage": "sample", "status": "approved"}
    waiting = next(s for s in run.statuses if s["stage"] == "awaiting_sample_approval")
    assert waiting["sample"] == SUMMARY
    # The patients never travel in an input: each activity reads the run's sample/scope.json.
    assert all("patients" not in payload and len(json.dumps(payload)) < 200 for _, payload in run.calls)


def test_a_rejected_sample_ends_the_run_before_the_full_load():
    run = _Run(sample_run=True, decision="reject")
    result = run.run()
    assert result == {"stage": "sample_rejected", "sample": SUMMARY}
    assert run.statuses[-1] == {"stage": "sample_rejected", "sample": SUMMARY}
    assert run.names_called()[-2:] == [names.SAMPLE_RUN_DIFF, names.RECORD_PROGRESS]
    assert run.calls[-1][1]["status"] == "rejected"
    assert not any(name.endswith(":load:patient") or name == names.FINISH_MIGRATION for name in run.names_called())


def test_an_unanswered_sample_times_out_with_a_clear_status():
    run = _Run(sample_run=True, decision=None)
    assert run.run()["stage"] == "sample_approval_timed_out"
    assert run.calls[-1][1]["status"] == "timed_out"


def test_without_a_sample_the_full_run_goes_straight_on():
    run = _Run(sample_run=False, decision=None)
    assert run.run()["stage"] == "done"
    called = run.names_called()
    assert names.SAMPLE_RUN_DIFF not in called and not any(":sample:" in name for name in called)
    assert all("mode" not in payload for _, payload in run.calls)
    assert not any(s["stage"] == "awaiting_sample_approval" for s in run.statuses)


def test_a_restart_after_an_approved_sample_whose_full_run_failed_still_goes_over_the_sample():
    run = _Run(sample_run=False, decision=None)
    run.answers[names.PREPARE_SAMPLE] = {"run": False, "reason": "already_approved", "over_sample": True}
    assert run.run()["stage"] == "done"
    modes = {name: payload.get("mode") for name, payload in run.calls if ":load:" in name}
    assert set(modes.values()) == {"over_sample"} and len(modes) == 2
    assert names.SAMPLE_RUN_DIFF not in run.names_called()


# -- table loads in dependency order ------------------------------------------------------------------------

def _loads_in_order(plan_waves: list[list[dict]], finishing_order: list[str]) -> list[tuple[str, str]]:
    """Runs the full load with sub-orchestrations finishing in `finishing_order` (when running);
    returns the ('start' | 'done', map) events as the orchestrator saw them."""
    run = _Run(sample_run=False, decision=None)
    run.answers[names.PLAN_LOAD] = {**LOAD_PLAN, "waves": plan_waves, "deferred": []}
    events: list[tuple[str, str]] = []

    def sub(name: str, payload: dict, instance_id: str):
        events.append(("start", payload["table"]))
        return _completed({"table": payload["table"], "counts": {"created": 1}})

    def any_of(tasks):
        winner = min(tasks, key=lambda t: finishing_order.index(t.result["table"]))
        events.append(("done", winner.result["table"]))
        return _completed(winner)

    run.context.call_sub_orchestrator.side_effect = sub
    run.context.task_any.side_effect = any_of
    assert run.run()["stage"] == "done"
    return events


def test_a_map_starts_as_soon_as_its_own_parents_have_finished_not_its_whole_wave():
    waves = [[{"table": "patient", "parts": 9, "after": []}, {"table": "fee_schedule", "parts": 1, "after": []}],
             [{"table": "insurance_carrier", "parts": 1, "after": ["fee_schedule"]},
              {"table": "appointment", "parts": 9, "after": ["patient"]}],
             [{"table": "patient_insurance_primary", "parts": 1, "after": ["insurance_carrier", "patient"]}]]
    events = _loads_in_order(waves, ["fee_schedule", "insurance_carrier", "patient", "patient_insurance_primary",
                                     "appointment"])
    assert events == [
        ("start", "patient"), ("start", "fee_schedule"), ("done", "fee_schedule"),
        ("start", "insurance_carrier"),  # the carriers need the fee schedules only, not the patients
        ("done", "insurance_carrier"), ("done", "patient"),
        ("start", "appointment"), ("start", "patient_insurance_primary"),
        ("done", "patient_insurance_primary"), ("done", "appointment"),
    ]


def test_a_plan_without_dependencies_keeps_the_order_of_its_waves():
    waves = [[{"table": "patient", "parts": 9}, {"table": "fee_schedule", "parts": 1}],
             [{"table": "insurance_carrier", "parts": 1}]]
    events = _loads_in_order(waves, ["fee_schedule", "insurance_carrier", "patient"])
    assert events == [("start", "patient"), ("start", "fee_schedule"), ("done", "fee_schedule"), ("done", "patient"),
                      ("start", "insurance_carrier"), ("done", "insurance_carrier")]
