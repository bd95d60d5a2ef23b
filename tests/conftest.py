"""Fixtures shared by every test layer: a real Azurite per test session, fresh names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devtools import azurite as azurite_launcher


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_launcher.AzuriteProcess]:
    """One real Azurite (npm), in memory on free loopback ports, for the whole test session."""
    running = azurite_launcher.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite: azurite_launcher.AzuriteProcess) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A fresh lowercase name usable as a container, table suffix or task hub in one test."""
    return "t" + uuid.uuid4().hex[:12]
