"""Format 2's file index (`files/index-NNNNN.jsonl.gz`): a tampered index is refused naming the file
and line, a row naming a file the index lacks refuses the bundle naming the row, a format-1 bundle
is refused naming both versions, and reading a bundle never holds the whole index."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.extract import extract
from agent.upload import upload_bundle
from agent.validate import validate_directory
from shared.dentrix.manifest import SHA256_RE, FileEntry
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.errors import (
    BundleCorrupt,
    BundleFileNotIndexed,
    BundleFormatUnsupported,
    BundleHashMismatch,
    BundleRowCountMismatch,
    BundleUnsafePath,
)

INDEX_ROWS = 3
"""Lines per index part in the many-files bundle."""


@pytest.fixture(scope="module")
def many_files(practice_factory: Callable[[int, int], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose file index spans many small parts (INDEX_ROWS lines each)."""
    out = tmp_path_factory.mktemp("many-files") / "b"
    extract(str(practice_factory(40, 11)), out, part_rows=300, index_rows=INDEX_ROWS, bundle_id="many-files")
    return out


@pytest.fixture
def bundle(many_files: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(many_files, copy)
    return copy


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _save_manifest(bundle: Path, data: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _index_lines(bundle: Path, part: int) -> list[dict]:
    path = bundle / _manifest(bundle)["file_index"]["parts"][part]["file"]
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def _rewrite_index(bundle: Path, part: int, edit: Callable[[list[bytes]], list[bytes]]) -> str:
    """Rewrite one index part's raw lines through `edit` and fix the manifest to match (a consistent
    forgery: hash, size, rows, count and total bytes all agree with the new part)."""
    data = _manifest(bundle)
    entry = data["file_index"]["parts"][part]
    path = bundle / entry["file"]
    lines = edit(gzip.decompress(path.read_bytes()).splitlines())
    raw = gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0)
    path.write_bytes(raw)
    entry.update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw), rows=len(lines))
    index = data["file_index"]
    index["count"] = sum(p["rows"] for p in index["parts"])
    total = 0
    for p in index["parts"]:
        for line in gzip.decompress((bundle / p["file"]).read_bytes()).splitlines():
            try:
                total += json.loads(line)["bytes"]
            except (ValueError, KeyError, TypeError):
                pass
    index["bytes"] = total
    _save_manifest(bundle, data)
    return entry["file"]


def _first_reference(bundle: Path, sha256: str) -> tuple[str, int]:
    """(document part file, line) of the first document row naming `sha256`."""
    reader = BundleReader.from_directory(bundle)
    for item in reader.iter_table("document"):
        if isinstance(item, LoadedRow) and item.row.file_sha256 == sha256:
            return item.file, item.line
    raise AssertionError("no document names that file")


def _refused(bundle: Path, kind: type[Exception], **verify: object) -> Exception:
    with pytest.raises(kind) as caught:
        BundleReader.from_directory(bundle).verify(**verify)
    return caught.value


# -- the writer ---------------------------------------------------------------------------------


def test_index_is_sorted_split_into_parts_and_covers_exactly_the_binaries(many_files: Path):
    data = _manifest(many_files)
    assert data["format"] == "bridgework.dentrix-bundle/2" and "files" not in data
    index = data["file_index"]
    assert len(index["parts"]) >= 3 and all(p["rows"] <= INDEX_ROWS for p in index["parts"])
    lines = [line for part in range(len(index["parts"])) for line in _index_lines(many_files, part)]
    digests = [line["sha256"] for line in lines]
    assert digests == sorted(set(digests)) and len(digests) == index["count"]
    on_disk = {p.name: p.stat().st_size for p in (many_files / "files").iterdir() if not p.name.startswith("index-")}
    assert {line["sha256"]: line["bytes"] for line in lines} == on_disk
    assert sum(on_disk.values()) == index["bytes"]
    referenced = {i.row.file_sha256 for i in BundleReader.from_directory(many_files).iter_table("document")
                  if isinstance(i, LoadedRow) and i.row.file_sha256}
    assert referenced == set(digests)


# -- tampering ----------------------------------------------------------------------------------


def test_intact_bundle_verifies_with_the_index_checked(bundle: Path):
    reader = BundleReader.from_directory(bundle)
    report = reader.verify()
    assert report.files_indexed == report.files_checked == reader.manifest.file_index.count


