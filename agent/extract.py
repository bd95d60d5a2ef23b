"""Extract a Dentrix database into an export bundle (full, or delta against a previous bundle).

Streams every registry table with `SELECT * FROM admin.<view>`, normalises each value once
(shared/dentrix/normalise.py), keeps practice custom columns (typed by inference, reported),
copies referenced files by content hash, writes each table's full key list with row hashes, the
file index (`files/index-NNNNN.jsonl.gz`, sorted by sha256), and manifest.json last. Memory stays
flat in rows and in files: rows go straight to gzip parts, and the delta's comparison index and the
file index live in temporary SQLite files, not in RAM.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import __version__
from agent.bundle_writer import FileIndexWriter, PartWriter, dumps_row, store_file
from agent.sample_files import sniff_media_type
from agent.source import Source, open_source
from shared.dentrix import normalise as n
from shared.dentrix.manifest import (
    DEFAULT_PART_ROWS,
    MANIFEST_NAME,
    SUPPORTED_FORMATS,
    BundleWarning,
    ChangeCounts,
    ColumnEntry,
    Manifest,
    TableEntry,
)
from shared.dentrix.manifest import SourceInfo as ManifestSource
from shared.dentrix.tables import JSON_TYPE_OF_KIND, TABLES, Column, Table
from shared.errors import ConfigurationError

KEYS_PER_FILE = 50_000
_KEY_ENCODE = json.encoder.encode_basestring  # type: ignore[attr-defined]
UNPARSED = "_unparsed"
"""Reserved row field: {column: raw text} for values the agent could not normalise (quarantined
by the cloud reader; the column itself is written as null)."""

# Source columns the agent consumes to build derived bundle columns.
CONSUMED: dict[str, frozenset[str]] = {"document": frozenset({"file_path"})}
DERIVED: dict[str, frozenset[str]] = {
    "appointment": frozenset({"start_at"}),
    "document": frozenset({"file_name", "file_sha256", "file_bytes", "media_type"}),
}


@dataclass
class ExtractInfo:
    """What one extraction produced (counts and ids only)."""

    bundle_dir: Path
    bundle_id: str
    kind: str
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    warnings: list[BundleWarning] = field(default_factory=list)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string"


def _custom_value(value: Any, zone: ZoneInfo) -> Any:
    """Custom columns keep their value; only types JSON lacks are turned into text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return n.normalise_local_datetime(value, zone)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return n.normalise_text(value)


def _converter(column: Column, zone: ZoneInfo, money_unit: n.TMoneyUnit) -> Callable[[Any], Any]:
    kind = column.kind
    if kind == "id":
        return n.normalise_id
    if kind == "text" or kind == "sha256":
        return n.normalise_text
    if kind == "int":
        return n.normalise_int
    if kind == "bool":
        return n.normalise_bool
    if kind == "money":
        return lambda v: n.to_cents(v, money_unit)
    if kind == "date":
        return n.normalise_date
    if kind == "datetime":
        return lambda v: n.normalise_local_datetime(v, zone)
    if kind == "tooth":
        return n.normalise_tooth
    if kind == "surface":
        return n.normalise_surface
    if kind == "json":
        return lambda v: v if v is None or isinstance(v, dict) else json.loads(v)
    raise AssertionError(kind)


