"""One end-to-end migration measured from the outside: the stack, the clocks, the counters, the host's memory.

Starts a fresh Azurite, the emulator in its own process (its CPU is not the host's) and the local host, then
drives the migration through the API as an operator does (devtools.stack.drive_migration). While it runs,
the load phase is timed from the first `load` status to the `attachments` status, with the emulator's
per-user counters read at both ends. Afterwards: the host's peak memory (VmHWM of its process), its CPU
time, the 429s and Retry-After waits the governor logged, the orchestration history (every instance of
the task hub: activities scheduled, history rows), and the transform cost measured in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient
from pydantic import BaseModel

from bench.e2e_workload import TransformCost, Workload, transform_workload
from devhost import storage_calls
from devhost.testing import run_host
from devtools import azurite
from devtools.stack import LocalStack, drive_migration, target_for, users_for_practice
from emulator.config import EmulatorConfig, SeedUser
from emulator.testing import run_emulator
from shared.pipeline.schema import stored_plan
from shared.runtime import Runtime
from shared.settings import Settings

TENANT = "practice-group-1"
"""The tenant of devtools.stack's operator principal."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Counters(BaseModel):
    requests: int = 0
    throttled: int = 0
    records: int = 0
    execution_seconds: float = 0.0
    early_requests: int = 0
    max_in_flight: int = 0

    @classmethod
    def of(cls, counters: dict[str, Any]) -> Counters:
        users = list(counters.values())
        return cls(requests=sum(int(c["requests"]) for c in users), throttled=sum(int(c["throttled"]) for c in users),
                   records=sum(int(c["records"]) for c in users),
                   execution_seconds=sum(float(c["execution_seconds"]) for c in users),
                   early_requests=sum(int(c["early_requests"]) for c in users),
                   max_in_flight=max((int(c["max_in_flight"]) for c in users), default=0))

    def minus(self, other: Counters) -> Counters:
        return Counters(requests=self.requests - other.requests, throttled=self.throttled - other.throttled,
                        records=self.records - other.records,
                        execution_seconds=self.execution_seconds - other.execution_seconds,
                        early_requests=self.early_requests - other.early_requests, max_in_flight=self.max_in_flight)


