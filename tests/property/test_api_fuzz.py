"""Fuzzing the API's request parsing over HTTP on the local host (the entry Azure's front end would
use): create-migration bodies, field-map edits, approvals and the principal header.

Beyond schemathesis (tests/functions/test_schemathesis.py, which draws from the OpenAPI document),
these draw what the document does not allow: any JSON, broken bytes, a real draft map with one
part changed, strange principals. The properties:
- never a 5xx (every unexpected exception is a 500 in `api_route`, so this is "never a crash");
- every refusal is problem+json whose `status` is the HTTP status, and echoes no input value;
- nothing malformed is accepted silently: a 2xx create means the body is a valid
  `CreateMigrationRequest`; a 2xx map edit means the map validates and is stored as sent.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devtools import azurite
from devtools.stack import (
    OPERATOR,
    LocalStack,
    create_and_start,
    practice_stack,
    synthetic_practice,
    target_for,
    wait_for_stage,
)
from functions.api import CreateMigrationRequest

MARKER = "Zq7PHImarker"
"""Put into fuzzed values; must never come back in an error response (values may be patient data)."""

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20), st.just(MARKER))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
RAW_BODIES = st.one_of(st.binary(max_size=40), st.sampled_from([b"{", b"[]", b"null", b"\xff\xfe", b'{"name":',
                                                                 b"NaN", b'{"a":1}{"b":2}', b"{}" * 3]))


class Fuzzed:
    def __init__(self, stack: LocalStack, waiting: str, fresh: str, draft: dict[str, Any]) -> None:
        self.stack, self.waiting, self.fresh, self.draft = stack, waiting, fresh, draft

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        sent = {"x-ms-client-principal": OPERATOR, "content-type": "application/json", **(headers or {})}
        return self.stack.host.http().request(method, f"/api{path}", content=body, headers=sent)


@pytest.fixture(scope="module")
def fuzzed(azurite: azurite.AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    work = Path(tmp_path_factory.mktemp("api-fuzz"))
    practice, bundle = synthetic_practice(work, 10, 3, part_rows=40)
    with practice_stack(work, practice, azurite) as stack:
        waiting, _ = create_and_start(stack, bundle, name="fuzz")
        view = wait_for_stage(stack, waiting, {"awaiting_mapping_approval"}, timeout=240)
        assert view["runtime_status"] == "Running", view
        fresh = stack.api("POST", "/migrations", json={"name": "fresh", "target": target_for(stack)})
        draft = stack.api("GET", f"/migrations/{waiting}/mapping")["draft"]
        yield Fuzzed(stack, waiting, fresh["migration"]["migration_id"], draft)


def check_answer(response: httpx.Response) -> Any:
    """No 5xx; a refusal is problem+json naming its status and echoing nothing it was sent."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.headers
        body = response.json()
        assert body["status"] == response.status_code and body["type"] and body.get("detail") is not None
        assert MARKER not in response.text
        return body
    return response.json() if response.content else None


def _valid_create(fuzzed: Fuzzed) -> dict[str, Any]:
    return {"name": "practice", "target": target_for(fuzzed.stack)}


def _mutate(data: Any, draw: Any, depth: int = 0) -> Any:
    """`data` with one value somewhere in it replaced, removed or added."""
    if isinstance(data, dict) and data and depth < 6 and draw(st.integers(0, 3), label="descend") > 0:
        key = draw(st.sampled_from(sorted(data)), label="key")
        return {**data, key: _mutate(data[key], draw, depth + 1)}
    if isinstance(data, list) and data and depth < 6 and draw(st.integers(0, 3), label="descend") > 0:
        at = draw(st.integers(0, len(data) - 1), label="at")
        return [*data[:at], _mutate(data[at], draw, depth + 1), *data[at + 1:]]
    action = draw(st.sampled_from(["replace", "remove", "add"]), label="action")
    if action == "remove" and isinstance(data, dict) and data:
        key = draw(st.sampled_from(sorted(data)), label="removed")
        return {k: v for k, v in data.items() if k != key}
    if action == "add" and isinstance(data, dict):
        return {**data, draw(st.text(min_size=1, max_size=8), label="added"): draw(JSON_VALUES, label="value")}
    return draw(JSON_VALUES, label="replacement")


# -- create ------------------------------------------------------------------------------------------

@settings(max_examples=settings().max_examples * 2)
@given(data=st.data())
def test_create_accepts_exactly_the_valid_bodies_and_never_fails_on_any_other(fuzzed: Fuzzed, data: st.DataObject):
    kind = data.draw(st.sampled_from(["mutated", "json", "raw"]), label="kind")
    if kind == "mutated":
        body = json.dumps(_mutate(_valid_create(fuzzed), data.draw)).encode()
    elif kind == "json":
        body = json.dumps(data.draw(JSON_VALUES, label="json")).encode()
    else:
        body = data.draw(RAW_BODIES, label="raw")
    response = fuzzed.call("POST", "/migrations", body)
    check_answer(response)
    try:
        CreateMigrationRequest.model_validate_json(body or b"{}")
        valid = True
    except (ValidationError, ValueError):
        valid = False
    assert (response.status_code == 201) == valid, f"{response.status_code} for a {'valid' if valid else 'bad'} body"


HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
"""What an HTTP header value may hold (visible ASCII and spaces): anything else never reaches the app."""


