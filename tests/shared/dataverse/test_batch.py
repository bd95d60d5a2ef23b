"""$batch encoding and decoding, against the shapes on Microsoft Learn's "Execute batch operations" page."""

from __future__ import annotations

import pytest

from shared.dataverse.batch import BatchOperation, decode_batch, encode_batch

# Response shape from learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
SAMPLE = (
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 204 No Content\r\n"
    "OData-Version: 4.0\r\n"
    "Location: [Organization URI]/api/data/v9.2/tasks(a59c24c4-4b24-ed11-b83e-000d3a993550)\r\n"
    "OData-EntityId: [Organization URI]/api/data/v9.2/tasks(a59c24c4-4b24-ed11-b83e-000d3a993550)\r\n"
    "\r\n"
    "\r\n"
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc\r\n"
    "\r\n"
    "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "Content-ID: 1\r\n"
    "\r\n"
    "HTTP/1.1 201 Created\r\n"
    "Content-Type: application/json; odata.metadata=minimal\r\n"
    "OData-Version: 4.0\r\n"
    "\r\n"
    '{"contactid":"11111111-1111-1111-1111-111111111111"}\r\n'
    "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abc--\r\n"
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: application/json; odata.metadata=minimal\r\n"
    "\r\n"
    '{"error":{"code":"0x80044331","message":"The length of the \'subject\' attribute ... exceeded"}}\r\n'
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f--\r\n"
)


def test_decodes_parts_in_order_with_change_sets_flattened() -> None:
    parts = decode_batch(
        SAMPLE.encode(), "multipart/mixed; boundary=batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f"
    )
    assert [p.status for p in parts] == [204, 201, 400]
    assert parts[0].header("odata-entityid").endswith("tasks(a59c24c4-4b24-ed11-b83e-000d3a993550)")
    assert parts[1].body == {"contactid": "11111111-1111-1111-1111-111111111111"}
    assert parts[2].body["error"]["code"] == "0x80044331"


def test_encodes_one_application_http_part_per_operation() -> None:
    body, content_type = encode_batch(
        [
            BatchOperation(
                "PATCH",
                "contacts(bw_sourceid='P-1')",
                {"firstname": "A"},
                {"Prefer": "return=representation"},
            ),
            BatchOperation("GET", "WhoAmI"),
        ],
        "/api/data/v9.2/",
    )
    boundary = content_type.split('boundary="')[1].rstrip('"')
    assert content_type.startswith("multipart/mixed")
    text = body.decode()
    assert text.count(f"--{boundary}\r\n") == 2 and text.endswith(f"--{boundary}--\r\n")
    assert "PATCH /api/data/v9.2/contacts(bw_sourceid='P-1') HTTP/1.1\r\n" in text
    assert "Content-Type: application/json; type=entry\r\n" in text
    assert "Prefer: return=representation\r\n" in text
    assert '{"firstname":"A"}' in text
    assert "GET /api/data/v9.2/WhoAmI HTTP/1.1\r\n" in text


def test_refuses_empty_and_oversized_batches() -> None:
    with pytest.raises(ValueError):
        encode_batch([], "/api/data/v9.2/")
    with pytest.raises(ValueError):
        encode_batch([BatchOperation("GET", "WhoAmI")] * 1001, "/api/data/v9.2/")
