"""The walking skeleton through the real layers: HTTP API -> Table Storage -> orchestration -> activity."""

from __future__ import annotations

from devhost.testing import RunningHost
from tests.functions.conftest import as_tenant


def test_create_migration_records_it_and_starts_its_orchestration(app_host: RunningHost):
    http = app_host.http()
    created = http.post("/api/migrations", json={"name": "north clinic"}, headers=as_tenant("tenant-a"))
    assert created.status_code == 201
    migration = created.json()
    assert migration["tenant_id"] == "tenant-a" and migration["stage"] == "started"
    status = app_host.wait_for(migration["instance_id"])
    assert status["runtimeStatus"] == "Completed"

    view = http.get(f"/api/migrations/{migration['migration_id']}", headers=as_tenant("tenant-a")).json()
    assert view["migration"]["migration_id"] == migration["migration_id"]
    assert view["runtime_status"] == "Completed"
    assert [(p["stage"], p["status"]) for p in view["progress"]] == [("started", "done")]


def test_another_tenants_migration_does_not_exist_for_the_caller(app_host: RunningHost):
    http = app_host.http()
    migration = http.post("/api/migrations", json={}, headers=as_tenant("tenant-b")).json()
    response = http.get(f"/api/migrations/{migration['migration_id']}", headers=as_tenant("tenant-c"))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/migration_not_found")


def test_requests_without_a_principal_are_refused(app_host: RunningHost):
    response = app_host.http().post("/api/migrations", json={})
    assert response.status_code == 401
    assert response.json()["type"].endswith("/not_authenticated")


def test_unknown_fields_in_the_body_are_refused_with_their_location(app_host: RunningHost):
    response = app_host.http().post("/api/migrations", json={"name": "x", "colour": "red"},
                                    headers=as_tenant("tenant-a"))
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["colour"]
