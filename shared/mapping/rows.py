"""Turn one bundle row into a Dataverse payload, following one table map of an approved field map.

`transform_row` returns the JSON body for the row's record, with lookups as `<nav>@odata.bind`
strings that address parents by their source key (`/contacts(bw_sourceid='P-123')`) and owners as
`/systemusers(<id>)`, plus a list of `FieldError`s. A fatal error means the row cannot be written
(quarantine it); a non-fatal one means that field was left out. Errors name maps, columns and
rule codes, never values. Nothing here does I/O: the loader supplies reference tables and ids in
the `TransformContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shared.dataverse.writer import row_id
from shared.mapping import transforms as tf
from shared.mapping.contract import PathHop, parse_path, standard_tables
from shared.mapping.spec import (
    COMMON_COLUMNS,
    DEFAULT_MEMO_LENGTH,
    DEFAULT_STRING_LENGTH,
    ApprovedMapping,
    ChildSource,
    FieldError,
    FieldMap,
    MappingSpec,
    TableMap,
)

PARTY_NAV = {"contact": "partyid_contact", "systemuser": "partyid_systemuser"}


class _MissingReference(Exception):
    def __init__(self, table: str) -> None:
        self.table = table


_NOT_FOUND = object()


def make_context(
    mapping: ApprovedMapping | MappingSpec,
    practice_timezone: str,
    *,
    references: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    children: Mapping[tuple[str, str], Mapping[str, list[Mapping[str, Any]]]] | None = None,
    owners: Mapping[str, str] | None = None,
    fallback_owner: str | None = None,
    entity_sets: Mapping[str, str] | None = None,
    parent_ids: Mapping[str, Any] | None = None,
) -> tf.TransformContext:
    """A `TransformContext` for `mapping` (picklists and CDT categories come from the map itself)."""
    spec = mapping.spec if isinstance(mapping, ApprovedMapping) else mapping
    return tf.TransformContext(
        practice_timezone=practice_timezone,
        picklists=spec.picklists,
        cdt_categories=spec.cdt_categories,
        references=references or {},
        children=children or {},
        owners=owners or {},
        fallback_owner=fallback_owner,
        entity_sets=entity_sets or {},
        parent_ids=parent_ids,
        spec=spec,
    )


def reference_tables(spec: MappingSpec) -> set[str]:
    """Bundle tables the loader must load into `TransformContext.references` (path hops)."""
    out: set[str] = set()
    for t in spec.enabled_tables():
        paths: list[str] = [lk.source for lk in t.lookups] + [p.source for p in t.parties]
        if t.close:
            paths += list(t.close.completed_when) + list(t.close.canceled_when)
        for f in t.fields:
            for s in f.source:
                if isinstance(s, ChildSource):
                    paths.append(s.column)
                else:
                    paths.append(s)
        for p in paths:
            out.update(h.table for h in _hops(p)[1])
    return out


def child_tables(spec: MappingSpec) -> set[tuple[str, str]]:
    """(child table, parent column) pairs the loader must index into `TransformContext.children`."""
    return {
        (s.children, s.parent_column)
        for t in spec.enabled_tables() for f in t.fields for s in f.source if isinstance(s, ChildSource)
    }


def index_children(rows: list[Mapping[str, Any]], parent_column: str) -> dict[str, list[Mapping[str, Any]]]:
    """Group child rows by their parent id (for `TransformContext.children`)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        pid = r.get(parent_column)
        if pid is not None:
            out.setdefault(str(pid), []).append(r)
    return out


@lru_cache(maxsize=4096)
def _hops(path: str) -> tuple[str, list[PathHop]]:
    return parse_path(path)


def _path_value(path: str, row: Mapping[str, Any], ctx: tf.TransformContext) -> Any:
    first, hops = _hops(path)
    value = row.get(first)
    for hop in hops:
        if value is None:
            return None
        table = ctx.references.get(hop.table)
        if table is None:
            raise _MissingReference(hop.table)
        ref_row = table.get(str(value))
        if ref_row is None:
            return _NOT_FOUND
        value = ref_row.get(hop.column)
    return value


