"""The metadata API: EntityDefinitions (+ Attributes, Keys, relationship lists), RelationshipDefinitions,
GlobalOptionSetDefinitions, CreateEntities, PublishXml/PublishAllXml, InsertOptionValue.

Enforced (../shared/reference/dataverse.md §3, §11): required table properties and exactly one primary-name
string column, publisher prefix (0x8004431a), duplicate schema names (0x80040237), key limits and types,
key index Pending -> InProgress -> Active/Failed, the custom-table licence limit, propagation delay.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from emulator import errors, schema
from emulator.errors import ApiError, bad_request
from emulator.messages import ApiRequest, ApiResponse
from emulator.odata import parse_filter, parse_key, parse_segment, parse_select
from emulator.store import Store

ROOTS = ("EntityDefinitions", "RelationshipDefinitions", "GlobalOptionSetDefinitions")
ACTIONS = ("PublishXml", "PublishAllXml", "CreateEntities", "InsertOptionValue")
WRITE_ACTIONS = ("CreateEntities", "InsertOptionValue")
CAST = "Microsoft.Dynamics.CRM."
_TYPE_NAME_VALUE = {"String": "StringType", "Memo": "MemoType", "Integer": "IntegerType", "BigInt": "BigIntType",
                    "Decimal": "DecimalType", "Double": "DoubleType", "Money": "MoneyType",
                    "DateTime": "DateTimeType", "Boolean": "BooleanType", "Picklist": "PicklistType",
                    "State": "StateType", "Status": "StatusType", "Lookup": "LookupType", "Owner": "OwnerType",
                    "Customer": "CustomerType", "Uniqueidentifier": "UniqueidentifierType",
                    "EntityName": "EntityNameType", "Virtual": "VirtualType", "PartyList": "PartyListType"}


def handle(store: Store, req: ApiRequest, segments: list[str]) -> ApiResponse:
    head, keytext = parse_segment(segments[0])
    rest = segments[1:]
    if head == "PublishXml" or head == "PublishAllXml":
        return _publish(store, req, head)
    if head == "CreateEntities":
        return _create_entities(store, req)
    if head == "InsertOptionValue":
        return _insert_option(store, req)
    if head == "EntityDefinitions":
        return _entities(store, req, keytext, rest)
    if head == "RelationshipDefinitions":
        return _relationships(store, req, keytext, rest)
    return _optionsets(store, req, keytext)


# ---------------- helpers ----------------
def _label_text(label: Any) -> str | None:
    if isinstance(label, dict):
        for loc in label.get("LocalizedLabels") or []:
            if isinstance(loc, dict) and loc.get("Label"):
                return str(loc["Label"])
    return None


def _label(text: str | None) -> dict[str, Any]:
    if text is None:
        return {"LocalizedLabels": [], "UserLocalizedLabel": None}
    loc = {"Label": text, "LanguageCode": 1033, "IsManaged": False}
    return {"LocalizedLabels": [loc], "UserLocalizedLabel": loc}


def _solution(store: Store, req: ApiRequest) -> tuple[str | None, str]:
    """(solution unique name or None, the customization prefix that applies)."""
    name = req.headers.get("mscrm.solutionuniquename") or req.query.get("SolutionUniqueName")
    if not name:
        return None, store.config.publisher_prefix
    sol = next((s for s in store.rows("solution").values() if s.get("uniquename", "").lower() == name.lower()), None)
    if sol is None:
        raise bad_request(f"The solution with unique name '{name}' was not found.")
    pub = store.rows("publisher").get((sol.get("publisherid") or {}).get("id", ""), {})
    return sol["uniquename"], pub.get("customizationprefix") or store.config.publisher_prefix


def _check_prefix(schema_name: str, prefix: str) -> None:
    if not schema_name.lower().startswith(prefix.lower() + "_"):
        raise ApiError(400, errors.PREFIX_MISMATCH,
                       f"The schema name {schema_name} for this item is not valid. The schema name must start with "
                       f"the customization prefix '{prefix}_' of the solution's publisher.")


def _component(store: Store, solution: str | None, kind: str, metadata_id: str) -> None:
    store.state["solution_components"].append({"solution": solution or "Default", "type": kind,
                                               "id": metadata_id})


def _entity_or_404(store: Store, keytext: str) -> dict[str, Any]:
    key = parse_key(keytext)
    e = None
    if "id" in key:
        e = next((x for x in store.entities.values() if x["MetadataId"] == key["id"]), None)
    elif "LogicalName" in key:
        e = store.entity(str(key["LogicalName"]).lower())
    if e is None:
        what = key.get("LogicalName", key.get("id"))
        raise ApiError(404, "0x80060888", f"Could not find entity with name or id '{what}'.")
    return e


def _shape(items: list[dict[str, Any]], req: ApiRequest, context: str) -> ApiResponse:
    if "$filter" in req.query:
        pred = parse_filter(req.query["$filter"], lambda name: None)
        items = [i for i in items if pred(i)]
    select = parse_select(req.query.get("$select"))
    if select is not None:
        keep = set(select) | {"MetadataId", "@odata.type"}
        items = [{k: v for k, v in i.items() if k in keep or k in _expanded(req)} for i in items]
    return ApiResponse.of_json(200, {"@odata.context": f"{req.base_url}$metadata#{context}", "value": items})


def _expanded(req: ApiRequest) -> set[str]:
    text = req.query.get("$expand") or ""
    return {parse_segment(p.strip())[0] for p in text.split(",") if p.strip()}


def _one(item: dict[str, Any], req: ApiRequest, context: str) -> ApiResponse:
    select = parse_select(req.query.get("$select"))
    if select is not None:
        keep = set(select) | {"MetadataId", "@odata.type"} | _expanded(req)
        item = {k: v for k, v in item.items() if k in keep}
    body = {"@odata.context": f"{req.base_url}$metadata#{context}/$entity"}
    body.update(item)
    return ApiResponse.of_json(200, body)


# ---------------- serialization ----------------
def entity_out(store: Store, e: dict[str, Any], req: ApiRequest) -> dict[str, Any]:
    d = e["Definition"]
    out = {
        "@odata.type": "#Microsoft.Dynamics.CRM.EntityMetadata",
        "MetadataId": e["MetadataId"], "LogicalName": e["LogicalName"], "SchemaName": e["SchemaName"],
        "EntitySetName": e["EntitySetName"], "LogicalCollectionName": e["EntitySetName"],
        "PrimaryIdAttribute": e["PrimaryIdAttribute"], "PrimaryNameAttribute": e["PrimaryNameAttribute"],
        "ObjectTypeCode": e["ObjectTypeCode"], "IsCustomEntity": e["IsCustomEntity"], "IsActivity": e["IsActivity"],
        "OwnershipType": e["OwnershipType"], "HasNotes": e["HasNotes"], "HasActivities": e["HasActivities"],
        "IsManaged": False, "IsValidForAdvancedFind": True, "IsCustomizable": {"Value": True},
        "IsDocumentManagementEnabled": e.get("IsDocumentManagementEnabled", e["LogicalName"] == "contact"),
        "DisplayName": _label(_label_text(d.get("DisplayName")) or e["SchemaName"]),
        "DisplayCollectionName": _label(_label_text(d.get("DisplayCollectionName")) or e["EntitySetName"]),
        "Description": _label(_label_text(d.get("Description"))),
    }
    expanded = _expanded(req)
    if "Keys" in expanded:
        out["Keys"] = [key_out(e, k) for k in e["Keys"].values()]
    if "Attributes" in expanded:
        out["Attributes"] = [attr_out(store, e, a, False) for a in e["Attributes"].values()
                             if a.get("VisibleAt", 0) <= store.clock.now()]
    return out


def attr_out(store: Store, e: dict[str, Any], a: dict[str, Any], with_options: bool) -> dict[str, Any]:
    t = a["AttributeType"]
    d = a.get("Definition") or {}
    out: dict[str, Any] = {
        "@odata.type": "#" + schema.odata_type(t), "MetadataId": a["MetadataId"], "LogicalName": a["LogicalName"],
        "SchemaName": a["SchemaName"], "EntityLogicalName": e["LogicalName"], "AttributeType": t,
        "AttributeTypeName": {"Value": _TYPE_NAME_VALUE.get(t, "VirtualType")},
        "IsCustomAttribute": a["IsCustomAttribute"], "IsPrimaryId": a["IsPrimaryId"],
        "IsPrimaryName": a["IsPrimaryName"], "IsValidForCreate": a["IsValidForCreate"],
        "IsValidForUpdate": a["IsValidForUpdate"], "IsValidForRead": True,
        "RequiredLevel": {"Value": a["RequiredLevel"], "CanBeChanged": True,
                          "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"},
        "DisplayName": _label(_label_text(d.get("DisplayName")) or a["SchemaName"]),
        "Description": _label(_label_text(d.get("Description"))),
    }
    if t in ("String", "Memo"):
        out["MaxLength"] = a["MaxLength"]
        out["FormatName"] = {"Value": a.get("Format") or "Text"}
    if t in ("Integer", "BigInt", "Decimal", "Money", "Double"):
        out.update({"MinValue": a["MinValue"], "MaxValue": a["MaxValue"], "Precision": a["Precision"]})
    if t == "DateTime":
        out["Format"] = a.get("Format") or "DateAndTime"
        out["DateTimeBehavior"] = {"Value": a.get("DateTimeBehavior") or "UserLocal"}
    if t in schema.LOOKUP_TYPES:
        out["Targets"] = a["Targets"]
    if t in ("Picklist", "State", "Status") and with_options:
        from emulator.records import option_values  # noqa: PLC0415
        labels = {o["Value"]: o.get("Label") for o in (a.get("Options") or [])}
        if a.get("OptionSetName"):
            gos = store.state["optionsets"].get(a["OptionSetName"], {})
            labels = {o["Value"]: o.get("Label") for o in gos.get("Options", [])}
        out["OptionSet"] = {"Name": a.get("OptionSetName") or f"{e['LogicalName']}_{a['LogicalName']}",
                            "IsGlobal": bool(a.get("OptionSetName")), "OptionSetType": "Picklist",
                            "Options": [{"Value": v, "Label": _label(str(labels.get(v, v)))}
                                        for v in option_values(store, a)]}
    return out


def key_out(e: dict[str, Any], k: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#Microsoft.Dynamics.CRM.EntityKeyMetadata", "MetadataId": k["MetadataId"],
            "SchemaName": k["SchemaName"], "LogicalName": k["LogicalName"], "KeyAttributes": k["KeyAttributes"],
            "EntityLogicalName": e["LogicalName"], "EntityKeyIndexStatus": k["EntityKeyIndexStatus"],
            "DisplayName": _label(k.get("DisplayName")), "IsManaged": False,
            "AsyncJob": None}


def rel_out(r: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata", **{
        k: v for k, v in r.items() if not k.startswith("_")}}


# ---------------- EntityDefinitions ----------------
def _entities(store: Store, req: ApiRequest, keytext: str | None, rest: list[str]) -> ApiResponse:
    if keytext is None:
        if rest:
            raise ApiError(404, "0x80060888", "Resource not found for the segment.")
        if req.method == "GET":
            return _shape([entity_out(store, e, req) for e in store.entities.values()], req, "EntityDefinitions")
        if req.method == "POST":
            mid = create_table(store, req, req.json())
            return ApiResponse(204, {"OData-EntityId": f"{req.base_url}EntityDefinitions({mid})"})
        raise ApiError(405, "0x80060888", "Method not allowed on EntityDefinitions.")
    e = _entity_or_404(store, keytext)
    if not rest:
        if req.method == "GET":
            return _one(entity_out(store, e, req), req, "EntityDefinitions")
        if req.method == "PUT":
            return _update_table(store, req, e)
        if req.method == "DELETE":
            return _delete_table(store, e)
        raise ApiError(405, "0x80060888", "Metadata can't be PATCHed: use PUT with the whole definition.")
    sub, subkey = parse_segment(rest[0])
    if sub == "Attributes":
        return _attributes(store, req, e, subkey, rest[1:])
    if sub == "Keys":
        return _keys(store, req, e, subkey)
    if sub in ("ManyToOneRelationships", "OneToManyRelationships"):
        rels = [rel_out(r) for r in store.state["relationships"].values()
                if r[("ReferencingEntity" if sub == "ManyToOneRelationships" else "ReferencedEntity")]
                == e["LogicalName"]]
        return _shape(rels, req, f"EntityDefinitions({e['MetadataId']})/{sub}")
    raise ApiError(404, "0x80060888", f"Resource not found for the segment '{sub}'.")


def create_table(store: Store, req: ApiRequest, body: dict[str, Any]) -> str:
    """Create a custom table from an EntityMetadata (or ComplexEntityMetadata) body; returns its MetadataId."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be an EntityMetadata object.")
    missing = [p for p in ("SchemaName", "DisplayName", "DisplayCollectionName", "OwnershipType", "HasNotes",
                           "HasActivities") if body.get(p) is None]
    if missing:
        raise bad_request(f"Required entity properties are missing: {', '.join(missing)}.")
    schema_name = str(body["SchemaName"])
    solution, prefix = _solution(store, req)
    _check_prefix(schema_name, prefix)
    logical = schema_name.lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,49}", logical):
        raise bad_request(f"The schema name {schema_name} contains characters that are not allowed.")
    if logical in store.entities:
        raise ApiError(400, errors.DUPLICATE_RECORD,
                       f"An entity with the specified name {schema_name} already exists. Specify a unique name.")
    attrs = body.get("Attributes") or []
    primaries = [a for a in attrs if isinstance(a, dict) and a.get("IsPrimaryName")]
    if len(primaries) != 1 or "StringAttributeMetadata" not in str(primaries[0].get("@odata.type", "")):
        raise bad_request("A custom entity must have exactly one primary name attribute of type "
                          "StringAttributeMetadata (IsPrimaryName: true).")
    limit = store.config.custom_table_limit
    custom_count = sum(1 for x in store.entities.values() if x["IsCustomEntity"])
    if limit is not None and custom_count >= limit:
        raise ApiError(403, errors.LICENSE_LIMIT,
                       f"Custom table limit reached: this environment's licence (Dynamics 365 Sales Professional) "
                       f"allows {limit} custom tables and {custom_count} exist, so '{schema_name}' cannot be "
                       "created. Use an Enterprise licence or fewer custom tables.")
    otc = 10000 + custom_count
    ownership = str(body.get("OwnershipType"))
    mid = store.new_id()
    e = schema.entity(logical, schema.entity_set_name(logical), logical + "id", None, otc, custom=True,
                      has_notes=bool(body.get("HasNotes")), has_activities=bool(body.get("HasActivities")),
                      is_activity=bool(body.get("IsActivity")), ownership=ownership, schema_name=schema_name,
                      metadata_id=mid,
                      definition={k: body.get(k) for k in ("DisplayName", "DisplayCollectionName", "Description")})
    e["Published"] = False
    e["VisibleAt"] = store.clock.now() + store.config.metadata_propagation_seconds
    e["IsDocumentManagementEnabled"] = bool(body.get("IsDocumentManagementEnabled", True))
    e["Solution"] = solution or "Default"
    schema.add_attr(e, schema.attr(logical, "statecode", "State", options=[0, 1]))
    schema.add_attr(e, schema.attr(logical, "statuscode", "Status", options=[1, 2]))
    schema.add_attr(e, schema.attr(logical, "importsequencenumber", "Integer", update=False))
    for a_body in attrs:
        a = build_attribute(store, e, a_body, prefix)
        schema.add_attr(e, a)
        if a["IsPrimaryName"]:
            e["PrimaryNameAttribute"] = a["LogicalName"]
    store.entities[logical] = e
    store.rows(logical)
    _wire_polymorphic(store, e)
    _component(store, solution, "Entity", mid)
    store.dirty = True
    return mid


