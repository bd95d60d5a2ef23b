"""Row operations of the Web API: validate a body against a table, create, update, upsert, read, delete.

Rules enforced (../shared/reference/dataverse.md §4 and §11): unknown properties, over-long strings, picklist
ranges, `@odata.bind` navigation names/targets/rows (by id or Active alternate key), owner must be enabled,
`overriddencreatedon` on create only, appointment state pairs and read-only closed appointments, activity
parties by deep insert, annotation size limit, alternate-key uniqueness, ETag concurrency.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from emulator import errors, schema
from emulator.errors import ApiError, bad_request, not_found, unknown_property
from emulator.messages import ApiRequest
from emulator.odata import parse_key, parse_segment
from emulator.store import Store

_IGNORED_ANNOTATIONS = ("@odata.type", "@odata.etag", "@odata.context", "@odata.id", "@odata.editLink")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag(row: dict[str, Any]) -> str:
    return f'W/"{row.get("versionnumber", 0)}"'


def visible_attr(store: Store, e: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The column if it exists and its metadata has propagated (fault injection may delay it)."""
    a = e["Attributes"].get(name)
    if a is None or a.get("VisibleAt", 0) > store.clock.now():
        return None
    return a


# ---------------- references: "/contacts(<id>)", "contacts(bw_sourceid='x')", "$1" ----------------
def resolve_reference(store: Store, value: str, content_ids: dict[str, str]) -> tuple[dict[str, Any], str]:
    """A bind value -> (target table definition, row id). Raises 400 for a bad set/key, 404 for a missing row."""
    if not isinstance(value, str):
        raise bad_request("The value of an @odata.bind property must be a URI string.")
    ref = value
    if ref.startswith("$"):
        if ref not in content_ids:
            raise bad_request(f"Content-ID Reference: '{ref}' does not exist in the batch context.")
        ref = content_ids[ref]
    if "/api/data/" in ref:
        ref = ref.split("/api/data/", 1)[1].split("/", 1)[1]
    ref = ref.lstrip("/")
    name, keytext = parse_segment(ref)
    target = store.entity_by_set(name)
    if target is None or keytext is None:
        raise bad_request(f"Resource not found for the segment '{name}'.", errors.UNKNOWN_PROPERTY)
    row_id = find_row(store, target, keytext)
    if row_id is None:
        raise not_found(target["LogicalName"], keytext)
    return target, row_id


