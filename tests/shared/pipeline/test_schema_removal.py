"""`remove_schema` against the emulator, without the host: it deletes only what the schema journal lists,
in dependency order, and keeps a created table that still holds records, a created column still
holding a value (a kept record's) with the key over it, the choices while anything stays, and never
a standard table even when a journal names one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from devtools import azurite
from devtools.stack import emulator_runtime
from emulator.testing import RunningEmulator, run_emulator
from shared.pipeline.rollback import remove_schema
from shared.pipeline.schema import CREATED, created_components
from shared.runtime import Runtime
from shared.state.migrations import Target
from tests.emulator.helpers import create_table, label, ok, string_column


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 1000.0}) as running:
        yield running


@pytest.fixture
def rt(azurite: azurite.AzuriteProcess, unique_name: str) -> Runtime:
    return emulator_runtime(azurite.connection_string, f"rs{unique_name[:10]}")


def _schema(emu: RunningEmulator, api: httpx.Client) -> None:
    create_table(api, "bw_Policy")
    create_table(api, "bw_Visit")
    for name in ("bw_Note", "bw_Empty"):
        ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column(name, 50)), 204)
    ok(api.post("EntityDefinitions(LogicalName='contact')/Keys",
                json={"SchemaName": "bw_empty_key", "KeyAttributes": ["bw_empty"]}), 204)
    ok(api.post("EntityDefinitions(LogicalName='contact')/Keys",
                json={"SchemaName": "bw_note_key", "KeyAttributes": ["bw_note"]}), 204)
    ok(api.post("GlobalOptionSetDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "Name": "bw_tooth", "OptionSetType": "Picklist",
        "IsGlobal": True, "DisplayName": label("Tooth"), "Options": [{"Value": 1, "Label": label("1")}]}), 204)
    ok(api.post("bw_visits", json={"bw_name": "kept visit"}), 204)  # a record the rollback kept
    ok(api.post("contacts", json={"lastname": "Kept", "bw_note": "x"}), 204)


def test_only_journaled_components_without_data_are_removed(emu: RunningEmulator, rt: Runtime):
    with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30) as api:
        _schema(emu, api)
        migration = rt.migrations.create("tenant-1", "schema", Target(environment_url=emu.base_url,
                                                                       application_users=["app-1"]))
        journal = ["optionset:bw_tooth", "table:bw_policy", "table:bw_visit", "column:bw_visit.bw_name",
                   "column:contact.bw_note", "column:contact.bw_empty", "key:contact.bw_empty_key",
                   "key:contact.bw_note_key", "table:contact", "column:contact.lastname"]
        rt.artifacts.put_json(migration.migration_id, CREATED, {"components": journal})
        assert created_components(rt, migration.migration_id) == journal

        removal = asyncio.run(remove_schema(rt, migration))
        assert sorted(removal.removed) == ["column:contact.bw_empty", "key:contact.bw_empty_key", "table:bw_policy"]
        assert removal.kept == {
            "table:bw_visit": "table_holds_records", "column:bw_visit.bw_name": "table_holds_records",
            "column:contact.bw_note": "holds_data", "key:contact.bw_note_key": "in_use",
            "optionset:bw_tooth": "in_use", "table:contact": "not_custom", "column:contact.lastname": "not_custom"}
        assert api.get("EntityDefinitions(LogicalName='bw_policy')").status_code == 404
        assert api.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='bw_empty')").status_code == 404
        assert api.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='bw_note')").status_code == 200
        assert api.get("EntityDefinitions(LogicalName='bw_visit')").status_code == 200

        # Once the kept records are gone too, a second run removes the rest and nothing twice.
        for table, rows in emu.dump()["rows"].items():
            for record, row in rows.items():
                if table == "bw_visit" or (table == "contact" and row.get("bw_note")):
                    ok(api.delete(f"{'bw_visits' if table == 'bw_visit' else 'contacts'}({record})"), 204)
        again = asyncio.run(remove_schema(rt, migration))
        assert sorted(set(again.removed) - set(removal.removed)) == [
            "column:contact.bw_note", "key:contact.bw_note_key", "optionset:bw_tooth", "table:bw_visit"]
        assert again.kept == {"table:contact": "not_custom", "column:contact.lastname": "not_custom"}
        assert api.get("EntityDefinitions(LogicalName='contact')").status_code == 200
