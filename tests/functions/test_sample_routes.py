"""The sample decision routes and the sample size at create, on the local host (no Dataverse needed):
a decision is refused (409 problem+json) unless the migration waits for it; the size is 0 or 100-300."""

from __future__ import annotations

import pytest

from devhost.testing import RunningHost
from tests.functions.conftest import as_tenant

TARGET = {"environment_url": "https://org.example.crm.dynamics.com", "tenant_id": "customer-tenant"}


def _create(host: RunningHost, **body: object) -> dict:
    response = host.http().post("/api/migrations", json={"target": TARGET, **body}, headers=as_tenant("tenant-s"))
    assert response.status_code == 201, response.text
    return response.json()["migration"]


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_sample_decision_is_refused_unless_the_migration_waits_for_it(app_host: RunningHost, decision: str):
    migration = _create(app_host)
    response = app_host.http().post(f"/api/migrations/{migration['migration_id']}/sample/{decision}",
                                    headers=as_tenant("tenant-s"))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/wrong_stage") and "not waiting for a sample decision" in problem["detail"]
    # Nothing was recorded as decided.
    view = app_host.http().get(f"/api/migrations/{migration['migration_id']}", headers=as_tenant("tenant-s")).json()
    assert view["migration"]["sample_approved_by"] is None and view["migration"]["sample_rejected_by"] is None


def test_a_sample_decision_takes_no_body(app_host: RunningHost):
    migration = _create(app_host)
    response = app_host.http().post(f"/api/migrations/{migration['migration_id']}/sample/approve",
                                    json={"approved": True}, headers=as_tenant("tenant-s"))
    assert response.status_code == 400


def test_the_sample_size_is_set_at_create_0_or_100_to_300(app_host: RunningHost):
    assert _create(app_host)["sample_patients"] == 150
    assert _create(app_host, sample_patients=0)["sample_patients"] == 0
    assert _create(app_host, sample_patients=300)["sample_patients"] == 300
    for size in (1, 99, 301, -1):
        response = app_host.http().post("/api/migrations", json={"target": TARGET, "sample_patients": size},
                                        headers=as_tenant("tenant-s"))
        assert response.status_code in (400, 422), size
        assert "sample_patients" in response.text
