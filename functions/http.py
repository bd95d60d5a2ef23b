"""HTTP plumbing shared by the API routes: JSON and problem+json responses, errors mapped once,
bodies capped and validated against their pydantic model."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.errors import BridgeworkError, Fatal, MigrationNotFound, Retriable
from shared.identity import NotAuthenticated
from shared.state.artifacts import ArtifactMissing

log = logging.getLogger("bridgework.api")

MAX_BODY_BYTES = 1024 * 1024
"""No route takes more: the largest body is a field map (tens of KiB). Larger bodies get 413."""

MAX_MODEL_BODY_BYTES = 64 * 1024
"""Bodies of the small request models (create, start, approvals)."""


class InvalidRequest(Fatal):
    """The request's path, query or headers are malformed."""

    code = "invalid_request"


class PayloadTooLarge(Fatal):
    """The request body is larger than the route accepts."""

    code = "payload_too_large"


_STATUS_FOR_ERROR: list[tuple[type[BridgeworkError], int]] = [
    (NotAuthenticated, 401),
    (MigrationNotFound, 404),
    (ArtifactMissing, 404),
    (InvalidRequest, 400),
    (PayloadTooLarge, 413),
    (Retriable, 503),
    (Fatal, 422),
]


_STATUS_BY_CODE = {"not_permitted": 403, "wrong_stage": 409, "idempotency_key_in_flight": 409,
                   "idempotency_key_reused": 422}


def json_response(payload: BaseModel | dict[str, Any] | list[Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> func.HttpResponse:
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload, default=str)
    return func.HttpResponse(body, status_code=status, mimetype="application/json", headers=headers)


def problem(status: int, code: str, title: str, detail: str, errors: list[dict[str, Any]] | None = None
            ) -> func.HttpResponse:
    """An RFC 9457 problem+json response; `type` carries Bridgework's stable error code."""
    body: dict[str, Any] = {"type": f"https://bridgework.dev/errors/{code}", "title": title, "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/problem+json")


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> func.HttpRequest | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, func.HttpRequest)), None)


def api_route(handler: Callable[..., Awaitable[func.HttpResponse]]) -> Callable[..., Awaitable[func.HttpResponse]]:
    """Map Bridgework errors and invalid bodies to problem+json, never leaking input values; cap bodies;
    turn anything unexpected into a 500 problem naming only the exception type in the log."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            req = _request_of(args, kwargs)
            if req is not None and len(req.get_body() or b"") > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
            return await handler(*args, **kwargs)
        except ValidationError as exc:
            # `input` is dropped on purpose: it would echo the caller's values (possibly patient data).
            errors = [{"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]} for e in exc.errors()]
            return problem(400, "invalid_request", "The request is invalid",
                           f"{len(errors)} problem(s) in the request", errors)
        except BridgeworkError as exc:
            status = next((s for kind, s in _STATUS_FOR_ERROR if isinstance(exc, kind)),
                          _STATUS_BY_CODE.get(exc.code, 500))
            status = _STATUS_BY_CODE.get(exc.code, status)
            return problem(status, exc.code, type(exc).__name__, exc.message)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a stack trace to the caller
            log.error("route %s failed with %s", handler.__name__, type(exc).__name__)
            return problem(500, "internal_error", "Internal error",
                           "the request failed unexpectedly; it was logged without its data")

    return wrapper


def read_model(req: func.HttpRequest, model: type[BaseModel], max_bytes: int = MAX_MODEL_BODY_BYTES) -> Any:
    """Validate the request body as `model` (an empty body counts as `{}`)."""
    body = req.get_body() or b"{}"
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
    return model.model_validate_json(body)


REPORT_TYPES = {"json": "application/json", "csv": "text/csv", "html": "text/html"}


def stored_report(req: func.HttpRequest, migration_id: str, paths: dict[str, str]) -> func.HttpResponse:
    """A report kept as artifacts in several formats (`paths`: format -> artifact path), chosen by
    `?format=` or else by the Accept header; JSON by default. An unknown format is a 400."""
    from shared.runtime import runtime

    wanted = req.params.get("format") or ""
    if not wanted:
        accept = req.headers.get("accept") or ""
        wanted = next((kind for kind in ("html", "csv") if kind in paths and REPORT_TYPES[kind] in accept), "json")
    if wanted not in paths:
        return problem(400, "invalid_request", "Unknown format", f"format must be one of {', '.join(paths)}")
    body = runtime().artifacts.get_bytes(migration_id, paths[wanted])
    if wanted == "json":
        return func.HttpResponse(body, mimetype="application/json")
    return func.HttpResponse(body, mimetype=REPORT_TYPES[wanted], charset="utf-8")