def _wire_polymorphic(store: Store, e: dict[str, Any]) -> None:
    """Notes, activities and document locations can point at the new table through per-target nav names."""
    logical = e["LogicalName"]
    if e["HasNotes"]:
        note = store.entities["annotation"]
        note["Nav"][f"objectid_{logical}"] = {"attribute": "objectid", "targets": [logical]}
        note["Attributes"]["objectid"]["Targets"].append(logical)
    if e["HasActivities"]:
        ap = store.entities["appointment"]
        ap["Nav"][f"regardingobjectid_{logical}_appointment"] = {"attribute": "regardingobjectid",
                                                                 "targets": [logical]}
        ap["Attributes"]["regardingobjectid"]["Targets"].append(logical)
    if e.get("IsDocumentManagementEnabled"):
        loc = store.entities["sharepointdocumentlocation"]
        loc["Nav"][f"regardingobjectid_{logical}"] = {"attribute": "regardingobjectid", "targets": [logical]}
        loc["Attributes"]["regardingobjectid"]["Targets"].append(logical)


def _create_entities(store: Store, req: ApiRequest) -> ApiResponse:
    """SDK 1.1.0's unbound action: {"Entities": [ComplexEntityMetadata, …]}."""
    body = req.json()
    entities = body.get("Entities") if isinstance(body, dict) else None
    if not isinstance(entities, list) or not entities:
        raise bad_request("CreateEntities needs a non-empty 'Entities' array.")
    ids = [create_table(store, req, e) for e in entities]
    return ApiResponse.of_json(200, {"@odata.context": f"{req.base_url}$metadata#Microsoft.Dynamics.CRM."
                                                       "CreateEntitiesResponse", "EntityIds": ids})


