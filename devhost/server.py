"""The local host's HTTP face: function routes, the Durable management API, timers and admin calls.

Routes:
    /<routePrefix>/<route>                  HTTP-triggered functions (auth levels as in Azure)
    /runtime/webhooks/durabletask/...       the Durable HTTP management API (needs the host key as `code`)
    /durabletask/...                        the same API unauthenticated, as the extension's loopback
                                            `rpcBaseUrl` that the SDK's client calls
    /admin/host/status                      host status (admin key): activities, loop stalls, and Storage
                                            requests sent so far by service, method and table or
                                            container (devhost/storage_calls.py)
    /admin/devhost/clock                    GET the host clock; POST {"advance_seconds": n} or {"to": iso}
                                            to move the virtual clock (admin key)
    /admin/devhost/idle?timeout=s           wait until nothing is runnable (admin key)
    /admin/devhost/memory?top=n             where the host's memory grew since the previous call, by source
                                            line (needs PYTHONTRACEMALLOC set for the host; admin key)
    /admin/devhost/heap[?collect=1]         what the host's resident memory is made of now: Python objects,
                                            pymalloc's free space, the C heap (no tracing; admin key)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import azure.functions as func
from aiohttp import web
from croniter import croniter
from dateutil.parser import isoparse

from .clock import VirtualClock
from .engine import (
    InstanceConflict,
    InstanceGone,
    InstanceNotFound,
    TaskHub,
    UnknownOrchestrator,
)
from .functions import (
    FunctionIndex,
    MethodNotAllowed,
    TimerFunction,
    call_function,
    timer_request,
)
from .memory import heap_breakdown
from .protocol import HistoryEventType, format_time
from .storage_calls import snapshot as storage_requests

log = logging.getLogger("devhost")

WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
RPC_PREFIX = "/durabletask"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(payload), status=status, content_type="application/json",
                        headers=headers)


def client_binding(base_url: str, hub: str, host_key: str) -> str:
    """The durable client binding JSON for a host at `base_url`, as the extension builds it."""
    base = base_url + WEBHOOK_PREFIX
    key = quote(host_key)
    common = f"taskHub={hub}&connection=Storage&code={key}"
    instance = f"{base}/instances/INSTANCEID"
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?code={key}",
            "createAndWaitOnNewInstancePostUri": (
                f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                f"?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&code={key}"
            ),
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{instance}?{common}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{common}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{common}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{common}",
            "purgeHistoryDeleteUri": f"{instance}?{common}",
            "restartPostUri": f"{instance}/restart?{common}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{common}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{common}",
        },
        "rpcBaseUrl": f"{base_url}{RPC_PREFIX}/",
        "requiredQueryStringParameters": f"code={key}",
        "httpBaseUrl": base,
    })


class LocalHost:
    """Serves one function app on one loopback port, backed by one task hub."""

    def __init__(self, functions: FunctionIndex, hub: TaskHub, *, host_key: str, port: int,
                 host: str = "127.0.0.1", principal: str | None = None) -> None:
        self.functions = functions
        self.hub = hub
        self.host_key = host_key
        self.port = port
        self.host = host
        self.base_url = f"http://{host}:{port}"
        self._timer_due: dict[str, datetime] = {}
        """Each timer function's next occurrence (idle waits until none is due on the clock)."""
        self._timers_firing = 0
        self._memory_snapshot: tracemalloc.Snapshot | None = None
        # Plays App Service Authentication: requests without a principal get this one.
        self.principal = principal
        self._runner: web.AppRunner | None = None
        self._timer_tasks: list[asyncio.Task[Any]] = []
        hub.binding_factory = self.client_binding

    # Wiring -------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        for prefix, needs_key in ((WEBHOOK_PREFIX, True), (RPC_PREFIX, False)):
            management = _Management(self, needs_key)
            app.router.add_post(prefix + "/orchestrators/{name}", management.start)
            app.router.add_post(prefix + "/orchestrators/{name}/{instance_id}", management.start)
            app.router.add_get(prefix + "/instances/", management.query)
            app.router.add_get(prefix + "/instances", management.query)
            app.router.add_delete(prefix + "/instances/", management.purge_by)
            app.router.add_delete(prefix + "/instances", management.purge_by)
            app.router.add_get(prefix + "/instances/{instance_id}", management.status)
            app.router.add_delete(prefix + "/instances/{instance_id}", management.purge)
            app.router.add_post(prefix + "/instances/{instance_id}/raiseEvent/{event}", management.raise_event)
            app.router.add_post(prefix + "/instances/{instance_id}/terminate", management.terminate)
            for unsupported in ("rewind", "suspend", "resume", "restart"):
                app.router.add_post(prefix + "/instances/{instance_id}/" + unsupported, management.unsupported)
        app.router.add_get("/admin/host/status", self._host_status)
        app.router.add_get("/admin/devhost/clock", self._get_clock)
        app.router.add_post("/admin/devhost/clock", self._set_clock)
        app.router.add_get("/admin/devhost/idle", self._wait_idle)
        app.router.add_get("/admin/devhost/memory", self._traced_heap)
        app.router.add_get("/admin/devhost/heap", self._heap_breakdown)
        prefix = self.functions.route_prefix
        app.router.add_route("*", f"/{prefix}/{{tail:.*}}" if prefix else "/{tail:.*}", self._http_function)
        return app

    async def start(self) -> None:
        await self.hub.start()
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        for timer in self.functions.timers:
            self._timer_tasks.append(asyncio.create_task(self._run_timer(timer)))
        log.info("local host listening on %s (%d HTTP, %d orchestrator, %d activity, %d timer functions)",
                 self.base_url, len(self.functions.http), len(self.functions.orchestrators),
                 len(self.functions.activities), len(self.functions.timers))

    async def stop(self) -> None:
        for task in self._timer_tasks:
            task.cancel()
        await asyncio.gather(*self._timer_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.hub.stop()

    # The durable client binding -----------------------------------------------------------------

    def client_binding(self) -> str:
        """The JSON the Durable extension hands a `durable_client_input` parameter."""
        return client_binding(self.base_url, self.hub.store.hub, self.host_key)

    # Keys ---------------------------------------------------------------------------------------

    def has_key(self, request: web.Request) -> bool:
        offered = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(offered.encode(), self.host_key.encode())

    # HTTP functions -----------------------------------------------------------------------------

    async def _http_function(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        try:
            matched = self.functions.match_http(request.method, tail)
        except MethodNotAllowed:
            return web.Response(status=405)
        if matched is None:
            return web.Response(status=404)
        function, route_params = matched
        if function.auth_level != "ANONYMOUS" and not self.has_key(request):
            return web.Response(status=401)
        started = time.perf_counter()
        body = await request.read()
        headers = dict(request.headers)
        if self.principal and not any(name.lower() == "x-ms-client-principal" for name in headers):
            headers["x-ms-client-principal"] = self.principal
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query),
            route_params=route_params,
            body=body,
        )
        kwargs: dict[str, Any] = {function.trigger_param: http_request}
        if function.client_param:
            kwargs[function.client_param] = self.client_binding()
        try:
            result = await call_function(function.call, kwargs)
        except Exception as exc:
            # As the real host: a 500 without the exception text (which stays in the host's log by type).
            log.error("function %s raised %s", function.name, type(exc).__name__)
            return web.Response(status=500)
        log.info("function %s: %s %s -> %s (%.0f ms)", function.name, request.method, "/" + tail,
                 getattr(result, "status_code", 200), (time.perf_counter() - started) * 1000)
        return _to_aiohttp(result)

    # Timers -------------------------------------------------------------------------------------

    async def _run_timer(self, timer: TimerFunction) -> None:
        clock = self.hub.clock
        if timer.run_on_startup:
            await self._fire_timer(timer, past_due=False)
        due = croniter(timer.schedule, clock.now(), second_at_beginning=True).get_next(datetime).astimezone(UTC)
        while True:
            self._timer_due[timer.name] = due
            wake = asyncio.Event()
            while clock.now() < due:
                await clock.sleep_until(due, wake)
            # Like the real host after a pause: one invocation, flagged past due if occurrences were
            # missed, and the next occurrence counted from now.
            following = croniter(timer.schedule, clock.now(), second_at_beginning=True).get_next(datetime)
            missed = croniter(timer.schedule, due, second_at_beginning=True).get_next(datetime) <= clock.now()
            self._timers_firing += 1
            try:
                await self._fire_timer(timer, past_due=missed)
            finally:
                self._timers_firing -= 1
            due = following.astimezone(UTC)

    async def _fire_timer(self, timer: TimerFunction, past_due: bool) -> None:
        kwargs: dict[str, Any] = {timer.trigger_param: timer_request(past_due)}
        if timer.client_param:
            kwargs[timer.client_param] = self.client_binding()
        started = time.perf_counter()
        try:
            await call_function(timer.call, kwargs)
            log.info("timer %s fired (%.0f ms)", timer.name, (time.perf_counter() - started) * 1000)
        except Exception as exc:
            log.error("timer %s raised %s", timer.name, type(exc).__name__)

    # Admin --------------------------------------------------------------------------------------

    async def _host_status(self, request: web.Request) -> web.Response:
        if not self.has_key(request):
            return web.Response(status=401)
        return _json({"state": "Running", "taskHub": self.hub.store.hub, "clock": format_time(self.hub.clock.now()),
                      "virtualClock": self.hub.clock.virtual, "idle": self.hub.is_idle(),
                      "duplicatedActivities": self.hub.duplicated,
                      "completedActivities": self.hub.completed_activities,
                      "cachedInstances": self.hub.cached_instances,
                      "loopStalls": self.hub.stalls.as_json(),
                      "storageRequests": storage_requests()})

    async def _get_clock(self, request: web.Request) -> web.Response:
        if not self.has_key(request):
            return web.Response(status=401)
        return _json({"now": format_time(self.hub.clock.now()), "virtual": self.hub.clock.virtual})

    async def _set_clock(self, request: web.Request) -> web.Response:
        if not self.has_key(request):
            return web.Response(status=401)
        clock = self.hub.clock
        if not isinstance(clock, VirtualClock):
            return _json({"error": "the host runs on the real clock; start it with --clock virtual"}, 409)
        try:
            body = await request.json()
            if "advance_seconds" in body:
                clock.advance(timedelta(seconds=float(body["advance_seconds"])))
            elif "to" in body:
                clock.set(isoparse(body["to"]))
            else:
                return _json({"error": "give advance_seconds or to"}, 400)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        self.hub.clock_moved()
        return _json({"now": format_time(clock.now()), "virtual": True})

    async def _wait_idle(self, request: web.Request) -> web.Response:
        if not self.has_key(request):
            return web.Response(status=401)
        timeout = float(request.query.get("timeout", "30"))
        deadline = time.monotonic() + timeout
        idle = False
        while not idle and time.monotonic() < deadline:
            # A timer function the clock just made due, or one still running, starts work the hub cannot
            # see yet: idle means neither (a clock advanced then waited on raced the timer's wake-up).
            if not self._timers_idle():
                await asyncio.sleep(0.01)
                continue
            idle = await self.hub.wait_idle(max(deadline - time.monotonic(), 0.0)) and self._timers_idle()
        return _json({"idle": idle}, 200 if idle else 408)

    async def _traced_heap(self, request: web.Request) -> web.Response:
        """Top allocation growth by source line since the previous call (the soak's leak finder), or with
        `?by=size` the lines holding most right now (the benchmark's view of a peak): file names, line numbers
        and sizes only, never what the memory holds."""
        if not self.has_key(request):
            return web.Response(status=401)
        if not tracemalloc.is_tracing():
            return _json({"error": "start the host with PYTHONTRACEMALLOC=1 to trace allocations"}, 409)
        top = int(request.query.get("top", "15"))
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if request.query.get("by") == "size":  # the growth baseline stays where the last growth call left it
            growth, stats = False, snapshot.statistics("lineno")
        else:
            previous, self._memory_snapshot = self._memory_snapshot, snapshot
            growth = previous is not None
            stats = snapshot.compare_to(previous, "lineno") if growth else snapshot.statistics("lineno")
        traced, peak = tracemalloc.get_traced_memory()
        return _json({"traced_kib": traced // 1024, "peak_kib": peak // 1024, "since_previous": growth,
                      "top": [{"where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                               "size_kib": round(s.size / 1024, 1), "count": s.count,
                               "size_diff_kib": round(getattr(s, "size_diff", s.size) / 1024, 1),
                               "count_diff": getattr(s, "count_diff", s.count)} for s in stats[:top]]})

    async def _heap_breakdown(self, request: web.Request) -> web.Response:
        """devhost/memory.py's `heap_breakdown`, in MiB (off the event loop: it forks to read pymalloc);
        `?collect=1` adds what is live after a full collection, run in the forked copy only."""
        if not self.has_key(request):
            return web.Response(status=401)
        collect = request.query.get("collect", "") in ("1", "true")
        return _json(await asyncio.to_thread(heap_breakdown, collect))

    def _timers_idle(self) -> bool:
        now = self.hub.clock.now()
        return self._timers_firing == 0 and all(due > now for due in self._timer_due.values())


