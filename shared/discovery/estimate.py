"""Estimate how long loading a practice into Dataverse takes, from record counts and the service-protection limits.

Dataverse throttles per application user over a sliding 5-minute window: at most `max_requests`
requests and `max_execution_seconds` of summed server execution time per window, and at most
`max_concurrent` requests in flight (reference/dataverse.md §7). A write request carrying `n`
records costs the server about `per_request + n * per_record` seconds. So one user's request rate
is capped three ways, and the smallest cap wins:

    by count        = max_requests / window
    by exec. time   = max_execution_seconds / window / cost(request)
    by concurrency  = concurrency / (cost(request) + network latency)

This is the same bound the emulator computes (`emulator/throttle.py::upper_bound_records_per_second`,
not imported: the emulator is dev-only); here it is applied to the real request mix (partial last
chunks included) and spread over `app_users` application users, each with its own budget. It is the
steady-state best case: a load shorter than one window may finish sooner (the window starts with a
full budget), and retries, existence reads and deferred lookup passes make a real run slower.

`per_record_seconds` is the one number to calibrate: the emulator charges 0.01 s by default;
measured real environments are typically a few to a few tens of milliseconds per record for
UpsertMultiple on plain tables, more with plug-ins or many lookups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TBound = Literal["requests", "execution_time", "concurrency", "none"]
TAttachmentDestination = Literal["sharepoint", "notes"]

NOTE_ATTACHMENT_DEFAULT_BYTES = 5_242_880
"""Dataverse `organization.maxuploadfilesize` default (5 MB), measured on the Base64 size (dataverse.md §4.8)."""
SHAREPOINT_MAX_FILE_BYTES = 250 * 1024**3
"""SharePoint Online's largest file (250 GB); Graph uploads it through an upload session."""


class EstimateSettings(BaseModel):
    """The limits and costs the load estimate uses (defaults: Microsoft's documented limits, the emulator's costs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_users: int = Field(default=1, ge=1)
    """Application users the load is spread over; each has its own service-protection budget."""
    window_seconds: float = Field(default=300.0, gt=0)
    """Length of the sliding service-protection window."""
    max_requests: int = Field(default=6000, ge=1)
    """Requests per window per application user."""
    max_execution_seconds: float = Field(default=1200.0, gt=0)
    """Summed server execution time per window per application user."""
    max_concurrent: int = Field(default=52, ge=1)
    """Requests in flight at once per application user (the server's limit)."""
    concurrency_per_user: int = Field(default=52, ge=1)
    """Requests the loader keeps in flight per user (capped at `max_concurrent`)."""
    records_per_request: int = Field(default=1000, ge=1)
    """Records per bulk request (the bulk writer's `max_chunk`; UpsertMultiple takes 100-1,000)."""
    per_request_seconds: float = Field(default=0.05, ge=0)
    """Server execution time one request costs before its records."""
    per_record_seconds: float = Field(default=0.01, gt=0)
    """Server execution time per record written: the figure to calibrate against a real environment."""
    network_latency_seconds: float = Field(default=0.02, ge=0)
    """Round trip outside server time: it slows concurrency but does not count against execution time."""
    attachment_destination: TAttachmentDestination = "sharepoint"
    """Where bundle files go: SharePoint through Graph (a folder per patient) or Dataverse note attachments."""
    note_max_upload_bytes: int = Field(default=NOTE_ATTACHMENT_DEFAULT_BYTES, ge=1)
    """The environment's `maxuploadfilesize` (Base64 size) when files go to note attachments."""
    sharepoint_max_file_bytes: int = Field(default=SHAREPOINT_MAX_FILE_BYTES, ge=1)
    """Largest file SharePoint takes."""
    attachment_bytes_per_second: float = Field(default=10_000_000.0, gt=0)
    """Upload throughput for files (to SharePoint, or to notes): a rough planning figure."""
    per_file_seconds: float = Field(default=0.5, ge=0)
    """Fixed cost per file (folder lookup, upload session or note create) on top of its bytes."""


class WriteLoad(BaseModel):
    """Writes one table map sends (records of one target, or an extra pass such as closing appointments)."""

    model_config = ConfigDict(frozen=True)

    name: str
    records: int = Field(ge=0)


class LoadEstimate(BaseModel):
    """The estimated record-load duration and what bounds it."""

    model_config = ConfigDict(frozen=True)

    records: int
    """Record writes (creates, updates and closing writes)."""
    requests: int
    server_seconds: float
    """Summed server execution time of all requests."""
    app_users: int
    seconds: float
    """Estimated wall-clock seconds of the record load (all users in parallel)."""
    records_per_second: float
    bound: TBound
    """Which limit sets the pace: request count, execution time, or concurrency ("none" for an empty load)."""
    seconds_by_limit: dict[str, float]
    """The time each limit alone would need: shows how far the others are from binding."""


def attachment_limit(settings: EstimateSettings) -> int:
    """The largest file the configured destination takes, in the unit `fits_destination` compares."""
    if settings.attachment_destination == "notes":
        return settings.note_max_upload_bytes
    return settings.sharepoint_max_file_bytes


def fits_destination(size: int, settings: EstimateSettings) -> bool:
    """Whether a file of `size` bytes fits: notes measure the Base64 size (4 bytes per 3), SharePoint the raw size."""
    if settings.attachment_destination == "notes":
        return 4 * math.ceil(size / 3) <= settings.note_max_upload_bytes
    return size <= settings.sharepoint_max_file_bytes


def estimate_load(loads: Iterable[WriteLoad], settings: EstimateSettings) -> LoadEstimate:
    """Duration of writing `loads` under `settings`' limits (module docstring: the formula and its limits)."""
    records = requests = 0
    server = 0.0
    for load in loads:
        if load.records <= 0:
            continue
        n = math.ceil(load.records / settings.records_per_request)
        records += load.records
        requests += n
        server += n * settings.per_request_seconds + load.records * settings.per_record_seconds
    if requests == 0:
        return LoadEstimate(records=0, requests=0, server_seconds=0.0, app_users=settings.app_users, seconds=0.0,
                            records_per_second=0.0, bound="none", seconds_by_limit={})
    concurrency = min(settings.concurrency_per_user, settings.max_concurrent)
    users = settings.app_users
    # Each user carries 1/users of the requests; per user, time = work / allowed rate for each limit.
    by_limit = {
        "requests": requests / users * settings.window_seconds / settings.max_requests,
        "execution_time": server / users * settings.window_seconds / settings.max_execution_seconds,
        "concurrency": (server + requests * settings.network_latency_seconds) / users / concurrency,
    }
    bound: TBound = max(by_limit, key=lambda k: by_limit[k])  # type: ignore[assignment]
    seconds = by_limit[bound]
    return LoadEstimate(
        records=records, requests=requests, server_seconds=round(server, 3), app_users=users,
        seconds=round(seconds, 3), records_per_second=round(records / seconds, 3) if seconds else 0.0,
        bound=bound, seconds_by_limit={k: round(v, 3) for k, v in by_limit.items()},
    )


def estimate_attachment_seconds(files: int, total_bytes: int, settings: EstimateSettings) -> float:
    """Rough upload time of the bundle's files (throughput plus a fixed cost per file)."""
    return round(total_bytes / settings.attachment_bytes_per_second + files * settings.per_file_seconds, 3)
