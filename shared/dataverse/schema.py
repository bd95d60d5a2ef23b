"""Make a Dataverse environment match a `SchemaSpec`, idempotently: read first, create only what is missing.

Order (reference/dataverse.md §3.9, Microsoft's own guidance): global choices, then tables, then
columns, then alternate keys (waiting until every index is Active), then lookups (one-to-many
relationships), then keys that include a lookup column, then one `PublishXml`. Everything is
serial: metadata writes take an environment-wide customization lock. A second run finds
everything present and sends no write at all (not even the publish).

Existing components are never altered: a column that exists with another type is reported in
`SchemaBuildInfo.conflicts` for a person to decide, never dropped and recreated (that loses data).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.metadata import (
    ColumnSpec,
    KeySpec,
    OptionSetSpec,
    RelationshipSpec,
    SchemaSpec,
    TableSpec,
)
from shared.errors import ConfigurationError, DataverseError, DataverseRecordRejected

LANGUAGE = 1033

_COLUMN_TYPES: dict[str, tuple[str, str, str]] = {
    # spec type -> (@odata.type leaf, AttributeType, AttributeTypeName)
    "string": ("StringAttributeMetadata", "String", "StringType"),
    "memo": ("MemoAttributeMetadata", "Memo", "MemoType"),
    "integer": ("IntegerAttributeMetadata", "Integer", "IntegerType"),
    "decimal": ("DecimalAttributeMetadata", "Decimal", "DecimalType"),
    "money": ("MoneyAttributeMetadata", "Money", "MoneyType"),
    "datetime": ("DateTimeAttributeMetadata", "DateTime", "DateTimeType"),
    "boolean": ("BooleanAttributeMetadata", "Boolean", "BooleanType"),
    "picklist": ("PicklistAttributeMetadata", "Picklist", "PicklistType"),
}


class TableInfo(BaseModel):
    """What the data writers need to know about a table, read from `EntityDefinitions` (never computed)."""

    logical_name: str
    entity_set_name: str
    primary_id_attribute: str
    primary_name_attribute: str | None = None


class SchemaBuildInfo(BaseModel):
    """Result of one build: what was created, what was already there, and what differs."""

    created: list[str] = Field(default_factory=list)
    """Components created by this run, as `kind:name` (e.g. `table:bw_treatment`, `column:contact.bw_sourceid`)."""
    existing: int = 0
    """Components found already present."""
    conflicts: list[str] = Field(default_factory=list)
    """Components present with a different type: left alone, to be resolved by a person."""
    published: bool = False
    writes: int = 0
    """Metadata write requests sent (creates + publish). Zero on a second run."""
    tables: dict[str, TableInfo] = Field(default_factory=dict)
    """Every table in the spec, by logical name."""


def label(text: str) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": LANGUAGE}
        ],
    }


def _required(level: str) -> dict[str, Any]:
    return {
        "Value": level,
        "CanBeChanged": True,
        "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
    }


def _options(options: list[Any]) -> list[dict[str, Any]]:
    return [{"Value": o.value, "Label": label(o.label)} for o in options]


def column_payload(column: ColumnSpec, *, primary_name: bool = False) -> dict[str, Any]:
    """The `…AttributeMetadata` body for a column (Microsoft Learn, create-update-column-definitions)."""
    leaf, attr_type, type_name = _COLUMN_TYPES[column.type]
    body: dict[str, Any] = {
        "@odata.type": f"Microsoft.Dynamics.CRM.{leaf}",
        "AttributeType": attr_type,
        "AttributeTypeName": {"Value": type_name},
        "SchemaName": column.schema_name,
        "DisplayName": label(column.display_name),
        "Description": label(column.description),
        "RequiredLevel": _required(column.required),
    }
    t = column.type
    if t == "string":
        body["MaxLength"] = column.max_length or 100
        body["FormatName"] = {"Value": "Text"}
        if primary_name:
            body["IsPrimaryName"] = True
    elif t == "memo":
        body["MaxLength"] = column.max_length or 2000
        body["Format"] = "TextArea"
    elif t == "integer":
        body["MinValue"] = int(column.min_value) if column.min_value is not None else -2147483648
        body["MaxValue"] = int(column.max_value) if column.max_value is not None else 2147483647
        body["Format"] = "None"
    elif t == "decimal":
        body["MinValue"] = column.min_value if column.min_value is not None else -100000000000
        body["MaxValue"] = column.max_value if column.max_value is not None else 100000000000
        body["Precision"] = column.precision if column.precision is not None else 2
    elif t == "money":
        body["MinValue"] = column.min_value if column.min_value is not None else -922337203685477
        body["MaxValue"] = column.max_value if column.max_value is not None else 922337203685477
        body["Precision"] = column.precision if column.precision is not None else 2
        body["PrecisionSource"] = 2
    elif t == "datetime":
        behavior = column.datetime_behavior or "UserLocal"
        body["Format"] = "DateOnly" if behavior == "DateOnly" else "DateAndTime"
        body["DateTimeBehavior"] = {"Value": behavior}
    elif t == "boolean":
        body["DefaultValue"] = False
        body["OptionSet"] = {
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
            "TrueOption": {"Value": 1, "Label": label(column.true_label)},
            "FalseOption": {"Value": 0, "Label": label(column.false_label)},
            "OptionSetType": "Boolean",
        }
    elif t == "picklist":
        if column.global_option_set is not None:
            body["GlobalOptionSet@odata.bind"] = (
                f"/GlobalOptionSetDefinitions(Name='{column.global_option_set}')"
            )
        else:
            body["OptionSet"] = {
                "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                "IsGlobal": False,
                "OptionSetType": "Picklist",
                "Options": _options(column.options or []),
            }
    return body


def table_payload(table: TableSpec) -> dict[str, Any]:
    assert table.primary_name is not None
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": table.schema_name,
        "DisplayName": label(table.display_name),
        "DisplayCollectionName": label(table.display_collection_name),
        "Description": label(table.description),
        "OwnershipType": table.ownership,
        "IsActivity": False,
        "HasActivities": table.has_activities,
        "HasNotes": table.has_notes,
        "Attributes": [column_payload(table.primary_name, primary_name=True)],
    }


def option_set_payload(option_set: OptionSetSpec) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
        "Name": option_set.name,
        "OptionSetType": "Picklist",
        "IsGlobal": True,
        "DisplayName": label(option_set.display_name),
        "Description": label(option_set.description),
        "Options": _options(option_set.options),
    }


def relationship_payload(rel: RelationshipSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": rel.schema_name,
        "ReferencedEntity": rel.referenced_table,
        "ReferencedAttribute": rel.parent_key,
        "ReferencingEntity": rel.referencing_table,
        "CascadeConfiguration": {
            "Assign": "NoCascade",
            "Delete": rel.cascade_delete,
            "Merge": "NoCascade",
            "Reparent": "NoCascade",
            "Share": "NoCascade",
            "Unshare": "NoCascade",
        },
        "Lookup": {
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "AttributeType": "Lookup",
            "AttributeTypeName": {"Value": "LookupType"},
            "SchemaName": rel.lookup_schema_name,
            "DisplayName": label(rel.lookup_display_name),
            "Description": label(rel.lookup_description),
            "RequiredLevel": _required(rel.required),
        },
    }
    if rel.referencing_navigation_property:
        body["ReferencingEntityNavigationPropertyName"] = rel.referencing_navigation_property
    if rel.referenced_navigation_property:
        body["ReferencedEntityNavigationPropertyName"] = rel.referenced_navigation_property
    return body


def key_payload(key: KeySpec) -> dict[str, Any]:
    return {
        "SchemaName": key.schema_name,
        "KeyAttributes": list(key.columns),
        "DisplayName": label(key.display_name or key.schema_name),
    }


async def read_table(client: DataverseClient, logical_name: str) -> TableInfo | None:
    """A table's names as Dataverse reports them; None when the table does not exist."""
    rows = await client.query_all(
        "EntityDefinitions",
        select=[
            "MetadataId",
            "LogicalName",
            "SchemaName",
            "EntitySetName",
            "PrimaryIdAttribute",
            "PrimaryNameAttribute",
        ],
        filter=f"LogicalName eq {odata_literal(logical_name)}",
    )
    if not rows:
        return None
    row = rows[0]
    return TableInfo(
        logical_name=row["LogicalName"],
        entity_set_name=row["EntitySetName"],
        primary_id_attribute=row["PrimaryIdAttribute"],
        primary_name_attribute=row.get("PrimaryNameAttribute"),
    )


