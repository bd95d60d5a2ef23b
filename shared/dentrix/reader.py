"""Read an export bundle (Blob Storage or a local folder) with flat memory, row by row, verified.

Two kinds of problem, two outcomes:
- the bundle does not match its manifest (missing file, hash, row count, columns, JSON types,
  gzip/JSON damage, unsafe path): the whole bundle is refused with a `BundleRefused` subclass
  naming file, line and field. `verify()` checks every file before anything is loaded, and each
  part is checked whole before any of its rows is handed out;
- a row breaks the contract's rules (bad date, unknown tooth, missing key, a value the agent could
  not normalise): the row is quarantined as (file, line, field, reason), never with its values.
For every table, loaded + quarantined = the manifest's row count.

Memory is bounded by one part (at most `part_rows` rows), never by the bundle's size, and that
holds for the binaries too (format 2). The file index is never held whole: it lives in
`files/index-NNNNN.jsonl.gz` parts (sorted by sha256, checked part by part: size, sha256, gzip,
line count, line shape, order, total bytes) and is only ever streamed:
- a pass over all binaries (`iter_files`, `verify_files`, the agent's upload and validate,
  discovery's totals) reads the index one part at a time;
- a document row carries what its file's users need (`file_bytes`, `media_type`), so the
  attachment stage and discovery never look a digest up;
- that those row values are true, and that every loaded row's digest is in the index, is checked
  once, by `verify()`: it collects the digests of loaded rows in a bounded batch (at most
  `file_check_batch` distinct digests, default 20,000, ~5 MB) and, when the batch is full and at
  the end, streams the index once and strikes off what it finds. A digest left over refuses the
  bundle (BundleFileNotIndexed, naming the row's part file, line and field). Time is one index
  pass per 20,000 referenced files (one pass up to 20,000 files, three at 50,000), memory one batch
  plus one index part. `iter_part` does not repeat the check: nothing is loaded from a bundle
  before `verify()` has returned, and `iter_file` re-checks each binary's sha256 as it reads it.
  (Rejected: a set of every digest, which is what grew with the images; a pass over the index per
  document part, quadratic in the number of files.)

Typical use (cloud side):

    reader = BundleReader.from_container(container_client, f"{migration_id}/{bundle_id}/")
    report = reader.verify()                       # raises BundleRefused, or returns counts
    for item in reader.iter_part("patient", 0):    # one load batch
        if isinstance(item, LoadedRow): ...        # item.row is the typed model
        else: ...                                  # QuarantinedRow: file, line, problems
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from shared.dentrix.manifest import (
    BUNDLE_FORMAT,
    MANIFEST_NAME,
    SHA256_RE,
    SUPPORTED_FORMATS,
    FileEntry,
    Manifest,
    PartEntry,
    TableEntry,
    TChangeRule,
    check_relative_path,
    file_index_path,
)
from shared.dentrix.models import RowModel, row_model
from shared.dentrix.tables import JSON_TYPE_OF_KIND, TABLE_NAMES, get_table
from shared.errors import (
    BundleColumnMismatch,
    BundleCorrupt,
    BundleFileMissing,
    BundleFileNotIndexed,
    BundleFormatUnsupported,
    BundleHashMismatch,
    BundleManifestInvalid,
    BundleRowCountMismatch,
    BundleUnsafePath,
)

UNPARSED = "_unparsed"
RETRY_HINT = "re-run the agent's extract and upload"
FILE_CHECK_BATCH = 20_000
"""Distinct digests `verify()` collects before one pass over the file index (bounds its memory)."""


# -- where the bundle lives --------------------------------------------------------------------


class BundleStore(Protocol):
    """Read access to one bundle's files by bundle-relative path."""

    def read_bytes(self, path: str) -> bytes:
        """The whole file; FileNotFoundError when absent."""
        ...

    def iter_chunks(self, path: str) -> Iterator[bytes]:
        """The file in chunks (binaries can be large); FileNotFoundError when absent."""
        ...


