"""The async Dataverse Web API client: auth, governed and retried requests, and the small reads the migration needs.

Targets a real environment by configuration alone: the environment URL, one credential per
application user (any azure-identity `TokenCredential`), optionally an httpx transport (tests).
Every request goes through one application user's `Governor` (shared/dataverse/governor.py);
every non-2xx answer becomes a typed error in one place (shared/dataverse/errors.py).

Retry ownership (so retries never multiply): this client retries 429 (after Retry-After, not
counted as a failure), 5xx, dropped connections and metadata-not-ready answers, within
`max_attempts` failures and `retry_budget_seconds`; when the budget is gone it raises the Fatal
`DataverseThrottleBudgetExhausted`. Everything else is raised at once.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shared.dataverse.auth import TokenProvider, default_scope
from shared.dataverse.errors import (
    DEFAULT_RETRY_AFTER,
    error_from_exception,
    error_from_response,
    parse_retry_after,
)
from shared.dataverse.governor import Governor, GovernorConfig
from shared.errors import (
    ConfigurationError,
    DataverseAuthError,
    DataverseError,
    DataverseNotReady,
    DataverseRecordRejected,
    DataverseThrottleBudgetExhausted,
    DataverseThrottled,
    DataverseUnavailable,
)
from shared.tls import shared_ssl_context

USER_AGENT = "bridgework-dataverse/0.1"


class DataverseConfig(BaseModel):
    """Where and how to talk to one Dataverse environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment_url: str
    """`https://org.crm.dynamics.com` (no path). The API base is `<environment_url>/api/data/<api_version>/`."""
    api_version: str = "v9.2"
    scope: str | None = None
    """Token scope; default `<environment_url>/.default`."""
    timeout_seconds: float = Field(default=120.0, gt=0)
    """Per request; metadata writes and large bulk requests can take tens of seconds."""
    max_attempts: int = Field(default=8, ge=1)
    """Failures (5xx, dropped connection, not-ready) per request before giving up; 429s do not count."""
    retry_budget_seconds: float = Field(default=900.0, gt=0)
    """Longest one request may spend waiting on retries (429 and failures) before a Fatal error."""
    backoff_base_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    not_ready_delay_seconds: float = Field(default=3.0, ge=0)
    """First wait on metadata-not-ready / customization-lock answers (Microsoft: 3-5 s, then 10, 20, 30)."""
    governor: GovernorConfig = Field(default_factory=GovernorConfig)
    bypass_custom_logic: bool = False
    """Send `MSCRM.BypassBusinessLogicExecution: CustomSync,CustomAsync` on writes (needs the privilege)."""

    @property
    def api_base(self) -> str:
        return f"{self.environment_url.rstrip('/')}/api/data/{self.api_version}/"


@dataclass
class Lane:
    """One application user: its token and its governor."""

    name: str
    tokens: TokenProvider
    governor: Governor


GOVERNOR_EXTENSION = "bridgework.governor"
SECONDS_EXTENSION = "bridgework.seconds"
"""Set on every response `request` returns: seconds from sending to the answer, without the wait for a
governor slot (the bulk writer sizes its chunks from it)."""


