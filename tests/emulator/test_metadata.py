"""§11 Metadata: tables, columns, option sets, relationships, keys, publishing, prefixes, licence, faults."""

from __future__ import annotations

import threading

import httpx

from emulator.testing import RunningEmulator
from tests.emulator.helpers import add_source_key, create_table, label, ok, string_column, table_body


def test_create_table_derives_names_and_is_readable_three_ways(api: httpx.Client) -> None:
    r = ok(api.post("EntityDefinitions", json=table_body("bw_InsuranceCarrier")), 204)
    mid = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    by_name = ok(api.get("EntityDefinitions(LogicalName='bw_insurancecarrier')")).json()
    assert (by_name["LogicalName"], by_name["EntitySetName"], by_name["PrimaryIdAttribute"],
            by_name["PrimaryNameAttribute"], by_name["MetadataId"]) == (
        "bw_insurancecarrier", "bw_insurancecarriers", "bw_insurancecarrierid", "bw_name", mid)
    assert by_name["ObjectTypeCode"] >= 10000 and by_name["IsCustomEntity"] is True
    assert ok(api.get(f"EntityDefinitions({mid})")).json()["SchemaName"] == "bw_InsuranceCarrier"
    listed = api.get("EntityDefinitions", params={
        "$select": "MetadataId,LogicalName,EntitySetName", "$filter": "LogicalName eq 'bw_insurancecarrier'"})
    assert [v["EntitySetName"] for v in listed.json()["value"]] == ["bw_insurancecarriers"]
    assert api.get("EntityDefinitions", params={"$filter": "LogicalName eq 'bw_none'"}).json()["value"] == []
    ok(api.post("bw_insurancecarriers", json={"bw_name": "Delta Dental"}), 204)
    create_table(api, "bw_Treatment")
    create_table(api, "bw_Policy")
    sets = {v["LogicalName"]: v["EntitySetName"] for v in api.get("EntityDefinitions").json()["value"]}
    assert sets["bw_policy"] == "bw_policies"


def test_missing_definitions_are_404(api: httpx.Client) -> None:
    assert api.get("EntityDefinitions(LogicalName='bw_none')").status_code == 404
    assert api.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='bw_none')").status_code == 404
    assert api.get("GlobalOptionSetDefinitions(Name='bw_none')").status_code == 404
    assert api.get("RelationshipDefinitions(SchemaName='bw_none')").status_code == 404