class DirectoryStore:
    """A bundle folder on disk (the agent's `validate`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def iter_chunks(self, path: str) -> Iterator[bytes]:
        with open(self.root / path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk


class ContainerStore:
    """A bundle under a blob prefix, through an azure.storage.blob ContainerClient (Azure or Azurite)."""

    def __init__(self, container: Any, prefix: str) -> None:
        self.container = container
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def _download(self, path: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.container.download_blob(self.prefix + path)
        except ResourceNotFoundError:
            raise FileNotFoundError(path) from None

    def read_bytes(self, path: str) -> bytes:
        return bytes(self._download(path).readall())

    def iter_chunks(self, path: str) -> Iterator[bytes]:
        yield from self._download(path).chunks()


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason a row was quarantined: a field (or "(row)") and a reason; never the value."""

    field: str
    reason: str
    code: str


@dataclass(frozen=True)
class LoadedRow:
    table: str
    file: str
    line: int
    key: str
    row: RowModel


@dataclass(frozen=True)
class QuarantinedRow:
    table: str
    file: str
    line: int
    key: str | None
    problems: tuple[Problem, ...]


@dataclass
class TableReport:
    rows: int
    loaded: int = 0
    quarantined: int = 0


@dataclass
class BundleReport:
    """What `verify()` found: counts per table and every quarantined row (no values)."""

    bundle_id: str
    kind: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    files_checked: int = 0
    files_indexed: int = 0
    """Lines of the file index (every one checked for shape, order and total size)."""


@dataclass
class IndexStats:
    """How the file index was read (an instrumentation hook: tests assert it is never held whole)."""

    parts_read: int = 0
    """Index parts read (each pass over the index reads every part once)."""
    passes: int = 0
    """Whole passes over the index."""
    lines_held_max: int = 0
    """The most index lines held at once: one part's, never the index's."""
    batch_max: int = 0
    """The most row digests `verify()` held at once waiting for an index pass."""


_JSON_CHECK = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "mixed": lambda v: isinstance(v, str | int | float | bool),
}
# The exact Python types json.loads produces for each declared JSON type (checked per value, so a
# set lookup on type() keeps the structural pass cheap); None is always allowed (null).
_JSON_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str, type(None)}),
    "integer": frozenset({int, type(None)}),
    "number": frozenset({int, float, type(None)}),
    "boolean": frozenset({bool, type(None)}),
    "object": frozenset({dict, type(None)}),
    "array": frozenset({list, type(None)}),
    "mixed": frozenset({str, int, float, bool, type(None)}),
}


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# NaN and Infinity are not JSON (RFC 8259) though Python reads them: refused as a line that is not
# JSON, or a non-finite number would reach a Dataverse payload (found by fuzzing).
_DECODE = json.JSONDecoder(parse_constant=_not_json).decode


def _json_name(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "object", "array"):
        if _JSON_CHECK[name](value):
            return name
    return "null"


