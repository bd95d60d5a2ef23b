"""The schema plan: from an approved field map to the Dataverse schema it needs, checked against the
customer's licence, with every provider resolved to an owner.

`plan_schema` builds a `SchemaSpec` (the contract `shared/dataverse/schema.py` builds from: custom
tables, custom columns on contact and appointment, global choices, lookups, source-key alternate
keys) and a report a person approves: the custom-table count against the licence (Sales
Professional allows 15 per app; Enterprise has no limit), and providers matched to systemusers by
e-mail. A match to a disabled user counts as unresolved, because activities owned by inactive users
fail silently in Dynamics; unresolved providers are listed with the active users that may stand in
as the fallback owner. A plan with problems is not approvable, and `require_approvable` raises
`SchemaPlanRefused` saying what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.dataverse.metadata import (
    ColumnSpec,
    KeySpec,
    OptionSetSpec,
    OptionSpec,
    RelationshipSpec,
    SchemaSpec,
    TableSpec,
)
from shared.errors import SchemaPlanRefused
from shared.mapping import transforms as tf
from shared.mapping.contract import standard_tables
from shared.mapping.spec import (
    COMMON_COLUMNS,
    DEFAULT_MEMO_LENGTH,
    DEFAULT_STRING_LENGTH,
    ApprovedMapping,
    FieldMap,
    MappingSpec,
    TableMap,
)

Licence = Literal["sales_professional", "sales_enterprise"]
LICENCE_LIMITS: dict[str, int | None] = {"sales_professional": 15, "sales_enterprise": None}
"""Custom tables allowed per licence (Dynamics 365 Licensing Guide; dataverse.md §7.4)."""
LICENCE_LABELS = {"sales_professional": "Dynamics 365 Sales Professional", "sales_enterprise": "Dynamics 365 Sales Enterprise"}

_PRIVATE = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class ProviderRef(BaseModel):
    """A Dentrix provider as the owner resolution sees it."""

    model_config = _PRIVATE

    provider_id: str
    email: str | None = None


class SystemUserRef(BaseModel):
    """A Dataverse systemuser (`GET systemusers?$select=systemuserid,internalemailaddress,isdisabled`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    systemuserid: str
    internalemailaddress: str | None = None
    isdisabled: bool = False


OwnerStatus = Literal["resolved", "no_email", "no_match", "disabled", "ambiguous"]


class OwnerResolution(BaseModel):
    model_config = _PRIVATE

    provider_id: str
    status: OwnerStatus
    systemuserid: str | None = None
    """The matched active user (resolved), else None."""


class PlanProblem(BaseModel):
    model_config = _PRIVATE

    code: Literal["licence_exceeded", "owners_unresolved", "fallback_owner_invalid"]
    message: str


class SchemaPlanReport(BaseModel):
    """What a person reads before approving the schema plan."""

    model_config = _PRIVATE

    licence: Licence
    custom_tables: list[str]
    custom_table_count: int
    custom_table_limit: int | None
    fits_licence: bool
    clinical_tables: list[str]
    owners: list[OwnerResolution]
    unresolved_providers: list[str]
    fallback_owner: str | None
    fallback_owner_choices: list[str]
    """Active systemuser ids that may be chosen as the fallback owner."""
    problems: list[PlanProblem]

    @property
    def approvable(self) -> bool:
        return not self.problems


class SchemaPlan(BaseModel):
    """The approved map's schema, its report, and the provider -> owner map the loader uses."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    mapping_version: int
    mapping_hash: str
    schema_spec: SchemaSpec = Field(alias="schema")
    report: SchemaPlanReport
    owner_map: dict[str, str]
    """Provider id -> systemuser id for every provider, the fallback owner standing in for the unresolved."""

    @property
    def approvable(self) -> bool:
        return self.report.approvable

    def require_approvable(self) -> None:
        """Raises `SchemaPlanRefused` listing what to change when the plan has problems."""
        if self.report.problems:
            raise SchemaPlanRefused(
                "schema plan refused: " + " ".join(p.message for p in self.report.problems),
                problems=[p.model_dump() for p in self.report.problems],
            )


# --- owners -------------------------------------------------------------------------------------


def _norm_email(value: str | None) -> str | None:
    try:
        return tf.email([value], {}, tf.TransformContext())
    except tf.TransformFailed:
        return None


def providers_from_rows(spec: MappingSpec, rows: Iterable[Mapping[str, Any]]) -> list[ProviderRef]:
    """ProviderRefs from bundle provider rows, reading the e-mail from the column the map compares
    with `internalemailaddress` (the resolve map's field)."""
    resolve = next((t for t in spec.enabled_tables() if t.action == "resolve"), None)
    key = resolve.key.columns[0] if resolve else "provider_id"
    email_col = "email"
    if resolve is not None:
        for f in resolve.fields:
            if f.target == "internalemailaddress" and f.source and isinstance(f.source[0], str):
                email_col = f.source[0]
    out = []
    for r in rows:
        pid = r.get(key)
        if pid is None or str(pid).strip() == "":
            continue
        raw = r.get(email_col)
        out.append(ProviderRef(provider_id=str(pid).strip(), email=str(raw) if raw is not None else None))
    return out


def resolve_owners(providers: Iterable[ProviderRef], users: Iterable[SystemUserRef]) -> list[OwnerResolution]:
    """Each provider matched to one active systemuser by e-mail (case-insensitive)."""
    active: dict[str, list[str]] = {}
    disabled: set[str] = set()
    for u in users:
        e = _norm_email(u.internalemailaddress)
        if e is None:
            continue
        if u.isdisabled:
            disabled.add(e.lower())
        else:
            active.setdefault(e.lower(), []).append(u.systemuserid)
    out = []
    for p in providers:
        e = _norm_email(p.email)
        if e is None:
            out.append(OwnerResolution(provider_id=p.provider_id, status="no_email"))
            continue
        matches = active.get(e.lower(), [])
        if len(matches) == 1:
            out.append(OwnerResolution(provider_id=p.provider_id, status="resolved", systemuserid=matches[0]))
        elif len(matches) > 1:
            out.append(OwnerResolution(provider_id=p.provider_id, status="ambiguous"))
        elif e.lower() in disabled:
            out.append(OwnerResolution(provider_id=p.provider_id, status="disabled"))
        else:
            out.append(OwnerResolution(provider_id=p.provider_id, status="no_match"))
    return out


# --- schema -------------------------------------------------------------------------------------


def _label(target: str, prefix: str) -> str:
    base = target[len(prefix) + 1:] if target.startswith(prefix + "_") else target
    return base.replace("_", " ").capitalize() or target


def _column(f: FieldMap, spec: MappingSpec, option_set_names: dict[str, str]) -> ColumnSpec:
    common: dict[str, Any] = {
        "schema_name": f.schema_name or f.target,
        "display_name": f.display_name or _label(f.target, spec.publisher_prefix),
    }
    if f.type in ("string", "memo"):
        default = DEFAULT_STRING_LENGTH if f.type == "string" else DEFAULT_MEMO_LENGTH
        return ColumnSpec(type=f.type, max_length=f.max_length or default, **common)
    if f.type == "money":
        return ColumnSpec(type="money", precision=2, **common)
    if f.type == "decimal":
        return ColumnSpec(type="decimal", precision=2, **common)
    if f.type == "datetime":
        return ColumnSpec(type="datetime", datetime_behavior="UserLocal", **common)
    if f.type == "date":
        return ColumnSpec(type="datetime", datetime_behavior="DateOnly", **common)
    if f.type == "picklist":
        return ColumnSpec(type="picklist", global_option_set=option_set_names[f.picklist or ""], **common)
    return ColumnSpec(type=f.type, **common)


def _written(spec: MappingSpec) -> list[TableMap]:
    return [t for t in spec.enabled_tables() if t.action in ("upsert", "update")]


def build_schema_spec(spec: MappingSpec, solution_unique_name: str | None = None) -> SchemaSpec:
    """The `SchemaSpec` an approved map needs. Deterministic: the same map gives the same spec."""
    prefix = spec.publisher_prefix
    std = standard_tables()
    maps = _written(spec)
    sid_col = spec.source_id_column

    used_picklists: list[str] = []
    for t in maps:
        for f in t.fields:
            if f.type == "picklist" and f.target.startswith(prefix + "_") and f.picklist not in used_picklists:
                used_picklists.append(f.picklist or "")
    option_set_names = {name: f"{prefix}_{name}" for name in used_picklists}
    option_sets = [
        OptionSetSpec(
            name=option_set_names[name],
            display_name=spec.picklists[name].display_name,
            options=[OptionSpec(value=o.value, label=o.label) for o in spec.picklists[name].options],
        )
        for name in used_picklists
    ]

    order: list[str] = []
    columns: dict[str, dict[str, ColumnSpec]] = {}
    primary: dict[str, ColumnSpec] = {}
    meta: dict[str, TableMap] = {}
    has_notes: set[str] = set()
    keyed: set[str] = set()
    relationships: dict[tuple[str, str], RelationshipSpec] = {}

    for t in maps:
        target = t.target_table
        if target not in columns:
            order.append(target)
            columns[target] = {}
        is_std = target in std
        if not is_std and target not in meta:
            meta[target] = t
        if t.has_notes:
            has_notes.add(target)
        if t.action == "upsert" and (not is_std or std[target].source_key):
            keyed.add(target)
        for f in t.fields:
            if not f.target.startswith(prefix + "_") or f.target in COMMON_COLUMNS:
                continue
            col = _column(f, spec, option_set_names)
            if f.target == f"{prefix}_name" and not is_std:
                primary.setdefault(target, col)
                continue
            columns[target].setdefault(col.logical_name, col)
        for lk in t.lookups:
            if not lk.nav.startswith(prefix + "_"):
                continue
            parent_target = spec.table(lk.parent).target_table
            rel_key = (target, lk.nav.lower())
            if rel_key in relationships:
                continue
            relationships[rel_key] = RelationshipSpec(
                schema_name=f"{prefix}_{parent_target.removeprefix(prefix + '_')}_{target.removeprefix(prefix + '_')}_{lk.nav.lower().removeprefix(prefix + '_')}",
                referenced_table=parent_target,
                referencing_table=target,
                lookup_schema_name=lk.nav,
                lookup_display_name=lk.display_name or _label(lk.nav.lower(), prefix),
            )
    # Notes regarding a custom table need HasNotes on it (annotation maps binding objectid_<table>).
    for t in spec.enabled_tables():
        if t.target_table == "annotation":
            for lk in t.lookups:
                parent_target = spec.table(lk.parent).target_table
                if parent_target not in std:
                    has_notes.add(parent_target)

    tables: list[TableSpec] = []
    keys: list[KeySpec] = []
    for target in order:
        cols = dict(columns[target])
        if target in keyed:
            cols.setdefault(sid_col, ColumnSpec(
                schema_name=sid_col, display_name="Dentrix source id", type="string", max_length=100,
                description="Dentrix identity of the migrated row (alternate key; every write is an upsert)",
            ))
            keys.append(KeySpec(schema_name=f"{prefix}_{target.removeprefix(prefix + '_')}_sourceid_key",
                                table=target, columns=[sid_col], display_name="Dentrix source id"))
        if target in std:
            if cols:
                tables.append(TableSpec(schema_name=target, existing=True, columns=list(cols.values())))
            continue
        t = meta[target]
        name_col = primary.get(target) or ColumnSpec(
            schema_name=f"{prefix}_name", display_name="Name", type="string", max_length=DEFAULT_STRING_LENGTH
        )
        tables.append(TableSpec(
            schema_name=t.schema_name or target,
            display_name=t.display_name or _label(target, prefix),
            display_collection_name=t.display_collection_name or _label(target, prefix) + "s",
            description=(t.doc or "")[:2000],
            primary_name=name_col,
            has_notes=target in has_notes,
            columns=list(cols.values()),
        ))
    rels = [r for r in relationships.values() if r.referencing_table in {x.logical_name for x in tables}]
    return SchemaSpec(
        publisher_prefix=prefix,
        solution_unique_name=solution_unique_name,
        option_sets=option_sets,
        tables=tables,
        relationships=rels,
        keys=keys,
    )


def plan_schema(
    mapping: ApprovedMapping,
    *,
    licence: Licence,
    providers: Iterable[ProviderRef],
    systemusers: Iterable[SystemUserRef],
    fallback_owner: str | None = None,
    solution_unique_name: str | None = None,
) -> SchemaPlan:
    """The schema plan for an approved map. Never raises for a plan that does not fit: the problems
    are in the report (so the API can show them); call `require_approvable` before building."""
    spec = mapping.spec
    schema = build_schema_spec(spec, solution_unique_name)
    users = list(systemusers)
    limit = LICENCE_LIMITS[licence]
    custom = [t.logical_name for t in schema.tables if not t.existing]
    problems: list[PlanProblem] = []
    if limit is not None and len(custom) > limit:
        optional = [t.name for t in spec.enabled_tables()
                    if t.target_table in custom and t.object not in ("insurance_carrier", "treatment_plan")]
        problems.append(PlanProblem(
            code="licence_exceeded",
            message=(
                f"The plan needs {len(custom)} custom tables and {LICENCE_LABELS[licence]} allows {limit}. "
                f"Disable {len(custom) - limit} of the table maps that create custom tables "
                f"(candidates: {', '.join(optional)}), for example keep clinical notes as notes on the contact, "
                f"or plan for a Dynamics 365 Sales Enterprise licence."
            ),
        ))
    resolutions = resolve_owners(providers, users)
    unresolved = sorted(r.provider_id for r in resolutions if r.status != "resolved")
    active_ids = sorted(u.systemuserid for u in users if not u.isdisabled)
    clinical = [t.name for t in spec.enabled_tables() if t.clinical and t.action in ("upsert", "update")]
    fallback_ok = fallback_owner is not None and fallback_owner in active_ids
    if fallback_owner is not None and not fallback_ok:
        problems.append(PlanProblem(
            code="fallback_owner_invalid",
            message="The chosen fallback owner is not an active systemuser: choose one of fallback_owner_choices.",
        ))
    if unresolved and clinical and not fallback_ok:
        problems.append(PlanProblem(
            code="owners_unresolved",
            message=(
                f"{len(unresolved)} provider(s) have no active systemuser with their e-mail "
                f"({', '.join(unresolved)}); clinical records need a valid owner. Choose a fallback owner "
                f"among the active users, or create or enable users with those e-mails and plan again."
            ),
        ))
    owner_map = {r.provider_id: r.systemuserid for r in resolutions if r.systemuserid}
    if fallback_ok:
        for pid in unresolved:
            owner_map[pid] = fallback_owner  # type: ignore[assignment]
    report = SchemaPlanReport(
        licence=licence,
        custom_tables=custom,
        custom_table_count=len(custom),
        custom_table_limit=limit,
        fits_licence=limit is None or len(custom) <= limit,
        clinical_tables=clinical,
        owners=resolutions,
        unresolved_providers=unresolved,
        fallback_owner=fallback_owner if fallback_ok else None,
        fallback_owner_choices=active_ids,
        problems=problems,
    )
    return SchemaPlan(
        mapping_version=mapping.version,
        mapping_hash=mapping.content_hash,
        schema=schema,
        report=report,
        owner_map=owner_map,
    )


__all__ = [
    "LICENCE_LIMITS", "Licence", "OwnerResolution", "PlanProblem", "ProviderRef", "SchemaPlan", "SchemaPlanReport",
    "SystemUserRef", "build_schema_spec", "plan_schema", "providers_from_rows", "resolve_owners",
]
