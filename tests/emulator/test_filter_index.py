"""`$filter` on an Active alternate key is answered from the key's index, with the same rows a scan finds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emulator import records
from emulator.odata import KeyHint, parse_filter
from tests.emulator.helpers import add_source_key, ok

ROWS = 40


def _hints(text: str) -> tuple[KeyHint, ...]:
    return parse_filter(text, lambda name: None).hints


def test_hints_follow_the_filter_logic() -> None:
    one = KeyHint("bw_sourceid", frozenset({"p-1"}))
    assert _hints("bw_sourceid eq 'P-1'") == (one,)
    assert _hints("'P-1' eq bw_sourceid") == (one,)
    assert _hints("Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=['A','b'])") == \
        (KeyHint("bw_sourceid", frozenset({"a", "b"})),)
    # `and`: each side narrows; `or`: only where both sides narrow the same property.
    assert _hints("lastname eq 'A' and bw_sourceid eq 'P-1'") == (KeyHint("lastname", frozenset({"a"})), one)
    assert _hints("bw_sourceid eq 'P-1' or bw_sourceid eq 'P-2'") == \
        (KeyHint("bw_sourceid", frozenset({"p-1", "p-2"})),)
    for text in ("bw_sourceid eq 'P-1' or lastname eq 'A'",
                 "Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=['P-1',null])", "not (bw_sourceid eq 'P-1')", "bw_sourceid ne 'P-1'",
                 "bw_sourceid eq null", "bw_sourceid gt 'P-1'", "startswith(bw_sourceid,'P-1')", "lastname eq firstname"):
        assert _hints(text) == (), text


@pytest.fixture
def keyed(api: httpx.Client) -> dict[str, str]:
    """ROWS contacts with an Active key on bw_sourceid; returns source id -> contactid."""
    add_source_key(api, "contact")
    ids = {}
    for n in range(ROWS):
        r = ok(api.patch(f"contacts(bw_sourceid='P-{n}')", json={"lastname": "A" if n % 2 else "B"},
                         headers={"Prefer": "return=representation"}), 201)
        ids[f"P-{n}"] = r.json()["contactid"]
    return ids


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per row the emulator tested against a filter (it builds each tested row's output view)."""
    tested: list[int] = []
    view = records.output_view

    def counting(store: Any, e: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        tested.append(1)
        return view(store, e, row)

    monkeypatch.setattr(records, "output_view", counting)
    return tested


def _all(api: httpx.Client, flt: str, page: int | None = None) -> list[str]:
    headers = {"Prefer": f"odata.maxpagesize={page}"} if page else {}
    url: str | None = "contacts"
    params: dict[str, str] | None = {"$select": "bw_sourceid", "$filter": flt}
    out: list[str] = []
    while url:
        body = ok(api.get(url, params=params, headers=headers), 200).json()
        out += [row["bw_sourceid"] for row in body["value"]]
        url, params = body.get("@odata.nextLink"), None
    return out


@pytest.mark.parametrize(("flt", "expected"), [
    ("Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=['P-1','p-2','P-999'])", {"P-1", "P-2"}),
    ("bw_sourceid eq 'P-3' and lastname eq 'A'", {"P-3"}),
    ("bw_sourceid eq 'P-4' and lastname eq 'A'", set()),
    ("bw_sourceid eq 'P-5' or bw_sourceid eq 'P-6'", {"P-5", "P-6"}),
    ("bw_sourceid eq 'P-7' or lastname eq 'B'", {"P-7"} | {f"P-{n}" for n in range(0, ROWS, 2)}),
    ("not (bw_sourceid eq 'P-8')", {f"P-{n}" for n in range(ROWS)} - {"P-8"}),
])
def test_keyed_filters_find_what_a_scan_finds(api: httpx.Client, keyed: dict[str, str], flt: str,
                                              expected: set[str]) -> None:
    found = _all(api, flt)
    assert len(found) == len(set(found))
    assert set(found) == expected


def test_keyed_in_reads_only_the_named_rows_and_pages_without_repeats(
        api: httpx.Client, keyed: dict[str, str], seen: list[int]) -> None:
    wanted = [f"P-{n}" for n in range(0, 30, 3)]
    flt = ("Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=["
           + ",".join(f"'{w}'" for w in wanted) + "])")
    found = _all(api, flt, page=3)
    assert sorted(found) == sorted(wanted)  # four pages, each row once
    # Each of the four page requests tests only the ten indexed rows, never the other thirty.
    assert len(seen) == 4 * len(wanted)
    seen.clear()
    assert len(_all(api, "lastname eq 'A'")) == ROWS // 2
    assert len(seen) == ROWS  # no key on lastname: a scan


def test_a_null_among_in_values_finds_the_rows_without_a_value(api: httpx.Client, keyed: dict[str, str]) -> None:
    ok(api.post("contacts", json={"lastname": "N"}), 204)  # no bw_sourceid: in no key index
    flt = "Microsoft.Dynamics.CRM.In(PropertyName='bw_sourceid',PropertyValues=['P-1',null])"
    body = ok(api.get("contacts", params={"$select": "lastname,bw_sourceid", "$filter": flt}), 200).json()
    assert sorted((r["bw_sourceid"] or "", r["lastname"]) for r in body["value"]) == [("", "N"), ("P-1", "A")]


def test_top_takes_the_same_rows_whether_the_index_or_a_scan_finds_them(
        api: httpx.Client, keyed: dict[str, str]) -> None:
    wanted = [f"P-{n}" for n in range(0, ROWS, 4)]
    keyed_filter = " or ".join(f"bw_sourceid eq '{w}'" for w in wanted)
    scanned_filter = keyed_filter + " or lastname eq 'nobody'"  # another property: no hint, every row tested

    def first(flt: str) -> list[str]:
        body = ok(api.get("contacts", params={"$select": "contactid", "$filter": flt, "$top": "3"}), 200).json()
        return [r["contactid"] for r in body["value"]]

    assert first(keyed_filter) == first(scanned_filter) == sorted(keyed[w] for w in wanted)[:3]


def test_a_filter_on_the_primary_id_reads_only_the_named_rows(
        api: httpx.Client, keyed: dict[str, str], seen: list[int]) -> None:
    """As the writer reads which rows exist by their primary ids (tables without a source key): from the rows
    stored by id, not by testing every row; ids match whatever their case, an id named twice finds its row once,
    and the rest of the filter holds."""
    wanted = {f"P-{n}": keyed[f"P-{n}"] for n in (1, 2, 3)}
    values = [wanted["P-1"].upper(), wanted["P-2"], wanted["P-3"], wanted["P-3"], "00000000-0000-0000-0000-000000000000"]
    flt = "Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=[" + ",".join(
        f"'{v}'" for v in values) + "])"
    assert sorted(_all(api, flt)) == ["P-1", "P-2", "P-3"]
    assert len(seen) == 3
    assert _all(api, flt + " and lastname eq 'A'") == ["P-1", "P-3"]
    seen.clear()
    assert _all(api, f"contactid eq '{wanted['P-2']}'") == ["P-2"] and len(seen) == 1
