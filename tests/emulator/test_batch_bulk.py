"""§11 Batch and bulk: $batch parsing, change sets, Content-ID, limits, error modes; bulk messages; 413."""

from __future__ import annotations

import json
import re

import httpx

from emulator.testing import RunningEmulator
from tests.emulator.helpers import add_source_key, create_table, entity_id, ok

API = "/api/data/v9.2/"


def _part(method: str, url: str, body: dict | None = None, content_id: str | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines += ["Content-Type: application/json; type=entry", "", json.dumps(body)]
    else:
        lines += [""]
    return "\r\n".join(lines) + "\r\n"


def batch_body(items: list, boundary: str = "batch_AAA") -> tuple[str, dict[str, str]]:
    """items: part strings, or lists of part strings (a change set)."""
    out = []
    for n, item in enumerate(items):
        if isinstance(item, list):
            cs = f"changeset_{n}"
            inner = "".join(f"--{cs}\r\n{p}" for p in item) + f"--{cs}--\r\n"
            out.append(f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n{inner}")
        else:
            out.append(f"--{boundary}\r\n{item}")
    return "".join(out) + f"--{boundary}--\r\n", {"Content-Type": f"multipart/mixed; boundary={boundary}"}


def statuses(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"^HTTP/1\.1 (\d{3})", text, flags=re.M)]


def test_batch_runs_in_order_and_answers_with_batchresponse(api: httpx.Client) -> None:
    body, headers = batch_body([_part("POST", API + "contacts", {"lastname": "A"}),
                                _part("POST", "contacts", {"lastname": "B"}),
                                _part("GET", API + "contacts?$select=lastname")])
    r = ok(api.post("$batch", content=body, headers=headers), 200)
    assert re.search(r"boundary=batchresponse_", r.headers["Content-Type"])
    assert statuses(r.text) == [204, 204, 200]
    listed = json.loads(r.text.split("HTTP/1.1 200 OK", 1)[1].split("\r\n\r\n", 1)[1].split("\r\n--", 1)[0])
    assert sorted(v["lastname"] for v in listed["value"]) == ["A", "B"]


def test_changeset_is_atomic_and_content_ids_resolve(api: httpx.Client) -> None:
    good = [_part("POST", API + "contacts", {"lastname": "P"}, "1"),
            _part("POST", API + "appointments", {"subject": "S", "regardingobjectid_contact_appointment@odata.bind":
                                                 "$1"}, "2"),
            _part("PATCH", "$1", {"firstname": "Ana"}, "3")]
    body, headers = batch_body([good])
    r = ok(api.post("$batch", content=body, headers=headers), 200)
    assert "changesetresponse_" in r.text and statuses(r.text) == [204, 204, 204]
    contact = api.get("contacts").json()["value"][0]
    assert contact["firstname"] == "Ana"
    assert api.get("appointments").json()["value"][0]["_regardingobjectid_value"] == contact["contactid"]
    bad = [_part("POST", API + "contacts", {"lastname": "Q"}, "1"),
           _part("POST", API + "contacts", {"lastname": "x" * 51}, "2")]
    body, headers = batch_body([bad])
    r = api.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and statuses(r.text) == [400] and "0x80044331" in r.text
    assert [c["lastname"] for c in api.get("contacts").json()["value"]] == ["P"]  # Q was rolled back


def test_undeclared_content_id_is_400(api: httpx.Client) -> None:
    body, headers = batch_body([[_part("POST", API + "appointments",
                                       {"regardingobjectid_contact_appointment@odata.bind": "$7"}, "1")]])
    r = api.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and "Content-ID Reference: '$7' does not exist in the batch context." in r.text


def test_stop_at_first_error_versus_continue_on_error(api: httpx.Client) -> None:
    parts = [_part("POST", API + "contacts", {"lastname": "A"}),
             _part("POST", API + "contacts", {"nosuch": 1}),
             _part("POST", API + "contacts", {"lastname": "C"})]
    body, headers = batch_body(parts)
    r = api.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and statuses(r.text) == [400]
    assert [c["lastname"] for c in api.get("contacts").json()["value"]] == ["A"]
    r = ok(api.post("$batch", content=body, headers={**headers, "Prefer": "odata.continue-on-error"}), 200)
    assert statuses(r.text) == [204, 400, 204] and "0x80060888" in r.text
    assert sorted(c["lastname"] for c in api.get("contacts").json()["value"]) == ["A", "A", "C"]


def test_batch_limits_and_rules(api: httpx.Client) -> None:
    body, headers = batch_body([_part("POST", API + "contacts", {"lastname": "x"})] * 1001)
    r = api.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and "1000" in r.json()["error"]["message"]
    assert api.get("contacts").json()["value"] == []
    body, headers = batch_body([[_part("GET", API + "contacts")]])
    assert api.post("$batch", content=body, headers=headers).status_code == 400
    body, headers = batch_body([_part("POST", API + "contacts", {"lastname": "x"})] * 1000)
    r = ok(api.post("$batch", content=body, headers=headers), 200)
    assert statuses(r.text) == [204] * 1000
    assert api.post("$batch", content="not multipart", headers={"Content-Type": "text/plain"}).status_code == 400


def test_batch_and_bulk_count_one_request_with_per_record_time(emu: RunningEmulator, api: httpx.Client) -> None:
    body, headers = batch_body([_part("POST", API + "contacts", {"lastname": "x"})] * 10)
    ok(api.post("$batch", content=body, headers=headers), 200)
    c = emu.counters("app-1")
    assert c["requests"] == 1 and c["records"] == 10
    costs = emu.config.costs
    assert abs(c["execution_seconds"] - (costs.per_request_seconds + 10 * costs.per_record_seconds)) < 1e-9


def test_create_update_upsert_multiple(api: httpx.Client) -> None:
    create_table(api, "bw_Carrier")
    add_source_key(api, "bw_carrier")
    t = "Microsoft.Dynamics.CRM.bw_carrier"
    r = ok(api.post("bw_carriers/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
        {"@odata.type": t, "bw_name": "A", "bw_sourceid": "C-1"}, {"@odata.type": t, "bw_name": "B"}]}), 200)
    ids = r.json()["Ids"]
    assert len(ids) == 2 and "CreateMultipleResponse" in r.json()["@odata.context"]
    ok(api.post("bw_carriers/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": [
        {"@odata.type": t, "bw_carrierid": ids[1], "bw_name": "B2"}]}), 204)
    ok(api.post("bw_carriers/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": t, "@odata.id": "bw_carriers(bw_sourceid='C-1')", "bw_name": "A2"},
        {"@odata.type": t, "@odata.id": "bw_carriers(bw_sourceid='C-2')", "bw_name": "New"}]}), 204)
    rows = {r["bw_name"]: r for r in api.get("bw_carriers").json()["value"]}
    assert set(rows) == {"A2", "B2", "New"}
    assert rows["A2"]["bw_carrierid"] == ids[0] and rows["New"]["bw_sourceid"] == "C-2"


