"""Callers: the App Service principal, or a function key mapped to one tenant and one role."""

from __future__ import annotations

import pytest

from shared.identity import NotAuthenticated, caller_from_request, key_fingerprint, principal_header
from shared.settings import AutomationKey, Settings

KEYS = {key_fingerprint("k-ops"): AutomationKey(tenant_id="t-1", role="operator", name="sync"),
        key_fingerprint("k-view"): AutomationKey(tenant_id="t-2")}


def test_a_principal_names_tenant_user_and_roles_and_wins_over_a_key():
    headers = {"X-MS-CLIENT-PRINCIPAL": principal_header("t-9", "u-9", ["operator", "admin"]),
               "x-functions-key": "k-ops"}
    caller = caller_from_request(headers, {}, KEYS)
    assert (caller.tenant_id, caller.user_id, caller.roles) == ("t-9", "u-9", frozenset({"operator"}))


def test_a_principal_without_roles_is_a_viewer():
    caller = caller_from_request({"x-ms-client-principal": principal_header("t", "u", [])}, {}, KEYS)
    assert caller.roles == frozenset({"viewer"})


@pytest.mark.parametrize(("headers", "params", "tenant", "role"), [
    ({"x-functions-key": "k-ops"}, {}, "t-1", "operator"),
    ({}, {"code": "k-view"}, "t-2", "viewer"),
])
def test_a_mapped_function_key_acts_for_its_tenant_with_its_role(headers, params, tenant, role):
    caller = caller_from_request(headers, params, KEYS)
    assert caller.tenant_id == tenant and caller.roles == frozenset({role})
    assert caller.user_id.startswith("key:")


@pytest.mark.parametrize(("headers", "params"), [
    ({}, {}),
    ({"x-functions-key": "k-unknown"}, {}),
    ({}, {"code": "the-host-master-key"}),
    ({"x-ms-client-principal": "not base64 json"}, {"code": "k-ops"}),
])
def test_no_principal_and_no_mapped_key_is_no_caller(headers, params):
    with pytest.raises(NotAuthenticated) as raised:
        caller_from_request(headers, params, KEYS)
    assert "k-unknown" not in raised.value.message and "master" not in raised.value.message


def test_the_setting_reads_a_json_map_of_key_fingerprints(monkeypatch):
    fingerprint = key_fingerprint("secret")
    monkeypatch.setenv("BRIDGEWORK_AUTOMATION_KEYS",
                       f'{{"{fingerprint}": {{"tenant_id": "t-1", "role": "operator", "name": "ci"}}}}')
    assert Settings().automation_keys[fingerprint] == AutomationKey(tenant_id="t-1", role="operator", name="ci")
    assert "secret" not in fingerprint
