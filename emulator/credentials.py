"""azure-core TokenCredentials that mint emulator tokens, so production clients run against the emulator unchanged."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken

from emulator.tokens import audience_of_scope, make_token


class EmulatorTokenCredential:
    """A `TokenCredential` for one application user. `get_token("<env url>/.default")` returns a token whose
    audience is the scope's resource. `issued` counts tokens handed out (tests of token refresh read it)."""

    def __init__(self, app_user: str = "app-1", lifetime_seconds: float = 3600.0) -> None:
        self.app_user = app_user
        self.lifetime_seconds = lifetime_seconds
        self.issued = 0

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        if not scopes:
            raise ValueError("get_token needs a scope such as 'https://<environment>/.default'")
        now = time.time()
        self.issued += 1
        token = make_token(self.app_user, audience_of_scope(scopes[0]), self.lifetime_seconds, now)
        return AccessToken(token, int(now + self.lifetime_seconds))

    def close(self) -> None:
        pass


class AsyncEmulatorTokenCredential:
    """The `azure.core.credentials_async.AsyncTokenCredential` twin of EmulatorTokenCredential."""

    def __init__(self, app_user: str = "app-1", lifetime_seconds: float = 3600.0) -> None:
        self._sync = EmulatorTokenCredential(app_user, lifetime_seconds)

    @property
    def issued(self) -> int:
        return self._sync.issued

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        return self._sync.get_token(*scopes)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncEmulatorTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
