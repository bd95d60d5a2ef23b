"""§11 Protocol: auth, error bodies, create/read/update/upsert/delete, validation, paging, WhoAmI, table rules."""

from __future__ import annotations

import base64

import httpx

from emulator.testing import RunningEmulator
from emulator.tokens import make_token
from tests.emulator.helpers import entity_id, ok

USER1 = "00000000-0000-0000-0000-000000000101"
DISABLED = "00000000-0000-0000-0000-000000000103"


# ---------- authentication ----------
def test_missing_bearer_is_401_with_json_error(emu: RunningEmulator) -> None:
    r = httpx.get(emu.api_url + "contacts")
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("MissingCrmAuthenticationToken")
    assert "WWW-Authenticate" in r.headers


def test_expired_wrong_audience_and_unknown_app_are_refused(emu: RunningEmulator) -> None:
    cases = {
        "ExpiredAuthTicket": make_token("app-1", emu.base_url, lifetime_seconds=-10),
        "InvalidAuthTicket": make_token("app-1", "https://other.crm.dynamics.com"),
        "BadAuthTicket": make_token("not-an-app-user", emu.base_url),
    }
    for name, token in cases.items():
        r = httpx.get(emu.api_url + "WhoAmI", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        assert r.json()["error"]["message"].startswith(name)
    graph_token = emu.token_for("app-1", graph=True)
    assert httpx.get(emu.api_url + "WhoAmI", headers={"Authorization": f"Bearer {graph_token}"}).status_code == 401


def test_whoami_returns_the_app_users_systemuser_and_dop_hint(emu: RunningEmulator, api: httpx.Client) -> None:
    r = ok(api.get("WhoAmI"), 200)
    body = r.json()
    assert body["UserId"] == "00000000-0000-0000-0000-0000000000a1"
    assert {"BusinessUnitId", "OrganizationId"} <= set(body)
    assert int(r.headers["x-ms-dop-hint"]) == emu.config.limits.dop_hint
    other = httpx.get(emu.api_url + "WhoAmI", headers=emu.headers_for("app-2")).json()
    assert other["UserId"] == "00000000-0000-0000-0000-0000000000a2"


# ---------- errors ----------
def test_error_body_and_annotations_on_request(api: httpx.Client) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    r = api.get(f"contacts({missing})")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "0x80040217", "message": f"contact With Id = {missing} Does Not Exist"}}
    r = api.get(f"contacts({missing})", headers={"Prefer": 'odata.include-annotations="*"'})
    err = r.json()["error"]
    assert err["code"] == "0x80040217"
    assert "@Microsoft.PowerApps.CDS.HelpLink" in err and "@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode" in err


def test_unknown_property_in_body_and_select_is_400(api: httpx.Client) -> None:
    r = api.post("contacts", json={"lastname": "A", "nosuchcolumn": 1})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": "0x80060888", "message": "Could not find a property named "
                                 "'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.contact'."}
    assert api.get("contacts", params={"$select": "lastname,nosuch"}).json()["error"]["code"] == "0x80060888"
    # a lookup is set by its navigation property, never by its column name
    assert api.post("contacts", json={"parentcustomerid": USER1}).status_code == 400


def test_string_max_length_and_picklist_range(api: httpx.Client) -> None:
    r = api.post("contacts", json={"firstname": "x" * 51})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80044331"
    assert "'firstname'" in r.json()["error"]["message"] and "'50'" in r.json()["error"]["message"]
    r = api.post("contacts", json={"gendercode": 99})
    assert r.status_code == 400 and "outside the valid range" in r.json()["error"]["message"]
    assert api.post("contacts", json={"gendercode": "1"}).status_code == 400
    ok(api.post("contacts", json={"firstname": "x" * 50, "gendercode": 2}), 204)


def test_required_field_is_enforced(api: httpx.Client) -> None:
    contact = entity_id(ok(api.post("contacts", json={"lastname": "P"}), 204))
    r = api.post("appointments", json={"subject": "S", "appointment_activity_parties": [
        {"partyid_contact@odata.bind": f"/contacts({contact})"}]})
    assert r.status_code == 400 and "participationtypemask" in r.json()["error"]["message"]


