"""The task hub engine: runs orchestrations through the SDK's replay engine, activities in a pool.

How an orchestration moves (the out-of-process protocol of ../shared/reference/durable.md §3b):
1. Events for an instance arrive as messages (start, activity completed/failed, timer fired, event
   raised, sub-orchestration completed/failed, terminate), each persisted before it counts.
2. An episode takes the instance's deliverable messages, appends `OrchestratorStarted` + their
   events to the history, calls the orchestrator handle with the whole history (a full replay),
   checks that the replay reproduced every action recorded so far (determinism), and turns each new
   action into history events and outgoing work: activities, timers, sub-orchestrations.
3. Outgoing work is persisted first, then the history, then the instance row, and only then are the
   consumed messages deleted. A crash anywhere repeats the episode, which produces the same
   deterministic ids and upserts, and duplicate completions are dropped by checking the history.

Ids follow the SDK: every action but "wait for event" and "continue as new" takes the next sequence
number in the order the SDK flattens actions. A `call_*_with_retry` failure takes one more number for
its retry timer when the failure is delivered, and the retry's re-run one more when that timer fires.
Those allocations happen while the SDK replays the event, so an episode that delivers one carries
that event alone: that keeps the numbering unambiguous.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .clock import Clock
from .functions import FunctionIndex, call_function
from .protocol import (
    ActionType,
    EpisodeState,
    HistoryEventType,
    OrchestratorFailure,
    action_signature,
    build_context,
    describe_action,
    format_time,
    make_event,
    parse_time,
    run_orchestrator,
)
from .stalls import LoopStalls
from .store import HubStore

log = logging.getLogger("devhost")

RUNNING_STATES = ("Pending", "Running")
TERMINAL_STATES = ("Completed", "Failed", "Terminated")

_SCHEDULING = {
    HistoryEventType.TASK_SCHEDULED,
    HistoryEventType.TIMER_CREATED,
    HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
}
_COMPLETING = {
    HistoryEventType.TASK_COMPLETED: "TaskScheduledId",
    HistoryEventType.TASK_FAILED: "TaskScheduledId",
    HistoryEventType.TIMER_FIRED: "TimerId",
    HistoryEventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED: "TaskScheduledId",
    HistoryEventType.SUB_ORCHESTRATION_INSTANCE_FAILED: "TaskScheduledId",
}


class InstanceConflict(Exception):
    """An instance with this id is still running."""


class UnknownOrchestrator(Exception):
    """No orchestrator function has this name."""


class InstanceNotFound(Exception):
    """No instance has this id."""


class InstanceGone(Exception):
    """The instance has already completed, failed or been terminated."""


@dataclass
class Message:
    instance_id: str
    message_id: str
    kind: str
    due: datetime
    payload: dict[str, Any]
    generation: int | None  # None: valid for any generation (raised events, terminate)

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": self.instance_id,
            "RowKey": self.message_id,
            "Kind": self.kind,
            "Due": format_time(self.due),
            "Payload": json.dumps(self.payload),
            "Generation": -1 if self.generation is None else self.generation,
        }

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> Message:
        generation = int(row["Generation"])
        return cls(
            row["PartitionKey"], row["RowKey"], row["Kind"], parse_time(row["Due"]),
            json.loads(row["Payload"]), None if generation < 0 else generation,
        )


@dataclass
class WorkItem:
    instance_id: str
    generation: int
    task_id: int
    name: str
    input_text: str | None

    @property
    def row_key(self) -> str:
        return f"w-{self.generation:06d}-{self.task_id:08d}"

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": self.instance_id,
            "RowKey": self.row_key,
            "Kind": "work_item",
            "Name": self.name,
            "Payload": json.dumps({"input": self.input_text}),
            "Generation": self.generation,
            "TaskId": self.task_id,
        }

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> WorkItem:
        payload = json.loads(row["Payload"])
        return cls(row["PartitionKey"], int(row["Generation"]), int(row["TaskId"]), row["Name"], payload["input"])


@dataclass
class Instance:
    """One orchestration instance: its status and what replay needs beyond the history."""

    instance_id: str
    name: str
    status: str
    input_text: str | None
    created: datetime
    updated: datetime
    output_text: str | None = None
    custom_status_text: str | None = None
    parent_instance_id: str | None = None
    parent_task_id: int | None = None
    parent_generation: int | None = None
    generation: int = 0
    next_seq: int = 0
    actions: list[str] = field(default_factory=list)  # "signature|description" per flattened action
    action_ids: list[int | None] = field(default_factory=list)
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)  # attempt/timer id -> retry group
    history: list[dict] = field(default_factory=list)
    persisted_events: int = 0
    committed_events: int = 0
    """History length the instance row vouches for: rows past it belong to an episode that did not
    finish persisting (the host died mid-way) and are ignored, then overwritten when it repeats."""

    def to_entity(self) -> dict[str, Any]:
        state = {
            "generation": self.generation,
            "next_seq": self.next_seq,
            "history_length": len(self.history),
            "actions": self.actions,
            "action_ids": self.action_ids,
            "retries": self.retries,
            "parent_task_id": self.parent_task_id,
            "parent_generation": self.parent_generation,
        }
        return {
            "PartitionKey": self.instance_id,
            "RowKey": "",
            "Name": self.name,
            "RuntimeStatus": self.status,
            "Input": self.input_text,
            "Output": self.output_text,
            "CustomStatus": self.custom_status_text,
            "CreatedTime": format_time(self.created),
            "LastUpdatedTime": format_time(self.updated),
            "ParentInstanceId": self.parent_instance_id,
            "State": json.dumps(state),
        }

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> Instance:
        state = json.loads(row["State"])
        return cls(
            instance_id=row["PartitionKey"],
            name=row["Name"],
            status=row["RuntimeStatus"],
            input_text=row.get("Input"),
            created=parse_time(row["CreatedTime"]),
            updated=parse_time(row["LastUpdatedTime"]),
            output_text=row.get("Output"),
            custom_status_text=row.get("CustomStatus"),
            parent_instance_id=row.get("ParentInstanceId"),
            parent_task_id=state["parent_task_id"],
            parent_generation=state["parent_generation"],
            generation=state["generation"],
            next_seq=state["next_seq"],
            committed_events=state.get("history_length", 0),
            actions=state["actions"],
            action_ids=state["action_ids"],
            retries=state["retries"],
        )

    def scheduled_ids(self) -> set[int]:
        return {e["EventId"] for e in self.history if e["EventType"] in _SCHEDULING}

    def completed_ids(self) -> set[int]:
        done = set()
        for event in self.history:
            key = _COMPLETING.get(HistoryEventType(event["EventType"]))
            if key:
                done.add(event[key])
        return done

    def raised_message_ids(self) -> set[str]:
        return {
            e.get("MessageId") for e in self.history if e["EventType"] == HistoryEventType.EVENT_RAISED
        }


@dataclass
class _Outgoing:
    """Work an episode produced, persisted before the history that records it."""

    work_items: list[WorkItem] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    children: list[Instance] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)


class TaskHub:
    """Runs every instance of one task hub. One host process owns a task hub at a time."""

    def __init__(
        self,
        functions: FunctionIndex,
        store: HubStore,
        clock: Clock,
        *,
        max_activities: int = 8,
        max_orchestrations: int = 4,
        duplicate_activities: float = 0.0,
        duplicate_seed: int | None = None,
    ) -> None:
        self.functions = functions
        # Chaos testing: at-least-once delivery made visible. With this probability an activity runs
        # a second time with the same input, and the first result is the one the orchestration sees.
        self.duplicate_activities = duplicate_activities
        self._duplicates = random.Random(duplicate_seed)
        self.duplicated = 0
        self.completed_activities = 0
        """Activities this process ran to a recorded result (chaos tests wait for progress between kills)."""
        self.store = store
        self.clock = clock
        self.max_activities = max_activities
        self.max_orchestrations = max_orchestrations
        self._instances: dict[str, Instance] = {}
        self._messages: dict[str, dict[str, Message]] = {}
        self._timers: list[tuple[datetime, str]] = []
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._activities: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._running_activities = 0
        self._wake_timers = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._threads = ThreadPoolExecutor(max_workers=max_activities, thread_name_prefix="activity")
        self._reported_waits: set[str] = set()
        self.stalls = LoopStalls()
        self.binding_factory: Callable[[], str] | None = None

    # Life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load pending work from storage (resuming after a crash) and start the dispatchers."""
        await self.store.open()
        resumed = 0
        for row in await self.store.list_rows("messages"):
            if row["Kind"] == "work_item":
                self._activities.put_nowait(WorkItem.from_entity(row))
                resumed += 1
            else:
                self._remember_message(Message.from_entity(row))
        if resumed or self._messages:
            log.info("resuming: %d activities in flight, %d instances with pending events",
                     resumed, len(self._messages))
        for instance_id in list(self._messages):
            self._schedule_due(instance_id)
        for _ in range(self.max_orchestrations):
            self._tasks.append(asyncio.create_task(self._orchestration_worker()))
        for _ in range(self.max_activities):
            self._tasks.append(asyncio.create_task(self._activity_worker()))
        self._tasks.append(asyncio.create_task(self._timer_pump()))
        self._tasks.append(asyncio.create_task(self.stalls.watch()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)
        await self.store.close()

    def is_idle(self) -> bool:
        due_now = any(
            message.due <= self.clock.now() for messages in self._messages.values() for message in messages.values()
        )
        return (
            not due_now
            and self._ready.empty()
            and not self._busy
            and self._activities.empty()
            and self._running_activities == 0
        )

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_idle():
                await asyncio.sleep(0.02)  # settle: a just-finished step may enqueue more
                if self.is_idle():
                    return True
            await asyncio.sleep(0.01)
        return False

    def clock_moved(self) -> None:
        """The virtual clock moved: re-check timers."""
        self._wake_timers.set()

    # Client operations --------------------------------------------------------------------------

    async def start_new(self, name: str, instance_id: str | None, input_text: str | None) -> str:
        if name not in self.functions.orchestrators:
            raise UnknownOrchestrator(name)
        instance_id = instance_id or uuid.uuid4().hex
        existing = await self._load(instance_id)
        if existing is not None and existing.status in RUNNING_STATES:
            raise InstanceConflict(instance_id)
        await self._create_instance(name, instance_id, input_text, parent=None, previous=existing)
        log.info("instance %s: %s scheduled", instance_id, name)
        return instance_id

    async def raise_event(self, instance_id: str, event_name: str, data_text: str | None) -> None:
        instance = await self._load(instance_id)
        if instance is None:
            raise InstanceNotFound(instance_id)
        if instance.status in TERMINAL_STATES:
            raise InstanceGone(instance_id)
        message = Message(instance_id, f"e-{uuid.uuid4().hex}", "event_raised", self.clock.now(),
                          {"name": event_name, "input": data_text}, None)
        await self._send(message)
        log.info("instance %s: event %s raised", instance_id, event_name)

    async def terminate(self, instance_id: str, reason: str) -> None:
        instance = await self._load(instance_id)
        if instance is None:
            raise InstanceNotFound(instance_id)
        if instance.status in TERMINAL_STATES:
            raise InstanceGone(instance_id)
        await self._send(Message(instance_id, f"x-{uuid.uuid4().hex}", "terminate", self.clock.now(),
                                 {"reason": reason}, None))

    async def purge(self, instance_id: str) -> bool:
        instance = await self._load(instance_id)
        if instance is None:
            return False
        await self.store.delete_instance(instance_id)
        self._instances.pop(instance_id, None)
        self._messages.pop(instance_id, None)
        log.info("instance %s: purged", instance_id)
        return True

    async def get(self, instance_id: str) -> Instance | None:
        return await self._load(instance_id)

    async def history(self, instance_id: str) -> list[dict]:
        instance = await self._load(instance_id)
        return list(instance.history) if instance else []

    async def list_instances(self) -> list[Instance]:
        rows = await self.store.list_instances()
        instances = []
        for row in rows:
            cached = self._instances.get(row["PartitionKey"])
            instances.append(cached if cached is not None else Instance.from_entity(row))
        return instances

    # Loading ------------------------------------------------------------------------------------

    async def _load(self, instance_id: str) -> Instance | None:
        cached = self._instances.get(instance_id)
        if cached is not None:
            return cached
        row = await self.store.get_instance(instance_id)
        if row is None:
            return None
        instance = Instance.from_entity(row)
        history = await self.store.load_history(instance_id, instance.generation)
        instance.history = history[: instance.committed_events]
        instance.persisted_events = len(instance.history)
        if instance.status in TERMINAL_STATES and not self._messages.get(instance_id):
            return instance  # a status read of an ended instance: no episode will run on it, keep it out of memory
        # Two loads may race (an episode and a status request): the first one cached wins, or a
        # later episode would run on a copy that misses the events the first one appended.
        return self._instances.setdefault(instance_id, instance)

    async def _create_instance(
        self,
        name: str,
        instance_id: str,
        input_text: str | None,
        parent: tuple[str, int, int] | None,
        previous: Instance | None,
    ) -> Instance:
        now = self.clock.now()
        generation = previous.generation + 1 if previous is not None else 0
        instance = Instance(instance_id, name, "Pending", input_text, created=now, updated=now,
                            generation=generation)
        if parent is not None:
            instance.parent_instance_id, instance.parent_task_id, instance.parent_generation = parent
        start = Message(instance_id, f"s-{generation:06d}", "start", now, {}, generation)
        # The start message first: an instance row without it would never run.
        await self.store.put_row("messages", start.to_entity())
        await self.store.put_instance(instance.to_entity())
        if previous is not None:
            await self.store.delete_history_before(instance_id, generation)
        self._instances[instance_id] = instance
        self._remember_message(start)
        self._schedule_due(instance_id)
        return instance

    # Messages and scheduling --------------------------------------------------------------------

    def _remember_message(self, message: Message) -> None:
        self._messages.setdefault(message.instance_id, {})[message.message_id] = message

    async def _send(self, message: Message) -> None:
        await self.store.put_row("messages", message.to_entity())
        self._remember_message(message)
        self._schedule_due(message.instance_id)

    def _schedule_due(self, instance_id: str, future_only: bool = False) -> None:
        messages = self._messages.get(instance_id)
        if not messages:
            return
        now = self.clock.now()
        if future_only:
            later = [message.due for message in messages.values() if message.due > now]
            if later:
                heapq.heappush(self._timers, (min(later), instance_id))
                self._wake_timers.set()
            return
        earliest = min(message.due for message in messages.values())
        if earliest <= now:
            self._mark_ready(instance_id)
        else:
            heapq.heappush(self._timers, (earliest, instance_id))
            self._wake_timers.set()

    def _mark_ready(self, instance_id: str) -> None:
        if instance_id in self._busy:
            self._again.add(instance_id)
        elif instance_id not in self._queued:
            self._queued.add(instance_id)
            self._ready.put_nowait(instance_id)

    async def _timer_pump(self) -> None:
        while True:
            self._wake_timers.clear()
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                _, instance_id = heapq.heappop(self._timers)
                self._mark_ready(instance_id)
            if self._timers:
                await self.clock.sleep_until(self._timers[0][0], self._wake_timers)
            else:
                await self._wake_timers.wait()

    # Orchestrations -----------------------------------------------------------------------------

    async def _orchestration_worker(self) -> None:
        while True:
            instance_id = await self._ready.get()
            self._queued.discard(instance_id)
            self._busy.add(instance_id)
            progressed = True
            try:
                progressed = await self._process(instance_id)
            except Exception as exc:
                # A storage failure mid-episode (Azurite reset a connection, say). Forget what this
                # episode changed in memory and replay from what storage holds, exactly as after a
                # crash: the messages are still there and the episode is deterministic.
                log.warning("instance %s: episode failed in the host (%s); replaying from storage",
                            instance_id, type(exc).__name__)
                self._instances.pop(instance_id, None)
                await asyncio.sleep(0.5)
                self._again.add(instance_id)
            finally:
                self._busy.discard(instance_id)
                self._forget_if_finished(instance_id)
                if instance_id in self._again:
                    self._again.discard(instance_id)
                    self._mark_ready(instance_id)
                elif progressed:
                    self._schedule_due(instance_id)
                else:
                    # Nothing could be delivered: wait for a new message or a timer rather than
                    # spinning on the same undeliverable ones.
                    self._schedule_due(instance_id, future_only=True)
            await asyncio.sleep(0)  # let activities and HTTP run between episodes

    def _forget_if_finished(self, instance_id: str) -> None:
        """Evict an ended instance with nothing left to deliver from memory: storage holds it, and `_load`
        reads it back for a status request. Without this every instance a long-running host ever ran kept its
        whole history in memory."""
        instance = self._instances.get(instance_id)
        if instance is not None and instance.status in TERMINAL_STATES and not self._messages.get(instance_id):
            self._instances.pop(instance_id, None)
            self._messages.pop(instance_id, None)
            self._reported_waits.discard(instance_id)

    @property
    def cached_instances(self) -> int:
        """Instances held in memory (running ones, and ended ones still receiving messages)."""
        return len(self._instances)

    async def _drop(self, messages: list[Message]) -> None:
        for message in messages:
            await self.store.delete_row("messages", message.instance_id, message.message_id)
            self._messages.get(message.instance_id, {}).pop(message.message_id, None)

    async def _process(self, instance_id: str) -> bool:
        """Run the instance's next episode if any message can be delivered; True if anything moved."""
        now = self.clock.now()
        pending = sorted(
            (m for m in self._messages.get(instance_id, {}).values() if m.due <= now),
            key=lambda m: (m.due, m.message_id),
        )
        if not pending:
            return False
        instance = await self._load(instance_id)
        if instance is None:
            await self._drop(pending)
            return True
        terminate = next((m for m in pending if m.kind == "terminate"), None)
        if terminate is not None and instance.status in RUNNING_STATES:
            await self._terminate_now(instance, terminate.payload.get("reason", ""))
            await self._drop(pending)
            return True
        if instance.status in TERMINAL_STATES:
            await self._drop(pending)
            return True

        delivered, stale, allocating = self._choose_deliveries(instance, pending)
        if stale:
            await self._drop(stale)
        if not delivered:
            waiting = len(pending) - len(stale)
            if waiting and instance.history and instance_id not in self._reported_waits:
                # Completions for tasks the history does not schedule: only a torn write could do
                # this. Say so once, with counts, so an operator can look.
                self._reported_waits.add(instance_id)
                log.warning("instance %s: %d events wait for tasks its history does not schedule",
                            instance_id, waiting)
            return bool(stale)
        self._reported_waits.discard(instance_id)
        await self._run_episode(instance, delivered, allocating)
        return True

    def _choose_deliveries(
        self, instance: Instance, pending: list[Message]
    ) -> tuple[list[Message], list[Message], bool]:
        """Which messages go into the next episode, which are stale, and whether it allocates ids."""
        scheduled = instance.scheduled_ids()
        completed = instance.completed_ids()
        raised = instance.raised_message_ids()
        delivered: list[Message] = []
        stale: list[Message] = []
        for message in pending:
            if message.generation is not None and message.generation != instance.generation:
                stale.append(message)
                continue
            if message.kind == "start":
                if instance.history:
                    stale.append(message)
                    continue
                return [message], stale, False
            if not instance.history:
                continue  # nothing else can be delivered before the start
            if message.kind == "event_raised":
                if message.message_id in raised:
                    stale.append(message)
                else:
                    delivered.append(message)
                continue
            task_id = int(message.payload["task_id"])
            if task_id in completed:
                stale.append(message)
                continue
            if task_id not in scheduled:
                continue  # its scheduling event is not persisted yet: wait
            if str(task_id) in instance.retries:
                # Delivering this makes the SDK allocate an id: alone, so numbering stays unambiguous.
                if delivered:
                    break
                return [message], stale, True
            delivered.append(message)
        return delivered, stale, False

    def _event_for(self, instance: Instance, message: Message, now: datetime) -> dict:
        payload = message.payload
        kind = message.kind
        if kind == "start":
            fields: dict[str, Any] = {"Name": instance.name, "Version": "", "Input": instance.input_text}
            if instance.parent_instance_id:
                fields["ParentInstance"] = {"OrchestrationInstance": {"InstanceId": instance.parent_instance_id}}
            return make_event(HistoryEventType.EXECUTION_STARTED, now, **fields)
        if kind == "activity_completed":
            return make_event(HistoryEventType.TASK_COMPLETED, now, TaskScheduledId=payload["task_id"],
                              Result=payload["result"])
        if kind == "activity_failed":
            return make_event(HistoryEventType.TASK_FAILED, now, TaskScheduledId=payload["task_id"],
                              Reason=payload["reason"], Details=payload["details"])
        if kind == "timer_fired":
            return make_event(HistoryEventType.TIMER_FIRED, now, TimerId=payload["task_id"],
                              FireAt=payload["fire_at"])
        if kind == "suborchestration_completed":
            return make_event(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, now,
                              TaskScheduledId=payload["task_id"], Result=payload["result"])
        if kind == "suborchestration_failed":
            return make_event(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                              TaskScheduledId=payload["task_id"], Reason=payload["reason"],
                              Details=payload["details"])
        if kind == "event_raised":
            return make_event(HistoryEventType.EVENT_RAISED, now, Name=payload["name"], Input=payload["input"],
                              MessageId=message.message_id)
        raise ValueError(f"unknown message kind {kind!r}")

    async def _run_episode(self, instance: Instance, delivered: list[Message], allocating: bool) -> None:
        started = time.perf_counter()
        now = self.clock.now()
        new_events = [make_event(HistoryEventType.ORCHESTRATOR_STARTED, now)]
        new_events += [self._event_for(instance, message, now) for message in delivered]
        handle = self.functions.orchestrators.get(instance.name)
        failure: str | None = None
        state = EpisodeState(is_done=False, actions=[])
        if handle is None:
            failure = f"orchestrator function '{instance.name}' does not exist in this app"
        else:
            context = build_context(instance.instance_id, instance.input_text, instance.history, new_events,
                                    instance.parent_instance_id)
            try:
                state = run_orchestrator(handle, context)
            except OrchestratorFailure as exc:
                state, failure = exc.state, exc.error
            except Exception as exc:  # an SDK-internal error: the instance fails, the host goes on
                failure = f"{type(exc).__name__}: {exc}"
            divergence = self._check_determinism(instance, state, partial=failure is not None)
            if divergence:
                failure = divergence

        outgoing = _Outgoing()
        if allocating and failure is None:
            new_events += self._allocate_retry(instance, delivered[0], now, outgoing)
        if failure is None:
            new_events += self._schedule_actions(instance, state, now, outgoing)
        new_events.append(make_event(HistoryEventType.ORCHESTRATOR_COMPLETED, now))

        if state.custom_status is not None:
            instance.custom_status_text = json.dumps(state.custom_status)
        continued = failure is None and state.is_done and state.continued_as_new
        parent_message: Message | None = None
        if failure is not None:
            instance.status = "Failed"
            instance.output_text = json.dumps(failure)
            new_events.append(make_event(HistoryEventType.EXECUTION_COMPLETED, now, OrchestrationStatus="Failed",
                                         Result=instance.output_text))
            parent_message = self._parent_message(instance, "suborchestration_failed", now,
                                                  reason=failure, details="")
        elif state.is_done and not continued:
            instance.status = "Completed"
            instance.output_text = json.dumps(state.output)
            new_events.append(make_event(HistoryEventType.EXECUTION_COMPLETED, now,
                                         OrchestrationStatus="Completed", Result=instance.output_text))
            parent_message = self._parent_message(instance, "suborchestration_completed", now,
                                                  result=instance.output_text)
        else:
            instance.status = "Running"
        instance.updated = now
        if parent_message is not None:
            outgoing.messages.append(parent_message)

        # Persist: outgoing work, then history, then the instance, then consume the messages.
        for child in outgoing.children:
            previous = await self._load(child.instance_id)
            if previous is not None and previous.generation >= child.generation:
                child.generation = previous.generation + 1
            start = Message(child.instance_id, f"s-{child.generation:06d}", "start", now, {}, child.generation)
            await self.store.put_row("messages", start.to_entity())
            await self.store.put_instance(child.to_entity())
            if previous is not None:
                await self.store.delete_history_before(child.instance_id, child.generation)
            self._instances[child.instance_id] = child
            self._remember_message(start)
        for message in outgoing.messages:
            await self.store.put_row("messages", message.to_entity())
            self._remember_message(message)
        for item in outgoing.work_items:
            await self.store.put_row("messages", item.to_entity())
        for timer_id in outgoing.cancelled_timers:
            message_id = f"t-{instance.generation:06d}-{timer_id:08d}"
            await self.store.delete_row("messages", instance.instance_id, message_id)
            self._messages.get(instance.instance_id, {}).pop(message_id, None)
        instance.history.extend(new_events)
        await self.store.append_history(instance.instance_id, instance.generation, instance.persisted_events,
                                        instance.history[instance.persisted_events :])
        instance.persisted_events = len(instance.history)
        if continued:
            await self._continue_as_new(instance, state.continue_as_new_input, now)
        else:
            await self.store.put_instance(instance.to_entity())
        await self._drop(delivered)

        for item in outgoing.work_items:
            self._activities.put_nowait(item)
        for child in outgoing.children:
            self._schedule_due(child.instance_id)
        for message in outgoing.messages:
            self._schedule_due(message.instance_id)
        elapsed = (time.perf_counter() - started) * 1000
        log.info("instance %s: %s episode, %d events in, %d activities, %d timers, status %s (%.0f ms)",
                 instance.instance_id, instance.name, len(delivered), len(outgoing.work_items),
                 sum(1 for m in outgoing.messages if m.kind == "timer_fired"), instance.status, elapsed)
        if failure is not None:
            log.warning("instance %s: %s failed: %s", instance.instance_id, instance.name,
                        failure.splitlines()[0][:300])

    def _check_determinism(self, instance: Instance, state: EpisodeState, partial: bool) -> str | None:
        for position, recorded in enumerate(instance.actions):
            if position >= len(state.actions):
                if partial:
                    return None
                signature, _, description = recorded.partition("|")
                return (f"Non-deterministic orchestrator '{instance.name}' (instance {instance.instance_id}): "
                        f"history records action {position} ({description}) but the replay stopped before it")
            actual = state.actions[position]
            signature, _, description = recorded.partition("|")
            if action_signature(actual) != signature:
                return (f"Non-deterministic orchestrator '{instance.name}' (instance {instance.instance_id}): "
                        f"at action {position} the replay produced {describe_action(actual)} but the history "
                        f"records {description} (with its own inputs); the orchestrator must make the same "
                        f"calls in the same order on every replay")
        return None

    def _allocate_retry(self, instance: Instance, message: Message, now: datetime, outgoing: _Outgoing) -> list[dict]:
        """Mirror the SDK's retry bookkeeping: a timer after each failure, a re-run when it fires."""
        task_id = int(message.payload["task_id"])
        group = instance.retries.pop(str(task_id))
        events: list[dict] = []
        if message.kind in ("activity_failed", "suborchestration_failed"):
            timer_id = instance.next_seq
            instance.next_seq += 1
            fire_at = now + timedelta(milliseconds=group["interval_ms"])
            events.append(make_event(HistoryEventType.TIMER_CREATED, now, event_id=timer_id,
                                     FireAt=format_time(fire_at)))
            instance.retries[str(timer_id)] = group
            outgoing.messages.append(self._timer_message(instance, timer_id, fire_at))
        elif message.kind == "timer_fired":
            if group["attempts"] < group["max_attempts"]:
                group["attempts"] += 1
                rerun_id = instance.next_seq
                instance.next_seq += 1
                instance.retries[str(rerun_id)] = group
                events += self._schedule_call(instance, group, rerun_id, now, outgoing)
        # On success the group is simply done.
        return events

    def _schedule_actions(self, instance: Instance, state: EpisodeState, now: datetime, outgoing: _Outgoing) -> list[dict]:
        events: list[dict] = []
        # Timers cancelled after they were scheduled (task_any winner decided): never fire them.
        for position, action in enumerate(state.actions[: len(instance.actions)]):
            if action.get("actionType") == ActionType.CREATE_TIMER and action.get("isCanceled"):
                timer_id = instance.action_ids[position]
                if timer_id is not None and timer_id not in instance.completed_ids():
                    outgoing.cancelled_timers.append(timer_id)
        for action in state.actions[len(instance.actions) :]:
            kind = action.get("actionType")
            instance.actions.append(f"{action_signature(action)}|{describe_action(action)}")
            if kind in (ActionType.WAIT_FOR_EXTERNAL_EVENT, ActionType.CONTINUE_AS_NEW):
                instance.action_ids.append(None)
                continue
            task_id = instance.next_seq
            instance.next_seq += 1
            instance.action_ids.append(task_id)
            if kind == ActionType.CREATE_TIMER:
                fire_at = _parse_loose(action["fireAt"])
                events.append(make_event(HistoryEventType.TIMER_CREATED, now, event_id=task_id,
                                         FireAt=format_time(fire_at)))
                if action.get("isCanceled"):
                    continue
                outgoing.messages.append(self._timer_message(instance, task_id, fire_at))
            elif kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY,
                          ActionType.CALL_SUB_ORCHESTRATOR, ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                is_activity = kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY)
                call = {
                    "kind": "activity" if is_activity else "suborchestration",
                    "name": action["functionName"],
                    "input": action.get("input"),
                    "instance_id": action.get("instanceId") or None,
                }
                if kind in (ActionType.CALL_ACTIVITY_WITH_RETRY, ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY):
                    options = action["retryOptions"]
                    call.update(attempts=1, max_attempts=int(options["maxNumberOfAttempts"]),
                                interval_ms=int(options["firstRetryIntervalInMilliseconds"]))
                    instance.retries[str(task_id)] = call
                events += self._schedule_call(instance, call, task_id, now, outgoing)
            else:
                raise NotImplementedError(
                    f"the local host does not run {describe_action(action)} actions (entities, call_http)"
                )
        return events

    def _schedule_call(self, instance: Instance, call: dict, task_id: int, now: datetime,
                       outgoing: _Outgoing) -> list[dict]:
        if call["kind"] == "activity":
            outgoing.work_items.append(WorkItem(instance.instance_id, instance.generation, task_id, call["name"],
                                                call["input"]))
            return [make_event(HistoryEventType.TASK_SCHEDULED, now, event_id=task_id, Name=call["name"],
                               Input=call["input"])]
        # Deterministic child id when none was given, so a repeated episode names the same child.
        child_id = call["instance_id"] or uuid.uuid5(
            uuid.NAMESPACE_URL, f"{instance.instance_id}/{instance.generation}/{task_id}").hex
        previous = self._instances.get(child_id)
        child = Instance(child_id, call["name"], "Pending", call["input"], created=now, updated=now,
                         parent_instance_id=instance.instance_id, parent_task_id=task_id,
                         parent_generation=instance.generation,
                         generation=previous.generation + 1 if previous is not None else 0)
        outgoing.children.append(child)
        return [make_event(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED, now, event_id=task_id,
                           Name=call["name"], InstanceId=child_id, Input=call["input"])]

    def _timer_message(self, instance: Instance, timer_id: int, fire_at: datetime) -> Message:
        return Message(instance.instance_id, f"t-{instance.generation:06d}-{timer_id:08d}", "timer_fired",
                       fire_at, {"task_id": timer_id, "fire_at": format_time(fire_at)}, instance.generation)

    def _parent_message(self, instance: Instance, kind: str, now: datetime, **payload: Any) -> Message | None:
        if not instance.parent_instance_id or instance.parent_task_id is None:
            return None
        return Message(
            instance.parent_instance_id,
            f"c-{instance.parent_generation:06d}-{instance.parent_task_id:08d}-{instance.instance_id}",
            kind, now, {"task_id": instance.parent_task_id, **payload}, instance.parent_generation,
        )

    async def _continue_as_new(self, instance: Instance, input_text: str | None, now: datetime) -> None:
        log.info("instance %s: %s continued as new", instance.instance_id, instance.name)
        previous_generation = instance.generation
        instance.generation += 1
        instance.input_text = input_text
        instance.status = "Running"
        instance.next_seq = 0
        instance.actions, instance.action_ids, instance.retries = [], [], {}
        instance.history, instance.persisted_events = [], 0
        start = Message(instance.instance_id, f"s-{instance.generation:06d}", "start", now, {}, instance.generation)
        await self.store.put_row("messages", start.to_entity())
        await self.store.put_instance(instance.to_entity())
        self._remember_message(start)
        # Work of the finished generation is void: its completions would be stale anyway.
        for message in list(self._messages.get(instance.instance_id, {}).values()):
            if message.generation is not None and message.generation <= previous_generation:
                await self._drop([message])
        await self.store.delete_history_before(instance.instance_id, instance.generation)

    async def _terminate_now(self, instance: Instance, reason: str) -> None:
        now = self.clock.now()
        instance.status = "Terminated"
        instance.output_text = json.dumps(reason)
        instance.updated = now
        instance.history += [
            make_event(HistoryEventType.ORCHESTRATOR_STARTED, now),
            make_event(HistoryEventType.EXECUTION_TERMINATED, now, Input=json.dumps(reason)),
            make_event(HistoryEventType.ORCHESTRATOR_COMPLETED, now),
        ]
        await self.store.append_history(instance.instance_id, instance.generation, instance.persisted_events,
                                        instance.history[instance.persisted_events :])
        instance.persisted_events = len(instance.history)
        parent = self._parent_message(instance, "suborchestration_failed", now,
                                      reason=f"sub-orchestration {instance.instance_id} was terminated", details="")
        if parent is not None:
            await self._send(parent)
        await self.store.put_instance(instance.to_entity())
        log.info("instance %s: %s terminated", instance.instance_id, instance.name)

    # Activities ---------------------------------------------------------------------------------

    async def _activity_worker(self) -> None:
        while True:
            item = await self._activities.get()
            self._running_activities += 1
            try:
                await self._run_activity(item)
            except Exception:
                log.exception("activity %s for instance %s task %d: host error; will retry",
                              item.name, item.instance_id, item.task_id)
                await asyncio.sleep(0.5)
                self._activities.put_nowait(item)
            finally:
                self._running_activities -= 1

    async def _run_activity(self, item: WorkItem) -> None:
        function = self.functions.activities.get(item.name)
        started = time.perf_counter()
        if function is None:
            payload = {"task_id": item.task_id, "reason": f"activity function '{item.name}' does not exist",
                       "details": ""}
            kind = "activity_failed"
        else:
            try:
                result = await self._invoke(function, item.input_text)
                payload = {"task_id": item.task_id, "result": function.encode_output(result)}
                kind = "activity_completed"
            except Exception as exc:
                # Where it failed, for the operator: frames only (file, line, function), never the
                # message or local values, which may hold row content from a library's error text.
                frames = traceback.extract_tb(exc.__traceback__)[-4:]
                log.warning("activity %s for instance %s task %d raised %s at %s", item.name, item.instance_id,
                            item.task_id, type(exc).__name__,
                            " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames)))
                # Reason is the exception's own message: Bridgework's errors carry ids and counts only.
                payload = {"task_id": item.task_id, "reason": str(exc) or type(exc).__name__,
                           "details": "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]}
                kind = "activity_failed"
        if function is not None and self.duplicate_activities and \
                self._duplicates.random() < self.duplicate_activities:
            await self._deliver_again(function, item)
        message = Message(item.instance_id, f"a-{item.generation:06d}-{item.task_id:08d}", kind,
                          self.clock.now(), payload, item.generation)
        await self.store.replace_row("messages", item.instance_id, item.row_key, message.to_entity())
        self.completed_activities += 1
        self._remember_message(message)
        self._schedule_due(item.instance_id)
        log.info("activity %s for instance %s task %d: %s (%.0f ms)", item.name, item.instance_id, item.task_id,
                 "completed" if kind == "activity_completed" else "failed", (time.perf_counter() - started) * 1000)

    async def _invoke(self, function: Any, input_text: str | None) -> Any:
        kwargs = {function.input_param: function.decode_input(input_text)}
        if function.is_async:
            return await call_function(function.call, kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: function.call(**kwargs))

    async def _deliver_again(self, function: Any, item: WorkItem) -> None:
        """Run the activity once more with the same input (a duplicate delivery, as when Azure's lease
        on a work item expires); its result or failure is dropped, the first one stands."""
        self.duplicated += 1
        try:
            await self._invoke(function, item.input_text)
            outcome = "completed"
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}"
        log.info("activity %s for instance %s task %d: delivered twice (duplicate %s, first result kept)",
                 item.name, item.instance_id, item.task_id, outcome)


def _parse_loose(text: str) -> datetime:
    """`fireAt` as the SDK writes it (ISO 8601, maybe without fractional seconds)."""
    from dateutil.parser import isoparse

    moment = isoparse(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
