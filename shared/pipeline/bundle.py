"""Open a migration's uploaded bundle from its own Blob container."""

from __future__ import annotations

from shared.dentrix.reader import BundleReader
from shared.errors import ConfigurationError
from shared.runtime import Runtime
from shared.state.migrations import Migration
from shared.state.upload_sas import bundle_container


def bundle_prefix(migration: Migration) -> str:
    if not migration.bundle_id:
        raise ConfigurationError(f"migration {migration.migration_id} names no bundle: start it with a bundle id")
    return f"{migration.migration_id}/{migration.bundle_id}/"


def open_bundle(rt: Runtime, migration: Migration) -> BundleReader:
    """The bundle reader (manifest checked on open; raises a BundleRefused subclass if it is bad)."""
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration.migration_id))
    return BundleReader.from_container(container, bundle_prefix(migration))


def bundle_uploaded(rt: Runtime, migration_id: str, bundle_id: str) -> bool:
    """True once the manifest (the commit marker, uploaded last) is in the migration's container."""
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration_id))
    return container.get_blob_client(f"{migration_id}/{bundle_id}/manifest.json").exists()
