"""Reading records back for the field-level diff: many records per GET, by source key or by primary id.

The sample diff and the go-live reconciliation (shared/pipeline/sample.py, reconcile.py) compare every
mapped field of every compared record with its expected value. One GET per record read ~26 records/s;
here one `GET <set>?$select=...&$filter=Microsoft.Dynamics.CRM.In(PropertyName='<col>',PropertyValues=[...])`
reads hundreds: the ids are chunked so each query string stays under `preexisting.MAX_FILTER_URL`
(`preexisting.url_groups`, the chunker the match queries use), `$select` holds only the columns the diff
reads, `@odata.nextLink` is followed, and up to `IN_FLIGHT` GETs run at once. Plain GETs in parallel rather
than a `$batch`: Dataverse runs a batch's parts one after another (reference/dataverse.md §5-7), and a
few requests per thousand records are far from the request-count limit.

The records a read returns are the full records cut down to what the diff looks at, so the diff's
results are the same as with one GET per record: a plain column is selected when the table has it as a
readable non-lookup attribute (a full GET would return it under that name, anything else reads as
missing either way); for a lookup bind every `_<name>_value` that `sample.lookup_value` could walk to is
selected. A table whose attributes cannot be read, or a chunk Dataverse refuses (400/404), is read the
old way, one GET per record, so an odd environment changes the speed, never the result.

Keyed binds expected in lookups (`/contacts(bw_sourceid='P-1')`) are resolved to ids the same way,
grouped per entity set and key column; a bind the grouped read does not find falls back to its own GET.
Nothing here logs a value.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from shared.dataverse.client import DataverseClient, odata_literal
from shared.dataverse.writer import TableTarget, _in_literal, row_id
from shared.errors import DataverseRecordRejected
from shared.pipeline.preexisting import url_groups

IN_FLIGHT = 8
"""GETs in flight at once (the governor still caps the application user's concurrency)."""
BIND = "@odata.bind"
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})
UNREAD_TYPES = frozenset({"PartyList", "Virtual"})
"""Attribute types a record GET never returns as a property of their own."""
_KEYED_BIND = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)='((?:[^']|'')*)'$")


def lookup_candidates(nav: str) -> list[str]:
    """The lookup columns `sample.lookup_value` tries for a navigation property, in its order:
    `regardingobjectid_contact_appointment` -> itself, `regardingobjectid_contact`, `regardingobjectid`."""
    name = nav.lower()
    out = [name]
    while "_" in name:
        name = name.rsplit("_", 1)[0]
        out.append(name)
    return out


def select_for(columns: Iterable[str], attributes: Mapping[str, str], always: Iterable[str] = ()) -> list[str]:
    """`$select` for the diff's columns (payload names, lookups as `<nav>@odata.bind`) given the table's
    attributes (logical name -> AttributeType): what a full GET would show of them, nothing more."""
    chosen: set[str] = set(always)
    for column in columns:
        if column.endswith(BIND):
            for name in lookup_candidates(column[: -len(BIND)]):
                if attributes.get(name) in LOOKUP_TYPES:
                    chosen.add(f"_{name}_value")
        elif column in attributes and attributes[column] not in LOOKUP_TYPES | UNREAD_TYPES:
            chosen.add(column)
    return sorted(chosen)


def in_filters(column: str, values: Iterable[str], *, reserved: int = 0) -> list[tuple[str, list[str]]]:
    """(`Microsoft.Dynamics.CRM.In(PropertyName='<col>',PropertyValues=[...])`, the values it asks for)
    per chunk, each filter short enough (with `reserved` URL characters of the rest of the query) for one GET."""
    head = f"Microsoft.Dynamics.CRM.In(PropertyName={odata_literal(column)},PropertyValues=[])"
    value_of = {_in_literal(v): v for v in sorted(set(values))}
    groups = url_groups(value_of, fixed=len(quote(head, safe="")) + reserved, joiner=3)
    return [(head[:-2] + ",".join(group) + "])", [value_of[lit] for lit in group]) for group in groups]


def parse_keyed_bind(bind: str) -> tuple[str, str, str] | None:
    """`/contacts(bw_sourceid='P-1')` -> ("contacts", "bw_sourceid", "P-1"); None for an id or a compound key."""
    entity_set, _, rest = bind.strip("/").partition("(")
    match = _KEYED_BIND.match(rest[:-1]) if rest.endswith(")") else None
    if not match:
        return None
    return entity_set, match.group(1), unquote(match.group(2)).replace("''", "'")


