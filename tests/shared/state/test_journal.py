"""The journal keeps one row per source record; rewriting a batch changes nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime

from azure.data.tables import TableServiceClient

from shared.state.journal import Journal, JournalEntry

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
    other = _entry("1").model_copy(update={"migration_id": "m-10"})
    journal.record([other])
    assert [e.migration_id for e in journal.entries("m-1")] == ["m-1"]


def test_origins_of_one_part_read_only_that_parts_key_range(storage_connection_string: str, unique_name: str):
    # Unpadded numeric ids: "9" < "10" must hold for a part (a run of consecutive ids) to be one key range.
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry(str(i)) for i in range(1, 1201)])
    read: list[str] = []
    query = journal._table.query_entities

    def counting(*args, **kwargs):
        for entity in query(*args, **kwargs):
            read.append(entity["RowKey"])
            yield entity

    journal._table.query_entities = counting  # type: ignore[method-assign]
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

    def flaky(self, operations):
        calls.append(len(operations))
        if len(calls) in (1, 3):  # the first transaction's first try; another one's first try
            raise ServiceResponseError("Connection aborted.")
        return send(self, operations)

    monkeypatch.setattr(Journal, "_send_lean", flaky)
    journal.record([_entry(str(i)) for i in range(250)])  # three transactions, sent in parallel
    assert len(calls) == 5
    assert sorted(e.source_id for e in journal.entries("m-1", "patient")) == sorted(str(i) for i in range(250))


def test_two_entries_of_one_record_in_one_call_keep_the_last_instead_of_failing_the_transaction(
        storage_connection_string: str, unique_name: str):
    journal = Journal(TableServiceClient.from_connection_string(storage_connection_string), unique_name)
    journal.record([_entry("7", action="updated", origin="none"), _entry("8"), _entry("7", action="failed")])
    entries = {e.source_id: e for e in journal.entries("m-1", "patient")}
    assert set(entries) == {"7", "8"} and entries["7"].action == "failed"
