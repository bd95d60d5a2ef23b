"""GraphClient against a small in-test Graph fake (httpx.MockTransport): folders, uploads, sessions, throttling."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
from pydantic import ValidationError

from shared.errors import SharePointAuthError, SharePointConflict
from shared.sharepoint.client import FRAGMENT_UNIT, GraphClient, GraphConfig
from tests.shared.dataverse.conftest import FakeCredential

GRAPH = "https://graph.microsoft.com"


class FakeGraph:
    """Just enough of Graph's drive API to check the client's side of the contract."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {"root": {"id": "root", "name": "root", "folder": {}}}
        self.children: dict[str, dict[str, str]] = {"root": {}}
        self.sessions: dict[str, dict] = {}
        self.log: list[httpx.Request] = []
        self.fragments: list[tuple[int, int, int]] = []
        self.fail_next_fragment = False
        self.throttle_next: int = 0
        self.sent_at: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        self.sent_at.append(time.monotonic())
        if self.throttle_next:
            self.throttle_next -= 1
            return httpx.Response(
                429, headers={"Retry-After": "0.2"}, json={"error": {"code": "activityLimitReached"}}
            )
        url = request.url
        path = url.path
        if path.startswith("/upload/"):
            return self._session(request, path.rsplit("/", 1)[1])
        assert request.headers["Authorization"].startswith("Bearer ")
        m = re.fullmatch(r"/v1.0/drives/d1/items/([^/:]+):/([^:]+):(/content|/createUploadSession)?", path)
        if m:
            parent, name, action = m.group(1), m.group(2), m.group(3)
            existing = self.children[parent].get(name)
            if action is None:
                if existing is None:
                    return httpx.Response(404, json={"error": {"code": "itemNotFound"}})
                return httpx.Response(200, json=self.items[existing])
            conflict = (
                url.params.get("@microsoft.graph.conflictBehavior")
                if action == "/content"
                else json.loads(request.content)["item"]["@microsoft.graph.conflictBehavior"]
            )
            if existing is not None and conflict == "fail":
                return httpx.Response(409, json={"error": {"code": "nameAlreadyExists"}})
            if action == "/content":
                item = self._put(parent, name, request.content)
                return httpx.Response(200 if existing else 201, json=item)
            sid = f"s{len(self.sessions) + 1}"
            self.sessions[sid] = {"parent": parent, "name": name, "data": b"", "total": None}
            return httpx.Response(
                200, json={"uploadUrl": f"{GRAPH}/upload/{sid}", "expirationDateTime": "2030-01-01T00:00:00Z"}
            )
        m = re.fullmatch(r"/v1.0/drives/d1/items/([^/]+)/children", path)
        if m and request.method == "POST":
            body = json.loads(request.content)
            parent = m.group(1)
            if body["name"] in self.children[parent]:
                return httpx.Response(409, json={"error": {"code": "nameAlreadyExists"}})
            item = self._put(parent, body["name"], None)
            return httpx.Response(201, json=item)
        return httpx.Response(404, json={"error": {"code": "itemNotFound"}})

    def _put(self, parent: str, name: str, data: bytes | None) -> dict:
        iid = self.children[parent].get(name) or f"i{len(self.items)}"
        item = {"id": iid, "name": name}
        if data is None:
            item["folder"] = {}
            self.children.setdefault(iid, {})
        else:
            item["file"] = {}
            item["size"] = len(data)
            item["data"] = data.hex()[:0]
            self.items[iid + ":data"] = {"bytes": data}
        self.items[iid] = item
        self.children[parent][name] = iid
        return item

    def _session(self, request: httpx.Request, sid: str) -> httpx.Response:
        assert "Authorization" not in request.headers, "upload URLs are pre-authenticated"
        s = self.sessions[sid]
        if request.method == "GET":
            return httpx.Response(200, json={"nextExpectedRanges": [f"{len(s['data'])}-"]})
        if request.method == "DELETE":
            del self.sessions[sid]
            return httpx.Response(204)
        start, end, total = map(
            int, re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", request.headers["Content-Range"]).groups()
        )
        self.fragments.append((start, end, total))
        if s["total"] is not None and s["total"] != total:
            return httpx.Response(400, json={"error": {"code": "invalidRange"}})
        s["total"] = total
        if start != len(s["data"]):
            return httpx.Response(416, json={"error": {"code": "invalidRange"}})
        size = end - start + 1
        if end + 1 < total and size % FRAGMENT_UNIT:
            return httpx.Response(400, json={"error": {"code": "invalidRange"}})
        s["data"] += request.content
        if self.fail_next_fragment:
            # The bytes landed but the answer is lost: the client must ask the session, not resend.
            self.fail_next_fragment = False
            raise httpx.ReadError("connection reset", request=request)
        if len(s["data"]) == total:
            item = self._put(s["parent"], s["name"], s["data"])
            return httpx.Response(201, json=item)
        return httpx.Response(202, json={"nextExpectedRanges": [f"{len(s['data'])}-"]})


