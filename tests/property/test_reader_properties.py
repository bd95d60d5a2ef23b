"""Properties of the bundle reader over mutated bundles (hypothesis).

Every mutation of one part of a small real bundle ends one of two ways, never a third:
- refused with a `BundleRefused` naming the file (and the line and field when one line is at fault),
- or read, with every row either loaded or quarantined naming its field, loaded + quarantined equal
  to the manifest's rows, and no loaded value breaking its column's rule (checked by an oracle
  written here from the contract's words, independent of the reader's models).
No other exception, ever. The bundle lives in memory (a `BundleStore` over a dict), so an example
costs one part's gzip and parse.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.dentrix.normalise import VALID_TEETH
from shared.dentrix.reader import BundleReader, LoadedRow, QuarantinedRow
from shared.dentrix.tables import Column, get_table
from shared.errors import BundleColumnMismatch, BundleCorrupt, BundleRefused, BundleRowCountMismatch

MUTABLE_TABLES = ["patient", "proc_log", "appointment", "claim", "document", "perio_exam", "recall",
                  "patient_insurance", "provider", "fee_schedule_item"]


class MemoryStore:
    """A bundle as a dict of bundle path -> bytes."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read_bytes(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def iter_chunks(self, path: str) -> Iterator[bytes]:
        yield self.read_bytes(path)


class Forged:
    """A copy of the bundle with one part rewritten and (optionally) re-hashed in the manifest."""

    def __init__(self, files: dict[str, bytes], table: str, part: int) -> None:
        self.files = dict(files)
        self.manifest = json.loads(files["manifest.json"])
        self.entry = next(t for t in self.manifest["tables"] if t["name"] == table)
        self.part = self.entry["parts"][part]
        self.path = self.part["file"]
        self.lines = gzip.decompress(files[self.path]).split(b"\n")[:-1]

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def write(self, raw: bytes | None = None, *, rehash: bool = True, count_rows: bool = True) -> None:
        raw = raw if raw is not None else gzip.compress(b"".join(line + b"\n" for line in self.lines), mtime=0)
        self.files[self.path] = raw
        if rehash:
            self.part.update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
            if count_rows:
                self.part["rows"] = len(self.lines)
                self.entry["rows"] = sum(p["rows"] for p in self.entry["parts"])
        self.files["manifest.json"] = json.dumps(self.manifest).encode()

    def read(self) -> list[LoadedRow | QuarantinedRow]:
        return list(BundleReader(MemoryStore(self.files)).iter_table(self.entry["name"]))


def _dumps(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode()


# -- an oracle for "this value keeps its column's rule", from the contract's words ------------------

_TRIM = " \t\r\n\x00"


def acceptable(column: Column, value: Any) -> bool:
    if value is None:
        return not column.required
    kind = column.kind
    if kind in ("id", "text"):
        return isinstance(value, str) and value != "" and value == value.strip(_TRIM)
    if kind in ("int", "money"):
        return (type(value) is int and (column.ge is None or value >= column.ge)
                and (column.le is None or value <= column.le))
    if kind == "bool":
        return type(value) is bool
    if kind == "json":
        return type(value) is dict
    if not isinstance(value, str):
        return False
    if kind == "date":
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and _parses(dt.date.fromisoformat, value)
    if kind == "datetime":
        return (bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", value))
                and _parses(dt.datetime.fromisoformat, value))
    if kind == "tooth":
        return value in VALID_TEETH
    if kind == "surface":
        return value != "" and all(c in "MODLF5" for c in value) and list(value) == sorted(
            set(value), key="MODLF5".index)
    if kind == "sha256":
        return bool(re.fullmatch(r"[0-9a-f]{64}", value))
    raise AssertionError(kind)


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _near_valid(kind: str) -> st.SearchStrategy[Any]:
    """Values close to a kind's rule, on both sides of it."""
    common = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=12), st.sampled_from(["", " ", " x", "x ", "\x00", "0"]))
    special: dict[str, st.SearchStrategy[Any]] = {
        "date": st.one_of(st.dates().map(str), st.sampled_from(["2024-02-30", "2024-2-3", "20240203", "2024-02-03T00:00:00"])),
        "datetime": st.one_of(st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat()),
                              st.sampled_from(["2024-03-10T25:00:00", "2024-03-10 09:00:00", "2024-03-10T09:00:00Z"])),
        "tooth": st.one_of(st.sampled_from(sorted(VALID_TEETH)), st.sampled_from(["0", "33", "03", " 3", "U", "as", "50", "83"])),
        "surface": st.text(alphabet="MODLF5BIVX ", max_size=7),
        "sha256": st.one_of(st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65)),
        "money": st.integers(min_value=-(10**15), max_value=10**15),
        "int": st.integers(min_value=-(2**40), max_value=2**40),
        "json": st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    }
    return st.one_of(common, special.get(kind, common))


