"""Write bundle files: gzip JSON Lines in parts of at most N rows, hashed as written; files by content.

Gzip headers carry no name and mtime 0, so the same rows always give the same bytes and the same
sha256: a re-extract of unchanged data produces identical parts, which the resumable upload skips.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from shared.dentrix.manifest import PartEntry

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
    """Writes `<folder>/<stem>-NNNNN.jsonl.gz` files of at most `part_rows` lines each."""

    def __init__(self, bundle_dir: Path, table: str, stem: str, part_rows: int) -> None:
        self.bundle_dir, self.table, self.stem, self.part_rows = bundle_dir, table, stem, part_rows
        (bundle_dir / "tables" / table).mkdir(parents=True, exist_ok=True)
        self.parts: list[PartEntry] = []
        self._raw: _HashingFile | None = None
        self._gz: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._rows = 0

    def _relative(self, index: int) -> str:
        return f"tables/{self.table}/{self.stem}-{index:05d}.jsonl.gz"

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