def _update_table(store: Store, req: ApiRequest, e: dict[str, Any]) -> ApiResponse:
    body = req.json()
    for flag in ("HasNotes", "HasActivities", "IsDocumentManagementEnabled"):
        if body.get(flag) is True and not e.get(flag):
            e[flag] = True
    if e["IsCustomEntity"]:
        _wire_polymorphic_update(store, e)
    for k in ("DisplayName", "DisplayCollectionName", "Description"):
        if k in body:
            e["Definition"][k] = body[k]
    e["Published"] = False
    store.dirty = True
    return ApiResponse(204)


def _wire_polymorphic_update(store: Store, e: dict[str, Any]) -> None:
    logical = e["LogicalName"]
    note_nav = f"objectid_{logical}"
    if e["HasNotes"] and note_nav not in store.entities["annotation"]["Nav"]:
        store.entities["annotation"]["Nav"][note_nav] = {"attribute": "objectid", "targets": [logical]}
        store.entities["annotation"]["Attributes"]["objectid"]["Targets"].append(logical)
    ap_nav = f"regardingobjectid_{logical}_appointment"
    if e["HasActivities"] and ap_nav not in store.entities["appointment"]["Nav"]:
        store.entities["appointment"]["Nav"][ap_nav] = {"attribute": "regardingobjectid", "targets": [logical]}
        store.entities["appointment"]["Attributes"]["regardingobjectid"]["Targets"].append(logical)


