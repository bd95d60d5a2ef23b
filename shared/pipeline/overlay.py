"""The practice's current source during cutover: the full bundle overlaid with the delta bundles in order.

A delta carries only changed rows, but lists every key the source holds now (keys parts), so:
- a row's current version is the one of the newest bundle in the chain that carries it;
- a key is deleted when the newest delta's key list lacks it.
`CurrentSource` answers both for one chain (the full bundle, then the deltas named). Delta loads use it
for the children of their rows (the lines of a changed treatment plan) and for which parents exist (a
new appointment's new patient); the go-live reconciliation uses it to count and diff the source as it
is now, and `materialise` writes that view as a bundle of its own, so the sample diff reads it unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shared.dentrix.manifest import MANIFEST_NAME, PartEntry
from shared.dentrix.reader import UNPARSED, BundleReader, LoadedRow
from shared.dentrix.tables import get_table
from shared.mapping.spec import MappingSpec, TableMap
from shared.pipeline.bundle import open_bundle
from shared.runtime import Runtime
from shared.state.migrations import Migration
from shared.state.upload_sas import bundle_container

PART_ROWS = 5000


def chain_for(migration: Migration, bundle_id: str | None = None) -> list[str]:
    """The delta ids applied so far, then `bundle_id` (the delta being applied) unless already among them."""
    applied = migration.cutover.applied_ids() if migration.cutover else []
    if bundle_id and bundle_id not in applied:
        return [*applied, bundle_id]
    if bundle_id:
        return applied[: applied.index(bundle_id) + 1]
    return applied


class CurrentSource:
    """Rows as the practice holds them after the deltas of `chain` (ids in applied order)."""

    def __init__(self, rt: Runtime, migration: Migration, chain: list[str]) -> None:
        self.full = open_bundle(rt, migration)
        self.deltas = [open_bundle(rt, migration, bundle_id) for bundle_id in chain]
        self._keys: dict[str, set[str] | None] = {}

    def current_keys(self, table: str) -> set[str] | None:
        """Every key `table` holds now (the newest delta's key list); None without deltas (all rows are)."""
        if not self.deltas:
            return None
        if table not in self._keys:
            self._keys[table] = {key for key, _ in self.deltas[-1].iter_keys(table)}
        return self._keys[table]

    def _newer(self, table: str) -> list[BundleReader]:
        return [d for d in self.deltas if table in {t.name for t in d.manifest.tables}]

    def rows(self, table: str, keep: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, dict[str, Any]]:
        """key -> current row (validated, as a dict) of `table`; `keep(row)` filters (children of some parents)."""
        out: dict[str, dict[str, Any]] = {}
        for reader in [self.full, *self._newer(table)]:
            for item in reader.iter_table(table):
                if isinstance(item, LoadedRow):
                    row = item.row.model_dump()
                    if keep is None or keep(row):
                        out[item.key] = row
                    else:
                        out.pop(item.key, None)  # a newer version no longer belongs to the parents asked for
        alive = self.current_keys(table)
        return out if alive is None else {k: v for k, v in out.items() if k in alive}

    def items(self, table: str, keys: set[str]) -> list[LoadedRow]:
        """The current rows of `table` with these keys (those still there), as the reader yields them."""
        out: dict[str, LoadedRow] = {}
        for reader in [self.full, *self._newer(table)]:
            for item in reader.iter_table(table):
                if isinstance(item, LoadedRow) and item.key in keys:
                    out[item.key] = item
        alive = self.current_keys(table)
        return [out[k] for k in sorted(out) if alive is None or k in alive]

    def raw_rows(self, table: str) -> Iterator[dict[str, Any]]:
        """Current rows of `table` as stored (unvalidated JSON objects), projected on the full bundle's columns."""
        entry = self.full.table(table)
        columns = [c.name for c in entry.columns]
        key_column = get_table(table).key
        merged: dict[str, dict[str, Any]] = {}
        for reader in [self.full, *self._newer(table)]:
            own = reader.table(table)
            for part in own.parts:
                for obj in reader._parse_part(own, part):  # noqa: SLF001 - the raw lines, before validation
                    row = {name: obj.get(name) for name in columns}
                    if obj.get(UNPARSED):
                        row[UNPARSED] = obj[UNPARSED]
                    merged[str(obj.get(key_column))] = row
        alive = self.current_keys(table)
        for key in sorted(merged):
            if alive is None or key in alive:
                yield merged[key]

    def parent_ids(self, spec: MappingSpec, maps: list[TableMap], base: Mapping[str, Any] | None
                   ) -> dict[str, set[str]]:
        """Ids each lookup parent has now: the full bundle's (`base`), plus rows the deltas added that the
        parent map selects, minus keys deleted since."""
        out: dict[str, set[str]] = {}
        for name in sorted({lookup.parent for t in maps for lookup in t.lookups}):
            parent = spec.table(name)
            if parent.action not in ("upsert", "update") or len(parent.key.columns) != 1:
                continue
            ids = set((base or {}).get(name) or set())
            for delta in self._newer(parent.source_table):
                ids |= {item.key for item in delta.iter_table(parent.source_table)
                        if isinstance(item, LoadedRow) and parent.selects(item.row.model_dump())}
            alive = self.current_keys(parent.source_table)
            out[name] = ids if alive is None else ids & alive
        return out


def children_for(source: CurrentSource, pairs: set[tuple[str, str]], parent_ids: set[str]
                 ) -> dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]]:
    """(child table, parent column) -> parent id -> current child rows, for these parents only."""
    from shared.mapping.rows import index_children

    out: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for child_table, parent_column in sorted(pairs):
        rows = source.rows(child_table, keep=lambda row, c=parent_column: str(row.get(c)) in parent_ids)
        out[(child_table, parent_column)] = index_children(list(rows.values()), parent_column)
    return out