class E2EResult(BaseModel):
    migration_id: str
    runtime_status: str
    app_users: int
    records: int
    """Target records the load wrote (created + updated in the final report, load maps only)."""
    journal_rows: int
    load_seconds: float
    """Real seconds from the first `load` status to the `attachments` status (second pass included)."""
    migration_seconds: float
    load_counters: Counters
    """Emulator counters over the load phase, all application users."""
    per_user_requests: dict[str, int]
    retry_after_seconds: float
    """Sum of the Retry-After values the host's governors were given (real seconds)."""
    held_back_seconds: float
    """Time the governors held a user back on Retry-After (overlaps counted once per governor), real s."""
    host_peak_rss_mb: float
    host_cpu_seconds_load: float
    emulator_cpu_seconds_load: float
    storage_cpu_seconds_load: float = 0.0
    """Azurite's CPU over the load phase (journal, progress, orchestration history, bundle reads)."""
    instances: int
    activities: int
    history_events: int
    transform: TransformCost | None = None
    journal_entity_writes: int = 0
    """Journal entities written (upserted or deleted) by the host over the whole migration."""
    journal_transactions: int = 0
    loop_blocked_seconds_load: float = 0.0
    """Seconds the host's event loop woke late by more than 0.1 s over the load phase (devhost/stalls.py)."""
    loop_longest_stall_ms: int = 0
    """The longest stall of the host's event loop over the whole migration."""
    loop_stall_sites: list[dict[str, Any]] = []
    """Where the loop was while late (`file:line function`, samples of 50 ms), the whole migration."""
    gc_seconds_load: float = 0.0
    """Seconds the host spent in garbage collection over the load phase (any thread; it holds the GIL)."""
    gc_full_collections_load: int = 0
    gc_longest_ms: int = 0
    """The longest single collection over the whole migration."""
    stage_seconds: dict[str, float] = {}
    """Real seconds from the first status naming each stage to the next stage's (as the operator's polls saw
    them, so each is late by up to one poll); the stages before `load` are set-up the load does not count."""
    peak_rss_mb_after_stage: dict[str, float] = {}
    """The host's VmHWM as each stage ended: where the peak was reached."""
    host_traced_by_stage: dict[str, dict[str, Any]] = {}
    """With `trace_memory`: per stage, the host's traced Python heap at the stage's largest sample, with the
    source lines holding most of it (devhost /admin/devhost/memory; sizes and line numbers only)."""
    host_heap_by_stage: dict[str, dict[str, float]] = {}
    """Per stage, what the host's memory was made of at the stage's largest resident sample (MiB; devhost
    /admin/devhost/heap: Python objects, pymalloc's free space, the C heap, the rest)."""
    host_collected_by_stage: dict[str, dict[str, Any]] = {}
    """Per stage, the sample (every 30 s, /admin/devhost/heap?collect=1) with the most Python objects, split into
    live objects and garbage the host's collector has not reached yet (MiB)."""
    cpu_seconds_by_stage: dict[str, dict[str, float]] = {}
    """CPU seconds each process spent in each stage (`host`, `emulator`, `azurite`), as the polls saw the stages."""
    storage_requests_by_stage: dict[str, dict[str, int]] = {}
    """Storage requests sent in each stage, by `"<service> <METHOD> <table or container>"` (devhost/storage_calls.py):
    the host's, attributed to the stage its polls saw, and under `upload` the agent's upload of the bundle."""
    actions: dict[str, int]


def _host_status(stack: LocalStack) -> dict[str, Any]:
    return stack.host.http().get("/admin/host/status", timeout=30).json()


