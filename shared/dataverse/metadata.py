"""The desired Dataverse schema as data: tables, columns, choices, lookups and alternate keys.

`shared/mapping` produces a `SchemaSpec` from the approved field map; `shared/dataverse/schema.py`
makes an environment match it (read before write, so building twice changes nothing). These models
are the contract between the two: they describe *what* must exist, never how to create it.

Naming follows Dataverse: `schema_name` is the case-preserving name sent on create (`fs_PatientId`);
the logical name used in data payloads, `$select` and keys is its lowercase form (`fs_patientid`).
Every custom schema name must start with the publisher prefix plus `_` (`fs_`); Dataverse refuses
others with `0x8004431a` (reference/dataverse.md §3.1), so the spec refuses them first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ColumnType = Literal["string", "memo", "integer", "decimal", "money", "datetime", "boolean", "picklist"]
"""Column kinds the migration creates (reference/dataverse.md §3.4). Lookups are `RelationshipSpec`s."""

DateTimeBehavior = Literal["DateOnly", "UserLocal", "TimeZoneIndependent"]
"""`DateOnly`: a calendar date (birth date); `UserLocal`: an instant shown in the user's zone;
`TimeZoneIndependent`: wall-clock time stored and shown as-is (appointment times in practice time)."""

OwnershipType = Literal["UserOwned", "OrganizationOwned"]

RequiredLevel = Literal["None", "Recommended", "ApplicationRequired"]

CascadeDelete = Literal["Cascade", "RemoveLink", "Restrict"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OptionSpec(_Spec):
    """One choice value. Values are explicit so a re-run maps the same Dentrix code to the same number."""

    value: int
    """The stored integer (publisher option-value prefix x 10,000 + n, e.g. 727000000)."""
    label: str
    """English (1033) label."""


class OptionSetSpec(_Spec):
    """A global choice (`GlobalOptionSetDefinitions`), shared by columns that name it."""

    name: str
    """Prefixed name, e.g. `fs_cdtcategory` (global option sets have a name only, no schema/logical split)."""
    display_name: str
    description: str = ""
    options: list[OptionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_values(self) -> OptionSetSpec:
        values = [o.value for o in self.options]
        if len(values) != len(set(values)):
            raise ValueError(f"option set {self.name}: option values must be distinct")
        return self


class ColumnSpec(_Spec):
    """One column to add to a table (custom or existing, e.g. `contact`)."""

    schema_name: str
    """Prefixed, case-preserving, e.g. `fs_SourceId`."""
    display_name: str
    description: str = ""
    type: ColumnType
    required: RequiredLevel = "None"
    max_length: int | None = None
    """string (default 100, max 4,000) and memo (default 2,000, max 1,048,576)."""
    min_value: float | None = None
    """integer / decimal / money lower bound (type default when unset)."""
    max_value: float | None = None
    """integer / decimal / money upper bound (type default when unset)."""
    precision: int | None = None
    """decimal (0-10, default 2) and money (0-4, default 2) digits after the point."""
    datetime_behavior: DateTimeBehavior | None = None
    """Required for `datetime`; `DateOnly` also sets the format to date only."""
    options: list[OptionSpec] | None = None
    """A local choice's options (picklist only); exclusive with `global_option_set`."""
    global_option_set: str | None = None
    """Name of an `OptionSetSpec` (picklist only); exclusive with `options`."""
    true_label: str = "Yes"
    """boolean only."""
    false_label: str = "No"
    """boolean only."""

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    @model_validator(mode="after")
    def _type_specific(self) -> ColumnSpec:
        name = self.schema_name
        if self.max_length is not None and self.type not in ("string", "memo"):
            raise ValueError(f"column {name}: max_length applies to string and memo only")
        if self.precision is not None and self.type not in ("decimal", "money"):
            raise ValueError(f"column {name}: precision applies to decimal and money only")
        if (self.min_value is not None or self.max_value is not None) and self.type not in (
            "integer",
            "decimal",
            "money",
        ):
            raise ValueError(f"column {name}: min_value/max_value apply to integer, decimal and money only")
        if self.type == "string" and self.max_length is not None and not 1 <= self.max_length <= 4000:
            raise ValueError(f"column {name}: string max_length must be 1..4000")
        if self.type == "memo" and self.max_length is not None and not 1 <= self.max_length <= 1048576:
            raise ValueError(f"column {name}: memo max_length must be 1..1048576")
        if self.type == "decimal" and self.precision is not None and not 0 <= self.precision <= 10:
            raise ValueError(f"column {name}: decimal precision must be 0..10")
        if self.type == "money" and self.precision is not None and not 0 <= self.precision <= 4:
            raise ValueError(f"column {name}: money precision must be 0..4")
        if (self.type == "datetime") != (self.datetime_behavior is not None):
            raise ValueError(f"column {name}: datetime_behavior is required for datetime and only for it")
        if self.type == "picklist":
            if (self.options is None) == (self.global_option_set is None):
                raise ValueError(
                    f"column {name}: a picklist needs exactly one of options or global_option_set"
                )
            if self.options is not None and len({o.value for o in self.options}) != len(self.options):
                raise ValueError(f"column {name}: option values must be distinct")
        elif self.options is not None or self.global_option_set is not None:
            raise ValueError(f"column {name}: options/global_option_set apply to picklist only")
        return self


