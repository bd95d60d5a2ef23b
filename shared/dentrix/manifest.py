"""The bundle manifest: the versioned, self-describing index of one export bundle (the commit marker).

Layout of a bundle (a local folder or a blob prefix `<migration_id>/<bundle_id>/`):

    manifest.json                          written / uploaded last
    tables/<table>/part-00000.jsonl.gz     rows, at most `part_rows` per part
    tables/<table>/keys-00000.jsonl.gz     every current key with its row hash (delta detection)
    tables/<table>/changes-00000.jsonl.gz  delta only: key and the rule that found each change
    files/index-00000.jsonl.gz             the file index: one line per binary, sorted by sha256
    files/<sha256>                         content-addressed binaries

Format 2 moved the file index out of the manifest (format 1 listed every binary in `files[]`, so
the manifest, and every process holding it, grew with the number of images). The manifest now
lists the index's parts like a table's (file, rows, sha256, bytes), so its own hash still covers
the index, and it stays a few kilobytes whatever the practice's size.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.dentrix.normalise import TMoneyUnit

BUNDLE_FORMAT = "bridgework.dentrix-bundle/2"
SUPPORTED_FORMATS = (BUNDLE_FORMAT,)
"""Formats this code reads. Format 1 (files[] inline) is refused with a message naming both: a
bundle is extracted for one migration and never kept, so re-extracting is cheaper than a second
reader path."""
MANIFEST_NAME = "manifest.json"
DEFAULT_PART_ROWS = 5000
FILE_INDEX_STEM = "files/index"

TJsonType = Literal["string", "integer", "number", "boolean", "object", "array", "mixed"]
"""`mixed`: a custom column whose values had more than one scalar type."""
TBundleKind = Literal["full", "delta"]
TChangeRule = Literal["new", "stamp", "hash", "deleted"]
"""Why a delta carries a row: new key, change stamp after the watermark, row hash differs from the
base bundle (the stamp missed it), or the key disappeared."""

_SAFE_PATH = re.compile(
    r"^(tables/[a-z0-9_]+/(part|keys|changes)-\d{5}\.jsonl\.gz|files/index-\d{5}\.jsonl\.gz|files/[0-9a-f]{64})$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_relative_path(path: str) -> str:
    """A path inside the bundle: only the documented shapes, so nothing can escape its folder."""
    if not _SAFE_PATH.match(path):
        raise ValueError("path is not a bundle path (tables/<table>/part-NNNNN.jsonl.gz, "
                         "files/index-NNNNN.jsonl.gz or files/<sha256>)")
    return path


def file_index_path(index: int) -> str:
    """The bundle path of the file index's part `index`."""
    return f"{FILE_INDEX_STEM}-{index:05d}.jsonl.gz"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class PartEntry(_Strict):
    """One gzip JSON Lines file."""

    file: Annotated[str, AfterValidator(check_relative_path)]
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the file's bytes as stored (compressed)."""
    bytes: int = Field(ge=0)


class ColumnEntry(_Strict):
    """A column as written: its name, JSON type, and whether the registry knows it."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: TJsonType
    custom: bool = False
    """A practice custom column: kept, typed by inference from the values seen."""


class ChangeCounts(_Strict):
    new: int = 0
    stamp: int = 0
    hash: int = 0
    deleted: int = 0


class TableEntry(_Strict):
    """One table of the bundle."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    source: str
    """The source view or table it was read from."""
    rows: int = Field(ge=0)
    columns: list[ColumnEntry]
    parts: list[PartEntry]
    keys: list[PartEntry] = []
    """Every key the source holds now, with its row hash (full and delta bundles alike)."""
    key_count: int = 0
    changes: list[PartEntry] = []
    """Delta only: one line per changed or deleted key with its rule."""
    change_counts: ChangeCounts | None = None

    @model_validator(mode="after")
    def _counts_add_up(self) -> TableEntry:
        if sum(p.rows for p in self.parts) != self.rows:
            raise ValueError("table rows differ from the sum of its parts' rows")
        if sum(p.rows for p in self.keys) != self.key_count:
            raise ValueError("key_count differs from the sum of its key files' rows")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("a column is listed twice")
        return self


class FileEntry(_Strict):
    """One binary referenced by a row (documents and images): one line of the file index.

    No file name: content is shared by every row that holds it, and names can carry patient
    names (PHI); the document row keeps its own `file_name`."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    media_type: str

    @property
    def path(self) -> str:
        return f"files/{self.sha256}"


class FileIndex(_Strict):
    """Where the file index lives: gzip JSON Lines parts `files/index-NNNNN.jsonl.gz`, one line per
    binary (a FileEntry: sha256, bytes, media_type), sorted by sha256 across parts, no repeats."""

    count: int = Field(default=0, ge=0)
    """Binaries in the bundle: the sum of the parts' rows."""
    bytes: int = Field(default=0, ge=0)
    """Their total size (the reader checks it against the lines)."""
    parts: list[PartEntry] = []

    @model_validator(mode="after")
    def _counts_add_up(self) -> FileIndex:
        if sum(p.rows for p in self.parts) != self.count:
            raise ValueError("file index count differs from the sum of its parts' rows")
        for number, part in enumerate(self.parts):
            if part.file != file_index_path(number):
                raise ValueError(f"file index part {number} must be {file_index_path(number)}")
        return self


class SourceInfo(_Strict):
    product: Literal["dentrix_g", "dentrix_enterprise", "synthetic"]
    version: str | None = None
    driver: Literal["odbc", "sqlite"]
    database: str | None = None
    """Database name (never a connection string: those can carry passwords)."""
    practice_id: str | None = None


class BundleWarning(_Strict):
    """Something the practice should know, by code and count (never values)."""

    code: str
    table: str | None = None
    count: int = 0
    message: str


class Manifest(_Strict):
    """The manifest of one bundle."""

    format: Literal["bridgework.dentrix-bundle/2"] = BUNDLE_FORMAT
    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    kind: TBundleKind = "full"
    base_bundle_id: str | None = None
    """Delta only: the bundle whose keys and row hashes the delta compares against."""
    since: str | None = None
    """Delta only: the watermark (local datetime) the change stamps were compared with."""
    watermark: str
    """When this extraction started, in practice-local time: the next delta's `since`."""
    created_utc: str
    agent_version: str
    source: SourceInfo
    practice_timezone: str
    source_text_encoding: str
    money_source_unit: TMoneyUnit
    money_unit: Literal["cents"] = "cents"
    part_rows: int = Field(ge=1)
    tables: list[TableEntry]
    file_index: FileIndex
    """The binaries, listed in parts outside the manifest (format 2): see FileIndex."""
    warnings: list[BundleWarning] = []

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError("a table is listed twice")
        if (self.kind == "delta") != (self.base_bundle_id is not None):
            raise ValueError("base_bundle_id is required for a delta and forbidden for a full bundle")
        return self

    def table(self, name: str) -> TableEntry:
        for entry in self.tables:
            if entry.name == name:
                return entry
        raise KeyError(name)