def _delete_table(store: Store, e: dict[str, Any]) -> ApiResponse:
    if not e["IsCustomEntity"]:
        raise ApiError(403, errors.PRIVILEGE, f"The entity {e['LogicalName']} is not a custom entity and cannot "
                                              "be deleted.")
    logical = e["LogicalName"]
    del store.entities[logical]
    store.state["rows"].pop(logical, None)
    for other in store.entities.values():
        for nav in [n for n, v in other["Nav"].items() if logical in v["targets"]]:
            del other["Nav"][nav]
        for a in other["Attributes"].values():
            if a.get("Targets") and logical in a["Targets"]:
                a["Targets"].remove(logical)
    for name in [n for n, r in store.state["relationships"].items()
                 if logical in (r["ReferencedEntity"], r["ReferencingEntity"])]:
        del store.state["relationships"][name]
    store.rebuild_indexes()
    store.dirty = True
    return ApiResponse(204)


# ---------------- Attributes ----------------
def build_attribute(store: Store, e: dict[str, Any], body: Any, prefix: str) -> dict[str, Any]:
    """Validate one attribute definition body and return the stored column dict."""
    if not isinstance(body, dict):
        raise bad_request("An attribute definition must be a JSON object.")
    otype = str(body.get("@odata.type", "")).lstrip("#").replace("Microsoft.Dynamics.CRM.Complex", CAST)
    if not otype:
        raise bad_request("The attribute definition needs an @odata.type (e.g. "
                          "Microsoft.Dynamics.CRM.StringAttributeMetadata).")
    if otype in (CAST + "LookupAttributeMetadata",):
        raise bad_request("Lookup columns are created with RelationshipDefinitions, not Attributes.")
    attr_type = schema.TYPE_BY_ODATA.get(otype)
    if attr_type is None or attr_type in ("State", "Status", "EntityName", "Virtual", "Uniqueidentifier"):
        raise bad_request(f"Attribute type {otype} is not supported by the emulator.")
    schema_name = body.get("SchemaName")
    if not isinstance(schema_name, str) or not schema_name:
        raise bad_request("The attribute definition needs a SchemaName.")
    _check_prefix(schema_name, prefix)
    logical = schema_name.lower()
    if logical in e["Attributes"]:
        raise ApiError(400, errors.DUPLICATE_RECORD,
                       f"An attribute with the specified name {schema_name} already exists on entity "
                       f"{e['LogicalName']}.")
    kw: dict[str, Any] = {"schema_name": schema_name, "custom": True, "metadata_id": store.new_id(),
                          "required": (body.get("RequiredLevel") or {}).get("Value", "None"),
                          "primary_name": bool(body.get("IsPrimaryName")),
                          "visible_at": store.clock.now() + store.config.metadata_propagation_seconds,
                          "definition": {k: body.get(k) for k in ("DisplayName", "Description")}}
    if kw["required"] == "SystemRequired":
        raise bad_request("RequiredLevel SystemRequired cannot be set on a custom column.")
    if attr_type in ("String", "Memo"):
        default, ceiling = (100, 4000) if attr_type == "String" else (2000, 1_048_576)
        ml = body.get("MaxLength", default)
        if not isinstance(ml, int) or not 1 <= ml <= ceiling:
            raise bad_request(f"MaxLength of {schema_name} must be between 1 and {ceiling}.")
        kw.update(max_length=ml, fmt=(body.get("FormatName") or {}).get("Value") or "Text")
    elif attr_type in ("Integer", "BigInt"):
        kw.update(min_value=body.get("MinValue", -2_147_483_648), max_value=body.get("MaxValue", 2_147_483_647))
    elif attr_type in ("Decimal", "Money", "Double"):
        p = body.get("Precision", 2)
        if not isinstance(p, int) or not 0 <= p <= 10:
            raise bad_request(f"Precision of {schema_name} must be between 0 and 10.")
        kw.update(min_value=body.get("MinValue", -100_000_000_000), max_value=body.get("MaxValue", 100_000_000_000),
                  precision=p)
    elif attr_type == "DateTime":
        fmt = body.get("Format") or "DateAndTime"
        behavior = (body.get("DateTimeBehavior") or {}).get("Value") or ("DateOnly" if fmt == "DateOnly"
                                                                        else "UserLocal")
        if fmt not in ("DateOnly", "DateAndTime") or behavior not in ("UserLocal", "DateOnly",
                                                                      "TimeZoneIndependent"):
            raise bad_request(f"Invalid Format/DateTimeBehavior for {schema_name}.")
        kw.update(fmt=fmt, behavior=behavior)
    elif attr_type == "Picklist":
        bind = body.get("GlobalOptionSet@odata.bind")
        if bind:
            name = _optionset_from_bind(store, str(bind))
            kw["option_set_name"] = name
            kw["options"] = []
        else:
            opts = (body.get("OptionSet") or {}).get("Options")
            if not isinstance(opts, list) or not opts:
                raise bad_request(f"Picklist {schema_name} needs OptionSet.Options or GlobalOptionSet@odata.bind.")
            values = _assign_values(store, opts)
            a = schema.attr(e["LogicalName"], logical, attr_type, options=values, **kw)
            a["Options"] = [{"Value": v, "Label": _label_text(o.get("Label")) or str(v)}
                            for v, o in zip(values, opts, strict=True)]
            return a
    return schema.attr(e["LogicalName"], logical, attr_type, **kw)


