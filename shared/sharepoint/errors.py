"""The one place that turns a Microsoft Graph response or transport failure into a typed SharePoint error.

Graph error bodies are `{"error": {"code": "nameAlreadyExists", "message": ...}}`; throttling is
429 or 503 with `Retry-After` (reference/dataverse.md §8.4). Messages carry method, path (without
query), status and Graph code only: file and folder names may contain patient names, so a path is
reduced to its drive/item ids.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from shared.dataverse.errors import parse_retry_after
from shared.errors import (
    SharePointAuthError,
    SharePointConflict,
    SharePointError,
    SharePointRequestFailed,
    SharePointThrottled,
    SharePointUnavailable,
)

DEFAULT_RETRY_AFTER = 5.0

_NAME_SEGMENT = re.compile(r":/[^:]*:?")


def safe_path(request: httpx.Request) -> str:
    """`PUT /v1.0/drives/d/items/p:/<name>:/content` -> `PUT /v1.0/drives/d/items/p:/…:/content` (names may be PHI)."""
    return f"{request.method} {_NAME_SEGMENT.sub(':/…:', request.url.path)}"


def graph_code(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def error_from_response(response: httpx.Response, *, what: str | None = None) -> SharePointError:
    """The typed error for a non-2xx Graph response; `what` replaces the path (upload-session URLs carry tokens)."""
    status = response.status_code
    code = graph_code(response)
    where = what or safe_path(response.request)
    text = f"{where}: HTTP {status}" + (f" code {code}" if code else "")
    attrs: dict[str, Any] = {"status": status, "graph_code": code}
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return SharePointThrottled(
            f"{text}: throttled",
            retry_after=retry_after if retry_after is not None else DEFAULT_RETRY_AFTER,
            **attrs,
        )
    if status >= 500 and status not in (501, 507):
        return SharePointUnavailable(f"{text}: server error", retry_after=retry_after, **attrs)
    if status in (401, 403):
        return SharePointAuthError(f"{text}: access refused; check the Graph permissions of the app", **attrs)
    if status in (409, 416):
        return SharePointConflict(f"{text}: conflict", **attrs)
    return SharePointRequestFailed(f"{text}: request refused", **attrs)


def error_from_exception(exc: httpx.HTTPError, *, what: str | None = None) -> SharePointError:
    try:
        where = what or safe_path(exc.request)
    except RuntimeError:
        where = "request"
    return SharePointUnavailable(f"{where}: {type(exc).__name__} (no response)", status=None, graph_code="")


__all__ = ["error_from_exception", "error_from_response", "graph_code", "safe_path"]
