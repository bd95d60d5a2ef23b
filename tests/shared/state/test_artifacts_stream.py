"""A large document (the audit log) goes to Blob streamed in chunks and reads back whole."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

import shared.pipeline.audit as audit
from shared.state.artifacts import ArtifactStore


def test_a_document_streamed_in_chunks_reads_back_whole(storage_connection_string: str, unique_name: str):
    store = ArtifactStore(BlobServiceClient.from_connection_string(storage_connection_string), unique_name)
    chunks = [bytes([65 + n]) * 700_000 for n in range(7)]  # ~4.9 MB: more than one staged block
    path = store.put_stream("m-1", "reports/big.csv", iter(chunks), "text/csv")
    assert path == "m-1/reports/big.csv"
    assert store.get_bytes("m-1", "reports/big.csv") == b"".join(chunks)


def test_audit_lines_are_gathered_into_chunks_of_about_the_chunk_size(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(audit, "CHUNK_BYTES", 20)
    lines = [f"table,{n},created\r\n" for n in range(10)]
    chunks = list(audit._chunks(iter(lines)))
    assert b"".join(chunks) == "".join(lines).encode()
    assert len(chunks) == 5 and all(len(chunk) >= 20 for chunk in chunks[:-1])
