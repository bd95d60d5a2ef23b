"""The wire format the local host relies on still matches the pinned Durable SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.durable_functions as df
import pytest

from devhost.functions import route_pattern
from devhost.protocol import (
    ActionType,
    HistoryEventType,
    OrchestratorFailure,
    build_context,
    flatten_actions,
    make_event,
    run_orchestrator,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _two_activities(context: df.DurableOrchestrationContext):
    first, second = yield context.task_all([context.call_activity("a", 1), context.call_activity("b", 2)])
    return first + second


def _failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("a", 1)
    raise ValueError("step failed for batch 7")


def test_sdk_enum_values_are_the_ones_the_extension_uses():
    assert (HistoryEventType.EXECUTION_STARTED, HistoryEventType.TASK_COMPLETED, HistoryEventType.TIMER_FIRED,
            HistoryEventType.ORCHESTRATOR_STARTED, HistoryEventType.EVENT_RAISED) == (0, 5, 11, 12, 15)
    assert (ActionType.CALL_ACTIVITY, ActionType.CREATE_TIMER, ActionType.WHEN_ALL) == (0, 5, 12)


def test_first_episode_schedules_both_activities_of_a_task_all_in_order():
    handle = df.Orchestrator.create(_two_activities)
    start = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, T0),
             make_event(HistoryEventType.EXECUTION_STARTED, T0, Name="two", Version="", Input=None)]
    state = run_orchestrator(handle, build_context("i1", None, [], start, None))
    assert not state.is_done
    assert [(a["actionType"], a["functionName"], a["input"]) for a in state.actions] == [(0, "a", "1"), (0, "b", "2")]


def test_replay_with_both_completions_returns_the_sum():
    handle = df.Orchestrator.create(_two_activities)
    played = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, T0),
              make_event(HistoryEventType.EXECUTION_STARTED, T0, Name="two", Version="", Input=None),
              make_event(HistoryEventType.TASK_SCHEDULED, T0, event_id=0, Name="a"),
              make_event(HistoryEventType.TASK_SCHEDULED, T0, event_id=1, Name="b"),
              make_event(HistoryEventType.ORCHESTRATOR_COMPLETED, T0)]
    new = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, T0),
           make_event(HistoryEventType.TASK_COMPLETED, T0, TaskScheduledId=1, Result="20"),
           make_event(HistoryEventType.TASK_COMPLETED, T0, TaskScheduledId=0, Result="10")]
    state = run_orchestrator(handle, build_context("i1", None, played, new, None))
    assert state.is_done and state.output == 30


def test_orchestrator_exception_comes_back_as_failure_with_its_message():
    handle = df.Orchestrator.create(_failing)
    history = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, T0),
               make_event(HistoryEventType.EXECUTION_STARTED, T0, Name="f", Version="", Input=None),
               make_event(HistoryEventType.TASK_SCHEDULED, T0, event_id=0, Name="a"),
               make_event(HistoryEventType.ORCHESTRATOR_COMPLETED, T0)]
    new = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, T0),
           make_event(HistoryEventType.TASK_COMPLETED, T0, TaskScheduledId=0, Result="1")]
    with pytest.raises(OrchestratorFailure) as failure:
        run_orchestrator(handle, build_context("i1", None, history, new, None))
    assert failure.value.error == "step failed for batch 7"


def test_flatten_expands_compound_actions_in_sequence_order():
    actions = [[{"actionType": 12, "compoundActions": [
        {"actionType": 0, "functionName": "a"},
        {"actionType": 11, "compoundActions": [{"actionType": 5, "fireAt": "x"}, {"actionType": 6}]}]},
        {"actionType": 0, "functionName": "b"}]]
    assert [a["actionType"] for a in flatten_actions(actions)] == [0, 5, 6, 0]


@pytest.mark.parametrize(("route", "path", "expected"), [
    ("migrations/{id}", "migrations/m-1", {"id": "m-1"}),
    ("migrations/{id}/mapping", "migrations/m-1/mapping", {"id": "m-1"}),
    ("echo/{word?}", "echo", {}),
    ("files/{*rest}", "files/a/b.txt", {"rest": "a/b.txt"}),
    ("migrations/{id:guid}", "migrations/abc", {"id": "abc"}),
])
def test_route_templates_match_like_the_functions_host(route, path, expected):
    found = route_pattern(route).fullmatch(path)
    assert found is not None
    assert {k: v for k, v in found.groupdict().items() if v is not None} == expected


def test_route_templates_do_not_match_other_paths():
    assert route_pattern("migrations/{id}").fullmatch("migrations/a/b") is None