def source_id(table_map: TableMap, row: Mapping[str, Any]) -> str | None:
    """`<prefix>-<key>` (composite keys joined with "|"), or None when a key column is empty."""
    parts = [row.get(c) for c in table_map.key.columns]
    if any(p is None or str(p).strip() == "" for p in parts):
        return None
    ident = "|".join(str(p).strip() for p in parts)
    return f"{table_map.key.prefix}-{ident}" if table_map.key.prefix else ident


def key_ref(entity_set: str, key_column: str, value: str) -> str:
    """`contacts(bw_sourceid='P-123')`: an alternate-key address (single quotes doubled, OData rules)."""
    return f"{entity_set}({key_column}='{value.replace(chr(39), chr(39) * 2)}')"


def entity_set(ctx: tf.TransformContext, table: str) -> str:
    """The EntitySetName for `table`: as read from Dataverse if the loader gave it, the standard
    one for standard tables, else `<logical name>s` (what Dataverse gives the custom names the
    default map uses; pass the real ones for anything else)."""
    if table in ctx.entity_sets:
        return ctx.entity_sets[table]
    std = standard_tables().get(table)
    return std.entity_set if std else f"{table}s"


def record_key(table_map: TableMap, row: Mapping[str, Any], ctx: tf.TransformContext) -> str | None:
    """The source id of the record this row writes: its own for upserts, the parent's for updates."""
    if table_map.action == "update":
        parent = ctx.spec.table(table_map.key.parent)
        return _parent_key(parent, [row.get(c) for c in table_map.key.columns])
    return source_id(table_map, row)


def _keyed_by_source_id(table: str) -> bool:
    std = standard_tables().get(table)
    return std is None or std.source_key


def derived_id(table: str, sid: str) -> str:
    """The primary key a record of a table without `<prefix>_sourceid` (annotation) gets: the bulk
    writer's deterministic row id, so the same Dentrix row always lands on the same record and the
    loader, the writer and the attachment step all address it alike."""
    return row_id(table, sid)


def record_ref(table_map: TableMap, row: Mapping[str, Any], ctx: tf.TransformContext) -> str | None:
    """The relative URL of the record this row writes, for an upsert `PATCH`:
    `contacts(bw_sourceid='P-1')` (the parent's record for update maps) or `annotations(<uuid5>)`."""
    sid = record_key(table_map, row, ctx)
    if sid is None:
        return None
    target = table_map.target_table
    if _keyed_by_source_id(target):
        return key_ref(entity_set(ctx, target), ctx.spec.source_id_column, sid)
    return f"{entity_set(ctx, target)}({derived_id(target, sid)})"


def _parent_key(parent: TableMap, ident: list[Any]) -> str | None:
    if any(p is None or str(p).strip() == "" for p in ident):
        return None
    text = "|".join(str(p).strip() for p in ident)
    return f"{parent.key.prefix}-{text}" if parent.key.prefix else text


def _cap(table_map: TableMap, f: FieldMap) -> int | None:
    if f.type not in ("string", "memo"):
        return None
    if f.max_length is not None:
        return f.max_length
    std = standard_tables().get(table_map.target_table)
    if std is not None and f.target in std.columns and std.columns[f.target].max_length:
        return std.columns[f.target].max_length
    return DEFAULT_STRING_LENGTH if f.type == "string" else DEFAULT_MEMO_LENGTH


def _owner(table_map: TableMap, row: Mapping[str, Any], ctx: tf.TransformContext) -> str | None:
    provider = row.get(table_map.owner) if table_map.owner else None
    if provider is not None and str(provider).strip() in ctx.owners:
        return ctx.owners[str(provider).strip()]
    return ctx.fallback_owner


