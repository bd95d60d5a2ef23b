"""The emulator's configuration: limits, costs, time scale, users, faults. One pydantic model, loadable from JSON.

Every duration here is in *emulated* seconds. The emulator runs `time_scale` times faster than the wall clock, so
with `time_scale=300` the 5-minute service-protection window passes in one real second, and a configured server
cost of 0.01 s per record sleeps 0.01/300 s for real. Retry-After headers are given in real seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENTERPRISE = None
SALES_PROFESSIONAL_CUSTOM_TABLE_LIMIT = 15


class AppUser(BaseModel):
    """An application user: the Entra app id a token's `appid` claim must carry, and its systemuser."""

    model_config = ConfigDict(extra="forbid")
    app_id: str
    systemuserid: str
    fullname: str = "Migration application user"


class SeedUser(BaseModel):
    """An ordinary (licensed) systemuser seeded into the environment; owners are resolved to these by email."""

    model_config = ConfigDict(extra="forbid")
    systemuserid: str
    fullname: str
    internalemailaddress: str
    isdisabled: bool = False


class Limits(BaseModel):
    """Service protection limits per application user (defaults from the api-limits page)."""

    model_config = ConfigDict(extra="forbid")
    window_seconds: float = 300.0
    """Length of the sliding window."""
    max_requests: int = 6000
    """Requests per window before 0x80072322."""
    max_execution_seconds: float = 1200.0
    """Summed server execution time per window before 0x80072321."""
    max_concurrent: int = 52
    """Requests in flight at once before 0x80072326 (immediate)."""
    dop_hint: int = 16
    """Value of x-ms-dop-hint on every response."""


class Costs(BaseModel):
    """Simulated server execution time and network latency (emulated seconds)."""

    model_config = ConfigDict(extra="forbid")
    per_request_seconds: float = 0.05
    per_record_seconds: float = 0.01
    """Added per record written by a request (a bulk or batch call pays this for each of its items)."""
    network_latency_seconds: float = 0.02
    """Round-trip latency added outside server time; it does not count against the execution-time limit."""
    metadata_write_seconds: float = 1.0
    """Server time of one metadata create/update (tables, columns, keys, relationships); holds the customization lock."""
    publish_seconds: float = 2.0


class Fault(BaseModel):
    """One fault-injection rule. A request matches when method and path prefix match; then every `every`-th match
    (counting from 1) fails, at most `times` times (None = unlimited)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["status", "drop_before", "drop_after", "customization_lock"]
    """status: answer `status` (with `code`/`message` if given); drop_before/drop_after: cut the connection
    before/after the request is carried out; customization_lock: the 400 CustomizationLockException."""
    status: int = 503
    code: str | None = None
    message: str | None = None
    path_prefix: str = "/api/data/v9.2/"
    methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "PATCH", "PUT", "DELETE"])
    every: int = 1
    times: int | None = None
    retry_after_seconds: float | None = None
    """For status 429/503: real seconds to put in Retry-After."""


class SharePointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hostname: str = "contoso.sharepoint.com"
    site_path: str = "sites/dental"
    libraries: list[str] = Field(default_factory=lambda: ["Documents", "contact"])
    max_simple_upload_bytes: int = 250 * 1024 * 1024


def _default_app_users() -> list[AppUser]:
    return [
        AppUser(app_id=f"app-{n}", systemuserid=f"00000000-0000-0000-0000-0000000000a{n}",
                fullname=f"# Bridgework migration {n}")
        for n in range(1, 5)
    ]


def _default_seed_users() -> list[SeedUser]:
    return [
        SeedUser(systemuserid="00000000-0000-0000-0000-000000000101", fullname="Dr Provider One",
                 internalemailaddress="provider1@example.com"),
        SeedUser(systemuserid="00000000-0000-0000-0000-000000000102", fullname="Dr Provider Two",
                 internalemailaddress="provider2@example.com"),
        SeedUser(systemuserid="00000000-0000-0000-0000-000000000103", fullname="Former Hygienist",
                 internalemailaddress="former@example.com", isdisabled=True),
    ]


class EmulatorConfig(BaseModel):
    """Everything the emulator can be told. Unknown fields are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")
    time_scale: float = 1.0
    """Emulated seconds per real second (>= 1 speeds every window, delay and cost up)."""
    limits: Limits = Field(default_factory=Limits)
    costs: Costs = Field(default_factory=Costs)
    app_users: list[AppUser] = Field(default_factory=_default_app_users)
    users: list[SeedUser] = Field(default_factory=_default_seed_users)
    publisher_prefix: str = "bw"
    """Customization prefix of the migration's publisher; custom schema names must start with it."""
    publisher_option_value_prefix: int = 10123
    custom_table_limit: int | None = SALES_PROFESSIONAL_CUSTOM_TABLE_LIMIT
    """15 for Dynamics 365 Sales Professional; None (Enterprise) for no limit."""
    key_activation_seconds: float = 10.0
    """How long an alternate key's index stays Pending/InProgress before Active (or Failed)."""
    metadata_propagation_seconds: float = 0.0
    """A new column stays invisible to the data API for this long (fault injection; 0 = off)."""
    customization_lock: bool = True
    """Concurrent metadata writes fail with CustomizationLockException while one runs."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Requests with a larger body get 413."""
    max_upload_file_size: int = 5_242_880
    """organization.maxuploadfilesize: Base64 size limit of annotation.documentbody."""
    page_size: int = 5000
    fractional_retry_after: bool = False
    """Send Retry-After as decimal real seconds (e.g. "0.004") instead of whole seconds (>= 1). Off by default
    (HTTP and Dataverse use whole seconds); useful when a high time_scale makes 1 s floors distort a benchmark."""
    affinity_cookie: bool = True
    """Send Set-Cookie: ARRAffinity so tests can check the client does not send it back."""
    web_servers: int = Field(default=1, ge=1)
    """Web servers behind the load balancer. Limits apply per user *and per server*: a request carrying an
    ARRAffinity cookie goes to that cookie's server, one without goes round-robin (Microsoft's advice to drop the
    cookie spreads load over servers)."""
    faults: list[Fault] = Field(default_factory=list)
    sharepoint: SharePointConfig = Field(default_factory=SharePointConfig)
    state_file: str | None = None
    """If set, state is loaded from this JSON file at start and saved to it (debounced, and at shutdown)."""
    token_audience_graph: str = "https://graph.microsoft.com"
    seed: int = 1
    """Seed for generated ids, so two runs with the same requests produce the same dump."""

    @classmethod
    def load(cls, path: str | Path) -> EmulatorConfig:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def real_seconds(self, emulated: float) -> float:
        return emulated / self.time_scale