# ---------- create / read ----------
def test_create_returns_204_with_entity_id_and_location(emu: RunningEmulator, api: httpx.Client) -> None:
    r = ok(api.post("contacts", json={"firstname": "Ana", "lastname": "Ruiz"}), 204)
    assert r.headers["OData-EntityId"] == r.headers["Location"]
    assert r.headers["OData-EntityId"].startswith(emu.api_url + "contacts(")
    row = api.get(f"contacts({entity_id(r)})").json()
    assert row["fullname"] == "Ana Ruiz" and row["statecode"] == 0 and row["statuscode"] == 1
    assert row["@odata.etag"].startswith('W/"')


def test_create_with_representation_is_201_and_honours_select(api: httpx.Client) -> None:
    r = ok(api.post("contacts?$select=lastname", json={"lastname": "R", "firstname": "A"},
                    headers={"Prefer": "return=representation"}), 201)
    body = r.json()
    assert body["lastname"] == "R" and "firstname" not in body and "contactid" in body


def test_client_supplied_primary_key_is_used(api: httpx.Client) -> None:
    given = "aaaaaaaa-0000-0000-0000-000000000001"
    r = ok(api.post("contacts", json={"contactid": given, "lastname": "K"}), 204)
    assert entity_id(r) == given
    assert api.post("contacts", json={"contactid": given, "lastname": "K"}).status_code == 412


def test_filter_select_top_orderby_and_count(api: httpx.Client) -> None:
    for i in range(6):
        ok(api.post("contacts", json={"lastname": f"L{i}", "numberofchildren": i}), 204)
    r = ok(api.get("contacts", params={"$filter": "numberofchildren ge 2 and (lastname ne 'L3')",
                                       "$select": "lastname", "$orderby": "lastname desc", "$count": "true"}))
    body = r.json()
    assert [v["lastname"] for v in body["value"]] == ["L5", "L4", "L2"]
    assert body["@odata.count"] == 3
    assert len(api.get("contacts", params={"$top": "2"}).json()["value"]) == 2
    r = api.get("contacts", params={"$filter": "startswith(lastname,'l1') or contains(lastname,'5')"})
    assert sorted(v["lastname"] for v in r.json()["value"]) == ["L1", "L5"]
    assert api.get("contacts", params={"$filter": "nosuch eq 1"}).status_code == 400


def test_paging_follows_next_link_at_page_size(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(page_size=5)
    targets = [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": f"P{i:02d}"} for i in range(12)]
    ok(api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}), 200)
    seen, url, pages = [], "contacts?$select=lastname", 0
    while url:
        body = ok(api.get(url), 200).json()
        seen += [v["lastname"] for v in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
        assert len(body["value"]) <= 5
    assert pages == 3 and sorted(seen) == [f"P{i:02d}" for i in range(12)]
    body = api.get("contacts", headers={"Prefer": "odata.maxpagesize=4"}).json()
    assert len(body["value"]) == 4 and "@odata.nextLink" in body


# ---------- update / upsert / delete ----------
def test_patch_update_then_representation(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "A"}))
    ok(api.patch(f"contacts({cid})", json={"telephone1": "555"}, headers={"If-Match": "*"}), 204)
    r = ok(api.patch(f"contacts({cid})", json={"lastname": "B"}, headers={"Prefer": "return=representation"}), 200)
    assert r.json()["lastname"] == "B" and r.json()["telephone1"] == "555"


