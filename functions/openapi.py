"""The API's OpenAPI 3.1 document, generated from the pydantic models each route declares with `documented`.

Every route in functions/api.py carries `@documented(...)` naming its method, route, role, request
and response models; the document is built from those declarations, and tests/functions/test_openapi.py
fails when a registered route is missing from it (or the document names a route that is not registered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

F = TypeVar("F", bound=Callable[..., Any])
TBody = type[BaseModel] | Literal["object", "text", "csv"] | None


class Problem(BaseModel):
    """An RFC 9457 problem: `type` ends in Bridgework's stable error code."""

    model_config = ConfigDict(extra="forbid")

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Operation:
    method: str
    route: str
    """Without the `/api` prefix, in the host's syntax: `migrations/{migration_id}`."""
    summary: str
    role: Literal["viewer", "operator", "none"]
    responses: dict[int, TBody]
    request: TBody = None
    query: type[BaseModel] | None = None
    idempotent: bool = False
    errors: tuple[int, ...] = ()
    alternatives: tuple[str, ...] = ()
    """Other media types the 200 answers in, chosen by `?format=` (markdown, csv, html) or `Accept`."""


OPERATIONS: list[Operation] = []

MIGRATION_ID_PATTERN = r"^m-[0-9a-f]{16}$"

_ERROR_TITLES = {400: "Invalid request", 401: "Not authenticated", 403: "Not permitted",
                 404: "Not found", 409: "Wrong stage or conflict", 413: "Body too large",
                 422: "Refused", 503: "Temporarily unavailable"}


def documented(method: str, route: str, summary: str, *, role: Literal["viewer", "operator", "none"],
               responses: dict[int, TBody], request: TBody = None, query: type[BaseModel] | None = None,
               idempotent: bool = False, errors: tuple[int, ...] = (), text_alternative: bool = False,
               alternatives: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Record a route's contract for the OpenAPI document; the handler is returned unchanged.
    `text_alternative` is short for `alternatives=("text/markdown",)`."""

    def register(handler: F) -> F:
        media = alternatives + (("text/markdown",) if text_alternative else ())
        OPERATIONS.append(Operation(method.upper(), route, summary, role, responses, request, query, idempotent,
                                    errors, media))
        return handler

    return register


def _content(body: TBody, refs: dict[tuple[type[BaseModel], str], dict[str, Any]], mode: str,
             alternatives: tuple[str, ...] = ()) -> dict[str, Any]:
    if body == "text":
        return {"text/markdown": {"schema": {"type": "string"}}}
    if body == "csv":
        return {"text/csv": {"schema": {"type": "string"}}}
    schema = {"type": "object"} if body == "object" else refs[(body, mode)]  # type: ignore[index]
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    for media in alternatives:
        content[media] = {"schema": {"type": "string"}}
    return content


def openapi_document(operations: list[Operation] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations` (default: every documented route)."""
    operations = OPERATIONS if operations is None else operations
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [(Problem, "serialization")]
    for op in operations:
        if isinstance(op.request, type):
            models.append((op.request, "validation"))
        models += [(body, "serialization") for body in op.responses.values() if isinstance(body, type)]
    keys, schemas = models_json_schema(sorted(set(models), key=lambda m: (m[0].__name__, m[1])),
                                       ref_template="#/components/schemas/{model}")
    refs = {key: value for key, value in keys.items()}
    problem_ref = refs[(Problem, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters: list[dict[str, Any]] = []
        if "{migration_id}" in op.route:
            parameters.append({"name": "migration_id", "in": "path", "required": True,
                               "schema": {"type": "string", "pattern": MIGRATION_ID_PATTERN}})
        if op.query is not None:
            for name, info in op.query.model_json_schema()["properties"].items():
                parameters.append({"name": name, "in": "query", "required": False, "schema": info})
        if op.alternatives:
            formats = ["json"] + [media.split("/")[1] for media in op.alternatives]
            parameters.append({"name": "format", "in": "query", "required": False,
                               "schema": {"type": "string", "enum": formats}})
        if op.idempotent:
            parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                               "description": "A retried request with the same key answers the first response "
                                              "instead of starting the work again.",
                               "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"}})
        responses: dict[str, Any] = {}
        for status, body in op.responses.items():
            entry: dict[str, Any] = {"description": "success"}
            if body is not None:
                entry["content"] = _content(body, refs, "serialization", op.alternatives)
            responses[str(status)] = entry
        statuses = {401, 400, 413, *op.errors}
        if "{migration_id}" in op.route:
            statuses.add(404)
        if op.role == "operator":
            statuses.add(403)
        if op.idempotent:
            statuses |= {409, 422}
        for status in sorted(statuses):
            responses[str(status)] = {"description": _ERROR_TITLES[status],
                                      "content": {"application/problem+json": {"schema": problem_ref}}}
        operation: dict[str, Any] = {
            "operationId": f"{op.method.lower()}_{op.route.replace('/', '_').replace('{', '').replace('}', '')}",
            "summary": op.summary, "parameters": parameters, "responses": responses,
            "x-bridgework-role": op.role,
        }
        if op.request is not None:
            operation["requestBody"] = {"required": op.request != "object" and _required(op.request),
                                        "content": _content(op.request, refs, "validation")}
        paths.setdefault(f"/api/{op.route}", {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bridgework API", "version": "1.0.0",
                 "description": "Dentrix to Dynamics 365 Sales migrations. Errors are application/problem+json."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "appServiceAuthentication": {"type": "apiKey", "in": "header", "name": "x-ms-client-principal",
                                             "description": "Set by App Service Authentication (Entra ID)."},
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                "description": "An automation key mapped to a tenant (BRIDGEWORK_AUTOMATION_KEYS)."},
            },
        },
        "security": [{"appServiceAuthentication": []}, {"functionKey": []}],
    }


def _required(model: TBody) -> bool:
    return isinstance(model, type) and any(f.is_required() for f in model.model_fields.values())
