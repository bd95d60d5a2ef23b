"""The reader refuses a bundle that does not match its manifest, naming the exact problem, and
quarantines bad rows with file, line, field and reason (never values)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.dentrix.reader import BundleReader, LoadedRow, QuarantinedRow
from shared.errors import (
    BundleColumnMismatch,
    BundleCorrupt,
    BundleFileMissing,
    BundleFormatUnsupported,
    BundleHashMismatch,
    BundleRefused,
    BundleRowCountMismatch,
    BundleUnsafePath,
)


@pytest.fixture
def bundle(small_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    return copy


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _save_manifest(bundle: Path, data: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _rewrite_part(bundle: Path, table: str, index: int, edit: Callable[[list[dict]], list[dict]]) -> str:
    """Rewrite one part through `edit` and re-hash it in the manifest (a consistent forgery)."""
    data = _manifest(bundle)
    entry = next(t for t in data["tables"] if t["name"] == table)
    part = entry["parts"][index]
    path = bundle / part["file"]
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    rows = edit(rows)
    raw = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(), mtime=0)
    path.write_bytes(raw)
    part.update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw), rows=len(rows))
    entry["rows"] = sum(p["rows"] for p in entry["parts"])
    _save_manifest(bundle, data)
    return part["file"]


def _first_file(bundle: Path) -> str:
    """The first binary's sha256, from the file index's first part."""
    first = _manifest(bundle)["file_index"]["parts"][0]["file"]
    return json.loads(gzip.decompress((bundle / first).read_bytes()).splitlines()[0])["sha256"]


def _refused(bundle: Path, kind: type[BundleRefused]) -> BundleRefused:
    with pytest.raises(kind) as caught:
        BundleReader.from_directory(bundle).verify()
    return caught.value


def test_intact_bundle_verifies_and_counts_add_up(bundle: Path):
    reader = BundleReader.from_directory(bundle)
    report = reader.verify()
    for name, counts in report.tables.items():
        assert counts.loaded + counts.quarantined == reader.table(name).rows
    assert report.files_checked == report.files_indexed == reader.manifest.file_index.count > 0


def test_one_flipped_byte_in_a_part_is_refused_naming_the_file(bundle: Path):
    part = _manifest(bundle)["tables"][-1]["parts"][0]["file"]  # document
    raw = bytearray((bundle / part).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (bundle / part).write_bytes(bytes(raw))
    error = _refused(bundle, BundleHashMismatch)
    assert error.file == part and part in str(error) and "sha256" in str(error)


def test_one_flipped_byte_in_a_binary_is_refused(bundle: Path):
    sha = _first_file(bundle)
    raw = bytearray((bundle / "files" / sha).read_bytes())
    raw[-1] ^= 0xFF
    (bundle / "files" / sha).write_bytes(bytes(raw))
    assert _refused(bundle, BundleHashMismatch).file == f"files/{sha}"


def test_truncated_table_is_refused_as_truncated(bundle: Path):
    part = next(t for t in _manifest(bundle)["tables"] if t["name"] == "proc_log")["parts"][0]["file"]
    raw = (bundle / part).read_bytes()
    (bundle / part).write_bytes(raw[: len(raw) // 2])
    error = _refused(bundle, BundleCorrupt)
    assert error.file == part and "truncated" in str(error)


def test_part_with_rows_cut_off_cleanly_is_refused_by_row_count(bundle: Path):
    data = _manifest(bundle)
    part = next(t for t in data["tables"] if t["name"] == "appointment")["parts"][0]
    lines = gzip.decompress((bundle / part["file"]).read_bytes()).splitlines(keepends=True)
    (bundle / part["file"]).write_bytes(gzip.compress(b"".join(lines[:-3]), mtime=0))
    error = _refused(bundle, BundleRowCountMismatch)
    assert f"holds {part['rows'] - 3} rows, the manifest says {part['rows']}" in str(error)


def test_manifest_row_count_mismatch_is_refused(bundle: Path):
    data = _manifest(bundle)
    entry = next(t for t in data["tables"] if t["name"] == "patient")
    entry["parts"][0]["rows"] += 1
    entry["rows"] += 1
    _save_manifest(bundle, data)
    error = _refused(bundle, BundleRowCountMismatch)
    assert error.file == entry["parts"][0]["file"]


def test_missing_binary_and_missing_part_are_refused(bundle: Path):
    data = _manifest(bundle)
    sha = _first_file(bundle)
    (bundle / "files" / sha).unlink()
    assert _refused(bundle, BundleFileMissing).file == f"files/{sha}"
    part = data["tables"][0]["parts"][0]["file"]
    (bundle / part).unlink()
    assert _refused(bundle, BundleFileMissing).file == part


def test_missing_manifest_means_not_committed(bundle: Path):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleFileMissing, match="not committed"):
        BundleReader.from_directory(bundle)


def test_wrong_value_type_in_a_consistent_forgery_is_refused_with_line_and_field(bundle: Path):
    def cents_as_text(rows: list[dict]) -> list[dict]:
        rows[4]["amount_cents"] = "125.00"
        return rows

    part = _rewrite_part(bundle, "proc_log", 0, cents_as_text)
    reader = BundleReader.from_directory(bundle)
    rows = reader.iter_part("proc_log", 0)
    with pytest.raises(BundleColumnMismatch) as caught:
        next(rows)  # refused before the first row of the part is handed out
    error = caught.value
    assert (error.file, error.line, error.field) == (part, 5, "amount_cents")
    assert "125.00" not in str(error) and "declares integer" in str(error)


def test_manifest_declaring_a_wrong_column_type_is_refused(bundle: Path):
    data = _manifest(bundle)
    entry = next(t for t in data["tables"] if t["name"] == "patient")
    next(c for c in entry["columns"] if c["name"] == "birth_date")["type"] = "integer"
    _save_manifest(bundle, data)
    with pytest.raises(
        BundleColumnMismatch, match="birth_date is declared integer; the contract says string"
    ):
        BundleReader.from_directory(bundle)


def test_undeclared_column_in_rows_is_refused(bundle: Path):
    def add_column(rows: list[dict]) -> list[dict]:
        rows[0]["sneaky"] = 1
        return rows

    _rewrite_part(bundle, "patient", 0, add_column)
    assert _refused(bundle, BundleColumnMismatch).field == "sneaky"


@pytest.mark.parametrize(
    "path",
    [
        "tables/patient/../../../etc/passwd",
        "/etc/passwd",
        "tables/patient/part-00000.jsonl.gz/../../x",
        "tables/provider/part-00000.jsonl.gz",
    ],
)
def test_file_name_escaping_its_folder_is_refused(bundle: Path, path: str):
    data = _manifest(bundle)
    next(t for t in data["tables"] if t["name"] == "patient")["parts"][0]["file"] = path
    _save_manifest(bundle, data)
    with pytest.raises(BundleUnsafePath) as caught:
        BundleReader.from_directory(bundle)
    assert "patient" in str(caught.value)


def test_unknown_format_version_is_refused(bundle: Path):
    data = _manifest(bundle)
    data["format"] = "bridgework.dentrix-bundle/9"
    _save_manifest(bundle, data)
    with pytest.raises(BundleFormatUnsupported) as caught:
        BundleReader.from_directory(bundle)
    message = str(caught.value)
    assert "'bridgework.dentrix-bundle/9'" in message and "supports bridgework.dentrix-bundle/2" in message
    assert caught.value.file == "manifest.json" and caught.value.field == "format"


def test_bad_rows_are_quarantined_with_file_line_field_and_no_values(bundle: Path):
    def spoil(rows: list[dict]) -> list[dict]:
        rows[1]["birth_date"] = "31/12/1970"
        rows[2]["patient_id"] = None
        rows[3]["_unparsed"] = {"gender": "X-secret"}
        return rows

    part = _rewrite_part(bundle, "patient", 0, spoil)
    reader = BundleReader.from_directory(bundle)
    items = list(reader.iter_table("patient"))
    bad = [i for i in items if isinstance(i, QuarantinedRow)]
    assert [(q.file, q.line) for q in bad] == [(part, 2), (part, 3), (part, 4)]
    assert [[p.field for p in q.problems] for q in bad] == [["birth_date"], ["patient_id"], ["gender"]]
    assert "31/12/1970" not in repr(bad) and "X-secret" not in repr(bad)
    loaded = sum(isinstance(i, LoadedRow) for i in items)
    assert loaded + len(bad) == reader.table("patient").rows
    report = reader.verify()
    assert report.tables["patient"].quarantined == 3


def test_line_range_of_a_part_is_one_load_batch(small_bundle: Path):
    reader = BundleReader.from_directory(small_bundle)
    whole = [i.key for i in reader.iter_part("proc_log", 1)]
    window = [i.key for i in reader.iter_part("proc_log", 1, first_line=11, last_line=20)]
    assert window == whole[10:20]