def test_bulk_is_all_or_nothing_and_validates_targets(api: httpx.Client) -> None:
    add_source_key(api, "contact")
    t = "Microsoft.Dynamics.CRM.contact"
    r = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
        {"@odata.type": t, "lastname": "ok"}, {"@odata.type": t, "lastname": "x" * 51}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80044331"
    assert api.get("contacts").json()["value"] == []
    r = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [{"lastname": "no type"}]})
    assert r.status_code == 400 and "@odata.type" in r.json()["error"]["message"]
    r = api.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": t, "@odata.id": "contacts(bw_sourceid='P-1')", "lastname": "a"},
        {"@odata.type": t, "@odata.id": "contacts(bw_sourceid='p-1')", "lastname": "b"}]})
    assert r.status_code == 400 and "duplicates the key" in r.json()["error"]["message"]
    r = api.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": t, "@odata.id": "contacts(bw_sourceid='P-1')", "bw_sourceid": "P-1", "lastname": "a"}]})
    assert r.status_code == 400
    r = api.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [
        {"@odata.type": t, "@odata.id": "contacts(bw_sourceid='P-1')", "lastname": "a"},
        {"@odata.type": t, "@odata.id": "contacts(bw_sourceid='P-2')", "nosuch": "b"}]})
    assert r.status_code == 400 and api.get("contacts").json()["value"] == []
    r = api.post("contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": [
        {"@odata.type": t, "contactid": "99999999-9999-9999-9999-999999999999", "lastname": "a"}]})
    assert r.status_code == 404


def test_bulk_refused_on_tables_without_the_message_and_sdkmessagefilters_agree(api: httpx.Client) -> None:
    for table in ("appointment", "annotation"):
        r = api.post(f"{table}s/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [
            {"@odata.type": f"Microsoft.Dynamics.CRM.{table}", "subject": "s"}]})
        assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]

    def supported(message: str, table: str) -> bool:
        q = f"sdkmessageid/name eq '{message}' and primaryobjecttypecode eq '{table}'"
        return bool(ok(api.get("sdkmessagefilters", params={"$select": "sdkmessagefilterid", "$filter": q})).json()[
            "value"])

    assert supported("CreateMultiple", "contact") and supported("UpsertMultiple", "contact")
    assert not supported("CreateMultiple", "appointment") and not supported("CreateMultiple", "annotation")
    create_table(api, "bw_Custom")
    assert supported("UpsertMultiple", "bw_custom")


def test_body_over_the_configured_size_is_413(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(max_body_bytes=10_000)
    targets = [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "n" * 40} for _ in range(300)]
    r = api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets})
    assert r.status_code == 413
    ok(api.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets[:50]}), 200)


def test_bulk_in_changeset_rolls_back_with_it(api: httpx.Client) -> None:
    t = "Microsoft.Dynamics.CRM.contact"
    cs = [_part("POST", API + "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
                {"Targets": [{"@odata.type": t, "lastname": "a"}, {"@odata.type": t, "lastname": "b"}]}, "1"),
          _part("DELETE", API + "contacts(99999999-9999-9999-9999-999999999999)", None, "2")]
    body, headers = batch_body([cs])
    assert api.post("$batch", content=body, headers=headers).status_code == 404
    assert api.get("contacts").json()["value"] == []
    cid = entity_id(api.post("contacts", json={"lastname": "keep"}))
    assert api.get(f"contacts({cid})").status_code == 200
