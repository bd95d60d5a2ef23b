"""`python -m agent validate DIR`: check a bundle folder against its manifest and the contract.

Runs the cloud side's own reader (shared/dentrix/reader.py) on the folder, so the agent refuses
exactly what the cloud would. Prints every problem as `file:line field: reason` (never a value)
and returns non-zero when there is any.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from shared.dentrix.reader import BundleReader, FileReferenceCheck, QuarantinedRow
from shared.dentrix.tables import get_table
from shared.errors import BundleRefused


@dataclass
class ValidationResult:
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    quarantined: int = 0


def validate_bundle(bundle: Path) -> ValidationResult:
    """Every problem of the bundle at `bundle`: structural ones per file, then bad rows."""
    result = ValidationResult()
    try:
        reader = BundleReader.from_directory(bundle)
    except BundleRefused as exc:
        result.problems.append(_refusal(exc))
        return result
    references = FileReferenceCheck(reader)
    files_column = {t.name: [c.name for c in get_table(t.name).columns if c.kind == "sha256"]
                    for t in reader.manifest.tables}
    for entry in reader.manifest.tables:
        for index, _part in enumerate(entry.parts):
            try:
                for item in reader.iter_part(entry.name, index):
                    result.rows += 1
                    if isinstance(item, QuarantinedRow):
                        result.quarantined += 1
                        for p in item.problems:
                            result.problems.append(f"{item.file}:{item.line} {p.field}: {p.reason} [{p.code}]")
                        continue
                    for name in files_column[entry.name]:
                        digest = getattr(item.row, name, None)
                        if digest is not None:
                            references.add(digest, item.file, item.line, name, getattr(item.row, "file_bytes", None),
                                           getattr(item.row, "media_type", None))
            except BundleRefused as exc:
                result.problems.append(_refusal(exc))
        for listing in ("keys", "changes"):
            try:
                for _ in getattr(reader, f"iter_{listing}")(entry.name):
                    pass
            except BundleRefused as exc:
                result.problems.append(_refusal(exc))
    try:
        references.finish()  # every row's file is in the index, as the row describes it
    except BundleRefused as exc:
        result.problems.append(_refusal(exc))
    try:
        for listed in reader.iter_files():  # the index, part by part: never whole in memory
            path = Path(bundle) / "files" / listed.sha256
            if not path.is_file():
                result.problems.append(f"files/{listed.sha256}: listed in the file index but missing "
                                       f"[bundle_file_missing]")
                continue
            sha = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
            if sha.hexdigest() != listed.sha256 or path.stat().st_size != listed.bytes:
                result.problems.append(f"files/{listed.sha256}: content does not match its hash [bundle_hash_mismatch]")
    except BundleRefused as exc:
        result.problems.append(_refusal(exc))
    return result


def _refusal(exc: BundleRefused) -> str:
    where = exc.file or "-"
    if exc.line:
        where += f":{exc.line}"
    return f"{where} {exc.field or '-'}: {exc} [{exc.code}]"


def validate_directory(bundle: Path, out: TextIO) -> int:
    """Print the problems of a bundle folder; 0 when there are none, 1 otherwise."""
    result = validate_bundle(bundle)
    for line in result.problems:
        print(line, file=out)
    status = "ok" if not result.problems else f"{len(result.problems)} problem(s)"
    print(f"{status}: {result.rows} rows checked, {result.quarantined} would be quarantined", file=out)
    return 0 if not result.problems else 1
