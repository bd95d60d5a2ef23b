"""DataverseClient against httpx.MockTransport: headers, tokens, cookies, retries, Retry-After, dop hint, lanes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from shared.dataverse.client import format_key, key_path, odata_literal
from shared.dataverse.governor import GovernorConfig
from shared.errors import (
    DataverseAuthError,
    DataverseRecordRejected,
    DataverseThrottleBudgetExhausted,
)

from .conftest import FakeCredential, error, make_client


def run(coro):
    return asyncio.run(coro)


def test_sends_odata_headers_and_bearer_token_and_caches_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"UserId": "u", "BusinessUnitId": "b", "OrganizationId": "o"})

    cred = FakeCredential()

    async def go() -> None:
        async with make_client(handler, credentials=cred) as client:
            for _ in range(5):
                assert (await client.who_am_i())["UserId"] == "u"

    run(go())
    assert len(cred.calls) == 1, "token fetched once and cached"
    assert cred.calls[0] == ("https://org.crm.dynamics.com/.default",)
    r = seen[0]
    assert str(r.url) == "https://org.crm.dynamics.com/api/data/v9.2/WhoAmI"
    assert r.headers["Authorization"] == "Bearer tok-1"
    assert r.headers["OData-Version"] == "4.0" and r.headers["OData-MaxVersion"] == "4.0"
    assert r.headers["Accept"] == "application/json"


def test_token_refreshed_before_expiry() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        return httpx.Response(204)

    cred = FakeCredential(lifetime=100)  # inside the 300 s refresh margin: every call refreshes

    async def go() -> None:
        async with make_client(handler, credentials=cred) as client:
            await client.request("GET", "WhoAmI")
            await client.request("GET", "WhoAmI")

    run(go())
    assert tokens == ["Bearer tok-1", "Bearer tok-2"]


def test_401_refreshes_the_token_once_then_fails_fatally() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        return error(401)

    async def go() -> None:
        async with make_client(handler) as client:
            await client.request("GET", "WhoAmI")

    with pytest.raises(DataverseAuthError):
        run(go())
    assert calls == ["Bearer tok-1", "Bearer tok-2"]


def test_affinity_cookie_is_never_sent_back() -> None:
    cookies: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("Cookie"))
        return httpx.Response(
            200,
            json={},
            headers={"Set-Cookie": "ARRAffinity=abc123; Path=/; HttpOnly; Domain=org.crm.dynamics.com"},
        )

    async def go() -> None:
        async with make_client(handler) as client:
            for _ in range(3):
                await client.request("GET", "WhoAmI")

    run(go())
    assert cookies == [None, None, None]


def test_429_waits_retry_after_before_sending_again() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return error(429, "0x80072322", {"Retry-After": "0.3"})
        return httpx.Response(200, json={})

    async def go() -> None:
        async with make_client(handler) as client:
            await client.request("GET", "WhoAmI")
            assert client.throttled == 1

    run(go())
    assert len(times) == 2
    assert times[1] - times[0] >= 0.3


def test_429_blocks_every_queued_request_of_that_user_until_retry_after() -> None:
    sends: list[float] = []
    throttled_at: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        sends.append(now)
        if len(sends) == 3:
            throttled_at.append(now)
            return error(429, "0x80072321", {"Retry-After": "0.4"})
        await asyncio.sleep(0.01)
        return httpx.Response(200, json={})

    async def go() -> None:
        async with make_client(handler, governor=GovernorConfig(initial_concurrency=2)) as client:
            await asyncio.gather(*(client.request("GET", "WhoAmI") for _ in range(12)))

    run(go())
    assert len(sends) == 13
    # every request that started after the 429 was answered waited for its Retry-After
    later = [t for t in sends if t > throttled_at[0] + 0.05]
    assert later and all(t >= throttled_at[0] + 0.4 for t in later)


def test_concurrency_follows_dop_hint_under_the_cap() -> None:
    state = {"now": 0, "max": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return httpx.Response(200, json={}, headers={"x-ms-dop-hint": "3"})

    async def go() -> None:
        async with make_client(
            handler, governor=GovernorConfig(initial_concurrency=8, max_concurrency=50)
        ) as client:
            await client.request("GET", "WhoAmI")  # learns the hint
            await asyncio.gather(*(client.request("GET", "WhoAmI") for _ in range(40)))
            assert client.lanes[0].governor.dop_hint == 3

    run(go())
    assert state["max"] <= 3

    state.update(now=0, max=0)

    async def capped() -> None:
        async with make_client(
            handler, governor=GovernorConfig(initial_concurrency=2, max_concurrency=2)
        ) as client:
            await asyncio.gather(*(client.request("GET", "WhoAmI") for _ in range(20)))

    run(capped())
    assert state["max"] <= 2


def test_5xx_and_resets_are_retried_then_succeed() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return error(503)
        if calls["n"] == 2:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(200, json={"ok": 1})

    async def go() -> dict:
        async with make_client(handler) as client:
            return await client.get_json("WhoAmI")

    assert run(go()) == {"ok": 1}
    assert calls["n"] == 3


def test_persistent_5xx_gives_up_with_a_fatal_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return error(500)

    async def go() -> None:
        async with make_client(handler, max_attempts=3) as client:
            await client.request("GET", "WhoAmI")

    with pytest.raises(DataverseThrottleBudgetExhausted):
        run(go())


def test_400_is_not_retried_and_carries_the_code() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return error(400, "0x80044331")

    async def go() -> None:
        async with make_client(handler) as client:
            await client.request("PATCH", "contacts(x)", json={})

    with pytest.raises(DataverseRecordRejected) as info:
        run(go())
    assert calls["n"] == 1
    assert info.value.attrs["dataverse_code"] == "0x80044331"


def test_get_returns_none_on_404_and_query_follows_next_link() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("contacts(bw_sourceid='P-9')"):
            return error(404, "0x80040217")
        if path.endswith("/contacts") and "skip" not in str(request.url):
            assert request.url.params["$select"] == "contactid"
            assert request.headers["Prefer"] == "odata.maxpagesize=2"
            return httpx.Response(
                200,
                json={
                    "value": [{"contactid": "1"}, {"contactid": "2"}],
                    "@odata.nextLink": "https://org.crm.dynamics.com/api/data/v9.2/contacts?skip=2",
                },
            )
        return httpx.Response(200, json={"value": [{"contactid": "3"}]})

    async def go() -> None:
        async with make_client(handler) as client:
            assert await client.get("contacts", {"bw_sourceid": "P-9"}) is None
            rows = await client.query_all("contacts", select=["contactid"], page_size=2)
            assert [r["contactid"] for r in rows] == ["1", "2", "3"]

    run(go())


def test_two_users_share_the_load_and_each_uses_its_own_token() -> None:
    auth: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers["Authorization"])
        await asyncio.sleep(0.005)
        return httpx.Response(200, json={})

    async def go() -> None:
        creds = [FakeCredential(name="a"), FakeCredential(name="b")]
        async with make_client(
            handler, credentials=creds, governor=GovernorConfig(initial_concurrency=2, max_concurrency=2)
        ) as client:
            await asyncio.gather(*(client.request("GET", "WhoAmI") for _ in range(40)))

    run(go())
    a = sum(1 for x in auth if x.startswith("Bearer a-"))
    b = sum(1 for x in auth if x.startswith("Bearer b-"))
    assert a + b == 40 and a >= 10 and b >= 10


def test_key_formatting_quotes_and_escapes() -> None:
    assert format_key({"bw_sourceid": "P-1"}) == "bw_sourceid='P-1'"
    assert format_key({"bw_sourceid": "O'Neil"}) == "bw_sourceid='O''Neil'"
    assert format_key({"k1": 1, "k2": "x"}) == "k1=1,k2='x'"
    assert (
        key_path("contacts", "00000000-0000-0000-0000-000000000001")
        == "contacts(00000000-0000-0000-0000-000000000001)"
    )
    assert odata_literal("a'b") == "'a''b'"


def test_a_used_up_window_lets_only_one_probe_out() -> None:
    state = {"now": 0, "max": 0, "n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["n"] += 1
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.005)
        state["now"] -= 1
        # The server says the window has no requests left after the first answer.
        remaining = "50" if state["n"] == 1 else "0"
        return httpx.Response(
            200,
            json={},
            headers={"x-ms-dop-hint": "8", "x-ms-ratelimit-burst-remaining-xrm-requests": remaining},
        )

    async def go() -> None:
        async with make_client(handler, governor=GovernorConfig(initial_concurrency=8)) as client:
            await client.request("GET", "WhoAmI")
            await client.request("GET", "WhoAmI")
            state["max"] = 0
            await asyncio.gather(*(client.request("GET", "WhoAmI") for _ in range(20)))

    run(go())
    assert state["max"] == 1
