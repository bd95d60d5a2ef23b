"""One emulator per test session (thread mode, time-scaled), reset to a fresh environment before each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.config import EmulatorConfig
from emulator.testing import RunningEmulator, run_emulator

# 1,000x: a 5-minute window is 0.3 s, a 10 s key build 10 ms, a 1 s metadata write 1 ms.
FAST = EmulatorConfig(time_scale=1000.0)


@pytest.fixture(scope="session")
def emu_server() -> Iterator[RunningEmulator]:
    with run_emulator(FAST) as emu:
        yield emu


@pytest.fixture
def emu(emu_server: RunningEmulator) -> RunningEmulator:
    emu_server.configure(**FAST.model_dump())
    emu_server.reset()
    return emu_server


@pytest.fixture
def api(emu: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.api_url, headers={**emu.headers_for("app-1"), "Accept": "application/json",
                                                     "OData-Version": "4.0", "OData-MaxVersion": "4.0"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def graph(emu: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.graph_url + "/", headers=emu.headers_for("app-1", graph=True),
                      timeout=30) as client:
        yield client