def test_patch_missing_id_creates_unless_if_match_star(api: httpx.Client) -> None:
    new_id = "bbbbbbbb-0000-0000-0000-000000000002"
    r = api.patch(f"contacts({new_id})", json={"lastname": "Z"}, headers={"If-Match": "*"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    r = ok(api.patch(f"contacts({new_id})", json={"lastname": "Z"}, headers={"Prefer": "return=representation"}),
           201)
    assert r.json()["contactid"] == new_id


def test_if_none_match_star_on_existing_row_is_412(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "A"}))
    r = api.patch(f"contacts({cid})", json={"lastname": "B"}, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json()["error"]["message"] == "A record with matching key values already exists."


def test_stale_etag_is_412_on_patch_and_delete(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "A"}))
    etag = api.get(f"contacts({cid})").json()["@odata.etag"]
    ok(api.patch(f"contacts({cid})", json={"lastname": "B"}, headers={"If-Match": etag}), 204)
    r = api.patch(f"contacts({cid})", json={"lastname": "C"}, headers={"If-Match": etag})
    assert r.status_code == 412 and "RowVersion" in r.json()["error"]["message"]
    assert api.delete(f"contacts({cid})", headers={"If-Match": etag}).status_code == 412
    ok(api.delete(f"contacts({cid})"), 204)
    assert api.delete(f"contacts({cid})").status_code == 404


def test_single_property_put_get_and_delete(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "A"}))
    ok(api.put(f"contacts({cid})/telephone1", json={"value": "123"}), 204)
    assert api.get(f"contacts({cid})/telephone1").json()["value"] == "123"
    ok(api.delete(f"contacts({cid})/telephone1"), 204)
    assert api.get(f"contacts({cid})/telephone1").json()["value"] is None


# ---------- table rules ----------
def test_overriddencreatedon_sets_createdon_on_create_only(api: httpx.Client) -> None:
    r = api.post("contacts", json={"lastname": "Old", "overriddencreatedon": "2019-03-04T09:00:00Z"},
                 headers={"Prefer": "return=representation"})
    row = ok(r, 201).json()
    assert row["createdon"] == "2019-03-04T09:00:00Z"
    assert row["overriddencreatedon"] not in (None, "2019-03-04T09:00:00Z")
    ok(api.patch(f"contacts({row['contactid']})", json={"overriddencreatedon": "2010-01-01T00:00:00Z"}), 204)
    assert api.get(f"contacts({row['contactid']})").json()["createdon"] == "2019-03-04T09:00:00Z"
    assert api.post("contacts", json={"overriddencreatedon": "2999-01-01T00:00:00Z"}).status_code == 400


def test_owner_must_be_an_enabled_systemuser(api: httpx.Client) -> None:
    r = ok(api.post("contacts", json={"lastname": "A", "ownerid@odata.bind": f"/systemusers({USER1})"},
                    headers={"Prefer": "return=representation"}), 201)
    assert r.json()["_ownerid_value"] == USER1
    r = api.post("contacts", json={"lastname": "A", "ownerid@odata.bind": f"/systemusers({DISABLED})"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040225"
    cid = entity_id(api.post("contacts", json={"lastname": "B"}))
    r = api.patch(f"contacts({cid})", json={"ownerid@odata.bind": f"/systemusers({DISABLED})"})
    assert r.status_code == 400
    users = api.get("systemusers", params={"$filter": "internalemailaddress eq 'PROVIDER2@example.com'"}).json()
    assert [u["systemuserid"] for u in users["value"]] == ["00000000-0000-0000-0000-000000000102"]


def test_appointment_parties_states_and_read_only_when_completed(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))
    body = {"subject": "Check-up", "scheduledstart": "2021-05-04T09:00:00Z", "scheduledend": "2021-05-04T09:30:00Z",
            "regardingobjectid_contact_appointment@odata.bind": f"/contacts({cid})",
            "appointment_activity_parties": [
                {"partyid_systemuser@odata.bind": f"/systemusers({USER1})", "participationtypemask": 7},
                {"partyid_contact@odata.bind": f"/contacts({cid})", "participationtypemask": 5}]}
    aid = entity_id(ok(api.post("appointments", json=body), 204))
    got = api.get(f"appointments({aid})", params={"$expand": "appointment_activity_parties"}).json()
    assert got["_regardingobjectid_value"] == cid
    assert sorted(p["participationtypemask"] for p in got["appointment_activity_parties"]) == [5, 7]
    assert api.patch(f"appointments({aid})", json={"statecode": 1, "statuscode": 1}).status_code == 400
    assert api.post("appointments", json={"subject": "x", "requiredattendees": []}).status_code == 400
    ok(api.patch(f"appointments({aid})", json={"statecode": 1, "statuscode": 3}), 204)
    r = api.patch(f"appointments({aid})", json={"subject": "changed"})
    assert r.status_code == 400
    assert api.get(f"appointments({aid})").json()["subject"] == "Check-up"
    # a state change without a status takes the state's default status
    aid2 = entity_id(api.post("appointments", json={"subject": "y"}))
    ok(api.patch(f"appointments({aid2})", json={"statecode": 2}), 204)
    assert api.get(f"appointments({aid2})").json()["statuscode"] == 4


def test_annotation_size_limit_and_notes_only_on_hasnotes_tables(emu: RunningEmulator, api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))
    small = base64.b64encode(b"x" * 1000).decode()
    r = ok(api.post("annotations", json={"subject": "s", "filename": "a.pdf", "mimetype": "application/pdf",
                                         "documentbody": small, "objectid_contact@odata.bind": f"/contacts({cid})"},
                    headers={"Prefer": "return=representation"}), 201)
    assert r.json()["filesize"] == 1000 and r.json()["objecttypecode"] == "contact"
    assert api.get(f"annotations({r.json()['annotationid']})/documentbody/$value").text == small
    emu.configure(max_upload_file_size=2000)
    big = base64.b64encode(b"x" * 1600).decode()  # 2,136 Base64 characters: the limit is on the Base64 size
    r = api.post("annotations", json={"documentbody": big, "objectid_contact@odata.bind": f"/contacts({cid})"})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": "0x80044a02", "message": "Attachment file size is too big."}
    # systemuser has no notes: there is no objectid_systemuser navigation property
    r = api.post("annotations", json={"subject": "s", "objectid_systemuser@odata.bind": f"/systemusers({USER1})"})
    assert r.status_code == 400


