"""§11 alternate keys (addressing, Active-only, uniqueness, index states) and @odata.bind validation."""

from __future__ import annotations

import httpx

from emulator.testing import RunningEmulator
from tests.emulator.helpers import add_source_key, create_table, entity_id, label, ok, string_column, wait_key


def test_key_is_pending_then_active_and_unusable_until_active(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(key_activation_seconds=2500.0)  # 2.5 real seconds at 1,000x: long enough to observe Pending
    add_source_key(api, "contact", wait=False)
    keys = api.get("EntityDefinitions(LogicalName='contact')/Keys").json()["value"]
    assert [(k["SchemaName"], k["KeyAttributes"]) for k in keys] == [("bw_contact_sourceid_key", ["bw_sourceid"])]
    assert keys[0]["EntityKeyIndexStatus"] in ("Pending", "InProgress")  # InProgress after half the build time
    r = api.patch("contacts(bw_sourceid='P-1')", json={"lastname": "A"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith(
        "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.contact'.")
    wait_key(api, "contact", "bw_contact_sourceid_key")
    ok(api.patch("contacts(bw_sourceid='P-1')", json={"lastname": "A"}), 204)


def test_key_on_columns_that_are_no_key_is_400(api: httpx.Client) -> None:
    r = api.get("contacts(lastname='A')")
    assert r.status_code == 400 and "not valid for resource" in r.json()["error"]["message"]


def test_key_build_fails_on_duplicate_existing_data(emu: RunningEmulator, api: httpx.Client) -> None:
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("bw_SourceId")), 204)
    for _ in range(2):
        ok(api.post("contacts", json={"lastname": "Dup", "bw_sourceid": "SAME"}), 204)
    ok(api.post("EntityDefinitions(LogicalName='contact')/Keys",
                json={"SchemaName": "bw_contact_sourceid_key", "KeyAttributes": ["bw_sourceid"]}), 204)
    wait_key(api, "contact", "bw_contact_sourceid_key", status="Failed")
    assert api.get("contacts(bw_sourceid='SAME')").status_code == 400


def test_upsert_by_key_creates_201_then_updates_200_with_key_form_entity_id(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    prefer = {"Prefer": "return=representation"}
    r = ok(api.patch("contacts(bw_sourceid='P-123')", json={"lastname": "Ruiz"}, headers=prefer), 201)
    assert r.json()["bw_sourceid"] == "P-123"  # key values from the URL are copied into the new row
    assert r.headers["OData-EntityId"].endswith("contacts(bw_sourceid='P-123')")
    cid = r.json()["contactid"]
    r = ok(api.patch("contacts(bw_sourceid='P-123')", json={"firstname": "Ana"}, headers=prefer), 200)
    assert r.json()["contactid"] == cid and r.json()["lastname"] == "Ruiz"
    r = ok(api.patch("contacts(bw_sourceid='P-123')", json={"firstname": "Ana"}), 204)
    assert r.headers["OData-EntityId"].endswith("contacts(bw_sourceid='P-123')")
    assert api.get("contacts(bw_sourceid='P-123')").json()["contactid"] == cid
    assert api.get("contacts(bw_sourceid='nope')").status_code == 404
    r = api.patch("contacts(bw_sourceid='P-9')", json={"lastname": "X"}, headers={"If-Match": "*"})
    assert r.status_code == 404
    r = api.patch("contacts(bw_sourceid='P-123')", json={"lastname": "X"}, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    ok(api.delete("contacts(bw_sourceid='P-123')"), 204)
    assert len(api.get("contacts").json()["value"]) == 0


def test_key_uniqueness_on_create_and_update_is_412(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    ok(api.post("contacts", json={"lastname": "A", "bw_sourceid": "K1"}), 204)
    r = api.post("contacts", json={"lastname": "B", "bw_sourceid": "k1"})  # keys compare case-insensitively
    assert r.status_code == 412 and r.json()["error"]["code"] == "0x80040237"
    other = entity_id(api.post("contacts", json={"lastname": "C", "bw_sourceid": "K2"}))
    assert api.patch(f"contacts({other})", json={"bw_sourceid": "K1"}).status_code == 412


def test_composite_key_with_string_and_integer(api: httpx.Client) -> None:
    create_table(api, "bw_Thing")
    ok(api.post("EntityDefinitions(LogicalName='bw_thing')/Attributes", json=string_column("bw_Code")), 204)
    ok(api.post("EntityDefinitions(LogicalName='bw_thing')/Attributes", json={
        "@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata", "SchemaName": "bw_Seq",
        "DisplayName": label("Seq"), "RequiredLevel": {"Value": "None"}}), 204)
    ok(api.post("EntityDefinitions(LogicalName='bw_thing')/Keys",
                json={"SchemaName": "bw_thing_code_seq", "KeyAttributes": ["bw_code", "bw_seq"]}), 204)
    wait_key(api, "bw_thing", "bw_thing_code_seq")
    ok(api.patch("bw_things(bw_code='A',bw_seq=1)", json={"bw_name": "one"}), 204)
    ok(api.patch("bw_things(bw_seq=2,bw_code='A')", json={"bw_name": "two"}), 204)
    rows = api.get("bw_things", params={"$orderby": "bw_seq"}).json()["value"]
    assert [(r["bw_code"], r["bw_seq"], r["bw_name"]) for r in rows] == [("A", 1, "one"), ("A", 2, "two")]
    assert api.get("bw_things(bw_code='A')").status_code == 400  # names and number must match the key


def test_bind_by_id_and_by_alternate_key_and_errors(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    guarantor = entity_id(api.post("contacts", json={"lastname": "G", "bw_sourceid": "G-1"}))
    r = ok(api.post("contacts", json={"lastname": "C", "parentcustomerid_contact@odata.bind":
                                      "/contacts(bw_sourceid='G-1')"}, headers={"Prefer": "return=representation"}),
           201)
    assert r.json()["_parentcustomerid_value"] == guarantor
    ok(api.post("contacts", json={"parentcustomerid_contact@odata.bind": f"contacts({guarantor})"}), 204)
    # navigation property names are case-sensitive
    r = api.post("contacts", json={"ParentCustomerId_contact@odata.bind": f"/contacts({guarantor})"})
    assert r.status_code == 400
    # the target row must exist
    r = api.post("contacts", json={"parentcustomerid_contact@odata.bind": "/contacts(bw_sourceid='missing')"})
    assert r.status_code == 404
    r = api.post("contacts", json={"parentcustomerid_contact@odata.bind":
                                   "/contacts(99999999-9999-9999-9999-999999999999)"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    # the set must exist and be a target of that navigation property
    assert api.post("contacts", json={"parentcustomerid_contact@odata.bind": f"/nosuch({guarantor})"}).status_code \
        == 400
    assert api.post("contacts", json={"parentcustomerid_contact@odata.bind":
                                      "/systemusers(00000000-0000-0000-0000-000000000101)"}).status_code == 400


def test_polymorphic_navigation_names(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))
    acc = entity_id(api.post("accounts", json={"name": "Practice"}))
    ok(api.post("contacts", json={"parentcustomerid_account@odata.bind": f"/accounts({acc})"}), 204)
    ok(api.post("appointments", json={"regardingobjectid_contact_appointment@odata.bind": f"/contacts({cid})"}), 204)
    ok(api.post("annotations", json={"objectid_contact@odata.bind": f"/contacts({cid})"}), 204)
    assert api.post("appointments", json={"regardingobjectid_contact@odata.bind": f"/contacts({cid})"}).status_code \
        == 400


def test_custom_lookup_binds_by_its_schema_name_and_by_alternate_key(api: httpx.Client) -> None:
    create_table(api, "bw_InsuranceCarrier")
    add_source_key(api, "bw_insurancecarrier")
    ok(api.post("RelationshipDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata", "SchemaName": "bw_carrier_contacts",
        "ReferencedEntity": "bw_insurancecarrier", "ReferencedAttribute": "bw_insurancecarrierid",
        "ReferencingEntity": "contact",
        "Lookup": {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata", "SchemaName": "bw_CarrierId",
                   "DisplayName": label("Carrier")}}), 204)
    ok(api.patch("bw_insurancecarriers(bw_sourceid='C-1')", json={"bw_name": "Delta"}), 204)
    r = ok(api.post("contacts", json={"bw_CarrierId@odata.bind": "/bw_insurancecarriers(bw_sourceid='C-1')"},
                    headers={"Prefer": "return=representation"}), 201)
    carrier = api.get("bw_insurancecarriers(bw_sourceid='C-1')").json()["bw_insurancecarrierid"]
    assert r.json()["_bw_carrierid_value"] == carrier
    assert api.post("contacts", json={"bw_carrierid@odata.bind": f"/bw_insurancecarriers({carrier})"}).status_code \
        == 400
    kids = api.get(f"bw_insurancecarriers({carrier})/bw_carrier_contacts").json()["value"]
    assert [k["contactid"] for k in kids] == [r.json()["contactid"]]
    assert api.get("contacts", params={"$filter": f"_bw_carrierid_value eq {carrier}"}).json()["value"]


def test_key_values_in_the_body_are_ignored_on_update(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    ok(api.patch("contacts(bw_sourceid='P-5')", json={"lastname": "A", "bw_sourceid": "P-5"}), 204)
    ok(api.patch("contacts(bw_sourceid='P-5')", json={"lastname": "B", "bw_sourceid": "P-6"}), 204)
    assert api.get("contacts(bw_sourceid='P-5')").json()["lastname"] == "B"
    assert api.get("contacts(bw_sourceid='P-6')").status_code == 404
