"""A migration's documents in Blob Storage: discovery report, field-map versions, schema plan, reports.

Layout, one folder per migration in the `<prefix>-migrations` container:
    <migration_id>/discovery/report.json, summary.md
    <migration_id>/mapping/proposal.json, draft.json, approved-v<N>.json
    <migration_id>/schema/plan.json, build.json
    <migration_id>/reports/...
Orchestrations pass these paths around, never the documents (Durable payloads stay small).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from pydantic import BaseModel

from shared.errors import StateError


class ArtifactMissing(StateError):
    """A document the migration needs has not been written yet (the stage before it has not run)."""

    code = "artifact_missing"


class ArtifactStore:
    """Reads and writes one migration's documents."""

    def __init__(self, service: BlobServiceClient, prefix: str) -> None:
        self.container: ContainerClient = service.get_container_client(f"{prefix}-migrations")
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    @staticmethod
    def path(migration_id: str, name: str) -> str:
        return f"{migration_id}/{name}"

    def put_bytes(self, migration_id: str, name: str, data: bytes, content_type: str) -> str:
        path = self.path(migration_id, name)
        self.container.upload_blob(path, data, overwrite=True,
                                   content_settings=ContentSettings(content_type=content_type))
        return path

    def put_stream(self, migration_id: str, name: str, chunks: Iterable[bytes], content_type: str) -> str:
        """Upload a document of unknown length from its chunks, a few MiB at a time (staged blocks), so a
        large report is never held whole."""
        path = self.path(migration_id, name)
        self.container.upload_blob(path, chunks, overwrite=True,
                                   content_settings=ContentSettings(content_type=content_type))
        return path

    def put_json(self, migration_id: str, name: str, document: BaseModel | dict[str, Any] | list[Any]) -> str:
        data = (document.model_dump_json(indent=2) if isinstance(document, BaseModel)
                else json.dumps(document, indent=2, default=str))
        return self.put_bytes(migration_id, name, data.encode(), "application/json")

    def put_text(self, migration_id: str, name: str, text: str, content_type: str = "text/markdown") -> str:
        return self.put_bytes(migration_id, name, text.encode(), f"{content_type}; charset=utf-8")

    def get_bytes(self, migration_id: str, name: str) -> bytes:
        """Raises ArtifactMissing when the document does not exist."""
        try:
            return self.container.download_blob(self.path(migration_id, name)).readall()
        except ResourceNotFoundError:
            raise ArtifactMissing(f"{name} of migration {migration_id} does not exist yet",
                                  migration_id=migration_id, artifact=name) from None

    def get_json(self, migration_id: str, name: str) -> Any:
        return json.loads(self.get_bytes(migration_id, name))

    def exists(self, migration_id: str, name: str) -> bool:
        return self.container.get_blob_client(self.path(migration_id, name)).exists()
