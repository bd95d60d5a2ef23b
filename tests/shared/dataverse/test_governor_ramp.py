"""How fast the governor's concurrency grows: to `x-ms-dop-hint` at the first hint, doubling per round
trip while no hint has come (slow start), by one per round trip after a 429, never above the hint."""

from __future__ import annotations

import asyncio

from shared.dataverse.governor import Governor, GovernorConfig


def _answers_to_reach(governor: Governor, limit: int) -> int:
    answers = 0
    while governor.limit < limit:
        governor.succeeded()
        answers += 1
        assert answers < 1_000, "never reached"
    return answers


def test_the_first_hint_sets_the_concurrency_at_once() -> None:
    governor = Governor(GovernorConfig(initial_concurrency=4))
    assert governor.limit == 4
    governor.observe("16")
    assert governor.limit == 16
    for _ in range(50):
        governor.succeeded()
    assert governor.limit == 16  # never above the hint
    governor.observe("6")  # a lower hint later lowers it
    assert governor.limit == 6


def test_without_a_hint_concurrency_doubles_per_round_trip_up_to_the_cap() -> None:
    governor = Governor(GovernorConfig(initial_concurrency=4, max_concurrency=16))
    governor.observe(None)
    assert _answers_to_reach(governor, 8) == 4
    assert _answers_to_reach(governor, 16) == 8
    for _ in range(50):
        governor.succeeded()
    assert governor.limit == 16


def test_after_a_429_it_halves_and_grows_by_one_per_round_trip() -> None:
    governor = Governor(GovernorConfig(initial_concurrency=16, retry_after_margin=0.0))
    governor.observe("16")
    asyncio.run(governor.throttled_for(0.0))
    assert governor.limit == 8
    # about `limit` answers (one round trip at that concurrency) per slot, not one answer per slot
    assert 8 <= _answers_to_reach(governor, 9) <= 9
    assert 9 <= _answers_to_reach(governor, 10) <= 10
