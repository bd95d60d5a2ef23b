"""What a field map may name: the bundle's tables and columns (source) and Dataverse's standard ones (target).

The source side is the bundle engineer's registry (`shared.dentrix.tables`) plus the practice's
custom columns that discovery found; the target side is `data/dataverse_standard.yaml`. Source
paths may hop through reference tables: `insured_id>insured.ins_plan_id>insurance_carrier.group_number`
reads `insured_id` from the row, finds that row of `insured` by its key, reads `ins_plan_id`, and
so on. Each hop must land on the next table's key column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from shared.dentrix import tables as bundle

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class SourceColumn:
    """One bundle column as the map sees it."""

    table: str
    name: str
    kind: str
    """A `shared.dentrix.tables.TColumnKind` (id, text, int, bool, money, date, datetime, ...)."""
    ref: str | None = None
    custom: bool = False


@dataclass(frozen=True)
class PathHop:
    table: str
    column: str


@dataclass
class SourceContract:
    """Bundle tables -> columns, keys, plus custom columns discovered in a practice's bundle."""

    columns: dict[str, dict[str, SourceColumn]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_registry(cls) -> SourceContract:
        """The contract as the bundle registry publishes it (no custom columns)."""
        out = cls()
        for t in bundle.TABLES:
            out.keys[t.name] = t.key
            out.columns[t.name] = {c.name: SourceColumn(t.name, c.name, c.kind, c.ref) for c in t.columns}
        return out

    def with_custom_columns(self, custom: Iterable[tuple[str, str, str]]) -> SourceContract:
        """A copy that also knows (table, column, kind) custom columns; unknown tables are ignored."""
        out = SourceContract({t: dict(cols) for t, cols in self.columns.items()}, dict(self.keys))
        for table, name, kind in custom:
            if table in out.columns and name not in out.columns[table]:
                out.columns[table][name] = SourceColumn(table, name, kind, None, custom=True)
        return out

    def has_table(self, table: str) -> bool:
        return table in self.columns

    def column(self, table: str, name: str) -> SourceColumn | None:
        return self.columns.get(table, {}).get(name)

    def resolve(self, table: str, path: str) -> tuple[SourceColumn | None, str | None]:
        """The column a source path ends on, or (None, error code). Codes: `unknown_source_column`,
        `unknown_reference_table`, `reference_not_a_key`."""
        first, *hops = path.split(">")
        col = self.column(table, first.strip())
        if col is None:
            return None, "unknown_source_column"
        for hop in hops:
            ref_table, _, ref_col = hop.strip().partition(".")
            if ref_table not in self.columns:
                return None, "unknown_reference_table"
            if col.ref is not None and col.ref != ref_table:
                return None, "reference_not_a_key"
            nxt = self.column(ref_table, ref_col)
            if nxt is None:
                return None, "unknown_source_column"
            col = nxt
        return col, None


def parse_path(path: str) -> tuple[str, list[PathHop]]:
    """`a>t.b>u.c` -> ("a", [PathHop(t, b), PathHop(u, c)])."""
    first, *hops = path.split(">")
    out = []
    for hop in hops:
        t, _, c = hop.strip().partition(".")
        out.append(PathHop(t, c))
    return first.strip(), out


@dataclass(frozen=True)
class StandardColumn:
    name: str
    type: str
    max_length: int | None = None
    options: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StandardTable:
    name: str
    entity_set: str
    primary_id: str
    has_notes: bool
    columns: dict[str, StandardColumn]
    navs: dict[str, str]
    party_list: str | None = None
    custom_columns: bool = True
    """False where Dataverse refuses new columns (annotation)."""
    source_key: bool = True
    """Rows carry `<prefix>_sourceid` as an alternate key. False (always when `custom_columns` is)
    means rows are addressed by a primary key derived from the source id (`rows.record_ref`)."""


@lru_cache(maxsize=1)
def standard_tables() -> dict[str, StandardTable]:
    """The standard Dataverse tables and columns a map may use (data/dataverse_standard.yaml)."""
    raw: dict[str, Any] = yaml.safe_load((DATA_DIR / "dataverse_standard.yaml").read_text(encoding="utf-8"))
    out: dict[str, StandardTable] = {}
    for name, t in raw["tables"].items():
        cols = {
            c: StandardColumn(c, d["type"], d.get("max_length"), tuple(d["options"]) if "options" in d else None)
            for c, d in t["columns"].items()
        }
        out[name] = StandardTable(
            name, t["entity_set"], t["primary_id"], bool(t["has_notes"]), cols, dict(t["navs"] or {}),
            t.get("party_list"), bool(t.get("custom_columns", True)),
            bool(t.get("custom_columns", True)) and bool(t.get("source_key", True)),
        )
    return out


__all__ = ["PathHop", "SourceColumn", "SourceContract", "StandardColumn", "StandardTable", "parse_path",
           "standard_tables"]
