"""Idempotency keys: a retried `POST` that starts work answers the first attempt's response instead of
starting the work twice. Keys live in Table Storage, partitioned by tenant.

A key is reserved (pending) before the work runs and completed with the response afterwards; a
reuse of the key for a different request (another route or body) is refused, and a retry while the
first attempt still runs is told to wait. Failed attempts release the key so the client can retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.errors import Fatal

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class IdempotencyKeyReused(Fatal):
    """The key was already used for a different request."""

    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(Fatal):
    """The first request with this key has not finished yet."""

    code = "idempotency_key_in_flight"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    mimetype: str


@dataclass(frozen=True)
class Reservation:
    """The outcome of `reserve`: either a fresh reservation to run the work under, or the stored answer."""

    state: Literal["fresh", "replay"]
    row_key: str
    replay: StoredResponse | None = None


def fingerprint(*parts: bytes | str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode() if isinstance(part, str) else part)
        sha.update(b"\x00")
    return sha.hexdigest()


class IdempotencyStore:
    """Reserve, complete or release idempotency keys in the `<prefix>idempotency` table."""

    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        self._table: TableClient = service.create_table_if_not_exists(f"{prefix}idempotency")

    def reserve(self, tenant_id: str, key: str, request_fingerprint: str) -> Reservation:
        """Reserve `key` for this request, or return what the first request with it answered."""
        # The raw key never becomes a table key: clients choose it, so it is hashed to a safe RowKey.
        row_key = fingerprint(key)
        try:
            self._table.create_entity({"PartitionKey": tenant_id, "RowKey": row_key, "State": "pending",
                                       "Request": request_fingerprint})
            return Reservation("fresh", row_key)
        except ResourceExistsError:
            pass
        entity = self._table.get_entity(tenant_id, row_key)
        if entity["Request"] != request_fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request: "
                                       "use a new key for a new request")
        if entity["State"] != "done":
            raise IdempotencyKeyInFlight("the first request with this Idempotency-Key is still running: "
                                         "retry after it has answered")
        return Reservation("replay", row_key, StoredResponse(int(entity["Status"]), entity["Body"],
                                                             entity["Mimetype"]))

    def complete(self, tenant_id: str, row_key: str, response: StoredResponse) -> None:
        self._table.upsert_entity(
            {"PartitionKey": tenant_id, "RowKey": row_key, "State": "done",
             "Request": self._table.get_entity(tenant_id, row_key)["Request"], "Status": response.status,
             "Body": response.body, "Mimetype": response.mimetype},
            mode=UpdateMode.REPLACE)

    def release(self, tenant_id: str, row_key: str) -> None:
        """Forget a pending reservation whose work failed, so a retry runs the work again."""
        try:
            entity = self._table.get_entity(tenant_id, row_key)
            if entity["State"] == "pending":
                self._table.delete_entity(tenant_id, row_key, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
