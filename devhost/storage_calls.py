"""How many requests the process sends to Storage, by service, method and table or container.

Why: Azurite answers a blob lookup by scanning every blob of the account and a query page by scanning its
whole table, so on this machine the time per record grows with the practice even when the product's
work per record does not. Counting the requests separates the two: on Azure every one of them is an
index operation, so if requests per record stay flat with the practice's size, so does the cost there.

`install()` wraps the azure-core transports' `send` (sync and async), which every Storage SDK client of
the process goes through, so nothing in the product is touched. Keys are `"<service> <METHOD> <name>"`:
the service from the SDK's User-Agent (blob, table, queue), the name the table or container that the URL
addresses (`$batch` for a table transaction, whose table is in its body; `(service)` for account calls).
Names and counts only: no keys, entities or blob names.
"""

from __future__ import annotations

import threading
from collections import Counter
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

_counts: Counter[str] = Counter()
_lock = threading.Lock()
_installed = False

_SERVICES = (("storage-blob", "blob"), ("data-tables", "table"), ("storage-queue", "queue"))


def _service(user_agent: str) -> str | None:
    return next((name for marker, name in _SERVICES if marker in user_agent), None)


def _path_style(host: str) -> bool:
    """An IP address or localhost carries the account in the path, as the Storage SDKs (and agent/upload.py,
    which ships apart from the devhost) decide."""
    try:
        ip_address(host)
        return True
    except ValueError:
        return host == "localhost"


def request_key(method: str, url: str, user_agent: str) -> str | None:
    """The counter's key for one request, or None when it is not a Storage SDK's."""
    service = _service(user_agent)
    if service is None:
        return None
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if _path_style(parts.hostname or "") and segments:  # Azurite: /<account>/<container or table>/...
        segments = segments[1:]
    name = segments[0].split("(", 1)[0] if segments else "(service)"
    return f"{service} {method.upper()} {name or '(service)'}"


def count(method: str, url: str, user_agent: str) -> None:
    key = request_key(method, url, user_agent)
    if key is not None:
        with _lock:
            _counts[key] += 1


def snapshot() -> dict[str, int]:
    """The counts so far (they only grow: callers take differences)."""
    with _lock:
        return dict(_counts)


def difference(later: dict[str, int], earlier: dict[str, int]) -> dict[str, int]:
    """What was sent between two snapshots (keys that did not move left out)."""
    return {key: n - earlier.get(key, 0) for key, n in later.items() if n > earlier.get(key, 0)}


def install() -> None:
    """Count every Storage request the process sends from now on (idempotent)."""
    global _installed
    if _installed:
        return
    from azure.core.pipeline.transport import AioHttpTransport, RequestsTransport

    sync_send, async_send = RequestsTransport.send, AioHttpTransport.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        count(request.method, request.url, request.headers.get("User-Agent", ""))
        return sync_send(self, request, **kwargs)

    async def send_async(self: Any, request: Any, **kwargs: Any) -> Any:
        count(request.method, request.url, request.headers.get("User-Agent", ""))
        return await async_send(self, request, **kwargs)

    RequestsTransport.send = send  # type: ignore[method-assign]
    AioHttpTransport.send = send_async  # type: ignore[method-assign]
    _installed = True
