"""Fixtures for the agent tests: small synthetic practices, extracted bundles, SAS URLs on Azurite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from agent.extract import extract
from agent.synth import synthesize
from devtools.azurite import ACCOUNT, ACCOUNT_KEY


@pytest.fixture(scope="session")
def practice_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """A synthetic practice per (patients, seed), written once per session (copy it before editing)."""
    made: dict[tuple[int, int], Path] = {}

    def make(patients: int, seed: int) -> Path:
        if (patients, seed) not in made:
            folder = tmp_path_factory.mktemp(f"practice-{patients}-{seed}")
            synthesize(folder / "practice.db", patients, seed)
            made[(patients, seed)] = folder / "practice.db"
        return made[(patients, seed)]

    return make


@pytest.fixture(scope="session")
def small_bundle(practice_factory: Callable[[int, int], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full bundle of a 40-patient practice with small parts (several parts per big table)."""
    db = practice_factory(40, 11)
    out = tmp_path_factory.mktemp("bundle") / "b"
    extract(str(db), out, part_rows=300, bundle_id="full-small-11")
    return out


@pytest.fixture
def sas_url_for(storage_connection_string: str, unique_name: str) -> Callable[..., tuple[str, object]]:
    """Create a fresh container; return (create+write SAS URL, the ContainerClient for checking)."""

    def make(path_suffix: str = "", read: bool = False) -> tuple[str, object]:
        service = BlobServiceClient.from_connection_string(storage_connection_string)
        container = service.create_container(unique_name)
        sas = generate_container_sas(ACCOUNT, unique_name, account_key=ACCOUNT_KEY,
                                     permission=ContainerSasPermissions(create=True, write=True, read=read),
                                     expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        url = f"{container.url}{path_suffix}?{sas}"
        return url, container

    return make
