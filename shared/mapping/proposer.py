"""The mapping proposer: extend the default map to what discovery found in this practice's bundle.

Discovery reports, per bundle table, each column's inferred type, null rate, distinct count, longest
value and the share of values matching known patterns (e-mail, phone, date, CDT code ...). The
proposer keeps the default map and, for every column it does not use:
- a *renamed* column (a default source column missing from the bundle, and a present column whose
  name is close to it) takes over the default's fields, lookups and keys;
- a *custom* column becomes a new custom column on the table's target, typed and transformed from
  its inferred type and value patterns.
Each proposal carries a confidence in [0, 1] and a reason; those under the threshold, and those the
map's rules refuse, are left unmapped for the user. Only names, types and shares are read, never values.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.mapping.contract import SourceContract, standard_tables
from shared.mapping.spec import FieldMap, MappingSpec, TableMap, TransformRef, check_mapping

PatternName = Literal["email", "phone", "date", "datetime", "cdt_code", "money", "tooth", "surface", "zip", "integer"]
InferredType = Literal["string", "integer", "decimal", "boolean", "date", "datetime", "money", "object", "null"]

_FACTS = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)


class ColumnFacts(BaseModel):
    """What discovery learned about one bundle column (no values)."""

    model_config = _FACTS

    name: str
    inferred_type: InferredType
    null_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    distinct_count: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    patterns: dict[PatternName, float] = Field(default_factory=dict)
    """Share (0..1) of the non-null values matching each pattern."""
    custom: bool = False
    """Not in the bundle registry: a practice-defined column."""


class TableFacts(BaseModel):
    model_config = _FACTS

    name: str
    row_count: int = Field(default=0, ge=0)
    columns: list[ColumnFacts] = Field(default_factory=list)


class DiscoveryFacts(BaseModel):
    """The proposer's input: discovery's column profile of one bundle."""

    model_config = _FACTS

    tables: list[TableFacts]


class FieldProposal(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["renamed", "custom"]
    source_table: str
    source_column: str
    map: str | None
    """The table map it would join (None when the table has no writable map)."""
    target: str | None
    type: str | None
    transform: TransformRef | None
    replaces: str | None = None
    """renamed: the default source column it stands in for."""
    confidence: float
    reason: str
    accepted: bool


class Proposal(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: MappingSpec
    proposals: list[FieldProposal]
    """Accepted proposals (already in `spec`)."""
    unmapped: list[FieldProposal]
    """Left for the user: low confidence or refused by the map's rules (reason says which)."""


_KIND_OF_TYPE = {
    "string": "text", "integer": "int", "decimal": "text", "boolean": "bool", "date": "date",
    "datetime": "datetime", "money": "money", "object": "json", "null": "text",
}

_SYNONYMS = [
    {"email", "emailaddr", "emailaddress", "mail"},
    {"phone", "tel", "telephone", "phonenumber"},
    {"mobile", "cell", "pager", "mobilephone", "cellphone"},
    {"zip", "zipcode", "postal", "postalcode"},
    {"birth", "dob", "birthdate", "dateofbirth"},
    {"first", "firstname", "fname", "given"},
    {"last", "lastname", "lname", "surname"},
]


def source_contract_for(facts: DiscoveryFacts, base: SourceContract | None = None) -> SourceContract:
    """The bundle contract plus the custom columns discovery found (so a map may name them)."""
    base = base or SourceContract.from_registry()
    extra = [
        (t.name, c.name, _KIND_OF_TYPE[c.inferred_type])
        for t in facts.tables for c in t.columns if base.column(t.name, c.name) is None
    ]
    return base.with_custom_columns(extra)


def max_lengths_for(facts: DiscoveryFacts) -> dict[tuple[str, str], int]:
    """(table, column) -> longest value, for `parse_mapping`'s "type cannot hold the data" check."""
    return {(t.name, c.name): c.max_length for t in facts.tables for c in t.columns if c.max_length is not None}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def name_similarity(a: str, b: str) -> float:
    """0..1 closeness of two column names (normalised; synonyms count as equal)."""
    na, nb = _norm(a), _norm(b)
    if na == nb:
        return 1.0
    score = SequenceMatcher(None, na, nb).ratio()
    tokens_a = set(re.split(r"[_\W]+", a.lower())) | {na}
    tokens_b = set(re.split(r"[_\W]+", b.lower())) | {nb}
    for group in _SYNONYMS:
        if tokens_a & group and tokens_b & group:
            rest_a = {t for t in tokens_a - group if t and t != na}
            rest_b = {t for t in tokens_b - group if t and t != nb}
            score = max(score, 0.9 if rest_a == rest_b else 0.75)
    return score