class SchemaBuilder:
    """Builds one `SchemaSpec` into one environment. `await SchemaBuilder(client, spec).build()`."""

    def __init__(
        self,
        client: DataverseClient,
        spec: SchemaSpec,
        *,
        key_timeout_seconds: float = 600.0,
        key_poll_seconds: float = 2.0,
        visible_timeout_seconds: float = 120.0,
        before_create: Callable[[str], None] | None = None,
    ) -> None:
        """`before_create("kind:name")` runs before each create is sent: a caller keeping a journal of
        what it created writes the intent first, so a create whose answer was lost still counts as its own."""
        self.before_create = before_create
        self.client = client
        self.spec = spec
        self.key_timeout = key_timeout_seconds
        self.key_poll = key_poll_seconds
        self.visible_timeout = visible_timeout_seconds
        self.info = SchemaBuildInfo()
        self._touched: set[str] = set()
        self._new_columns: list[tuple[str, str]] = []
        self._solution_headers = (
            {"MSCRM.SolutionUniqueName": spec.solution_unique_name} if spec.solution_unique_name else {}
        )

    async def build(self) -> SchemaBuildInfo:
        """Create what is missing, wait for keys, publish once if anything changed. Raises DataverseError subclasses."""
        for option_set in self.spec.option_sets:
            await self._ensure_option_set(option_set)
        for table in self.spec.tables:
            await self._ensure_table(table)
        for table in self.spec.tables:
            await self._ensure_columns(table)
        lookup_columns = {(r.referencing_table, r.lookup_logical_name) for r in self.spec.relationships}
        early = [k for k in self.spec.keys if not any((k.table, c) in lookup_columns for c in k.columns)]
        late = [k for k in self.spec.keys if k not in early]
        await self._ensure_keys(early)
        for rel in self.spec.relationships:
            await self._ensure_relationship(rel)
        await self._ensure_keys(late)
        if self._touched:
            xml = "".join(f"<entity>{name}</entity>" for name in sorted(self._touched))
            await self._write(
                "POST",
                "PublishXml",
                {"ParameterXml": f"<importexportxml><entities>{xml}</entities></importexportxml>"},
            )
            self.info.published = True
        await self._wait_until_visible()
        return self.info

    async def _wait_until_visible(self) -> None:
        """New columns can stay unknown to the data API for a while after creation (reference/dataverse.md
        §3.9); Microsoft's SDK probes `$select` of the column. Loading before that would fail every row."""
        deadline = time.monotonic() + self.visible_timeout
        for table, column in self._new_columns:
            entity_set = self.info.tables[table].entity_set_name
            while True:
                try:
                    await self.client.get_json(entity_set, {"$top": "1", "$select": column})
                    break
                except DataverseRecordRejected:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(self.key_poll)

    # -- helpers --
    async def _write(self, method: str, path: str, body: dict[str, Any]) -> None:
        self.info.writes += 1
        headers = {"Content-Type": "application/json", **self._solution_headers}
        await self.client.request(method, path, json=body, headers=headers)

    async def _create(self, path: str, body: dict[str, Any], kind: str, name: str, exists: Any) -> None:
        """POST a definition; if it fails with "already exists" (a retried create that had succeeded), re-read."""
        if self.before_create is not None:
            self.before_create(f"{kind}:{name}")
        try:
            await self._write("POST", path, body)
        except DataverseRecordRejected as exc:
            if exc.attrs.get("dataverse_code", "").lower() == "0x80040237" and await exists():
                self.info.existing += 1
                return
            raise
        self.info.created.append(f"{kind}:{name}")

    async def _ensure_option_set(self, option_set: OptionSetSpec) -> None:
        async def exists() -> bool:
            try:
                await self.client.get_json(
                    f"GlobalOptionSetDefinitions(Name={odata_literal(option_set.name)})"
                )
            except DataverseRecordRejected as exc:
                if exc.attrs.get("status") == 404:
                    return False
                raise
            return True

        if await exists():
            self.info.existing += 1
            return
        await self._create(
            "GlobalOptionSetDefinitions", option_set_payload(option_set), "optionset", option_set.name, exists
        )

    async def _ensure_table(self, table: TableSpec) -> None:
        info = await read_table(self.client, table.logical_name)
        if info is None:
            if table.existing:
                raise ConfigurationError(
                    f"table {table.logical_name} is marked existing but the environment has no such table"
                )

            async def exists() -> bool:
                return await read_table(self.client, table.logical_name) is not None

            await self._create("EntityDefinitions", table_payload(table), "table", table.logical_name, exists)
            info = await self._wait_for_table(table.logical_name)
            self._touched.add(table.logical_name)
        else:
            self.info.existing += 1
        self.info.tables[table.logical_name] = info

    async def _wait_for_table(self, logical_name: str) -> TableInfo:
        # A new table can take a moment to show in metadata reads; Microsoft's SDK re-reads with
        # Consistency: Strong right after creating (reference/dataverse.md §3.3).
        deadline = time.monotonic() + 60
        while True:
            info = await read_table(self.client, logical_name)
            if info is not None:
                return info
            if time.monotonic() > deadline:
                raise DataverseError(f"table {logical_name} created but not visible after 60 s")
            await asyncio.sleep(1.0)

    async def _attributes(self, logical_name: str) -> dict[str, str]:
        rows = await self.client.query_all(
            f"EntityDefinitions(LogicalName={odata_literal(logical_name)})/Attributes",
            select=["LogicalName", "AttributeType"],
        )
        return {r["LogicalName"]: r.get("AttributeType", "") for r in rows}

    async def _ensure_columns(self, table: TableSpec) -> None:
        present = await self._attributes(table.logical_name)
        for column in table.all_columns:
            found = present.get(column.logical_name)
            if found is not None:
                self.info.existing += 1
                if found != _COLUMN_TYPES[column.type][1]:
                    self.info.conflicts.append(
                        f"column:{table.logical_name}.{column.logical_name} is {found}, spec says {column.type}"
                    )
                continue

            async def exists(col: ColumnSpec = column) -> bool:
                return col.logical_name in await self._attributes(table.logical_name)

            await self._create(
                f"EntityDefinitions(LogicalName={odata_literal(table.logical_name)})/Attributes",
                column_payload(column),
                "column",
                f"{table.logical_name}.{column.logical_name}",
                exists,
            )
            self._touched.add(table.logical_name)
            self._new_columns.append((table.logical_name, column.logical_name))

    async def _keys(self, table: str) -> dict[str, dict[str, Any]]:
        rows = await self.client.query_all(
            f"EntityDefinitions(LogicalName={odata_literal(table)})/Keys",
            select=["SchemaName", "LogicalName", "KeyAttributes", "EntityKeyIndexStatus"],
        )
        return {str(r.get("LogicalName") or r["SchemaName"]).lower(): r for r in rows}

    async def _ensure_keys(self, keys: list[KeySpec]) -> None:
        if not keys:
            return
        for key in keys:
            present = await self._keys(key.table)
            if key.logical_name in present:
                self.info.existing += 1
                continue

            async def exists(k: KeySpec = key) -> bool:
                return k.logical_name in await self._keys(k.table)

            await self._create(
                f"EntityDefinitions(LogicalName={odata_literal(key.table)})/Keys",
                key_payload(key),
                "key",
                f"{key.table}.{key.logical_name}",
                exists,
            )
            self._touched.add(key.table)
        await self.wait_for_keys(keys)

    async def wait_for_keys(self, keys: list[KeySpec]) -> None:
        """Poll until every key's index is Active; a Failed index (duplicate data) is a ConfigurationError."""
        deadline = time.monotonic() + self.key_timeout
        pending = list(keys)
        while pending:
            still: list[KeySpec] = []
            for key in pending:
                row = (await self._keys(key.table)).get(key.logical_name)
                status = (row or {}).get("EntityKeyIndexStatus")
                if status == "Active":
                    continue
                if status == "Failed":
                    raise ConfigurationError(
                        f"alternate key {key.schema_name} on {key.table} failed to build "
                        "(existing rows are not unique on its columns); fix the data, then ReactivateEntityKey"
                    )
                still.append(key)
            pending = still
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DataverseError(
                    f"alternate keys not Active after {self.key_timeout:.0f} s: {[k.schema_name for k in pending]}"
                )
            await asyncio.sleep(self.key_poll)

    async def _relationship_exists(self, schema_name: str) -> bool:
        rows = await self.client.query_all(
            "RelationshipDefinitions",
            select=["SchemaName"],
            filter=f"SchemaName eq {odata_literal(schema_name)}",
        )
        return bool(rows)

    async def _ensure_relationship(self, rel: RelationshipSpec) -> None:
        if await self._relationship_exists(rel.schema_name):
            self.info.existing += 1
            return

        async def exists() -> bool:
            return await self._relationship_exists(rel.schema_name)

        await self._create(
            "RelationshipDefinitions", relationship_payload(rel), "relationship", rel.schema_name, exists
        )
        self._touched.update({rel.referencing_table, rel.referenced_table})