def test_flipped_byte_in_an_index_part_is_refused_naming_it(bundle: Path):
    part = _manifest(bundle)["file_index"]["parts"][1]["file"]
    raw = bytearray((bundle / part).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (bundle / part).write_bytes(bytes(raw))
    error = _refused(bundle, BundleHashMismatch)
    assert error.file == part and part in str(error)


def test_index_part_with_a_count_the_manifest_disagrees_with_is_refused(bundle: Path):
    data = _manifest(bundle)
    data["file_index"]["parts"][0]["rows"] += 1
    data["file_index"]["count"] += 1
    _save_manifest(bundle, data)
    error = _refused(bundle, BundleRowCountMismatch)
    part = data["file_index"]["parts"][0]
    assert error.file == part["file"] and f"holds {part['rows'] - 1} rows, the manifest says {part['rows']}" in str(error)


def test_index_total_bytes_differing_from_its_lines_is_refused(bundle: Path):
    data = _manifest(bundle)
    data["file_index"]["bytes"] += 1
    _save_manifest(bundle, data)
    error = _refused(bundle, BundleRowCountMismatch)
    assert error.file == "manifest.json" and error.field == "file_index.bytes"


def test_missing_index_line_refuses_the_bundle_naming_the_row_that_needs_it(bundle: Path):
    dropped = _index_lines(bundle, 1)[2]["sha256"]
    _rewrite_index(bundle, 1, lambda lines: lines[:2] + lines[3:])
    file, line = _first_reference(bundle, dropped)
    error = _refused(bundle, BundleFileNotIndexed)
    assert (error.file, error.line, error.field) == (file, line, "file_sha256")
    assert f"{file} line {line} file_sha256" in str(error) and f"files/{dropped}" in str(error)
    # the agent's validate reports the same problem, by file and line
    out = io.StringIO()
    assert validate_directory(bundle, out) == 1
    assert f"{file}:{line} file_sha256" in out.getvalue() and "[bundle_file_not_indexed]" in out.getvalue()


def test_row_naming_a_digest_the_index_lacks_is_refused_in_a_small_batch_too(bundle: Path):
    """Same refusal when the check runs in many batches (one index pass per batch)."""
    dropped = _index_lines(bundle, 0)[0]["sha256"]
    _rewrite_index(bundle, 0, lambda lines: lines[1:])
    file, line = _first_reference(bundle, dropped)
    reader = BundleReader.from_directory(bundle)
    with pytest.raises(BundleFileNotIndexed) as caught:
        reader.verify(check_files=False, file_check_batch=3)
    assert (caught.value.file, caught.value.line) == (file, line)
    assert reader.index_stats.batch_max <= 3


def test_row_whose_size_disagrees_with_the_index_is_refused(bundle: Path):
    first = _index_lines(bundle, 0)[0]

    def grow(lines: list[bytes]) -> list[bytes]:
        item = json.loads(lines[0])
        item["bytes"] += 1
        return [json.dumps(item).encode(), *lines[1:]]

    _rewrite_index(bundle, 0, grow)
    file, line = _first_reference(bundle, first["sha256"])
    error = _refused(bundle, BundleFileNotIndexed, check_files=False)
    assert (error.file, error.line) == (file, line) and "bytes" in str(error)


@pytest.mark.parametrize(("edit", "line", "why"), [
    (lambda lines: [lines[1], lines[0], *lines[2:]], 2, "not sorted"),
    (lambda lines: [lines[0], lines[0], *lines[2:]], 2, "lists a file twice"),
    (lambda lines: [lines[0], b'{"sha256": "../../etc/passwd", "bytes": 1, "media_type": "x"}', *lines[2:]], 2,
     "sha256"),
    (lambda lines: [lines[0], lines[1], b"not json", *lines[3:]], 3, "not JSON"),
    (lambda lines: [lines[0], b'{"sha256": "' + b"a" * 64 + b'", "bytes": 1}', *lines[2:]], 2, "exactly"),
])
def test_malformed_index_line_is_refused_naming_the_part_and_line(bundle: Path, edit, line: int, why: str):
    part = _rewrite_index(bundle, 1, edit)
    error = _refused(bundle, BundleCorrupt, check_files=False)
    assert (error.file, error.line) == (part, line) and why in str(error)


def test_index_part_path_outside_the_documented_shape_is_refused(bundle: Path):
    data = _manifest(bundle)
    data["file_index"]["parts"][0]["file"] = "files/../../secrets.jsonl.gz"
    _save_manifest(bundle, data)
    with pytest.raises(BundleUnsafePath) as caught:
        BundleReader.from_directory(bundle)
    assert "file index part 0" in str(caught.value) and "files/index-00000.jsonl.gz" in str(caught.value)


# -- format version -----------------------------------------------------------------------------


def _as_format_1(bundle: Path) -> None:
    """Turn the manifest back into format 1's shape: every binary inline in files[]."""
    data = _manifest(bundle)
    files = [line for part in range(len(data["file_index"]["parts"])) for line in _index_lines(bundle, part)]
    del data["file_index"]
    data.update(format="bridgework.dentrix-bundle/1", files=files)
    _save_manifest(bundle, data)


def test_format_1_bundle_is_refused_naming_its_version_and_the_supported_one(bundle: Path, tmp_path: Path,
                                                                             practice_factory):
    _as_format_1(bundle)
    with pytest.raises(BundleFormatUnsupported) as caught:
        BundleReader.from_directory(bundle)
    message = str(caught.value)
    assert "'bridgework.dentrix-bundle/1'" in message and "supports bridgework.dentrix-bundle/2" in message
    assert "extract the practice again" in message
    out = io.StringIO()
    assert validate_directory(bundle, out) == 1 and "[bundle_format_unsupported]" in out.getvalue()
    with pytest.raises(BundleFormatUnsupported):
        upload_bundle(bundle, "http://127.0.0.1:1/devstoreaccount1/c?sv=x&sp=cw&sig=y", migration_id="m")
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="bundle format 'bridgework.dentrix-bundle/1'"):
        extract(str(practice_factory(40, 11)), tmp_path / "delta", base=bundle)