def test_table_validation_duplicates_and_prefix(api: httpx.Client) -> None:
    body = table_body("bw_Thing")
    del body["HasNotes"]
    assert api.post("EntityDefinitions", json=body).status_code == 400
    no_primary = table_body("bw_Thing")
    no_primary["Attributes"][0]["IsPrimaryName"] = False
    assert api.post("EntityDefinitions", json=no_primary).status_code == 400
    create_table(api, "bw_Thing")
    r = api.post("EntityDefinitions", json=table_body("bw_Thing"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040237"
    r = api.post("EntityDefinitions", json=table_body("fs_Thing", primary="fs_Name"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x8004431a"
    r = api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("new_X"))
    assert r.json()["error"]["code"] == "0x8004431a"


def test_solution_header_or_query_selects_publisher_prefix_and_is_recorded(emu: RunningEmulator,
                                                                         api: httpx.Client) -> None:
    pub = ok(api.post("publishers", json={"uniquename": "fsdental", "friendlyname": "FS", "customizationprefix": "fs",
                                          "customizationoptionvalueprefix": 10124},
                      headers={"Prefer": "return=representation"}), 201).json()["publisherid"]
    ok(api.post("solutions", json={"uniquename": "FSMigration", "friendlyname": "FS", "version": "1.0.0.0",
                                   "publisherid@odata.bind": f"/publishers({pub})"}), 204)
    hdr = {"MSCRM.SolutionUniqueName": "FSMigration"}
    assert api.post("EntityDefinitions", json=table_body("bw_A"), headers=hdr).status_code == 400
    ok(api.post("EntityDefinitions", json=table_body("fs_A", primary="fs_Name"), headers=hdr), 204)
    ok(api.post("EntityDefinitions?SolutionUniqueName=FSMigration", json=table_body("fs_B", primary="fs_Name")), 204)
    assert api.post("EntityDefinitions", json=table_body("bw_C"), headers={"MSCRM.SolutionUniqueName": "Nope"}) \
        .status_code == 400
    components = [c for c in emu.dump()["solution_components"] if c["solution"] == "FSMigration"]
    assert [c["type"] for c in components] == ["Entity", "Entity"]


def test_columns_of_every_type_with_casts(api: httpx.Client) -> None:
    create_table(api, "bw_Claim")
    cols = [
        string_column("bw_Code", 20),
        {"@odata.type": "Microsoft.Dynamics.CRM.MemoAttributeMetadata", "SchemaName": "bw_Notes", "MaxLength": 5000},
        {"@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata", "SchemaName": "bw_Count",
         "MinValue": 0, "MaxValue": 10},
        {"@odata.type": "Microsoft.Dynamics.CRM.DecimalAttributeMetadata", "SchemaName": "bw_Rate", "Precision": 2},
        {"@odata.type": "Microsoft.Dynamics.CRM.MoneyAttributeMetadata", "SchemaName": "bw_Fee", "PrecisionSource": 2},
        {"@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata", "SchemaName": "bw_ServiceDate",
         "Format": "DateOnly", "DateTimeBehavior": {"Value": "DateOnly"}},
        {"@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata", "SchemaName": "bw_At",
         "Format": "DateAndTime"},
        {"@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata", "SchemaName": "bw_Paid",
         "OptionSet": {"TrueOption": {"Value": 1, "Label": label("Yes")},
                       "FalseOption": {"Value": 0, "Label": label("No")}, "OptionSetType": "Boolean"}},
        {"@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata", "SchemaName": "bw_Kind",
         "OptionSet": {"@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "IsGlobal": False,
                       "OptionSetType": "Picklist", "Options": [{"Value": None, "Label": label("A")},
                                                                {"Value": None, "Label": label("B")}]}},
    ]
    for c in cols:
        ok(api.post("EntityDefinitions(LogicalName='bw_claim')/Attributes", json=c), 204)
    attrs = {a["LogicalName"]: a for a in api.get("EntityDefinitions(LogicalName='bw_claim')/Attributes").json()[
        "value"]}
    assert (attrs["bw_code"]["AttributeType"], attrs["bw_code"]["MaxLength"]) == ("String", 20)
    assert attrs["bw_servicedate"]["DateTimeBehavior"] == {"Value": "DateOnly"}
    pick = api.get("EntityDefinitions(LogicalName='bw_claim')/Attributes(LogicalName='bw_kind')/"
                   "Microsoft.Dynamics.CRM.PicklistAttributeMetadata", params={"$expand": "OptionSet"}).json()
    values = [o["Value"] for o in pick["OptionSet"]["Options"]]
    assert values == [101230000, 101230001]  # publisher option-value prefix 10123 x 10,000 + n
    assert api.get("EntityDefinitions(LogicalName='bw_claim')/Attributes(LogicalName='bw_code')/"
                   "Microsoft.Dynamics.CRM.PicklistAttributeMetadata").status_code == 400
    picks = api.get("EntityDefinitions(LogicalName='bw_claim')/Attributes/"
                    "Microsoft.Dynamics.CRM.PicklistAttributeMetadata").json()["value"]
    assert [p["LogicalName"] for p in picks] == ["bw_kind"]
    row = {"bw_name": "c", "bw_code": "X1", "bw_notes": "n" * 4000, "bw_count": 3, "bw_rate": 1.25, "bw_fee": 10.5,
           "bw_servicedate": "2020-05-06", "bw_at": "2020-05-06T10:00:00+02:00", "bw_paid": True,
           "bw_kind": values[1]}
    got = ok(api.post("bw_claims", json=row, headers={"Prefer": "return=representation"}), 201).json()
    assert got["bw_servicedate"] == "2020-05-06" and got["bw_at"] == "2020-05-06T08:00:00Z"
    for bad in ({"bw_count": 11}, {"bw_count": "3"}, {"bw_code": "x" * 21}, {"bw_kind": 1}, {"bw_paid": 1},
                {"bw_servicedate": "not a date"}):
        assert api.post("bw_claims", json=bad).status_code == 400, bad
    assert api.post("EntityDefinitions(LogicalName='bw_claim')/Attributes", json=string_column("bw_Code")) \
        .json()["error"]["code"] == "0x80040237"


def test_global_option_set_used_by_a_picklist(api: httpx.Client) -> None:
    ok(api.post("GlobalOptionSetDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata", "Name": "bw_specialty", "OptionSetType": "Picklist",
        "DisplayName": label("Specialty"), "Options": [{"Value": 727000000, "Label": label("Ortho")},
                                                       {"Value": 727000001, "Label": label("Endo")}]}), 204)
    got = ok(api.get("GlobalOptionSetDefinitions(Name='bw_specialty')")).json()
    assert [o["Value"] for o in got["Options"]] == [727000000, 727000001]
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json={
        "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata", "SchemaName": "bw_Specialty",
        "GlobalOptionSet@odata.bind": "/GlobalOptionSetDefinitions(Name='bw_specialty')"}), 204)
    ok(api.post("contacts", json={"bw_specialty": 727000001}), 204)
    assert api.post("contacts", json={"bw_specialty": 5}).status_code == 400
    r = ok(api.post("InsertOptionValue", json={"OptionSetName": "bw_specialty", "Value": 727000002,
                                               "Label": label("Perio")}), 200)
    assert r.json()["NewOptionValue"] == 727000002
    ok(api.post("contacts", json={"bw_specialty": 727000002}), 204)
    assert api.post("GlobalOptionSetDefinitions", json={"Name": "bw_specialty", "Options": []}).status_code == 400


