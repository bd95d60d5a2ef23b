"""Tenant isolation and roles on every route, validated ids and sizes, idempotency keys and paging,
through the local host. Routes are enumerated from the OpenAPI declarations, which test_openapi.py
proves equal to the registered routes: a new route is covered here without editing this file."""

from __future__ import annotations

import uuid

import httpx
import pytest

import functions.api  # noqa: F401 - registers the routes and their contracts
from devhost.testing import RunningHost
from functions.openapi import OPERATIONS, Operation
from tests.functions.conftest import as_tenant

TARGET = {"environment_url": "https://org.example.crm.dynamics.com", "tenant_id": "customer-tenant"}
BODIES = {"migrations/{migration_id}/start": {"bundle_id": "b-1"}}
PER_MIGRATION = [op for op in OPERATIONS if "{migration_id}" in op.route]
MUTATING = [op for op in OPERATIONS if op.role == "operator"]


def _call(http: httpx.Client, op: Operation, migration_id: str, headers: dict[str, str]) -> httpx.Response:
    path = "/api/" + op.route.replace("{migration_id}", migration_id)
    body = BODIES.get(op.route, {}) if op.method in ("POST", "PUT") else None
    if op.route == "migrations" and op.method == "POST":
        body = {"target": TARGET}
    return http.request(op.method, path, json=body, headers=headers)


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"https://bridgework.dev/errors/{code}" and body["status"] == status
    assert body["title"] and body["detail"]


@pytest.fixture(scope="module")
def owned(app_host: RunningHost) -> str:
    """A migration of tenant-a."""
    response = app_host.http().post("/api/migrations", json={"name": "owned", "target": TARGET},
                                    headers=as_tenant("tenant-a"))
    assert response.status_code == 201
    return response.json()["migration"]["migration_id"]


def test_every_migration_route_is_covered():
    assert len(PER_MIGRATION) >= 12 and len(MUTATING) >= 6


@pytest.mark.parametrize("op", PER_MIGRATION, ids=lambda op: f"{op.method} {op.route}")
@pytest.mark.parametrize("roles", [("operator",), ("viewer",)])
def test_another_tenants_migration_does_not_exist_on_any_route(app_host: RunningHost, owned: str,
                                                               op: Operation, roles: tuple[str, ...]):
    response = _call(app_host.http(), op, owned, as_tenant("tenant-b", roles))
    _assert_problem(response, 404, "migration_not_found")
    assert owned in response.json()["detail"] and "tenant-a" not in response.text


@pytest.mark.parametrize("op", MUTATING, ids=lambda op: f"{op.method} {op.route}")
def test_viewers_are_refused_every_mutating_route(app_host: RunningHost, owned: str, op: Operation):
    response = _call(app_host.http(), op, owned, as_tenant("tenant-a", ("viewer",)))
    _assert_problem(response, 403, "not_permitted")


def test_viewers_read_their_own_migration(app_host: RunningHost, owned: str):
    view = app_host.http().get(f"/api/migrations/{owned}", headers=as_tenant("tenant-a", ("viewer",))).json()
    assert view["migration"]["migration_id"] == owned and view["stage"] == "created"
    assert view["tables"] == [] and view["errors_by_code"] == {} and view["links"] is None


def test_the_automation_key_sees_only_its_own_tenant(app_host: RunningHost, owned: str):
    response = app_host.http().get(f"/api/migrations/{owned}")  # host key only: the automation tenant
    _assert_problem(response, 404, "migration_not_found")


@pytest.mark.parametrize("bad", ["m-XYZ", "m-0123456789abcdef0", "m-01234567_9abcdef", "m-0123456789ABCDEF"])
def test_malformed_migration_ids_are_refused(app_host: RunningHost, bad: str):
    _assert_problem(app_host.http().get(f"/api/migrations/{bad}", headers=as_tenant("tenant-a")),
                    400, "invalid_request")


def test_bodies_are_capped(app_host: RunningHost, owned: str):
    http = app_host.http()
    huge = {"name": "x", "target": TARGET, "pad": "y" * (70 * 1024)}
    _assert_problem(http.post("/api/migrations", json=huge, headers=as_tenant("tenant-a")), 413, "payload_too_large")
    _assert_problem(http.put(f"/api/migrations/{owned}/mapping", content=b"{" + b" " * (1024 * 1024 + 1) + b"}",
                             headers=as_tenant("tenant-a")), 413, "payload_too_large")