def _to_aiohttp(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers)
        content_type = headers.pop("Content-Type", None) or headers.pop("content-type", None) or result.mimetype
        response = web.Response(body=result.get_body(), status=result.status_code, headers=headers)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response
    if isinstance(result, (str, bytes)):
        return web.Response(body=result if isinstance(result, bytes) else result.encode())
    return _json(result)


_STATUS_CODES = {"Completed": 200, "Running": 202, "Pending": 202, "Failed": 400, "Terminated": 400}


def _input_text(body: str) -> str | None:
    """The serialized input carried by a start or raise-event body.

    The SDK's client serializes the input itself and then posts that string as JSON again, so the
    body is usually a JSON string whose content is the real input text; a hand-written body (curl)
    is the input as plain JSON. Raises ValueError if the body is not JSON.
    """
    if not body:
        return None
    value = json.loads(body)
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return body
    return body


def _maybe_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Management:
    """The Durable Functions HTTP API for instance management, as the extension serves it."""

    def __init__(self, host: LocalHost, needs_key: bool) -> None:
        self.host = host
        self.hub = host.hub
        self.needs_key = needs_key

    def _denied(self, request: web.Request) -> bool:
        return self.needs_key and not self.host.has_key(request)

    def _links(self, request: web.Request, instance_id: str) -> dict[str, str]:
        urls = json.loads(self.host.client_binding())["managementUrls"]
        return {key: value.replace("INSTANCEID", instance_id) for key, value in urls.items() if key != "id"}

    async def start(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        try:
            input_text = _input_text(await request.text())
        except ValueError:
            return _json({"Message": "the request body must be JSON"}, 400)
        try:
            instance_id = await self.hub.start_new(request.match_info["name"], request.match_info.get("instance_id"),
                                                   input_text)
        except UnknownOrchestrator as exc:
            message = (f"The function '{exc}' doesn't exist, is disabled, or is not an orchestrator function. "
                       f"Additional info: the following are the known orchestrator functions: "
                       f"{', '.join(sorted(self.hub.functions.orchestrators))}.")
            return _json({"Message": "One or more of the arguments submitted is incorrect",
                          "ExceptionMessage": message}, 400)
        except InstanceConflict as exc:
            return _json({"Message": f"An instance with ID '{exc}' already exists and is running."}, 409)
        links = self._links(request, instance_id)
        return _json({"id": instance_id, **links}, 202, headers={"Location": links["statusQueryGetUri"]})

    async def status(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        instance = await self.hub.get(request.match_info["instance_id"])
        if instance is None:
            return web.Response(status=404)
        query = request.query
        payload = self._status_payload(instance, show_input=query.get("showInput", "true").lower() != "false")
        if query.get("showHistory", "").lower() == "true":
            payload["historyEvents"] = _history_view(
                await self.hub.history(instance.instance_id),
                with_output=query.get("showHistoryOutput", "").lower() == "true",
            )
        return _json(payload, _STATUS_CODES.get(instance.status, 200))

    def _status_payload(self, instance: Any, show_input: bool) -> dict[str, Any]:
        return {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.status,
            "input": _maybe_json(instance.input_text) if show_input else None,
            "customStatus": _maybe_json(instance.custom_status_text),
            "output": _maybe_json(instance.output_text),
            "createdTime": instance.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastUpdatedTime": instance.updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    async def query(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        try:
            selected = await self._select(request)
        except ValueError as exc:
            return _json({"Message": str(exc)}, 400)
        show_input = request.query.get("showInput", "false").lower() == "true"
        selected.sort(key=lambda instance: (instance.created, instance.instance_id))
        start = int(request.headers.get("x-ms-continuation-token") or 0)
        top = int(request.query.get("top", "0") or 0)
        page = selected[start : start + top] if top else selected[start:]
        headers = {}
        if top and start + top < len(selected):
            headers["x-ms-continuation-token"] = str(start + top)
        return _json([self._status_payload(instance, show_input) for instance in page], 200, headers)

    async def _select(self, request: web.Request) -> list[Any]:
        query = request.query
        created_from = isoparse(query["createdTimeFrom"]) if query.get("createdTimeFrom") else None
        created_to = isoparse(query["createdTimeTo"]) if query.get("createdTimeTo") else None
        statuses = {s for s in query.get("runtimeStatus", "").split(",") if s}
        prefix = query.get("instanceIdPrefix", "")
        selected = []
        for instance in await self.hub.list_instances():
            if created_from and instance.created < _aware(created_from):
                continue
            if created_to and instance.created > _aware(created_to):
                continue
            if statuses and instance.status not in statuses:
                continue
            if prefix and not instance.instance_id.startswith(prefix):
                continue
            selected.append(instance)
        return selected

    async def raise_event(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        try:
            data_text = _input_text(await request.text())
        except ValueError:
            return _json({"Message": "Only application/json request content is supported"}, 400)
        try:
            await self.hub.raise_event(request.match_info["instance_id"], request.match_info["event"], data_text)
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def terminate(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        try:
            await self.hub.terminate(request.match_info["instance_id"], request.query.get("reason", ""))
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def purge(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        if not await self.hub.purge(request.match_info["instance_id"]):
            return web.Response(status=404)
        return _json({"instancesDeleted": 1})

    async def purge_by(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        if not request.query.get("createdTimeFrom"):
            return _json({"Message": "createdTimeFrom is required to purge by query"}, 400)
        deleted = 0
        for instance in await self._select(request):
            deleted += await self.hub.purge(instance.instance_id)
        if not deleted:
            return web.Response(status=404)
        return _json({"instancesDeleted": deleted})

    async def unsupported(self, request: web.Request) -> web.Response:
        if self._denied(request):
            return web.Response(status=401)
        return _json({"Message": "rewind, suspend, resume and restart are not implemented by the local host"}, 501)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_VIEW_FIELDS = {
    "Name": "FunctionName",
    "InstanceId": "InstanceId",
    "FireAt": "FireAt",
    "TaskScheduledId": "TaskScheduledId",
    "TimerId": "TimerId",
    "Reason": "Reason",
    "OrchestrationStatus": "OrchestrationStatus",
}


def _history_view(events: list[dict], with_output: bool) -> list[dict]:
    """History as the status API shows it: event names, function names, times; payloads on request."""
    names = {int(kind): kind.name for kind in HistoryEventType}
    scheduled_names = {e["EventId"]: e.get("Name") for e in events if e.get("EventId", -1) >= 0}
    view = []
    for event in events:
        kind = names.get(event["EventType"], str(event["EventType"]))
        if kind in ("ORCHESTRATOR_STARTED", "ORCHESTRATOR_COMPLETED"):
            continue
        entry: dict[str, Any] = {"EventType": "".join(part.title() for part in kind.split("_")),
                                 "EventId": event.get("EventId", -1), "Timestamp": event["Timestamp"]}
        for source, target in _VIEW_FIELDS.items():
            if source in event:
                entry[target] = event[source]
        task_id = event.get("TaskScheduledId")
        if task_id is not None and "FunctionName" not in entry:
            entry["FunctionName"] = scheduled_names.get(task_id)
        if with_output:
            for source in ("Input", "Result", "Details"):
                if source in event:
                    entry[source] = _maybe_json(event[source])
        view.append(entry)
    return view