class TableSpec(_Spec):
    """A table the migration writes to: a custom one to create, or an existing one (`contact`) to extend."""

    schema_name: str
    """Custom: prefixed, e.g. `fs_TreatmentPlan`. Existing: its logical name, e.g. `contact`."""
    existing: bool = False
    """True for system tables (contact, appointment, annotation): never created, only given `columns`."""
    display_name: str = ""
    display_collection_name: str = ""
    description: str = ""
    ownership: OwnershipType = "UserOwned"
    primary_name: ColumnSpec | None = None
    """Custom tables: the primary name column (type string, e.g. `fs_Name`). None for existing tables."""
    has_notes: bool = False
    """Custom tables: allow notes (annotations) regarding rows; cannot be added to annotations later."""
    has_activities: bool = False
    """Custom tables: allow activities (appointments) regarding rows."""
    columns: list[ColumnSpec] = Field(default_factory=list)
    """Columns to add, excluding the primary name column and lookups (those are `RelationshipSpec`s)."""

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    @property
    def primary_id_attribute(self) -> str:
        """Dataverse derives the primary key column as `<logicalname>id` (contact -> contactid)."""
        return f"{self.logical_name}id"

    @model_validator(mode="after")
    def _shape(self) -> TableSpec:
        name = self.schema_name
        if self.existing:
            if self.primary_name is not None:
                raise ValueError(f"table {name}: an existing table keeps its own primary name column")
        else:
            if self.primary_name is None or self.primary_name.type != "string":
                raise ValueError(f"table {name}: a custom table needs a string primary_name column")
            if not self.display_name or not self.display_collection_name:
                raise ValueError(
                    f"table {name}: a custom table needs display_name and display_collection_name"
                )
        names = [c.logical_name for c in self.all_columns]
        if len(names) != len(set(names)):
            raise ValueError(f"table {name}: column names must be distinct")
        return self

    @property
    def all_columns(self) -> list[ColumnSpec]:
        return ([self.primary_name] if self.primary_name else []) + list(self.columns)


class RelationshipSpec(_Spec):
    """A one-to-many relationship: creates the lookup column on the referencing (child) table."""

    schema_name: str
    """Prefixed, e.g. `fs_contact_fs_treatmentplan`."""
    referenced_table: str
    """Parent logical name (the "one" side), e.g. `contact`."""
    referencing_table: str
    """Child logical name (the "many" side, which gets the lookup), e.g. `fs_treatmentplan`."""
    lookup_schema_name: str
    """The lookup column's schema name, e.g. `fs_PatientId`; by default also its navigation property."""
    lookup_display_name: str
    lookup_description: str = ""
    referenced_attribute: str | None = None
    """Parent primary key; default `<referenced_table>id`."""
    referencing_navigation_property: str | None = None
    """Name used as `<name>@odata.bind` on the child; default `lookup_schema_name` (case-sensitive)."""
    referenced_navigation_property: str | None = None
    """Collection-valued navigation name on the parent; default `schema_name`."""
    required: RequiredLevel = "None"
    cascade_delete: CascadeDelete = "RemoveLink"

    @property
    def lookup_logical_name(self) -> str:
        return self.lookup_schema_name.lower()

    @property
    def parent_key(self) -> str:
        return self.referenced_attribute or f"{self.referenced_table}id"

    @property
    def bind_name(self) -> str:
        """The `@odata.bind` property name for rows of the referencing table."""
        return self.referencing_navigation_property or self.lookup_schema_name


LookupSpec = RelationshipSpec
"""Alias: in this project every relationship is a lookup from a child to its parent."""


