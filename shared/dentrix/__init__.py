"""The Dentrix export bundle contract: table registry, row models, manifest, normalisers, cloud reader."""

from __future__ import annotations

from shared.dentrix.manifest import (
    BUNDLE_FORMAT,
    DEFAULT_PART_ROWS,
    MANIFEST_NAME,
    FileEntry,
    FileIndex,
    Manifest,
)
from shared.dentrix.models import ROW_MODELS, RowModel, row_model
from shared.dentrix.reader import (
    BundleReader,
    BundleReport,
    ContainerStore,
    DirectoryStore,
    FileReferenceCheck,
    IndexStats,
    LoadedRow,
    Problem,
    QuarantinedRow,
    TableReport,
)
from shared.dentrix.tables import TABLE_NAMES, TABLES, Column, Table, get_table, parents_of

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_PART_ROWS",
    "MANIFEST_NAME",
    "ROW_MODELS",
    "TABLES",
    "TABLE_NAMES",
    "BundleReader",
    "BundleReport",
    "Column",
    "ContainerStore",
    "DirectoryStore",
    "FileEntry",
    "FileIndex",
    "FileReferenceCheck",
    "IndexStats",
    "LoadedRow",
    "Manifest",
    "Problem",
    "QuarantinedRow",
    "RowModel",
    "Table",
    "TableReport",
    "get_table",
    "parents_of",
    "row_model",
]
