"""Bridgework's error classes, one tree, classified by what the caller should do.

    BridgeworkError
    ├── ConfigurationError     a setting is missing or wrong: fix the configuration
    ├── BundleError            the export bundle is malformed or incomplete: re-run the agent
    ├── MappingError           the field map is invalid: edit it and approve again
    ├── DataverseError         Dataverse refused or failed a request
    ├── SharePointError        Graph / SharePoint refused or failed a request
    └── StateError             Table/Blob state is missing or inconsistent

Every leaf also derives from exactly one of the markers below, which decide retries:
    Retriable   transient (throttling, 5xx, connection lost): Durable's retry may run it again
    Fatal       retrying cannot help: fail the step with a message that says what to do
    Skippable   one record is bad: quarantine it, report it, and go on with the rest

Messages are built only from ids, counts, names of files, tables and fields, and error codes:
never from row values, which are protected health information.
"""

from __future__ import annotations

from typing import Any


class BridgeworkError(Exception):
    """Root of every error Bridgework raises on purpose."""

    code: str = "bridgework_error"

    def __init__(self, message: str, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        self.attrs = attrs

    def __str__(self) -> str:
        return self.message


class Retriable(BridgeworkError):
    """Marker: the operation may succeed if run again later."""


class Fatal(BridgeworkError):
    """Marker: running it again will not help; a person must change something."""


class Skippable(BridgeworkError):
    """Marker: one record is bad; quarantine it and continue."""


class ConfigurationError(Fatal):
    """A setting is missing or invalid. The message names the setting."""

    code = "configuration_error"


class BundleError(BridgeworkError):
    """The export bundle does not match its contract."""

    code = "bundle_error"


class MappingError(BridgeworkError):
    """The field map or schema plan is invalid."""

    code = "mapping_error"


class DataverseError(BridgeworkError):
    """Dataverse answered with an error or could not be reached."""

    code = "dataverse_error"


class SharePointError(BridgeworkError):
    """Microsoft Graph / SharePoint answered with an error or could not be reached."""

    code = "sharepoint_error"


class StateError(BridgeworkError):
    """Bridgework's own stored state (Table/Blob) is missing or inconsistent."""

    code = "state_error"


class MigrationNotFound(StateError, Fatal):
    """No migration with this id exists for the caller's tenant."""

    code = "migration_not_found"
