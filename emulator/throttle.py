"""Service protection per application user (MS-doc api-limits): requests and summed execution time in a sliding
window, concurrent requests, 429 with Retry-After and the real codes, and the computable throughput bound.

A bulk or batch call is admitted as one request; its execution time (per request + per record) is added when it
completes. All limits are read from the live config, so tests can change them at runtime.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulator import errors
from emulator.config import EmulatorConfig
from emulator.errors import ApiError


def _fresh_counters() -> dict[str, Any]:
    return {"requests": 0, "throttled": 0, "throttled_by_code": {}, "execution_seconds": 0.0, "records": 0,
            "max_in_flight": 0, "affinity_cookie_requests": 0, "early_requests": 0, "errors": 0}


@dataclass
class UserBudget:
    """One application user's budget on one web server (limits are evaluated per user and per server)."""

    requests: deque[float] = field(default_factory=deque)
    """Emulated arrival time of each admitted request inside the window."""
    executions: deque[tuple[float, float]] = field(default_factory=deque)
    """(emulated completion time, emulated execution seconds)."""
    execution_sum: float = 0.0
    in_flight: int = 0


@dataclass
class UserStats:
    """Per application user, all servers together: what a test or benchmark reads."""

    counters: dict[str, Any] = field(default_factory=_fresh_counters)
    in_flight: int = 0
    retry_deadline: float = 0.0
    """Real time before which the last 429's Retry-After said not to come back."""


class Governor:
    """Admission control for Dataverse requests."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.budgets: dict[tuple[str, int], UserBudget] = {}
        self.stats: dict[str, UserStats] = {}

    def budget(self, user: str, server: int = 0) -> UserBudget:
        return self.budgets.setdefault((user, server), UserBudget())

    def user(self, user: str) -> UserStats:
        return self.stats.setdefault(user, UserStats())

    def _prune(self, b: UserBudget, now: float) -> None:
        horizon = now - self.config.limits.window_seconds
        while b.requests and b.requests[0] <= horizon:
            b.requests.popleft()
        while b.executions and b.executions[0][0] <= horizon:
            b.execution_sum -= b.executions.popleft()[1]
        if not b.executions:
            b.execution_sum = 0.0

    def admit(self, user: str, now: float, server: int = 0) -> None:
        """Count the request in, or raise the 429 Dataverse would answer."""
        lim = self.config.limits
        b, st = self.budget(user, server), self.user(user)
        self._prune(b, now)
        if time.time() < st.retry_deadline:
            st.counters["early_requests"] += 1
        if b.in_flight >= lim.max_concurrent:
            self._throttle(st, errors.CONCURRENCY,
                           f"Number of concurrent requests exceeded the limit of {lim.max_concurrent}.",
                           max(self.config.costs.per_request_seconds, 0.001))
        if len(b.requests) >= lim.max_requests:
            wait = b.requests[0] + lim.window_seconds - now
            self._throttle(st, errors.TOO_MANY_REQUESTS,
                           f"Number of requests exceeded the limit of {lim.max_requests} over time window of "
                           f"{int(lim.window_seconds)} seconds.", wait)
        if b.execution_sum >= lim.max_execution_seconds:
            excess, wait = b.execution_sum - lim.max_execution_seconds, 0.0
            for t, secs in b.executions:
                excess -= secs
                wait = t + lim.window_seconds - now
                if excess < 0:
                    break
            self._throttle(st, errors.EXECUTION_TIME,
                           "Combined execution time of incoming requests exceeded limit of "
                           f"{int(lim.max_execution_seconds * 1000):,} milliseconds over time window of "
                           f"{int(lim.window_seconds)} seconds.", wait)
        b.requests.append(now)
        b.in_flight += 1
        st.in_flight += 1
        st.counters["requests"] += 1
        st.counters["max_in_flight"] = max(st.counters["max_in_flight"], st.in_flight)

    def _throttle(self, st: UserStats, code: str, message: str, wait_emulated: float) -> None:
        real_wait = max(wait_emulated, 0.0) / self.config.time_scale
        st.retry_deadline = max(st.retry_deadline, time.time() + real_wait)
        st.counters["throttled"] += 1
        by_code = st.counters["throttled_by_code"]
        by_code[code] = by_code.get(code, 0) + 1
        # Retry-After is whole seconds in HTTP; the precise value is in an emulator-only header.
        retry_after = f"{real_wait + 0.0005:.3f}" if self.config.fractional_retry_after \
            else str(max(1, math.ceil(real_wait)))
        raise ApiError(429, code, message, {
            "Retry-After": retry_after,
            "x-ms-emulator-retry-after-ms": str(int(real_wait * 1000) + 1)})

    def release(self, user: str, now: float, execution_seconds: float, records: int, server: int = 0) -> None:
        b, st = self.budget(user, server), self.user(user)
        b.in_flight = max(0, b.in_flight - 1)
        st.in_flight = max(0, st.in_flight - 1)
        b.executions.append((now, execution_seconds))
        b.execution_sum += execution_seconds
        st.counters["execution_seconds"] += execution_seconds
        st.counters["records"] += records

    def headers(self, user: str, now: float, server: int = 0) -> dict[str, str]:
        lim = self.config.limits
        b = self.budget(user, server)
        self._prune(b, now)
        remaining_ms = max(lim.max_execution_seconds - b.execution_sum, 0.0) * 1000
        return {
            "x-ms-dop-hint": str(lim.dop_hint),
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(max(lim.max_requests - len(b.requests), 0)),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{remaining_ms:,.2f}",
        }

    def counters(self, user: str | None = None) -> dict[str, Any]:
        if user is not None:
            return dict(self.user(user).counters)
        return {u: dict(st.counters) for u, st in sorted(self.stats.items())}

    def reset(self) -> None:
        """Forget windows and counters (a fresh environment); requests still in flight stay counted."""
        for b in self.budgets.values():
            b.requests.clear()
            b.executions.clear()
            b.execution_sum = 0.0
        for st in self.stats.values():
            st.counters = _fresh_counters()
            st.retry_deadline = 0.0

    def reset_counters(self) -> None:
        """Zero the statistics only: the windows (the budget already used) are kept, so this grants nothing."""
        for st in self.stats.values():
            st.counters = _fresh_counters()


def request_cost(config: EmulatorConfig, records: int) -> float:
    """Emulated server seconds one request writing `records` rows costs."""
    return config.costs.per_request_seconds + config.costs.per_record_seconds * records


def upper_bound_records_per_second(config: EmulatorConfig, records_per_request: int, app_users: int = 1,
                                   affinity: bool = False) -> float:
    """The most records per *emulated* second any client can write under `config` with requests of this size.

    Per user and web server the request rate is capped three ways: the request-count window (max_requests /
    window), the execution-time window (max_execution_seconds / window / cost of one request) and concurrency
    (max_concurrent / (cost + latency)). A client that drops the affinity cookie spreads over all `web_servers`;
    one that keeps it (`affinity=True`) stays on one. Multiply by `time_scale` for records per real second.
    """
    lim, cost = config.limits, request_cost(config, records_per_request)
    by_count = lim.max_requests / lim.window_seconds
    by_time = lim.max_execution_seconds / lim.window_seconds / cost
    by_concurrency = lim.max_concurrent / (cost + config.costs.network_latency_seconds)
    servers = 1 if affinity else config.web_servers
    return records_per_request * min(by_count, by_time, by_concurrency) * app_users * servers