class RecordReader:
    """Reads records back for the diff and resolves expected lookup binds to ids (cached).

    `requests` counts the GETs this reader sent (metadata reads included)."""

    def __init__(self, client: DataverseClient, primary_of_set: dict[str, str], in_flight: int = IN_FLIGHT) -> None:
        self.client, self.primary_of_set = client, primary_of_set
        self.ids: dict[str, str | None] = {}
        self.gate = asyncio.Semaphore(in_flight)
        self._attributes: dict[str, dict[str, str] | None] = {}
        self.requests = 0

    # -- one record (the old path, and the fallback) ---------------------------------------------------

    async def record(self, entity_set: str, key: Mapping[str, Any] | str) -> dict[str, Any] | None:
        """One record by alternate key (mapping) or primary id (str), every column; None when absent."""
        async with self.gate:
            self.requests += 1
            return await self.client.get(entity_set, key)

    # -- many records -----------------------------------------------------------------------------------

    async def attributes(self, logical_name: str) -> dict[str, str] | None:
        """logical name -> AttributeType of a table's columns (read once); None when it cannot be read."""
        if logical_name not in self._attributes:
            try:
                self.requests += 1
                rows = await self.client.query_all(
                    f"EntityDefinitions(LogicalName={odata_literal(logical_name)})/Attributes",
                    select=["LogicalName", "AttributeType"])
            except DataverseRecordRejected:
                self._attributes[logical_name] = None
            else:
                self._attributes[logical_name] = {str(r["LogicalName"]): str(r.get("AttributeType") or "")
                                                  for r in rows}
        return self._attributes[logical_name]

    async def records(self, target: TableTarget, sids: Sequence[str],
                      columns: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """source key -> its record (the diff's `columns` selected) or None when it is not in Dataverse.

        Records are found by the key column, or, on tables without one, by the id the writer derives
        from the source key (`writer.row_id`)."""
        wanted = list(dict.fromkeys(sids))
        attributes = await self.attributes(target.logical_name)
        if attributes is None:
            return await self._one_by_one(target, wanted)
        by = target.key_column or target.primary_id
        value_of = {sid: sid if target.key_column else row_id(target.logical_name, sid) for sid in wanted}
        select = select_for(columns, attributes, always=[target.primary_id, by])
        reserved = len(quote(",".join(select), safe="")) + len(target.entity_set) + 40
        found: dict[str, dict[str, Any]] = {}

        async def chunk(text: str, sids_here: list[str]) -> None:
            try:
                async with self.gate:
                    rows = [row async for row in self._query(target.entity_set, select, text)]
            except DataverseRecordRejected:
                # Refused (a column Dataverse will not select, an odd key type): read this chunk the old way.
                for sid, record in (await self._one_by_one(target, sids_here)).items():
                    if record is not None:
                        found[str(value_of[sid]).lower()] = record
                return
            for row in rows:
                found[str(row.get(by)).lower()] = row

        sid_of = {value: sid for sid, value in value_of.items()}
        await asyncio.gather(*(chunk(text, [sid_of[v] for v in values])
                               for text, values in in_filters(by, value_of.values(), reserved=reserved)))
        return {sid: found.get(str(value_of[sid]).lower()) for sid in wanted}

    async def _query(self, entity_set: str, select: list[str], text: str) -> Any:
        headers = {"Prefer": "odata.maxpagesize=5000"}
        params: Mapping[str, str] | None = {"$select": ",".join(select), "$filter": text}
        url: str | None = entity_set
        while url:
            self.requests += 1
            body = await self.client.get_json(url, params, headers=headers)
            params = None  # a nextLink carries the whole query
            for row in body.get("value", []):
                yield row
            url = body.get("@odata.nextLink")

    async def _one_by_one(self, target: TableTarget, sids: list[str]) -> dict[str, dict[str, Any] | None]:
        keys = [{target.key_column: sid} if target.key_column else row_id(target.logical_name, sid) for sid in sids]
        found = await asyncio.gather(*(self.record(target.entity_set, key) for key in keys))
        return dict(zip(sids, found, strict=True))

    # -- expected lookup binds --------------------------------------------------------------------------

    async def prefetch_binds(self, binds: Iterable[str]) -> None:
        """Resolve keyed binds to ids with grouped reads; what is not found is left to `bind_id`'s own GET."""
        groups: dict[tuple[str, str], tuple[set[str], dict[str, list[str]]]] = {}
        for bind in set(binds):
            path = bind.strip("/")
            parsed = parse_keyed_bind(bind)
            if path in self.ids or parsed is None or parsed[0] not in self.primary_of_set:
                continue
            entity_set, column, value = parsed
            values, paths = groups.setdefault((entity_set, column), (set(), {}))
            values.add(value)
            paths.setdefault(value.lower(), []).append(path)

        async def one(entity_set: str, column: str, paths: dict[str, list[str]], text: str) -> None:
            primary = self.primary_of_set[entity_set]
            try:
                async with self.gate:
                    rows = [row async for row in self._query(entity_set, sorted({primary, column}), text)]
            except DataverseRecordRejected:
                return  # each bind gets its own GET, as before
            for row in rows:
                for path in paths.get(str(row.get(column)).lower(), []):
                    value = row.get(primary)
                    self.ids[path] = str(value).lower() if value else None

        jobs = []
        for (entity_set, column), (values, paths) in groups.items():
            for text, _ in in_filters(column, values, reserved=len(entity_set) + 80):
                jobs.append(one(entity_set, column, paths, text))
        await asyncio.gather(*jobs)

    async def bind_id(self, bind: str) -> str | None:
        """The id a bind points at: read from the bind itself, from the prefetch, or with one GET."""
        path = bind.strip("/")
        if path in self.ids:
            return self.ids[path]
        entity_set, _, rest = path.partition("(")
        if "=" not in rest:
            self.ids[path] = rest.rstrip(")").lower()
            return self.ids[path]
        primary = self.primary_of_set.get(entity_set)
        async with self.gate:
            self.requests += 1
            row = await self.client.get_json(path, {"$select": primary} if primary else None)
        value = row.get(primary) if primary else None
        self.ids[path] = str(value).lower() if value else None
        return self.ids[path]


__all__ = ["IN_FLIGHT", "RecordReader", "in_filters", "lookup_candidates", "parse_keyed_bind", "select_for"]
