"""Records that were in Dataverse before the migration: match them, keep their before-images, write them by id.

A table map may declare `match: [emailaddress1, birthdate]`. Before a batch is written, its rows that
were never written by this migration are looked up by those columns among the records that carry no
source key yet (records no Bridgework run wrote): one query per batch, chunked to keep URLs short.
- exactly one record matches (and no other row of the batch claims it): the values the write is about
  to change are read first (nulls included) and kept as the record's before-image; the record is then
  updated by its id with the source key set, so every later run finds it by key like any other;
- several records match, or several rows match one record: none is touched (we do not guess which
  person is meant); the row is written as its own new record and journaled with code
  `ambiguous_match`, so the audit log lists it for someone to merge in Dynamics. Skipping the row
  instead would orphan everything that points at it (a patient's appointments, plans, ledger and the
  second-pass guarantor link would all fail), which costs the practice more than one flagged duplicate;
- no record matches: the row is created as usual.
An update map (insurance columns on the patient's contact) writing into a pre-existing record keeps a
before-image of its own columns too, so rollback can give the record back exactly.

Before-images are patient data: they live in Blob (one document per batch, `rollback/before/...`),
never in the journal (whose rows the audit log streams) and never in logs. A journal row points at
its image as `<document>#<source id>`; the first image of a record is kept for good.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.schema import read_table
from shared.dataverse.writer import TableTarget, WriteRow
from shared.errors import DataverseRecordRejected
from shared.mapping.spec import TableMap
from shared.runtime import Runtime

BEFORE_DIR = "rollback/before"
MAX_FILTER_URL = 6_000
"""URL-encoded characters of one `$filter` (the bulk writer's limit: well under 8 KiB request lines)."""
IN_FLIGHT = 8
BIND = "@odata.bind"
LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"


@dataclass
class Matches:
    """What the match query found for a batch's rows."""

    matched: dict[str, str] = field(default_factory=dict)
    """source key -> id of the one pre-existing record it matches."""
    ambiguous: dict[str, int] = field(default_factory=dict)
    """source key -> how many records (or rows) compete for it."""
    flagged: dict[str, str] = field(default_factory=dict)
    """source key -> reason, of rows an earlier run found ambiguous (and created): the flag stays."""


@dataclass(frozen=True)
class MatchedWrite:
    source_key: str
    target_id: str
    ok: bool
    code: str | None = None
    status: int | None = None


# -- matching ----------------------------------------------------------------------------------------


def _normal(value: Any, kind: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower()
    if kind in ("date", "datetime"):
        return text[:10]  # date-only columns come back as `YYYY-MM-DD` or `YYYY-MM-DDT00:00:00Z`
    if isinstance(value, bool):
        return "true" if value else "false"
    return text


def url_groups(terms: Iterable[str], *, fixed: int = 0, joiner: int = 8,
               limit: int = MAX_FILTER_URL) -> list[list[str]]:
    """Terms in groups whose URL-encoded size (each term plus `joiner`, plus `fixed` per group) stays
    within `limit`; a term too long on its own still gets a group of its own."""
    groups: list[list[str]] = []
    group: list[str] = []
    length = fixed
    for term in terms:
        size = len(quote(term, safe="")) + joiner
        if group and length + size > limit:
            groups.append(group)
            group, length = [], fixed
        group.append(term)
        length += size
    if group:
        groups.append(group)
    return groups


def _or_filters(column: str, values: Iterable[Any], prefix: str = "") -> list[str]:
    """`(<col> eq 'a' or <col> eq 'b' ...)` groups, each short enough for a URL."""
    terms = [f"{column} eq {odata_literal(value)}" for value in sorted({v for v in values if v is not None}, key=str)]
    return [prefix + "(" + " or ".join(group) + ")"
            for group in url_groups(terms, fixed=len(quote(prefix, safe="")))]


async def find_matches(client: DataverseClient, target: TableTarget, table_map: TableMap,
                       rows: list[WriteRow]) -> Matches:
    """Match rows against records without a source key, by every column of the map's match rule."""
    found = Matches()
    if not table_map.match or not target.key_column or not rows:
        return found
    kinds = {f.target: f.type for f in table_map.fields}
    columns = list(table_map.match)
    anchor = next(c for c in columns if kinds.get(c) == "string")
    wanted: dict[str, tuple[str, ...]] = {}
    for row in rows:
        values = tuple(_normal(row.values.get(c), kinds.get(c, "string")) for c in columns)
        if all(v is not None for v in values):  # a row missing a match value is never matched
            wanted[row.source_key] = values  # type: ignore[assignment]
    if not wanted:
        return found
    by_values: dict[tuple[str | None, ...], list[str]] = {}
    anchors = {str(row.values[anchor]).strip() for row in rows if row.source_key in wanted}
    prefix = f"{target.key_column} eq null and "
    for text in _or_filters(anchor, anchors, prefix):
        async for record in client.query(target.entity_set, select=[target.primary_id, *columns], filter=text):
            key = tuple(_normal(record.get(c), kinds.get(c, "string")) for c in columns)
            by_values.setdefault(key, []).append(str(record[target.primary_id]))
    claims: dict[str, list[str]] = {}
    for sid, values in wanted.items():
        hits = sorted(set(by_values.get(values, [])))
        if len(hits) > 1:
            found.ambiguous[sid] = len(hits)
        elif hits:
            claims.setdefault(hits[0], []).append(sid)
    for record_id, sids in claims.items():
        if len(sids) == 1:
            found.matched[sids[0]] = record_id
        else:  # two rows of the practice (twins sharing an e-mail) for one record: do not pick one
            for sid in sids:
                found.ambiguous[sid] = len(sids)
    if found.matched:
        # A row whose own record exists by key already (a run killed before its journal write) is not matched.
        keyed = await existing_keys(client, target, list(found.matched))
        for sid in keyed:
            found.matched.pop(sid, None)
    return found


async def existing_keys(client: DataverseClient, target: TableTarget, sids: list[str]) -> set[str]:
    """Which of these source keys are on a record already."""
    assert target.key_column
    out: set[str] = set()
    for text in _or_filters(target.key_column, sids):
        async for record in client.query(target.entity_set, select=[target.primary_id, target.key_column],
                                         filter=text):
            out.add(str(record[target.key_column]))
    return out


# -- before-images -----------------------------------------------------------------------------------


def lookup_attribute(nav: str, custom_prefix: str) -> str:
    """The lookup column a navigation property sets: custom lookups are named after their schema name
    (`bw_GuardianId` -> `bw_guardianid`), standard polymorphic ones carry the target after the column
    (`parentcustomerid_contact` -> `parentcustomerid`)."""
    if nav.lower().startswith(custom_prefix + "_"):
        return nav.lower()
    return nav.split("_", 1)[0].lower()


def _bound_set(value: Any) -> str | None:
    text = str(value or "").lstrip("/")
    return text.split("(", 1)[0] if "(" in text else None


class ImageReader:
    """Reads the current values of the columns a write will set (the before-image), in one query per
    chunk of records. Lookups come back as binds (`<nav>@odata.bind: /<set>(<id>)`, or null) so the
    image can be written back as it is."""

    def __init__(self, client: DataverseClient, target: TableTarget, custom_prefix: str) -> None:
        self.client = client
        self.target = target
        self.prefix = custom_prefix
        self._sets: dict[str, str] = {}

    async def _entity_set(self, table: str) -> str:
        if table not in self._sets:
            info = await read_table(self.client, table)
            self._sets[table] = info.entity_set_name if info else f"{table}s"
        return self._sets[table]

    async def read(self, by: str, records: Mapping[str, str], payloads: Mapping[str, Mapping[str, Any]],
                   skip: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """source key -> image of the columns in its payload (the write about to happen), for records
        found by `by` (the primary id or the key column) equal to `records[source key]`."""
        skipped = set(skip)
        wanted = {sid: [c for c, v in payloads[sid].items() if c not in skipped and not isinstance(v, list)]
                  for sid in records}
        plain = sorted({c for cols in wanted.values() for c in cols if not c.endswith(BIND)})
        navs = sorted({c[: -len(BIND)] for cols in wanted.values() for c in cols if c.endswith(BIND)})
        select = sorted({self.target.primary_id, by, *plain,
                         *(f"_{lookup_attribute(n, self.prefix)}_value" for n in navs)})
        rows: dict[str, dict[str, Any]] = {}
        headers = {"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname",'
                             "odata.maxpagesize=5000"}
        for text in _or_filters(by, records.values()):
            body = await self.client.get_json(self.target.entity_set, {"$select": ",".join(select), "$filter": text},
                                              headers=headers)
            for row in body.get("value", []):
                rows[str(row.get(by)).lower()] = row
        images: dict[str, dict[str, Any]] = {}
        for sid, value in records.items():
            row = rows.get(str(value).lower())
            if row is None:
                continue
            image: dict[str, Any] = {}
            for column in wanted[sid]:
                if not column.endswith(BIND):
                    image[column] = row.get(column)
                    continue
                nav = column[: -len(BIND)]
                attribute = lookup_attribute(nav, self.prefix)
                current = row.get(f"_{attribute}_value")
                if current is None:
                    image[column] = None
                    continue
                written_set = _bound_set(payloads[sid][column])
                table = str(row.get(f"_{attribute}_value{LOOKUP_TABLE}") or "")
                entity_set = await self._entity_set(table) if table else written_set
                # A polymorphic lookup that pointed at another table is given back through that table's nav.
                same = entity_set == written_set
                restore_nav = nav if same or nav == "ownerid" else f"{attribute}_{table}"
                image[f"{restore_nav}{BIND}"] = f"/{entity_set}({current})"
            images[sid] = image
        return images


def store_images(rt: Runtime, migration_id: str, batch: str, images: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Keep images in the batch's document (the first image of a source key wins); source key -> reference."""
    name = f"{BEFORE_DIR}/{quote(batch, safe='')}.json"
    if not images:
        return {}
    stored: dict[str, Any] = rt.artifacts.get_json(migration_id, name) if rt.artifacts.exists(migration_id, name) \
        else {}
    added = {sid: image for sid, image in images.items() if sid not in stored}
    if added:
        rt.artifacts.put_json(migration_id, name, {**stored, **added})
    return {sid: f"{name}#{sid}" for sid in images}


def load_image(rt: Runtime, migration_id: str, reference: str) -> dict[str, Any]:
    """The image a journal row points at: `<document>#<source id>`, or a whole document."""
    name, _, sid = reference.partition("#")
    document = rt.artifacts.get_json(migration_id, name)
    image = document[sid] if sid else document
    return dict(json.loads(json.dumps(image)))


# -- writing matched records ---------------------------------------------------------------------------


async def write_matched(client: DataverseClient, target: TableTarget, rows: list[WriteRow],
                        matched: dict[str, str]) -> list[MatchedWrite]:
    """Update each matched record by its id, setting its source key; one outcome per row."""
    if not matched:
        return []
    assert target.key_column, "only keyed tables are matched"
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(row: WriteRow) -> MatchedWrite:
        record_id = matched[row.source_key]
        body = {k: v for k, v in row.values.items() if k not in target.create_only}
        body[target.key_column] = row.source_key
        async with gate:
            try:
                await client.update(target.entity_set, record_id, body)
            except DataverseRecordRejected as exc:
                return MatchedWrite(row.source_key, record_id, False, exc.attrs.get("dataverse_code") or None,
                                    exc.attrs.get("status"))
        return MatchedWrite(row.source_key, record_id, True)

    return list(await asyncio.gather(*(one(row) for row in rows if row.source_key in matched)))


__all__ = ["BEFORE_DIR", "ImageReader", "MatchedWrite", "Matches", "existing_keys", "find_matches",
           "load_image", "lookup_attribute", "store_images", "url_groups", "write_matched"]