def test_invalid_bodies_name_the_field_but_never_echo_the_value(app_host: RunningHost):
    response = app_host.http().post("/api/migrations", json={"target": {"environment_url": "SECRET-VALUE"}},
                                    headers=as_tenant("tenant-a"))
    _assert_problem(response, 400, "invalid_request")
    assert ["target", "environment_url"] in [e["loc"] for e in response.json()["errors"]]
    assert "SECRET-VALUE" not in response.text


def test_a_retried_create_with_the_same_idempotency_key_creates_once(app_host: RunningHost):
    http, key = app_host.http(), f"create-{uuid.uuid4().hex}"
    headers = {**as_tenant("tenant-idem"), "Idempotency-Key": key}
    first = http.post("/api/migrations", json={"name": "once", "target": TARGET}, headers=headers)
    second = http.post("/api/migrations", json={"name": "once", "target": TARGET}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["migration"]["migration_id"] == second.json()["migration"]["migration_id"]
    assert second.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
    listed = http.get("/api/migrations", params={"name_contains": "once"}, headers=as_tenant("tenant-idem")).json()
    assert len(listed["items"]) == 1
    # The same key for another request is refused; another tenant's identical key is its own.
    _assert_problem(http.post("/api/migrations", json={"name": "other", "target": TARGET}, headers=headers),
                    422, "idempotency_key_reused")
    other = http.post("/api/migrations", json={"name": "once", "target": TARGET},
                      headers={**as_tenant("tenant-idem-2"), "Idempotency-Key": key})
    assert other.status_code == 201
    assert other.json()["migration"]["migration_id"] != first.json()["migration"]["migration_id"]


def test_a_failed_start_releases_its_idempotency_key(app_host: RunningHost, owned: str):
    http = app_host.http()
    headers = {**as_tenant("tenant-a"), "Idempotency-Key": "start-1"}
    for _ in range(2):  # refused (no bundle yet) both times: the failure was not stored as the answer
        _assert_problem(http.post(f"/api/migrations/{owned}/start", json={"bundle_id": "b-1"}, headers=headers),
                        409, "wrong_stage")
    _assert_problem(http.post(f"/api/migrations/{owned}/start", json={"bundle_id": "b-1"},
                              headers={**as_tenant("tenant-a"), "Idempotency-Key": "bad key!"}),
                    400, "invalid_request")


def test_the_list_pages_and_filters_within_the_tenant(app_host: RunningHost, owned: str):
    http, tenant = app_host.http(), f"tenant-list-{uuid.uuid4().hex[:6]}"
    created = sorted(http.post("/api/migrations", json={"name": f"site {n}", "target": TARGET},
                               headers=as_tenant(tenant)).json()["migration"]["migration_id"] for n in range(3))
    first = http.get("/api/migrations", params={"limit": 2}, headers=as_tenant(tenant, ("viewer",))).json()
    assert [m["migration_id"] for m in first["items"]] == created[:2] and first["next_cursor"] == created[1]
    rest = http.get("/api/migrations", params={"limit": 2, "cursor": first["next_cursor"]},
                    headers=as_tenant(tenant)).json()
    assert [m["migration_id"] for m in rest["items"]] == created[2:] and rest["next_cursor"] is None
    assert http.get("/api/migrations", params={"stage": "done"}, headers=as_tenant(tenant)).json()["items"] == []
    named = http.get("/api/migrations", params={"name_contains": "SITE 1"}, headers=as_tenant(tenant)).json()
    assert [m["name"] for m in named["items"]] == ["site 1"]
    everything = http.get("/api/migrations", params={"limit": 100}, headers=as_tenant(tenant)).json()
    assert owned not in {m["migration_id"] for m in everything["items"]}
    _assert_problem(http.get("/api/migrations", params={"colour": "red"}, headers=as_tenant(tenant)),
                    400, "invalid_request")
    _assert_problem(http.get("/api/migrations", params={"limit": 0}, headers=as_tenant(tenant)),
                    400, "invalid_request")