def _assign_values(store: Store, options: list[Any]) -> list[int]:
    """Option values as given; null values get publisher-prefix numbers (prefix * 10,000 + n)."""
    base = store.config.publisher_option_value_prefix * 10_000
    values, used = [], {o.get("Value") for o in options if isinstance(o, dict)}
    n = 0
    for o in options:
        v = o.get("Value") if isinstance(o, dict) else None
        if v is None:
            while base + n in used:
                n += 1
            v = base + n
            used.add(v)
        if not isinstance(v, int):
            raise bad_request("Option values must be integers.")
        values.append(v)
    if len(set(values)) != len(values):
        raise bad_request("Option values must be unique within an option set.")
    return values


def _optionset_from_bind(store: Store, bind: str) -> str:
    _, keytext = parse_segment(bind.strip("/").split("/")[-1])
    key = parse_key(keytext or "")
    for name, os_ in store.state["optionsets"].items():
        if key.get("Name") == name or key.get("id") == os_["MetadataId"]:
            return name
    raise ApiError(404, "0x80060888", "The global option set referenced by GlobalOptionSet@odata.bind was not found.")


def _attributes(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str | None,
                rest: list[str]) -> ApiResponse:
    ctx = f"EntityDefinitions({e['MetadataId']})/Attributes"
    cast = None
    if keytext is None and rest and rest[0].startswith(CAST):
        cast, rest = rest[0], rest[1:]
    if keytext is None:
        if req.method == "GET":
            # Metadata shows a new column at once; only the data API lags behind (propagation fault).
            items = list(e["Attributes"].values())
            if cast:
                items = [a for a in items if schema.odata_type(a["AttributeType"]) == cast]
            with_opts = "OptionSet" in _expanded(req) or "GlobalOptionSet" in _expanded(req)
            return _shape([attr_out(store, e, a, with_opts) for a in items], req, ctx)
        if req.method == "POST":
            solution, prefix = _solution(store, req)
            a = build_attribute(store, e, req.json(), prefix)
            schema.add_attr(e, a)
            _component(store, solution, "Attribute", a["MetadataId"])
            e["Published"] = False
            store.dirty = True
            return ApiResponse(204, {"OData-EntityId": f"{req.base_url}{ctx}({a['MetadataId']})"})
        raise ApiError(405, "0x80060888", "Method not allowed on Attributes.")
    key = parse_key(keytext)
    a = None
    if "LogicalName" in key:
        a = e["Attributes"].get(str(key["LogicalName"]).lower())
    elif "id" in key:
        a = next((x for x in e["Attributes"].values() if x["MetadataId"] == key["id"]), None)
    if a is None:
        raise ApiError(404, "0x80060888", f"Could not find attribute '{key.get('LogicalName', key.get('id'))}' "
                                          f"on entity {e['LogicalName']}.")
    if rest and rest[0].startswith(CAST) and rest[0] != schema.odata_type(a["AttributeType"]):
        raise bad_request(f"The attribute {a['LogicalName']} is not of type {rest[0]}.")
    if req.method == "GET":
        with_opts = bool(rest) or "OptionSet" in _expanded(req) or "GlobalOptionSet" in _expanded(req)
        return _one(attr_out(store, e, a, with_opts), req, ctx)
    if req.method == "PUT":
        body = req.json()
        if "MaxLength" in body and a["AttributeType"] in ("String", "Memo"):
            a["MaxLength"] = int(body["MaxLength"])
        if "RequiredLevel" in body:
            a["RequiredLevel"] = (body["RequiredLevel"] or {}).get("Value", a["RequiredLevel"])
        for k in ("DisplayName", "Description"):
            if k in body:
                a["Definition"][k] = body[k]
        e["Published"] = False
        store.dirty = True
        return ApiResponse(204)
    if req.method == "DELETE":
        if not a["IsCustomAttribute"]:
            raise ApiError(403, errors.PRIVILEGE, "System attributes cannot be deleted.")
        keys = [k["SchemaName"] for k in e["Keys"].values() if a["LogicalName"] in k["KeyAttributes"]]
        if keys:  # a column an alternate key depends on goes only after the key (a dependent component)
            raise bad_request(f"The attribute {a['LogicalName']} cannot be deleted because it is used by the "
                              f"entity key {keys[0]}. Delete the key first.")
        del e["Attributes"][a["LogicalName"]]
        # Deleting a column deletes its data too: no row keeps a value for it.
        for row in store.rows(e["LogicalName"]).values():
            row.pop(a["LogicalName"], None)
        store.rebuild_indexes()
        store.dirty = True
        return ApiResponse(204)
    raise ApiError(405, "0x80060888", "Metadata can't be PATCHed: use PUT with the whole definition.")


