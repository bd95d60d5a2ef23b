"""OData `$batch` bodies: encode independent operations as multipart/mixed, decode the per-part answers.

Format from reference/dataverse.md §5 (Microsoft Learn "Execute batch operations"): one
`application/http` part per operation, request line with the absolute path, CRLF line ends.
Operations here are independent (no change sets): the bulk writer sends them with
`Prefer: odata.continue-on-error` so one bad row cannot sink its neighbours.
"""

from __future__ import annotations

import json as jsonlib
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_BATCH_OPERATIONS = 1000
"""Dataverse refuses a `$batch` with more operations."""


@dataclass(frozen=True)
class BatchOperation:
    method: str
    path: str
    """Relative to the API base, e.g. `contacts(fs_sourceid='P-1')?$select=contactid`."""
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchPart:
    status: int
    headers: dict[str, str]
    body: Any
    """Parsed JSON, or None for an empty body."""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lowered:
                return v
        return None


def encode_batch(operations: list[BatchOperation], api_path: str) -> tuple[bytes, str]:
    """(body, content type) for a `$batch` POST. `api_path` is the base path, e.g. `/api/data/v9.2/`."""
    if not operations:
        raise ValueError("a $batch needs at least one operation")
    if len(operations) > MAX_BATCH_OPERATIONS:
        raise ValueError(f"a $batch holds at most {MAX_BATCH_OPERATIONS} operations, got {len(operations)}")
    boundary = f"batch_{uuid.uuid4()}"
    lines: list[str] = []
    for op in operations:
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", ""]
        lines.append(f"{op.method} {api_path}{op.path} HTTP/1.1")
        headers = dict(op.headers)
        if op.body is not None:
            headers.setdefault("Content-Type", "application/json; type=entry")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append("")
        lines.append(jsonlib.dumps(op.body, separators=(",", ":")) if op.body is not None else "")
    lines.append(f"--{boundary}--")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8"), f'multipart/mixed; boundary="{boundary}"'


def _boundary(content_type: str) -> str:
    for piece in content_type.split(";"):
        name, _, value = piece.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip().strip('"')
    raise ValueError("multipart content type without a boundary")


def decode_batch(body: bytes, content_type: str) -> list[BatchPart]:
    """The answers of a `$batch` response in order; change-set responses are flattened in place."""
    text = body.decode("utf-8")
    boundary = _boundary(content_type)
    parts: list[BatchPart] = []
    for chunk in text.split(f"--{boundary}")[1:]:
        if chunk.startswith("--"):
            break
        chunk = chunk.lstrip("\r\n")
        head, _, rest = _split_headers(chunk)
        part_type = head.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            parts.extend(decode_batch(rest.encode("utf-8"), part_type))
            continue
        parts.append(_decode_http(rest))
    return parts


def _split_headers(chunk: str) -> tuple[dict[str, str], str, str]:
    normalized = chunk.replace("\r\n", "\n")
    head, sep, rest = normalized.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers, sep, rest


def _decode_http(text: str) -> BatchPart:
    normalized = text.replace("\r\n", "\n").lstrip("\n")
    status_line, _, remainder = normalized.partition("\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError("batch part without an HTTP status line")
    status = int(fields[1])
    head, _, payload = remainder.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip()] = v.strip()
    payload = payload.strip()
    parsed: Any = None
    if payload:
        try:
            parsed = jsonlib.loads(payload)
        except ValueError:
            parsed = None
    return BatchPart(status=status, headers=headers, body=parsed)


__all__ = ["MAX_BATCH_OPERATIONS", "BatchOperation", "BatchPart", "decode_batch", "encode_batch"]
