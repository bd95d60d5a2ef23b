"""Fixtures for the Dataverse client tests: a fake credential and a MockTransport-backed client factory."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from azure.core.credentials import AccessToken

from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.governor import GovernorConfig

ENV = "https://org.crm.dynamics.com"


class FakeCredential:
    """A sync azure.core TokenCredential that hands out numbered tokens with a chosen lifetime."""

    def __init__(self, lifetime: float = 3600.0, name: str = "tok") -> None:
        self.lifetime = lifetime
        self.name = name
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"{self.name}-{len(self.calls)}", int(time.time() + self.lifetime))


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    credentials: object | None = None,
    **config: object,
) -> DataverseClient:
    governor = config.pop("governor", GovernorConfig(initial_concurrency=4))
    cfg = DataverseConfig(environment_url=ENV, backoff_base_seconds=0.01, governor=governor, **config)  # type: ignore[arg-type]
    return DataverseClient(cfg, credentials or FakeCredential(), transport=httpx.MockTransport(handler))


def error(status: int, code: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "x"}}, headers=headers or {})
