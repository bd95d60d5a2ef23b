"""Schemathesis against the served OpenAPI document on the local host: no server error, no response
outside the document (status, content type, schema, headers). Bounded: a few examples per operation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import functions.api  # noqa: F401 - registers the routes and their contracts
from devhost.testing import RunningHost, run_host
from functions.openapi import OPERATIONS
from shared.identity import principal_header

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
TARGET = {"environment_url": "https://org.example.crm.dynamics.com", "tenant_id": "customer-tenant"}


@pytest.fixture(scope="module")
def fuzzed_host(storage_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    hub = "bw" + uuid.uuid4().hex[:10]
    # The host plays App Service Authentication: every request is this tenant's operator.
    env = {"BRIDGEWORK_TABLE_PREFIX": hub,
           "DEVHOST_PRINCIPAL": principal_header("tenant-fuzz", "fuzzer", ["operator"])}
    with run_host("function_app:app", storage_connection_string, hub, clock="virtual", env=env,
                  log_path=Path(tmp_path_factory.mktemp("fuzz")) / "host.log") as host:
        yield host


def _fuzz(operation: schemathesis.APIOperation, host: RunningHost, migration_id: str, ran: dict[str, int]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), real_id=st.booleans())
    def run(case: schemathesis.Case, real_id: bool) -> None:
        # Half the cases address a migration that exists, so routes get past the 404.
        if real_id and case.path_parameters and "migration_id" in case.path_parameters:
            case.path_parameters["migration_id"] = migration_id
        case.call_and_validate(base_url=host.url, headers={"x-functions-key": host.key}, checks=CHECKS)
        ran[label] = ran.get(label, 0) + 1

    run()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed_host: RunningHost):
    http = fuzzed_host.http()
    existing = http.post("/api/migrations", json={"name": "fuzzed", "target": TARGET}).json()["migration"]
    schema = schemathesis.openapi.from_url(f"{fuzzed_host.url}/api/openapi.json?code={fuzzed_host.key}")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Schemathesis leaves out the document's own path when it loads the document from it.
    expected = {f"{op.method} /api/{op.route}" for op in OPERATIONS} - {"GET /api/openapi.json"}
    assert {op.label for op in operations} == expected
    ran: dict[str, int] = {}
    for operation in operations:
        _fuzz(operation, fuzzed_host, existing["migration_id"], ran)
    print(f"schemathesis: {sum(ran.values())} cases over {len(ran)} operations: {sorted(ran)}")
    assert len(ran) == len(operations)
