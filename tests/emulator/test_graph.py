"""§11 Graph: sites and drives, folders with conflict behaviour, simple upload, upload sessions, 429 injection."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from emulator.testing import RunningEmulator
from tests.emulator.helpers import ok

UNIT = 327_680


def _drive(graph: httpx.Client, name: str = "contact") -> str:
    site = ok(graph.get("sites/contoso.sharepoint.com:/sites/dental")).json()
    drives = ok(graph.get(f"sites/{site['id']}/drives")).json()["value"]
    return next(d["id"] for d in drives if d["name"] == name)


def test_site_and_drives(graph: httpx.Client) -> None:
    site = ok(graph.get("sites/contoso.sharepoint.com:/sites/dental:")).json()
    assert site["webUrl"] == "https://contoso.sharepoint.com/sites/dental"
    assert ok(graph.get(f"sites/{site['id']}")).json()["id"] == site["id"]
    names = [d["name"] for d in ok(graph.get(f"sites/{site['id']}/drives")).json()["value"]]
    assert names == ["Documents", "contact"]
    assert graph.get("sites/other.sharepoint.com:/sites/x").status_code == 404


def test_graph_needs_a_graph_token(emu: RunningEmulator) -> None:
    r = httpx.get(emu.graph_url + "/sites/contoso.sharepoint.com:/sites/dental", headers=emu.headers_for("app-1"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert httpx.get(emu.graph_url + "/sites/contoso.sharepoint.com:/sites/dental").status_code == 401


def test_folder_conflict_behaviours(graph: httpx.Client) -> None:
    drive = _drive(graph)
    body = {"name": "Ana Ruiz_9F8E", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}
    first = ok(graph.post(f"drives/{drive}/root/children", json=body), 201).json()
    assert first["folder"] == {"childCount": 0}
    r = graph.post(f"drives/{drive}/root/children", json=body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "nameAlreadyExists"
    renamed = ok(graph.post(f"drives/{drive}/root/children",
                            json={**body, "@microsoft.graph.conflictBehavior": "rename"}), 201).json()
    assert renamed["name"] == "Ana Ruiz_9F8E 1"
    replaced = ok(graph.post(f"drives/{drive}/root/children",
                             json={**body, "@microsoft.graph.conflictBehavior": "replace"}), 201).json()
    assert replaced["name"] == "Ana Ruiz_9F8E"
    by_path = ok(graph.get(f"drives/{drive}/root:/Ana Ruiz_9F8E:")).json()
    assert by_path["id"] == replaced["id"]
    assert graph.get(f"drives/{drive}/root:/missing:").status_code == 404
    assert graph.post(f"drives/{drive}/root/children", json={"name": "a:b", "folder": {}}).status_code == 400


def test_paths_follow_deletes_and_restores_and_ignore_case(emu: RunningEmulator, graph: httpx.Client) -> None:
    # Path lookups go through the emulator's folder index, derived from the items: it must follow every change.
    drive = _drive(graph)
    folder = ok(graph.post(f"drives/{drive}/root/children", json={"name": "P_7", "folder": {}}), 201).json()
    ok(graph.put(f"drives/{drive}/root:/P_7/Scan.PDF:/content", content=b"one"), 201)
    assert ok(graph.get(f"drives/{drive}/root:/p_7/scan.pdf:")).json()["size"] == 3
    assert ok(graph.get(f"drives/{drive}/items/{folder['id']}")).json()["folder"] == {"childCount": 1}
    ok(graph.delete(f"drives/{drive}/items/{folder['id']}"), 204)
    assert graph.get(f"drives/{drive}/root:/P_7/Scan.PDF:").status_code == 404
    again = ok(graph.post(f"drives/{drive}/root/children",
                          json={"name": "P_7", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}), 201).json()
    assert again["folder"] == {"childCount": 0}
    snap = emu.snapshot()
    ok(graph.put(f"drives/{drive}/root:/P_7/later.pdf:/content", content=b"two"), 201)
    emu.restore(snap)
    assert graph.get(f"drives/{drive}/root:/P_7/later.pdf:").status_code == 404
    assert ok(graph.get(f"drives/{drive}/root:/P_7:")).json()["id"] == again["id"]
    ok(graph.put(f"drives/{drive}/root:/P_7/later.pdf:/content", content=b"three"), 201)


def test_simple_upload_201_then_200_and_conflict_query(graph: httpx.Client) -> None:
    drive = _drive(graph)
    folder = ok(graph.post(f"drives/{drive}/root/children", json={"name": "P_1", "folder": {}}), 201).json()["id"]
    r = ok(graph.put(f"drives/{drive}/items/{folder}:/xray.pdf:/content", content=b"one",
                     headers={"Content-Type": "application/pdf"}), 201)
    assert r.json()["size"] == 3 and r.json()["file"]["mimeType"] == "application/pdf"
    r = ok(graph.put(f"drives/{drive}/items/{folder}:/xray.pdf:/content", content=b"two!"), 200)
    assert r.json()["size"] == 4
    r = graph.put(f"drives/{drive}/items/{folder}:/xray.pdf:/content?@microsoft.graph.conflictBehavior=fail",
                  content=b"x")
    assert r.status_code == 409
    r = ok(graph.put(f"drives/{drive}/items/{folder}:/xray.pdf:/content?@microsoft.graph.conflictBehavior=rename",
                     content=b"x"), 201)
    assert r.json()["name"] == "xray 1.pdf"
    assert ok(graph.get(f"drives/{drive}/root:/P_1/xray.pdf:/content")).content == b"two!"
    kids = ok(graph.get(f"drives/{drive}/items/{folder}/children")).json()["value"]
    assert [k["name"] for k in kids] == ["xray 1.pdf", "xray.pdf"]
    ok(graph.put(f"drives/{drive}/root:/New folder/deep/a.txt:/content", content=b"a"), 201)


def test_simple_upload_size_limit(emu: RunningEmulator, graph: httpx.Client) -> None:
    emu.configure(sharepoint={"max_simple_upload_bytes": 1000})
    drive = _drive(graph)
    assert graph.put(f"drives/{drive}/root:/big.bin:/content", content=b"x" * 1001).status_code == 413


def _session(graph: httpx.Client, drive: str, name: str, behavior: str = "rename", defer: bool = False) -> str:
    r = ok(graph.post(f"drives/{drive}/root:/P_2/{name}:/createUploadSession",
                      json={"item": {"@microsoft.graph.conflictBehavior": behavior, "name": name},
                            "deferCommit": defer}), 200)
    assert r.json()["nextExpectedRanges"] == ["0-"] and r.json()["expirationDateTime"]
    return r.json()["uploadUrl"]


def test_upload_session_in_order_fragments(graph: httpx.Client) -> None:
    drive = _drive(graph)
    data = hashlib.sha256(b"seed").digest() * 25_000  # 800,000 bytes
    url = _session(graph, drive, "scan.tif")
    total = len(data)
    with httpx.Client(timeout=30) as up:  # upload URLs take no Authorization header
        r = up.put(url, content=data[:UNIT], headers={"Content-Range": f"bytes 0-{UNIT - 1}/{total}"})
        assert r.status_code == 202 and r.json()["nextExpectedRanges"] == [f"{UNIT}-"]
        assert up.get(url).json()["nextExpectedRanges"] == [f"{UNIT}-"]
        r = up.put(url, content=data[:UNIT], headers={"Content-Range": f"bytes 0-{UNIT - 1}/{total}"})
        assert r.status_code == 416
        r = up.put(url, content=data[UNIT:UNIT + 1000], headers={"Content-Range": f"bytes {UNIT}-{UNIT + 999}/{total}"})
        assert r.status_code == 400 and "327,680" in r.json()["error"]["message"]
        r = up.put(url, content=data[UNIT:2 * UNIT],
                   headers={"Content-Range": f"bytes {UNIT}-{2 * UNIT - 1}/{total + 1}"})
        assert r.status_code == 400  # the total must be the same in every fragment
        r = up.put(url, content=data[UNIT:2 * UNIT], headers={"Content-Range": f"bytes {UNIT}-{2 * UNIT - 1}/{total}",
                                                             "Authorization": "Bearer x"})
        assert r.status_code == 401
        r = up.put(url, content=data[UNIT:], headers={"Content-Range": f"bytes {UNIT}-{total - 1}/{total}"})
        assert r.status_code == 201 and r.json()["size"] == total
        assert r.json()["file"]["hashes"]["sha256Hash"] == hashlib.sha256(data).hexdigest().upper()
        assert up.get(url).status_code == 404  # the session is gone once complete
    assert ok(graph.get(f"drives/{drive}/root:/P_2/scan.tif:/content")).content == data


def test_upload_session_cancel_conflict_and_deferred_commit(graph: httpx.Client) -> None:
    drive = _drive(graph)
    with httpx.Client(timeout=30) as up:
        url = _session(graph, drive, "a.bin")
        assert up.delete(url).status_code == 204
        assert up.put(url, content=b"x", headers={"Content-Range": "bytes 0-0/1"}).status_code == 404
        ok(graph.put(f"drives/{drive}/root:/P_2/b.bin:/content", content=b"old"), 201)
        url = _session(graph, drive, "b.bin", behavior="fail")
        r = up.put(url, content=b"new", headers={"Content-Range": "bytes 0-2/3"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "nameAlreadyExists"
        url = _session(graph, drive, "b.bin", behavior="replace")
        assert up.put(url, content=b"newer", headers={"Content-Range": "bytes 0-4/5"}).status_code == 200
        url = _session(graph, drive, "c.bin", defer=True)
        assert up.put(url, content=b"abc", headers={"Content-Range": "bytes 0-2/3"}).status_code == 202
        assert graph.get(f"drives/{drive}/root:/P_2/c.bin:").status_code == 404
        assert up.post(url, content=b"").status_code == 201
    assert ok(graph.get(f"drives/{drive}/root:/P_2/b.bin:/content")).content == b"newer"
    assert ok(graph.get(f"drives/{drive}/root:/P_2/c.bin:/content")).content == b"abc"


@pytest.mark.parametrize("prefix", ["/v1.0/", "/_upload/"])
def test_graph_429_injection_with_retry_after(emu: RunningEmulator, graph: httpx.Client, prefix: str) -> None:
    drive = _drive(graph)
    url = _session(graph, drive, "t.bin") if prefix == "/_upload/" else None
    emu.configure(faults=[{"kind": "status", "status": 429, "path_prefix": prefix, "every": 1, "times": 1,
                           "retry_after_seconds": 2}])
    if url:
        first = httpx.put(url, content=b"x", headers={"Content-Range": "bytes 0-0/1"})
        second = httpx.put(url, content=b"x", headers={"Content-Range": "bytes 0-0/1"})
    else:
        first = graph.get(f"drives/{drive}")
        second = graph.get(f"drives/{drive}")
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert first.json()["error"]["code"] == "TooManyRequests"
    assert second.status_code in (200, 201)