# ---------------- Keys ----------------
def _keys(store: Store, req: ApiRequest, e: dict[str, Any], keytext: str | None) -> ApiResponse:
    ctx = f"EntityDefinitions({e['MetadataId']})/Keys"
    if keytext is None:
        if req.method == "GET":
            return _shape([key_out(e, k) for k in e["Keys"].values()], req, ctx)
        if req.method == "POST":
            k = create_key(store, req, e, req.json())
            return ApiResponse(204, {"OData-EntityId": f"{req.base_url}EntityDefinitions(LogicalName='"
                                                       f"{e['LogicalName']}')/Keys({k['MetadataId']})"})
        raise ApiError(405, "0x80060888", "Method not allowed on Keys.")
    key = parse_key(keytext)
    k = next((x for x in e["Keys"].values() if x["MetadataId"] == key.get("id")
              or x["LogicalName"] == str(key.get("LogicalName", "")).lower()), None)
    if k is None:
        raise ApiError(404, "0x80060888", "Could not find the entity key.")
    if req.method == "GET":
        return _one(key_out(e, k), req, ctx)
    if req.method == "DELETE":
        del e["Keys"][k["LogicalName"]]
        store.rebuild_indexes()
        store.dirty = True
        return ApiResponse(204)
    raise ApiError(405, "0x80060888", "Method not allowed on a key.")


