"""shared/pipeline/in_flight.py: the process's budget of bundle bytes its load batches hold at once."""

from __future__ import annotations

import asyncio
import random

import pytest

from shared.pipeline.in_flight import Budget, budget_for


async def _holder(budget: Budget, got: list[str], release: asyncio.Event, name: str, weight: int) -> None:
    """Holds `weight`, notes its name once granted, and keeps it until `release` is set."""
    async with budget.hold(weight):
        got.append(name)
        await release.wait()


def test_holders_never_exceed_the_budget_and_all_finish() -> None:
    budget = Budget(20_000)
    held, most = 0, 0
    sizes = [random.Random(seed).choice([0, 120, 3_000, 5_000, 5_000, 20_000]) for seed in range(60)]

    async def batch(weight: int) -> None:
        nonlocal held, most
        async with budget.hold(weight) as granted:
            held += granted
            most = max(most, held)
            await asyncio.sleep(0.001 * (weight % 7))
            held -= granted

    async def run() -> None:
        await asyncio.gather(*(batch(weight) for weight in sizes))

    asyncio.run(run())
    assert most <= 20_000
    assert most > 5_000, "parts that fit together ran together"
    assert held == 0 and budget.free == 20_000 and budget.waiting == 0


def test_a_large_part_is_served_before_small_ones_that_came_after_it() -> None:
    budget = Budget(10_000)
    order: list[str] = []

    async def run() -> None:
        first_done, big_done, small_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_holder(budget, order, first_done, "first", 6_000))
        await asyncio.sleep(0)
        big = asyncio.create_task(_holder(budget, order, big_done, "big", 8_000))
        await asyncio.sleep(0)
        small = asyncio.create_task(_holder(budget, order, small_done, "small", 1_000))  # would fit now, but comes after big
        await asyncio.sleep(0.01)
        assert order == ["first"] and budget.waiting == 2
        first_done.set()
        await asyncio.sleep(0.01)
        assert order == ["first", "big", "small"]  # big first, then small fits beside it
        big_done.set()
        small_done.set()
        await asyncio.gather(first, big, small)

    asyncio.run(run())
    assert budget.free == 10_000


def test_a_part_larger_than_the_budget_runs_alone() -> None:
    budget = Budget(5_000)

    async def run() -> tuple[int, int]:
        async with budget.hold(12_000) as granted:
            return granted, budget.free

    assert asyncio.run(run()) == (5_000, 0)
    assert budget.free == 5_000


def test_a_cancelled_waiter_takes_nothing_and_lets_the_next_one_go() -> None:
    budget = Budget(10_000)

    async def run() -> list[str]:
        got: list[str] = []
        release = asyncio.Event()

        first = asyncio.create_task(_holder(budget, got, release, "first", 4_000))
        await asyncio.sleep(0)
        big = asyncio.create_task(_holder(budget, got, release, "big", 10_000))  # waits for first
        await asyncio.sleep(0)
        small = asyncio.create_task(_holder(budget, got, release, "small", 2_000))  # waits behind big
        await asyncio.sleep(0.01)
        big.cancel()
        await asyncio.sleep(0.01)
        assert got == ["first", "small"], "with big gone, small fits beside first"
        release.set()
        await asyncio.gather(first, small)
        with pytest.raises(asyncio.CancelledError):
            await big
        return got

    assert asyncio.run(run()) == ["first", "small"]
    assert budget.free == 10_000 and budget.waiting == 0


def test_each_event_loop_has_its_own_budget_and_a_bad_size_is_refused() -> None:
    async def get() -> Budget:
        return budget_for(300)

    one, two = asyncio.run(get()), asyncio.run(get())
    assert one is not two and one.size == two.size == 300
    with pytest.raises(ValueError, match="at least 1"):
        Budget(0)


def test_a_waiter_cancelled_just_as_it_is_granted_gives_its_share_back() -> None:
    budget = Budget(10_000)

    async def run() -> tuple[int, list[str]]:
        got: list[str] = []
        release = asyncio.Event()

        async def first_then_cancel_big() -> None:
            async with budget.hold(10_000):
                await asyncio.sleep(0.01)
            # Leaving the block granted big its turn; it is cancelled before it could resume.
            big.cancel()

        first = asyncio.create_task(first_then_cancel_big())
        await asyncio.sleep(0)
        big = asyncio.create_task(_holder(budget, got, release, "big", 8_000))
        await asyncio.sleep(0)
        await first
        with pytest.raises(asyncio.CancelledError):
            await big
        free_after_cancel = budget.free
        if free_after_cancel != budget.size:  # the next holder would wait forever
            return free_after_cancel, got
        small = asyncio.create_task(_holder(budget, got, release, "small", 10_000))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(small, 2)
        return free_after_cancel, got

    free_after_cancel, got = asyncio.run(run())
    assert free_after_cancel == 10_000, "the cancelled grant was returned"
    assert got == ["small"] and budget.free == 10_000
