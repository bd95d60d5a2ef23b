"""Annotation block upload (MS-doc attachment-annotation-files): InitializeAnnotationBlocksUpload, UploadBlock
(≤ 4 MB each), CommitAnnotationBlocksUpload. The committed file obeys the same Base64 size limit as a direct
`documentbody`, and the note is created (or updated) from the `Target` of the commit."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from emulator import errors, records
from emulator.errors import ApiError, bad_request
from emulator.messages import ApiRequest, ApiResponse
from emulator.store import Store

ACTIONS = ("InitializeAnnotationBlocksUpload", "UploadBlock", "CommitAnnotationBlocksUpload")
MAX_BLOCK = 4 * 1024 * 1024


def handle(store: Store, req: ApiRequest, action: str) -> ApiResponse:
    if req.method != "POST":
        raise ApiError(405, errors.UNKNOWN_PROPERTY, f"{action} is an action: use POST.")
    body = req.json()
    uploads = store.state.setdefault("annotation_uploads", {})
    if action == "InitializeAnnotationBlocksUpload":
        target = _target(body)
        token = store.new_id().replace("-", "")
        uploads[token] = {"annotationid": target["annotationid"], "blocks": []}
        return ApiResponse.of_json(200, {"FileContinuationToken": token})
    token = body.get("FileContinuationToken")
    upload = uploads.get(token)
    if upload is None:
        raise bad_request("The FileContinuationToken is unknown or already committed.")
    if action == "UploadBlock":
        block_id, data = body.get("BlockId"), body.get("BlockData")
        if not isinstance(block_id, str) or not block_id or not isinstance(data, str):
            raise bad_request("UploadBlock needs BlockId and BlockData (Base64).")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request("BlockData is not valid Base64.") from exc
        if len(raw) > MAX_BLOCK:
            raise bad_request("A block may carry at most 4 MB.")
        store.blobs[f"ablock:{token}:{block_id}"] = raw
        upload["blocks"].append(block_id)
        return ApiResponse(204)
    target = _target(body)
    block_list = body.get("BlockList")
    if not isinstance(block_list, list) or any(b not in upload["blocks"] for b in block_list):
        raise bad_request("BlockList must name uploaded blocks, in order.")
    data = b"".join(store.blobs.pop(f"ablock:{token}:{b}") for b in block_list)
    for b in upload["blocks"]:
        store.blobs.pop(f"ablock:{token}:{b}", None)
    del uploads[token]
    note = {k: v for k, v in target.items() if not k.startswith("@")}
    note_id = str(note.pop("annotationid")).lower()
    note["documentbody"] = base64.b64encode(data).decode("ascii")
    e = store.entities["annotation"]
    if note_id in store.rows("annotation"):
        records.update_row(store, e, note_id, note, req)
    else:
        records.create_row(store, e, note, req, row_id=note_id)
    resp = ApiResponse.of_json(200, {"AnnotationId": note_id, "FileSizeInBytes": len(data)})
    resp.records = 1
    return resp


def _target(body: Any) -> dict[str, Any]:
    target = body.get("Target") if isinstance(body, dict) else None
    if not isinstance(target, dict) or not target.get("annotationid"):
        raise bad_request("Target must be an annotation carrying an annotationid (generate one for a new note).")
    if str(target.get("@odata.type", "")).lstrip("#") != "Microsoft.Dynamics.CRM.annotation":
        raise bad_request("Target must carry \"@odata.type\": \"Microsoft.Dynamics.CRM.annotation\".")
    return target
