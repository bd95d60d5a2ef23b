"""The cutover orchestrator's calls, driven with the SDK's generator wrapper over a small fake context: deltas
in chain order, go-live, the window's expiry, and the rollback started when the migration asks for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.durable_functions.testing import orchestrator_generator_wrapper

import function_app  # noqa: F401  (registers the blueprints, as the host does)
from functions import names
from functions.cutover import cutover_orchestrator

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CLOSES = START + timedelta(hours=48)


class Done:
    def __init__(self, result: Any, kind: str = "task") -> None:
        self.result, self.kind, self.cancelled = result, kind, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeContext:
    """Answers activities from `answers` (name -> payload -> result); `task_any` lets `winners` win in turn."""

    def __init__(self, answers: dict[str, Callable[[dict], Any]], winners: list[str]) -> None:
        self.answers, self.winners = answers, winners
        self.calls: list[tuple[str, dict]] = []
        self.statuses: list[dict] = []
        self.current_utc_datetime = START
        self.instance_id = "m-1:cutover"

    def get_input(self) -> dict:
        return {"migration_id": "m-1", "tenant_id": "t"}

    def set_custom_status(self, status: dict) -> None:
        self.statuses.append(status)

    def call_activity_with_retry(self, name: str, retry: Any, payload: dict) -> Done:
        self.calls.append((name, payload))
        return Done(self.answers[name](payload))

    def call_sub_orchestrator(self, name: str, payload: dict, instance_id: str) -> Done:
        self.calls.append((name, {**payload, "instance_id": instance_id}))
        return Done({"stage": "rolled_back"})

    def task_all(self, tasks: list[Done]) -> Done:
        return Done([t.result for t in tasks])

    def create_timer(self, at: datetime) -> Done:
        assert at == CLOSES
        return Done(None, "timer")

    def wait_for_external_event(self, name: str) -> Done:
        return Done({}, name)

    def task_any(self, tasks: list[Done]) -> Done:
        kind = self.winners.pop(0)
        winner = next(t for t in tasks if t.kind == kind)
        if winner.kind == "timer":
            self.current_utc_datetime = CLOSES
        return Done(winner)


def _pending(*rounds: dict) -> Callable[[dict], dict]:
    """PENDING_DELTAS answers, one per call (the last repeats)."""
    queue = list(rounds)

    def answer(_: dict) -> dict:
        current = queue.pop(0) if len(queue) > 1 else queue[0]
        return {"ready": [], "waiting": [], "refused": [], "applied": [], "go_live": False, **current}

    return answer


def _answers(pending: Callable[[dict], dict], verdict: str = "completed") -> dict[str, Callable[[dict], Any]]:
    plans = {
        "d1": {"waves": [[{"table": "patient", "parts": 2}], [{"table": "appointment", "parts": 1}]],
               "deferred": [{"table": "patient", "parts": 1}], "deleted_keys": 0},
        "d2": {"waves": [], "refresh": [{"table": "appointment", "keys": ["7", "9"]}], "deferred": [],
               "deleted_keys": 3},
    }
    return {
        names.CUTOVER_WINDOW: lambda p: {"opened_at": START.isoformat(), "closes_at": CLOSES.isoformat(),
                                         "status": "open"},
        names.PENDING_DELTAS: pending,
        names.PLAN_DELTA: lambda p: {"bundle_id": p["bundle_id"], "base_bundle_id": "x", **plans[p["bundle_id"]]},
        names.DELTA_LOAD_BATCH: lambda p: {"table": p["table"], "part": p["part"], "counts": {"updated": 1}},
        names.DELTA_BIND_DEFERRED: lambda p: {"table": p["table"], "part": p["part"], "counts": {"bound": 1}},
        names.APPLY_DELETIONS: lambda p: {"bundle_id": p["bundle_id"], "counts": {}},
        names.COMMIT_DELTA: lambda p: {"bundle_id": p["bundle_id"], "tables": p["counts"]},
        names.CLOSE_CUTOVER: lambda p: {"status": "closed", "reason": p["reason"]},
        names.RECONCILE: lambda p: {"verdict": verdict, "worst_share": 0.0 if verdict == "completed" else 0.2,
                                    "records_mismatched": 0, "report": "reconciliation/report.json"},
    }


def _run(context: FakeContext) -> Any:
    generator = cutover_orchestrator.build().get_user_function().orchestrator_function(context)
    return list(orchestrator_generator_wrapper(generator))[-1]


def test_deltas_apply_in_chain_order_wave_by_wave_then_go_live_closes_and_reconciles():
    context = FakeContext(_answers(_pending({"ready": ["d1", "d2"]}, {"applied": ["d1", "d2"], "go_live": True})),
                          winners=[])
    result = _run(context)
    called = [(name, payload.get("bundle_id"), payload.get("table"), payload.get("part")) for name, payload in
              context.calls if name not in (names.CUTOVER_WINDOW, names.PENDING_DELTAS)]
    assert called == [
        (names.PLAN_DELTA, "d1", None, None),
        (names.DELTA_LOAD_BATCH, "d1", "patient", 0), (names.DELTA_LOAD_BATCH, "d1", "patient", 1),
        (names.DELTA_LOAD_BATCH, "d1", "appointment", 0),
        (names.DELTA_BIND_DEFERRED, "d1", "patient", 0),
        (names.COMMIT_DELTA, "d1", None, None),  # no deletions in d1: no deletion step
        (names.PLAN_DELTA, "d2", None, None),
        (names.DELTA_LOAD_BATCH, "d2", "appointment", 0),  # parents whose children alone changed
        (names.APPLY_DELETIONS, "d2", None, None),
        (names.COMMIT_DELTA, "d2", None, None),
        (names.CLOSE_CUTOVER, None, None, None),
        (names.RECONCILE, None, None, None),
    ]
    commit = next(p for n, p in context.calls if n == names.COMMIT_DELTA and p["bundle_id"] == "d1")
    assert commit["counts"] == {"patient": {"updated": 2}, "appointment": {"updated": 1}}
    refresh = next(p for n, p in context.calls if n == names.DELTA_LOAD_BATCH and p["bundle_id"] == "d2")
    assert refresh["keys"] == ["7", "9"]
    close = next(p for n, p in context.calls if n == names.CLOSE_CUTOVER)
    assert close["reason"] == "go_live"
    assert result["reason"] == "go_live" and result["verdict"] == "completed"
    assert context.statuses[-1]["stage"] == "completed"


def test_a_wake_up_with_nothing_ready_waits_again_and_the_window_expiry_closes_it():
    context = FakeContext(_answers(_pending({})), winners=[names.DELTAS_ARRIVED_EVENT, "timer"])
    result = _run(context)
    called = [name for name, _ in context.calls]
    assert called == [names.CUTOVER_WINDOW, names.PENDING_DELTAS, names.PENDING_DELTAS, names.PENDING_DELTAS,
                      names.CLOSE_CUTOVER, names.RECONCILE]
    assert next(p for n, p in context.calls if n == names.CLOSE_CUTOVER)["reason"] == "expired"
    assert result["reason"] == "expired"
    assert any(s["stage"] == "cutover_open" and s["closes_at"] == CLOSES.isoformat() for s in context.statuses)


def test_a_delta_uploaded_just_before_the_end_is_still_applied_when_the_window_expires():
    pending = _pending({}, {"ready": ["d2"]}, {"applied": ["d2"]})
    context = FakeContext(_answers(pending), winners=["timer"])
    result = _run(context)
    called = [name for name, _ in context.calls]
    assert called.index(names.COMMIT_DELTA) < called.index(names.CLOSE_CUTOVER)
    assert result["reason"] == "expired"


def test_beyond_the_tolerance_with_auto_rollback_the_rollback_orchestration_starts():
    context = FakeContext(_answers(_pending({"go_live": True}), verdict="rollback_started"), winners=[])
    result = _run(context)
    name, payload = context.calls[-1]
    assert name == names.ROLLBACK_ORCHESTRATOR and payload["instance_id"] == "m-1:rollback"
    assert result["verdict"] == "rollback_started"
    assert context.statuses[-1]["stage"] == "rollback_started"
