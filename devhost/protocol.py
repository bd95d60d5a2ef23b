"""The out-of-process Durable protocol: history events in, orchestrator state and actions out.

This mirrors what the Durable extension sends to a Python worker and reads back
(../shared/reference/durable.md §3b). The enum values come from the pinned SDK itself
(`azure-functions-durable==1.7.0`), so a change there fails `tests/devhost/test_protocol.py`
rather than silently breaking replay.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType

__all__ = [
    "ActionType",
    "EpisodeState",
    "HistoryEventType",
    "OrchestratorFailure",
    "action_signature",
    "build_context",
    "flatten_actions",
    "format_time",
    "make_event",
    "parse_time",
    "run_orchestrator",
]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_OUT_OF_PROC_LABEL = "$OutOfProcData$:"

# ReplaySchema V2 and V3, as the extension sends them (V3 is what the 1.7.0 SDK uses).
_UPPER_SCHEMA_VERSION = 1
_UPPER_SCHEMA_VERSION_NEW = 2


def format_time(moment: datetime) -> str:
    """A UTC datetime in the history's timestamp format."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def make_event(event_type: HistoryEventType, timestamp: datetime, event_id: int = -1, **fields: Any) -> dict:
    """One history event as the extension serialises it (extra fields become attributes in the SDK)."""
    return {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_time(timestamp),
        **fields,
    }


def build_context(
    instance_id: str,
    input_text: str | None,
    played: list[dict],
    new: list[dict],
    parent_instance_id: str | None,
) -> str:
    """The orchestration trigger's context JSON: earlier episodes marked played, then this episode's events."""
    history = [{**event, "IsPlayed": True} for event in played] + new
    return json.dumps(
        {
            "history": history,
            "input": input_text,
            "instanceId": instance_id,
            "isReplaying": bool(played),
            "parentInstanceId": parent_instance_id,
            "upperSchemaVersion": _UPPER_SCHEMA_VERSION,
            "upperSchemaVersionNew": _UPPER_SCHEMA_VERSION_NEW,
        }
    )


@dataclass
class EpisodeState:
    """What one orchestrator invocation returned."""

    is_done: bool
    actions: list[dict]
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    continue_as_new_input: str | None = None
    continued_as_new: bool = field(default=False)


class OrchestratorFailure(Exception):
    """The orchestrator function itself raised: the instance fails with this error."""

    def __init__(self, error: str, state: EpisodeState) -> None:
        super().__init__(error)
        self.error = error
        self.state = state


def _state_from_json(payload: dict) -> EpisodeState:
    actions = flatten_actions(payload.get("actions") or [])
    continue_input = None
    continued = False
    for action in actions:
        if action.get("actionType") == ActionType.CONTINUE_AS_NEW:
            continued = True
            continue_input = action.get("input")
    return EpisodeState(
        is_done=bool(payload.get("isDone")),
        actions=actions,
        output=payload.get("output"),
        error=payload.get("error"),
        custom_status=payload.get("customStatus"),
        continue_as_new_input=continue_input,
        continued_as_new=continued,
    )


def run_orchestrator(handle: Any, context_json: str) -> EpisodeState:
    """Call the SDK's orchestrator handle once (a full replay) and parse its state.

    Raises OrchestratorFailure when the orchestrator raised, carrying the state the SDK attached
    after the `$OutOfProcData$` label, as the real host reads it.
    """
    try:
        result = handle(context_json)
    except Exception as exc:  # the SDK wraps every orchestrator exception this way
        message = str(exc)
        if _OUT_OF_PROC_LABEL not in message:
            raise
        _, _, state_json = message.rpartition(_OUT_OF_PROC_LABEL)
        state = _state_from_json(json.loads(state_json))
        raise OrchestratorFailure(state.error or message.split("\n\n")[0], state) from None
    payload = json.loads(result) if isinstance(result, str) else result
    return _state_from_json(payload)


def flatten_actions(actions: list) -> list[dict]:
    """All actions in the order the SDK assigned their sequence numbers (compound actions expanded)."""
    flat: list[dict] = []

    def walk(items: list) -> None:
        for item in items:
            if isinstance(item, list):  # schema V1 nests one list per yield; V2+ has one list
                walk(item)
            elif item.get("actionType") in (ActionType.WHEN_ALL, ActionType.WHEN_ANY):
                walk(item.get("compoundActions") or [])
            else:
                flat.append(item)

    walk(actions)
    return flat


def action_signature(action: dict) -> str:
    """A short digest of what an action asks for; replay must reproduce it exactly.

    `isCanceled` is left out: `timer.cancel()` flips it on an action already emitted.
    """
    essential = {key: value for key, value in action.items() if key != "isCanceled"}
    digest = hashlib.sha256(json.dumps(essential, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def describe_action(action: dict) -> str:
    """A log- and error-safe description of an action: its type and function name, never its input."""
    kind = ActionType(action.get("actionType")).name if "actionType" in action else "?"
    name = action.get("functionName") or action.get("externalEventName") or ""
    return f"{kind} {name}".strip()
