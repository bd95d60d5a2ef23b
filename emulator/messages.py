"""Transport-neutral request/response objects, so one dispatcher serves HTTP requests and `$batch` parts alike."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import ApiError, bad_request


@dataclass
class ApiRequest:
    method: str
    path: str
    """Path below /api/data/v9.2/ (URL-decoded), e.g. "contacts(bw_sourceid='P-1')"."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case header names."""
    body: bytes = b""
    caller: str = ""
    """systemuserid of the calling application user."""
    base_url: str = ""
    """Absolute Web API root ending in '/api/data/v9.2/'."""
    content_ids: dict[str, str] = field(default_factory=dict)
    """Inside a $batch change set: Content-ID -> entity path ('contacts(<id>)')."""

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise bad_request("The request body is not valid JSON.", "0x80048d19") from exc

    @property
    def prefer(self) -> str:
        return self.headers.get("prefer", "")

    @property
    def representation(self) -> bool:
        return "return=representation" in self.prefer

    @property
    def annotations(self) -> bool:
        return "odata.include-annotations" in self.prefer


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    records: int = 0
    """Rows written (or attempted in a bulk call): drives the simulated server time."""
    metadata_write: bool = False

    @classmethod
    def of_json(cls, status: int, data: Any, headers: dict[str, str] | None = None, records: int = 0) -> ApiResponse:
        h = {"Content-Type": "application/json; odata.metadata=minimal"}
        h.update(headers or {})
        return cls(status, h, json.dumps(data).encode(), records)

    @classmethod
    def of_error(cls, err: ApiError, annotations: bool = False) -> ApiResponse:
        h = {"Content-Type": "application/json; odata.metadata=minimal"}
        h.update(err.headers)
        return cls(err.status, h, json.dumps(err.body(annotations)).encode())

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None
