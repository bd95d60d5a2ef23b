"""CreateMultiple / UpdateMultiple / UpsertMultiple bound to an entity set (MS-doc bulk-operations).

Standard-table semantics: all-or-nothing (any failure rolls the whole request back), every target needs
`@odata.type` of the bound table, UpsertMultiple refuses duplicate keys in one request and key columns repeated in
a target body. Tables whose `Bulk` flag is off (appointment, annotation, …) get the refusal Dataverse gives.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from emulator import errors, records
from emulator.errors import ApiError, bad_request
from emulator.messages import ApiRequest, ApiResponse
from emulator.odata import parse_key, parse_segment
from emulator.store import Store

MESSAGES = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")


def handle(store: Store, req: ApiRequest, e: dict[str, Any], action: str) -> ApiResponse:
    table = e["LogicalName"]
    if action not in MESSAGES:
        raise ApiError(404, errors.UNKNOWN_PROPERTY, f"Resource not found for the segment "
                                                     f"'Microsoft.Dynamics.CRM.{action}'.")
    if req.method != "POST":
        raise ApiError(405, errors.UNKNOWN_PROPERTY, f"{action} is an action: use POST.")
    if not e["Bulk"].get(action):
        raise ApiError(400, errors.NOT_SUPPORTED,
                       f"The '{action}' message is not supported for entity '{table}'. "
                       "Use $batch or single requests for this table.")
    body = req.json()
    targets = body.get("Targets") if isinstance(body, dict) else None
    if not isinstance(targets, list) or not targets:
        raise bad_request(f"{action} needs a non-empty 'Targets' array.")
    for i, t in enumerate(targets):
        otype = str(t.get("@odata.type", "")).lstrip("#") if isinstance(t, dict) else ""
        if otype != f"Microsoft.Dynamics.CRM.{table}":
            raise bad_request(f"Targets[{i}] must carry \"@odata.type\": \"Microsoft.Dynamics.CRM.{table}\".")
    store.begin()
    try:
        if action == "CreateMultiple":
            ids = [records.create_row(store, e, _strip(t), req) for t in targets]
            resp = ApiResponse.of_json(200, {
                "@odata.context": f"{req.base_url}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                "Ids": ids})
        elif action == "UpdateMultiple":
            _update_multiple(store, req, e, targets)
            resp = ApiResponse(204)
        else:
            _upsert_multiple(store, req, e, targets)
            resp = ApiResponse(204)
    except ApiError as err:
        store.rollback()
        failed = ApiResponse.of_error(err, req.annotations)
        failed.records = len(targets)
        return failed
    store.commit()
    resp.records = len(targets)
    return resp


def _strip(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in target.items() if k not in ("@odata.type", "@odata.id")}


def _update_multiple(store: Store, req: ApiRequest, e: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    pk, seen = e["PrimaryIdAttribute"], set()
    for t in targets:
        row_id = str(t.get(pk) or "").lower()
        if not row_id:
            raise bad_request(f"UpdateMultiple targets must carry the primary key '{pk}'.")
        if row_id in seen:
            continue  # Dataverse applies only the first of duplicate targets
        seen.add(row_id)
        if row_id not in store.rows(e["LogicalName"]):
            raise errors.not_found(e["LogicalName"], row_id)
        records.update_row(store, e, row_id, {k: v for k, v in _strip(t).items() if k != pk}, req)


def _upsert_multiple(store: Store, req: ApiRequest, e: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    table, pk = e["LogicalName"], e["PrimaryIdAttribute"]
    plan = []
    seen: set[Any] = set()
    for i, t in enumerate(targets):
        body = _strip(t)
        odata_id = t.get("@odata.id")
        if odata_id:
            ref = str(odata_id).split("/api/data/", 1)[-1].split("/", 1)[-1] if "/api/data/" in str(odata_id) \
                else str(odata_id).lstrip("/")
            ref = unquote(ref)  # @odata.id is a URL: its key values arrive percent-encoded, as in a path
            name, keytext = parse_segment(ref)
            if name != e["EntitySetName"] or keytext is None:
                raise bad_request(f"Targets[{i}] @odata.id must reference '{e['EntitySetName']}(<key>)'.")
            key = parse_key(keytext)
        elif body.get(pk):
            key = {"id": str(body.pop(pk)).lower()}
        else:
            raise bad_request(f"Targets[{i}] needs an @odata.id with an alternate key or the primary key '{pk}'.")
        if "id" in key and len(key) == 1:
            ident: Any = ("id", key["id"])
            row_id = key["id"] if key["id"] in store.rows(table) else None
            key_values = None
        else:
            k, values = records.alternate_key_for(store, e, key)
            repeated = [c for c in k["KeyAttributes"] if c in body]
            if repeated:
                raise bad_request(f"An unexpected error occurred: Targets[{i}] repeats key column(s) "
                                  f"{', '.join(repeated)} in the body; give them only in @odata.id.")
            ident = (k["LogicalName"], tuple(v.lower() if isinstance(v, str) else v for v in values))
            row_id = store.find_by_key(table, k["LogicalName"], values)
            key_values = dict(zip(k["KeyAttributes"], values, strict=True))
        if ident in seen:
            raise bad_request(f"UpsertMultiple: Targets[{i}] duplicates the key of an earlier target in the "
                              "same request.", errors.DUPLICATE_RECORD)
        seen.add(ident)
        plan.append((row_id, key, key_values, body))
    for row_id, key, key_values, body in plan:
        if row_id is not None:
            records.update_row(store, e, row_id, body, req)
        elif key_values is None:
            records.create_row(store, e, body, req, row_id=key["id"])
        else:
            # An earlier target of this request may have created the row meanwhile: re-check by key.
            records.create_row(store, e, body, req, key_values=key_values)
