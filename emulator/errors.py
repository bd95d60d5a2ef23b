"""Dataverse and Graph error answers: one exception type carrying status, code and message, and the real codes.

Codes and messages follow ../shared/reference/dataverse.md §2.2; those marked [unverified] there (or here) are
the best-known values and are kept in one place so they can be corrected once.
"""

from __future__ import annotations

from typing import Any

# Service protection (MS-doc api-limits).
TOO_MANY_REQUESTS = "0x80072322"
EXECUTION_TIME = "0x80072321"
CONCURRENCY = "0x80072326"
# Data errors.
DOES_NOT_EXIST = "0x80040217"
DUPLICATE_RECORD = "0x80040237"
ENTITY_KEY_VIOLATED = "0x80060892"
UNKNOWN_PROPERTY = "0x80060888"
INVALID_PAYLOAD_PROPERTY = "0x80048d19"
MAX_LENGTH = "0x80044331"
PICKLIST_RANGE = "0x8004431a"  # [unverified] "A validation error occurred. The value … is outside the valid range."
PREFIX_MISMATCH = "0x8004431a"
VERSION_MISMATCH = "0x80060882"  # [unverified] ConcurrencyVersionMismatch
ATTACHMENT_TOO_BIG = "0x80044a02"
METADATA_CACHE = "0x80040216"
METADATA_NOT_READY = "0x80060891"
CUSTOMIZATION_LOCK = "0x80071151"
PRIVILEGE = "0x80040220"
USER_DISABLED = "0x80040225"  # [unverified] "The specified user … is disabled."
INVALID_ARGUMENT = "0x80040203"  # [unverified] used for closed-activity updates and bad state/status pairs
INVALID_KEY = "0x80060888"
NOT_SUPPORTED = "0x80040800"  # [unverified] message "… is not supported for entity …"
LICENSE_LIMIT = "0x80048331"  # [unverified] emulator-specific: custom table licence limit
REQUIRED = "0x80040200"  # [unverified] required attribute missing
AUTH = "0x80072560"  # [unverified]


class ApiError(Exception):
    """An error answer. `code` goes into error.code; `headers` are added to the response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 graph: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.graph = graph

    def body(self, annotations: bool = False) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if annotations and not self.graph:
            error["@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus"] = "0"
            error["@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode"] = str(int(self.code, 16) - 2**32) \
                if self.code.startswith("0x") else ""
            error["@Microsoft.PowerApps.CDS.HelpLink"] = (
                "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a"
                + self.code.removeprefix("0x") + "&client=platform")
            error["@Microsoft.PowerApps.CDS.TraceText"] = ""
            error["@Microsoft.PowerApps.CDS.InnerError.Message"] = self.message
        return {"error": error}


def not_found(table: str, row_id: str) -> ApiError:
    return ApiError(404, DOES_NOT_EXIST, f"{table} With Id = {row_id} Does Not Exist")


def unknown_property(name: str, table: str) -> ApiError:
    return ApiError(400, UNKNOWN_PROPERTY,
                    f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table}'.")


def bad_request(message: str, code: str = INVALID_ARGUMENT) -> ApiError:
    return ApiError(400, code, message)


def invalid_key(table: str) -> ApiError:
    return ApiError(400, INVALID_KEY,
                    f"The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{table}'. "
                    "Ensure that the names and number of key properties match the declared or alternate key "
                    "properties for the resource 'Microsoft.Dynamics.CRM." + table + "'.")


def duplicate_key() -> ApiError:
    return ApiError(412, DUPLICATE_RECORD, "A record with matching key values already exists.")


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, code, message, headers, graph=True)