# -- flat memory: the index is never held whole ------------------------------------------------------


def _digests_held(value: object, depth: int = 0) -> list[int]:
    """For every list/dict/set/tuple reachable from `value` through attributes (a few levels): how
    many file entries or sha256 strings it holds directly (keys included)."""
    if depth > 5:
        return []
    sizes: list[int] = []
    if isinstance(value, list | tuple | set | frozenset | dict):
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
        sizes.append(sum(isinstance(i, FileEntry) or (isinstance(i, str) and SHA256_RE.match(i) is not None)
                         for i in items))
        for item in items:
            sizes += _digests_held(item, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for item in vars(value).values():
            sizes += _digests_held(item, depth + 1)
    return sizes


def test_reading_a_bundle_with_many_files_never_holds_the_index(many_files: Path):
    reader = BundleReader.from_directory(many_files)
    count = reader.manifest.file_index.count
    parts = len(reader.manifest.file_index.parts)
    assert count > 3 * INDEX_ROWS
    report = reader.verify(check_files=True, file_check_batch=INDEX_ROWS)
    stats = reader.index_stats
    assert report.files_indexed == report.files_checked == count
    # one part's lines at a time, a bounded batch of row digests, a pass per batch (+ verify_files' pass)
    assert stats.lines_held_max <= INDEX_ROWS
    assert stats.batch_max <= INDEX_ROWS
    documents = sum(1 for _ in reader.iter_table("document"))
    assert 2 < stats.passes <= documents // INDEX_ROWS + 3
    assert stats.parts_read == stats.passes * parts
    # nothing on the reader (manifest included) holds file entries or digests after the read
    assert max(_digests_held(reader)) == 0
    assert max(_digests_held([list(reader.iter_files())])) == count  # (the probe does see a held index)
    assert not hasattr(reader, "_files")


def test_index_pass_yields_entries_one_part_at_a_time(many_files: Path):
    reader = BundleReader.from_directory(many_files)
    held: list[int] = []
    for _ in reader.iter_files():
        held.append(reader.index_stats.parts_read)
    # the n-th entry is handed out while only the part holding it has been read
    assert held == [n // INDEX_ROWS + 1 for n in range(len(held))]
