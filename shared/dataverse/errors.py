"""The one place that turns a Dataverse HTTP response or transport failure into a typed Bridgework error.

Status decides first and the Dataverse code second, because Microsoft says the code "is frequently
empty" (reference/dataverse.md §2.1). Messages carry the method, the path without its query string
(query strings hold filter values, which may be patient data), the status and the code; never the
server's message text, which can quote row values (e.g. a duplicate key value).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from shared.errors import (
    DataverseAuthError,
    DataverseError,
    DataverseNotReady,
    DataverseRecordRejected,
    DataverseRequestFailed,
    DataverseRequestTooLarge,
    DataverseThrottled,
    DataverseUnavailable,
)

NOT_READY_CODES = frozenset(
    {
        "0x80040216",  # metadata cache not ready right after a schema change
        "0x80060891",  # metadata cache not ready after table creation
        "0x80071151",  # CustomizationLockException: another customization/publish is running
    }
)
"""400-class codes that mean "retry in a few seconds" rather than "this request is wrong"."""

THROTTLE_CODES = {
    "0x80072322": "request count",
    "0x80072321": "execution time",
    "0x80072326": "concurrent requests",
}

DEFAULT_RETRY_AFTER = 5.0
"""Seconds to wait on a 429/503 that carries no Retry-After (never seen from Dataverse, but be safe)."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds (Dataverse sends these, possibly fractional) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_code(response: httpx.Response) -> str:
    """The Dataverse error code of a response body (`""` when absent or not JSON)."""
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return str(code) if code else ""
    return ""


def request_id(response: httpx.Response) -> str:
    for header in ("x-ms-service-request-id", "req_id", "x-ms-request-id"):
        if header in response.headers:
            return response.headers[header]
    return ""


def error_from_response(response: httpx.Response, *, what: str | None = None) -> DataverseError:
    """The typed error for a non-2xx Dataverse response (the caller raises it, chaining if it wants)."""
    status = response.status_code
    code = error_code(response)
    where = what or _where(response.request)
    attrs: dict[str, Any] = {"status": status, "dataverse_code": code, "request_id": request_id(response)}
    text = f"{where}: HTTP {status}" + (f" code {code}" if code else "")
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        limit = THROTTLE_CODES.get(code.lower(), "service protection")
        return DataverseThrottled(
            f"{text}: throttled ({limit} limit), retry after {retry_after if retry_after is not None else '?'} s",
            retry_after=retry_after if retry_after is not None else DEFAULT_RETRY_AFTER,
            **attrs,
        )
    if status == 413:
        return DataverseRequestTooLarge(f"{text}: request body too large", **attrs)
    if status in (401, 403):
        return DataverseAuthError(
            f"{text}: access refused; check the application user and its security role", **attrs
        )
    if status >= 500 or status == 408:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 501:
            return DataverseRequestFailed(f"{text}: not implemented by the server", **attrs)
        return DataverseUnavailable(f"{text}: server error", retry_after=retry_after, **attrs)
    if code.lower() in NOT_READY_CODES:
        return DataverseNotReady(f"{text}: metadata not ready or customization locked", **attrs)
    if status in (400, 404, 409, 412):
        # One request, one record: the caller decides whether a 404 means "absent" (reads) or
        # "bind target missing" (writes); as an error it is about this record only.
        return DataverseRecordRejected(f"{text}: record refused", **attrs)
    return DataverseRequestFailed(f"{text}: request refused", **attrs)


def error_from_exception(exc: httpx.HTTPError, *, what: str | None = None) -> DataverseError:
    """The typed error for a transport failure (connection reset, timeout, protocol error)."""
    where = what
    if where is None:
        try:
            where = _where(exc.request)
        except RuntimeError:
            where = "request"
    return DataverseUnavailable(
        f"{where}: {type(exc).__name__} (no response)", status=None, dataverse_code=""
    )


def _where(request: httpx.Request) -> str:
    return f"{request.method} {request.url.path}"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        return None


__all__ = [
    "DEFAULT_RETRY_AFTER",
    "NOT_READY_CODES",
    "THROTTLE_CODES",
    "error_code",
    "error_from_exception",
    "error_from_response",
    "parse_retry_after",
    "request_id",
]
