"""Deleting schema definitions (what rollback's `remove_schema` relies on): a deleted column takes its
data with it, a column an alternate key uses cannot go before the key, a relationship takes its lookup
column and values, a custom table goes with its records, and standard tables and columns cannot be
deleted at all (Microsoft Learn, "Delete a table": custom tables only, data deleted with them)."""

from __future__ import annotations

import httpx

from emulator.testing import RunningEmulator
from tests.emulator.helpers import create_table, label, ok, string_column


def _contact(api: httpx.Client, body: dict) -> str:
    return ok(api.post("contacts", json=body), 204).headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_a_deleted_column_takes_its_values_and_waits_for_its_key(emu: RunningEmulator, api: httpx.Client) -> None:
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("bw_SourceId", 50)), 204)
    ok(api.post("EntityDefinitions(LogicalName='contact')/Keys",
                json={"SchemaName": "bw_sourceid_key", "KeyAttributes": ["bw_sourceid"]}), 204)
    record = _contact(api, {"lastname": "Kept", "bw_sourceid": "P-1"})
    column = "EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='bw_sourceid')"
    refused = api.delete(column)
    assert refused.status_code == 400 and "bw_sourceid_key" in refused.json()["error"]["message"]
    ok(api.delete("EntityDefinitions(LogicalName='contact')/Keys(LogicalName='bw_sourceid_key')"), 204)
    ok(api.delete(column), 204)
    assert api.get(column).status_code == 404
    assert "bw_sourceid" not in emu.rows("contact")[record]
    assert emu.rows("contact")[record]["lastname"] == "Kept"
    assert api.delete(column).status_code == 404


def test_a_deleted_relationship_takes_its_lookup_column_and_values(emu: RunningEmulator, api: httpx.Client) -> None:
    create_table(api, "bw_Treatment")
    ok(api.post("RelationshipDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata", "SchemaName": "bw_contact_bw_treatment",
        "ReferencedEntity": "contact", "ReferencedAttribute": "contactid", "ReferencingEntity": "bw_treatment",
        "Lookup": {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata", "SchemaName": "bw_PatientId",
                   "DisplayName": label("Patient")}}), 204)
    patient = _contact(api, {"lastname": "P"})
    ok(api.post("bw_treatments", json={"bw_name": "t", "bw_PatientId@odata.bind": f"/contacts({patient})"}), 204)
    ok(api.delete("RelationshipDefinitions(SchemaName='bw_contact_bw_treatment')"), 204)
    assert api.get("EntityDefinitions(LogicalName='bw_treatment')/Attributes(LogicalName='bw_patientid')") \
        .status_code == 404
    assert all("bw_patientid" not in row for row in emu.rows("bw_treatment").values())
    assert api.get("RelationshipDefinitions(SchemaName='bw_contact_bw_treatment')").status_code == 404


def test_custom_tables_go_with_their_records_standard_ones_never(emu: RunningEmulator, api: httpx.Client) -> None:
    create_table(api, "bw_Policy")
    ok(api.post("bw_policies", json={"bw_name": "x"}), 204)
    ok(api.delete("EntityDefinitions(LogicalName='bw_policy')"), 204)
    assert api.get("EntityDefinitions(LogicalName='bw_policy')").status_code == 404
    assert "bw_policy" not in emu.dump()["rows"]
    standard = api.delete("EntityDefinitions(LogicalName='contact')")
    assert standard.status_code == 403
    assert api.delete("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='lastname')").status_code == 403
    ok(api.post("GlobalOptionSetDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "Name": "bw_tooth", "OptionSetType": "Picklist",
        "IsGlobal": True, "DisplayName": label("Tooth"), "Options": [{"Value": 1, "Label": label("1")}]}), 204)
    ok(api.delete("GlobalOptionSetDefinitions(Name='bw_tooth')"), 204)
    assert api.get("GlobalOptionSetDefinitions(Name='bw_tooth')").status_code == 404
