"""Loads a v2-model function app and indexes its functions by trigger, as the worker's indexing does."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter


class AppLoadError(RuntimeError):
    """The function app could not be imported or indexed."""


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str
    trigger_param: str
    client_param: str | None
    call: Callable[..., Any]


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str
    run_on_startup: bool
    trigger_param: str
    client_param: str | None
    call: Callable[..., Any]


@dataclass(frozen=True)
class ActivityFunction:
    name: str
    input_param: str
    call: Callable[..., Any]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.call)

    def decode_input(self, input_text: str | None) -> Any:
        datum = meta.Datum(type="json", value=input_text if input_text is not None else "null")
        return ActivityTriggerConverter.decode(datum, trigger_metadata=None)

    @staticmethod
    def encode_output(value: Any) -> str:
        return ActivityTriggerConverter.encode(value, expected_type=None).value


@dataclass
class FunctionIndex:
    """Every function of the app, by trigger kind, plus the app's host.json."""

    orchestrators: dict[str, Callable[[str], str]] = field(default_factory=dict)
    activities: dict[str, ActivityFunction] = field(default_factory=dict)
    http: list[HttpFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    host_json: dict[str, Any] = field(default_factory=dict)

    @property
    def route_prefix(self) -> str:
        prefix = self.host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        return prefix.strip("/")

    @property
    def durable_settings(self) -> dict[str, Any]:
        return self.host_json.get("extensions", {}).get("durableTask", {})

    def match_http(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        """The function whose route matches `path` (without the prefix), with its route parameters."""
        allowed_elsewhere = False
        for function in self.http:
            found = function.pattern.fullmatch(path)
            if not found:
                continue
            if function.methods is not None and method.upper() not in function.methods:
                allowed_elsewhere = True
                continue
            params = {key: value for key, value in found.groupdict().items() if value is not None}
            return function, params
        if allowed_elsewhere:
            raise MethodNotAllowed(path)
        return None


class MethodNotAllowed(Exception):
    """A route matched but not for this HTTP method."""


def route_pattern(route: str) -> re.Pattern[str]:
    """A Functions route template (`migrations/{id}`, `{id?}`, `{*rest}`, `{n:int}`) as a regex."""
    parts: list[str] = []
    position = 0
    for token in re.finditer(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\?)?\}", route):
        parts.append(re.escape(route[position : token.start()]))
        catch_all, name, optional = token.groups()
        body = ".*" if catch_all else "[^/]+"
        if optional or catch_all:
            # an optional last segment may be absent together with its slash
            if parts and parts[-1].endswith("/"):
                parts[-1] = parts[-1][:-1]
                parts.append(f"(?:/(?P<{name}>{body}))?")
            else:
                parts.append(f"(?P<{name}>{body})?")
        else:
            parts.append(f"(?P<{name}>{body})")
        position = token.end()
    parts.append(re.escape(route[position:]))
    return re.compile("".join(parts), re.IGNORECASE)


def load_app(target: str, host_json: Path | None = None) -> FunctionIndex:
    """Import `MODULE:ATTRIBUTE` (a `df.DFApp` or `func.FunctionApp`) and index its functions."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise AppLoadError(f"cannot load function app {target!r}: {exc}") from exc
    if host_json is None and getattr(module, "__file__", None):
        host_json = Path(module.__file__).resolve().parent / "host.json"
    index = FunctionIndex()
    if host_json is not None and host_json.exists():
        index.host_json = json.loads(host_json.read_text())
    for function in app.get_functions():
        _index_function(index, function)
    return index


def _index_function(index: FunctionIndex, function: Any) -> None:
    name = function.get_function_name()
    bindings = json.loads(function.get_function_json())["bindings"]
    call = function.get_user_function()
    client_param = next((b["name"] for b in bindings if b["type"] == "durableClient"), None)
    trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
    kind = trigger["type"]
    if kind == "orchestrationTrigger":
        index.orchestrators[name] = call
    elif kind == "activityTrigger":
        index.activities[name] = ActivityFunction(name, trigger["name"], call)
    elif kind == "httpTrigger":
        route = (trigger.get("route") or name).strip("/")
        methods = trigger.get("methods")
        index.http.append(
            HttpFunction(
                name=name,
                route=route,
                pattern=route_pattern(route),
                methods=frozenset(m.upper() for m in methods) if methods else None,
                auth_level=str(trigger.get("authLevel", "FUNCTION")).upper(),
                trigger_param=trigger["name"],
                client_param=client_param,
                call=call,
            )
        )
    elif kind == "timerTrigger":
        index.timers.append(
            TimerFunction(
                name=name,
                schedule=trigger["schedule"],
                run_on_startup=bool(trigger.get("runOnStartup", False)),
                trigger_param=trigger["name"],
                client_param=client_param,
                call=call,
            )
        )
    else:
        raise AppLoadError(f"function {name!r} has a {kind} trigger, which the local host does not run")


async def call_function(call: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Invoke a user function, sync or async (sync HTTP/timer functions are short; run inline)."""
    result = call(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def timer_request(past_due: bool = False) -> func.TimerRequest:
    from azure.functions.timer import TimerRequest

    return TimerRequest(past_due=past_due)