def row_hash(line: str) -> str:
    """A 128-bit hash of a row's JSON line (delta detection); column order is the registry's, so
    the same row always gives the same line."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()[:32]


class _Warnings:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str | None], int] = {}
        self.messages: dict[tuple[str, str | None], str] = {}

    def add(self, code: str, table: str | None, message: str, count: int = 1) -> None:
        key = (code, table)
        self.counts[key] = self.counts.get(key, 0) + count
        self.messages.setdefault(key, message)

    def as_list(self) -> list[BundleWarning]:
        return [BundleWarning(code=c, table=t, count=self.counts[(c, t)], message=self.messages[(c, t)])
                for (c, t) in sorted(self.counts, key=lambda k: (k[1] or "", k[0]))]


class _BaseIndex:
    """The previous bundle's keys and row hashes, in a temporary SQLite file (flat memory)."""

    def __init__(self, base_dir: Path, base: Manifest, workdir: Path) -> None:
        self.path = workdir / "base-index.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("CREATE TABLE base (t TEXT, k TEXT, h TEXT, PRIMARY KEY (t, k)) WITHOUT ROWID")
        self.db.execute("CREATE TABLE cur (t TEXT, k TEXT, PRIMARY KEY (t, k)) WITHOUT ROWID")

        for entry in base.tables:
            for part in entry.keys:
                with gzip.open(base_dir / part.file, "rt", encoding="utf-8") as fh:
                    batch = []
                    for line in fh:
                        item = json.loads(line)
                        batch.append((entry.name, item["k"], item["h"]))
                        if len(batch) >= 10_000:
                            self.db.executemany("INSERT INTO base VALUES (?, ?, ?)", batch)
                            batch.clear()
                    self.db.executemany("INSERT INTO base VALUES (?, ?, ?)", batch)
        self.db.commit()
        self._pending: list[tuple[str, str]] = []

    def lookup(self, table: str, key: str) -> str | None:
        row = self.db.execute("SELECT h FROM base WHERE t = ? AND k = ?", (table, key)).fetchone()
        return None if row is None else row[0]

    def seen(self, table: str, key: str) -> None:
        self._pending.append((table, key))
        if len(self._pending) >= 10_000:
            self.flush()

    def flush(self) -> None:
        self.db.executemany("INSERT OR IGNORE INTO cur VALUES (?, ?)", self._pending)
        self._pending.clear()

    def deleted(self, table: str) -> Any:
        self.flush()
        return self.db.execute("SELECT k FROM base WHERE t = ? AND k NOT IN (SELECT k FROM cur WHERE t = ?) ORDER BY k",
                               (table, table))

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def _resolve_file(root: Path, raw: str) -> Path | None:
    """A document path from Dentrix (Windows form, relative to the document root) inside `root`.

    Returns None when it climbs out of the root (`..`, another drive, an absolute path elsewhere):
    such a row is reported, and its file is never read.
    """
    native = Path(raw.strip())
    if native.is_absolute():  # e.g. D:\Dentrix\Doc\x.pdf on the practice server: fine if under the root
        candidate = native.resolve()
        return candidate if candidate.is_relative_to(root.resolve()) else None
    text = raw.replace("\\", "/").strip()
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ":" in pure.parts[0] or any(p == ".." for p in pure.parts):
        return None
    candidate = (root / pure).resolve()
    if not candidate.is_relative_to(root.resolve()):
        return None
    return candidate