def create_key(store: Store, req: ApiRequest, e: dict[str, Any], body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("SchemaName") or not body.get("KeyAttributes"):
        raise bad_request("An alternate key needs SchemaName and KeyAttributes.")
    solution, prefix = _solution(store, req)
    schema_name = str(body["SchemaName"])
    _check_prefix(schema_name, prefix)
    logical = schema_name.lower()
    if logical in e["Keys"]:
        raise ApiError(400, errors.DUPLICATE_RECORD, f"An entity key with the name {schema_name} already exists.")
    if len(e["Keys"]) >= 10:
        raise bad_request(f"The entity {e['LogicalName']} already has the maximum of 10 alternate keys.")
    cols = [str(c).lower() for c in body["KeyAttributes"]]
    if len(cols) > 16 or len(set(cols)) != len(cols):
        raise bad_request("An alternate key can have at most 16 distinct columns.")
    for c in cols:
        a = e["Attributes"].get(c)
        if a is None:
            raise bad_request(f"The attribute {c} does not exist on entity {e['LogicalName']}.")
        if a["AttributeType"] not in schema.KEY_TYPES:
            raise bad_request(f"The attribute {c} of type {a['AttributeType']} cannot be part of an alternate key: "
                              "allowed types are Decimal, Integer, String, DateTime, Lookup and Picklist.")
    size = sum((e["Attributes"][c].get("MaxLength") or 4) * 2 if e["Attributes"][c]["AttributeType"] == "String"
               else 16 for c in cols)
    if size > 900:
        raise bad_request("The alternate key exceeds the maximum key size of 900 bytes.")
    now = store.clock.now()
    k = {"MetadataId": store.new_id(), "SchemaName": schema_name, "LogicalName": logical, "KeyAttributes": cols,
         "EntityKeyIndexStatus": "Pending", "CreatedAt": now, "ActivateAt": now + store.config.key_activation_seconds,
         "DisplayName": _label_text(body.get("DisplayName"))}
    e["Keys"][logical] = k
    _component(store, solution, "EntityKey", k["MetadataId"])
    store.dirty = True
    store.refresh_keys()
    return k


# ---------------- RelationshipDefinitions ----------------
def _relationships(store: Store, req: ApiRequest, keytext: str | None, rest: list[str]) -> ApiResponse:
    rels = store.state["relationships"]
    if keytext is None:
        if req.method == "GET":
            return _shape([rel_out(r) for r in rels.values()], req, "RelationshipDefinitions")
        if req.method == "POST":
            r = create_relationship(store, req, req.json())
            return ApiResponse(204, {"OData-EntityId": f"{req.base_url}RelationshipDefinitions({r['MetadataId']})"})
        raise ApiError(405, "0x80060888", "Method not allowed on RelationshipDefinitions.")
    key = parse_key(keytext)
    r = next((x for x in rels.values() if x["MetadataId"] == key.get("id")
              or x["SchemaName"] == key.get("SchemaName")), None)
    if r is None:
        raise ApiError(404, "0x80060888", "Could not find the relationship.")
    if req.method == "GET":
        return _one(rel_out(r), req, "RelationshipDefinitions")
    if req.method == "DELETE":
        child = store.entities.get(r["ReferencingEntity"])
        parent = store.entities.get(r["ReferencedEntity"])
        if child:
            child["Attributes"].pop(r["ReferencingAttribute"], None)
            child["Nav"].pop(r["ReferencingEntityNavigationPropertyName"], None)
            for row in store.rows(child["LogicalName"]).values():  # the lookup column goes with its data
                row.pop(r["ReferencingAttribute"], None)
        if parent:
            parent["Collections"].pop(r["ReferencedEntityNavigationPropertyName"], None)
        del rels[r["SchemaName"]]
        store.dirty = True
        return ApiResponse(204)
    raise ApiError(405, "0x80060888", "Method not allowed on a relationship.")


def create_relationship(store: Store, req: ApiRequest, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("@odata.type"):
        raise bad_request("The relationship definition needs an @odata.type.")
    if "OneToManyRelationshipMetadata" not in str(body["@odata.type"]):
        raise bad_request("Only OneToManyRelationshipMetadata is supported by the emulator.")
    solution, prefix = _solution(store, req)
    schema_name = str(body.get("SchemaName") or "")
    if not schema_name:
        raise bad_request("The relationship needs a SchemaName.")
    # Only the lookup column's name is prefix-checked: Microsoft's SDK names relationships
    # '<referenced>_<referencing>_<lookup>' without a prefix, and no page we read states the rule for them.
    if schema_name in store.state["relationships"] or any(
            r["SchemaName"].lower() == schema_name.lower() for r in store.state["relationships"].values()):
        raise ApiError(400, errors.DUPLICATE_RECORD, f"A relationship named {schema_name} already exists.")
    parent = store.entity(str(body.get("ReferencedEntity", "")).lower())
    child = store.entity(str(body.get("ReferencingEntity", "")).lower())
    if parent is None or child is None:
        raise bad_request("ReferencedEntity and ReferencingEntity must name existing tables.")
    lookup = body.get("Lookup") or {}
    lookup_schema = lookup.get("SchemaName")
    if not isinstance(lookup_schema, str) or not lookup_schema:
        raise bad_request("The relationship needs Lookup.SchemaName.")
    _check_prefix(lookup_schema, prefix)
    lookup_logical = lookup_schema.lower()
    if lookup_logical in child["Attributes"]:
        raise ApiError(400, errors.DUPLICATE_RECORD,
                       f"An attribute with the specified name {lookup_schema} already exists on entity "
                       f"{child['LogicalName']}.")
    nav_single = body.get("ReferencingEntityNavigationPropertyName") or lookup_schema
    nav_coll = body.get("ReferencedEntityNavigationPropertyName") or schema_name
    schema.add_attr(child, schema.attr(
        child["LogicalName"], lookup_logical, "Lookup", targets=[parent["LogicalName"]], schema_name=lookup_schema,
        custom=True, metadata_id=store.new_id(),
        required=(lookup.get("RequiredLevel") or {}).get("Value", "None"),
        visible_at=store.clock.now() + store.config.metadata_propagation_seconds,
        definition={k: lookup.get(k) for k in ("DisplayName", "Description")}))
    child["Nav"][nav_single] = {"attribute": lookup_logical, "targets": [parent["LogicalName"]]}
    parent["Collections"][nav_coll] = {"entity": child["LogicalName"], "attribute": lookup_logical}
    r = {"MetadataId": store.new_id(), "SchemaName": schema_name, "RelationshipType": "OneToManyRelationship",
         "ReferencedEntity": parent["LogicalName"],
         "ReferencedAttribute": body.get("ReferencedAttribute") or parent["PrimaryIdAttribute"],
         "ReferencingEntity": child["LogicalName"], "ReferencingAttribute": lookup_logical,
         "ReferencingEntityNavigationPropertyName": nav_single,
         "ReferencedEntityNavigationPropertyName": nav_coll,
         "CascadeConfiguration": body.get("CascadeConfiguration") or {}, "IsCustomRelationship": True,
         "IsManaged": False}
    store.state["relationships"][schema_name] = r
    _component(store, solution, "Relationship", r["MetadataId"])
    child["Published"] = False
    store.dirty = True
    return r


# ---------------- GlobalOptionSetDefinitions ----------------
def _optionset_out(os_: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#Microsoft.Dynamics.CRM.OptionSetMetadata", "MetadataId": os_["MetadataId"],
            "Name": os_["Name"], "IsGlobal": True, "OptionSetType": "Picklist",
            "DisplayName": _label(os_.get("DisplayName")),
            "Options": [{"Value": o["Value"], "Label": _label(o.get("Label"))} for o in os_["Options"]]}


def _optionsets(store: Store, req: ApiRequest, keytext: str | None) -> ApiResponse:
    sets = store.state["optionsets"]
    if keytext is None:
        if req.method == "GET":
            return _shape([_optionset_out(o) for o in sets.values()], req, "GlobalOptionSetDefinitions")
        if req.method == "POST":
            body = req.json()
            solution, prefix = _solution(store, req)
            name = body.get("Name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name:
                raise bad_request("A global option set needs a Name.")
            _check_prefix(name, prefix)
            if name.lower() in sets:
                raise ApiError(400, errors.DUPLICATE_RECORD, f"An option set named {name} already exists.")
            opts = body.get("Options") or []
            values = _assign_values(store, opts)
            os_ = {"MetadataId": store.new_id(), "Name": name.lower(), "DisplayName": _label_text(
                body.get("DisplayName")), "Options": [{"Value": v, "Label": _label_text(o.get("Label")) or str(v)}
                                                     for v, o in zip(values, opts, strict=True)]}
            sets[name.lower()] = os_
            _component(store, solution, "OptionSet", os_["MetadataId"])
            store.dirty = True
            return ApiResponse(204, {"OData-EntityId": f"{req.base_url}GlobalOptionSetDefinitions({os_['MetadataId']})"})
        raise ApiError(405, "0x80060888", "Method not allowed on GlobalOptionSetDefinitions.")
    key = parse_key(keytext)
    os_ = sets.get(str(key.get("Name", "")).lower()) or next(
        (o for o in sets.values() if o["MetadataId"] == key.get("id")), None)
    if os_ is None:
        raise ApiError(404, "0x80060888", "Could not find the option set.")
    if req.method == "GET":
        return _one(_optionset_out(os_), req, "GlobalOptionSetDefinitions")
    if req.method == "DELETE":
        del sets[os_["Name"]]
        store.dirty = True
        return ApiResponse(204)
    raise ApiError(405, "0x80060888", "Method not allowed on an option set.")


def _insert_option(store: Store, req: ApiRequest) -> ApiResponse:
    body = req.json()
    opts = None
    if body.get("OptionSetName"):
        os_ = store.state["optionsets"].get(str(body["OptionSetName"]).lower())
        opts = os_["Options"] if os_ else None
    elif body.get("EntityLogicalName") and body.get("AttributeLogicalName"):
        e = store.entity(str(body["EntityLogicalName"]))
        a = e["Attributes"].get(str(body["AttributeLogicalName"])) if e else None
        opts = a["Options"] if a and a.get("Options") is not None else None
    if opts is None:
        raise ApiError(404, "0x80060888", "Could not find the option set to insert into.")
    value = body.get("Value")
    if value is None:
        value = _assign_values(store, [*({"Value": o["Value"]} for o in opts), {"Value": None}])[-1]
    if any(o["Value"] == value for o in opts):
        raise ApiError(400, errors.DUPLICATE_RECORD, f"An option with value {value} already exists.")
    opts.append({"Value": value, "Label": _label_text(body.get("Label")) or str(value)})
    store.dirty = True
    return ApiResponse.of_json(200, {"NewOptionValue": value})


# ---------------- publishing ----------------
def _publish(store: Store, req: ApiRequest, action: str) -> ApiResponse:
    if action == "PublishXml":
        xml = unquote(str(req.json().get("ParameterXml", "")))
        if "<importexportxml>" not in xml:
            raise bad_request("ParameterXml must be an <importexportxml> document.")
        names = re.findall(r"<entity>\s*([^<\s]+)\s*</entity>", xml)
        for n in names:
            if store.entity(n.lower()) is None:
                raise bad_request(f"PublishXml names an unknown entity {n}.")
    else:
        names = list(store.entities)
    for n in names:
        store.entities[n.lower()]["Published"] = True
    store.state["publishes"].append({"action": action, "entities": sorted(n.lower() for n in names)})
    store.dirty = True
    return ApiResponse(204)