class BundleReader:
    """A verified, streaming view of one bundle. Construction reads and checks the manifest only."""

    def __init__(self, store: BundleStore) -> None:
        self.store = store
        self.manifest = self._load_manifest()
        self.index_stats = IndexStats()

    @classmethod
    def from_container(cls, container: Any, prefix: str) -> BundleReader:
        """Open the bundle under `prefix` (e.g. "<migration_id>/<bundle_id>/") in a ContainerClient."""
        return cls(ContainerStore(container, prefix))

    @classmethod
    def from_directory(cls, path: Path) -> BundleReader:
        return cls(DirectoryStore(path))

    # -- manifest ------------------------------------------------------------------------------
    def _load_manifest(self) -> Manifest:
        try:
            raw = self.store.read_bytes(MANIFEST_NAME)
        except FileNotFoundError:
            raise BundleFileMissing(f"{MANIFEST_NAME} is missing: the bundle was not committed; {RETRY_HINT}",
                                    file=MANIFEST_NAME) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise BundleManifestInvalid(f"{MANIFEST_NAME} is not valid JSON; {RETRY_HINT}", file=MANIFEST_NAME) from None
        self._check_format(data)
        self._check_paths(data)
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BundleManifestInvalid(
                f"{MANIFEST_NAME} breaks the manifest contract at {where}: {first['msg']} "
                f"({exc.error_count()} problem(s)); {RETRY_HINT}", file=MANIFEST_NAME, field=where) from None
        self._check_contract(manifest)
        return manifest

    @staticmethod
    def _check_format(data: Any) -> None:
        """Refuse a bundle of another format version first, saying which it is and which are read."""
        found = data.get("format") if isinstance(data, dict) else None
        if found in SUPPORTED_FORMATS:
            return
        shown = repr(found)[:60] if found is not None else "no format"
        raise BundleFormatUnsupported(
            f"{MANIFEST_NAME} is bundle format {shown}; this reader supports {', '.join(SUPPORTED_FORMATS)} "
            f"only (format 2 moved the file list out of the manifest into files/index-NNNNN.jsonl.gz): "
            f"extract the practice again with the current agent and upload that bundle",
            file=MANIFEST_NAME, field="format", found=str(found)[:60], supported=BUNDLE_FORMAT)

    @staticmethod
    def _check_paths(data: Any) -> None:
        """Refuse any manifest path outside the documented shapes before anything else is read."""
        if not isinstance(data, dict):
            return
        index = data.get("file_index")
        for number, part in enumerate((index.get("parts") or []) if isinstance(index, dict) else []):
            path = part.get("file") if isinstance(part, dict) else None
            if isinstance(path, str) and path != file_index_path(number):
                raise BundleUnsafePath(
                    f"{MANIFEST_NAME}: file index part {number} is {path[:120]!r}; it must be "
                    f"{file_index_path(number)} (no '..', no absolute paths); bundle refused",
                    file=MANIFEST_NAME, field="file_index.parts")
        for table in data.get("tables") or []:
            if not isinstance(table, dict):
                continue
            name = table.get("name")
            for group in ("parts", "keys", "changes"):
                for part in table.get(group) or []:
                    path = part.get("file") if isinstance(part, dict) else None
                    if not isinstance(path, str):
                        continue
                    try:
                        check_relative_path(path)
                    except ValueError:
                        raise BundleUnsafePath(
                            f"{MANIFEST_NAME}: table {name!s:.40} lists file {path[:120]!r}, which is not a bundle "
                            f"path (it must be tables/<table>/part-NNNNN.jsonl.gz; no '..', no absolute paths); "
                            f"bundle refused", file=MANIFEST_NAME, field=f"tables.{name}.{group}") from None
                    stem = {"parts": "part", "keys": "keys", "changes": "changes"}[group]
                    if not path.startswith(f"tables/{name}/{stem}-"):
                        raise BundleUnsafePath(
                            f"{MANIFEST_NAME}: table {name!s:.40} lists file {path[:120]!r} outside its own folder "
                            f"tables/{name}/; bundle refused", file=MANIFEST_NAME, field=f"tables.{name}.{group}")

    @staticmethod
    def _check_contract(manifest: Manifest) -> None:
        names = {t.name for t in manifest.tables}
        unknown = sorted(names - set(TABLE_NAMES))
        if unknown:
            raise BundleManifestInvalid(f"{MANIFEST_NAME} lists tables the contract does not know: {', '.join(unknown)}",
                                        file=MANIFEST_NAME, field="tables")
        missing = [t for t in TABLE_NAMES if t not in names]
        if missing:
            raise BundleManifestInvalid(f"{MANIFEST_NAME} lacks tables: {', '.join(missing)}; {RETRY_HINT}",
                                        file=MANIFEST_NAME, field="tables")
        for entry in manifest.tables:
            spec = get_table(entry.name)
            declared = {c.name: c for c in entry.columns}
            for column in spec.columns:
                found = declared.get(column.name)
                expected = JSON_TYPE_OF_KIND[column.kind]
                if found is None:
                    raise BundleColumnMismatch(f"{MANIFEST_NAME}: table {entry.name} does not declare column "
                                               f"{column.name}", file=MANIFEST_NAME, field=f"{entry.name}.{column.name}")
                if found.type != expected or found.custom:
                    raise BundleColumnMismatch(
                        f"{MANIFEST_NAME}: table {entry.name} column {column.name} is declared {found.type}"
                        f"{' (custom)' if found.custom else ''}; the contract says {expected}",
                        file=MANIFEST_NAME, field=f"{entry.name}.{column.name}")
            for name, col in declared.items():
                if name not in spec.column_names and not col.custom:
                    raise BundleColumnMismatch(f"{MANIFEST_NAME}: table {entry.name} column {name} is not in the "
                                               f"contract and not marked custom", file=MANIFEST_NAME,
                                               field=f"{entry.name}.{name}")
        if manifest.kind == "full" and any(t.changes for t in manifest.tables):
            raise BundleManifestInvalid(f"{MANIFEST_NAME}: a full bundle carries change lists", file=MANIFEST_NAME)

    # -- raw part access -----------------------------------------------------------------------
    def _read_part(self, part: PartEntry) -> list[bytes]:
        """The part's lines, after checking size, sha256, gzip integrity and line count."""
        try:
            data = self.store.read_bytes(part.file)
        except FileNotFoundError:
            raise BundleFileMissing(f"{part.file} is listed in the manifest but missing from the bundle; {RETRY_HINT}",
                                    file=part.file) from None
        digest = hashlib.sha256(data).hexdigest()
        lines: list[bytes] | None = None
        problem: Exception | None = None
        try:
            # split on LF only: JSON escapes CR, and text may hold U+2028 that str.splitlines would cut
            lines = gzip.GzipFile(fileobj=io.BytesIO(data)).read().split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
        except EOFError:
            problem = BundleCorrupt(f"{part.file} is truncated: its gzip stream ends early ({len(data)} of "
                                    f"{part.bytes} bytes); {RETRY_HINT}", file=part.file)
        except (OSError, zlib.error):
            problem = BundleCorrupt(f"{part.file} is not a valid gzip file; {RETRY_HINT}", file=part.file)
        if digest != part.sha256 or len(data) != part.bytes:
            if isinstance(problem, BundleCorrupt) and "truncated" in str(problem):
                raise problem
            if lines is not None and len(lines) != part.rows:
                raise BundleRowCountMismatch(f"{part.file} holds {len(lines)} rows, the manifest says {part.rows}; "
                                             f"{RETRY_HINT}", file=part.file)
            damage = " and is no longer valid gzip" if problem is not None else ""
            raise BundleHashMismatch(f"{part.file}: sha256 differs from the manifest{damage} (changed or damaged "
                                     f"after extraction); {RETRY_HINT}", file=part.file)
        if problem is not None:  # pragma: no cover - a matching hash means the agent wrote it this way
            raise problem
        assert lines is not None
        if len(lines) != part.rows:
            raise BundleRowCountMismatch(f"{part.file} holds {len(lines)} rows, the manifest says {part.rows}",
                                         file=part.file)
        return lines

    def _parse_part(self, entry: TableEntry, part: PartEntry) -> list[dict[str, Any]]:
        """Every line as a dict, each checked against the manifest's columns and JSON types."""
        allowed: dict[str, frozenset[type]] = {c.name: _JSON_TYPES[c.type] for c in entry.columns}
        expected = set(allowed)
        with_unparsed = expected | {UNPARSED}
        allowed[UNPARSED] = frozenset({dict, type(None)})
        rows = []
        lines = self._read_part(part)
        lines.reverse()  # each line let go of once parsed: a part is never held as both bytes and objects
        number = 0
        while lines:
            line = lines.pop()
            number += 1
            try:
                obj = _DECODE(line.decode("utf-8"))
            except ValueError:
                raise BundleCorrupt(f"{part.file} line {number} is not JSON (or not UTF-8)", file=part.file,
                                    line=number) from None
            if type(obj) is not dict:
                raise BundleCorrupt(f"{part.file} line {number} is not a JSON object", file=part.file, line=number)
            keys = obj.keys()
            if keys != expected and keys != with_unparsed:
                present = set(keys) - {UNPARSED}
                extra, lacking = sorted(present - expected), sorted(expected - present)
                what = f"unexpected column {extra[0]}" if extra else f"missing column {lacking[0]}"
                raise BundleColumnMismatch(f"{part.file} line {number}: {what} (columns must be exactly the "
                                           f"manifest's)", file=part.file, line=number,
                                           field=(extra or lacking)[0])
            for name, value in obj.items():
                if type(value) not in allowed[name]:
                    if name == UNPARSED:
                        raise BundleColumnMismatch(f"{part.file} line {number}: {UNPARSED} must be an object",
                                                   file=part.file, line=number, field=UNPARSED)
                    declared = next(c.type for c in entry.columns if c.name == name)
                    raise BundleColumnMismatch(
                        f"{part.file} line {number} column {name}: a {_json_name(value)} where the manifest "
                        f"declares {declared}", file=part.file, line=number, field=name)
            unparsed = obj.get(UNPARSED)
            if unparsed is not None and not set(unparsed) <= expected:
                raise BundleColumnMismatch(f"{part.file} line {number}: {UNPARSED} must name declared columns",
                                           file=part.file, line=number, field=UNPARSED)
            rows.append(obj)
        return rows

    # -- rows ----------------------------------------------------------------------------------
    def table(self, name: str) -> TableEntry:
        try:
            return self.manifest.table(name)
        except KeyError:
            raise KeyError(f"bundle has no table {name!r}") from None

    def part_count(self, table: str) -> int:
        return len(self.table(table).parts)

    def iter_part(self, table: str, part: int, first_line: int = 1,
                  last_line: int | None = None) -> Iterator[LoadedRow | QuarantinedRow]:
        """Rows of one part (lines `first_line`..`last_line`, 1-based, inclusive) as typed rows or
        quarantine records. The whole part is checked before its first row is yielded; raises a
        BundleRefused subclass if it does not match the manifest, IndexError for a bad part number."""
        entry = self.table(table)
        part_entry = entry.parts[part]
        rows: list[dict[str, Any] | None] = list(self._parse_part(entry, part_entry))
        model = row_model(table)
        key_name = get_table(table).key
        last = len(rows) if last_line is None else min(last_line, len(rows))
        for number in range(max(first_line, 1), last + 1):
            obj, rows[number - 1] = rows[number - 1], None  # the raw object goes once its typed row exists
            yield self._validate(table, part_entry.file, number, obj or {}, model, key_name)

    def _validate(self, table: str, file: str, line: int, obj: dict[str, Any], model: type[RowModel],
                  key_name: str) -> LoadedRow | QuarantinedRow:
        key = obj.get(key_name)
        key = key if isinstance(key, str) and key else None
        problems: list[Problem] = []
        unparsed = obj.pop(UNPARSED, None)
        if unparsed:
            problems += [Problem(name, "the agent could not normalise the source value", "unparsed")
                         for name in sorted(unparsed)]
        try:
            row = model.model_validate(obj)
        except ValidationError as exc:
            for error in exc.errors(include_input=False, include_url=False):
                where = ".".join(str(p) for p in error["loc"]) or "(row)"
                problems.append(Problem(where, error["msg"], error["type"]))
            row = None
        if problems or row is None:
            return QuarantinedRow(table, file, line, key, tuple(problems))
        return LoadedRow(table, file, line, key or "", row)

    def iter_table(self, table: str) -> Iterator[LoadedRow | QuarantinedRow]:
        """Every row of `table`, part after part (each part checked before its rows)."""
        for index in range(self.part_count(table)):
            yield from self.iter_part(table, index)

    def iter_keys(self, table: str) -> Iterator[tuple[str, str]]:
        """(key, row hash) for every row the source holds now: deletions are base keys not listed."""
        for part in self.table(table).keys:
            for number, line in enumerate(self._read_part(part), start=1):
                item = self._small_json(part.file, number, line, ("k", "h"))
                yield item["k"], item["h"]

    def iter_changes(self, table: str) -> Iterator[tuple[str, TChangeRule]]:
        """Delta only: (key, rule) per changed row (`new`, `stamp`, `hash`) and per deleted key (`deleted`)."""
        for part in self.table(table).changes:
            for number, line in enumerate(self._read_part(part), start=1):
                item = self._small_json(part.file, number, line, ("k", "r"))
                yield item["k"], item["r"]

    @staticmethod
    def _small_json(file: str, number: int, line: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
        try:
            item = _DECODE(line.decode("utf-8"))
        except ValueError:
            raise BundleCorrupt(f"{file} line {number} is not JSON", file=file, line=number) from None
        if not isinstance(item, dict) or any(not isinstance(item.get(f), str) for f in fields):
            raise BundleCorrupt(f"{file} line {number} lacks {'/'.join(fields)}", file=file, line=number)
        return item

    # -- the file index (format 2) ----------------------------------------------------------------
    def iter_files(self) -> Iterator[FileEntry]:
        """Every binary of the file index, in sha256 order, read one part at a time (never whole).

        Each part is checked whole (size, sha256, gzip, line count) before its first line is handed
        out, and each line for its shape, for strictly rising sha256 (sorted, no repeats across
        parts) and, at the end, the lines' total size against the manifest. Raises BundleRefused
        subclasses naming the index part and line."""
        index = self.manifest.file_index
        previous = ""
        total = 0
        self.index_stats.passes += 1
        for part in index.parts:
            lines = self._read_part(part)
            self.index_stats.parts_read += 1
            self.index_stats.lines_held_max = max(self.index_stats.lines_held_max, len(lines))
            for number, line in enumerate(lines, start=1):
                entry = self._index_line(part.file, number, line)
                if entry.sha256 <= previous:
                    why = "lists a file twice" if entry.sha256 == previous else "is not sorted by sha256"
                    raise BundleCorrupt(f"{part.file} line {number}: the file index {why}; {RETRY_HINT}",
                                        file=part.file, line=number, field="sha256")
                previous = entry.sha256
                total += entry.bytes
                yield entry
            del lines
        if total != index.bytes:
            raise BundleRowCountMismatch(f"{MANIFEST_NAME}: file_index.bytes is {index.bytes}, the index's lines add up "
                                         f"to {total}; {RETRY_HINT}", file=MANIFEST_NAME, field="file_index.bytes")

    @staticmethod
    def _index_line(file: str, number: int, line: bytes) -> FileEntry:
        """One index line as a FileEntry, checked by hand (a pydantic validation per line would cost
        more than the rest of the pass)."""
        try:
            item = _DECODE(line.decode("utf-8"))
        except ValueError:
            raise BundleCorrupt(f"{file} line {number} is not JSON", file=file, line=number) from None
        if type(item) is not dict or item.keys() != {"sha256", "bytes", "media_type"}:
            raise BundleCorrupt(f"{file} line {number} must be an object with exactly sha256, bytes, media_type",
                                file=file, line=number)
        sha, size, media = item["sha256"], item["bytes"], item["media_type"]
        if type(sha) is not str or not SHA256_RE.match(sha):
            raise BundleCorrupt(f"{file} line {number} sha256: not 64 lowercase hex digits", file=file, line=number,
                                field="sha256")
        if type(size) is not int or size < 0:
            raise BundleCorrupt(f"{file} line {number} bytes: not a non-negative integer", file=file, line=number,
                                field="bytes")
        if type(media) is not str or not media:
            raise BundleCorrupt(f"{file} line {number} media_type: not a non-empty string", file=file, line=number,
                                field="media_type")
        return FileEntry.model_construct(sha256=sha, bytes=size, media_type=media)

    def _chunks(self, sha256: str) -> Iterator[bytes]:
        if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
            raise KeyError("not a sha256 (64 lowercase hex digits): no such bundle file")
        path = f"files/{sha256}"
        try:
            yield from self.store.iter_chunks(path)
        except FileNotFoundError:
            raise BundleFileMissing(f"{path} is referenced but missing from the bundle; {RETRY_HINT}",
                                    file=path) from None

    def iter_file(self, sha256: str) -> Iterator[bytes]:
        """The chunks of one binary, its content checked against its name as it is read: after the
        last chunk, BundleHashMismatch if the bytes are not the sha256 they are stored under (so a
        caller that joins the chunks never uses a damaged file). KeyError for a malformed digest.

        That the index lists the digest is `verify()`'s check, not this one's (no whole index here)."""
        sha = hashlib.sha256()
        for chunk in self._chunks(sha256):
            sha.update(chunk)
            yield chunk
        if sha.hexdigest() != sha256:
            raise BundleHashMismatch(f"files/{sha256}: content does not match its name; {RETRY_HINT}",
                                     file=f"files/{sha256}")

    # -- whole bundle --------------------------------------------------------------------------
    def verify(self, check_files: bool = True, max_quarantined: int = 10_000,
               file_check_batch: int = FILE_CHECK_BATCH) -> BundleReport:
        """Check every part, key list, change list, the file index and (by default) every binary
        against the manifest, and validate every row. Raises the first BundleRefused found; otherwise
        returns the counts and the quarantined rows (the first `max_quarantined` of them kept, so
        memory stays bounded; the counts are always exact). Nothing should be loaded from a bundle
        before this returns.

        Every loaded row's binary must be in the file index with the size and media type the row
        states: checked in batches of `file_check_batch` digests, one index pass per batch (see the
        module docstring); a miss raises BundleFileNotIndexed naming the row's file, line and field."""
        report = BundleReport(self.manifest.bundle_id, self.manifest.kind)
        pending = FileReferenceCheck(self, file_check_batch)
        for entry in self.manifest.tables:
            counts = TableReport(rows=entry.rows)
            file_columns = [c.name for c in get_table(entry.name).columns if c.kind == "sha256"]
            for index in range(len(entry.parts)):
                for item in self.iter_part(entry.name, index):
                    if isinstance(item, LoadedRow):
                        counts.loaded += 1
                        for name in file_columns:
                            digest = getattr(item.row, name, None)
                            if digest is not None:
                                pending.add(digest, item.file, item.line, name, getattr(item.row, "file_bytes", None),
                                            getattr(item.row, "media_type", None))
                    else:
                        counts.quarantined += 1
                        if len(report.quarantined) < max_quarantined:
                            report.quarantined.append(item)
            for listing in (*entry.keys, *entry.changes):
                self._read_part(listing)  # size, sha256, gzip and line count
            report.tables[entry.name] = counts
        report.files_indexed = pending.finish()  # the last pass also checks the whole index
        if check_files:
            report.files_checked = self.verify_files()
        return report

    def verify_files(self, concurrency: int = 8) -> int:
        """Hash every binary the index lists (several at a time: each is one round trip), streaming
        the index; raises BundleFileMissing / BundleHashMismatch naming the first bad file. Returns
        how many were checked."""
        from concurrent.futures import ThreadPoolExecutor

        def check(listed: FileEntry) -> None:
            sha = hashlib.sha256()
            size = 0
            for chunk in self._chunks(listed.sha256):
                sha.update(chunk)
                size += len(chunk)
            if sha.hexdigest() != listed.sha256 or size != listed.bytes:
                raise BundleHashMismatch(f"files/{listed.sha256}: content does not match its name and the file "
                                         f"index's size; {RETRY_HINT}", file=f"files/{listed.sha256}")

        window = max(1, concurrency) * 4  # bounded: Executor.map would queue every file at once
        checked = 0
        batch: list[FileEntry] = []
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for listed in self.iter_files():
                batch.append(listed)
                if len(batch) >= window:
                    for _ in pool.map(check, batch):
                        pass
                    checked += len(batch)
                    batch = []
            for _ in pool.map(check, batch):
                pass
            checked += len(batch)
        return checked


class FileReferenceCheck:
    """`verify()`'s bounded batch of row digests waiting for a pass over the file index: `add` each
    loaded row's digest (with the size and media type the row states), `finish` at the end. Raises
    BundleFileNotIndexed naming the earliest row whose file the index lacks or describes otherwise."""

    def __init__(self, reader: BundleReader, limit: int = FILE_CHECK_BATCH) -> None:
        self.reader, self.limit = reader, max(1, limit)
        self.waiting: dict[str, tuple[str, int, str, int | None, str | None]] = {}
        self.passes = 0
        self.indexed = 0

    def add(self, digest: str, file: str, line: int, column: str, size: int | None, media: str | None) -> None:
        if digest in self.waiting:
            return
        self.waiting[digest] = (file, line, column, size, media)
        stats = self.reader.index_stats
        stats.batch_max = max(stats.batch_max, len(self.waiting))
        if len(self.waiting) >= self.limit:
            self._pass()

    def finish(self) -> int:
        """The last pass (always one, so the index is checked even when no row names a file)."""
        self._pass()
        return self.indexed

    def _pass(self) -> None:
        waiting = self.waiting
        self.indexed = 0
        for entry in self.reader.iter_files():
            self.indexed += 1
            found = waiting.pop(entry.sha256, None)
            if found is None:
                continue
            file, line, column, size, media = found
            if size is not None and size != entry.bytes:
                raise BundleFileNotIndexed(f"{file} line {line} {column}: the row says its file has {size} bytes, the "
                                           f"file index says {entry.bytes}; {RETRY_HINT}", file=file, line=line,
                                           field=column)
            if media is not None and media != entry.media_type:
                raise BundleFileNotIndexed(f"{file} line {line} {column}: the row's media_type differs from the file "
                                           f"index's; {RETRY_HINT}", file=file, line=line, field=column)
        if waiting:
            # insertion order: the first left over is the earliest row that names an unindexed file
            digest, (file, line, column, _, _) = next(iter(waiting.items()))
            raise BundleFileNotIndexed(f"{file} line {line} {column}: names files/{digest}, which the file index "
                                       f"does not list ({len(waiting)} such file(s) in this batch); {RETRY_HINT}",
                                       file=file, line=line, field=column)
