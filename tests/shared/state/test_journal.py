"""The journal keeps one row per source record; rewriting a batch changes nothing twice."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from azure.data.tables import TableServiceClient

from shared.errors import JournalLayoutOutdated
from shared.state.journal import SHARDS, Journal, JournalEntry, bucket

T = datetime(2026, 11, 30, tzinfo=UTC)


def _entry(source_id: str, action: str = "created", origin: str = "created") -> JournalEntry:
    return JournalEntry(
        migration_id="m-1",
        table="patient",
        source_id=source_id,
        target_table="contact",
        target_id=f"guid-{source_id}",
        action=action,
        origin=origin,
        batch="patient/0",
        at=T,
    )


def test_a_batch_recorded_twice_leaves_one_row_per_record(storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    batch = [_entry(str(i)) for i in range(250)]  # more than one Table transaction
    journal.record(batch)
    journal.record(batch)
    entries = list(journal.entries("m-1", "patient"))
    assert len(entries) == 250
    assert {e.source_id for e in entries} == {str(i) for i in range(250)}


def test_ids_with_characters_tables_forbid_in_keys_round_trip(
    storage_connection_string: str, unique_name: str
):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    odd = ["12|1", "a/b", "c#d", "e?f", "g\\h"]
    journal.record([_entry(source_id) for source_id in odd])
    assert sorted(e.source_id for e in journal.entries("m-1")) == sorted(odd)


def test_a_rerun_keeps_the_original_origin(storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry("1"), _entry("2", origin="preexisting", action="updated")])
    assert journal.existing_origins("m-1", "patient", ["1", "2", "3"]) == {"1": "created", "2": "preexisting"}


def test_entries_are_scoped_to_their_migration(storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry("1")])
    other = dataclasses.replace(_entry("1"), migration_id="m-10")
    journal.record([other])
    assert [e.migration_id for e in journal.entries("m-1")] == ["m-1"]


def test_origins_of_one_part_read_only_that_parts_key_range(storage_connection_string: str, unique_name: str):
    # Unpadded numeric ids: "9" < "10" must hold for a part (a run of consecutive ids) to be one key range.
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry(str(i)) for i in range(1, 1201)])
    read: list[str] = []
    _count_queries(journal, read=read)
    part = [str(i) for i in range(95, 105)]  # crosses a digit boundary
    origins = journal.existing_origins("m-1", "patient", part)
    assert origins == {str(i): "created" for i in range(95, 105)}
    assert len(read) == 10  # not the 1,200 rows of the partition: the range 95..104 holds exactly these
    assert journal.existing_origins("m-1", "patient", ["1199", "1201", "1300"]) == {"1199": "created"}
    assert journal.existing_origins("m-1", "patient", []) == {}


def test_a_transaction_whose_connection_dropped_is_sent_again(storage_connection_string: str, unique_name: str,
                                                                monkeypatch):
    # Upserts are idempotent: a lost response must not fail a load batch of thousands of rows.
    from azure.core.exceptions import ServiceResponseError

    import shared.state.journal as journal_module

    monkeypatch.setattr(journal_module, "_BACKOFF_SECONDS", 0.0)
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    send = Journal._send_lean
    calls: list[int] = []

    def flaky(table, operations):
        calls.append(len(operations))
        if len(calls) in (1, 3):  # the first transaction's first try; another one's first try
            raise ServiceResponseError("Connection aborted.")
        return send(table, operations)

    monkeypatch.setattr(Journal, "_send_lean", staticmethod(flaky))
    journal.record([_entry(str(i)) for i in range(250)])  # three transactions, sent in parallel
    assert len(calls) == 5
    assert sorted(e.source_id for e in journal.entries("m-1", "patient")) == sorted(str(i) for i in range(250))


def test_two_entries_of_one_record_in_one_call_keep_the_last_instead_of_failing_the_transaction(
        storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry("7", action="updated", origin="none"), _entry("8"), _entry("7", action="failed")])
    entries = {e.source_id: e for e in journal.entries("m-1", "patient")}
    assert set(entries) == {"7", "8"} and entries["7"].action == "failed"


def _count_queries(journal: Journal, read: list[str], queried: list[str] | None = None) -> None:
    """Make every storage table of this journal note the RowKeys its queries return (and the partitions asked)."""
    for storage in [*journal._shards, journal._intent_table]:  # noqa: SLF001 - the reads under test
        def counting(*args, _query=storage.query_entities, **kwargs):
            if queried is not None:
                queried.append(kwargs["parameters"]["pk"])
            for entity in _query(*args, **kwargs):
                read.append(entity["RowKey"])
                yield entity

        storage.query_entities = counting  # type: ignore[method-assign]


def _partitions(journal: Journal) -> dict[tuple[str, str], int]:
    """Rows per (storage table, PartitionKey), read from the tables themselves."""
    counts: dict[tuple[str, str], int] = {}
    for storage in journal._shards:  # noqa: SLF001 - the layout under test
        for entity in storage.list_entities(select=["PartitionKey"]):
            key = (storage.table_name, entity["PartitionKey"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_large_map_is_spread_over_partitions_and_read_back_whole(
        storage_connection_string: str, unique_name: str):
    # One partition per map made a 100k load quadratic on Azurite and caps it at ~2,000 entities/s in Azure.
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    ids = [str(i) for i in range(1, 20_001)]
    journal.record([_entry(source_id) for source_id in reversed(ids)])
    partitions = _partitions(journal)
    assert sum(partitions.values()) == 20_000
    assert len(partitions) >= 8 and max(partitions.values()) <= 20_000 // 4, partitions
    assert len({storage for storage, _ in partitions}) == SHARDS, "the buckets are spread over the shards"
    assert all(storage.endswith(f"{int(p.rsplit('~', 1)[1]) % SHARDS:02d}") for storage, p in partitions), \
        "each bucket in the shard its number gives"
    read = [e.source_id for e in journal.entries("m-1", "patient")]
    assert len(read) == 20_000 and sorted(read, key=int) == ids, "every row once, from every bucket"


def test_a_part_of_consecutive_ids_reads_only_its_own_rows_from_a_few_partitions(
        storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry(str(i)) for i in range(1, 12_001)])
    queried: list[str] = []
    read: list[str] = []
    _count_queries(journal, read=read, queried=queried)
    part = [str(i) for i in range(1_995, 7_005)]  # in seven blocks of a thousand ids (1xxx to 7xxx)
    assert journal.existing_origins("m-1", "patient", part) == {sid: "created" for sid in part}
    assert len(read) == len(part), "no row outside the part"
    assert len(set(queried)) == len(queried) <= 8, queried  # one query per bucket, and the intents


def test_tables_whose_names_share_a_prefix_come_back_whole_and_by_name(
        storage_connection_string: str, unique_name: str):
    # "patient~..." sorts after "patient_note~...": a reader must not interleave or lose either table.
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    note = [dataclasses.replace(_entry(str(i)), table="patient_note") for i in range(1, 2_501)]
    journal.record([_entry(str(i)) for i in range(1, 2_501)] + note)
    journal.announce("m-1", "appointment", "appointment/0", "appointment", ["9"])
    assert journal.tables("m-1") == ["appointment", "patient", "patient_note"]
    read = [(e.table, e.source_id) for e in journal.entries("m-1")]
    assert [table for table, _ in read] == ["appointment"] + ["patient"] * 2_500 + ["patient_note"] * 2_500
    assert sorted(read) == sorted([("appointment", "9")] + [(e.table, e.source_id) for e in note]
                                  + [("patient", str(i)) for i in range(1, 2_501)])
    assert journal.tables("m-2") == [] and list(journal.entries("m-2")) == []


def test_small_tables_whose_names_share_a_prefix_are_each_read_whole(
        storage_connection_string: str, unique_name: str):
    # A table is read through the key range of its buckets: that range must hold nothing of "patient_note".
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    note = [dataclasses.replace(_entry(str(i)), table="patient_note") for i in range(990, 1_010)]
    journal.record([_entry(str(i)) for i in range(995, 1_005)] + note)
    assert sorted(e.source_id for e in journal.entries("m-1", "patient")) == sorted(str(i) for i in range(995, 1_005))
    read = [(e.table, e.source_id) for e in journal.entries("m-1")]
    assert [table for table, _ in read] == ["patient"] * 10 + ["patient_note"] * 20
    assert sorted(read) == sorted([("patient", str(i)) for i in range(995, 1_005)]
                                  + [("patient_note", str(i)) for i in range(990, 1_010)])


def test_the_bucket_of_an_id_never_changes():
    # The bucket is part of the stored key: a release that moved ids to other buckets would make a re-run
    # miss every row journaled before it (and a rollback keep what the migration created).
    assert (bucket("7"), bucket("12345"), bucket("12999"), bucket("13000"), bucket("P-1|2")) == (0, 205, 205, 91, 222)


def test_entries_of_some_rows_read_those_rows_with_their_intents(storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry(str(i)) for i in range(990, 1_010) if i not in (999, 1_003)])
    journal.announce("m-1", "patient", "patient/1", "contact", ["999", "1003", "1004"])
    found = journal.entries_of("m-1", "patient", ["998", "999", "1003", "1004", "5000"])
    assert {sid: (e.action, e.code) for sid, e in found.items()} == {
        "998": ("created", None), "999": ("failed", "write_in_progress"),
        "1003": ("failed", "write_in_progress"), "1004": ("created", None)}, "a row of its own wins"
    assert journal.entries_of("m-1", "patient", []) == {}


@pytest.mark.parametrize("partition", ["m-1~patient", "m-1~patient~07"], ids=["one partition", "64 buckets"])
def test_a_journal_in_an_earlier_single_table_layout_is_refused_not_read_as_empty(
        storage_connection_string: str, unique_name: str, partition: str):
    service = TableServiceClient.from_connection_string(storage_connection_string)
    legacy = service.create_table_if_not_exists(f"{unique_name}journal")
    legacy.upsert_entity({"PartitionKey": partition, "RowKey": "0001-1", "action": "created"})
    journal = Journal(service, unique_name)
    with pytest.raises(JournalLayoutOutdated, match="m-1"):
        list(journal.entries("m-1"))
    assert journal.tables("m-2") == [], "another migration's journal is not refused for it"


ENTRY_BYTES = 600
"""What one entry may cost, its strings and timestamp included: 324 bytes measured as a slotted dataclass,
1,468 as a pydantic BaseModel (a load batch holds one per source row; readers hold a map's worth)."""


def test_an_entry_is_small_and_still_validated() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = [_entry(str(100_000 + n)) for n in range(2_000)]
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(entries)
    finally:
        tracemalloc.stop()
    assert per_entry < ENTRY_BYTES, f"{per_entry:.0f} bytes per journal entry"
    with pytest.raises(ValueError, match="action"):
        dataclasses.replace(entries[0], action="teleported")
    with pytest.raises(ValueError, match="colour"):
        JournalEntry(migration_id="m-1", table="t", source_id="1", action="created", batch="b",  # type: ignore[call-arg]
                     at=datetime.now(UTC), colour="red")


def test_rows_read_as_new_go_as_inserts_and_one_written_meanwhile_is_replaced_not_lost(
        storage_connection_string: str, unique_name: str, monkeypatch: pytest.MonkeyPatch):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    sent: list[tuple[list[str], bool]] = []
    send = Journal._send_lean

    def spy(table, operations):  # noqa: ANN001 - the staticmethod's own signature
        applied = send(table, operations)
        sent.append(([kind for kind, *_ in operations], applied))
        return applied

    monkeypatch.setattr(Journal, "_send_lean", staticmethod(spy))
    journal.record([_entry("1"), _entry("2")], new={"1", "2"})
    assert sent == [(["create", "create"], True)], "rows read as new are inserted"
    # A duplicate delivery read the same ids as new, and the first delivery journaled them meanwhile.
    sent.clear()
    journal.record([_entry("1", action="updated"), _entry("2", action="failed", origin="none")], new={"1", "2"})
    assert sent == [(["create", "create"], False), (["upsert", "upsert"], True)], \
        "the refused inserts are sent again as upserts"
    rows = {e.source_id: (e.action, e.origin) for e in journal.entries("m-1", "patient")}
    assert rows == {"1": ("updated", "created"), "2": ("failed", "none")}, "the later write wins, as with upserts"
