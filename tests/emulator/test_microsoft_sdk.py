"""Proof of faithfulness: Microsoft's own Python SDK (`powerplatform-dataverse-client` 1.1.0, which nobody here
wrote) runs its documented operations against the emulator over https, authenticated by an azure-core
TokenCredential, and the results are checked in the emulator's stored state.

Where the SDK and the emulator could disagree, the documentation decides; each such test names the page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError
from PowerPlatform.Dataverse.models.filters import col
from PowerPlatform.Dataverse.models.upsert import UpsertItem

from emulator.credentials import EmulatorTokenCredential
from emulator.testing import RunningEmulator, run_emulator


@pytest.fixture(scope="module")
def tls_emu() -> Iterator[RunningEmulator]:
    with run_emulator({"time_scale": 1000.0}, tls=True) as emu:
        yield emu


@pytest.fixture
def client(tls_emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataverseClient]:
    tls_emu.reset()
    # The SDK uses `requests`, which trusts the CA bundle named here: our generated self-signed certificate.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_emu.cert_file))
    credential = EmulatorTokenCredential("app-1")
    with DataverseClient(tls_emu.base_url, credential) as c:
        yield c
    assert credential.issued >= 1  # the SDK really asked the credential for a token


def _wait_active(client: DataverseClient, table: str) -> None:
    deadline = time.monotonic() + 10
    while any(k.status != "Active" for k in client.tables.get_alternate_keys(table)):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sdk_refuses_plain_http_so_the_emulator_serves_https(tls_emu: RunningEmulator) -> None:
    with pytest.raises(ValueError):
        DataverseClient(tls_emu.base_url.replace("https://", "http://"), EmulatorTokenCredential("app-1"))


def test_sdk_create_get_update_delete(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    cid = client.records.create("contact", {"firstname": "Ana", "lastname": "Ruiz"})
    got = client.records.retrieve("contact", cid, select=["firstname", "lastname"])
    assert (got["firstname"], got["lastname"]) == ("Ana", "Ruiz")
    client.records.update("contact", cid, {"telephone1": "555-0100"})
    assert tls_emu.rows("contact")[cid]["telephone1"] == "555-0100"
    client.records.delete("contact", cid)
    assert cid not in tls_emu.rows("contact")
    assert client.records.retrieve("contact", cid) is None  # the SDK maps our 404 to None
    with pytest.raises(HttpError) as err:
        client.records.update("contact", cid, {"telephone1": "1"})
    assert err.value.status_code == 404


def test_sdk_bulk_create_uses_create_multiple(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    ids = client.records.create("contact", [{"lastname": f"Bulk{i}"} for i in range(25)])
    assert len(ids) == 25 and set(ids) == set(tls_emu.rows("contact"))
    counters = tls_emu.counters("app-1")
    assert counters["records"] >= 25
    assert counters["requests"] < 25  # one CreateMultiple, not one POST per record


def test_sdk_query_list_and_builder(client: DataverseClient) -> None:
    client.records.create("contact", [{"lastname": f"Q{i}", "numberofchildren": i} for i in range(6)])
    rows = client.records.list("contact", filter="numberofchildren ge 3", select=["lastname"],
                               orderby=["lastname desc"])
    assert [r["lastname"] for r in rows] == ["Q5", "Q4", "Q3"]
    built = list(client.query.builder("contact").select("lastname").where(col("numberofchildren") == 2)
                 .top(5).execute())
    assert [r["lastname"] for r in built] == ["Q2"]


def test_sdk_table_and_column_creation(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    info = client.tables.create("bw_Product", {"bw_Code": "string", "bw_Price": "decimal", "bw_Qty": "int",
                                               "bw_Active": "bool", "bw_When": "datetime"})
    assert (info.logical_name, info.entity_set_name, info.primary_id_attribute, info.primary_name_attribute) == (
        "bw_product", "bw_products", "bw_productid", "bw_name")
    assert client.tables.add_columns("bw_Product", {"bw_Notes": "memo"}) == ["bw_Notes"]
    attrs = tls_emu.dump()["entities"]["bw_product"]["Attributes"]
    assert {k: attrs[k]["AttributeType"] for k in ("bw_code", "bw_price", "bw_qty", "bw_active", "bw_when",
                                                    "bw_notes")} == {
        "bw_code": "String", "bw_price": "Decimal", "bw_qty": "Integer", "bw_active": "Boolean",
        "bw_when": "DateTime", "bw_notes": "Memo"}
    pid = client.records.create("bw_Product", {"bw_name": "Widget", "bw_code": "W-1", "bw_qty": 3,
                                               "bw_active": True})
    assert tls_emu.rows("bw_product")[pid]["bw_qty"] == 3
    assert client.tables.get("bw_Product").metadata_id == info.metadata_id


def test_sdk_table_prefix_is_checked(client: DataverseClient) -> None:
    # define-alternate-keys / create-update-entity-definitions: schema names carry the publisher prefix.
    with pytest.raises(HttpError) as err:
        client.tables.create("zz_Thing", {"zz_Code": "string"})
    assert err.value.status_code == 400


def test_sdk_upsert_by_alternate_key_single_and_multiple(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    client.tables.create("bw_Carrier", {"bw_SourceId": "string"})
    key = client.tables.create_alternate_key("bw_Carrier", "bw_carrier_sourceid_key", ["bw_sourceid"])
    assert key.status in ("Pending", "InProgress", "Active")
    _wait_active(client, "bw_Carrier")
    client.records.upsert("bw_Carrier", [UpsertItem(alternate_key={"bw_sourceid": "C-1"},
                                                    record={"bw_name": "Delta"})])
    client.records.upsert("bw_Carrier", [UpsertItem(alternate_key={"bw_sourceid": f"C-{i}"},
                                                    record={"bw_name": f"Carrier {i}"}) for i in range(1, 4)])
    rows = sorted((r["bw_sourceid"], r["bw_name"]) for r in tls_emu.rows("bw_carrier").values())
    assert rows == [("C-1", "Carrier 1"), ("C-2", "Carrier 2"), ("C-3", "Carrier 3")]  # C-1 updated, not doubled


def test_sdk_upsert_before_key_is_active_is_refused(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    # define-alternate-keys-entity: "until the key is Active it cannot be used" (index built by a system job).
    tls_emu.configure(key_activation_seconds=60000.0)
    client.tables.create("bw_Late", {"bw_SourceId": "string"})
    client.tables.create_alternate_key("bw_Late", "bw_late_sourceid_key", ["bw_sourceid"])
    with pytest.raises(HttpError) as err:
        client.records.upsert("bw_Late", [UpsertItem(alternate_key={"bw_sourceid": "L-1"}, record={"bw_name": "x"})])
    assert err.value.status_code == 400
    tls_emu.configure(key_activation_seconds=10.0)


def test_sdk_lookup_field_and_bind(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    client.tables.create("bw_Treatment", {"bw_Code": "string"})
    rel = client.tables.create_lookup_field("bw_treatment", "bw_PatientId", "contact")
    assert rel.referenced_entity == "contact" and rel.referencing_entity == "bw_treatment"
    cid = client.records.create("contact", {"lastname": "P"})
    tid = client.records.create("bw_Treatment", {"bw_name": "Crown", "bw_PatientId@odata.bind": f"/contacts({cid})"})
    assert tls_emu.rows("bw_treatment")[tid]["bw_patientid"] == {"id": cid, "table": "contact"}


def test_sdk_batch_with_changeset(client: DataverseClient, tls_emu: RunningEmulator) -> None:
    batch = client.batch.new()
    batch.records.create("contact", {"lastname": "Solo"})
    with batch.changeset() as cs:
        ref = cs.records.create("contact", {"lastname": "Guarantor"})
        cs.records.create("contact", {"lastname": "Child", "parentcustomerid_contact@odata.bind": ref})
    result = batch.execute()
    assert len(result.failed) == 0 and len(result.succeeded) == 3
    rows = {r["lastname"]: r for r in tls_emu.rows("contact").values()}
    assert rows["Child"]["parentcustomerid"]["id"] == rows["Guarantor"]["contactid"]