class _GovernedTransport(httpx.AsyncBaseTransport):
    """The last step before the network: no request leaves while its user is inside a Retry-After.

    The governor admits a request before httpx prepares it; a 429 for another request can arrive in
    between. So the block is checked again here, at the transport boundary, and a 429 sets the block
    here too, as soon as its headers arrive and before anything else can run.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        governor = request.extensions.get(GOVERNOR_EXTENSION)
        if isinstance(governor, Governor):
            await governor.wait_unblocked()
        response = await self.inner.handle_async_request(request)
        if isinstance(governor, Governor) and response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            governor.block_now(DEFAULT_RETRY_AFTER if retry_after is None else retry_after)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _no_cookie_jar() -> http.cookiejar.CookieJar:
    # The ARRAffinity cookie pins a client to one web server; limits are per web server, so
    # Microsoft says to drop it (reference/dataverse.md §7.2). A jar whose policy accepts no domain.
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def format_key(key: Mapping[str, Any]) -> str:
    """`fs_sourceid='P-1'` / `k1=1,k2='x'`: an alternate-key segment; strings quoted, quotes doubled, URL-escaped."""
    parts = []
    for name, value in key.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = "'" + quote(str(value).replace("'", "''"), safe="-_.~ '!$()*,;=@") + "'"
        parts.append(f"{name}={text}")
    return ",".join(parts)


def key_path(entity_set: str, key: Mapping[str, Any] | str) -> str:
    """`contacts(<guid>)` for a primary id, `contacts(fs_sourceid='P-1')` for an alternate key."""
    if isinstance(key, str):
        return f"{entity_set}({key})"
    return f"{entity_set}({format_key(key)})"


def odata_literal(value: Any) -> str:
    """A value as an OData `$filter` literal (strings quoted with quotes doubled)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class DataverseClient:
    """Async client for one environment, spreading requests over one or more application users."""

    def __init__(
        self,
        config: DataverseConfig,
        credentials: Any | Sequence[Any],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        governors: Sequence[Governor] | None = None,
    ) -> None:
        if not config.environment_url.startswith(("https://", "http://")):
            raise ConfigurationError("dataverse environment_url must be an absolute http(s) URL")
        creds = list(credentials) if isinstance(credentials, list | tuple) else [credentials]
        if not creds:
            raise ConfigurationError("dataverse client needs at least one credential")
        self.config = config
        scope = config.scope or default_scope(config.environment_url)
        if governors is not None and len(governors) != len(creds):
            raise ConfigurationError("dataverse client needs one governor per credential")
        # Shared governors (one per application user, across the clients of a process) make every
        # activity see a 429's Retry-After and the concurrency cap another activity met.
        self.lanes = [
            Lane(f"user{i + 1}", TokenProvider(c, scope), governors[i] if governors else Governor(config.governor))
            for i, c in enumerate(creds)
        ]
        inner = transport or httpx.AsyncHTTPTransport(
            verify=shared_ssl_context(), limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
        )
        self._http = httpx.AsyncClient(
            base_url=config.api_base,
            transport=_GovernedTransport(inner),
            timeout=httpx.Timeout(config.timeout_seconds),
            cookies=_no_cookie_jar(),
            headers={
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
                "If-None-Match": "null",
                "User-Agent": USER_AGENT,
            },
        )
        self._rng = random.Random()
        self.requests_sent = 0
        """Every HTTP request this client sent, retries included."""

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def throttled(self) -> int:
        """429s received, all users."""
        return sum(lane.governor.throttled for lane in self.lanes)

    def _pick_lane(self) -> Lane:
        if len(self.lanes) == 1:
            return self.lanes[0]
        now = time.monotonic()
        return min(self.lanes, key=lambda lane: lane.governor.load(now))

    # ------------------------------------------------------------------ core
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_timeouts: bool = True,
    ) -> httpx.Response:
        """Send one request (path relative to the API base, or an absolute nextLink) and return a 2xx response.

        Raises a `DataverseError` subclass (shared/errors.py) for anything else. With `retry_timeouts=False`
        a timeout is raised at once as `DataverseUnavailable(timeout=True)` so a bulk writer can halve its chunk.
        """
        send_headers = dict(headers or {})
        if self.config.bypass_custom_logic and method in ("POST", "PATCH", "PUT", "DELETE"):
            send_headers.setdefault("MSCRM.BypassBusinessLogicExecution", "CustomSync,CustomAsync")
        started = time.monotonic()
        failures = 0
        refreshed = False
        while True:
            lane = self._pick_lane()
            error: DataverseError
            async with lane.governor.slot():
                token = await lane.tokens.token()
                send_headers["Authorization"] = f"Bearer {token}"
                self.requests_sent += 1
                sent = time.monotonic()
                try:
                    response = await self._http.request(
                        method,
                        path,
                        json=json,
                        content=content,
                        params=params,
                        headers=send_headers,
                        extensions={GOVERNOR_EXTENSION: lane.governor},
                    )
                except httpx.TimeoutException as exc:
                    error = error_from_exception(exc)
                    if not retry_timeouts:
                        raise DataverseUnavailable(error.message, timeout=True, status=None) from exc
                except httpx.TransportError as exc:
                    error = error_from_exception(exc)
                else:
                    response.extensions[SECONDS_EXTENSION] = time.monotonic() - sent
                    lane.governor.observe(
                        response.headers.get("x-ms-dop-hint"),
                        response.headers.get("x-ms-ratelimit-burst-remaining-xrm-requests"),
                        response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests"),
                    )
                    if response.is_success:
                        lane.governor.succeeded()
                        return response
                    error = error_from_response(response)
                    if isinstance(error, DataverseThrottled):
                        # Block the user before the slot is released, so no queued request slips out
                        # between reading the 429 and honouring its Retry-After.
                        await lane.governor.throttled_for(float(error.attrs["retry_after"]))
            elapsed = time.monotonic() - started
            if isinstance(error, DataverseThrottled):
                if elapsed > self.config.retry_budget_seconds:
                    raise DataverseThrottleBudgetExhausted(
                        f"{error.message}; gave up after {elapsed:.0f} s of retries", **error.attrs
                    ) from error
                continue
            if isinstance(error, DataverseAuthError) and error.attrs.get("status") == 401 and not refreshed:
                lane.tokens.invalidate()
                refreshed = True
                continue
            if not isinstance(error, DataverseUnavailable | DataverseNotReady):
                raise error
            failures += 1
            if failures >= self.config.max_attempts or elapsed > self.config.retry_budget_seconds:
                raise DataverseThrottleBudgetExhausted(
                    f"{error.message}; gave up after {failures} failed attempts", **error.attrs
                ) from error
            await asyncio.sleep(self._backoff(error, failures))

    def _backoff(self, error: DataverseError, failures: int) -> float:
        retry_after = error.attrs.get("retry_after")
        if retry_after:
            return float(retry_after)
        base = (
            self.config.not_ready_delay_seconds
            if isinstance(error, DataverseNotReady)
            else self.config.backoff_base_seconds
        )
        delay = min(self.config.backoff_max_seconds, base * 2 ** (failures - 1))
        return delay * (0.5 + self._rng.random() / 2)  # jitter: retries of many tasks must not align

    async def get_json(self, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Any:
        response = await self.request("GET", path, params=params, **kw)
        return response.json()

    # ------------------------------------------------------------------ reads
    async def who_am_i(self) -> dict[str, Any]:
        """`{"UserId", "BusinessUnitId", "OrganizationId"}` of the first application user (also primes `x-ms-dop-hint`)."""
        result: dict[str, Any] = await self.get_json("WhoAmI")
        return result

    async def get(
        self, entity_set: str, key: Mapping[str, Any] | str, *, select: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """One row by primary id (str) or alternate key (mapping); None when it does not exist."""
        params = {"$select": ",".join(select)} if select else None
        try:
            row: dict[str, Any] = await self.get_json(key_path(entity_set, key), params)
        except DataverseRecordRejected as exc:
            if exc.attrs.get("status") == 404:
                return None
            raise
        return row

    async def query(
        self,
        entity_set: str,
        *,
        select: Sequence[str] | None = None,
        filter: str | None = None,
        top: int | None = None,
        page_size: int = 5000,
        extra: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Rows of a query, following `@odata.nextLink` (pages of at most `page_size`, Dataverse caps at 5,000)."""
        params: dict[str, str] = dict(extra or {})
        if select:
            params["$select"] = ",".join(select)
        if filter:
            params["$filter"] = filter
        if top is not None:
            params["$top"] = str(top)
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        url: str | None = entity_set
        first = True
        while url:
            body = await self.get_json(url, params if first else None, headers=headers)
            first = False
            for row in body.get("value", []):
                yield row
            url = body.get("@odata.nextLink")

    async def query_all(self, entity_set: str, **kw: Any) -> list[dict[str, Any]]:
        return [row async for row in self.query(entity_set, **kw)]

    async def list_systemusers(self) -> list[dict[str, Any]]:
        """Every systemuser with id, name, email and `isdisabled` (providers are resolved by email)."""
        return await self.query_all(
            "systemusers",
            select=["systemuserid", "fullname", "internalemailaddress", "isdisabled"],
        )

    async def find_systemuser_by_email(self, email: str) -> dict[str, Any] | None:
        """The systemuser whose primary email matches (case-insensitively); check `isdisabled` before assigning."""
        rows = await self.query_all(
            "systemusers",
            select=["systemuserid", "fullname", "internalemailaddress", "isdisabled"],
            filter=f"internalemailaddress eq {odata_literal(email)}",
        )
        wanted = email.lower()
        for row in rows:
            if str(row.get("internalemailaddress") or "").lower() == wanted:
                return row
        return None

    # ------------------------------------------------------------------ single writes
    async def create(self, entity_set: str, body: Mapping[str, Any]) -> str:
        """POST one row; returns its id (from `OData-EntityId`). Not idempotent: prefer `upsert`."""
        response = await self.request(
            "POST", entity_set, json=dict(body), headers={"Content-Type": "application/json"}
        )
        return entity_id_from(response)

    async def upsert(
        self, entity_set: str, key: Mapping[str, Any] | str, body: Mapping[str, Any], *, primary_id: str
    ) -> tuple[str, str]:
        """PATCH by key (create or update); returns (id, "created" | "updated")."""
        response = await self.request(
            "PATCH",
            key_path(entity_set, key),
            json=dict(body),
            params={"$select": primary_id},
            headers={"Content-Type": "application/json", "Prefer": "return=representation"},
        )
        data = response.json()
        return str(data[primary_id]), "created" if response.status_code == 201 else "updated"

    async def update(self, entity_set: str, key: Mapping[str, Any] | str, body: Mapping[str, Any]) -> None:
        """PATCH with `If-Match: *`: update only, 404 (DataverseRecordRejected) when absent."""
        await self.request(
            "PATCH",
            key_path(entity_set, key),
            json=dict(body),
            headers={"Content-Type": "application/json", "If-Match": "*"},
        )

    async def delete(self, entity_set: str, key: Mapping[str, Any] | str) -> bool:
        """DELETE one row; False when it did not exist."""
        try:
            await self.request("DELETE", key_path(entity_set, key))
        except DataverseRecordRejected as exc:
            if exc.attrs.get("status") == 404:
                return False
            raise
        return True


def entity_id_from(response: httpx.Response) -> str:
    """The id inside `OData-EntityId` (or `Location`): `…/contacts(<guid>)` -> `<guid>`."""
    value = response.headers.get("OData-EntityId") or response.headers.get("Location") or ""
    if "(" not in value:
        raise DataverseError("response carries no OData-EntityId", status=response.status_code)
    return value[value.rindex("(") + 1 : value.rindex(")")]


__all__ = [
    "DataverseClient",
    "DataverseConfig",
    "Lane",
    "entity_id_from",
    "format_key",
    "key_path",
    "odata_literal",
]
