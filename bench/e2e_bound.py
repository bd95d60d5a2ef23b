"""The computable upper bound of a load under the emulator's service-protection limits, for a run of a given size.

`upper_bound_records_per_second` (emulator/throttle.py) is the steady-state bound: what a client can sustain
once the 5-minute windows are full. A run that is short next to the window does better than that, because
the first window's budget (1,200 s of execution time, 6,000 requests per user) can be spent at the
concurrency limit. `run_bound` gives the least emulated time any client needs for `records` records with
requests of `records_per_request`, from the three limits per application user:

- execution time: the window allows `max_execution_seconds` per `window_seconds`, so a run needing E seconds
  of server time per user needs at least `window * (ceil(E / max_execution) - 1)` (the last window's budget
  can be spent at once; a staircase, not a slope);
- request count: the same with requests per user and `max_requests`;
- concurrency: at most `max_concurrent` requests in flight, each taking its cost plus the network latency.

The bound is the most optimistic of any client (perfect spreading, no retries); the benchmark divides its
measured rate by both this run bound and the steady-state bound.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from emulator.config import EmulatorConfig
from emulator.throttle import request_cost, upper_bound_records_per_second


class Bound(BaseModel):
    steady_records_per_second: float
    """Emulated records/s once the windows are full (emulator.throttle.upper_bound_records_per_second)."""
    run_records_per_second: float
    """Emulated records/s no client can beat for a run of this size (first window's budget included)."""
    min_emulated_seconds: float
    limited_by: str
    """Which limit sets `min_emulated_seconds`: execution_time, request_count or concurrency."""
    server_seconds_per_user: float


def run_bound(config: EmulatorConfig, records: int, records_per_request: int = 1000, app_users: int = 1) -> Bound:
    lim = config.limits
    requests = math.ceil(records / records_per_request) / app_users
    execution = requests * request_cost(config, records_per_request)
    by_time = lim.window_seconds * max(0, math.ceil(execution / lim.max_execution_seconds) - 1)
    by_count = lim.window_seconds * max(0, math.ceil(requests / lim.max_requests) - 1)
    by_concurrency = requests * (request_cost(config, records_per_request)
                                 + config.costs.network_latency_seconds) / lim.max_concurrent
    limits = {"execution_time": by_time, "request_count": by_count, "concurrency": by_concurrency}
    limited_by = max(limits, key=lambda name: limits[name])
    seconds = max(limits.values())
    return Bound(
        steady_records_per_second=upper_bound_records_per_second(config, records_per_request, app_users),
        run_records_per_second=records / seconds if seconds > 0 else math.inf,
        min_emulated_seconds=seconds,
        limited_by=limited_by,
        server_seconds_per_user=execution,
    )
