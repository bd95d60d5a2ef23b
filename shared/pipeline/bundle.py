"""Open a migration's uploaded bundle from its own Blob container."""

from __future__ import annotations

from shared.dentrix.reader import BundleReader
from shared.errors import ConfigurationError
from shared.runtime import Runtime
from shared.state.migrations import Migration
from shared.state.upload_sas import bundle_container


def bundle_prefix(migration: Migration, bundle_id: str | None = None) -> str:
    """`<migration>/<bundle>/`: the migration's full bundle, or another of its bundles (a delta) by id."""
    bundle = bundle_id or migration.bundle_id
    if not bundle:
        raise ConfigurationError(f"migration {migration.migration_id} names no bundle: start it with a bundle id")
    return f"{migration.migration_id}/{bundle}/"


def open_bundle(rt: Runtime, migration: Migration, bundle_id: str | None = None) -> BundleReader:
    """The reader of the migration's bundle, or of `bundle_id` (a delta uploaded during cutover).

    The manifest is checked on open; raises a BundleRefused subclass if the bundle is bad."""
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration.migration_id))
    return BundleReader.from_container(container, bundle_prefix(migration, bundle_id))


def bundle_uploaded(rt: Runtime, migration_id: str, bundle_id: str) -> bool:
    """True once the manifest (the commit marker, uploaded last) is in the migration's container."""
    container = rt.blobs.get_container_client(bundle_container(rt.settings.table_prefix, migration_id))
    return container.get_blob_client(f"{migration_id}/{bundle_id}/manifest.json").exists()
