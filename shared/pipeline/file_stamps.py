"""What a SharePoint file looked like right after the migration uploaded it, so rollback can tell a file
someone edited afterwards (kept, listed) from one nobody touched (deleted).

The stamp is what Graph says about the driveItem just after the upload: `eTag` (changes with any
change to the item), `cTag` (changes with its content), `lastModifiedDateTime`, `size` and the content
hashes Graph gives (`file.hashes`: quickXorHash on SharePoint, others elsewhere). A later read of the
item differing in any of those it carried is an edit. The stamps of one attachment batch are one Blob
document (`attachments/uploaded/<batch>.json`, item id -> stamp); the journal row's `batch` finds it,
and a re-run's upload (replace) writes the new stamp over the old one: the migration's last write counts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.runtime import Runtime

STAMPS_DIR = "attachments/uploaded"
STAMPED = ("eTag", "cTag", "lastModifiedDateTime", "size")


def stamp(item: dict[str, Any]) -> dict[str, Any]:
    """The fields of a driveItem that change when someone edits it (only those Graph returned)."""
    out = {name: item[name] for name in STAMPED if item.get(name) is not None}
    hashes = ((item.get("file") or {}).get("hashes") or {})
    out.update({f"hash:{name}": value for name, value in sorted(hashes.items()) if value})
    return out


def edited(recorded: dict[str, Any], item: dict[str, Any]) -> bool:
    """Whether the item now differs from its recorded stamp in anything the stamp carried."""
    now = stamp(item)
    return any(name in now and now[name] != value for name, value in recorded.items())


def stamps_path(batch: str) -> str:
    return f"{STAMPS_DIR}/{quote(batch, safe='')}.json"


def store_stamps(rt: Runtime, migration_id: str, batch: str, stamps: dict[str, dict[str, Any]]) -> None:
    """Merge this batch's stamps into its document (a newer upload of an item replaces its stamp)."""
    if not stamps:
        return
    name = stamps_path(batch)
    stored = rt.artifacts.get_json(migration_id, name) if rt.artifacts.exists(migration_id, name) else {}
    rt.artifacts.put_json(migration_id, name, {**stored, **stamps})


def load_stamps(rt: Runtime, migration_id: str, batch: str) -> dict[str, dict[str, Any]]:
    name = stamps_path(batch)
    return dict(rt.artifacts.get_json(migration_id, name)) if rt.artifacts.exists(migration_id, name) else {}


__all__ = ["STAMPS_DIR", "edited", "load_stamps", "stamp", "stamps_path", "store_stamps"]
