"""Bearer tokens from any azure-identity credential, cached and refreshed before they expire.

Accepts both the sync `azure.core.credentials.TokenCredential` (run in a worker thread, because a
real credential does network I/O) and the async `AsyncTokenCredential`. The token string lives only
in memory and in the `Authorization` header; it is never logged or put in an error.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

REFRESH_MARGIN_SECONDS = 300.0
"""Refresh this long before `expires_on`, so a long bulk request never starts with a token about to die."""


class TokenProvider:
    """One credential + one scope -> a cached bearer token; concurrent callers share one refresh."""

    def __init__(
        self, credential: Any, scope: str, *, refresh_margin: float = REFRESH_MARGIN_SECONDS
    ) -> None:
        if not hasattr(credential, "get_token"):
            raise TypeError("credential must be an azure.core TokenCredential or AsyncTokenCredential")
        self._credential = credential
        self._scope = scope
        self._margin = refresh_margin
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many times the credential was asked (tests check caching)."""

    @property
    def scope(self) -> str:
        return self._scope

    async def token(self) -> str:
        if self._token is not None and time.time() < self._expires_on - self._margin:
            return self._token
        async with self._lock:
            if self._token is not None and time.time() < self._expires_on - self._margin:
                return self._token
            await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (after a 401 that may mean it was revoked or expired early)."""
        self._token = None
        self._expires_on = 0.0

    async def _fetch(self) -> None:
        get_token = self._credential.get_token
        if inspect.iscoroutinefunction(get_token):
            access = await get_token(self._scope)
        else:
            access = await asyncio.to_thread(get_token, self._scope)
            if inspect.isawaitable(access):
                access = await access
        self.fetches += 1
        self._token = access.token
        self._expires_on = float(access.expires_on)


def default_scope(resource_url: str) -> str:
    """`https://org.crm.dynamics.com/.default` for an environment URL (reference/dataverse.md §1.1)."""
    return resource_url.rstrip("/") + "/.default"


__all__ = ["REFRESH_MARGIN_SECONDS", "TokenProvider", "default_scope"]