def test_update_keeps_createdon_and_moves_the_version(api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "A"}))
    before = api.get(f"contacts({cid})").json()
    ok(api.patch(f"contacts({cid})", json={"lastname": "B"}), 204)
    after = api.get(f"contacts({cid})").json()
    assert after["createdon"] == before["createdon"] and after["modifiedon"] >= before["modifiedon"]
    assert after["versionnumber"] > before["versionnumber"] and after["@odata.etag"] != before["@odata.etag"]


def test_organization_maxuploadfilesize_is_read_and_changed_through_the_api(api: httpx.Client) -> None:
    org = api.get("organizations", params={"$select": "maxuploadfilesize"}).json()["value"][0]
    assert org["maxuploadfilesize"] == 5_242_880
    ok(api.patch(f"organizations({org['organizationid']})", json={"maxuploadfilesize": 131_072_000},
                 headers={"If-Match": "*"}), 204)
    assert api.patch(f"organizations({org['organizationid']})", json={"maxuploadfilesize": 131_072_001},
                     headers={"If-Match": "*"}).status_code == 400
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))
    body = base64.b64encode(b"y" * 6_000_000).decode()
    ok(api.post("annotations", json={"documentbody": body, "objectid_contact@odata.bind": f"/contacts({cid})"}), 204)


def test_unsupported_query_options_are_refused_not_ignored(api: httpx.Client) -> None:
    r = api.get("contacts", params={"sql": "SELECT lastname FROM contact"})
    assert r.status_code == 501 and "sql" in r.json()["error"]["message"]


