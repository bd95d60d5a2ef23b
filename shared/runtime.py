"""The stores and clients a stage needs, built once per process from the settings.

Activities and HTTP routes call `runtime()`; tests build a `Runtime` of their own with `Runtime.create`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from shared.settings import Settings, get_settings
from shared.state.artifacts import ArtifactStore
from shared.state.journal import Journal
from shared.state.migrations import MigrationRepository
from shared.state.storage import blob_service, table_service


@dataclass
class Runtime:
    settings: Settings
    tables: TableServiceClient
    blobs: BlobServiceClient

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        return cls(settings, table_service(settings), blob_service(settings))

    @cached_property
    def migrations(self) -> MigrationRepository:
        return MigrationRepository(self.tables, self.settings.table_prefix)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.blobs, self.settings.table_prefix)

    @cached_property
    def journal(self) -> Journal:
        return Journal(self.tables, self.settings.table_prefix)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process-wide runtime (built on first use, not at import, so tests can set the environment)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.create(get_settings())
    return _runtime
