"""Status (and Dataverse code) -> typed error class: the one table of shared/dataverse/errors.py."""

from __future__ import annotations

import httpx
import pytest

from shared.dataverse.errors import error_from_exception, error_from_response, parse_retry_after
from shared.errors import (
    DataverseAuthError,
    DataverseNotReady,
    DataverseRecordRejected,
    DataverseRequestFailed,
    DataverseRequestTooLarge,
    DataverseThrottled,
    DataverseUnavailable,
    Fatal,
    Retriable,
    Skippable,
)

REQ = httpx.Request(
    "PATCH",
    "https://org.crm.dynamics.com/api/data/v9.2/contacts(bw_sourceid='P-1')?$filter=lastname eq 'Secret'",
)


@pytest.mark.parametrize(
    ("status", "code", "headers", "cls", "marker"),
    [
        (429, "0x80072322", {"Retry-After": "7"}, DataverseThrottled, Retriable),
        (429, "0x80072321", {"Retry-After": "0.25"}, DataverseThrottled, Retriable),
        (429, "0x80072326", {}, DataverseThrottled, Retriable),
        (500, "", {}, DataverseUnavailable, Retriable),
        (502, "", {}, DataverseUnavailable, Retriable),
        (503, "", {"Retry-After": "2"}, DataverseUnavailable, Retriable),
        (504, "", {}, DataverseUnavailable, Retriable),
        (400, "0x80040216", {}, DataverseNotReady, Retriable),
        (400, "0x80060891", {}, DataverseNotReady, Retriable),
        (400, "0x80071151", {}, DataverseNotReady, Retriable),
        (400, "0x80044331", {}, DataverseRecordRejected, Skippable),
        (400, "0x80060888", {}, DataverseRecordRejected, Skippable),
        (400, "", {}, DataverseRecordRejected, Skippable),
        (404, "0x80040217", {}, DataverseRecordRejected, Skippable),
        (412, "0x80040237", {}, DataverseRecordRejected, Skippable),
        (413, "", {}, DataverseRequestTooLarge, Skippable),
        (401, "", {}, DataverseAuthError, Fatal),
        (403, "0x80040220", {}, DataverseAuthError, Fatal),
        (405, "", {}, DataverseRequestFailed, Fatal),
        (501, "", {}, DataverseRequestFailed, Fatal),
    ],
)
def test_status_maps_to_error_class(status, code, headers, cls, marker) -> None:
    response = httpx.Response(
        status,
        json={"error": {"code": code, "message": "Patient Ana Ruiz is bad"}},
        headers=headers,
        request=REQ,
    )
    err = error_from_response(response)
    assert type(err) is cls
    assert isinstance(err, marker)
    assert err.attrs["status"] == status
    assert err.attrs["dataverse_code"] == code
    # The server's message and the query string (filter values) never reach our message.
    assert "Ana" not in str(err) and "Secret" not in str(err)
    assert str(status) in str(err)


def test_throttled_error_carries_retry_after() -> None:
    response = httpx.Response(
        429,
        json={"error": {"code": "0x80072322", "message": ""}},
        headers={"Retry-After": "1.5"},
        request=REQ,
    )
    err = error_from_response(response)
    assert err.attrs["retry_after"] == 1.5
    assert "request count" in str(err)


def test_non_json_error_body_still_classified() -> None:
    response = httpx.Response(502, text="<html>bad gateway</html>", request=REQ)
    err = error_from_response(response)
    assert isinstance(err, DataverseUnavailable) and err.attrs["dataverse_code"] == ""


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout]
)
def test_transport_failures_are_retriable(exc_type) -> None:
    err = error_from_exception(exc_type("boom", request=REQ))
    assert isinstance(err, DataverseUnavailable) and isinstance(err, Retriable)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