class KeySpec(_Spec):
    """An alternate key (unique index) over one or more columns; upserts and binds address rows by it."""

    schema_name: str
    """Prefixed, e.g. `fs_contact_sourceid_key`."""
    table: str
    """Logical name of the table, e.g. `contact`."""
    columns: list[str] = Field(min_length=1, max_length=16)
    """Logical column names (string, integer, decimal, datetime, lookup or picklist columns)."""
    display_name: str = ""

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()


class SchemaSpec(_Spec):
    """Everything the migration needs to exist in the environment, plus the publisher that owns it."""

    publisher_prefix: str = Field(pattern=r"^[a-z][a-z0-9]{1,7}$")
    """Customization prefix without the underscore, e.g. `fs`."""
    solution_unique_name: str | None = None
    """Unmanaged solution that receives the created components (`MSCRM.SolutionUniqueName`)."""
    option_sets: list[OptionSetSpec] = Field(default_factory=list)
    tables: list[TableSpec] = Field(default_factory=list)
    relationships: list[RelationshipSpec] = Field(default_factory=list)
    keys: list[KeySpec] = Field(default_factory=list)

    @property
    def custom_table_count(self) -> int:
        """What the Sales Professional 15-custom-table licence limit counts."""
        return sum(1 for t in self.tables if not t.existing)

    def table(self, logical_name: str) -> TableSpec:
        """The table with this logical name; KeyError if the spec has none."""
        for t in self.tables:
            if t.logical_name == logical_name:
                return t
        raise KeyError(logical_name)

    @model_validator(mode="after")
    def _consistent(self) -> SchemaSpec:
        prefix = self.publisher_prefix + "_"

        def need_prefix(kind: str, name: str) -> None:
            if not name.lower().startswith(prefix):
                raise ValueError(f"{kind} {name}: must start with the publisher prefix {prefix}")

        for o in self.option_sets:
            need_prefix("option set", o.name)
        option_set_names = {o.name.lower() for o in self.option_sets}
        if len(option_set_names) != len(self.option_sets):
            raise ValueError("option set names must be distinct")
        tables: dict[str, TableSpec] = {}
        for t in self.tables:
            if t.logical_name in tables:
                raise ValueError(f"table {t.schema_name}: listed twice")
            tables[t.logical_name] = t
            if not t.existing:
                need_prefix("table", t.schema_name)
            for c in t.all_columns:
                need_prefix(f"column {t.logical_name}.", c.schema_name)
                if c.global_option_set is not None and c.global_option_set.lower() not in option_set_names:
                    raise ValueError(
                        f"column {t.logical_name}.{c.schema_name}: global option set {c.global_option_set} is not in the spec"
                    )
        lookups: dict[str, set[str]] = {name: set() for name in tables}
        for r in self.relationships:
            need_prefix("relationship", r.schema_name)
            need_prefix("lookup", r.lookup_schema_name)
            if r.referencing_table not in tables:
                raise ValueError(
                    f"relationship {r.schema_name}: referencing table {r.referencing_table} is not in the spec"
                )
            child = tables[r.referencing_table]
            if (
                r.lookup_logical_name
                in {c.logical_name for c in child.all_columns} | lookups[r.referencing_table]
            ):
                raise ValueError(
                    f"relationship {r.schema_name}: lookup {r.lookup_schema_name} clashes with a column"
                )
            lookups[r.referencing_table].add(r.lookup_logical_name)
        if len({r.schema_name.lower() for r in self.relationships}) != len(self.relationships):
            raise ValueError("relationship schema names must be distinct")
        for k in self.keys:
            need_prefix("key", k.schema_name)
            if k.table not in tables:
                raise ValueError(f"key {k.schema_name}: table {k.table} is not in the spec")
            t = tables[k.table]
            known = {c.logical_name for c in t.all_columns} | lookups[k.table]
            if not t.existing:
                missing = [c for c in k.columns if c not in known]
                if missing:
                    raise ValueError(f"key {k.schema_name}: columns {missing} are not defined on {k.table}")
        per_table: dict[str, int] = {}
        for k in self.keys:
            per_table[k.table] = per_table.get(k.table, 0) + 1
            if per_table[k.table] > 10:
                raise ValueError(f"table {k.table}: Dataverse allows at most 10 alternate keys")
        return self


__all__ = [
    "CascadeDelete",
    "ColumnSpec",
    "ColumnType",
    "DateTimeBehavior",
    "KeySpec",
    "LookupSpec",
    "OptionSetSpec",
    "OptionSpec",
    "OwnershipType",
    "RelationshipSpec",
    "RequiredLevel",
    "SchemaSpec",
    "TableSpec",
]
