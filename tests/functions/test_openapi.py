"""The served OpenAPI document matches the registered routes exactly, and its models are the contract."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import functions.api  # noqa: F401 - registers the routes and their contracts
import functions.cutover  # noqa: F401 - the cutover routes (their own blueprint)
from devhost.testing import RunningHost
from functions.openapi import OPERATIONS, openapi_document

ROOT = Path(__file__).resolve().parents[2]

# get_functions() may be called once per app object in a process (test_registry.py calls it): a child
# process imports the app afresh and lists its HTTP routes.
_LIST_ROUTES = """
import json, function_app
routes = []
for f in function_app.app.get_functions():
    trigger = f.get_trigger()
    if trigger.type == "httpTrigger":
        routes += [[str(m).upper(), trigger.route] for m in trigger.methods]
print(json.dumps(routes))
"""


@lru_cache(maxsize=1)
def registered_routes() -> frozenset[tuple[str, str]]:
    out = subprocess.run([sys.executable, "-c", _LIST_ROUTES], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return frozenset((method, route) for method, route in json.loads(out.strip().splitlines()[-1]))


def test_the_document_names_exactly_the_registered_routes():
    document = openapi_document()
    documented = {(method.upper(), path.removeprefix("/api/")) for path, ops in document["paths"].items()
                  for method in ops}
    registered = set(registered_routes())
    assert registered - documented == set(), "routes without @documented in functions/api.py"
    assert documented - registered == set(), "documented routes that are not registered"
    assert len(OPERATIONS) == len(registered)  # no route documented twice


def test_the_served_document_is_openapi_3_1_with_every_model_resolvable(app_host: RunningHost):
    response = app_host.http().get("/api/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served["openapi"] == "3.1.0" and served == json.loads(json.dumps(openapi_document()))
    text = json.dumps(served)
    for name in ("CreateMigrationRequest", "OperatorView", "MigrationList", "Problem", "UploadGrant"):
        assert f'"#/components/schemas/{name}"' in text and name in served["components"]["schemas"]
    create = served["paths"]["/api/migrations"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("CreateMigrationRequest")
    assert served["components"]["schemas"]["CreateMigrationRequest"]["additionalProperties"] is False
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert "403" in create["responses"] and "404" not in create["responses"]