# -- removing what a build created ---------------------------------------------------------------------

COMPONENT_KINDS = ("relationship", "key", "column", "table", "optionset")
"""The order components are deleted in: nothing is deleted while another component depends on it."""


def component_path(component: str) -> str:
    """The metadata URL of a `kind:name` component as `SchemaBuildInfo.created` names it."""
    kind, _, name = component.partition(":")
    if kind == "relationship":
        return f"RelationshipDefinitions(SchemaName={odata_literal(name)})"
    if kind == "optionset":
        return f"GlobalOptionSetDefinitions(Name={odata_literal(name)})"
    if kind == "table":
        return f"EntityDefinitions(LogicalName={odata_literal(name)})"
    table, _, part = name.partition(".")
    if kind in ("column", "key") and table and part:
        segment = "Attributes" if kind == "column" else "Keys"
        return f"EntityDefinitions(LogicalName={odata_literal(table)})/{segment}(LogicalName={odata_literal(part)})"
    raise ConfigurationError(f"not a schema component: {component}")


async def read_component(client: DataverseClient, component: str) -> dict[str, Any] | None:
    """A component's definition, or None when it does not exist."""
    try:
        return dict(await client.get_json(component_path(component)))
    except DataverseRecordRejected as exc:
        if exc.attrs.get("status") == 404:
            return None
        raise


async def delete_component(client: DataverseClient, component: str) -> bool:
    """DELETE one definition (its data goes with it); False when it was not there.
    Deletes are not published: they take effect at once (reference/dataverse.md §3)."""
    try:
        await client.request("DELETE", component_path(component))
    except DataverseRecordRejected as exc:
        if exc.attrs.get("status") == 404:
            return False
        raise
    return True


async def build_schema(client: DataverseClient, spec: SchemaSpec, **kw: Any) -> SchemaBuildInfo:
    """Entry point: make the environment match `spec`; safe to run any number of times."""
    return await SchemaBuilder(client, spec, **kw).build()


__all__ = [
    "COMPONENT_KINDS",
    "SchemaBuildInfo",
    "SchemaBuilder",
    "TableInfo",
    "build_schema",
    "column_payload",
    "component_path",
    "delete_component",
    "key_payload",
    "label",
    "option_set_payload",
    "read_component",
    "read_table",
    "relationship_payload",
    "table_payload",
]