def _used_columns(spec: MappingSpec, table: str) -> set[str]:
    used: set[str] = set()
    for t in spec.tables:
        if t.source_table != table:
            continue
        used.update(t.key.columns)
        used.update(t.where)
        if t.owner:
            used.add(t.owner)
        for f in t.fields:
            for s in f.source:
                if isinstance(s, str):
                    used.add(s.split(">", 1)[0].strip())
        used.update(lk.source.split(">", 1)[0].strip() for lk in t.lookups)
        used.update(p.source.split(">", 1)[0].strip() for p in t.parties)
    return used


def _compatible(kind_old: str, inferred: str) -> bool:
    return _KIND_OF_TYPE.get(inferred, "text") == kind_old or (kind_old in ("id", "text") and inferred in ("string", "integer"))


def _custom_field(col: ColumnFacts) -> tuple[str, TransformRef, float, str, int | None] | None:
    """(type, transform, confidence, reason, max_length) for a custom column, or None if unmappable."""
    p = col.patterns
    name = col.name.lower()
    best = max(p.items(), key=lambda kv: kv[1], default=(None, 0.0))
    hint = 0.05
    if best[0] == "email" and best[1] >= 0.8:
        return "string", TransformRef(name="email"), min(0.99, best[1] + (hint if "mail" in name else 0)), \
            f"{best[1]:.0%} of values look like e-mail addresses", 100
    if best[0] == "phone" and best[1] >= 0.8:
        return "string", TransformRef(name="phone"), min(0.99, best[1] + (hint if "phone" in name else 0)), \
            f"{best[1]:.0%} of values look like phone numbers", 50
    if best[0] == "cdt_code" and best[1] >= 0.8:
        return "string", TransformRef(name="cdt_code"), best[1], f"{best[1]:.0%} of values are CDT codes", 10
    t = col.inferred_type
    if t == "money" or (t == "integer" and name.endswith("_cents")):
        return "money", TransformRef(name="cents_to_money"), 0.85, "integer cents (money) column", None
    if t == "date":
        return "date", TransformRef(name="date_only"), 0.85, "date column", None
    if t == "datetime":
        return "datetime", TransformRef(name="local_to_utc"), 0.85, "local date-time column (converted to UTC)", None
    if t == "boolean":
        return "boolean", TransformRef(name="boolean"), 0.8, "yes/no column", None
    if t == "integer":
        return "integer", TransformRef(name="integer"), 0.75, "whole-number column", None
    if t in ("string", "decimal"):
        length = col.max_length or 0
        if length > 4000:
            return "memo", TransformRef(name="trim"), 0.7, "long text column", min(1_048_576, max(2000, length))
        return "string", TransformRef(name="trim"), 0.7, "text column", max(100, length) if length else 100
    return None


def _target_name(prefix: str, column: str, taken: set[str]) -> str:
    base = f"{prefix}_" + re.sub(r"[^a-z0-9]", "", column.lower())[:40]
    if base == f"{prefix}_":
        base = f"{prefix}_custom"
    name, n = base, 2
    while name in taken:
        name = f"{base[:40]}{n}"
        n += 1
    return name


def _host_map(spec: MappingSpec, table: str) -> TableMap | None:
    std = standard_tables()
    for t in spec.enabled_tables():
        if t.source_table != table or t.action not in ("upsert", "update") or t.where:
            continue
        if t.target_table in std and not std[t.target_table].custom_columns:
            continue
        return t
    return None


