"""HTTP plumbing shared by the API routes: JSON and problem+json responses, errors mapped once."""

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

_STATUS_FOR_ERROR: list[tuple[type[BridgeworkError], int]] = [
    (NotAuthenticated, 401),
    (MigrationNotFound, 404),
    (ArtifactMissing, 404),
    (Retriable, 503),
    (Fatal, 422),
]


_STATUS_BY_CODE = {"not_permitted": 403, "wrong_stage": 409}


def json_response(payload: BaseModel | dict[str, Any] | list[Any], status: int = 200) -> func.HttpResponse:
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload, default=str)
    return func.HttpResponse(body, status_code=status, mimetype="application/json")


def problem(status: int, code: str, title: str, detail: str, errors: list[dict[str, Any]] | None = None
            ) -> func.HttpResponse:
    """An RFC 9457 problem+json response; `type` carries Bridgework's stable error code."""
    body: dict[str, Any] = {"type": f"https://bridgework.dev/errors/{code}", "title": title, "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/problem+json")


def api_route(handler: Callable[..., Awaitable[func.HttpResponse]]) -> Callable[..., Awaitable[func.HttpResponse]]:
    """Map Bridgework errors and invalid bodies to problem+json, never leaking input values."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return await handler(*args, **kwargs)
        except ValidationError as exc:
            errors = [{"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]} for e in exc.errors()]
            return problem(400, "invalid_request", "The request body is invalid",
                           f"{len(errors)} problem(s) in the request body", errors)
        except BridgeworkError as exc:
            status = next((s for kind, s in _STATUS_FOR_ERROR if isinstance(exc, kind)),
                          _STATUS_BY_CODE.get(exc.code, 500))
            return problem(status, exc.code, type(exc).__name__, exc.message)

    return wrapper


def read_model(req: func.HttpRequest, model: type[BaseModel]) -> Any:
    """Validate the request body as `model` (an empty body counts as `{}`)."""
    return model.model_validate_json(req.get_body() or b"{}")
