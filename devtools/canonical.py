"""A Dataverse state (the emulator's dump) in a form two runs can be compared by: records keyed by
their source key instead of generated ids, lookups pointing at keys, volatile columns left out.

Two migrations of the same bundle, however their requests interleaved, give the same canonical state;
so do a run interrupted by a host kill and an uninterrupted one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

VOLATILE = {"modifiedon", "versionnumber", "overriddencreatedon"}
"""Columns a re-run or a different timing legitimately changes (overriddencreatedon holds the actual
creation time; createdon holds the source's date and is compared)."""


def canonical_state(dump: dict[str, Any], created_after: str | None = None) -> dict[str, dict[str, Any]]:
    """table -> record key -> columns. `created_after` (ISO) drops `createdon` values stamped by the
    run itself (records whose map sets no original create date)."""
    rows_by_table: dict[str, dict[str, dict[str, Any]]] = dump["rows"]
    keys: dict[str, str] = {}
    for table, rows in rows_by_table.items():
        for record_id, row in rows.items():
            source = row.get("bw_sourceid")
            keys[record_id] = f"{table}:{source}" if source else f"{table}:{record_id}"
    canonical: dict[str, dict[str, Any]] = {}
    for table, rows in rows_by_table.items():
        out: dict[str, Any] = {}
        for record_id, row in rows.items():
            values: dict[str, Any] = {}
            for column, value in row.items():
                if column in VOLATILE or value == record_id:  # the primary id: the key carries identity
                    continue
                if column == "createdon" and created_after and isinstance(value, str) and value >= created_after:
                    continue
                if isinstance(value, dict) and "id" in value:
                    value = keys.get(value["id"], f"{value.get('table')}:{value['id']}")
                values[column] = value
            key = keys[record_id]
            if table == "activityparty":  # generated ids: key a party by what it links
                key = f"{values.get('activityid')}|{values.get('partyid')}|{values.get('participationtypemask')}"
                values.pop("activitypartyid", None)
            elif table == "sharepointdocumentlocation" and values.get("regardingobjectid"):
                # A contact's folder location: its id and folder name derive from the contact's
                # generated id, so key it by the contact and name the folder after the contact's key.
                regarding = values["regardingobjectid"]
                key = f"{table}:{regarding}|{values.get('name')}"
                folder = str(values.get("relativeurl") or "")
                values["relativeurl"] = folder.rsplit("_", 1)[0] + f"_<{regarding}>" if "_" in folder else folder
            out[key] = values
        canonical[table] = dict(sorted(out.items()))
    return dict(sorted(canonical.items()))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