def transform_row(
    table_map: TableMap, row: Mapping[str, Any], ctx: tf.TransformContext
) -> tuple[dict[str, Any], list[FieldError]]:
    """The Dataverse payload for one bundle row, and every problem found.

    Upsert maps put the row's source id in `<prefix>_sourceid`; update maps leave it out (see
    `record_key`). `overriddencreatedon` is included: a caller whose upsert turns out to be an update
    must drop it (Dataverse accepts it on create only). Closing an appointment is not in the payload:
    see `final_state`.
    """
    spec: MappingSpec = ctx.spec
    name = table_map.name
    errors: list[FieldError] = []
    payload: dict[str, Any] = {}

    def err(loc: tuple[str | int, ...], code: str, message: str, fatal: bool) -> None:
        errors.append(FieldError(loc=(name, *loc), code=code, message=message, fatal=fatal))

    if table_map.action in ("upsert", "attachment"):
        sid = source_id(table_map, row)
        if sid is None:
            err(("key",), "missing_key", f"{table_map.source_table}: a key column is empty", True)
        elif _keyed_by_source_id(table_map.target_table):
            payload[spec.source_id_column] = sid
        else:
            payload[standard_tables()[table_map.target_table].primary_id] = derived_id(table_map.target_table, sid)
    elif record_key(table_map, row, ctx) is None:
        err(("key",), "missing_key", f"{table_map.source_table}: the parent key column is empty", True)

    for step in _compiled(table_map, ctx):
        target, required = step.target, step.required
        missing_ref = False
        if step.plain is not None:
            values = [row.get(c) for c in step.plain]  # the common case: columns of the row itself
        else:
            try:
                values = [_source_value(table_map, s, row, ctx) for s in step.sources]
            except _MissingReference as exc:
                err((target,), "reference_table_not_loaded", f"reference table {exc.table} was not loaded", True)
                continue
            missing_ref = any(v is _NOT_FOUND for v in values)
            if missing_ref:
                values = [None if v is _NOT_FOUND else v for v in values]
        try:
            value = step.fn(values, step.args, ctx)
        except tf.TransformFailed as exc:
            err((target,), exc.code, f"{target}: value broke rule {exc.code}", required)
            continue
        if value is None:
            if missing_ref:
                err((target,), "reference_not_found", f"{target}: a referenced row is not in the bundle", required)
            elif required:
                err((target,), "required_value_missing", f"{target} is required and empty", True)
            continue
        if step.cap is not None and isinstance(value, str) and len(value) > step.cap:
            err((target,), "too_long", f"{target} holds {step.cap} characters; the value is longer", required)
            continue
        payload[target] = value

    name_col = f"{spec.publisher_prefix}_name"
    if table_map.action == "upsert" and table_map.target_table not in standard_tables() and name_col not in payload:
        sid = payload.get(spec.source_id_column)
        if sid is not None:  # every custom row needs its primary name; the source id is the honest fallback
            payload[name_col] = sid

    if table_map.owner is not None or table_map.clinical:
        owner = _owner(table_map, row, ctx)
        if owner is not None:
            payload["ownerid@odata.bind"] = f"/systemusers({owner})"
        elif table_map.clinical:
            err(("ownerid",), "no_valid_owner",
                "the provider has no active systemuser and no fallback owner was chosen", True)

    for lk in table_map.lookups:
        parent = spec.table(lk.parent)
        try:
            raw = _path_value(lk.source, row, ctx)
        except _MissingReference as exc:
            err((lk.nav,), "reference_table_not_loaded", f"reference table {exc.table} was not loaded", True)
            continue
        bind = _bind(parent, None if raw is _NOT_FOUND else raw, ctx)
        if bind is None:
            had_value = raw is _NOT_FOUND or (raw is not None and str(raw).strip() != "")
            if lk.required:
                code = "orphan" if had_value else "required_lookup_missing"
                err((lk.nav,), code, f"{lk.nav}: the parent {lk.parent} is missing", True)
            elif had_value:
                err((lk.nav,), "parent_missing", f"{lk.nav}: the parent {lk.parent} is not in the bundle", False)
            continue
        payload[f"{lk.nav}@odata.bind"] = bind

    if table_map.parties:
        std = standard_tables()[table_map.target_table]
        parties: list[dict[str, Any]] = []
        for p in table_map.parties:
            parent = spec.table(p.parent)
            raw = _path_value(p.source, row, ctx)
            bind = _bind(parent, None if raw is _NOT_FOUND else raw, ctx)
            if bind is None and parent.action == "resolve" and p.participation == 7:
                bind = f"/systemusers({ctx.fallback_owner})" if ctx.fallback_owner else None
            if bind is None:
                continue
            parties.append({f"{PARTY_NAV[parent.target_table]}@odata.bind": bind, "participationtypemask": p.participation})
        if parties and std.party_list:
            payload[std.party_list] = parties

    return payload, errors


