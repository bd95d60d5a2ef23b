"""Microsoft Graph client for SharePoint document libraries: folders, simple uploads, resumable upload sessions.

Same seams as the Dataverse client: configuration (Graph URL), any azure-identity credential
(scope `<graph>/.default`), an optional httpx transport. Contract: reference/dataverse.md §8 and
Microsoft Learn `driveitem-post-children`, `driveitem-put-content`, `driveitem-createuploadsession`:
- simple upload (`PUT …:/name:/content`) for files up to `simple_upload_max_bytes` (default 4 MiB:
  Graph's page now allows 250 MB, the OneDrive upload concepts page still says 4 MB, and a session is
  resumable, so big files go through sessions anyway);
- upload sessions send fragments that are multiples of 320 KiB and under 60 MiB, in order, with the
  same total in every `Content-Range`, and **without** the Authorization header (the upload URL is
  pre-authenticated; sending a token there may cause 401). After a dropped connection the session's
  `nextExpectedRanges` says where to resume, so no byte range is sent twice.
- 429/503 honour `Retry-After`; other 5xx and dropped connections back off and retry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.dataverse.auth import TokenProvider, default_scope
from shared.errors import (
    ConfigurationError,
    SharePointConflict,
    SharePointError,
    SharePointRequestFailed,
    SharePointThrottled,
    SharePointUnavailable,
)
from shared.sharepoint.errors import error_from_exception, error_from_response
from shared.tls import shared_ssl_context

FRAGMENT_UNIT = 320 * 1024
"""Upload-session fragments must be a multiple of 320 KiB (327,680 bytes)."""
MAX_FRAGMENT = 60 * 1024 * 1024
"""…and smaller than 60 MiB."""

ConflictBehavior = Literal["fail", "replace", "rename"]


class GraphConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    graph_url: str = "https://graph.microsoft.com"
    api_version: str = "v1.0"
    scope: str | None = None
    """Token scope; default `<graph_url>/.default`."""
    simple_upload_max_bytes: int = Field(default=4 * 1024 * 1024, ge=0, le=250 * 1024 * 1024)
    fragment_bytes: int = Field(default=32 * FRAGMENT_UNIT)
    """10 MiB per fragment by default."""
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    retry_budget_seconds: float = Field(default=900.0, gt=0)
    backoff_base_seconds: float = Field(default=0.5, gt=0)

    @field_validator("fragment_bytes")
    @classmethod
    def _fragment_rule(cls, value: int) -> int:
        if value <= 0 or value % FRAGMENT_UNIT or value >= MAX_FRAGMENT:
            raise ValueError("fragment_bytes must be a positive multiple of 327,680 (320 KiB) below 60 MiB")
        return value

    @property
    def api_base(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}/"


def _item_path(drive_id: str, parent_id: str, name: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise SharePointRequestFailed("invalid file or folder name (empty, '.', '..' or contains '/')")
    return f"drives/{drive_id}/items/{parent_id}:/{quote(name, safe='')}:"


class GraphClient:
    """Async Graph client for one tenant's SharePoint."""

    def __init__(
        self,
        config: GraphConfig,
        credential: Any,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not config.graph_url.startswith(("https://", "http://")):
            raise ConfigurationError("graph_url must be an absolute http(s) URL")
        self.config = config
        self.tokens = TokenProvider(credential, config.scope or default_scope(config.graph_url))
        self._http = httpx.AsyncClient(
            base_url=config.api_base,
            transport=transport or httpx.AsyncHTTPTransport(verify=shared_ssl_context()),
            timeout=httpx.Timeout(config.timeout_seconds),
            headers={"Accept": "application/json"},
        )
        self._rng = random.Random()
        self._blocked_until = 0.0
        self.requests_sent = 0
        self.throttled = 0

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ core
    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        what: str | None = None,
    ) -> httpx.Response:
        """Send with retries (429/503 after Retry-After, other 5xx and dropped connections with backoff).

        Raises a `SharePointError` subclass for anything else, or `SharePointUnavailable` when retries run out.
        """
        started = time.monotonic()
        failures = 0
        while True:
            wait = self._blocked_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            send = dict(headers or {})
            if authenticated:
                send["Authorization"] = f"Bearer {await self.tokens.token()}"
            self.requests_sent += 1
            try:
                response = await self._http.request(
                    method, url, json=json, content=content, params=params, headers=send
                )
            except httpx.TransportError as exc:
                error: SharePointError = error_from_exception(exc, what=what)
                cause: BaseException = exc
            else:
                if response.is_success:
                    return response
                error = error_from_response(response, what=what)
                cause = error
                if isinstance(error, SharePointThrottled):
                    self.throttled += 1
                    self._blocked_until = max(
                        self._blocked_until, time.monotonic() + float(error.attrs["retry_after"]) + 0.02
                    )
                    if time.monotonic() - started > self.config.retry_budget_seconds:
                        raise error
                    continue
            if not isinstance(error, SharePointUnavailable):
                raise error
            failures += 1
            if (
                failures >= self.config.max_attempts
                or time.monotonic() - started > self.config.retry_budget_seconds
            ):
                if cause is error:
                    raise error
                raise error from cause
            retry_after = error.attrs.get("retry_after")
            delay = (
                float(retry_after) if retry_after else self.config.backoff_base_seconds * 2 ** (failures - 1)
            )
            await asyncio.sleep(min(delay, 30.0) * (0.5 + self._rng.random() / 2))

    async def get_json(self, url: str, **kw: Any) -> Any:
        return (await self.request("GET", url, **kw)).json()

    async def get_or_none(self, url: str, **kw: Any) -> Any:
        try:
            return await self.get_json(url, **kw)
        except SharePointRequestFailed as exc:
            if exc.attrs.get("status") == 404:
                return None
            raise

    # ------------------------------------------------------------------ sites and drives
    async def get_site(self, hostname: str, site_path: str) -> dict[str, Any]:
        """`GET /sites/{hostname}:/{site-path}` -> the site (its `id` is used for drives)."""
        site: dict[str, Any] = await self.get_json(f"sites/{hostname}:/{site_path.strip('/')}")
        return site

    async def get_drive(self, site_id: str, name: str) -> dict[str, Any]:
        """The document library of the site with this display name."""
        body = await self.get_json(f"sites/{site_id}/drives")
        for drive in body.get("value", []):
            if drive.get("name") == name:
                return dict(drive)
        raise SharePointRequestFailed(f"site has no document library named {name!r}", status=404)

    async def get_root(self, drive_id: str) -> dict[str, Any]:
        root: dict[str, Any] = await self.get_json(f"drives/{drive_id}/root")
        return root

    # ------------------------------------------------------------------ folders
    async def ensure_folder(self, drive_id: str, parent_id: str, name: str) -> dict[str, Any]:
        """The folder `name` under `parent_id`, created if missing (idempotent; a concurrent create is tolerated)."""
        path = _item_path(drive_id, parent_id, name)
        existing = await self.get_or_none(path)
        if existing is not None:
            if "folder" not in existing:
                raise SharePointConflict(
                    "a file with the folder's name exists", status=409, graph_code="nameAlreadyExists"
                )
            return dict(existing)
        try:
            created: dict[str, Any] = (
                await self.request(
                    "POST",
                    f"drives/{drive_id}/items/{parent_id}/children",
                    json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"},
                )
            ).json()
            return created
        except SharePointConflict:
            again = await self.get_or_none(path)
            if again is not None and "folder" in again:
                return dict(again)
            raise

    # ------------------------------------------------------------------ uploads
    async def upload(
        self,
        drive_id: str,
        parent_id: str,
        name: str,
        data: bytes,
        *,
        conflict: ConflictBehavior = "replace",
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Upload a file into a folder; returns the driveItem. Small files in one PUT, larger through a session.

        `replace` (the default) makes a rerun overwrite the same file instead of adding a copy; `fail` raises
        SharePointConflict when the name exists; `rename` keeps both.
        """
        if len(data) <= self.config.simple_upload_max_bytes:
            path = _item_path(drive_id, parent_id, name) + "/content"
            response = await self.request(
                "PUT",
                path,
                content=data,
                params={"@microsoft.graph.conflictBehavior": conflict},
                headers={"Content-Type": content_type},
            )
            item: dict[str, Any] = response.json()
            return item
        return await self.upload_large(drive_id, parent_id, name, data, conflict=conflict)

    async def upload_large(
        self, drive_id: str, parent_id: str, name: str, data: bytes, *, conflict: ConflictBehavior = "replace"
    ) -> dict[str, Any]:
        """Upload through an upload session, resuming from `nextExpectedRanges` after failures; cancels on a fatal error."""
        path = _item_path(drive_id, parent_id, name) + "/createUploadSession"
        session = (
            await self.request(
                "POST",
                path,
                json={"item": {"@microsoft.graph.conflictBehavior": conflict}, "deferCommit": False},
            )
        ).json()
        upload_url = session["uploadUrl"]
        try:
            return await self._send_fragments(upload_url, data)
        except SharePointError:
            await self._cancel(upload_url)
            raise

    async def _send_fragments(self, upload_url: str, data: bytes) -> dict[str, Any]:
        total = len(data)
        offset = 0
        failures = 0
        size = self.config.fragment_bytes
        while True:
            end = min(offset + size, total)
            try:
                response = await self._put_fragment(upload_url, data[offset:end], offset, end, total)
            except SharePointUnavailable:
                # The fragment may or may not have landed: ask the session instead of guessing.
                failures += 1
                if failures >= self.config.max_attempts:
                    raise
                offset = await self._next_offset(upload_url, total)
                continue
            except SharePointConflict as exc:
                if exc.attrs.get("status") != 416:
                    raise
                offset = await self._next_offset(upload_url, total)
                continue
            if response.status_code in (200, 201):
                item: dict[str, Any] = response.json()
                return item
            ranges = response.json().get("nextExpectedRanges") or []
            offset = _first_offset(ranges, end)

    async def _put_fragment(
        self, upload_url: str, chunk: bytes, start: int, end: int, total: int
    ) -> httpx.Response:
        # One attempt per call (max_attempts=1 semantics handled by the caller's resume logic), except
        # throttling, which `request` already waits out.
        return await self.request(
            "PUT",
            upload_url,
            content=chunk,
            headers={"Content-Range": f"bytes {start}-{end - 1}/{total}", "Content-Length": str(len(chunk))},
            authenticated=False,
            what="PUT <upload session>",
        )

    async def _next_offset(self, upload_url: str, total: int) -> int:
        status = await self.get_json(upload_url, authenticated=False, what="GET <upload session>")
        ranges = status.get("nextExpectedRanges") or []
        return _first_offset(ranges, total)

    async def _cancel(self, upload_url: str) -> None:
        try:
            await self.request("DELETE", upload_url, authenticated=False, what="DELETE <upload session>")
        except SharePointError:
            pass  # best effort: an abandoned session expires by itself


def _first_offset(ranges: list[str], default: int) -> int:
    if not ranges:
        return default
    return int(str(ranges[0]).split("-", 1)[0])


__all__ = ["FRAGMENT_UNIT", "MAX_FRAGMENT", "ConflictBehavior", "GraphClient", "GraphConfig"]