def propose(facts: DiscoveryFacts, base: MappingSpec, threshold: float = 0.6) -> Proposal:
    """Extend `base` (normally the default map) to this bundle. Deterministic for the same input."""
    contract = source_contract_for(facts)
    registry = SourceContract.from_registry()
    data = base.model_dump(mode="json", by_alias=True)
    accepted: list[FieldProposal] = []
    unmapped: list[FieldProposal] = []
    taken: dict[str, set[str]] = {}
    for t in base.tables:
        taken.setdefault(t.target_table, set()).update(f.target for f in t.fields)
        taken[t.target_table].update(lk.nav.lower() for lk in t.lookups)

    for tf_ in facts.tables:
        if not registry.has_table(tf_.name):
            continue
        present = {c.name for c in tf_.columns}
        used = _used_columns(base, tf_.name)
        missing = sorted(c for c in used if c not in present and registry.column(tf_.name, c) is not None)
        renamed_to: dict[str, str] = {}
        for col in tf_.columns:
            if col.name in used or registry.column(tf_.name, col.name) is not None:
                continue  # used, or a known Dentrix column the default leaves out on purpose
            # renamed default column?
            best, score = None, 0.0
            for old in missing:
                if old in renamed_to.values():
                    continue
                old_kind = registry.column(tf_.name, old).kind  # type: ignore[union-attr]
                if not _compatible(old_kind, col.inferred_type):
                    continue  # a different kind of value is not the same column under a new name
                s = name_similarity(col.name, old)
                if s > score:
                    best, score = old, s
            if best is not None and score >= threshold:
                renamed_to[col.name] = best
                accepted.append(FieldProposal(
                    kind="renamed", source_table=tf_.name, source_column=col.name, map=None, target=None, type=None,
                    transform=None, replaces=best, confidence=round(score, 3),
                    reason=f"the default map reads {best}, which this bundle lacks; {col.name} is the closest name",
                    accepted=True,
                ))
                continue
            host = _host_map(base, tf_.name)
            shape = _custom_field(col) if col.null_rate < 1.0 else None
            if host is None or shape is None:
                why = ("the column is always empty" if col.null_rate >= 1.0 else
                       "no writable map for this table takes custom columns" if host is None else
                       "its type cannot be mapped")
                unmapped.append(FieldProposal(
                    kind="custom", source_table=tf_.name, source_column=col.name, map=host.name if host else None,
                    target=None, type=None, transform=None, confidence=0.0, reason=why, accepted=False,
                ))
                continue
            typ, transform, conf, reason, max_len = shape
            if col.distinct_count is not None and col.distinct_count <= 1 and tf_.row_count > 1:
                conf, reason = min(conf, 0.3), reason + "; but it holds a single value"
            if col.null_rate > 0.95:
                conf, reason = min(conf, 0.4), reason + "; but it is almost always empty"
            target = _target_name(base.publisher_prefix, col.name, taken.setdefault(host.target_table, set()))
            prop = FieldProposal(
                kind="custom", source_table=tf_.name, source_column=col.name, map=host.name, target=target, type=typ,
                transform=transform, confidence=round(conf, 3), reason=reason, accepted=conf >= threshold,
            )
            if not prop.accepted:
                unmapped.append(prop)
                continue
            taken[host.target_table].add(target)
            field = FieldMap(source=[col.name], target=target, type=typ, transform=transform, max_length=max_len,
                             display_name=col.name.replace("_", " ").capitalize())
            for tm in data["tables"]:
                if tm["name"] == host.name:
                    tm["fields"].append(field.model_dump(mode="json", by_alias=True, exclude_none=True))
            accepted.append(prop)
        if renamed_to:
            _apply_renames(data, tf_.name, {old: new for new, old in renamed_to.items()})

    spec = MappingSpec.model_validate(data)
    # Drop any custom proposal the map's own rules refuse (e.g. a name clash), keeping the rest.
    errors = check_mapping(spec, contract)
    if errors:
        bad_targets = set()
        for e in errors:
            if len(e.loc) >= 4 and e.loc[0] == "tables" and e.loc[2] == "fields":
                tm = spec.tables[int(e.loc[1])]
                bad_targets.add((tm.name, tm.fields[int(e.loc[3])].target))
        keep, refused = [], []
        for p in accepted:
            (refused if p.kind == "custom" and (p.map, p.target) in bad_targets else keep).append(p)
        for p in refused:
            for tm in data["tables"]:
                if tm["name"] == p.map:
                    tm["fields"] = [f for f in tm["fields"] if f["target"] != p.target]
            unmapped.append(p.model_copy(update={"accepted": False, "reason": p.reason + "; refused by the map rules"}))
        accepted = keep
        spec = MappingSpec.model_validate(data)
        if check_mapping(spec, contract):
            # What is left comes from renames: keep the default's own column names for those tables.
            for p in [p for p in accepted if p.kind == "renamed"]:
                _apply_renames(data, p.source_table, {p.source_column: p.replaces or p.source_column})
                accepted.remove(p)
                unmapped.append(p.model_copy(update={"accepted": False,
                                                     "reason": p.reason + "; refused by the map rules"}))
            spec = MappingSpec.model_validate(data)
    return Proposal(spec=spec, proposals=accepted, unmapped=unmapped)


def _apply_renames(data: dict[str, Any], table: str, renames: dict[str, str]) -> None:
    def fix(path: str) -> str:
        head, sep, rest = path.partition(">")
        return renames.get(head.strip(), head) + sep + rest

    for tm in data["tables"]:
        if tm["source_table"] != table:
            continue
        tm["key"]["columns"] = [renames.get(c, c) for c in tm["key"]["columns"]]
        tm["where"] = {renames.get(k, k): v for k, v in tm.get("where", {}).items()}
        if tm.get("owner"):
            tm["owner"] = renames.get(tm["owner"], tm["owner"])
        for f in tm["fields"]:
            f["source"] = [fix(s) if isinstance(s, str) else s for s in f["source"]]
        for lk in tm["lookups"]:
            lk["source"] = fix(lk["source"])
        for p in tm["parties"]:
            p["source"] = fix(p["source"])


__all__ = [
    "ColumnFacts", "DiscoveryFacts", "FieldProposal", "Proposal", "TableFacts", "max_lengths_for",
    "name_similarity", "propose", "source_contract_for",
]
