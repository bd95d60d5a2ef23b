"""Unsigned test tokens: JWTs with `alg: none` whose claims say who calls (`appid`), for what (`aud`), until when.

The emulator checks `aud` (the environment URL, or the Graph resource), `appid` (a configured application user)
and `exp` (in the future), the three things a real token check would refuse; it never checks a signature.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

GRAPH_AUDIENCE = "https://graph.microsoft.com"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def make_token(app_id: str, audience: str, lifetime_seconds: float = 3600.0, now: float | None = None) -> str:
    """An unsigned JWT for `app_id` valid for `audience` (e.g. 'http://127.0.0.1:8080') for `lifetime_seconds`."""
    issued = int(now if now is not None else time.time())
    claims = {"aud": audience.rstrip("/"), "appid": app_id, "iat": issued, "nbf": issued,
              "exp": int(issued + lifetime_seconds), "iss": "https://sts.windows.net/emulator/",
              "ver": "1.0"}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def read_claims(token: str) -> dict[str, Any] | None:
    """The claims of a token, or None when it is not a JWT."""
    parts = token.split(".")
    if len(parts) < 2:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def audience_of_scope(scope: str) -> str:
    """'https://org.crm.dynamics.com/.default' -> 'https://org.crm.dynamics.com'."""
    return scope.removesuffix("/.default").removesuffix("//.default").rstrip("/")
