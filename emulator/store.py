"""The emulator's whole state (metadata, rows, SharePoint files) with transactions, key indexes and snapshots.

State is one JSON-able dict so that dump, snapshot, restore and persistence are plain copies. Rows are dicts of
logical column name -> value; a lookup value is `{"id": guid, "table": logical name}`. Alternate-key indexes are
derived data, rebuilt after every restore, and only kept for keys whose index is Active; so is the index of
SharePoint folders (a folder's items by name).
"""

from __future__ import annotations

import base64
import copy
import json
import random
import time
import uuid
from typing import Any

from emulator import schema
from emulator.config import EmulatorConfig


class Clock:
    """Emulated time: wall time multiplied by the time scale, so windows and delays pass faster."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def now(self) -> float:
        return time.time() * self.scale


def fresh_state(config: EmulatorConfig) -> dict[str, Any]:
    """A new environment: standard tables, seeded users, organization, publishers, SharePoint site."""
    entities = schema.standard_entities()
    rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in entities}
    for u in config.users:
        rows["systemuser"][u.systemuserid] = {
            "systemuserid": u.systemuserid, "fullname": u.fullname, "internalemailaddress": u.internalemailaddress,
            "isdisabled": u.isdisabled, "versionnumber": 1}
    for a in config.app_users:
        rows["systemuser"][a.systemuserid] = {
            "systemuserid": a.systemuserid, "fullname": a.fullname, "applicationid": a.app_id,
            "isdisabled": False, "versionnumber": 1}
    rows["organization"][schema.ORGANIZATION_ID] = {
        "organizationid": schema.ORGANIZATION_ID, "name": "Bridgework emulator",
        "maxuploadfilesize": config.max_upload_file_size, "versionnumber": 1}
    default_pub = schema.stable_id("publisher", "default")
    rows["publisher"][default_pub] = {
        "publisherid": default_pub, "uniquename": "DefaultPublisher", "friendlyname": "Default Publisher",
        "customizationprefix": config.publisher_prefix,
        "customizationoptionvalueprefix": config.publisher_option_value_prefix, "versionnumber": 1}
    sol_id = schema.stable_id("solution", "default")
    rows["solution"][sol_id] = {
        "solutionid": sol_id, "uniquename": "Default", "friendlyname": "Default Solution", "version": "1.0.0.0",
        "publisherid": {"id": default_pub, "table": "publisher"}, "versionnumber": 1}
    sp = config.sharepoint
    site_id = f"{sp.hostname},{schema.stable_id('spsite', sp.site_path)},{schema.stable_id('spweb', sp.site_path)}"
    drives = {}
    for lib in sp.libraries:
        drive_id = "b!" + schema.stable_id("drive", lib).replace("-", "")
        root_id = "01" + schema.stable_id("root", lib).replace("-", "")[:32].upper()
        drives[drive_id] = {"id": drive_id, "name": lib, "root": root_id,
                            "items": {root_id: {"id": root_id, "name": "root", "parent": None, "folder": True,
                                                "size": 0, "sha256": None}}}
    return {
        "format": 1,
        "entities": entities,
        "optionsets": {},
        "relationships": {},
        "rows": rows,
        "version": 1000,
        "publishes": [],
        "solution_components": [],
        "graph": {"site": {"id": site_id, "hostname": sp.hostname, "path": sp.site_path}, "drives": drives,
                  "sessions": {}},
    }


class Store:
    """The state plus the operations every handler needs: ids, versions, row writes with undo, key lookups."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock(config.time_scale)
        self.rng = random.Random(config.seed)
        self.state = fresh_state(config)
        self.blobs: dict[str, bytes] = {}
        self.snapshots: dict[str, tuple[dict[str, Any], dict[str, bytes]]] = {}
        self._undo: list[tuple[str, str, dict[str, Any] | None]] | None = None
        self._marks: list[int] = []
        self._key_index: dict[tuple[str, str], dict[tuple[Any, ...], str]] = {}
        self._folders: dict[tuple[str, str], dict[str, str]] = {}
        self._parties: dict[str, set[str]] = {}
        self.dirty = False
        self.rebuild_indexes()

    # ---------- ids and versions ----------
    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def next_version(self) -> int:
        self.state["version"] += 1
        return self.state["version"]

    # ---------- metadata access ----------
    @property
    def entities(self) -> dict[str, dict[str, Any]]:
        return self.state["entities"]

    def entity(self, logical: str) -> dict[str, Any] | None:
        return self.state["entities"].get(logical)

    def entity_by_set(self, entity_set: str) -> dict[str, Any] | None:
        for e in self.state["entities"].values():
            if e["EntitySetName"] == entity_set:
                return e
        return None

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        return self.state["rows"].setdefault(table, {})

    # ---------- transactions ----------
    def begin(self) -> None:
        """Start recording undo information (change sets, bulk messages). Nests: a bulk call in a change set."""
        if self._undo is None:
            self._undo = []
        self._marks.append(len(self._undo))

    def commit(self) -> None:
        self._marks.pop()
        if not self._marks:
            self._undo = None

    def rollback(self) -> None:
        mark = self._marks.pop()
        undo = self._undo or []
        for table, row_id, old in reversed(undo[mark:]):
            current = self.rows(table).get(row_id)
            if current is not None:
                self._unindex(table, row_id, current)
            if old is None:
                self.rows(table).pop(row_id, None)
            else:
                self.rows(table)[row_id] = old
                self._index(table, row_id, old)
        del undo[mark:]
        if not self._marks:
            self._undo = None

    def put_row(self, table: str, row_id: str, row: dict[str, Any]) -> None:
        old = self.rows(table).get(row_id)
        if self._undo is not None:
            # Rows are never mutated in place (updates build a new dict), so a shallow copy is a true snapshot.
            self._undo.append((table, row_id, dict(old) if old is not None else None))
        if old is not None:
            self._unindex(table, row_id, old)
        self.rows(table)[row_id] = row
        self._index(table, row_id, row)
        self.dirty = True

    def delete_row(self, table: str, row_id: str) -> None:
        old = self.rows(table).pop(row_id, None)
        if old is None:
            return
        if self._undo is not None:
            self._undo.append((table, row_id, old))
        self._unindex(table, row_id, old)
        self.dirty = True

    # ---------- alternate keys ----------
    def key_values(self, table: str, key: dict[str, Any], row: dict[str, Any]) -> tuple[Any, ...] | None:
        values = []
        for col in key["KeyAttributes"]:
            v = row.get(col)
            if v is None:
                return None
            values.append(v["id"] if isinstance(v, dict) else (v.lower() if isinstance(v, str) else v))
        return tuple(values)

    def active_keys(self, table: str) -> list[dict[str, Any]]:
        e = self.entity(table)
        if not e:
            return []
        return [k for k in e["Keys"].values() if k["EntityKeyIndexStatus"] == "Active"]

    def _index(self, table: str, row_id: str, row: dict[str, Any]) -> None:
        for k in self.active_keys(table):
            vals = self.key_values(table, k, row)
            if vals is not None:
                self._key_index.setdefault((table, k["LogicalName"]), {})[vals] = row_id
        if table == schema.PARTY_TABLE and row.get("activityid"):
            self._parties.setdefault(row["activityid"]["id"], set()).add(row_id)

    def _unindex(self, table: str, row_id: str, row: dict[str, Any]) -> None:
        for k in self.active_keys(table):
            vals = self.key_values(table, k, row)
            idx = self._key_index.get((table, k["LogicalName"]))
            if vals is not None and idx is not None and idx.get(vals) == row_id:
                del idx[vals]
        if table == schema.PARTY_TABLE and row.get("activityid"):
            parties = self._parties.get(row["activityid"]["id"])
            if parties is not None:
                parties.discard(row_id)
                if not parties:
                    del self._parties[row["activityid"]["id"]]

    def parties_of(self, activity_id: str) -> list[str]:
        """The ids of an activity's party rows (derived like the key indexes: a scan of every party per
        updated appointment made the load's appointment updates quadratic; bench/README.md)."""
        return sorted(self._parties.get(activity_id, ()))

    def find_by_key(self, table: str, key_name: str, values: tuple[Any, ...]) -> str | None:
        norm = tuple(v.lower() if isinstance(v, str) else v for v in values)
        return self._key_index.get((table, key_name), {}).get(norm)

    def key_conflict(self, table: str, row_id: str, row: dict[str, Any]) -> dict[str, Any] | None:
        """The Active key another row already holds with this row's values, if any."""
        for k in self.active_keys(table):
            vals = self.key_values(table, k, row)
            if vals is None:
                continue
            other = self._key_index.get((table, k["LogicalName"]), {}).get(vals)
            if other is not None and other != row_id:
                return k
        return None

    def refresh_keys(self) -> None:
        """Move key indexes along Pending -> InProgress -> Active/Failed as emulated time passes."""
        now = self.clock.now()
        for table, e in self.entities.items():
            for k in e["Keys"].values():
                status = k["EntityKeyIndexStatus"]
                if status not in ("Pending", "InProgress"):
                    continue
                if now >= k["ActivateAt"]:
                    seen: dict[tuple[Any, ...], str] = {}
                    ok = True
                    for rid, row in self.rows(table).items():
                        vals = self.key_values(table, k, row)
                        if vals is None:
                            continue
                        if vals in seen:
                            ok = False
                            break
                        seen[vals] = rid
                    k["EntityKeyIndexStatus"] = "Active" if ok else "Failed"
                    if ok:
                        self._key_index[(table, k["LogicalName"])] = seen
                    self.dirty = True
                elif status == "Pending" and now >= (k["CreatedAt"] + k["ActivateAt"]) / 2:
                    k["EntityKeyIndexStatus"] = "InProgress"

    def rebuild_indexes(self) -> None:
        self._key_index = {}
        self._parties = {}
        for table in self.entities:
            for rid, row in self.rows(table).items():
                self._index(table, rid, row)
        self._folders = {}
        for drive in self.state["graph"]["drives"].values():
            for item in drive["items"].values():
                if item["parent"] is not None:
                    self.add_to_folder(drive["id"], item)

    # ---------- SharePoint folders ----------
    # Which item a folder holds under a name, derived from the drive's items like the key indexes: a scan of
    # every item per path segment made a practice's upload quadratic in its files (bench/README.md).
    def folder(self, drive_id: str, folder_id: str) -> dict[str, str]:
        """A folder's items: lower-cased name (SharePoint names ignore case) -> item id. Read only."""
        return self._folders.get((drive_id, folder_id), {})

    def add_to_folder(self, drive_id: str, item: dict[str, Any]) -> None:
        self._folders.setdefault((drive_id, item["parent"]), {})[item["name"].lower()] = item["id"]

    def remove_from_folder(self, drive_id: str, item: dict[str, Any]) -> None:
        self._folders.get((drive_id, item["parent"]), {}).pop(item["name"].lower(), None)
        self._folders.pop((drive_id, item["id"]), None)

    # ---------- snapshots, dump, persistence ----------
    def reset(self) -> None:
        self.state = fresh_state(self.config)
        self.blobs = {}
        self.rng = random.Random(self.config.seed)
        self.rebuild_indexes()
        self.dirty = True

    def snapshot(self) -> str:
        snap_id = f"snap-{len(self.snapshots) + 1}"
        self.snapshots[snap_id] = (copy.deepcopy(self.state), dict(self.blobs))
        return snap_id

    def restore(self, snap_id: str) -> bool:
        if snap_id not in self.snapshots:
            return False
        state, blobs = self.snapshots[snap_id]
        self.state = copy.deepcopy(state)
        self.blobs = dict(blobs)
        self.rebuild_indexes()
        self.dirty = True
        return True

    def dump(self) -> dict[str, Any]:
        """The whole state as plain JSON with deterministic ordering (file bytes as size + sha256)."""
        return json.loads(json.dumps(self.state, sort_keys=True, default=str))

    def to_json(self) -> str:
        blobs = {k: base64.b64encode(v).decode("ascii") for k, v in self.blobs.items()}
        return json.dumps({"state": self.state, "blobs": blobs}, sort_keys=True)

    def load_json(self, text: str) -> None:
        data = json.loads(text)
        self.state = data["state"]
        self.blobs = {k: base64.b64decode(v) for k, v in data.get("blobs", {}).items()}
        self.rebuild_indexes()
