"""The target clients of one host share each application user's governor (Dataverse limits are per user)."""

from __future__ import annotations

import asyncio

import pytest

from emulator.credentials import EmulatorTokenCredential
from shared.dataverse.client import DataverseClient, DataverseConfig
from shared.dataverse.governor import Governor
from shared.errors import ConfigurationError
from shared.pipeline.target import shared_governors

CONFIG = DataverseConfig(environment_url="https://org.example")


async def _twice() -> tuple[list[Governor], list[Governor], list[Governor]]:
    first = shared_governors("https://org.example", ["user-a", "user-b"], CONFIG)
    again = shared_governors("https://org.example", ["user-a", "user-b"], CONFIG)
    other = shared_governors("https://other.example", ["user-a"], CONFIG)
    return first, again, other


def test_clients_on_one_loop_share_one_governor_per_environment_and_user():
    first, again, other = asyncio.run(_twice())
    assert first[0] is again[0] and first[1] is again[1]
    assert first[0] is not first[1] and other[0] is not first[0]
    # A 429 one activity meets holds back every other activity of that user.
    first[0].block_now(5.0)
    assert again[0].blocked_until == first[0].blocked_until > 0 and first[1].blocked_until == 0


def test_another_event_loop_gets_its_own_governors():
    # A governor's condition belongs to the loop it waited on: a new loop must not reuse it.
    assert asyncio.run(_twice())[0][0] is not asyncio.run(_twice())[0][0]


def test_the_client_sends_through_the_governors_it_is_given():
    governors = [Governor(CONFIG.governor), Governor(CONFIG.governor)]
    credentials = [EmulatorTokenCredential(), EmulatorTokenCredential()]
    client = DataverseClient(CONFIG, credentials, governors=governors)
    assert [lane.governor for lane in client.lanes] == governors
    with pytest.raises(ConfigurationError, match="one governor per credential"):
        DataverseClient(CONFIG, credentials[:1], governors=governors)