def alternate_key_for(store: Store, e: dict[str, Any], key: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
    """The Active alternate key matching these key names, and the values in key-attribute order."""
    names = {}
    for k, v in key.items():
        col = k[1:-6] if k.startswith("_") and k.endswith("_value") else k
        names[col] = v
    for k in e["Keys"].values():
        if set(k["KeyAttributes"]) == set(names) and k["EntityKeyIndexStatus"] == "Active":
            return k, tuple(names[c] for c in k["KeyAttributes"])
    raise errors.invalid_key(e["LogicalName"])


def find_row(store: Store, e: dict[str, Any], keytext: str) -> str | None:
    key = parse_key(keytext)
    if "id" in key and len(key) == 1:
        return key["id"] if key["id"] in store.rows(e["LogicalName"]) else None
    k, values = alternate_key_for(store, e, key)
    return store.find_by_key(e["LogicalName"], k["LogicalName"], values)


# ---------------- value validation ----------------
def _check_value(store: Store, e: dict[str, Any], a: dict[str, Any], value: Any) -> Any:
    table, name, t = e["LogicalName"], a["LogicalName"], a["AttributeType"]
    if value is None:
        return None
    if t in ("String", "Memo"):
        if not isinstance(value, str):
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.String' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        if a.get("MaxLength") is not None and len(value) > a["MaxLength"]:
            raise ApiError(400, errors.MAX_LENGTH,
                           f"The length of the '{name}' attribute of the '{table}' entity exceeded the maximum "
                           f"allowed length of '{a['MaxLength']}'.")
        return value
    if t in ("Integer", "BigInt"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.Int32' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        _range(a, table, value)
        return value
    if t in ("Decimal", "Money", "Double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.Decimal' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        _range(a, table, value)
        return value
    if t == "Boolean":
        if not isinstance(value, bool):
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.Boolean' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        return value
    if t == "DateTime":
        return _datetime(a, value)
    if t in ("Picklist", "State", "Status"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.Int32' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        if value not in option_values(store, a):
            raise ApiError(400, errors.PICKLIST_RANGE,
                           f"A validation error occurred. The value {value} of '{name}' on record of type "
                           f"'{table}' is outside the valid range.")
        return value
    if t == "Uniqueidentifier":
        if not isinstance(value, str) or len(value) != 36:
            raise bad_request(f"Cannot convert the literal to the expected type 'Edm.Guid' for '{name}'.",
                              errors.INVALID_PAYLOAD_PROPERTY)
        return value.lower()
    raise unknown_property(name, table)


def option_values(store: Store, a: dict[str, Any]) -> list[int]:
    if a.get("OptionSetName"):
        os_ = store.state["optionsets"].get(a["OptionSetName"])
        return [o["Value"] for o in (os_ or {}).get("Options", [])]
    return [o["Value"] for o in a.get("Options") or []]


def _range(a: dict[str, Any], table: str, value: float) -> None:
    lo, hi = a.get("MinValue"), a.get("MaxValue")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ApiError(400, errors.PICKLIST_RANGE,
                       f"A validation error occurred. The value of '{a['LogicalName']}' on record of type "
                       f"'{table}' is outside the valid range.")


def _datetime(a: dict[str, Any], value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"Cannot convert the literal to the expected type 'Edm.DateTimeOffset' for "
                          f"'{a['LogicalName']}'.", errors.INVALID_PAYLOAD_PROPERTY)
    text = value.strip()
    try:
        if len(text) == 10:
            d = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            d = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if d.tzinfo is None:
                d = d.replace(tzinfo=UTC)
    except ValueError as exc:
        raise bad_request(f"Cannot convert the literal to the expected type 'Edm.DateTimeOffset' for "
                          f"'{a['LogicalName']}'.", errors.INVALID_PAYLOAD_PROPERTY) from exc
    if a.get("Format") == "DateOnly" or a.get("DateTimeBehavior") == "DateOnly":
        return d.strftime("%Y-%m-%d")
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------- body application ----------------
class _Pending:
    """Child rows (activity parties) to write after the parent row."""

    def __init__(self) -> None:
        self.parties: list[dict[str, Any]] | None = None


def apply_body(store: Store, e: dict[str, Any], body: dict[str, Any], row: dict[str, Any], creating: bool,
               req: ApiRequest) -> _Pending:
    """Validate `body` and write its values into `row` (a copy the caller owns)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", errors.INVALID_PAYLOAD_PROPERTY)
    table = e["LogicalName"]
    pending = _Pending()
    for prop, value in body.items():
        if prop in _IGNORED_ANNOTATIONS or (prop.startswith("@") and "@odata.bind" not in prop):
            continue
        if prop.endswith("@odata.bind"):
            nav_name = prop[: -len("@odata.bind")]
            nav = e["Nav"].get(nav_name)
            lookup = e["Attributes"].get(nav["attribute"]) if nav else None
            if nav is None or lookup is None or lookup.get("VisibleAt", 0) > store.clock.now():
                raise ApiError(400, errors.UNKNOWN_PROPERTY,
                               f"An undeclared property '{nav_name}' which only has property annotations in the "
                               "payload but no property value was found in the payload. In OData, only declared "
                               "navigation properties and declared named streams can be represented as properties "
                               "without values.")
            if value is None:
                row[nav["attribute"]] = None
                continue
            target, target_id = resolve_reference(store, value, req.content_ids)
            if target["LogicalName"] not in nav["targets"]:
                raise bad_request(f"The navigation property '{nav_name}' does not accept a reference to "
                                  f"'{target['EntitySetName']}'.", errors.UNKNOWN_PROPERTY)
            if nav["attribute"] == "ownerid" and target["LogicalName"] == "systemuser":
                user = store.rows("systemuser")[target_id]
                if user.get("isdisabled"):
                    raise bad_request(f"The specified user(Id = {target_id}, type = 8) is disabled. "
                                      "Consider enabling this user.", errors.USER_DISABLED)
            row[nav["attribute"]] = {"id": target_id, "table": target["LogicalName"]}
            continue
        if prop in e["Collections"]:
            if prop != "appointment_activity_parties":
                raise bad_request(f"Deep insert of '{prop}' is not supported by the emulator.")
            if not isinstance(value, list):
                raise bad_request(f"'{prop}' must be a JSON array.")
            pending.parties = value
            continue
        a = visible_attr(store, e, prop)
        if a is None or a["AttributeType"] in schema.LOOKUP_TYPES + ("PartyList", "Virtual", "EntityName"):
            raise unknown_property(prop, table)
        if a["IsPrimaryId"]:
            if creating:
                row[prop] = _check_value(store, e, a, value)
            continue
        if (creating and not a["IsValidForCreate"]) or (not creating and not a["IsValidForUpdate"]):
            # Dataverse ignores columns that are not valid for this operation (e.g. overriddencreatedon on update).
            continue
        row[prop] = _check_value(store, e, a, value)
    return pending


def _finish_row(store: Store, e: dict[str, Any], row: dict[str, Any], old: dict[str, Any] | None,
                req: ApiRequest, body: dict[str, Any]) -> None:
    """System columns and table-specific rules after the body was applied."""
    table = e["LogicalName"]
    now = now_iso()
    if old is None:
        override = row.pop("overriddencreatedon", None)
        if override is not None:
            if override > now:
                raise bad_request("The value of overriddencreatedon must be in the past.")
            row["createdon"] = override
            row["overriddencreatedon"] = now
        else:
            row["createdon"] = now
        if "ownerid" in e["Attributes"] and row.get("ownerid") is None:
            row["ownerid"] = {"id": req.caller, "table": "systemuser"}
        if "statecode" in e["Attributes"] and row.get("statecode") is None:
            row["statecode"] = 0
    row["modifiedon"] = now
    if table == "contact":
        full = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p)
        row["fullname"] = full or None
    if "statecode" in e["Attributes"]:
        _check_state(e, row, old, body)
    if table == "annotation":
        _check_annotation(store, row)
    for name, a in e["Attributes"].items():
        if a["RequiredLevel"] == "SystemRequired" and row.get(name) is None:
            raise bad_request(f"Attribute '{name}' cannot be NULL: it is required on '{table}'.", errors.REQUIRED)
    row["versionnumber"] = store.next_version()


def _check_state(e: dict[str, Any], row: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
    """statecode/statuscode must form a valid pair; a state change without a status takes the default status."""
    state = row.get("statecode", 0)
    if e["LogicalName"] == "appointment":
        allowed, default = schema.APPOINTMENT_STATES, schema.APPOINTMENT_DEFAULT_STATUS
    else:
        allowed, default = {0: [1], 1: [2]}, {0: 1, 1: 2}
    status = row.get("statuscode")
    if body.get("statuscode") is not None:
        if status not in allowed.get(state, []):
            raise bad_request(f"{status} is not a valid status code for state code "
                              f"{e['SchemaName'].capitalize()}State.{state}.", errors.INVALID_ARGUMENT)
    elif old is None or old.get("statecode") != state or status is None:
        row["statuscode"] = default.get(state, 1)


def _check_annotation(store: Store, row: dict[str, Any]) -> None:
    body = row.get("documentbody")
    if body is None:
        return
    org = next(iter(store.rows("organization").values()))
    if len(body) > org.get("maxuploadfilesize", 5_242_880):
        raise ApiError(400, errors.ATTACHMENT_TOO_BIG, "Attachment file size is too big.")
    try:
        row["filesize"] = len(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise bad_request("documentbody is not valid Base64.", errors.INVALID_PAYLOAD_PROPERTY) from exc
    row["isdocument"] = True
    if row.get("objectid"):
        row["objecttypecode"] = row["objectid"]["table"]


def _write_parties(store: Store, activity_id: str, parties: list[Any], req: ApiRequest, replace: bool) -> None:
    """Deep-inserted parties; on update they replace the activity's existing parties."""
    party_e = store.entities["activityparty"]
    if replace:
        for old_id in store.parties_of(activity_id):
            store.delete_row("activityparty", old_id)
    for p in parties:
        prow: dict[str, Any] = {}
        apply_body(store, party_e, p, prow, True, req)
        pid = prow.get("activitypartyid") or store.new_id()
        prow["activitypartyid"] = pid
        prow["activityid"] = {"id": activity_id, "table": "appointment"}
        if prow.get("participationtypemask") is None:
            raise bad_request("Attribute 'participationtypemask' cannot be NULL.", errors.REQUIRED)
        prow["versionnumber"] = store.next_version()
        store.put_row("activityparty", pid, prow)


def create_row(store: Store, e: dict[str, Any], body: dict[str, Any], req: ApiRequest,
               row_id: str | None = None, key_values: dict[str, Any] | None = None) -> str:
    """Create one row; returns its id. Raises ApiError on any validation failure (nothing written)."""
    table, pk = e["LogicalName"], e["PrimaryIdAttribute"]
    row: dict[str, Any] = {}
    pending = apply_body(store, e, body, row, True, req)
    for col, v in (key_values or {}).items():
        a = e["Attributes"][col]
        row[col] = {"id": v, "table": a["Targets"][0]} if a["AttributeType"] in schema.LOOKUP_TYPES else v
    rid = (row_id or row.get(pk) or store.new_id()).lower()
    if rid in store.rows(table):
        raise errors.duplicate_key()
    row[pk] = rid
    _finish_row(store, e, row, None, req, body)
    if store.key_conflict(table, rid, row) is not None:
        raise _key_violation(store.key_conflict(table, rid, row))
    store.put_row(table, rid, row)
    if pending.parties is not None:
        _write_parties(store, rid, pending.parties, req, replace=False)
    return rid


def update_row(store: Store, e: dict[str, Any], row_id: str, body: dict[str, Any], req: ApiRequest) -> None:
    table = e["LogicalName"]
    old = store.rows(table)[row_id]
    if table == "appointment" and old.get("statecode") in (1, 2):
        raise bad_request("This appointment is completed or canceled and cannot be edited.", errors.INVALID_ARGUMENT)
    row = dict(old)
    pending = apply_body(store, e, body, row, False, req)
    _finish_row(store, e, row, old, req, body)
    if store.key_conflict(table, row_id, row) is not None:
        raise _key_violation(store.key_conflict(table, row_id, row))
    store.put_row(table, row_id, row)
    if pending.parties is not None:
        _write_parties(store, row_id, pending.parties, req, replace=True)


def _key_violation(key: dict[str, Any]) -> ApiError:
    cols = ", ".join(key["KeyAttributes"])
    return ApiError(412, errors.DUPLICATE_RECORD,
                    f"A record that has the attribute values {cols} already exists. The entity key "
                    f"{key['SchemaName']} requires that this set of attributes contains unique values. "
                    "Select unique values and try again.")


# ---------------- output ----------------
def serialize(store: Store, e: dict[str, Any], row: dict[str, Any], select: list[str] | None,
              annotations: bool, expand: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.etag": etag(row)}
    wanted = None
    if select is not None:
        wanted = set()
        for s in select:
            wanted.add(s[1:-6] if s.startswith("_") and s.endswith("_value") else s)
        wanted.add(e["PrimaryIdAttribute"])
    for name, a in e["Attributes"].items():
        if a["AttributeType"] in ("PartyList", "Virtual") or (wanted is not None and name not in wanted):
            continue
        if a.get("VisibleAt", 0) > store.clock.now():
            continue
        v = row.get(name)
        if a["AttributeType"] in schema.LOOKUP_TYPES:
            key = f"_{name}_value"
            out[key] = v["id"] if v else None
            if annotations and v:
                out[f"{key}@Microsoft.Dynamics.CRM.lookuplogicalname"] = v["table"]
        else:
            out[name] = v
            if annotations and v is not None and a["AttributeType"] in ("Picklist", "State", "Status"):
                out[f"{name}@OData.Community.Display.V1.FormattedValue"] = str(v)
    for nav in expand or []:
        coll = e["Collections"].get(nav)
        if coll is None:
            raise unknown_property(nav, e["LogicalName"])
        child_e = store.entities[coll["entity"]]
        out[nav] = [serialize(store, child_e, r, None, annotations)
                    for r in store.rows(coll["entity"]).values()
                    if (r.get(coll["attribute"]) or {}).get("id") == row[e["PrimaryIdAttribute"]]]
    return out


def check_select(store: Store, e: dict[str, Any], select: list[str] | None) -> None:
    for s in select or []:
        col = s[1:-6] if s.startswith("_") and s.endswith("_value") else s
        a = visible_attr(store, e, col)
        if a is None or (col != s and a["AttributeType"] not in schema.LOOKUP_TYPES):
            raise unknown_property(s, e["LogicalName"])


def output_view(store: Store, e: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The row as the filter sees it: plain columns plus `_x_value` for lookups."""
    view = {}
    for name, v in row.items():
        a = e["Attributes"].get(name)
        if a is not None and a["AttributeType"] in schema.LOOKUP_TYPES:
            view[f"_{name}_value"] = v["id"] if v else None
        else:
            view[name] = v
    return view


def column_of(name: str) -> str:
    """The column a filter property names: `_x_value` (a lookup's id, as the filter sees it) is column `x`."""
    return name[1:-6] if name.startswith("_") and name.endswith("_value") else name


def filter_checker(store: Store, e: dict[str, Any]):
    def check(name: str) -> None:
        col = column_of(name)
        if visible_attr(store, e, col.split("/")[0]) is None:
            raise unknown_property(name, e["LogicalName"])
    return check


def entity_id_url(req: ApiRequest, e: dict[str, Any], row_id: str, keytext: str | None = None) -> str:
    key = keytext if keytext is not None else row_id
    return f"{req.base_url}{e['EntitySetName']}({quote(key, safe=chr(39) + '=,_-.')})"
