"""The field map as data: pydantic models, loading, rule checks with field-level errors, and approval.

A `MappingSpec` says, per Dentrix bundle table, which Dataverse table its rows become and how each
column gets there (target column, type, transform, picklist, lookups). `parse_mapping` is the one
door into a spec: it validates structure with pydantic and then the rules a Dataverse environment
will enforce anyway (columns that cannot exist, types that cannot hold the data, picklist values
outside their set), returning *all* problems at once as `FieldError`s with pydantic-style `loc`.
`approve` freezes a spec under its content hash; only an `ApprovedMapping` reaches the schema plan
and the loader.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import MappingInvalid, MappingNotApproved
from shared.mapping import transforms as tf
from shared.mapping.contract import DATA_DIR, SourceContract, standard_tables

FORMAT = "bridgework-mapping/1"
DEFAULT_MAP_PATH = DATA_DIR / "default_map.yaml"

TargetType = Literal["string", "memo", "integer", "decimal", "money", "datetime", "date", "boolean", "picklist"]
"""`date` is a date-only datetime column; `datetime` an instant written in UTC."""
TARGET_TYPES: tuple[str, ...] = TargetType.__args__  # type: ignore[attr-defined]

ObjectName = Literal[
    "patient", "guardian", "provider", "insurance_carrier", "patient_insurance", "appointment",
    "treatment_plan", "clinical_note", "prescription", "ledger", "document", "recall", "lab_case",
]
"""The 13 Dentrix objects of the migration brief (DESIGN.md)."""
OBJECTS: tuple[str, ...] = ObjectName.__args__  # type: ignore[attr-defined]

Action = Literal["upsert", "update", "resolve", "attachment"]
"""upsert: rows become records keyed by `<prefix>_sourceid`. update: rows set columns on a record
another map wrote (patient insurance on the patient's contact). resolve: rows are matched to
existing records, never written (providers -> systemusers by e-mail). attachment: rows describe
files, moved by the attachment step (SharePoint, or notes when so configured)."""

SOURCE_ID_COLUMN = "sourceid"
"""Suffix of the alternate-key column every written table carries: `<prefix>_sourceid`."""

COMMON_COLUMNS: dict[str, str] = {"overriddencreatedon": "datetime"}
"""Standard columns every table has, custom ones included (create-only; dataverse.md §4.6)."""

STRING_MAX = 4000
MEMO_MAX = 1_048_576
DEFAULT_STRING_LENGTH = 100
DEFAULT_MEMO_LENGTH = 2000

_MODEL = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True, populate_by_name=True)

# Source kinds (shared.dentrix.tables.TColumnKind) each transform accepts; absent = any scalar.
_TRANSFORM_SOURCE_KINDS: dict[str, set[str]] = {
    "cents_to_money": {"money", "int"},
    "cents_difference": {"money", "int"},
    "local_to_utc": {"datetime", "date"},
    "add_minutes": {"datetime", "date", "int"},
    "appointment_start": {"date", "int"},
    "date_only": {"date", "datetime"},
    "date_on_or_after": {"date", "datetime"},
    "integer": {"int", "id", "text"},
    "boolean": {"bool", "int", "text"},
    "bit_flag": {"int"},
    "email": {"text"},
    "phone": {"text", "id"},
    "tooth": {"tooth", "int", "text"},
    "surface": {"surface", "text", "bool"},
    "cdt_code": {"text", "id"},
    "cdt_list": {"text", "id"},
    "cdt_category": {"text", "id"},
    "json_text": {"json"},
}
# What `copy` may put where: a bundle kind -> target types that hold it unchanged.
_COPY_FITS: dict[str, set[str]] = {
    "id": {"string", "memo"},
    "text": {"string", "memo"},
    "tooth": {"string"},
    "surface": {"string"},
    "sha256": {"string"},
    "int": {"integer", "decimal"},
    "bool": {"boolean"},
    "date": {"date"},
    "money": {"integer"},
    "datetime": set(),  # a local time needs local_to_utc: copying it would shift it by the zone offset
    "json": set(),
}


class FieldError(BaseModel):
    """One problem in a map or a row. `loc` is a pydantic-style path; nothing here holds a row value."""

    model_config = ConfigDict(frozen=True)

    loc: tuple[str | int, ...]
    code: str
    message: str
    fatal: bool = True
    """For row errors: True = the row cannot be written (quarantine); False = only this field is left out."""


# --- the models ---------------------------------------------------------------------------------


class TransformRef(BaseModel):
    model_config = _MODEL

    name: str = "copy"
    args: dict[str, Any] = Field(default_factory=dict)


class ChildSource(BaseModel):
    """A list of values from child rows (an appointment's procedures), in child-key order."""

    model_config = _MODEL

    children: str
    """Child bundle table, e.g. `appointment_procedure`."""
    parent_column: str
    """Column of the child holding this row's key, e.g. `appointment_id`."""
    column: str
    """Path read from each child row, e.g. `proc_code_id>proc_code.ada_code`."""


Source = str | ChildSource


def _as_list(v: Any) -> Any:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


class FieldMap(BaseModel):
    """One target column and where its value comes from."""

    model_config = _MODEL

    source: list[Source] = Field(default_factory=list)
    """Source column paths (a single string is accepted). Empty only for `constant`."""
    target: str
    """Logical column name on the target table (`firstname`, `bw_groupnumber`)."""
    type: TargetType
    transform: TransformRef = Field(default_factory=TransformRef)
    max_length: int | None = None
    """string / memo only; default 100 / 2,000 for custom columns, the column's own for standard ones."""
    required: bool = False
    """A row without a value here cannot be written (quarantined)."""
    display_name: str | None = None
    schema_name: str | None = None
    """Case-preserving name for a custom column; default the logical name."""

    _source_list = field_validator("source", mode="before")(_as_list)

    @property
    def picklist(self) -> str | None:
        if self.transform.name == "cdt_category":
            return str(self.transform.args.get("picklist", "cdt_category"))
        p = self.transform.args.get("picklist")
        return str(p) if p is not None else None


class LookupMap(BaseModel):
    """A lookup bound by the parent's source key: `<nav>@odata.bind: /<set>(<prefix>_sourceid='<id>')`."""

    model_config = _MODEL

    source: str
    """Column (or path) holding the parent's Dentrix id."""
    parent: str
    """Name of the TableMap whose records are the parents (`patient`, `provider` for users)."""
    nav: str
    """Navigation property: standard (`parentcustomerid_contact`) or custom lookup schema name (`bw_PatientId`)."""
    required: bool = False
    display_name: str | None = None


class PartyMap(BaseModel):
    """An activity party of an appointment (organizer, attendees)."""

    model_config = _MODEL

    source: str
    parent: str
    participation: Literal[5, 6, 7]
    """5 required attendee, 6 optional attendee, 7 organizer."""


class KeyMap(BaseModel):
    """How a row's Dentrix identity becomes `<prefix>_sourceid`, or which record an update targets."""

    model_config = _MODEL

    columns: list[str] = Field(min_length=1)
    prefix: str | None = Field(default=None, pattern=r"^[A-Z]{1,4}$")
    """upsert: sourceid = `<prefix>-<col1>|<col2>`; prefixes keep ids of different Dentrix tables
    apart when they land in one Dataverse table (patients and guardians are both contacts)."""
    parent: str | None = None
    """update: the TableMap whose record this row updates; `columns` hold that record's Dentrix id."""


class Condition(BaseModel):
    """Row filter on one column: `in` a list of values and/or `not_null`."""

    model_config = _MODEL

    in_: list[Any] | None = Field(default=None, alias="in")
    not_null: bool = False

    def matches(self, value: Any) -> bool:
        if self.not_null and (value is None or value == ""):
            return False
        if self.in_ is not None:
            return any(_same(value, v) for v in self.in_)
        return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).strip().lower() == str(b).strip().lower()
    return bool(a == b)


class CloseRule(BaseModel):
    """Appointment state as the last write: completed or canceled rows are closed after all data."""

    model_config = _MODEL

    completed_when: dict[str, Condition] = Field(default_factory=dict)
    canceled_when: dict[str, Condition] = Field(default_factory=dict)


class TableMap(BaseModel):
    """One bundle table (or a filtered slice of it) -> one Dataverse table."""

    model_config = _MODEL

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")
    object: ObjectName
    source_table: str
    where: dict[str, Condition] = Field(default_factory=dict)
    target_table: str
    action: Action = "upsert"
    key: KeyMap
    enabled: bool = True
    clinical: bool = False
    """Clinical records never land without a valid owner (an active systemuser)."""
    owner: str | None = None
    """Column holding the provider whose systemuser owns the record (`ownerid`)."""
    display_name: str | None = None
    display_collection_name: str | None = None
    schema_name: str | None = None
    """Custom tables: case-preserving schema name, default the logical name."""
    has_notes: bool = False
    fields: list[FieldMap] = Field(default_factory=list)
    lookups: list[LookupMap] = Field(default_factory=list)
    parties: list[PartyMap] = Field(default_factory=list)
    close: CloseRule | None = None
    match: list[str] = Field(default_factory=list)
    """Target columns that find a record already in Dataverse before the migration (`[emailaddress1,
    birthdate]`): a row with no record under its source key, whose values equal exactly one record that
    has no source key yet, updates that record (its before-image kept for rollback) instead of creating
    one. Empty: never match. Strings compare trimmed and case-insensitively, dates by day."""
    doc: str = ""

    def selects(self, row: dict[str, Any]) -> bool:
        """Whether a bundle row belongs to this map (its `where` filter)."""
        return all(cond.matches(row.get(col)) for col, cond in self.where.items())


class PicklistOption(BaseModel):
    model_config = _MODEL

    value: int
    label: str
    codes: list[str | int] = Field(default_factory=list)


class Picklist(BaseModel):
    model_config = _MODEL

    display_name: str
    standard: bool = False
    options: list[PicklistOption] = Field(min_length=1)

    def code_index(self) -> dict[str, int]:
        """Normalised code -> option value (callers cache it: see `TransformContext.codes_for`)."""
        return {tf._code_key(c): o.value for o in self.options for c in o.codes}

    def label_of(self, value: int) -> str:
        for o in self.options:
            if o.value == value:
                return o.label
        raise KeyError(value)

    @property
    def values(self) -> set[int]:
        return {o.value for o in self.options}


class CdtCategory(BaseModel):
    model_config = _MODEL

    low: int
    high: int
    value: int
    label: str


class MappingSpec(BaseModel):
    """A complete, versioned field map."""

    model_config = _MODEL

    format: Literal["bridgework-mapping/1"] = FORMAT
    version: int = Field(default=1, ge=1)
    """Bumped on every saved edit; approval freezes one version under its content hash."""
    publisher_prefix: str = Field(default="bw", pattern=r"^[a-z][a-z0-9]{1,7}$")
    timezone_note: str = ""
    tables: list[TableMap]
    picklists: dict[str, Picklist] = Field(default_factory=dict)
    cdt_categories: list[CdtCategory] = Field(default_factory=list)

    def table(self, name: str) -> TableMap:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def enabled_tables(self) -> list[TableMap]:
        return [t for t in self.tables if t.enabled]

    @property
    def source_id_column(self) -> str:
        return f"{self.publisher_prefix}_{SOURCE_ID_COLUMN}"

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the spec: what approval freezes."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ApprovedMapping(BaseModel):
    """A frozen map version: the spec plus the hash it was approved under."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: MappingSpec
    version: int
    content_hash: str
    approved_by: str | None = None
    approved_at: str | None = None
    """ISO time given by the caller (an orchestrator's `current_utc_datetime`), not read here."""

    @model_validator(mode="after")
    def _hash_matches(self) -> ApprovedMapping:
        if self.spec.content_hash() != self.content_hash or self.spec.version != self.version:
            raise ValueError("approved mapping: content hash or version does not match the spec")
        return self


# --- loading and checking -----------------------------------------------------------------------


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(loc=tuple(e["loc"]), code=str(e["type"]), message=str(e["msg"]))
        for e in exc.errors(include_input=False, include_url=False)
    ]


def parse_mapping(
    data: dict[str, Any], source: SourceContract | None = None, max_lengths: dict[tuple[str, str], int] | None = None
) -> MappingSpec:
    """A validated `MappingSpec` from JSON/YAML data (an API edit or the default file).

    `source` defaults to the bundle registry; pass one with the practice's custom columns to allow
    them. `max_lengths` ((table, column) -> longest value seen by discovery) lets the check refuse a
    string column too short for the data.
    Raises `MappingInvalid` listing every problem (`errors`: loc, code, message).
    """
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        errs = _pydantic_errors(exc)
        raise MappingInvalid(
            f"mapping is invalid: {len(errs)} problem(s)", errors=[e.model_dump() for e in errs]
        ) from None
    errs = check_mapping(spec, source or SourceContract.from_registry(), max_lengths or {})
    if errs:
        raise MappingInvalid(f"mapping is invalid: {len(errs)} problem(s)", errors=[e.model_dump() for e in errs])
    return spec


def check_mapping(
    spec: MappingSpec, source: SourceContract, max_lengths: dict[tuple[str, str], int] | None = None
) -> list[FieldError]:
    """Every rule violation in `spec` (empty when it is good)."""
    return list(_Checker(spec, source, max_lengths or {}).run())


_CUSTOM_NAME = r"^{p}_[a-z0-9_]{{1,45}}$"
_CUSTOM_NAV = r"^{p}_[A-Za-z0-9_]{{1,45}}$"


class _Checker:
    def __init__(self, spec: MappingSpec, source: SourceContract, max_lengths: dict[tuple[str, str], int]) -> None:
        self.spec = spec
        self.source = source
        self.max_lengths = max_lengths
        self.std = standard_tables()
        p = spec.publisher_prefix
        self.custom_name = re.compile(_CUSTOM_NAME.format(p=p))
        self.custom_nav = re.compile(_CUSTOM_NAV.format(p=p))
        self.by_name = {t.name: t for t in spec.tables}

    def err(self, loc: tuple[str | int, ...], code: str, message: str) -> FieldError:
        return FieldError(loc=loc, code=code, message=message)

    def run(self) -> Iterator[FieldError]:
        yield from self.picklists()
        names: set[str] = set()
        prefixes: dict[tuple[str, str], str] = {}
        column_types: dict[tuple[str, str], tuple[str, str]] = {}
        for i, t in enumerate(self.spec.tables):
            loc: tuple[str | int, ...] = ("tables", i)
            if t.name in names:
                yield self.err(loc + ("name",), "duplicate_table_map", f"table map {t.name} is listed twice")
            names.add(t.name)
            yield from self.table(t, loc, prefixes)
            for j, lk in enumerate(t.lookups):
                key = (t.target_table, lk.nav.lower())
                if t.enabled and self.is_custom(lk.nav) and column_types.get(key, ("lookup",))[0] != "lookup":
                    yield self.err(loc + ("lookups", j, "nav"), "lookup_clashes_with_column",
                                   f"{t.target_table}.{lk.nav.lower()} is already a column in map {column_types[key][1]}")
                elif t.enabled:
                    column_types.setdefault(key, ("lookup", t.name))
            for j, f in enumerate(t.fields):
                key = (t.target_table, f.target)
                # one column, one type (and one option set): maps sharing a table must agree
                kind = f"picklist {f.picklist}" if f.type == "picklist" else f.type
                if key in column_types and column_types[key][0] != kind and t.enabled:
                    yield self.err(
                        loc + ("fields", j, "type"), "type_conflict",
                        f"{t.target_table}.{f.target} is {column_types[key][0]} in map {column_types[key][1]}",
                    )
                elif t.enabled:
                    column_types.setdefault(key, (kind, t.name))

    def picklists(self) -> Iterator[FieldError]:
        for name, pl in self.spec.picklists.items():
            seen: dict[str, int] = {}
            values = [o.value for o in pl.options]
            if len(values) != len(set(values)):
                yield self.err(("picklists", name, "options"), "duplicate_option_value",
                               f"picklist {name} has an option value twice")
            for k, o in enumerate(pl.options):
                for c in o.codes:
                    ck = tf._code_key(c)
                    if ck in seen and seen[ck] != o.value:
                        yield self.err(("picklists", name, "options", k, "codes"), "duplicate_code",
                                       f"picklist {name}: a code selects two options")
                    seen[ck] = o.value

    def is_custom(self, name: str) -> bool:
        return name.startswith(self.spec.publisher_prefix + "_")

    def table(self, t: TableMap, loc: tuple[str | int, ...], prefixes: dict[tuple[str, str], str]) -> Iterator[FieldError]:
        if not self.source.has_table(t.source_table):
            yield self.err(loc + ("source_table",), "unknown_source_table",
                           f"bundle has no table {t.source_table}")
            return
        std = self.std.get(t.target_table)
        if std is None and not self.custom_name.match(t.target_table):
            yield self.err(loc + ("target_table",), "table_cannot_exist",
                           f"{t.target_table} is neither a standard table the map supports nor "
                           f"a custom table named {self.spec.publisher_prefix}_<lowercase>")
            return
        if t.target_table == "systemuser" and t.action != "resolve":
            yield self.err(loc + ("action",), "systemuser_not_writable",
                           "providers are matched to existing systemusers (action resolve), never written")
        if t.action == "resolve" and t.target_table != "systemuser":
            yield self.err(loc + ("action",), "resolve_needs_systemuser", "only systemuser rows are resolved")
        for col, _cond in t.where.items():
            if self.source.column(t.source_table, col) is None:
                yield self.err(loc + ("where", col), "unknown_source_column",
                               f"{t.source_table} has no column {col}")
        for k, col in enumerate(t.key.columns):
            if self.source.column(t.source_table, col) is None:
                yield self.err(loc + ("key", "columns", k), "unknown_source_column",
                               f"{t.source_table} has no column {col}")
        if t.action == "upsert":
            if t.key.prefix is None:
                yield self.err(loc + ("key", "prefix"), "missing_key_prefix", "an upsert map needs a key prefix")
            elif t.enabled:
                other = prefixes.get((t.target_table, t.key.prefix))
                if other is not None and self.by_name.get(other) and self.by_name[other].source_table != t.source_table:
                    yield self.err(loc + ("key", "prefix"), "duplicate_key_prefix",
                                   f"prefix {t.key.prefix} is already used on {t.target_table} by {other}")
                prefixes[(t.target_table, t.key.prefix)] = t.name
        if t.action == "update":
            parent = self.by_name.get(t.key.parent or "")
            if parent is None or parent.action != "upsert" or parent.target_table != t.target_table:
                yield self.err(loc + ("key", "parent"), "bad_update_parent",
                               "an update map names the upsert map of the same target table whose records it updates")
            elif t.enabled and not parent.enabled:
                yield self.err(loc + ("key", "parent"), "parent_disabled", f"map {t.key.parent} is disabled")
        if t.owner is not None and self.source.column(t.source_table, t.owner) is None:
            yield self.err(loc + ("owner",), "unknown_source_column", f"{t.source_table} has no column {t.owner}")
        if t.clinical and t.owner is None and t.action in ("upsert",):
            yield self.err(loc + ("owner",), "clinical_needs_owner", "a clinical record needs an owner column")
        yield from self.match_rule(t, loc, std)
        if t.close is not None:
            if t.target_table != "appointment":
                yield self.err(loc + ("close",), "close_only_for_appointments", "only appointments are closed")
            for part in ("completed_when", "canceled_when"):
                for col in getattr(t.close, part):
                    _c, code = self.source.resolve(t.source_table, col)
                    if code:
                        yield self.err(loc + ("close", part, col), code, f"{t.source_table}: bad column path {col}")
        seen_targets: set[str] = set()
        for j, f in enumerate(t.fields):
            floc = loc + ("fields", j)
            if f.target in seen_targets:
                yield self.err(floc + ("target",), "duplicate_target", f"{f.target} is mapped twice in {t.name}")
            seen_targets.add(f.target)
            yield from self.field(t, f, floc, std)
        for j, lk in enumerate(t.lookups):
            yield from self.lookup(t, lk, loc + ("lookups", j), std)
        for j, party in enumerate(t.parties):
            ploc = loc + ("parties", j)
            if std is None or std.party_list is None:
                yield self.err(ploc, "parties_not_supported", f"{t.target_table} has no activity parties")
            parent = self.by_name.get(party.parent)
            if parent is None or parent.action not in ("upsert", "resolve"):
                yield self.err(ploc + ("parent",), "unknown_parent", f"no upsert/resolve map named {party.parent}")
            elif t.enabled and not parent.enabled:
                yield self.err(ploc + ("parent",), "parent_disabled", f"map {party.parent} is disabled")
            _c, code = self.source.resolve(t.source_table, party.source)
            if code:
                yield self.err(ploc + ("source",), code, f"{t.source_table}: bad column path {party.source}")

    def match_rule(self, t: TableMap, loc: tuple[str | int, ...], std: Any) -> Iterator[FieldError]:
        """A match rule reads the values this map writes, on a table whose records carry the source key."""
        if not t.match:
            return
        if t.action != "upsert":
            yield self.err(loc + ("match",), "match_needs_upsert", "only an upsert map can match existing records")
            return
        if std is not None and not std.custom_columns:
            yield self.err(loc + ("match",), "match_needs_source_key",
                           f"{t.target_table} takes no source-key column: a matched record could not be found again")
        types = {f.target: f.type for f in t.fields}
        for k, column in enumerate(t.match):
            if column not in types:
                yield self.err(loc + ("match", k), "match_column_not_mapped",
                               f"{column} is not a target column of map {t.name}")
        if len(set(t.match)) != len(t.match):
            yield self.err(loc + ("match",), "duplicate_match_column", "a match column is listed twice")
        if all(column in types for column in t.match) and not any(types[c] == "string" for c in t.match):
            yield self.err(loc + ("match",), "match_needs_string_column",
                           "a match rule needs at least one string column (the records are looked up by it)")

    def field(self, t: TableMap, f: FieldMap, loc: tuple[str | int, ...], std: Any) -> Iterator[FieldError]:
        sid = self.spec.source_id_column
        if f.target == sid:
            yield self.err(loc + ("target",), "reserved_column", f"{sid} is written from the key, not mapped")
            return
        # 1. the column must be able to exist on the target table
        max_len_cap: int | None = None
        if self.is_custom(f.target):
            if std is not None and not std.custom_columns:
                yield self.err(loc + ("target",), "column_cannot_exist",
                               f"{t.target_table} takes no custom columns")
                return
            if not self.custom_name.match(f.target):
                yield self.err(loc + ("target",), "column_cannot_exist",
                               f"{f.target}: custom column names are {self.spec.publisher_prefix}_ + lowercase letters, digits, _")
                return
            if f.type == "picklist" and f.picklist in self.spec.picklists and self.spec.picklists[f.picklist].standard:
                yield self.err(loc + ("transform", "args", "picklist"), "standard_picklist_on_custom_column",
                               f"picklist {f.picklist} holds a standard column's values")
        elif std is None and f.target in COMMON_COLUMNS:
            if COMMON_COLUMNS[f.target] != f.type:
                yield self.err(loc + ("type",), "type_cannot_hold",
                               f"{f.target} is a {COMMON_COLUMNS[f.target]} column, not {f.type}")
                return
        elif std is None:
            yield self.err(loc + ("target",), "column_cannot_exist",
                           f"{t.target_table} is a custom table: its columns start with {self.spec.publisher_prefix}_")
            return
        else:
            col = std.columns.get(f.target)
            if col is None:
                yield self.err(loc + ("target",), "column_cannot_exist",
                               f"{t.target_table} has no writable standard column {f.target}")
                return
            if col.type != f.type:
                yield self.err(loc + ("type",), "type_cannot_hold",
                               f"{t.target_table}.{f.target} is a {col.type} column, not {f.type}")
                return
            max_len_cap = col.max_length
            if col.options is not None and f.type == "picklist":
                pl = self.spec.picklists.get(f.picklist or "")
                if pl is not None and not pl.values <= set(col.options):
                    yield self.err(loc + ("transform", "args", "picklist"), "picklist_value_not_in_set",
                                   f"picklist {f.picklist} has values {t.target_table}.{f.target} does not allow")
        # 2. the transform must exist, take this many sources and produce this type
        tdef = tf.REGISTRY.get(f.transform.name)
        if tdef is None:
            yield self.err(loc + ("transform", "name"), "unknown_transform", f"no transform {f.transform.name}")
            return
        n = len(f.source)
        if n < tdef.min_sources or (tdef.max_sources is not None and n > tdef.max_sources):
            yield self.err(loc + ("source",), "wrong_source_count",
                           f"{f.transform.name} takes {tdef.min_sources}..{tdef.max_sources} source columns, got {n}")
        if f.type not in tdef.outputs:
            yield self.err(loc + ("type",), "type_cannot_hold",
                           f"{f.transform.name} produces values a {f.type} column cannot hold")
        # 3. sources must exist and be of a kind the transform reads
        kinds = _TRANSFORM_SOURCE_KINDS.get(f.transform.name)
        for k, s in enumerate(f.source):
            sloc = loc + ("source", k)
            if isinstance(s, ChildSource):
                if not self.source.has_table(s.children):
                    yield self.err(sloc + ("children",), "unknown_source_table", f"bundle has no table {s.children}")
                    continue
                if self.source.column(s.children, s.parent_column) is None:
                    yield self.err(sloc + ("parent_column",), "unknown_source_column",
                                   f"{s.children} has no column {s.parent_column}")
                col, code = self.source.resolve(s.children, s.column)
                if code:
                    yield self.err(sloc + ("column",), code, f"{s.children}: bad column path {s.column}")
                continue
            col, code = self.source.resolve(t.source_table, s)
            if code or col is None:
                yield self.err(sloc, code or "unknown_source_column", f"{t.source_table}: bad column path {s}")
                continue
            if kinds is not None and col.kind not in kinds:
                yield self.err(sloc, "source_kind_not_accepted",
                               f"{f.transform.name} does not read {col.kind} columns ({s})")
            if f.transform.name == "copy" and f.type not in _COPY_FITS.get(col.kind, {f.type}):
                yield self.err(loc + ("type",), "type_cannot_hold",
                               f"a {col.kind} column copied unchanged cannot go into a {f.type} column")
            longest = self.max_lengths.get((col.table, col.name))
            if longest is not None and f.type == "string" and f.transform.name in ("copy", "trim"):
                cap = f.max_length or max_len_cap or DEFAULT_STRING_LENGTH
                if longest > cap:
                    yield self.err(loc + ("max_length",), "type_cannot_hold",
                                   f"{col.table}.{col.name} has values of {longest} characters; the column holds {cap}")
        # 4. lengths
        if f.max_length is not None:
            if f.type not in ("string", "memo"):
                yield self.err(loc + ("max_length",), "max_length_not_applicable", "max_length is for string/memo")
            elif f.max_length < 1 or f.max_length > (STRING_MAX if f.type == "string" else MEMO_MAX):
                yield self.err(loc + ("max_length",), "max_length_out_of_range",
                               f"a {f.type} column holds 1..{STRING_MAX if f.type == 'string' else MEMO_MAX} characters")
            elif max_len_cap is not None and f.max_length > max_len_cap:
                yield self.err(loc + ("max_length",), "exceeds_column_length",
                               f"{t.target_table}.{f.target} holds at most {max_len_cap} characters")
        # 5. picklists: known, and every value an edit names must be in the set
        if tdef.needs_picklist or f.type == "picklist":
            if f.type == "picklist" and not tdef.needs_picklist:
                yield self.err(loc + ("transform", "name"), "type_cannot_hold",
                               "a picklist column needs the picklist or cdt_category transform")
            name = f.picklist
            pl = self.spec.picklists.get(name or "")
            if pl is None:
                yield self.err(loc + ("transform", "args", "picklist"), "unknown_picklist",
                               f"no picklist named {name}")
            else:
                for code, value in (f.transform.args.get("codes") or {}).items():
                    if not isinstance(value, int) or value not in pl.values:
                        yield self.err(loc + ("transform", "args", "codes", str(code)), "picklist_value_not_in_set",
                                       f"value for code {code} is not an option of picklist {name}")
                default = f.transform.args.get("default")
                if default is not None and (not isinstance(default, int) or default not in pl.values):
                    yield self.err(loc + ("transform", "args", "default"), "picklist_value_not_in_set",
                                   f"default is not an option of picklist {name}")
                if f.transform.name == "cdt_category":
                    for c in self.spec.cdt_categories:
                        if c.value not in pl.values:
                            yield self.err(("cdt_categories",), "picklist_value_not_in_set",
                                           f"category {c.label} is not an option of picklist {name}")

    def lookup(self, t: TableMap, lk: LookupMap, loc: tuple[str | int, ...], std: Any) -> Iterator[FieldError]:
        parent = self.by_name.get(lk.parent)
        if parent is None or parent.action not in ("upsert", "resolve"):
            yield self.err(loc + ("parent",), "unknown_parent", f"no upsert/resolve map named {lk.parent}")
            return
        if t.enabled and not parent.enabled:
            yield self.err(loc + ("parent",), "parent_disabled",
                           f"map {lk.parent} is disabled: enable it or remove this lookup")
        pstd = self.std.get(parent.target_table)
        if parent.action == "upsert" and pstd is not None and not pstd.source_key:
            yield self.err(loc + ("parent",), "parent_not_addressable",
                           f"{parent.target_table} records have no source key to bind by")
        _c, code = self.source.resolve(t.source_table, lk.source)
        if code:
            yield self.err(loc + ("source",), code, f"{t.source_table}: bad column path {lk.source}")
        if lk.nav == "ownerid":
            yield self.err(loc + ("nav",), "owner_is_not_a_lookup", "set the table map's owner column instead")
        elif self.is_custom(lk.nav):
            if std is not None and not std.custom_columns:
                yield self.err(loc + ("nav",), "column_cannot_exist", f"{t.target_table} takes no custom lookups")
            if not self.custom_nav.match(lk.nav):
                yield self.err(loc + ("nav",), "column_cannot_exist", f"{lk.nav} is not a valid lookup name")
            if parent.action == "resolve":
                yield self.err(loc + ("nav",), "lookup_to_systemuser",
                               "records point at users through their owner, not a custom lookup")
        elif std is None or lk.nav not in std.navs:
            yield self.err(loc + ("nav",), "column_cannot_exist", f"{t.target_table} has no lookup {lk.nav}")
        elif std.navs[lk.nav] != parent.target_table:
            yield self.err(loc + ("nav",), "lookup_target_mismatch",
                           f"{lk.nav} points at {std.navs[lk.nav]}, not {parent.target_table}")


# --- loading the shipped default ---------------------------------------------------------------


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 20x faster, same result


def _read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader


@lru_cache(maxsize=1)
def _default_data() -> str:
    data = dict(_read_yaml(DEFAULT_MAP_PATH))
    data.setdefault("picklists", _read_yaml(DATA_DIR / "picklists.yaml"))
    data.setdefault("cdt_categories", _read_yaml(DATA_DIR / "cdt_categories.yaml"))
    return json.dumps(data)


def default_mapping_data() -> dict[str, Any]:
    """The shipped default map as plain data (a fresh copy), with the picklists and CDT categories merged in."""
    return dict(json.loads(_default_data()))


@lru_cache(maxsize=1)
def default_mapping() -> MappingSpec:
    """The shipped default Dentrix -> Dataverse map, validated against the bundle registry."""
    return parse_mapping(default_mapping_data())


def revise(
    current: MappingSpec,
    edited: dict[str, Any],
    source: SourceContract | None = None,
    max_lengths: dict[tuple[str, str], int] | None = None,
) -> MappingSpec:
    """A user's edit of `current` (an API `PUT`), validated; its version is `current.version + 1`
    whatever the edit says, or `current` itself when nothing changed. The publisher prefix cannot
    change: components already built carry it forever (dataverse.md §3.1).
    Raises `MappingInvalid` listing every problem."""
    data = dict(edited)
    data["version"] = current.version
    if data.get("publisher_prefix", current.publisher_prefix) != current.publisher_prefix:
        raise MappingInvalid(
            "mapping is invalid: 1 problem(s)",
            errors=[FieldError(loc=("publisher_prefix",), code="prefix_is_permanent",
                               message=f"the publisher prefix stays {current.publisher_prefix}").model_dump()],
        )
    spec = parse_mapping(data, source, max_lengths)
    if spec.content_hash() == current.content_hash():
        return current
    return spec.model_copy(update={"version": current.version + 1})


def approve(
    spec: MappingSpec, approved_by: str | None = None, approved_at: str | None = None
) -> ApprovedMapping:
    """Freeze `spec` as its version under its content hash."""
    return ApprovedMapping(
        spec=spec, version=spec.version, content_hash=spec.content_hash(), approved_by=approved_by, approved_at=approved_at
    )


def load_approved(data: dict[str, Any]) -> ApprovedMapping:
    """An approved map read back from storage; `MappingNotApproved` if it was changed after approval."""
    try:
        return ApprovedMapping.model_validate(data)
    except ValidationError:
        raise MappingNotApproved(
            "the stored mapping does not match the hash it was approved under: approve the mapping again"
        ) from None


__all__ = [
    "ApprovedMapping", "CdtCategory", "ChildSource", "CloseRule", "Condition", "FieldError", "FieldMap",
    "KeyMap", "LookupMap", "MappingSpec", "OBJECTS", "PartyMap", "Picklist", "PicklistOption", "TARGET_TYPES",
    "TableMap", "TransformRef", "approve", "check_mapping", "default_mapping", "default_mapping_data",
    "load_approved", "parse_mapping", "revise",
]
