"""The load's transform context is built once per process, however many batches ask for it at once.

The first batches of a stage start together (8 at once); each used to build its own context, reading the
patient and parent tables that many times and holding that many copies at the same time.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from shared.pipeline import load


class Builds(list):
    """The keys of the builds started, in order; `fail_next` lists migrations whose next build fails."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next: list[str] = []


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Builds:
    """Replaces the build with one that takes a while (as its bundle reads do) and counts its calls."""
    started = Builds()
    failures = started.fail_next

    async def build(rt: Any, migration: Any, client: Any, reader: Any, spec: Any,
                    cache_key: tuple[str, int, str]) -> Any:
        started.append(cache_key)
        await asyncio.sleep(0.05)
        if migration.migration_id in failures:
            failures.remove(migration.migration_id)
            raise RuntimeError("bundle read failed")
        context = SimpleNamespace(key=cache_key)
        load._CONTEXTS[cache_key] = context
        return context

    monkeypatch.setattr(load, "_build_context", build)
    monkeypatch.setattr(load, "_CONTEXTS", {})
    monkeypatch.setattr(load, "_BUILDING", {})
    return started


def _migration(migration_id: str) -> Any:
    return SimpleNamespace(migration_id=migration_id, mapping_version=1, bundle_id="b-1")


def test_batches_that_start_together_share_one_build(builds: Builds) -> None:
    async def eight_batches() -> list[Any]:
        return await asyncio.gather(*(load._context(None, _migration("m-1"), None, None, None)  # type: ignore[arg-type]
                                       for _ in range(8)))

    contexts = asyncio.run(eight_batches())
    assert builds == [("m-1", 1, "b-1")]
    assert all(context is contexts[0] for context in contexts)
    assert not load._BUILDING, "a finished build is not kept as in progress"


def test_a_failed_build_fails_its_waiters_and_the_next_call_builds_again(builds: Builds) -> None:
    builds.fail_next.append("m-2")

    async def three_batches() -> list[Any]:
        return await asyncio.gather(*(load._context(None, _migration("m-2"), None, None, None)  # type: ignore[arg-type]
                                       for _ in range(3)), return_exceptions=True)

    outcomes = asyncio.run(three_batches())
    assert len(builds) == 1 and all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    retried = asyncio.run(load._context(None, _migration("m-2"), None, None, None))  # type: ignore[arg-type]
    assert len(builds) == 2 and retried.key == ("m-2", 1, "b-1")


def test_one_waiting_batch_cancelled_leaves_the_build_to_the_others(builds: Builds) -> None:
    async def one_cancelled() -> Any:
        first = asyncio.create_task(load._context(None, _migration("m-3"), None, None, None))  # type: ignore[arg-type]
        second = asyncio.create_task(load._context(None, _migration("m-3"), None, None, None))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        first.cancel()
        return await second

    context = asyncio.run(one_cancelled())
    assert builds == [("m-3", 1, "b-1")] and context.key == ("m-3", 1, "b-1")