def _gzip(lines: list[str]) -> bytes:
    buffer = io.BytesIO()
    # No name, mtime 0: the same rows give the same bytes (as the agent writes them).
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as fh:
        for line in lines:
            fh.write(line.encode("utf-8") + b"\n")
    return buffer.getvalue()


def materialise(rt: Runtime, migration: Migration, chain: list[str], bundle_id: str) -> str:
    """Write the current source (full bundle + `chain`, deletions applied) as full bundle `bundle_id` in the
    migration's container and return its id. Idempotent (same rows, same bytes). Binaries are not copied:
    the view is for counting and diffing rows, not for attachments."""
    import json

    source = CurrentSource(rt, migration, chain)
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration.migration_id))
    prefix = f"{migration.migration_id}/{bundle_id}/"
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    tables = []
    for entry in source.full.manifest.tables:
        rows = [encoder.encode(row) for row in source.raw_rows(entry.name)]
        parts: list[PartEntry] = []
        for number, start in enumerate(range(0, max(len(rows), 1), PART_ROWS)):
            chunk = rows[start : start + PART_ROWS]
            data = _gzip(chunk)
            file = f"tables/{entry.name}/part-{number:05d}.jsonl.gz"
            container.upload_blob(prefix + file, data, overwrite=True)
            parts.append(PartEntry(file=file, rows=len(chunk), sha256=hashlib.sha256(data).hexdigest(),
                                   bytes=len(data)))
        tables.append(entry.model_copy(update={"rows": len(rows), "parts": parts, "keys": [], "key_count": 0,
                                               "changes": [], "change_counts": None}))
    last = source.deltas[-1].manifest if source.deltas else source.full.manifest
    manifest = source.full.manifest.model_copy(update={"bundle_id": bundle_id, "tables": tables,
                                                       "watermark": last.watermark})
    container.upload_blob(prefix + MANIFEST_NAME, manifest.model_dump_json().encode(), overwrite=True)
    return bundle_id
