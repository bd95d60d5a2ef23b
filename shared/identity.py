"""Who is calling: the App Service Authentication principal, mapped to a tenant and a role.

In Azure, App Service Authentication (Entra ID) validates the caller's token and forwards the
principal to the app as the base64 JSON header `x-ms-client-principal`; the app never sees or checks
tokens itself. Locally, the dev host injects the same header (devhost/README.md).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import Fatal

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


def principal_header(tenant_id: str, user_id: str, roles: list[str]) -> str:
    """Encode a principal as App Service Authentication does (for the local host and tests)."""
    claims = [{"typ": TENANT_CLAIM, "val": tenant_id}, {"typ": OBJECT_ID_CLAIM, "val": user_id}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    principal = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(principal).encode()).decode()
