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


@dataclass
class UserBudget:
    requests: deque[float] = field(default_factory=deque)
    """Emulated arrival time of each admitted request inside the window."""
    executions: deque[tuple[float, float]] = field(default_factory=deque)
    """(emulated completion time, emulated execution seconds)."""
    execution_sum: float = 0.0
    in_flight: int = 0
    retry_deadline: float = 0.0
    """Real time before which the last 429's Retry-After said not to come back."""
    counters: dict[str, Any] = field(default_factory=lambda: {
        "requests": 0, "throttled": 0, "throttled_by_code": {}, "execution_seconds": 0.0, "records": 0,
        "max_in_flight": 0, "affinity_cookie_requests": 0, "early_requests": 0, "errors": 0})


class Governor:
    """Admission control for Dataverse requests."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.users: dict[str, UserBudget] = {}

    def budget(self, user: str) -> UserBudget:
        return self.users.setdefault(user, UserBudget())

    def _prune(self, b: UserBudget, now: float) -> None:
        horizon = now - self.config.limits.window_seconds
        while b.requests and b.requests[0] <= horizon:
            b.requests.popleft()
        while b.executions and b.executions[0][0] <= horizon:
            b.execution_sum -= b.executions.popleft()[1]
        if not b.executions:
            b.execution_sum = 0.0

    def admit(self, user: str, now: float) -> None:
        """Count the request in, or raise the 429 Dataverse would answer."""
        lim = self.config.limits
        b = self.budget(user)
        self._prune(b, now)
        real_now = time.time()
        if real_now < b.retry_deadline:
            b.counters["early_requests"] += 1
        if b.in_flight >= lim.max_concurrent:
            self._throttle(b, errors.CONCURRENCY,
                           f"Number of concurrent requests exceeded the limit of {lim.max_concurrent}.",
                           max(self.config.costs.per_request_seconds, 0.001))
        if len(b.requests) >= lim.max_requests:
            wait = b.requests[0] + lim.window_seconds - now
            self._throttle(b, errors.TOO_MANY_REQUESTS,
                           f"Number of requests exceeded the limit of {lim.max_requests} over time window of "
                           f"{int(lim.window_seconds)} seconds.", wait)
        if b.execution_sum >= lim.max_execution_seconds:
            excess, wait = b.execution_sum - lim.max_execution_seconds, 0.0
            for t, secs in b.executions:
                excess -= secs
                wait = t + lim.window_seconds - now
                if excess < 0:
                    break
            self._throttle(b, errors.EXECUTION_TIME,
                           "Combined execution time of incoming requests exceeded limit of "
                           f"{int(lim.max_execution_seconds * 1000):,} milliseconds over time window of "
                           f"{int(lim.window_seconds)} seconds.", wait)
        b.requests.append(now)
        b.in_flight += 1
        b.counters["requests"] += 1
        b.counters["max_in_flight"] = max(b.counters["max_in_flight"], b.in_flight)

    def _throttle(self, b: UserBudget, code: str, message: str, wait_emulated: float) -> None:
        real_wait = max(wait_emulated, 0.0) / self.config.time_scale
        b.retry_deadline = max(b.retry_deadline, time.time() + real_wait)
        b.counters["throttled"] += 1
        by_code = b.counters["throttled_by_code"]
        by_code[code] = by_code.get(code, 0) + 1
        # Retry-After is whole seconds in HTTP; the precise value is in an emulator-only header.
        raise ApiError(429, code, message, {
            "Retry-After": str(max(1, math.ceil(real_wait))),
            "x-ms-emulator-retry-after-ms": str(int(real_wait * 1000) + 1)})

    def release(self, user: str, now: float, execution_seconds: float, records: int) -> None:
        b = self.budget(user)
        b.in_flight -= 1
        b.executions.append((now, execution_seconds))
        b.execution_sum += execution_seconds
        b.counters["execution_seconds"] += execution_seconds
        b.counters["records"] += records

    def headers(self, user: str, now: float) -> dict[str, str]:
        lim = self.config.limits
        b = self.budget(user)
        self._prune(b, now)
        remaining_ms = max(lim.max_execution_seconds - b.execution_sum, 0.0) * 1000
        return {
            "x-ms-dop-hint": str(lim.dop_hint),
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(max(lim.max_requests - len(b.requests), 0)),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{remaining_ms:,.2f}",
        }

    def counters(self, user: str | None = None) -> dict[str, Any]:
        if user is not None:
            return dict(self.budget(user).counters)
        return {u: dict(b.counters) for u, b in sorted(self.users.items())}

    def reset(self) -> None:
        self.users = {}


def request_cost(config: EmulatorConfig, records: int) -> float:
    """Emulated server seconds one request writing `records` rows costs."""
    return config.costs.per_request_seconds + config.costs.per_record_seconds * records


def upper_bound_records_per_second(config: EmulatorConfig, records_per_request: int, app_users: int = 1) -> float:
    """The most records per *emulated* second any client can write under `config` with requests of this size.

    Per user the request rate is capped three ways: the request-count window (max_requests / window), the
    execution-time window (max_execution_seconds / window / cost of one request) and concurrency
    (max_concurrent / (cost + latency)). Multiply by `time_scale` for records per real second.
    """
    lim, cost = config.limits, request_cost(config, records_per_request)
    by_count = lim.max_requests / lim.window_seconds
    by_time = lim.max_execution_seconds / lim.window_seconds / cost
    by_concurrency = lim.max_concurrent / (cost + config.costs.network_latency_seconds)
    return records_per_request * min(by_count, by_time, by_concurrency) * app_users
