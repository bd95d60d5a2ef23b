"""The governor's account of time held back on Retry-After (what the benchmark reports): overlapping
429s of one user are counted once, and every 429 leaves one log line with numbers only."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.dataverse.governor import Governor, GovernorConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_blocks_are_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    governor = Governor(GovernorConfig(retry_after_margin=0.0), clock=clock)

    async def go() -> None:
        governor.block_now(2.0)  # the transport sees the 429's headers first: blocked until 102
        await governor.throttled_for(2.0)  # then the client: the same block, not two seconds more
        clock.now = 101.0
        await governor.throttled_for(3.0)  # a second 429 one second in: blocked until 104, +2 s
        clock.now = 110.0
        await governor.throttled_for(1.0)  # after the block ended: +1 s

    with caplog.at_level(logging.INFO, logger="bridgework.dataverse.governor"):
        asyncio.run(go())
    assert governor.throttled == 3
    assert governor.held_back_seconds == pytest.approx(5.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "bridgework.dataverse.governor"]
    assert lines == ["dataverse 429: retry_after=2.000 held_back=2.000",
                     "dataverse 429: retry_after=3.000 held_back=2.000",
                     "dataverse 429: retry_after=1.000 held_back=1.000"]