def test_one_to_many_relationship_creates_lookup_and_navigation(api: httpx.Client) -> None:
    create_table(api, "bw_Treatment")
    r = ok(api.post("RelationshipDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata", "SchemaName": "bw_contact_bw_treatment",
        "ReferencedEntity": "contact", "ReferencedAttribute": "contactid", "ReferencingEntity": "bw_treatment",
        "CascadeConfiguration": {"Assign": "NoCascade", "Delete": "RemoveLink"},
        "Lookup": {"@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata", "SchemaName": "bw_PatientId",
                   "DisplayName": label("Patient")}}), 204)
    assert "RelationshipDefinitions(" in r.headers["OData-EntityId"]
    lookup = api.get("EntityDefinitions(LogicalName='bw_treatment')/Attributes(LogicalName='bw_patientid')").json()
    assert lookup["AttributeType"] == "Lookup" and lookup["Targets"] == ["contact"]
    rel = api.get("RelationshipDefinitions(SchemaName='bw_contact_bw_treatment')").json()
    assert rel["ReferencingEntityNavigationPropertyName"] == "bw_PatientId"
    many = api.get("EntityDefinitions(LogicalName='bw_treatment')/ManyToOneRelationships").json()["value"]
    assert [m["SchemaName"] for m in many] == ["bw_contact_bw_treatment"]
    assert api.get("RelationshipDefinitions", params={"$filter": "SchemaName eq 'bw_contact_bw_treatment'"}) \
        .json()["value"][0]["ReferencedEntity"] == "contact"
    cid = api.post("contacts", json={"lastname": "P"}).headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    ok(api.post("bw_treatments", json={"bw_name": "t", "bw_PatientId@odata.bind": f"/contacts({cid})"}), 204)
    r = api.post("RelationshipDefinitions", json={
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata", "SchemaName": "bw_contact_bw_treatment",
        "ReferencedEntity": "contact", "ReferencingEntity": "bw_treatment", "Lookup": {"SchemaName": "bw_Other"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040237"
    assert api.post("RelationshipDefinitions", json={"SchemaName": "bw_x"}).status_code == 400


def test_key_limits_and_allowed_types(api: httpx.Client) -> None:
    create_table(api, "bw_K")
    r = api.post("EntityDefinitions(LogicalName='bw_k')/Keys", json={"SchemaName": "bw_k1",
                                                                    "KeyAttributes": ["bw_kid"]})
    assert r.status_code == 400  # a Uniqueidentifier column cannot be a key
    assert api.post("EntityDefinitions(LogicalName='bw_k')/Keys", json={"SchemaName": "bw_k1",
                                                                       "KeyAttributes": ["bw_nope"]}).status_code == 400
    for i in range(11):
        ok(api.post("EntityDefinitions(LogicalName='bw_k')/Attributes", json=string_column(f"bw_C{i}", 10)), 204)
    for i in range(10):
        ok(api.post("EntityDefinitions(LogicalName='bw_k')/Keys",
                    json={"SchemaName": f"bw_key{i}", "KeyAttributes": [f"bw_c{i}"]}), 204)
    r = api.post("EntityDefinitions(LogicalName='bw_k')/Keys", json={"SchemaName": "bw_key10",
                                                                    "KeyAttributes": ["bw_c10"]})
    assert r.status_code == 400 and "10" in r.json()["error"]["message"]
    key = api.get("EntityDefinitions(LogicalName='bw_k')/Keys(LogicalName='bw_key0')").json()
    ok(api.delete(f"EntityDefinitions(LogicalName='bw_k')/Keys({key['MetadataId']})"), 204)
    assert len(api.get("EntityDefinitions(LogicalName='bw_k')/Keys").json()["value"]) == 9


def test_publish_xml_and_publish_all(emu: RunningEmulator, api: httpx.Client) -> None:
    create_table(api, "bw_P")
    assert emu.dump()["entities"]["bw_p"]["Published"] is False
    xml = "<importexportxml><entities><entity>contact</entity><entity>bw_p</entity></entities></importexportxml>"
    ok(api.post("PublishXml", json={"ParameterXml": xml}), 204)
    state = emu.dump()
    assert state["entities"]["bw_p"]["Published"] is True
    assert state["publishes"] == [{"action": "PublishXml", "entities": ["bw_p", "contact"]}]
    assert api.post("PublishXml", json={"ParameterXml": "<importexportxml><entities><entity>nope</entity>"
                                                        "</entities></importexportxml>"}).status_code == 400
    ok(api.post("PublishAllXml", json={}), 204)


def test_custom_table_licence_limit(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(custom_table_limit=2)
    create_table(api, "bw_One")
    create_table(api, "bw_Two")
    r = api.post("EntityDefinitions", json=table_body("bw_Three"))
    assert r.status_code == 403
    assert "Sales Professional" in r.json()["error"]["message"] and "2" in r.json()["error"]["message"]
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("bw_Extra")), 204)
    emu.configure(custom_table_limit=None)
    create_table(api, "bw_Three")


def test_default_licence_limit_is_fifteen(api: httpx.Client) -> None:
    for i in range(15):
        create_table(api, f"bw_T{i}")
    assert api.post("EntityDefinitions", json=table_body("bw_T15")).status_code == 403


def test_propagation_delay_makes_new_column_invisible_to_data_api(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(metadata_propagation_seconds=60000.0)  # a minute of real time: never waited for here
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("bw_Late")), 204)
    r = api.post("contacts", json={"bw_late": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80060888"
    assert api.get("contacts", params={"$select": "bw_late", "$top": "1"}).status_code == 400
    emu.configure(metadata_propagation_seconds=0.0)
    ok(api.post("EntityDefinitions(LogicalName='contact')/Attributes", json=string_column("bw_Now")), 204)
    ok(api.post("contacts", json={"bw_now": "x"}), 204)


def test_concurrent_metadata_writes_get_customization_lock(emu: RunningEmulator) -> None:
    emu.configure(costs={"metadata_write_seconds": 1000.0})  # each table create holds the lock 1 real second
    results: list[httpx.Response] = []

    def create(name: str) -> None:
        with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30) as c:
            results.append(c.post("EntityDefinitions", json=table_body(name)))

    threads = [threading.Thread(target=create, args=(f"bw_Par{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(204) >= 1 and 400 in statuses
    locked = next(r for r in results if r.status_code == 400).json()["error"]
    assert locked["code"] == "0x80071151" and "[EntityCustomization]" in locked["message"]


def test_put_entity_definition_turns_on_notes(emu: RunningEmulator, api: httpx.Client) -> None:
    create_table(api, "bw_N", HasNotes=False)
    cid_row = ok(api.post("bw_ns", json={"bw_name": "n"}), 204).headers["OData-EntityId"]
    rid = cid_row.rsplit("(", 1)[1].rstrip(")")
    assert api.post("annotations", json={"objectid_bw_n@odata.bind": f"/bw_ns({rid})"}).status_code == 400
    definition = api.get("EntityDefinitions(LogicalName='bw_n')").json()
    definition["HasNotes"] = True
    ok(api.put(f"EntityDefinitions({definition['MetadataId']})", json=definition,
               headers={"MSCRM.MergeLabels": "true"}), 204)
    ok(api.post("annotations", json={"objectid_bw_n@odata.bind": f"/bw_ns({rid})"}), 204)
    assert api.patch("EntityDefinitions(LogicalName='bw_n')", json={"HasNotes": True}).status_code == 405


def test_sharepoint_tables_with_their_navigation_properties(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    cid = ok(api.patch("contacts(bw_sourceid='P-1')", json={"lastname": "P"},
                       headers={"Prefer": "return=representation"}), 201).json()["contactid"]
    site = ok(api.post("sharepointsites", json={"name": "Default Site", "absoluteurl":
                                                "https://contoso.sharepoint.com/sites/dental"},
                       headers={"Prefer": "return=representation"}), 201).json()["sharepointsiteid"]
    lib = ok(api.post("sharepointdocumentlocations", json={
        "name": "Contact library", "relativeurl": "contact",
        "parentsiteorlocation_sharepointsite@odata.bind": f"/sharepointsites({site})"},
        headers={"Prefer": "return=representation"}), 201).json()["sharepointdocumentlocationid"]
    loc = ok(api.post("sharepointdocumentlocations", json={
        "name": "Documents on Default Site 1", "relativeurl": "P_ABC", "locationtype": 0, "servicetype": 0,
        "parentsiteorlocation_sharepointdocumentlocation@odata.bind": f"/sharepointdocumentlocations({lib})",
        "regardingobjectid_contact@odata.bind": "/contacts(bw_sourceid='P-1')"},
        headers={"Prefer": "return=representation"}), 201).json()
    assert loc["_regardingobjectid_value"] == cid and loc["_parentsiteorlocation_value"] == lib
    found = api.get("sharepointdocumentlocations", params={"$filter": f"_regardingobjectid_value eq {cid}"}).json()
    assert [v["relativeurl"] for v in found["value"]] == ["P_ABC"]
    assert api.post("sharepointdocumentlocations/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.sharepointdocumentlocation", "name": "x"}]}).status_code == 400


def test_publish_is_serialized(emu: RunningEmulator) -> None:
    emu.configure(costs={"publish_seconds": 1000.0})  # each publish holds the lock 1 real second
    results: list[httpx.Response] = []

    def publish() -> None:
        with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30) as c:
            results.append(c.post("PublishAllXml", json={}))

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 204 in [r.status_code for r in results]
    refused = [r.json()["error"] for r in results if r.status_code == 400]
    assert refused and all("[Publish]" in e["message"] and e["code"] == "0x80071151" for e in refused)


def test_propagation_delay_makes_a_new_table_not_ready(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(metadata_propagation_seconds=60000.0)
    create_table(api, "bw_Fresh")
    r = api.post("bw_freshes", json={"bw_name": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80060891"
    assert api.get("EntityDefinitions(LogicalName='bw_fresh')").status_code == 200  # metadata itself is there