def _check_outcome(forged: Forged, items: list[LoadedRow | QuarantinedRow], mutated_line: int | None = None,
                   column: str | None = None) -> None:
    assert len(items) == forged.entry["rows"], "loaded + quarantined == manifest rows"
    spec = get_table(forged.entry["name"])
    for item in items:
        if isinstance(item, QuarantinedRow):
            assert item.problems and all(p.field and p.code for p in item.problems)
            assert item.file and item.line >= 1
            continue
        for col in spec.columns:
            value = getattr(item.row, col.name)
            assert acceptable(col, value), f"{item.file} line {item.line}: {col.name} accepted against its rule"


@pytest.fixture(scope="module")
def files(bundle_files: dict[str, bytes]) -> dict[str, bytes]:
    return bundle_files


def _forge(files: dict[str, bytes], data: st.DataObject, tables: list[str] = MUTABLE_TABLES) -> Forged:
    manifest = json.loads(files["manifest.json"])
    usable = [t["name"] for t in manifest["tables"] if t["name"] in tables and t["rows"] > 0]
    table = data.draw(st.sampled_from(sorted(usable)), label="table")
    entry = next(t for t in manifest["tables"] if t["name"] == table)
    part = data.draw(st.integers(0, len(entry["parts"]) - 1), label="part")
    return Forged(files, table, part)


# -- properties ------------------------------------------------------------------------------------

def test_the_unmutated_bundle_reads_whole_and_every_loaded_value_keeps_its_rule(files: dict[str, bytes]):
    reader = BundleReader(MemoryStore(dict(files)))
    for entry in reader.manifest.tables:
        items = list(reader.iter_table(entry.name))
        assert len(items) == entry.rows
        spec = get_table(entry.name)
        for item in items:
            if isinstance(item, LoadedRow):
                assert all(acceptable(c, getattr(item.row, c.name)) for c in spec.columns)


@given(data=st.data())
def test_valid_rows_round_trip_through_a_rewritten_part(files: dict[str, bytes], data: st.DataObject):
    forged = _forge(files, data)
    rows = forged.rows()
    order = data.draw(st.permutations(range(len(rows))), label="order")
    forged.lines = [_dumps(rows[i]) for i in order]
    forged.write()
    items = forged.read()
    _check_outcome(forged, items)
    original = {json.dumps(r, sort_keys=True) for r in rows}
    for item in items:
        if isinstance(item, LoadedRow) and item.file == forged.path:
            assert json.dumps(item.row.model_dump(), sort_keys=True) in original


@given(data=st.data())
@example(data=None)
def test_one_changed_value_is_loaded_only_if_it_keeps_the_rule_else_quarantined_or_refused_by_field(
        files: dict[str, bytes], data: st.DataObject | None):
    if data is None:  # found by the long profile: an infinite id, written by json.dumps as Infinity
        forged, line, column = Forged(files, "appointment", 0), 0, "appointment_id"
        rows = forged.rows()
        rows[line][column] = math.inf
    else:
        forged = _forge(files, data)
        rows = forged.rows()
        line = data.draw(st.integers(0, len(rows) - 1), label="line")
        spec = get_table(forged.entry["name"])
        column = data.draw(st.sampled_from([c.name for c in spec.columns]), label="column")
        kind = next(c for c in spec.columns if c.name == column).kind
        rows[line][column] = data.draw(_near_valid(kind), label="value")
    spec = get_table(forged.entry["name"])
    forged.lines = [_dumps(r) for r in rows]
    forged.write()
    try:
        items = forged.read()
    except BundleColumnMismatch as refusal:
        # The JSON type differs from the manifest's: refused naming file, line and field.
        assert (refusal.file, refusal.line, refusal.field) == (forged.path, line + 1, column)
        return
    except BundleCorrupt as refusal:
        # Infinity is not JSON (json.dumps writes it anyway): refused naming file and line.
        assert isinstance(rows[line][column], float) and not math.isfinite(rows[line][column])
        assert (refusal.file, refusal.line) == (forged.path, line + 1)
        return
    _check_outcome(forged, items)
    mine = next(i for i in items if i.file == forged.path and i.line == line + 1)
    col = next(c for c in spec.columns if c.name == column)
    if not acceptable(col, rows[line][column]):
        assert isinstance(mine, QuarantinedRow)
        assert column in {p.field for p in mine.problems} or "(row)" in {p.field for p in mine.problems}


@given(data=st.data())
def test_a_column_dropped_or_added_refuses_the_bundle_naming_file_line_and_field(
        files: dict[str, bytes], data: st.DataObject):
    forged = _forge(files, data)
    rows = forged.rows()
    line = data.draw(st.integers(0, len(rows) - 1), label="line")
    if data.draw(st.booleans(), label="drop"):
        column = data.draw(st.sampled_from(sorted(rows[line])), label="column")
        del rows[line][column]
    else:
        column = data.draw(st.text(min_size=1, max_size=8).filter(lambda c: c not in rows[line] and c != "_unparsed"),
                           label="column")
        rows[line][column] = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=5)), label="value")
    forged.lines = [_dumps(r) for r in rows]
    forged.write()
    with pytest.raises(BundleColumnMismatch) as caught:
        forged.read()
    assert (caught.value.file, caught.value.line, caught.value.field) == (forged.path, line + 1, column)


