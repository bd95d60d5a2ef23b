"""Closed activities kept read-only: which mapped fields the practice changed after Dataverse closed them.

Completed and canceled appointments are read-only in Dataverse (dataverse.md §4.7), and the load does not
reopen them (whether Dataverse lets an appointment be reopened and closed again is not verified). A delta
that edits such an appointment is therefore not applied: the load journals the row `unchanged` with code
`closed_read_only` and a reason naming the mapped fields the source now holds differently from the record
(field names only, never values: PHI), and the delta report counts it `kept_read_only`. The go-live
reconciliation leaves these records' field differences out of the mismatch share and lists them on
their own: a known limitation of the target, not an error of the migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.dataverse.client import DataverseClient
from shared.dataverse.writer import TableTarget
from shared.mapping.spec import MappingSpec
from shared.pipeline.readback import RecordReader

CLOSED_READ_ONLY = "closed_read_only"
"""Journal code of a closed activity the load left as Dataverse holds it."""
KEPT_COUNT = "kept_read_only"
"""The delta report's count of closed activities a delta changed at the practice but could not apply."""
REASON = "closed activity: read-only after completion"
CHANGED_PREFIX = "; changed at the practice, not applied: "


def reason_for(changed: list[str]) -> str:
    """The journal reason: field names only (the values are PHI)."""
    return REASON + (CHANGED_PREFIX + ",".join(sorted(changed)) if changed else "")


def changed_in_reason(reason: str | None) -> list[str]:
    """The field names a `reason_for` reason lists (none when the source matched the record)."""
    if not reason or CHANGED_PREFIX not in reason:
        return []
    return [f for f in reason.split(CHANGED_PREFIX, 1)[1].split(",") if f]


async def changed_fields(client: DataverseClient, spec: MappingSpec, target: TableTarget,
                         payloads: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """source key -> the payload's columns whose value differs from the record in Dataverse (lookups by the id
    their bind resolves to), compared as the sample diff compares. A record not found lists nothing: the
    reconciliation counts it missing on its own."""
    from shared.pipeline import sample  # sample imports the load, which imports this module

    if not payloads:
        return {}
    reader = RecordReader(client, await sample.primary_ids(client, spec))

    def compared(column: str, value: Any) -> bool:
        return (column not in sample.SKIPPED_COLUMNS and column != spec.source_id_column
                and not isinstance(value, list))  # party lists are rows of their own

    columns = {c for p in payloads.values() for c, v in p.items() if compared(c, v)}
    found = await reader.records(target, sorted(payloads), columns)
    await reader.prefetch_binds(v for p in payloads.values() for c, v in p.items()
                                if c.endswith("@odata.bind") and isinstance(v, str))
    out: dict[str, list[str]] = {}
    for sid, payload in payloads.items():
        record = found.get(sid)
        changed: list[str] = []
        for column, value in payload.items() if record is not None else ():
            if not compared(column, value):
                continue
            if column.endswith("@odata.bind"):
                wanted: Any = await reader.bind_id(value) if isinstance(value, str) else None
                actual = sample.lookup_value(column[: -len("@odata.bind")], record)
                actual = str(actual).lower() if actual else None
            else:
                wanted, actual = value, record.get(column)  # type: ignore[union-attr]
            if not sample.same_value(wanted, actual):
                changed.append(column)
        out[sid] = sorted(changed)
    return out
