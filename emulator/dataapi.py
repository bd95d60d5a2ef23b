"""Routes one Web API request (below /api/data/v9.2/) to its handler: entity sets, rows, upsert, WhoAmI,
bulk messages, metadata, $batch. Synchronous on purpose: one request's state change is never interleaved."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from emulator import errors, records, schema
from emulator.errors import ApiError, bad_request, not_found, unknown_property
from emulator.messages import ApiRequest, ApiResponse
from emulator.odata import (
    Filter,
    parse_filter,
    parse_key,
    parse_orderby,
    parse_segment,
    parse_select,
    require_int,
    split_outside,
)
from emulator.store import Store

log = logging.getLogger("emulator")


def dispatch(store: Store, req: ApiRequest) -> ApiResponse:
    """Answer one request; ApiErrors become error responses."""
    try:
        store.refresh_keys()
        return _route(store, req)
    except ApiError as err:
        return ApiResponse.of_error(err, req.annotations)
    except Exception:  # an emulator bug must look like a server fault, not hang the client
        log.exception("emulator failed on %s %s", req.method, req.path.split("(")[0])
        return ApiResponse.of_error(ApiError(500, "0x80040265", "An unexpected error occurred."))


def _route(store: Store, req: ApiRequest) -> ApiResponse:
    from emulator import batch, blocks, bulk, metadata  # noqa: PLC0415 (cycle: they call dispatch)

    path = req.path.strip("/")
    segments = split_outside(path, "/")
    head, keytext = parse_segment(segments[0])
    if head == "$batch":
        return batch.handle(store, req)
    if head in ("WhoAmI", "WhoAmI()"):
        return _whoami(req)
    if head in metadata.ROOTS or head in metadata.ACTIONS:
        return metadata.handle(store, req, segments)
    if head in blocks.ACTIONS:
        return blocks.handle(store, req, head)
    if head == "sdkmessagefilters":
        return _sdkmessagefilters(store, req)
    _check_json(req)
    e = store.entity_by_set(head)
    if e is None:
        raise ApiError(404, errors.UNKNOWN_PROPERTY, f"Resource not found for the segment '{head}'.")
    if e.get("VisibleAt", 0) > store.clock.now():
        raise ApiError(400, errors.METADATA_NOT_READY, f"The metadata cache is not ready for entity "
                                                       f"'{e['LogicalName']}' yet. Retry in a few seconds.")
    if len(segments) == 2 and segments[1].startswith("Microsoft.Dynamics.CRM."):
        return bulk.handle(store, req, e, segments[1].removeprefix("Microsoft.Dynamics.CRM."))
    if keytext is None:
        if len(segments) > 1:
            raise ApiError(404, errors.UNKNOWN_PROPERTY, f"Resource not found for the segment '{segments[1]}'.")
        if req.method == "GET":
            return _list(store, req, e)
        if req.method == "POST":
            return _create(store, req, e)
        raise ApiError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on '{head}'.")
    if len(segments) > 1:
        return _property(store, req, e, keytext, segments[1:])
    if req.method == "GET":
        return _get(store, req, e, keytext)
    if req.method == "PATCH":
        return _upsert(store, req, e, keytext)
    if req.method == "DELETE":
        return _delete(store, req, e, keytext)
    raise ApiError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on this resource.")


def _check_json(req: ApiRequest) -> None:
    """The data API takes JSON bodies only (file columns aside, which the emulator does not model)."""
    ctype = req.headers.get("content-type", "")
    if req.body and ctype and "json" not in ctype.lower():
        raise ApiError(415, "0x80048d19", f"Content-Type '{ctype.split(';')[0]}' is not supported: send "
                                          "application/json.")


def _whoami(req: ApiRequest) -> ApiResponse:
    return ApiResponse.of_json(200, {
        "@odata.context": f"{req.base_url}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
        "BusinessUnitId": schema.BUSINESS_UNIT_ID, "UserId": req.caller, "OrganizationId": schema.ORGANIZATION_ID})


def _context(req: ApiRequest, e: dict[str, Any], single: bool = False) -> str:
    return f"{req.base_url}$metadata#{e['EntitySetName']}" + ("/$entity" if single else "")


def _row_or_404(store: Store, e: dict[str, Any], keytext: str) -> str:
    row_id = records.find_row(store, e, keytext)
    if row_id is None:
        key = parse_key(keytext)
        if "id" in key:
            raise not_found(e["LogicalName"], key["id"])
        raise ApiError(404, errors.DOES_NOT_EXIST,
                       f"A record with the specified key values does not exist in {e['LogicalName']} entity")
    return row_id


_UNSUPPORTED_QUERIES = ("sql", "fetchXml", "savedQuery", "userQuery", "$apply", "$search", "$skip")


def _list(store: Store, req: ApiRequest, e: dict[str, Any]) -> ApiResponse:
    unsupported = [q for q in _UNSUPPORTED_QUERIES if q in req.query]
    if unsupported:
        # Answering these with the unfiltered table would look like success; refuse them plainly instead.
        raise ApiError(501, "0x80040800", f"The emulator does not support the query option "
                                          f"'{unsupported[0]}'. Use $filter/$select/$top/$orderby.")
    select = parse_select(req.query.get("$select"))
    records.check_select(store, e, select)
    if "$filter" in req.query:
        pred = parse_filter(req.query["$filter"], records.filter_checker(store, e))
        rows = _filtered(store, e, pred)
    else:
        rows = list(store.rows(e["LogicalName"]).values())
    for col, desc in reversed(parse_orderby(req.query.get("$orderby"))):
        records.filter_checker(store, e)(col)
        rows.sort(key=lambda r, c=col: (records.output_view(store, e, r).get(c) is None,
                                        records.output_view(store, e, r).get(c) or ""), reverse=desc)
    top = require_int("$top", req.query.get("$top"))
    if top is not None:
        rows = rows[:top]
    page = store.config.page_size
    if "odata.maxpagesize=" in req.prefer:
        page = min(page, int(req.prefer.split("odata.maxpagesize=", 1)[1].split(",")[0].strip()))
    offset = 0
    token = req.query.get("$skiptoken")
    if token:
        try:
            offset = int(token.split('offset="', 1)[1].split('"', 1)[0])
        except (IndexError, ValueError) as exc:
            raise bad_request("Invalid $skiptoken.") from exc
    expand = _expand(req)
    chunk = rows[offset:offset + page]
    out: dict[str, Any] = {"@odata.context": _context(req, e)}
    if req.query.get("$count") == "true":
        out["@odata.count"] = len(rows)
    out["value"] = [records.serialize(store, e, r, select, req.annotations, expand) for r in chunk]
    if offset + page < len(rows):
        q = {k: v for k, v in req.query.items() if k != "$skiptoken"}
        nxt = offset + page
        q["$skiptoken"] = f'<cookie pagenumber="{nxt // page + 1}" offset="{nxt}" />'
        out["@odata.nextLink"] = f"{req.base_url}{e['EntitySetName']}?" + "&".join(
            f"{k}={quote(v, safe='')}" for k, v in q.items())
    return ApiResponse.of_json(200, out)


def _filtered(store: Store, e: dict[str, Any], pred: Filter) -> list[dict[str, Any]]:
    """The rows `pred` matches, in row-id order (as Dataverse returns rows without `$orderby`: by primary
    key), so a query's pages and `$top` do not depend on how the rows were found: by primary key or through an
    Active one-column alternate key when the filter pins that column (`eq`, `In`), else by testing every row.
    (The writer reads which activities exist by their primary ids: tested row by row, that was 45% of the
    emulator's CPU in a 1M-record load.)"""
    table = e["LogicalName"]
    rows = store.rows(table)
    candidates: Iterable[str] = rows
    for hint in pred.hints:
        if hint.prop == e["PrimaryIdAttribute"]:  # the primary key: rows are stored by it
            candidates = {v: None for v in hint.values if isinstance(v, str) and v in rows}  # each row once
            break
        key = next((k for k in store.active_keys(table) if k["KeyAttributes"] == [records.column_of(hint.prop)]),
                   None)
        if key is not None:
            found = {store.find_by_key(table, key["LogicalName"], (v,)) for v in hint.values}
            candidates = [i for i in found if i is not None]
            break
    matched = [i for i in candidates if pred(records.output_view(store, e, rows[i]))]
    return [rows[i] for i in sorted(matched)]


def _expand(req: ApiRequest) -> list[str] | None:
    text = req.query.get("$expand")
    if not text:
        return None
    return [parse_segment(p.strip())[0] for p in split_outside(text, ",")]


def _get(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str) -> ApiResponse:
    select = parse_select(req.query.get("$select"))
    records.check_select(store, e, select)
    row_id = _row_or_404(store, e, keytext)
    row = store.rows(e["LogicalName"])[row_id]
    body = {"@odata.context": _context(req, e, True)}
    body.update(records.serialize(store, e, row, select, req.annotations, _expand(req)))
    if req.headers.get("if-none-match") == records.etag(row):
        return ApiResponse(304)
    return ApiResponse.of_json(200, body, {"ETag": records.etag(row)})


def _representation(store: Store, req: ApiRequest, e: dict[str, Any], row_id: str, status: int,
                    headers: dict[str, str]) -> ApiResponse:
    select = parse_select(req.query.get("$select"))
    records.check_select(store, e, select)
    row = store.rows(e["LogicalName"])[row_id]
    body = {"@odata.context": _context(req, e, True)}
    body.update(records.serialize(store, e, row, select, req.annotations))
    headers = dict(headers)
    headers["Preference-Applied"] = "return=representation"
    return ApiResponse.of_json(status, body, headers, records=1)


def _create(store: Store, req: ApiRequest, e: dict[str, Any]) -> ApiResponse:
    body = req.json()
    row_id = records.create_row(store, e, body, req)
    url = records.entity_id_url(req, e, row_id)
    headers = {"OData-EntityId": url, "Location": url}
    if req.representation:
        return _representation(store, req, e, row_id, 201, headers)
    return ApiResponse(204, headers, records=1)


def _check_etag(req: ApiRequest, row: dict[str, Any]) -> None:
    if_match = req.headers.get("if-match")
    if if_match and if_match != "*" and if_match != records.etag(row):
        raise ApiError(412, errors.VERSION_MISMATCH,
                       "The version of the existing record doesn't match the RowVersion property provided.")


def _upsert(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str) -> ApiResponse:
    """PATCH: update if the row exists, else create it (unless If-Match forbids)."""
    table = e["LogicalName"]
    key = parse_key(keytext)
    by_id = "id" in key and len(key) == 1
    if by_id:
        row_id = key["id"] if key["id"] in store.rows(table) else None
    else:
        k, values = records.alternate_key_for(store, e, key)
        row_id = store.find_by_key(table, k["LogicalName"], values)
    body = req.json()
    if row_id is not None:
        if req.headers.get("if-none-match") == "*":
            raise errors.duplicate_key()
        _check_etag(req, store.rows(table)[row_id])
        if not by_id and isinstance(body, dict):
            # Key values repeated in the body are ignored on update: a key cannot be changed through itself.
            body = {c: v for c, v in body.items() if c not in k["KeyAttributes"]}
        records.update_row(store, e, row_id, body, req)
        status = 200
    else:
        if req.headers.get("if-match"):
            if by_id:
                raise not_found(table, key["id"])
            raise ApiError(404, errors.DOES_NOT_EXIST,
                           f"A record with the specified key values does not exist in {table} entity")
        if by_id:
            row_id = records.create_row(store, e, body, req, row_id=key["id"])
        else:
            key_values = {c: v for c, v in zip(k["KeyAttributes"], values, strict=True)}
            row_id = records.create_row(store, e, body, req, key_values=key_values)
        status = 201
    url = records.entity_id_url(req, e, row_id, None if by_id else keytext)
    headers = {"OData-EntityId": url}
    if req.representation:
        return _representation(store, req, e, row_id, status, headers)
    return ApiResponse(204, headers, records=1)


def _delete(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str) -> ApiResponse:
    row_id = _row_or_404(store, e, keytext)
    _check_etag(req, store.rows(e["LogicalName"])[row_id])
    store.delete_row(e["LogicalName"], row_id)
    if e["LogicalName"] == "appointment":
        for pid in store.parties_of(row_id):
            store.delete_row("activityparty", pid)
    return ApiResponse(204, records=1)


def _property(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str, rest: list[str]) -> ApiResponse:
    """`set(id)/column` (GET/PUT/DELETE a single value) and `set(id)/documentbody/$value`."""
    row_id = _row_or_404(store, e, keytext)
    table = e["LogicalName"]
    name = rest[0]
    coll = e["Collections"].get(name)
    if coll is not None and req.method == "GET":
        child = store.entities[coll["entity"]]
        rows = [r for r in store.rows(coll["entity"]).values()
                if (r.get(coll["attribute"]) or {}).get("id") == row_id]
        return ApiResponse.of_json(200, {"@odata.context": _context(req, child),
                                         "value": [records.serialize(store, child, r, None, req.annotations)
                                                   for r in rows]})
    a = records.visible_attr(store, e, name)
    if a is None:
        raise unknown_property(name, table)
    row = store.rows(table)[row_id]
    if req.method == "GET":
        if rest[1:] == ["$value"]:
            v = row.get(name)
            return ApiResponse(200 if v is not None else 204, {"Content-Type": "text/plain"},
                               str(v).encode() if v is not None else b"")
        return ApiResponse.of_json(200, {"@odata.context": f"{req.base_url}$metadata#{e['EntitySetName']}"
                                                           f"({row_id})/{name}", "value": row.get(name)})
    if req.method == "PUT":
        value = req.json().get("value")
        records.update_row(store, e, row_id, {name: value}, req)
        return ApiResponse(204, records=1)
    if req.method == "DELETE":
        records.update_row(store, e, row_id, {name: None}, req)
        return ApiResponse(204, records=1)
    raise ApiError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a property.")


def _sdkmessagefilters(store: Store, req: ApiRequest) -> ApiResponse:
    """Which tables support which bulk message: one row per supported (message, table) pair."""
    rows = []
    for e in store.entities.values():
        for message, ok in e["Bulk"].items():
            if ok:
                rows.append({"sdkmessagefilterid": schema.stable_id("filter", message, e["LogicalName"]),
                             "primaryobjecttypecode": e["LogicalName"], "sdkmessageid": {"name": message}})
    if "$filter" in req.query:
        allowed = {"sdkmessagefilterid", "primaryobjecttypecode", "sdkmessageid", "sdkmessageid/name"}

        def check(name: str) -> None:
            if name not in allowed:
                raise unknown_property(name, "sdkmessagefilter")
        pred = parse_filter(req.query["$filter"], check)
        rows = [r for r in rows if pred(r)]
    select = parse_select(req.query.get("$select"))
    out = [{k: v for k, v in r.items() if select is None or k in select} for r in rows]
    return ApiResponse.of_json(200, {"@odata.context": f"{req.base_url}$metadata#sdkmessagefilters",
                                     "value": json.loads(json.dumps(out))})
