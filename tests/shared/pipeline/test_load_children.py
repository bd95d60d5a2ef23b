"""A load part reads the child rows of its parents (an appointment's procedures) from the child table's
parts that can hold them, and finds exactly what a read of the whole child table finds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.extract import extract
from agent.synth import synthesize
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.mapping.rows import index_children
from shared.mapping.spec import default_mapping
from shared.pipeline import load

CHILD, PARENT_COLUMN = "appointment_procedure", "appointment_id"


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundleReader]:
    work = Path(tmp_path_factory.mktemp("children"))
    synth = synthesize(work / "practice.db", 60, 5)
    bundle = extract(str(work / "practice.db"), work / "bundle", files_root=synth.files_root, part_rows=40)
    yield BundleReader.from_directory(bundle.bundle_dir)


def _whole_table(reader: BundleReader, parent_ids: set[str]) -> dict[str, list[Any]]:
    rows = [item.row.model_dump() for item in reader.iter_table(CHILD)
            if isinstance(item, LoadedRow) and str(getattr(item.row, PARENT_COLUMN)) in parent_ids]
    return index_children(rows, PARENT_COLUMN)


def _parts_read(reader: BundleReader, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    read: list[int] = []
    iter_part = reader.iter_part

    def counting(table: str, part: int, *args: Any, **kwargs: Any) -> Any:
        if table == CHILD:
            read.append(part)
        return iter_part(table, part, *args, **kwargs)

    monkeypatch.setattr(reader, "iter_part", counting)
    return read


def test_each_part_of_parents_gets_its_children_from_a_few_child_parts(
        reader: BundleReader, monkeypatch: pytest.MonkeyPatch) -> None:
    appointment = default_mapping().table("appointment")
    load._child_part_spans(reader, CHILD, PARENT_COLUMN)  # built once per process and bundle
    child_parts = reader.part_count(CHILD)
    assert child_parts >= 8 and reader.part_count("appointment") >= 4
    read = _parts_read(reader, monkeypatch)
    for part in range(reader.part_count("appointment")):
        ids = {item.key for item in reader.iter_part("appointment", part) if isinstance(item, LoadedRow)}
        read.clear()
        children = load._children_for(reader, appointment, ids)[(CHILD, PARENT_COLUMN)]
        assert 0 < len(read) < child_parts / 2, (part, read)
        assert children == _whole_table(reader, ids) and children, part


def test_ids_that_are_not_whole_numbers_read_every_part(reader: BundleReader, monkeypatch: pytest.MonkeyPatch) -> None:
    appointment = default_mapping().table("appointment")
    ids = {item.key for item in reader.iter_part("appointment", 0) if isinstance(item, LoadedRow)} | {"A-17"}
    load._child_part_spans(reader, CHILD, PARENT_COLUMN)
    expected = _whole_table(reader, ids)
    read = _parts_read(reader, monkeypatch)
    assert load._children_for(reader, appointment, ids)[(CHILD, PARENT_COLUMN)] == expected
    assert sorted(read) == list(range(reader.part_count(CHILD)))


def test_spans_and_their_test() -> None:
    assert load._span([3, 9, "5"]) == (3, 9)
    assert load._span([3, "B7"]) is None  # such a part is always read
    assert not load._meets([1, 2], load._span([]))  # a part without parents meets nothing
    assert load._meets([1, 5, 12], (4, 6)) and not load._meets([1, 7, 12], (2, 6))
    assert load._whole_numbers(["10", "9"]) == [9, 10] and load._whole_numbers(["9", "x"]) is None