def extract(
    source: str,
    out: Path,
    *,
    timezone: str | None = None,
    money_unit: n.TMoneyUnit = "cents",
    files_root: Path | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    base: Path | None = None,
    since: str | None = None,
    bundle_id: str | None = None,
    text_encoding: str = "cp1252",
    now: dt.datetime | None = None,
    index_rows: int | None = None,
) -> ExtractInfo:
    """Write a bundle for SOURCE into `out` (created; must be empty or absent).

    A delta is written when `base` (the previous bundle folder) is given; `since` overrides the
    base's watermark. `index_rows`: lines per file index part (default `part_rows`). Raises
    ConfigurationError for a bad time zone, a non-empty output folder, a missing base bundle, a
    base of another bundle format, or an unusable source.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError("output folder is not empty: extract into a new folder", code="out_not_empty")
    if part_rows < 1 or (index_rows is not None and index_rows < 1):
        raise ConfigurationError("part rows must be at least 1", code="bad_part_rows")
    src = open_source(source, text_encoding)
    try:
        return _extract(src, source, out, timezone, money_unit, files_root, part_rows, base, since, bundle_id,
                        text_encoding, now, index_rows or part_rows)
    finally:
        src.close()


def _extract(src: Source, source: str, out: Path, timezone: str | None, money_unit: n.TMoneyUnit,
             files_root: Path | None, part_rows: int, base_dir: Path | None, since: str | None,
             bundle_id: str | None, text_encoding: str, now: dt.datetime | None, index_rows: int) -> ExtractInfo:
    zone_name = timezone or src.info.time_zone
    if not zone_name:
        raise ConfigurationError("the practice time zone is unknown: pass --timezone (e.g. America/Denver)",
                                 code="timezone_missing")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError("--timezone is not an IANA time zone name", code="timezone_invalid") from None
    started = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    watermark = started.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")

    base_manifest: Manifest | None = None
    if base_dir is not None:
        try:
            raw_base = json.loads((Path(base_dir) / MANIFEST_NAME).read_bytes())
        except (OSError, ValueError):
            raise ConfigurationError("--base is not a readable bundle folder (manifest.json missing or invalid)",
                                     code="base_invalid") from None
        found = raw_base.get("format") if isinstance(raw_base, dict) else None
        if found not in SUPPORTED_FORMATS:
            raise ConfigurationError(f"--base is bundle format {str(found)[:60]!r}; this agent writes and reads "
                                     f"{', '.join(SUPPORTED_FORMATS)}: extract a full bundle first, then deltas on it",
                                     code="base_format_unsupported")
        try:
            base_manifest = Manifest.model_validate(raw_base)
        except ValueError:
            raise ConfigurationError("--base is not a readable bundle folder (manifest.json missing or invalid)",
                                     code="base_invalid") from None
        since = since or base_manifest.watermark
    if since is not None and not n.is_local_datetime(since):
        raise ConfigurationError("--since must be a local datetime YYYY-MM-DDTHH:MM:SS", code="since_invalid")

    kind = "delta" if base_manifest is not None else "full"
    bundle_id = bundle_id or f"{kind}-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    if src.driver == "sqlite" and files_root is None:
        db_path = Path(source)
        files_root = db_path.with_name(db_path.stem + "-files")
    out.mkdir(parents=True, exist_ok=True)
    warnings = _Warnings()
    tables: list[TableEntry] = []
    practice_ids: list[str] = []
    info = ExtractInfo(out, bundle_id, kind)
    workdir = Path(tempfile.mkdtemp(prefix="bw-extract-"))
    files = FileIndexWriter(workdir)
    index = None
    try:
        index = _BaseIndex(Path(base_dir), base_manifest, workdir) if base_dir is not None and base_manifest else None
        for table in TABLES:
            entry = _extract_table(src, table, out, zone, money_unit, files_root, part_rows, warnings, files,
                                   index, since, practice_ids)
            tables.append(entry)
            info.rows[table.name] = entry.rows
        file_index = files.write(out, index_rows)  # a delta ships only the files its rows use
    finally:
        if index is not None:
            index.close()
        files.close()
        shutil.rmtree(workdir, ignore_errors=True)

    manifest = Manifest(
        bundle_id=bundle_id, kind=kind, base_bundle_id=base_manifest.bundle_id if base_manifest else None,
        since=since if kind == "delta" else None, watermark=watermark,
        created_utc=started.strftime("%Y-%m-%dT%H:%M:%SZ"), agent_version=__version__,
        source=ManifestSource(product=src.info.product, version=src.info.version, driver=src.driver,
                              database=src.info.database, practice_id=practice_ids[0] if practice_ids else None),
        practice_timezone=zone_name, source_text_encoding="utf-8" if src.driver == "sqlite" else text_encoding,
        money_source_unit=money_unit, part_rows=part_rows, tables=tables,
        file_index=file_index, warnings=warnings.as_list(),
    )
    # The manifest is the commit marker: written last, atomically.
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
    info.files = file_index.count
    info.warnings = manifest.warnings
    return info


def _extract_table(src: Source, table: Table, out: Path, zone: ZoneInfo, money_unit: n.TMoneyUnit,
                   files_root: Path | None, part_rows: int, warnings: _Warnings, files: FileIndexWriter,
                   index: _BaseIndex | None, since: str | None, practice_ids: list[str]) -> TableEntry:
    view = src.view_for(table)
    names, rows = src.select_all(view)
    position = {name: i for i, name in enumerate(names)}
    derived = DERIVED.get(table.name, frozenset())
    plan: list[tuple[str, int | None, Callable[[Any], Any]]] = []
    missing = []
    for column in table.columns:
        if column.name in derived:
            continue
        idx = position.get(column.source_name)
        if idx is None:
            missing.append(column.name)
        plan.append((column.name, idx, _converter(column, zone, money_unit)))
    if missing:
        warnings.add("columns_missing_in_source", table.name,
                     f"{view} lacks {len(missing)} registry column(s), written as null: {', '.join(missing)}",
                     len(missing))
    known = {c.source_name for c in table.columns} | CONSUMED.get(table.name, frozenset())
    custom = [(name, i) for i, name in enumerate(names) if name not in known]
    custom_types: dict[str, set[str]] = {name: set() for name, _ in custom}
    if custom:
        warnings.add("custom_columns", table.name,
                     f"practice custom columns kept: {', '.join(name for name, _ in custom)}", len(custom))

    parts = PartWriter(out, table.name, "part", part_rows)
    keys = PartWriter(out, table.name, "keys", KEYS_PER_FILE)
    changes = PartWriter(out, table.name, "changes", KEYS_PER_FILE) if index is not None else None
    counts = ChangeCounts()
    modified = table.modified_column
    for raw in rows:
        row: dict[str, Any] = {}
        unparsed: dict[str, str] = {}
        for name, idx, convert in plan:
            value = None if idx is None else raw[idx]
            try:
                row[name] = convert(value)
            except (ValueError, TypeError, ArithmeticError):
                row[name] = None
                unparsed[name] = str(value)
                warnings.add("value_unreadable", table.name,
                             "values the agent could not normalise were written as null and kept under _unparsed")
        if table.name == "appointment":
            _appointment(row, unparsed, warnings)
        elif table.name == "document":
            _document(row, raw[position["file_path"]] if "file_path" in position else None, out, files_root,
                      warnings, files)
        for name, i in custom:
            value = _custom_value(raw[i], zone)
            row[name] = value
            if value is not None:
                custom_types[name].add(_json_type(value))
        if unparsed:
            row[UNPARSED] = unparsed
        key = row.get(table.key)
        if table.name == "practice" and key is not None:
            practice_ids.append(key)
        if key is None:
            warnings.add("row_without_key", table.name, f"rows without {table.key} are kept and will be quarantined")
            key = ""
        line = dumps_row(row)
        digest = row_hash(line)
        keys.write_line(f'{{"k":{_KEY_ENCODE(key)},"h":"{digest}"}}')
        if index is None:
            parts.write_line(line)
            if row.get("file_sha256"):
                files.use(row["file_sha256"])
            continue
        index.seen(table.name, key)
        base_hash = index.lookup(table.name, key)
        rule = None
        if base_hash is None:
            rule = "new"
        elif modified and since and row.get(modified) is not None and row[modified] > since:
            rule = "stamp"
        elif base_hash != digest:
            rule = "hash"
        if rule is not None:
            parts.write_line(line)
            if row.get("file_sha256"):
                files.use(row["file_sha256"])
            assert changes is not None
            changes.write({"k": key, "r": rule})
            setattr(counts, rule, getattr(counts, rule) + 1)
    if index is not None and changes is not None:
        for (key,) in index.deleted(table.name):
            changes.write({"k": key, "r": "deleted"})
            counts.deleted += 1
        if counts.hash:
            warnings.add("changes_missed_by_stamp", table.name,
                         "rows changed without a newer change stamp (found by row hash)", counts.hash)

    columns = [ColumnEntry(name=c.name, type=JSON_TYPE_OF_KIND[c.kind]) for c in table.columns]  # type: ignore[arg-type]
    for name, _ in custom:
        seen = custom_types[name]
        if seen <= {"integer"}:
            json_type = "integer" if seen else "string"
        elif seen <= {"integer", "number"}:
            json_type = "number"
        elif len(seen) == 1:
            json_type = next(iter(seen))
        else:
            json_type = "mixed"
        columns.append(ColumnEntry(name=name, type=json_type, custom=True))  # type: ignore[arg-type]
    part_entries = parts.close()
    key_entries = keys.close()
    change_entries = changes.close() if changes is not None else []
    return TableEntry(name=table.name, source=view, rows=sum(p.rows for p in part_entries), columns=columns,
                      parts=part_entries, keys=key_entries, key_count=sum(p.rows for p in key_entries),
                      changes=change_entries, change_counts=counts if index is not None else None)


def _appointment(row: dict[str, Any], unparsed: dict[str, str], warnings: _Warnings) -> None:
    try:
        row["start_at"] = n.appointment_start(row.get("appointment_date"), row.get("start_hour"), row.get("start_minute"))
    except ValueError:
        row["start_at"] = None
        unparsed["start_at"] = "hour/minute out of range"
    if row.get("patient_id") is None:
        warnings.add("appointment_without_patient", "appointment",
                     "new-patient appointments without a patient record (patid 0); matched later or kept unlinked")
    # keep the registry's column order for readers that look at the raw file
    ordered = {c.name: row.get(c.name) for c in TABLES_BY_NAME["appointment"].columns}
    row.clear()
    row.update(ordered)


def _document(row: dict[str, Any], raw_path: Any, out: Path, root: Path | None, warnings: _Warnings,
              files: FileIndexWriter) -> None:
    row.update({"file_name": None, "file_sha256": None, "file_bytes": None, "media_type": None})
    if raw_path is None or not str(raw_path).strip():
        warnings.add("document_without_file", "document", "documents with no file path")
        return
    if root is None:
        warnings.add("files_root_unknown", "document", "no --files-root given: document files not collected")
        return
    path = _resolve_file(root, str(raw_path))
    if path is None:
        warnings.add("file_path_outside_root", "document",
                     "document paths that are absolute or climb out of the document folder (..) were not read")
        return
    if not path.is_file():
        warnings.add("file_missing", "document", "document files referenced but not found under the document folder")
        return
    digest, size, head = store_file(out, path)
    media = sniff_media_type(head)
    row.update({"file_name": path.name, "file_sha256": digest, "file_bytes": size, "media_type": media})
    files.add(digest, size, media)


TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