def _renamed(key: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        key = key.replace(old, new)
    return key


def _loop_stalls(stack: LocalStack) -> dict[str, Any]:
    return _host_status(stack)["loopStalls"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


_GOVERNOR_LINE = re.compile(r"dataverse 429: retry_after=([0-9.]+) held_back=([0-9.]+)")


def _governor_waits(log: Path) -> tuple[int, float, float]:
    count, retry_after, held = 0, 0.0, 0.0
    with log.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _GOVERNOR_LINE.search(line)
            if match:
                count += 1
                retry_after += float(match.group(1))
                held += float(match.group(2))
    return count, retry_after, held


_JOURNAL_LINE = re.compile(r"journal wrote (\d+) entities in (\d+) transactions")


def _journal_writes(log: Path) -> tuple[int, int]:
    """(entities, transactions) the host wrote to the journal over the whole migration (shared/state/journal.py)."""
    entities = transactions = 0
    with log.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _JOURNAL_LINE.search(line)
            if match:
                entities += int(match.group(1))
                transactions += int(match.group(2))
    return entities, transactions


def _orchestration(storage: str, hub: str, host: Any) -> tuple[int, int, int]:
    """(instances, activities scheduled, history rows) of every instance in the task hub."""
    service = TableServiceClient.from_connection_string(storage)
    ids = [e["PartitionKey"] for e in service.get_table_client(f"{hub}Instances").list_entities(
        select=["PartitionKey"])]
    rows = sum(1 for _ in service.get_table_client(f"{hub}History").list_entities(select=["PartitionKey"]))
    activities = 0
    for instance in set(ids):
        events = host.status(instance, history=True).get("historyEvents", [])
        activities += sum(1 for e in events if e.get("EventType") == "TaskScheduled")
    return len(set(ids)), activities, rows


class _PatientStack(LocalStack):
    """An operator who asks again: on a loaded machine the API can answer a status read with a 500 when
    storage times out; a GET is retried a few times instead of ending a long benchmark run."""

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(6):
            try:
                return super().api(method, path, **kwargs)
            except RuntimeError as exc:
                if method != "GET" or " answered 5" not in str(exc) or attempt == 5:
                    raise
                time.sleep(2.0)
        raise AssertionError("unreachable")


class _HostMemoryWatch:
    """Polls what the host's memory is made of (`/admin/devhost/heap`, no tracing) every `every` seconds and
    keeps, per stage, the sample with the most resident memory; with `traced`, also each stage's largest
    traced-heap sample by source line (`/admin/devhost/memory`, every `traced_every` seconds)."""

    def __init__(self, stack: LocalStack, traced: bool, every: float = 2.0, traced_every: float = 15.0,
                 collected_every: float = 30.0) -> None:
        self.stack, self.traced, self.every, self.traced_every = stack, traced, every, traced_every
        self.collected_every = collected_every
        self.stage = "(start)"
        self.by_stage: dict[str, dict[str, float]] = {}
        self.collected_by_stage: dict[str, dict[str, Any]] = {}
        self.traced_by_stage: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-memory-watch", daemon=True)

    def __enter__(self) -> _HostMemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        traced_due = time.monotonic() + self.traced_every
        collected_due = time.monotonic() + self.collected_every
        while not self._stop.wait(self.every):
            try:  # a slow answer must not end the benchmark; the next poll tries again
                sample = self.stack.host.http().get("/admin/devhost/heap", timeout=30).json()
                if sample.get("rss", 0) > self.by_stage.get(self.stage, {}).get("rss", -1):
                    self.by_stage[self.stage] = sample
                if time.monotonic() >= collected_due:
                    # The collection runs in a forked copy of the host (a second or so of CPU at 1M records):
                    # every 30 s, not every poll.
                    collected_due = time.monotonic() + self.collected_every
                    sample = self.stack.host.http().get("/admin/devhost/heap", params={"collect": "1"},
                                                        timeout=60).json()
                    if sample.get("py_used", 0) > self.collected_by_stage.get(self.stage, {}).get("py_used", -1):
                        self.collected_by_stage[self.stage] = sample
                if self.traced and time.monotonic() >= traced_due:
                    traced_due = time.monotonic() + self.traced_every
                    traced = self.stack.host.http().get("/admin/devhost/memory", timeout=120,
                                                        params={"top": "15", "by": "size"}).json()
                    if traced.get("traced_kib", 0) > self.traced_by_stage.get(self.stage, {}).get("traced_kib", -1):
                        self.traced_by_stage[self.stage] = traced
            except Exception:
                continue


@contextlib.contextmanager
def bench_stack(work: Path, emulator_config: EmulatorConfig,
                host_env: dict[str, str] | None = None) -> Iterator[LocalStack]:
    """A fresh Azurite, the emulator in its own process, the local host: devtools.stack's local_stack with
    the emulator out of the host's and the benchmark's processes."""
    work.mkdir(parents=True, exist_ok=True)
    storage = azurite.start(log_file=work / "azurite.log")
    prefix = "bw" + uuid.uuid4().hex[:8]
    try:
        with run_emulator(emulator_config, subprocess=True) as emulator:
            env = {
                "BRIDGEWORK_TABLE_PREFIX": prefix,
                "BRIDGEWORK_DATAVERSE_AUTH_MODE": "factory",
                "BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY": "emulator.credentials:EmulatorTokenCredential",
                **(host_env or {}),
            }
            with run_host("function_app:app", storage.connection_string, prefix, env=env,
                          log_path=work / "host.log") as host:
                yield _PatientStack(storage, emulator, host, prefix)
    finally:
        storage.stop()


def emulator_config(base: EmulatorConfig, practice: Path) -> EmulatorConfig:
    return base.model_copy(update={"users": [SeedUser.model_validate(u) for u in users_for_practice(practice)]})


def run_e2e(work: Path, practice: Path, bundle: Path, config: EmulatorConfig, app_users: int,
            collect_workload: bool, timeout: float,
            trace_memory: bool = False) -> tuple[E2EResult, Workload | None, Any]:
    """Migrate the bundle end to end; returns the result, the transformed workload (if asked) and the
    migration's schema spec (for the peers). `trace_memory` runs the host under tracemalloc (several times
    slower: its speed figures do not compare with untraced runs) to see what the heap holds at its largest."""
    host_env = {"PYTHONTRACEMALLOC": "1"} if trace_memory else None
    with bench_stack(work, emulator_config(config, practice), host_env) as stack:
        assert stack.host.process is not None
        host_pid = stack.host.process.pid
        emu_pid = stack.emulator.proc.pid  # type: ignore[attr-defined]
        storage_pid = stack.storage.pid
        marks: dict[str, tuple[float, Counters, dict[str, float]]] = {}
        blocked: dict[str, float] = {}
        collected: dict[str, tuple[float, int]] = {}
        stage_seen: dict[str, float] = {}
        peak_at: dict[str, float] = {}
        memory = _HostMemoryWatch(stack, traced=trace_memory)
        storage_calls.install()  # this process's requests during the drive are the agent's upload

        def stage_mark(stage: str) -> tuple[str, dict[str, int], dict[str, float]]:
            """The host's Storage requests so far and each process's CPU seconds, as `stage` begins."""
            return (stage, _host_status(stack)["storageRequests"],
                    {"host": _cpu_seconds(host_pid), "emulator": _cpu_seconds(emu_pid),
                     "azurite": _cpu_seconds(storage_pid)})

        stage_marks = [stage_mark("(start)")]

        def on_progress(view: dict[str, Any]) -> None:
            stage = (view.get("custom_status") or {}).get("stage")
            if stage:
                memory.stage = stage
            if stage and stage not in stage_seen:
                if stage_seen:  # the high-water mark as the previous stage ends
                    peak_at[max(stage_seen, key=stage_seen.__getitem__)] = round(_peak_rss_mb(host_pid), 1)
                stage_seen[stage] = time.monotonic()
                stage_marks.append(stage_mark(stage))
            point = "start" if stage == "load" else "end" if stage in ("attachments", "done") else None
            if point and point not in marks:
                # Both points are a stage's first sighting, so its mark (just taken) has the CPU seconds.
                marks[point] = (time.monotonic(), Counters.of(stack.emulator.counters()), stage_marks[-1][2])
                stalls = _loop_stalls(stack)
                blocked[point] = stalls["blockedSeconds"]
                collected[point] = (stalls["gc"]["seconds"], stalls["gc"]["collections"][2])

        users = [f"app-{n + 1}" for n in range(app_users)]
        started = time.monotonic()
        sent_before = storage_calls.snapshot()
        with memory:
            result = drive_migration(stack, bundle, target=target_for(stack, application_users=users),
                                     timeout=timeout, on_progress=on_progress)
        migration_seconds = time.monotonic() - started
        storage_by_stage = {"upload": storage_calls.difference(storage_calls.snapshot(), sent_before)}
        cpu_by_stage: dict[str, dict[str, float]] = {}
        stage_marks.append(stage_mark("(end)"))
        for (stage, sent_then, cpu_then), (_, sent_next, cpu_next) in zip(stage_marks, stage_marks[1:], strict=False):
            storage_by_stage[stage] = storage_calls.difference(sent_next, sent_then)
            cpu_by_stage[stage] = {name: round(cpu_next[name] - seconds, 2) for name, seconds in cpu_then.items()}
        named = {stack.prefix: "", result["migration_id"].lower(): "<migration>"}  # names alike from run to run
        storage_by_stage = {stage: {_renamed(key, named): n for key, n in sent.items()}
                            for stage, sent in storage_by_stage.items()}
        if stage_seen:
            peak_at[max(stage_seen, key=stage_seen.__getitem__)] = round(_peak_rss_mb(host_pid), 1)
        stage_seen["(end)"] = time.monotonic()
        order = sorted(stage_seen.items(), key=lambda kv: kv[1])
        stage_seconds = {name: round(t1 - t0, 1) for (name, t0), (_, t1) in zip(order, order[1:], strict=False)}
        view = result["view"]
        status = view.get("runtime_status", "?")
        if status != "Completed" or "start" not in marks or "end" not in marks:
            raise RuntimeError(f"migration {result['migration_id']} ended {status}; see {work / 'host.log'}")
        report = result["report"]
        actions: dict[str, int] = {}
        for m in report["maps"]:
            for action, n in m["actions"].items():
                actions[action] = actions.get(action, 0) + n
        # Records the load wrote: created + updated of every map except attachments (files, not records).
        records = sum(n for m in report["maps"] if m["target_table"] != "sharepointdocument"
                      and m["map"] != "document" for a, n in m["actions"].items() if a in ("created", "updated"))
        (t0, c0, cpu0), (t1, c1, cpu1) = marks["start"], marks["end"]
        per_user = {user: int(c["requests"]) for user, c in stack.emulator.counters().items()}
        _, retry_after, held = _governor_waits(work / "host.log")
        journal_writes, journal_transactions = _journal_writes(work / "host.log")
        instances, activities, history = _orchestration(stack.storage.connection_string, stack.prefix, stack.host)
        rt = Runtime.create(Settings.model_validate({
            "AzureWebJobsStorage": stack.storage.connection_string, "table_prefix": stack.prefix,
            "dataverse_auth_mode": "factory",
            "dataverse_credential_factory": "emulator.credentials:EmulatorTokenCredential"}))
        migration = rt.migrations.get(TENANT, result["migration_id"])
        schema_spec = stored_plan(rt, migration).schema_spec

        async def measure() -> tuple[Workload, TransformCost]:
            from shared.pipeline.target import dataverse_client

            async with dataverse_client(rt, migration) as client:
                return await transform_workload(rt, migration, client, collect=collect_workload)

        workload, cost = asyncio.run(measure())
        peak = _peak_rss_mb(host_pid)
        stalls = _loop_stalls(stack)
        return E2EResult(
            migration_id=result["migration_id"], runtime_status=status, app_users=app_users, records=records,
            journal_rows=sum(actions.values()), load_seconds=t1 - t0, migration_seconds=migration_seconds,
            load_counters=c1.minus(c0), per_user_requests=per_user, retry_after_seconds=retry_after,
            held_back_seconds=held, host_peak_rss_mb=peak, host_cpu_seconds_load=cpu1["host"] - cpu0["host"],
            emulator_cpu_seconds_load=cpu1["emulator"] - cpu0["emulator"],
            storage_cpu_seconds_load=cpu1["azurite"] - cpu0["azurite"], instances=instances, activities=activities,
            history_events=history, transform=cost, actions=actions, journal_entity_writes=journal_writes,
            journal_transactions=journal_transactions,
            loop_blocked_seconds_load=blocked["end"] - blocked["start"], loop_longest_stall_ms=int(stalls["longestMs"]),
            loop_stall_sites=stalls["where"], gc_seconds_load=collected["end"][0] - collected["start"][0],
            gc_full_collections_load=collected["end"][1] - collected["start"][1],
            gc_longest_ms=int(stalls["gc"]["longestMs"]), host_traced_by_stage=memory.traced_by_stage,
            host_heap_by_stage=memory.by_stage, host_collected_by_stage=memory.collected_by_stage,
            stage_seconds=stage_seconds, peak_rss_mb_after_stage=peak_at, storage_requests_by_stage=storage_by_stage,
            cpu_seconds_by_stage=cpu_by_stage,
        ), (workload if collect_workload else None), schema_spec
