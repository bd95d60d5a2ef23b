"""Write-ahead intents: one entity per write announces many rows; readers see each unsettled row as a
write-ahead entry (origin created) until its own row is journaled and the intent settled."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.data.tables import TableClient, TableServiceClient

from shared.state.journal import WRITE_IN_PROGRESS, Journal, JournalEntry

T = datetime(2026, 11, 30, tzinfo=UTC)


def _journal(connection: str, name: str) -> Journal:
    return Journal(TableServiceClient.from_connection_string(connection), name)


def _entry(source_id: str, table: str = "patient", action: str = "created", origin: str = "created") -> JournalEntry:
    return JournalEntry(migration_id="m-1", table=table, source_id=source_id, target_table="contact",
                        target_id=f"guid-{source_id}", action=action, origin=origin, batch="patient/0", at=T)


def test_announced_rows_read_as_created_write_ahead_entries(storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    journal.announce("m-1", "patient", "patient/0", "contact", ["3", "10", "2"])
    entries = list(journal.entries("m-1", "patient"))
    assert sorted(e.source_id for e in entries) == ["10", "2", "3"], "each announced id once, like rows"
    assert all(e.action == "failed" and e.origin == "created" and e.code == WRITE_IN_PROGRESS
               and e.target_table == "contact" and e.batch == "patient/0" and e.target_id is None for e in entries)
    assert journal.existing_origins("m-1", "patient", ["2", "10", "99"]) == {"2": "created", "10": "created"}


def test_a_row_of_its_own_wins_over_the_intent(
        storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    journal.announce("m-1", "patient", "patient/0", "contact", ["1", "2", "3", "4"])
    journal.record([_entry("2", action="updated"), _entry("4", action="failed", origin="none"), _entry("5")])
    entries = list(journal.entries("m-1", "patient"))
    assert sorted((e.source_id, e.action, e.code or "") for e in entries) == [
        ("1", "failed", WRITE_IN_PROGRESS), ("2", "updated", ""), ("3", "failed", WRITE_IN_PROGRESS),
        ("4", "failed", ""), ("5", "created", "")]
    assert journal.existing_origins("m-1", "patient", ["1", "4"]) == {"1": "created", "4": "none"}, \
        "the row's own origin, not the intent's"


def test_settled_intents_disappear_and_other_partitions_and_migrations_are_untouched(
        storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    mine = journal.announce("m-1", "patient", "patient/0", "contact", ["1", "2"])
    journal.announce("m-1", "appointment", "appointment/0", "appointment", ["7"], ["guid-7"])
    journal.announce("m-10", "patient", "patient/0", "contact", ["1"])
    journal.record([_entry("1"), _entry("2")])
    journal.settle("m-1", "patient", mine)
    everything = [(e.table, e.source_id, e.code, e.target_id) for e in journal.entries("m-1")]
    assert everything == [("appointment", "7", WRITE_IN_PROGRESS, "guid-7"),
                          ("patient", "1", None, "guid-1"), ("patient", "2", None, "guid-2")]
    assert [e.migration_id for e in journal.entries("m-10")] == ["m-10"]


def test_twin_intents_of_the_same_rows_give_one_entry_each(storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    journal.announce("m-1", "patient", "patient/0", "contact", ["1", "2"])
    journal.announce("m-1", "patient", "patient/0", "contact", ["2", "3"])
    assert sorted(e.source_id for e in journal.entries("m-1", "patient")) == ["1", "2", "3"]


def test_many_long_ids_split_over_entities_and_round_trip(storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    ids = [f"{n}|{'x' * 200}/#?" for n in range(3_000)]  # ~700,000 characters of JSON: several entities
    intents = journal.announce("m-1", "patient", "patient/0", "contact", ids)
    assert len(intents) > 1
    assert sorted(e.source_id for e in journal.entries("m-1", "patient")) == sorted(ids)
    assert len(journal.existing_origins("m-1", "patient", ids[:10])) == 10
    journal.settle("m-1", "patient", intents)
    assert list(journal.entries("m-1", "patient")) == []


@pytest.mark.parametrize("as_inserts", [False, True], ids=["upserts", "inserts"])
def test_the_lean_transaction_stores_what_the_sdk_would(storage_connection_string: str, unique_name: str,
                                                        monkeypatch, as_inserts: bool):
    journal = _journal(storage_connection_string, unique_name)
    sent: list[bool] = []
    lean = Journal._send_lean

    def spy(table: TableClient, operations: list) -> bool:
        sent.append(lean(table, operations))
        return sent[-1]

    monkeypatch.setattr(Journal, "_send_lean", staticmethod(spy))
    odd = ["12|1", "a/b", "c#d", "e?f", "g\\h", "it's", "é~%20"]
    entries = [_entry(sid) for sid in odd] + [_entry(str(n)) for n in range(150)]
    journal.record(entries, new={e.source_id for e in entries} if as_inserts else ())
    assert sent and all(sent), "every transaction went the lean way"
    by_sdk = _journal(storage_connection_string, unique_name + "sdk")
    monkeypatch.setattr(Journal, "_send_lean", staticmethod(lambda table, operations: False))
    by_sdk.record(entries)
    assert list(journal.entries("m-1")) == list(by_sdk.entries("m-1"))


def test_a_settle_sent_again_after_a_lost_answer_still_deletes_the_rest(
        storage_connection_string: str, unique_name: str):
    journal = _journal(storage_connection_string, unique_name)
    first = journal.announce("m-1", "patient", "patient/0", "contact", ["1"])
    second = journal.announce("m-1", "patient", "patient/0", "contact", ["2"])
    journal.settle("m-1", "patient", first)
    journal.settle("m-1", "patient", first + second)  # the first is gone: the transaction falls back
    assert list(journal.entries("m-1", "patient")) == []


def test_intents_between_rows_of_several_buckets_give_each_id_once(storage_connection_string: str, unique_name: str):
    # 995-999 and 1000-1004 fall in different buckets; 1,200 rows take more than one page.
    for size in (10, 1_200):
        journal = _journal(storage_connection_string, f"{unique_name}{size}")
        ids = [str(i) for i in range(995, 995 + size)]
        announced = {"999", "1003", ids[-1]}
        journal.record([_entry(sid) for sid in ids if sid not in announced])
        journal.announce("m-1", "patient", "patient/1", "contact", sorted(announced | {"1004"}))
        entries = list(journal.entries("m-1", "patient"))
        assert len(entries) == len(ids) and sorted((e.source_id for e in entries), key=int) == ids, size
        assert {e.source_id for e in entries if e.code == WRITE_IN_PROGRESS} == announced, size
