"""Write bundle files: gzip JSON Lines in parts of at most N rows, hashed as written; files by content.

Gzip headers carry no name and mtime 0, so the same rows always give the same bytes and the same
sha256: a re-extract of unchanged data produces identical parts, which the resumable upload skips.
The file index (one line per binary, sorted by sha256) is gathered in a temporary SQLite file, not
in RAM, and written as `files/index-NNNNN.jsonl.gz` parts at the end (FileIndexWriter).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.dentrix.manifest import FILE_INDEX_STEM, FileIndex, PartEntry

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps_row(row: dict[str, Any]) -> str:
    """One JSON line: UTF-8 text kept as is (not \\u-escaped), no spaces."""
    return _ENCODER.encode(row)


class _HashingFile(io.RawIOBase):
    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._fh.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        super().close()


class PartWriter:
    """Writes `tables/<table>/<stem>-NNNNN.jsonl.gz` files of at most `part_rows` lines each
    (or `<folder>/<stem>-NNNNN.jsonl.gz` when `folder` is given: the file index)."""

    def __init__(self, bundle_dir: Path, table: str, stem: str, part_rows: int, folder: str | None = None) -> None:
        self.bundle_dir, self.table, self.stem, self.part_rows = bundle_dir, table, stem, part_rows
        self.folder = folder or f"tables/{table}"
        (bundle_dir / self.folder).mkdir(parents=True, exist_ok=True)
        self.parts: list[PartEntry] = []
        self._raw: _HashingFile | None = None
        self._gz: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._rows = 0

    def _relative(self, index: int) -> str:
        return f"{self.folder}/{self.stem}-{index:05d}.jsonl.gz"

    def _open(self) -> None:
        self._raw = _HashingFile(self.bundle_dir / self._relative(len(self.parts)))
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)  # type: ignore[arg-type]
        self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="\n", write_through=False)
        self._rows = 0

    def _close_part(self) -> None:
        assert self._text is not None and self._gz is not None and self._raw is not None
        self._text.flush()
        self._text.detach()
        self._gz.close()
        self._raw.close()
        self.parts.append(PartEntry(file=self._relative(len(self.parts)), rows=self._rows,
                                    sha256=self._raw.sha.hexdigest(), bytes=self._raw.size))
        self._raw = self._gz = self._text = None

    def write(self, row: dict[str, Any]) -> None:
        self.write_line(dumps_row(row))

    def write_line(self, line: str) -> None:
        """Write one already-encoded JSON line (no newline)."""
        if self._text is None:
            self._open()
        assert self._text is not None
        self._text.write(line + "\n")
        self._rows += 1
        if self._rows >= self.part_rows:
            self._close_part()

    def close(self, always_one_part: bool = True) -> list[PartEntry]:
        """Finish; a table with no rows still gets one empty part so every table has a file."""
        if self._text is not None:
            self._close_part()
        elif always_one_part and not self.parts:
            self._open()
            self._close_part()
        return self.parts


def store_file(bundle_dir: Path, source: Path, chunk: int = 1 << 20) -> tuple[str, int, bytes]:
    """Copy `source` into `files/<sha256>` (streaming, skipped when present); returns hash, size, head."""
    files = bundle_dir / "files"
    files.mkdir(parents=True, exist_ok=True)
    tmp = files / f".incoming-{os.getpid()}"
    sha = hashlib.sha256()
    size = 0
    head = b""
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        while block := src.read(chunk):
            if len(head) < 132:
                head += block[: 132 - len(head)]
            sha.update(block)
            size += len(block)
            dst.write(block)
    digest = sha.hexdigest()
    final = files / digest
    if final.exists():
        tmp.unlink()
    else:
        shutil.move(tmp, final)
    return digest, size, head


class FileIndexWriter:
    """The bundle's binaries, gathered in a temporary SQLite file (flat memory whatever their number).

    `add` records a stored binary (content-addressed: a repeat is ignored); `use` marks it as named
    by a row the bundle ships (a delta stores the files of every document it reads but ships only
    those of its changed rows); `write` removes the unused binaries from `files/` and writes the
    used ones, sorted by sha256, as `files/index-NNNNN.jsonl.gz` parts."""

    def __init__(self, workdir: Path) -> None:
        self.path = Path(workdir) / "file-index.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE f (sha TEXT PRIMARY KEY, bytes INTEGER, media TEXT, used INTEGER) WITHOUT ROWID")

    def add(self, sha256: str, size: int, media_type: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO f VALUES (?, ?, ?, 0)", (sha256, size, media_type))

    def use(self, sha256: str) -> None:
        self.db.execute("UPDATE f SET used = 1 WHERE sha = ? AND used = 0", (sha256,))

    def _rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        cursor = self.db.execute(sql)
        while batch := cursor.fetchmany(1000):
            yield from batch

    def write(self, bundle_dir: Path, part_rows: int) -> FileIndex:
        """Drop unused binaries, write the index parts; returns the manifest's `file_index`."""
        self.db.commit()
        for (sha,) in self._rows("SELECT sha FROM f WHERE used = 0"):
            (bundle_dir / "files" / sha).unlink(missing_ok=True)
        stem_folder, stem = FILE_INDEX_STEM.rsplit("/", 1)
        writer = PartWriter(bundle_dir, "", stem, part_rows, folder=stem_folder)
        count = total = 0
        for sha, size, media in self._rows("SELECT sha, bytes, media FROM f WHERE used = 1 ORDER BY sha"):
            writer.write({"sha256": sha, "bytes": size, "media_type": media})
            count += 1
            total += size
        return FileIndex(count=count, bytes=total, parts=writer.close(always_one_part=False))

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
