"""The load's write-ahead through journal intents, end to end on one batch: a host stopped after the
write and before the journal leaves the batch's new records known as `created` (origin created, code
write_in_progress), and the batch run again journals them as created with their ids. And one journal row
per record: a minor with two guardian links (two rows of an update map writing one contact) loads. And the
final report counts what the audit log lists, from the same read of the journal."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.extract import extract
from agent.synth import synthesize
from devtools import azurite
from devtools.stack import FAST_EMULATOR, LocalStack, drive_migration, practice_stack
from shared.dataverse.schema import read_table
from shared.pipeline.audit import audit_lines
from shared.pipeline.finish import JournalTally, build_report, finish
from shared.pipeline.load import load_batch
from shared.pipeline.rollback import record_watermark
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.journal import WRITE_IN_PROGRESS, Journal, row_key
from shared.state.migrations import Migration

TENANT = "practice-group-1"
MAP = "fee_schedule_item"


@dataclass
class Loaded:
    stack: LocalStack
    migration_id: str
    last_guardian: str
    """The patient id the minor's later guardian link names."""

    @property
    def rt(self) -> Runtime:
        return self.stack.runtime()


@pytest.fixture(scope="module")
def loaded(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    work = Path(tmp_path_factory.mktemp("write-ahead"))
    practice = work / "practice.db"
    synth = synthesize(practice, 10, 5)
    with sqlite3.connect(practice) as db:  # patient 1 a minor with two guardians (links 901 then 902)
        ids = [row[0] for row in db.execute("SELECT patient_id FROM v_patient ORDER BY patient_id LIMIT 3")]
        db.executemany("INSERT INTO v_patient_guardian (guardian_link_id, patient_id, guardian_id, relationship,"
                       " is_responsible_party, modified_at) VALUES (?, ?, ?, 1, 1, '2026-01-01 10:00:00')",
                       [("901", ids[0], ids[1]), ("902", ids[0], ids[2])])
    bundle = extract(str(practice), work / "bundle", files_root=synth.files_root).bundle_dir
    with practice_stack(work, practice, storage=azurite, emulator_config=FAST_EMULATOR) as stack:
        result = drive_migration(stack, bundle, timeout=300, sample_patients=0)
        assert result["view"]["runtime_status"] == "Completed", result["view"].get("custom_status")
        yield Loaded(stack, str(result["migration_id"]), str(ids[2]))


async def _forget(rt: Runtime, migration: Migration, rows: dict[str, str], target_table: str) -> None:
    """Take the batch back to before it ran: its records deleted from Dataverse, its journal rows gone."""
    async with dataverse_client(rt, migration) as client:
        info = await read_table(client, target_table)
        assert info is not None
        for target_id in rows.values():
            await client.request("DELETE", f"{info.entity_set_name}({target_id})")
    for source_id in rows:  # the test removes rows the API never deletes
        partition = Journal.partition(migration.migration_id, MAP, source_id)
        rt.journal._table_of_partition(partition).delete_entity(partition, row_key(source_id))  # noqa: SLF001


def test_a_batch_stopped_between_its_write_and_its_journal_leaves_its_records_created(
        loaded: Loaded, monkeypatch: pytest.MonkeyPatch):
    rt = loaded.rt
    migration = rt.migrations.get(TENANT, loaded.migration_id)
    first = {e.source_id: e for e in rt.journal.entries(loaded.migration_id, MAP) if e.batch == f"{MAP}/0"}
    assert first, sorted({(e.table, e.batch, e.action, e.origin) for e in rt.journal.entries(loaded.migration_id)})
    assert {(e.action, e.origin) for e in first.values()} == {("created", "created")}
    target_table = next(iter(first.values())).target_table
    assert target_table
    asyncio.run(_forget(rt, migration, {sid: str(e.target_id) for sid, e in first.items()}, target_table))
    assert not set(first) & {e.source_id for e in rt.journal.entries(loaded.migration_id, MAP)}

    def stopped(entries: Any, new: Any = ()) -> None:
        raise RuntimeError("host stopped")  # the write went out; the journal of its outcome never did

    monkeypatch.setattr(rt.journal, "record", stopped)
    with pytest.raises(RuntimeError, match="host stopped"):
        asyncio.run(load_batch(rt, migration, MAP, 0))
    monkeypatch.undo()

    after_stop = {e.source_id: e for e in rt.journal.entries(loaded.migration_id, MAP) if e.source_id in first}
    assert set(after_stop) == set(first)
    assert {(e.action, e.origin, e.code) for e in after_stop.values()} == {("failed", "created", WRITE_IN_PROGRESS)}
    assert rt.journal.existing_origins(loaded.migration_id, MAP, list(first)) == dict.fromkeys(first, "created")

    asyncio.run(load_batch(rt, migration, MAP, 0))  # Durable runs the activity again
    again = {e.source_id: e for e in rt.journal.entries(loaded.migration_id, MAP) if e.source_id in first}
    assert {(e.action, e.origin, e.code) for e in again.values()} == {("created", "created", None)}
    assert all(e.target_id for e in again.values())


def test_a_minor_with_two_guardian_links_keeps_the_last_and_the_first_is_journaled_superseded(loaded: Loaded):
    rt = loaded.rt
    entries = {e.source_id: e for e in rt.journal.entries(loaded.migration_id, "guardian")}
    minor = next(sid for sid, e in entries.items() if e.action == "updated")
    assert (entries["901"].action, entries["901"].code) == ("skipped", "superseded")
    assert "902" not in entries and len(entries) == 2  # one row per record, one per superseded link
    report = rt.artifacts.get_json(loaded.migration_id, "reports/final.json")
    assert report["unaccounted"] == {}, report["unaccounted"]
    contacts = loaded.stack.emulator.rows("contact")
    guardian = contacts[str(entries[minor].target_id)]["bw_guardianid"]["id"]
    assert contacts[guardian]["bw_sourceid"] == f"P-{loaded.last_guardian}"  # the later link's guardian


def test_the_final_report_counts_exactly_what_the_audit_log_lists(loaded: Loaded):
    rt = loaded.rt
    migration = rt.migrations.get(TENANT, loaded.migration_id)
    tally = JournalTally()
    lines = list(csv.DictReader(io.StringIO("".join(audit_lines(rt, loaded.migration_id, observe=tally.add)))))
    report = build_report(rt, migration, tally)
    listed: dict[str, Counter[str]] = {}
    for line in lines:
        listed.setdefault(line["table"], Counter())[line["action"]] += 1
    assert report.maps and all(outcome.actions == dict(listed.get(outcome.map, {})) for outcome in report.maps)
    for outcome in report.maps:  # and what each map's own read of the journal counts
        assert outcome.actions == dict(Counter(e.action for e in rt.journal.entries(loaded.migration_id, outcome.map)))
    assert report.unaccounted == {}
    # A row the journal lost shows as unaccounted in its source table.
    lost = next(o for o in report.maps if o.actions.get("created"))
    tally.actions[lost.map]["created"] -= 1
    assert build_report(rt, migration, tally).unaccounted == {lost.source_table: 1}


def test_the_final_stage_reads_each_maps_journal_once_and_marks_the_tables_it_wrote(
        loaded: Loaded, monkeypatch: pytest.MonkeyPatch):
    rt = loaded.rt
    migration = rt.migrations.get(TENANT, loaded.migration_id)
    maps = rt.journal.tables(loaded.migration_id)
    by_journal = record_watermark(rt, migration)  # the watermark's own read of the journal
    reads: Counter[str] = Counter()
    table_entries = Journal._table_entries

    def counting(journal: Journal, migration_id: str, table: str) -> Iterator[Any]:
        reads[table] += 1
        return table_entries(journal, migration_id, table)

    monkeypatch.setattr(Journal, "_table_entries", counting)
    info = finish(rt, migration)
    assert maps and reads == Counter({name: 1 for name in maps})
    assert info.watermark == by_journal is not None
