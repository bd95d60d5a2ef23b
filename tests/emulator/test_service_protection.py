"""§11 Service protection: per-user sliding windows (requests, execution time), concurrency, 429 + Retry-After
with the real codes, rate-limit headers, affinity cookie, per-user budgets, the computable upper bound.

The session emulator runs 1,000x: a window of 2,000 emulated seconds lasts 2 real seconds, long enough that a
slow, shared machine still sends the test's few requests inside one window.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from emulator.config import EmulatorConfig
from emulator.testing import RunningEmulator
from emulator.throttle import upper_bound_records_per_second
from tests.emulator.helpers import ok


def _client(emu: RunningEmulator, user: str = "app-1") -> httpx.Client:
    return httpx.Client(base_url=emu.api_url, headers=emu.headers_for(user), timeout=30)


def _wait_retry_after(r: httpx.Response) -> None:
    time.sleep(int(r.headers["x-ms-emulator-retry-after-ms"]) / 1000 + 0.01)


def test_request_count_limit_gives_429_then_recovers_after_retry_after(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 5, "window_seconds": 2000.0})
    with _client(emu) as c:
        for _ in range(5):
            ok(c.get("WhoAmI"), 200)
        r = c.get("WhoAmI")
        assert r.status_code == 429
        assert r.json()["error"] == {"code": "0x80072322", "message": "Number of requests exceeded the limit of 5 "
                                     "over time window of 2000 seconds."}
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert 0 < int(r.headers["x-ms-emulator-retry-after-ms"]) <= 2001
        assert emu.counters("app-1")["requests"] == 5  # a refused request is not counted in
        _wait_retry_after(r)
        ok(c.get("WhoAmI"), 200)
    counters = emu.counters("app-1")
    assert counters["throttled"] == 1 and counters["throttled_by_code"] == {"0x80072322": 1}


def test_execution_time_limit_counts_records_of_one_bulk_call(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_execution_seconds": 1.0, "window_seconds": 2000.0},
                  costs={"per_request_seconds": 0.05, "per_record_seconds": 0.01})
    targets = [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "x"} for _ in range(200)]
    with _client(emu) as c:
        ok(c.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}), 200)
        r = c.get("WhoAmI")
        assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072321"
        assert "1,000 milliseconds" in r.json()["error"]["message"]
        _wait_retry_after(r)
        ok(c.get("WhoAmI"), 200)
    assert emu.counters("app-1")["execution_seconds"] == pytest.approx(2.05 + 0.05)


def test_concurrency_limit_is_immediate(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_concurrent": 2}, costs={"per_request_seconds": 1000.0})  # 1 s per request
    results: list[httpx.Response] = []

    def call() -> None:
        with _client(emu) as c:
            results.append(c.get("WhoAmI"))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 1 and codes.count(429) >= 1
    assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {"0x80072326"}
    assert emu.counters("app-1")["max_in_flight"] <= 2


def test_each_application_user_has_its_own_budget(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 3, "window_seconds": 2000.0})
    with _client(emu, "app-1") as a, _client(emu, "app-2") as b:
        for _ in range(3):
            ok(a.get("WhoAmI"), 200)
        assert a.get("WhoAmI").status_code == 429
        for _ in range(3):
            ok(b.get("WhoAmI"), 200)
        assert b.get("WhoAmI").status_code == 429
    assert emu.counters("app-1")["throttled"] == 1 and emu.counters("app-2")["throttled"] == 1


def test_rate_limit_headers_and_dop_hint(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 100, "window_seconds": 2000.0, "dop_hint": 7})
    with _client(emu) as c:
        first = c.get("WhoAmI")
        second = c.get("WhoAmI")
    assert first.headers["x-ms-dop-hint"] == "7"
    assert int(first.headers["x-ms-ratelimit-burst-remaining-xrm-requests"]) == 99
    assert int(second.headers["x-ms-ratelimit-burst-remaining-xrm-requests"]) == 98
    remaining_ms = float(second.headers["x-ms-ratelimit-time-remaining-xrm-requests"].replace(",", ""))
    assert remaining_ms == pytest.approx((1200 - 2 * 0.05) * 1000)


def test_affinity_cookie_is_set_and_sending_it_back_is_counted(emu: RunningEmulator) -> None:
    with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1")) as keeps_cookies:
        r = keeps_cookies.get("WhoAmI")
        assert "ARRAffinity=" in r.headers["set-cookie"]
        keeps_cookies.get("WhoAmI")
    assert emu.counters("app-1")["affinity_cookie_requests"] == 1
    with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-2"),
                      cookies=None) as c:
        c.get("WhoAmI")
        c.cookies.clear()
        c.get("WhoAmI")
    assert emu.counters("app-2")["affinity_cookie_requests"] == 0
    emu.configure(affinity_cookie=False)
    assert "set-cookie" not in httpx.get(emu.api_url + "WhoAmI", headers=emu.headers_for("app-3")).headers


def test_requests_before_retry_after_are_counted_as_early(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 1, "window_seconds": 2000.0})
    with _client(emu) as c:
        ok(c.get("WhoAmI"), 200)
        r = c.get("WhoAmI")
        assert r.status_code == 429
        assert c.get("WhoAmI").status_code == 429
        assert emu.counters("app-1")["early_requests"] == 1
        _wait_retry_after(r)
        ok(c.get("WhoAmI"), 200)
    assert emu.counters("app-1")["early_requests"] == 1


def test_upper_bound_is_the_tightest_of_the_three_limits() -> None:
    cfg = EmulatorConfig()
    # 1 record per request: the request-count window binds (6,000 / 300 s = 20 requests/s).
    assert upper_bound_records_per_second(cfg, 1) == pytest.approx(20.0)
    # 1,000 per request: execution time binds (1,200 s / 300 s = 4 server-seconds/s; 10.05 s per request).
    assert upper_bound_records_per_second(cfg, 1000) == pytest.approx(1000 * 4 / 10.05)
    assert upper_bound_records_per_second(cfg, 1000, app_users=2) == pytest.approx(2000 * 4 / 10.05)
    slow = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"max_concurrent": 1})})
    # one slot: 1 / (0.06 s + 0.02 s latency) = 12.5 requests/s
    assert upper_bound_records_per_second(slow, 1) == pytest.approx(12.5)


def test_resetting_counters_grants_no_new_budget(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 2, "window_seconds": 2000.0})
    with _client(emu) as c:
        ok(c.get("WhoAmI"), 200)
        ok(c.get("WhoAmI"), 200)
        emu.reset_counters()
        assert emu.counters("app-1")["requests"] == 0
        assert c.get("WhoAmI").status_code == 429
        emu.reset()  # a fresh environment does start with an empty window
        ok(c.get("WhoAmI"), 200)


def test_fractional_retry_after_when_asked(emu: RunningEmulator) -> None:
    emu.configure(limits={"max_requests": 1, "window_seconds": 2000.0}, fractional_retry_after=True)
    with _client(emu) as c:
        ok(c.get("WhoAmI"), 200)
        r = c.get("WhoAmI")
    assert r.status_code == 429
    assert 0 < float(r.headers["Retry-After"]) <= 2.001 and "." in r.headers["Retry-After"]


def test_limits_are_per_web_server_and_the_affinity_cookie_pins_one(emu: RunningEmulator) -> None:
    emu.configure(web_servers=2, limits={"max_requests": 3, "window_seconds": 2000.0})
    with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1")) as sticky:
        codes = [sticky.get("WhoAmI").status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429  # 3 requests of one server's budget, then throttled
    emu.reset()
    with httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-2")) as spread:
        codes = []
        for _ in range(7):
            spread.cookies.clear()  # what a client that disables affinity does
            codes.append(spread.get("WhoAmI").status_code)
    assert codes.count(200) == 6 and codes[-1] == 429  # two servers: twice the budget
    cfg = EmulatorConfig(web_servers=3)
    assert upper_bound_records_per_second(cfg, 1) == pytest.approx(60.0)
    assert upper_bound_records_per_second(cfg, 1, affinity=True) == pytest.approx(20.0)
