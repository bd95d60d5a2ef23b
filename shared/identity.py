"""Who is calling: the App Service Authentication principal, mapped to a tenant and a role.

In Azure, App Service Authentication (Entra ID) validates the caller's token and forwards the
principal to the app as the base64 JSON header `x-ms-client-principal`; the app never sees or checks
tokens itself. Locally, the dev host injects the same header (devhost/README.md).

Automation (a customer's scripts) calls with a function key instead (`x-functions-key` header or
`code` query parameter; the Functions host has already checked the key is valid). Such a key acts for
one tenant with one role only if `BRIDGEWORK_AUTOMATION_KEYS` lists its sha256; any other key (the
host's master key included) is no caller at all. A principal, when present, always wins.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import Fatal
from shared.settings import AutomationKey

PRINCIPAL_HEADER = "x-ms-client-principal"
TENANT_CLAIM = "http://schemas.microsoft.com/identity/claims/tenantid"
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"

TRole = Literal["viewer", "operator"]


class NotAuthenticated(Fatal):
    """The request carries no usable principal."""

    code = "not_authenticated"


class Caller(BaseModel):
    """An authenticated caller: the tenant whose migrations it may see, and what it may do."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    user_id: str
    roles: frozenset[TRole]


def caller_from_headers(headers: Mapping[str, str]) -> Caller:
    """Read the caller from the principal header. Raises NotAuthenticated if it is absent or malformed."""
    encoded = next((value for name, value in headers.items() if name.lower() == PRINCIPAL_HEADER), None)
    if not encoded:
        raise NotAuthenticated("no authenticated principal: sign in through Entra ID (App Service Authentication)")
    try:
        principal = json.loads(base64.b64decode(encoded))
        claims = principal.get("claims") or []
    except (ValueError, AttributeError):
        raise NotAuthenticated("the x-ms-client-principal header is not base64-encoded JSON") from None
    values: dict[str, list[str]] = {}
    for claim in claims:
        values.setdefault(str(claim.get("typ")), []).append(str(claim.get("val")))
    role_type = principal.get("role_typ") or "roles"
    tenant = (values.get(TENANT_CLAIM) or values.get("tid") or [None])[0]
    user = (values.get(OBJECT_ID_CLAIM) or values.get("oid") or [None])[0]
    if not tenant or not user:
        raise NotAuthenticated("the principal names no tenant (tid) or user (oid)")
    roles = {role for role in values.get(role_type, []) if role in ("viewer", "operator")}
    return Caller(tenant_id=tenant, user_id=user, roles=frozenset(roles or {"viewer"}))


def key_fingerprint(key: str) -> str:
    """The form a function key takes in `BRIDGEWORK_AUTOMATION_KEYS`: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def caller_from_request(headers: Mapping[str, str], params: Mapping[str, str],
                        automation_keys: Mapping[str, AutomationKey]) -> Caller:
    """The caller of an HTTP request: its principal, else a function key mapped to a tenant.

    Raises NotAuthenticated when there is neither (an unmapped key says so without echoing it).
    """
    if any(name.lower() == PRINCIPAL_HEADER for name in headers):
        return caller_from_headers(headers)
    offered = next((value for name, value in headers.items() if name.lower() == "x-functions-key"), None)
    offered = offered or params.get("code")
    if not offered:
        return caller_from_headers(headers)  # raises the "sign in" error
    fingerprint = key_fingerprint(offered)
    # compare_digest over every entry: the lookup time says nothing about which fingerprints exist.
    match = None
    for known, grant in automation_keys.items():
        if hmac.compare_digest(known.encode(), fingerprint.encode()):
            match = grant
    if match is None:
        raise NotAuthenticated("no authenticated principal, and the function key is not mapped to a tenant "
                               "(BRIDGEWORK_AUTOMATION_KEYS): sign in through Entra ID or use an automation key")
    return Caller(tenant_id=match.tenant_id, user_id=f"key:{match.name}", roles=frozenset({match.role}))


def principal_header(tenant_id: str, user_id: str, roles: list[str]) -> str:
    """Encode a principal as App Service Authentication does (for the local host and tests)."""
    claims = [{"typ": TENANT_CLAIM, "val": tenant_id}, {"typ": OBJECT_ID_CLAIM, "val": user_id}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    principal = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(principal).encode()).decode()