@dataclass(frozen=True)
class _Step:
    target: str
    sources: tuple[Any, ...]
    plain: tuple[str, ...] | None
    """Set when every source is a column of the row itself (no hops, no children): a fast path."""
    fn: Any
    args: Mapping[str, Any]
    required: bool
    cap: int | None


def _compiled(table_map: TableMap, ctx: tf.TransformContext) -> list[_Step]:
    """The map's fields as ready-to-run steps, built once per context (a batch) and map."""
    key = ("steps", table_map.name, id(table_map))
    steps = ctx.cache.get(key)
    if steps is None:
        steps = []
        for f in table_map.fields:
            simple = all(isinstance(s, str) and ">" not in s for s in f.source)
            steps.append(_Step(
                target=f.target,
                sources=tuple(f.source),
                plain=tuple(s.strip() for s in f.source) if simple else None,  # type: ignore[union-attr]
                fn=tf.REGISTRY[f.transform.name].fn,
                args=f.transform.args,
                required=f.required,
                cap=_cap(table_map, f),
            ))
        ctx.cache[key] = steps
    return steps


def _source_value(table_map: TableMap, s: Any, row: Mapping[str, Any], ctx: tf.TransformContext) -> Any:
    if isinstance(s, ChildSource):
        pid = row.get(table_map.key.columns[0])
        kids = ctx.children.get((s.children, s.parent_column), {}).get(str(pid), []) if pid is not None else []
        out = []
        for kid in kids:
            v = _path_value(s.column, kid, ctx)
            if v is not None and v is not _NOT_FOUND:
                out.append(v)
        return out
    return _path_value(s, row, ctx)


def _bind(parent: TableMap, raw: Any, ctx: tf.TransformContext) -> str | None:
    if raw is None or str(raw).strip() == "":
        return None
    ident = str(raw).strip()
    if parent.action == "resolve":
        user = ctx.owners.get(ident)
        return f"/systemusers({user})" if user else None
    if ctx.parent_ids is not None and parent.name in ctx.parent_ids and ident not in ctx.parent_ids[parent.name]:
        return None
    key = _parent_key(parent, [ident])
    assert key is not None
    return "/" + key_ref(entity_set(ctx, parent.target_table), ctx.spec.source_id_column, key)


def final_state(table_map: TableMap, row: Mapping[str, Any], ctx: tf.TransformContext) -> dict[str, int] | None:
    """The closing write for an appointment: canceled (2/4) or completed (1/3), or None to stay open.
    Sent after every other write: closed appointments are read-only (dataverse.md §4.7)."""
    if table_map.close is None:
        return None
    for conds, state in ((table_map.close.canceled_when, {"statecode": 2, "statuscode": 4}),
                         (table_map.close.completed_when, {"statecode": 1, "statuscode": 3})):
        for path, cond in conds.items():
            try:
                value = _path_value(path, row, ctx)
            except _MissingReference:
                continue
            if value is not _NOT_FOUND and value is not None and cond.matches(value):
                return dict(state)
    return None


def split_deferred(payload: dict[str, Any], navs: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(first-pass payload, second-pass binds) for the lookups a dependency cycle defers."""
    later = {k: v for k, v in payload.items() if k.endswith("@odata.bind") and k[: -len("@odata.bind")] in navs}
    first = {k: v for k, v in payload.items() if k not in later}
    return first, later


def create_only_columns() -> set[str]:
    """Columns valid on create only: drop them from a payload whose upsert is an update."""
    return set(COMMON_COLUMNS)


__all__ = [
    "child_tables", "create_only_columns", "entity_set", "final_state", "index_children", "key_ref",
    "derived_id", "make_context", "record_key", "record_ref", "reference_tables", "source_id", "split_deferred", "transform_row",
]