@given(key=st.text(alphabet=HEADER_TEXT, max_size=140).filter(lambda k: k == k.strip() and k != ""))
@example(key="a" * 129)
@example(key="key with spaces")
def test_an_idempotency_key_is_honoured_or_refused_never_ignored(fuzzed: Fuzzed, key: str):
    import re

    from shared.state.idempotency import KEY_PATTERN

    response = fuzzed.call("POST", "/migrations", json.dumps(_valid_create(fuzzed)).encode(),
                           {"idempotency-key": key})
    check_answer(response)
    if re.fullmatch(KEY_PATTERN, key):
        assert response.status_code == 201
    else:
        assert response.status_code == 400 and "Idempotency-Key" in response.json()["detail"]


# -- the field map -----------------------------------------------------------------------------------

@settings(max_examples=settings().max_examples * 2)
@given(data=st.data())
@example(data=None)
def test_a_map_edit_is_stored_as_sent_or_refused_never_a_crash(fuzzed: Fuzzed, data: st.DataObject | None):
    if data is None:  # regression: a non-integer `version` raised out of save_draft (a 500)
        sent = {**fuzzed.draft, "version": "two"}
        body = json.dumps(sent).encode()
    elif data.draw(st.integers(0, 9), label="raw") == 0:
        body, sent = data.draw(RAW_BODIES, label="body"), None
    else:
        sent = _mutate(fuzzed.draft, data.draw)
        body = json.dumps(sent).encode()
    response = fuzzed.call("PUT", f"/migrations/{fuzzed.waiting}/mapping", body)
    answer = check_answer(response)
    if response.status_code >= 400:
        assert response.status_code in (400, 413, 422), response.status_code
        return
    stored = fuzzed.stack.api("GET", f"/migrations/{fuzzed.waiting}/mapping")["draft"]
    assert stored["version"] == answer["version"]
    assert isinstance(sent, dict)
    # Stored as sent: every table map the edit sent is stored with its content (pydantic may add
    # defaults the edit left out, but never drops or changes what was sent).
    for table in sent.get("tables") or []:
        match = next(t for t in stored["tables"] if t["name"] == table["name"])
        for key, value in table.items():
            assert match[key] == value or key == "fields", f"table {table['name']} {key} changed on save"


def test_the_draft_can_be_put_back_after_the_fuzzing(fuzzed: Fuzzed):
    response = fuzzed.call("PUT", f"/migrations/{fuzzed.waiting}/mapping", json.dumps(fuzzed.draft).encode())
    assert check_answer(response)["version"] >= 1


@given(body=st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), RAW_BODIES))
def test_a_map_edit_of_a_migration_without_discovery_is_refused_cleanly(fuzzed: Fuzzed, body: bytes):
    response = fuzzed.call("PUT", f"/migrations/{fuzzed.fresh}/mapping", body)
    check_answer(response)
    assert response.status_code >= 400


# -- approvals -----------------------------------------------------------------------------------------

APPROVALS = ["/mapping/approve", "/schema-plan/approve", "/sample/approve", "/sample/reject", "/start"]


@settings(max_examples=settings().max_examples * 2)
@given(route=st.sampled_from(APPROVALS), body=st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                                                       RAW_BODIES))
def test_approvals_with_any_body_never_crash_and_never_approve_the_map_by_accident(
        fuzzed: Fuzzed, route: str, body: bytes):
    if body.strip() in (b"", b"{}") and route in ("/mapping/approve", "/sample/approve", "/sample/reject"):
        body = b'{"approve": true}'  # the one body these take would really approve: not a fuzz case
    response = fuzzed.call("POST", f"/migrations/{fuzzed.waiting}{route}", body)
    check_answer(response)
    assert response.status_code >= 400, f"{route} accepted a fuzzed body"
    view = fuzzed.stack.api("GET", f"/migrations/{fuzzed.waiting}")
    assert (view.get("custom_status") or {}).get("stage") == "awaiting_mapping_approval"


# -- identity and paths ----------------------------------------------------------------------------------

PRINCIPALS = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
    JSON_VALUES.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.lists(st.fixed_dictionaries({"typ": JSON_SCALARS, "val": JSON_SCALARS}), max_size=4).map(
        lambda claims: base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()),
)


@given(principal=PRINCIPALS, path=st.sampled_from(["/migrations", "/migrations/{id}", "/migrations/{id}/mapping"]))
def test_a_malformed_principal_is_refused_not_a_crash(fuzzed: Fuzzed, principal: str, path: str):
    if any(ord(c) < 32 or ord(c) > 126 for c in principal) or principal != principal.strip():
        principal = base64.b64encode(principal.encode("utf-8", "replace")).decode()
    response = fuzzed.call("GET", path.replace("{id}", fuzzed.waiting), headers={"x-ms-client-principal": principal})
    check_answer(response)


@given(migration_id=st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%\\"), max_size=30))
@example(migration_id="m-0000000000000000")
def test_any_migration_id_in_the_path_is_a_clean_400_or_404(fuzzed: Fuzzed, migration_id: str):
    if not migration_id.strip() or any(ord(c) < 33 for c in migration_id):
        return
    response = fuzzed.call("GET", f"/migrations/{migration_id}")
    check_answer(response)
    assert response.status_code in (400, 404)


def test_the_fuzzed_migration_still_waits_for_its_map_approval(fuzzed: Fuzzed):
    deadline = time.monotonic() + 30
    view = fuzzed.stack.api("GET", f"/migrations/{fuzzed.waiting}")
    while time.monotonic() < deadline and view.get("runtime_status") != "Running":
        time.sleep(0.2)
        view = fuzzed.stack.api("GET", f"/migrations/{fuzzed.waiting}")
    assert view["runtime_status"] == "Running"
    assert view["custom_status"]["stage"] == "awaiting_mapping_approval"
