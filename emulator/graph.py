"""Microsoft Graph for SharePoint document libraries (../shared/reference/dataverse.md §8): site and drives,
items by id or path, folder creation with conflict behaviour, simple upload, upload sessions (320 KiB fragment
rule, in-order Content-Range with a constant total, 202/201, 416 on overlap, status, cancel, deferCommit).

Upload URLs live under /_upload/ (like the real pre-authenticated URLs on another host) and refuse an
Authorization header. File bytes are kept in `Store.blobs`, keyed by item id; the state holds size and sha256.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.errors import ApiError, graph_error
from emulator.messages import ApiRequest, ApiResponse
from emulator.store import Store

FRAGMENT_UNIT = 327_680
MAX_FRAGMENT = 60 * 1024 * 1024
_BAD_NAME = re.compile(r'["*:<>?/\\|]')


def dispatch(store: Store, req: ApiRequest, upload: bool = False) -> ApiResponse:
    try:
        if upload:
            return _session_call(store, req)
        return _route(store, req)
    except ApiError as err:
        return ApiResponse.of_error(err)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found() -> ApiError:
    return graph_error(404, "itemNotFound", "The resource could not be found.")


def _site_out(store: Store) -> dict[str, Any]:
    site = store.state["graph"]["site"]
    return {"id": site["id"], "name": site["path"].rsplit("/", 1)[-1], "displayName": site["path"].rsplit("/", 1)[-1],
            "webUrl": f"https://{site['hostname']}/{site['path']}", "createdDateTime": "2020-01-01T00:00:00Z"}


def _drive_out(store: Store, d: dict[str, Any]) -> dict[str, Any]:
    site = store.state["graph"]["site"]
    return {"id": d["id"], "name": d["name"], "driveType": "documentLibrary",
            "webUrl": f"https://{site['hostname']}/{site['path']}/{d['name']}"}


def _path_of(d: dict[str, Any], item_id: str) -> list[str]:
    names = []
    cur = d["items"][item_id]
    while cur["parent"] is not None:
        names.append(cur["name"])
        cur = d["items"][cur["parent"]]
    return list(reversed(names))


def _item_out(store: Store, d: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    site = store.state["graph"]["site"]
    path = "/".join(_path_of(d, item["id"]))
    out: dict[str, Any] = {
        "id": item["id"], "name": item["name"], "size": item["size"],
        "createdDateTime": item.get("created", _now()), "lastModifiedDateTime": item.get("modified", _now()),
        "webUrl": f"https://{site['hostname']}/{site['path']}/{d['name']}" + (f"/{path}" if path else ""),
    }
    if item["parent"] is not None:
        parent_path = "/".join(_path_of(d, item["parent"]))
        out["parentReference"] = {"driveId": d["id"], "driveType": "documentLibrary", "id": item["parent"],
                                  "path": f"/drives/{d['id']}/root:" + (f"/{parent_path}" if parent_path else "")}
    if item["folder"]:
        out["folder"] = {"childCount": len(store.folder(d["id"], item["id"]))}
    else:
        out["file"] = {"mimeType": item.get("mime") or "application/octet-stream",
                       "hashes": {"sha256Hash": (item.get("sha256") or "").upper()}}
    return out


def _child(store: Store, d: dict[str, Any], parent_id: str, name: str) -> dict[str, Any] | None:
    item_id = store.folder(d["id"], parent_id).get(name.lower())
    return None if item_id is None else d["items"][item_id]


def _resolve_path(d: dict[str, Any], base_id: str, path: str, create_folders: bool, store: Store) -> str:
    cur = base_id
    names = [p for p in path.split("/") if p]
    for i, name in enumerate(names):
        nxt = _child(store, d, cur, name)
        if nxt is None:
            if not create_folders:
                raise _not_found()
            nxt = _new_item(store, d, cur, name, folder=True)
        elif not nxt["folder"] and (create_folders or i < len(names) - 1):
            raise graph_error(400, "invalidRequest", "A path segment names a file, not a folder.")
        cur = nxt["id"]
    return cur


def _new_item(store: Store, d: dict[str, Any], parent: str, name: str, folder: bool) -> dict[str, Any]:
    _check_name(name)
    item_id = "01" + store.new_id().replace("-", "")[:32].upper()
    item = {"id": item_id, "name": name, "parent": parent, "folder": folder, "size": 0, "sha256": None,
            "created": _now(), "modified": _now(), "mime": None}
    d["items"][item_id] = item
    store.add_to_folder(d["id"], item)
    store.dirty = True
    return item


def _check_name(name: str) -> None:
    if not name or _BAD_NAME.search(name) or name.endswith((".", " ")) or len(name) > 400:
        raise graph_error(400, "invalidRequest", "The item name is empty or contains characters SharePoint "
                                                 "does not allow.")


def _delete_tree(store: Store, d: dict[str, Any], item_id: str) -> None:
    for child in list(store.folder(d["id"], item_id).values()):
        _delete_tree(store, d, child)
    item = d["items"].pop(item_id, None)
    if item is not None:
        store.remove_from_folder(d["id"], item)
    store.blobs.pop(item_id, None)


def _rename(store: Store, d: dict[str, Any], parent: str, name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    n = 1
    while True:
        candidate = f"{stem} {n}" + (f".{ext}" if ext else "")
        if _child(store, d, parent, candidate) is None:
            return candidate
        n += 1


def _place(store: Store, d: dict[str, Any], parent: str, name: str, behavior: str,
           folder: bool) -> tuple[dict[str, Any], bool]:
    """Apply conflict behaviour; returns (item, created_new)."""
    if behavior not in ("fail", "replace", "rename"):
        raise graph_error(400, "invalidRequest", "conflictBehavior must be fail, replace or rename.")
    existing = _child(store, d, parent, name)
    if existing is None:
        return _new_item(store, d, parent, name, folder), True
    if behavior == "fail":
        raise graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
    if behavior == "rename":
        return _new_item(store, d, parent, _rename(store, d, parent, name), folder), True
    if existing["folder"] != folder or folder:
        _delete_tree(store, d, existing["id"])
        return _new_item(store, d, parent, name, folder), True
    return existing, False


def _write_file(store: Store, item: dict[str, Any], data: bytes, mime: str | None) -> None:
    store.blobs[item["id"]] = data
    item["size"] = len(data)
    item["sha256"] = hashlib.sha256(data).hexdigest()
    item["mime"] = mime or "application/octet-stream"
    item["modified"] = _now()
    store.dirty = True


# ---------------- routing ----------------
def _route(store: Store, req: ApiRequest) -> ApiResponse:
    g = store.state["graph"]
    path = req.path.strip("/")
    if path.startswith("sites/"):
        rest = path[len("sites/"):]
        site = g["site"]
        host_form = f"{site['hostname']}:/{site['path']}"
        for form in (host_form + ":", host_form, site["id"]):
            if rest == form or rest.startswith(form + "/"):
                tail = rest[len(form):].strip("/")
                if tail == "":
                    return ApiResponse.of_json(200, _site_out(store))
                if tail == "drives":
                    return ApiResponse.of_json(200, {"value": [_drive_out(store, d) for d in g["drives"].values()]})
                if tail == "drive":
                    return ApiResponse.of_json(200, _drive_out(store, next(iter(g["drives"].values()))))
                raise _not_found()
        raise _not_found()
    if not path.startswith("drives/"):
        raise graph_error(400, "invalidRequest", "Unsupported Graph segment.")
    rest = path[len("drives/"):]
    drive_id, _, rest = rest.partition("/")
    d = g["drives"].get(drive_id)
    if d is None:
        raise _not_found()
    if rest == "":
        return ApiResponse.of_json(200, _drive_out(store, d))
    if rest.startswith("root"):
        base, rest = d["root"], rest[4:]
    elif rest.startswith("items/"):
        base, _, tail = rest[len("items/"):].partition("/")
        if ":" in base:
            base, colon, more = base.partition(":")
            tail = colon + more + ("/" + tail if tail else "")
        rest = ("/" + tail) if tail and not tail.startswith(":") else tail
        if base not in d["items"]:
            raise _not_found()
    else:
        raise _not_found()
    rel_path, suffix = "", rest.strip("/")
    if rest.startswith(":"):
        body = rest[1:]
        end = body.rfind(":")
        rel_path, suffix = (body[:end], body[end + 1:].strip("/")) if end >= 0 else (body, "")
    return _item_call(store, req, d, base, rel_path, suffix)


def _item_call(store: Store, req: ApiRequest, d: dict[str, Any], base: str, rel_path: str,
               suffix: str) -> ApiResponse:
    if suffix == "content" and req.method == "PUT":
        return _simple_upload(store, req, d, base, rel_path)
    if suffix == "createUploadSession" and req.method == "POST":
        return _create_session(store, req, d, base, rel_path)
    item_id = _resolve_path(d, base, rel_path, False, store)
    item = d["items"][item_id]
    if suffix == "":
        if req.method == "GET":
            return ApiResponse.of_json(200, _item_out(store, d, item))
        if req.method == "DELETE":
            if item["parent"] is None:
                raise graph_error(403, "accessDenied", "The root cannot be deleted.")
            _delete_tree(store, d, item_id)
            store.dirty = True
            return ApiResponse(204)
    if suffix == "children":
        if not item["folder"]:
            raise graph_error(400, "invalidRequest", "Children exist only under folders.")
        if req.method == "GET":
            kids = sorted(store.folder(d["id"], item_id).items())
            return ApiResponse.of_json(200, {"value": [_item_out(store, d, d["items"][i]) for _, i in kids]})
        if req.method == "POST":
            body = req.json()
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                raise graph_error(400, "invalidRequest", "A name is required.")
            if "folder" not in body and "file" not in body:
                raise graph_error(400, "invalidRequest", "Specify folder: {} to create a folder.")
            behavior = body.get("@microsoft.graph.conflictBehavior", "fail")
            new, _ = _place(store, d, item_id, body["name"], behavior, folder="folder" in body)
            return ApiResponse.of_json(201, _item_out(store, d, new))
    if suffix == "content" and req.method == "GET":
        if item["folder"]:
            raise graph_error(400, "invalidRequest", "Folders have no content.")
        return ApiResponse(200, {"Content-Type": item.get("mime") or "application/octet-stream"},
                           store.blobs.get(item_id, b""))
    raise graph_error(405, "invalidRequest", "Unsupported method for this resource.")


def _simple_upload(store: Store, req: ApiRequest, d: dict[str, Any], base: str, rel_path: str) -> ApiResponse:
    limit = store.config.sharepoint.max_simple_upload_bytes
    if len(req.body) > limit:
        raise graph_error(413, "requestTooLarge", f"Simple upload supports files up to {limit} bytes: use an "
                                                  "upload session.")
    if not rel_path:  # PUT /items/{id}/content replaces that file
        item = d["items"][base]
        if item["folder"]:
            raise graph_error(400, "invalidRequest", "Cannot write content to a folder.")
        _write_file(store, item, req.body, req.headers.get("content-type"))
        return ApiResponse.of_json(200, _item_out(store, d, item))
    folder_path, _, name = rel_path.rstrip("/").rpartition("/")
    parent = _resolve_path(d, base, folder_path, True, store)
    behavior = req.query.get("@microsoft.graph.conflictBehavior", "replace")
    item, created = _place(store, d, parent, name, behavior, folder=False)
    _write_file(store, item, req.body, req.headers.get("content-type"))
    return ApiResponse.of_json(201 if created else 200, _item_out(store, d, item))


# ---------------- upload sessions ----------------
def _create_session(store: Store, req: ApiRequest, d: dict[str, Any], base: str, rel_path: str) -> ApiResponse:
    body = req.json() or {}
    item_props = body.get("item") or {}
    folder_path, _, name = rel_path.rstrip("/").rpartition("/")
    _check_name(name or item_props.get("name", ""))
    parent = _resolve_path(d, base, folder_path, True, store)
    sid = store.new_id().replace("-", "")
    expires = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.state["graph"]["sessions"][sid] = {
        "drive": d["id"], "parent": parent, "name": name or item_props.get("name"),
        "behavior": item_props.get("@microsoft.graph.conflictBehavior", "fail"),
        "defer": bool(body.get("deferCommit")), "total": None, "received": 0, "expires": expires,
        "size_hint": item_props.get("fileSize")}
    store.blobs["session:" + sid] = b""
    store.dirty = True
    return ApiResponse.of_json(200, {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": f"{req.base_url}/_upload/{sid}?tempauth=emulator", "expirationDateTime": expires,
        "nextExpectedRanges": ["0-"]})


def _status(s: dict[str, Any]) -> dict[str, Any]:
    return {"expirationDateTime": s["expires"], "nextExpectedRanges": [f"{s['received']}-"]}


def _session_call(store: Store, req: ApiRequest) -> ApiResponse:
    sid = req.path.strip("/").split("/")[0]
    sessions = store.state["graph"]["sessions"]
    s = sessions.get(sid)
    if s is None:
        raise graph_error(404, "itemNotFound", "The upload session was not found (expired, cancelled or done).")
    if "authorization" in req.headers:
        raise graph_error(401, "unauthenticated", "Do not send an Authorization header to an upload URL: "
                                                  "it is pre-authenticated.")
    if req.method == "GET":
        return ApiResponse.of_json(200, _status(s))
    if req.method == "DELETE":
        del sessions[sid]
        store.blobs.pop("session:" + sid, None)
        store.dirty = True
        return ApiResponse(204)
    if req.method == "POST":
        if not s["defer"] or s["total"] is None or s["received"] != s["total"]:
            raise graph_error(400, "invalidRequest", "Nothing to commit: the upload is not complete.")
        return _commit(store, sid, s)
    if req.method != "PUT":
        raise graph_error(405, "invalidRequest", "Unsupported method for an upload session.")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", req.headers.get("content-range", "").strip())
    if not m:
        raise graph_error(400, "invalidRequest", "A fragment needs Content-Range: bytes start-end/total.")
    start, end, total = (int(x) for x in m.groups())
    if s["total"] is None:
        s["total"] = total
    elif s["total"] != total:
        raise graph_error(400, "invalidRequest", "The total size in Content-Range must be the same in every "
                                                 "fragment.")
    length = end - start + 1
    if length != len(req.body) or length <= 0:
        raise graph_error(400, "invalidRequest", "Content-Range does not match the fragment length.")
    if start != s["received"]:
        raise graph_error(416, "invalidRange", f"The fragment starts at {start} but the next expected byte is "
                                               f"{s['received']}.")
    last = end + 1 == total
    if length >= MAX_FRAGMENT:
        raise graph_error(400, "invalidRequest", "A fragment must be smaller than 60 MiB.")
    if not last and length % FRAGMENT_UNIT != 0:
        raise graph_error(400, "invalidRequest", "Fragment size must be a multiple of 320 KiB (327,680 bytes).")
    if end >= total:
        raise graph_error(416, "invalidRange", "The fragment ends beyond the declared total size.")
    store.blobs["session:" + sid] += req.body
    s["received"] = end + 1
    store.dirty = True
    if not last or s["defer"]:
        return ApiResponse.of_json(202, _status(s))
    return _commit(store, sid, s)


def _commit(store: Store, sid: str, s: dict[str, Any]) -> ApiResponse:
    d = store.state["graph"]["drives"][s["drive"]]
    data = store.blobs.pop("session:" + sid, b"")
    del store.state["graph"]["sessions"][sid]
    item, created = _place(store, d, s["parent"], s["name"], s["behavior"], folder=False)
    _write_file(store, item, data, None)
    return ApiResponse.of_json(201 if created else 200, _item_out(store, d, item))


def encode_blob(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
