"""`$batch` (MS-doc execute-batch-operations-using-web-api): multipart parsing, ordered execution, atomic change
sets with rollback, Content-ID `$n` references, the 1,000-operation cap, no GET in change sets, stop at the first
error or `Prefer: odata.continue-on-error`, and `batchresponse_`/`changesetresponse_` answers."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from emulator.errors import ApiError, bad_request
from emulator.messages import ApiRequest, ApiResponse
from emulator.store import Store

MAX_OPERATIONS = 1000
_API = "/api/data/v9.2/"


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise bad_request("The $batch request needs Content-Type: multipart/mixed with a boundary.")
    return m.group(1)


def _split(body: str, boundary: str) -> list[str]:
    delimiter = "--" + boundary
    if delimiter not in body:
        raise bad_request("The $batch body does not contain its boundary.")
    chunks = body.split(delimiter)[1:]
    parts = []
    for chunk in chunks:
        if chunk.startswith("--"):
            break
        parts.append(chunk.strip("\n"))
    return parts


def _headers_and_body(text: str) -> tuple[dict[str, str], str]:
    head, _, rest = text.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers, rest


def _operation(mime_headers: dict[str, str], content: str) -> Operation:
    if "application/http" not in mime_headers.get("content-type", ""):
        raise bad_request("Each $batch part must have Content-Type: application/http.")
    request_line, _, rest = content.lstrip("\n").partition("\n")
    bits = request_line.split()
    if len(bits) < 2:
        raise bad_request("A $batch part lacks its request line.")
    if rest.startswith("\n"):
        head, body = "", rest[1:]
    else:
        head, _, body = rest.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return Operation(bits[0].upper(), bits[1], headers, body.strip("\n").encode(),
                     mime_headers.get("content-id") or headers.get("content-id"))


def parse(body: bytes, content_type: str) -> list[Operation | ChangeSet]:
    text = body.decode("utf-8").replace("\r\n", "\n")
    items: list[Operation | ChangeSet] = []
    for part in _split(text, _boundary(content_type)):
        mime, content = _headers_and_body(part)
        ctype = mime.get("content-type", "")
        if ctype.startswith("multipart/mixed"):
            cs = ChangeSet()
            for sub in _split(content, _boundary(ctype)):
                sub_mime, sub_content = _headers_and_body(sub)
                cs.operations.append(_operation(sub_mime, sub_content))
            items.append(cs)
        else:
            items.append(_operation(mime, content))
    return items


def _to_request(op: Operation, outer: ApiRequest, content_ids: dict[str, str]) -> ApiRequest:
    url = op.url
    if url.startswith("$"):
        ref, _, tail = url.partition("/")
        if ref not in content_ids:
            raise bad_request(f"Content-ID Reference: '{ref}' does not exist in the batch context.")
        url = content_ids[ref] + ("/" + tail if tail else "")
    parts = urlsplit(url)
    path = unquote(parts.path)
    if _API in path:
        path = path.split(_API, 1)[1]
    elif path.startswith("/"):
        raise bad_request(f"The $batch part URL must be below {_API}.")
    if path.startswith("$batch"):
        raise bad_request("A $batch request cannot contain another $batch request.")
    return ApiRequest(op.method, path, dict(parse_qsl(parts.query, keep_blank_values=True)), op.headers, op.body,
                      caller=outer.caller, base_url=outer.base_url, content_ids=content_ids)


def _render(resp: ApiResponse, content_id: str | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    reason = HTTPStatus(resp.status).phrase if resp.status in HTTPStatus._value2member_map_ else ""
    lines += ["", f"HTTP/1.1 {resp.status} {reason}"]
    for k, v in resp.headers.items():
        lines.append(f"{k}: {v}")
    lines.append("")
    lines.append(resp.body.decode("utf-8") if resp.body else "")
    return "\r\n".join(lines)


def handle(store: Store, req: ApiRequest) -> ApiResponse:
    from emulator.dataapi import dispatch  # noqa: PLC0415 (dispatch routes $batch here)

    if req.method != "POST":
        raise ApiError(405, "0x80060888", "$batch accepts POST only.")
    items = parse(req.body, req.headers.get("content-type", ""))
    count = sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in items)
    if count > MAX_OPERATIONS:
        raise bad_request(f"The number of requests in the $batch ({count}) exceeds the maximum of "
                          f"{MAX_OPERATIONS}.", "0x80060891")
    for item in items:
        if isinstance(item, ChangeSet) and any(op.method == "GET" for op in item.operations):
            raise bad_request("GET requests are not allowed inside a change set.")
    continue_on_error = "odata.continue-on-error" in req.prefer
    boundary = f"batchresponse_{uuid.uuid4()}"
    rendered: list[str] = []
    records = 0
    failed_status: int | None = None
    for item in items:
        if isinstance(item, Operation):
            try:
                resp = dispatch(store, _to_request(item, req, {}))
            except ApiError as err:
                resp = ApiResponse.of_error(err)
            records += resp.records
            if resp.status >= 400 and not continue_on_error:
                rendered, failed_status = [_render(resp)], resp.status
                break
            rendered.append(_render(resp))
            continue
        resp_cs, cs_records = _run_changeset(store, req, item, dispatch)
        records += cs_records
        if isinstance(resp_cs, ApiResponse):  # the change set failed and was rolled back
            if not continue_on_error:
                rendered, failed_status = [_render(resp_cs)], resp_cs.status
                break
            rendered.append(_render(resp_cs))
        else:
            rendered.append(resp_cs)
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in rendered) + f"--{boundary}--\r\n"
    out = ApiResponse(failed_status or 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"},
                      body.encode("utf-8"))
    out.records = records
    return out


def _run_changeset(store: Store, req: ApiRequest, cs: ChangeSet, dispatch: Any) -> tuple[ApiResponse | str, int]:
    """All operations or none: on the first failure everything the change set did is rolled back."""
    content_ids: dict[str, str] = {}
    parts: list[str] = []
    records = 0
    store.begin()
    for op in cs.operations:
        try:
            resp = dispatch(store, _to_request(op, req, content_ids))
        except ApiError as err:
            resp = ApiResponse.of_error(err)
        records += resp.records
        if resp.status >= 400:
            store.rollback()
            return resp, records
        entity_id = resp.headers.get("OData-EntityId")
        if op.content_id and entity_id:
            content_ids["$" + op.content_id] = entity_id.split(_API, 1)[-1]
        parts.append(_render(resp, op.content_id))
    store.commit()
    boundary = f"changesetresponse_{uuid.uuid4()}"
    inner = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}", records