_BAD_LINES = st.one_of(
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"", b"[]", b"1", b'"row"', b"null", b"{", b'{"a":', b"\xff\xfe{}", b"{}}", b"NaN"]),
    st.lists(st.integers(), max_size=3).map(lambda v: json.dumps(v).encode()),
)


@given(data=st.data(), bad=_BAD_LINES)
@example(data=None, bad=b"")
@example(data=None, bad=b"\xff\xfe{}")
def test_a_line_that_is_not_a_json_object_refuses_the_bundle_naming_file_and_line(
        files: dict[str, bytes], data: st.DataObject | None, bad: bytes):
    forged = Forged(files, "patient", 0) if data is None else _forge(files, data)
    line = 0 if data is None else data.draw(st.integers(0, len(forged.lines) - 1), label="line")
    forged.lines[line] = bad
    forged.write()
    with pytest.raises(BundleRefused) as caught:
        forged.read()
    assert isinstance(caught.value, BundleColumnMismatch | BundleCorrupt)
    assert (caught.value.file, caught.value.line) == (forged.path, line + 1)


@given(data=st.data())
def test_lines_added_or_lost_against_the_manifest_are_refused(files: dict[str, bytes], data: st.DataObject):
    forged = _forge(files, data)
    rows = forged.rows()
    if data.draw(st.booleans(), label="lose") and len(rows) > 1:
        del forged.lines[data.draw(st.integers(0, len(rows) - 1), label="line")]
    else:
        forged.lines.append(forged.lines[data.draw(st.integers(0, len(rows) - 1), label="line")])
    forged.write(count_rows=False)  # re-hashed, but the row count left as it was
    with pytest.raises(BundleRowCountMismatch) as caught:
        forged.read()
    assert caught.value.file == forged.path


@given(data=st.data())
def test_damaged_gzip_is_refused_or_reads_exactly_the_original_rows(files: dict[str, bytes], data: st.DataObject):
    forged = _forge(files, data)
    original = forged.rows()
    raw = bytearray(files[forged.path])
    how = data.draw(st.sampled_from(["truncate", "flip", "append"]), label="how")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    else:
        raw += data.draw(st.binary(min_size=1, max_size=20), label="tail")
    rehash = data.draw(st.booleans(), label="rehash")
    forged.write(bytes(raw), rehash=rehash, count_rows=False)
    try:
        items = forged.read()
    except BundleRefused as refusal:
        assert refusal.file == forged.path
        return
    # Read without a refusal: only possible if the manifest vouches for these bytes and they hold
    # exactly the original rows (a flip in the gzip header's mtime, say).
    assert rehash, "bytes that differ from the manifest's sha256 must be refused"
    rows_read = [item for item in items if item.file == forged.path]
    assert len(rows_read) == len(original)
    for item, row in zip(rows_read, original, strict=True):
        if isinstance(item, LoadedRow):
            assert item.row.model_dump() == {k: v for k, v in row.items() if k != "_unparsed"}


def test_the_gzip_header_can_change_without_changing_the_rows(files: dict[str, bytes]):
    """Regression anchor for the property above: a different mtime in the gzip header, re-hashed,
    is the same content, and reads as the same rows."""
    forged = Forged(files, "patient", 0)
    original = forged.rows()
    raw = bytearray(files[forged.path])
    raw[4] ^= 0x01  # MTIME's low byte
    forged.write(bytes(raw), count_rows=False)
    items = forged.read()
    assert [i.row.model_dump() for i in items if isinstance(i, LoadedRow)] == [
        {k: v for k, v in r.items() if k != "_unparsed"} for r in original if not r.get("_unparsed")]



@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json_and_refuse_the_bundle_naming_file_and_line(
        files: dict[str, bytes], constant: bytes):
    """Regression (found by fuzzing): Python's json reads NaN and Infinity, so a non-finite number in
    a number column was loaded and would reach a Dataverse payload. It is not JSON: refused."""
    forged = Forged(files, "patient", 0)
    rows = forged.rows()
    column = next(name for name, value in rows[1].items() if type(value) is int)
    forged.lines[1] = _dumps(rows[1]).replace(f'"{column}": {rows[1][column]}'.encode(),
                                              f'"{column}": '.encode() + constant)
    assert constant in forged.lines[1]
    forged.write()
    with pytest.raises(BundleCorrupt) as caught:
        forged.read()
    assert (caught.value.file, caught.value.line) == (forged.path, 2)