def client(fake: FakeGraph, **cfg) -> GraphClient:
    config = GraphConfig(graph_url=GRAPH, backoff_base_seconds=0.01, **cfg)
    return GraphClient(config, FakeCredential(), transport=httpx.MockTransport(fake.handler))


def run(coro):
    return asyncio.run(coro)


def test_ensure_folder_creates_once_and_is_idempotent() -> None:
    fake = FakeGraph()

    async def go() -> None:
        async with client(fake) as g:
            a = await g.ensure_folder("d1", "root", "Patient_ABC")
            b = await g.ensure_folder("d1", "root", "Patient_ABC")
            assert a["id"] == b["id"] and "folder" in a

    run(go())
    posts = [r for r in fake.log if r.method == "POST"]
    assert len(posts) == 1
    assert json.loads(posts[0].content)["@microsoft.graph.conflictBehavior"] == "fail"


def test_small_file_uses_one_put_with_conflict_behaviour() -> None:
    fake = FakeGraph()

    async def go() -> None:
        async with client(fake) as g:
            item = await g.upload("d1", "root", "xray 1.png", b"x" * 1000)
            assert item["size"] == 1000
            again = await g.upload("d1", "root", "xray 1.png", b"y" * 10)  # replace: same item, new content
            assert again["id"] == item["id"] and again["size"] == 10
            with pytest.raises(SharePointConflict):
                await g.upload("d1", "root", "xray 1.png", b"z", conflict="fail")

    run(go())
    puts = [r for r in fake.log if r.method == "PUT"]
    assert puts[0].url.params["@microsoft.graph.conflictBehavior"] == "replace"
    assert puts[0].url.raw_path.split(b"?")[0].endswith(b":/xray%201.png:/content")


def test_large_file_goes_through_a_session_in_320_kib_multiples() -> None:
    fake = FakeGraph()
    data = bytes(range(256)) * 9000  # 2,304,000 bytes

    async def go() -> None:
        async with client(fake, simple_upload_max_bytes=1024, fragment_bytes=2 * FRAGMENT_UNIT) as g:
            item = await g.upload("d1", "root", "scan.pdf", data)
            assert item["size"] == len(data)

    run(go())
    assert fake.items[fake.children["root"]["scan.pdf"] + ":data"]["bytes"] == data
    sizes = [end - start + 1 for start, end, _ in fake.fragments]
    assert all(s % FRAGMENT_UNIT == 0 for s in sizes[:-1])
    assert {t for *_, t in fake.fragments} == {len(data)}
    assert [s for s, _, _ in fake.fragments] == sorted(s for s, _, _ in fake.fragments)


def test_session_resumes_from_next_expected_ranges_after_a_reset_without_resending() -> None:
    fake = FakeGraph()
    fake.fail_next_fragment = True
    data = b"a" * (5 * FRAGMENT_UNIT + 17)

    async def go() -> None:
        async with client(fake, simple_upload_max_bytes=0, fragment_bytes=FRAGMENT_UNIT) as g:
            await g.upload("d1", "root", "big.bin", data)

    run(go())
    assert fake.items[fake.children["root"]["big.bin"] + ":data"]["bytes"] == data
    starts = [s for s, _, _ in fake.fragments]
    assert starts.count(0) <= 2 and len(fake.fragments) <= 7  # at most one duplicate (then 416 -> GET status)


def test_429_waits_for_retry_after() -> None:
    fake = FakeGraph()
    fake.throttle_next = 1

    async def go() -> None:
        async with client(fake) as g:
            await g.ensure_folder("d1", "root", "F")
            assert g.throttled == 1

    run(go())
    assert fake.sent_at[1] - fake.sent_at[0] >= 0.2


def test_auth_failure_is_fatal_and_names_no_file() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": {"code": "accessDenied", "message": "Ana Ruiz"}})

    async def go() -> None:
        async with GraphClient(
            GraphConfig(graph_url=GRAPH), FakeCredential(), transport=httpx.MockTransport(handler)
        ) as g:
            await g.upload("d1", "root", "Ana Ruiz xray.png", b"1")

    with pytest.raises(SharePointAuthError) as info:
        run(go())
    assert "Ana" not in str(info.value) and "403" in str(info.value)


def test_fragment_size_must_be_a_multiple_of_320_kib() -> None:
    with pytest.raises(ValidationError):
        GraphConfig(fragment_bytes=1_000_000)
    with pytest.raises(ValidationError):
        GraphConfig(fragment_bytes=FRAGMENT_UNIT * 200)  # 62.5 MiB >= 60 MiB
