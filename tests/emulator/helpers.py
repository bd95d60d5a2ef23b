"""Request builders shared by the emulator contract tests: labels, the migration's bw schema, waits."""

from __future__ import annotations

import time
from typing import Any

import httpx


def label(text: str) -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.Label",
            "LocalizedLabels": [{"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text,
                                 "LanguageCode": 1033}]}


def table_body(schema_name: str, primary: str = "bw_Name", **overrides: Any) -> dict[str, Any]:
    body = {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata", "SchemaName": schema_name,
        "DisplayName": label(schema_name), "DisplayCollectionName": label(schema_name + "s"),
        "Description": label("test table"), "OwnershipType": "UserOwned", "IsActivity": False,
        "HasActivities": False, "HasNotes": True,
        "Attributes": [{"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": primary,
                        "IsPrimaryName": True, "MaxLength": 100, "FormatName": {"Value": "Text"},
                        "RequiredLevel": {"Value": "None"}, "DisplayName": label("Name")}],
    }
    body.update(overrides)
    return body


def string_column(schema_name: str, max_length: int = 100) -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"}, "SchemaName": schema_name, "MaxLength": max_length,
            "FormatName": {"Value": "Text"}, "RequiredLevel": {"Value": "None"}, "DisplayName": label(schema_name)}


def ok(r: httpx.Response, *status: int) -> httpx.Response:
    assert r.status_code in (status or (200, 201, 204)), (r.status_code, r.text[:500])
    return r


def create_table(api: httpx.Client, schema_name: str, **overrides: Any) -> None:
    ok(api.post("EntityDefinitions", json=table_body(schema_name, **overrides)), 204)


def add_source_key(api: httpx.Client, table: str, wait: bool = True) -> None:
    """The migration's pattern: a bw_sourceid column and an alternate key on it, waited until Active."""
    ok(api.post(f"EntityDefinitions(LogicalName='{table}')/Attributes", json=string_column("bw_SourceId")), 204)
    ok(api.post(f"EntityDefinitions(LogicalName='{table}')/Keys",
                json={"SchemaName": f"bw_{table}_sourceid_key", "KeyAttributes": ["bw_sourceid"],
                      "DisplayName": label("Source id")}), 204)
    if wait:
        wait_key(api, table, f"bw_{table}_sourceid_key")


def wait_key(api: httpx.Client, table: str, key: str, status: str = "Active", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        keys = ok(api.get(f"EntityDefinitions(LogicalName='{table}')/Keys",
                          params={"$select": "SchemaName,EntityKeyIndexStatus"})).json()["value"]
        state = {k["SchemaName"]: k["EntityKeyIndexStatus"] for k in keys}.get(key)
        if state == status:
            return
        assert state in ("Pending", "InProgress"), state
        assert time.monotonic() < deadline, f"key {key} still {state}"
        time.sleep(0.02)


def entity_id(r: httpx.Response) -> str:
    return r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