def test_annotation_block_upload_creates_the_note(emu: RunningEmulator, api: httpx.Client) -> None:
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))
    note_id = "cccccccc-0000-0000-0000-000000000003"
    target = {"@odata.type": "Microsoft.Dynamics.CRM.annotation", "annotationid": note_id, "subject": "scan",
              "filename": "scan.pdf", "mimetype": "application/pdf", "objectid_contact@odata.bind": f"/contacts({cid})"}
    token = ok(api.post("InitializeAnnotationBlocksUpload", json={"Target": target}), 200).json()[
        "FileContinuationToken"]
    parts = [b"a" * 1000, b"b" * 500]
    ids = [base64.b64encode(f"block-{i:03d}".encode()).decode() for i in range(2)]
    for block_id, data in zip(ids, parts, strict=True):
        ok(api.post("UploadBlock", json={"BlockId": block_id, "BlockData": base64.b64encode(data).decode(),
                                         "FileContinuationToken": token}), 204)
    r = ok(api.post("CommitAnnotationBlocksUpload", json={"Target": target, "BlockList": ids,
                                                          "FileContinuationToken": token}), 200)
    assert r.json() == {"AnnotationId": note_id, "FileSizeInBytes": 1500}
    note = api.get(f"annotations({note_id})").json()
    assert base64.b64decode(note["documentbody"]) == b"".join(parts) and note["_objectid_value"] == cid
    assert api.post("UploadBlock", json={"BlockId": ids[0], "BlockData": "", "FileContinuationToken": token}) \
        .status_code == 400  # committed tokens are gone


def test_data_api_takes_json_only(api: httpx.Client) -> None:
    r = api.post("contacts", content=b"<contact/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415
    ok(api.post("contacts", content=b'{"lastname": "J"}', headers={"Content-Type": "application/json; charset=utf-8"}),
       204)


def test_emulator_credentials_take_the_audience_from_the_scope(emu: RunningEmulator) -> None:
    import asyncio

    from emulator.credentials import AsyncEmulatorTokenCredential, EmulatorTokenCredential
    from emulator.tokens import read_claims

    cred = EmulatorTokenCredential("app-2", lifetime_seconds=60)
    tok = cred.get_token(emu.base_url + "/.default")
    claims = read_claims(tok.token)
    assert claims is not None and claims["aud"] == emu.base_url and claims["appid"] == "app-2"
    assert tok.expires_on - claims["iat"] == 60 and cred.issued == 1
    r = httpx.get(emu.api_url + "WhoAmI", headers={"Authorization": f"Bearer {tok.token}"})
    assert r.json()["UserId"] == "00000000-0000-0000-0000-0000000000a2"
    graph_tok = asyncio.run(AsyncEmulatorTokenCredential("app-1").get_token("https://graph.microsoft.com/.default"))
    r = httpx.get(emu.graph_url + "/sites/contoso.sharepoint.com:/sites/dental",
                  headers={"Authorization": f"Bearer {graph_tok.token}"})
    assert r.status_code == 200


def test_an_appointments_parties_are_replaced_and_deleted_with_it_alone(emu: RunningEmulator,
                                                                       api: httpx.Client) -> None:
    """The parties are found through an index of activity -> party rows; it follows updates, deletes and a
    snapshot's restore."""
    cid = entity_id(api.post("contacts", json={"lastname": "P"}))

    def appointment(*masks: int) -> str:
        return entity_id(ok(api.post("appointments", json={"subject": "S", "appointment_activity_parties": [
            {"partyid_contact@odata.bind": f"/contacts({cid})", "participationtypemask": m} for m in masks]}), 204))

    def masks(aid: str) -> list[int]:
        got = ok(api.get(f"appointments({aid})", params={"$expand": "appointment_activity_parties"}), 200).json()
        return sorted(p["participationtypemask"] for p in got["appointment_activity_parties"])

    def replace(aid: str, *new: int) -> None:
        ok(api.patch(f"appointments({aid})", json={"appointment_activity_parties": [
            {"partyid_contact@odata.bind": f"/contacts({cid})", "participationtypemask": m} for m in new]}), 204)

    first, second = appointment(5, 7), appointment(5, 7)
    replace(first, 9)
    assert masks(first) == [9] and masks(second) == [5, 7]
    snap = emu.snapshot()
    ok(api.delete(f"appointments({first})"), 204)
    assert api.get(f"appointments({first})").status_code == 404 and masks(second) == [5, 7]
    parties = ok(api.get("activityparties", params={"$select": "activitypartyid"}), 200).json()["value"]
    assert len(parties) == 2
    emu.restore(snap)
    assert masks(first) == [9]
    replace(first, 6)
    assert masks(first) == [6] and masks(second) == [5, 7]
