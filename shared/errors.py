"""Bridgework's error classes, one tree, classified by what the caller should do.

    BridgeworkError
    ├── ConfigurationError     a setting is missing or wrong: fix the configuration
    ├── BundleError            the export bundle is malformed or incomplete: re-run the agent
    │   ├── BundleRefused                   the bundle does not match its manifest (Fatal); leaves:
    │   │   BundleManifestInvalid, BundleFileMissing, BundleHashMismatch, BundleRowCountMismatch,
    │   │   BundleColumnMismatch, BundleCorrupt, BundleUnsafePath, BundleFormatUnsupported,
    │   │   BundleFileNotIndexed
    │   ├── BundleCredentialRefused         the agent was given a key / connection string, not a SAS (Fatal)
    │   └── BundleUploadFailed              blob upload failed after its retries (Retriable)
    ├── MappingError           the field map is invalid: edit it and approve again
    │   ├── MappingInvalid                  a map or an edit breaks the rules: carries field errors (Fatal)
    │   ├── MappingNotApproved              a frozen version's content hash does not match (Fatal)
    │   └── SchemaPlanRefused               over the licence's custom tables, or owners unresolved (Fatal)
    ├── DataverseError         Dataverse refused or failed a request
    │   ├── DataverseThrottled              429 (Retriable, carries retry_after)
    │   ├── DataverseUnavailable            5xx / connection lost / timeout (Retriable)
    │   ├── DataverseNotReady               metadata propagating, customization lock (Retriable)
    │   ├── DataverseRecordRejected         one record refused, carries the Dataverse code (Skippable)
    │   ├── DataverseRequestTooLarge        413 (Skippable: split the request)
    │   ├── DataverseAuthError              401/403 (Fatal)
    │   ├── DataverseRequestFailed          any other refusal (Fatal)
    │   └── DataverseThrottleBudgetExhausted retry budget spent (Fatal)
    ├── SharePointError        Graph / SharePoint refused or failed a request
    │   ├── SharePointThrottled / SharePointUnavailable   (Retriable)
    │   └── SharePointConflict / SharePointAuthError / SharePointRequestFailed   (Fatal)
    └── StateError             Table/Blob state is missing or inconsistent
        ├── MigrationNotFound               no such migration for this tenant (Fatal)
        └── JournalLayoutOutdated           the journal was written in an earlier layout (Fatal)

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


class JournalLayoutOutdated(StateError, Fatal):
    """The migration's journal was written in the single table `<prefix>journal` of earlier releases (one
    partition per table before 2026-12-01, 64 buckets until 2026-12-02): its rows cannot be found where
    they are read now, and reading them as missing would make a rollback keep what the migration created."""

    code = "journal_layout_outdated"

    def __init__(self, migration_id: str) -> None:
        super().__init__(f"migration {migration_id}: its journal is in the single journal table of an earlier "
                         "release; start the migration again under this release, or finish it with the "
                         "release that wrote it")


# --- Dataverse (raised by shared/dataverse/errors.py, the one place that reads HTTP responses) ---


class DataverseThrottled(DataverseError, Retriable):
    """429 from service protection; `retry_after` (seconds) says when the next request may go."""

    code = "dataverse_throttled"


class DataverseUnavailable(DataverseError, Retriable):
    """5xx, a dropped connection or a timeout: the request may or may not have been applied."""

    code = "dataverse_unavailable"


class DataverseNotReady(DataverseError, Retriable):
    """Metadata cache not yet propagated or a customization lock is held: retry after a few seconds."""

    code = "dataverse_not_ready"


class DataverseRecordRejected(DataverseError, Skippable):
    """One record was refused (400 validation, 412 duplicate key, 404 bind target): quarantine it."""

    code = "dataverse_record_rejected"


class DataverseRequestTooLarge(DataverseError, Skippable):
    """413: the request body is over the server's size limit; split it (one record alone: skip it)."""

    code = "dataverse_request_too_large"


class DataverseAuthError(DataverseError, Fatal):
    """401/403: the token or the application user's security role is wrong; fix access, then rerun."""

    code = "dataverse_auth_error"


class DataverseRequestFailed(DataverseError, Fatal):
    """Any other refusal (404 on metadata, 405, 501, unexpected body): a bug or a misconfiguration."""

    code = "dataverse_request_failed"


class DataverseThrottleBudgetExhausted(DataverseError, Fatal):
    """The client waited its whole retry budget on 429s/5xx; raised instead of letting retries multiply."""

    code = "dataverse_throttle_budget_exhausted"


# --- SharePoint / Graph (raised by shared/sharepoint/errors.py) ---


class SharePointThrottled(SharePointError, Retriable):
    """429/503 with Retry-After from Graph."""

    code = "sharepoint_throttled"


class SharePointUnavailable(SharePointError, Retriable):
    """Other 5xx, a dropped connection or a timeout."""

    code = "sharepoint_unavailable"


class SharePointConflict(SharePointError, Fatal):
    """409 nameAlreadyExists with conflict behaviour `fail`, or 416 on a range already received."""

    code = "sharepoint_conflict"


class SharePointAuthError(SharePointError, Fatal):
    """401/403: the Graph token or its permissions (Sites.Selected / Files.ReadWrite.All) are wrong."""

    code = "sharepoint_auth_error"


class SharePointRequestFailed(SharePointError, Fatal):
    """Any other refusal from Graph (400, 404, 507 quota)."""

    code = "sharepoint_request_failed"


# --- Mapping and schema plan (shared/mapping) ---


class MappingInvalid(MappingError, Fatal):
    """A field map, or a user's edit of it, names a column that cannot exist, a type that cannot hold
    the data or a picklist value outside its set. `errors` lists every problem (pydantic-style `loc`,
    `code`, `message`); none carries a row value."""

    code = "mapping_invalid"

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None, **attrs: object) -> None:
        super().__init__(message, **attrs)
        self.errors = list(errors or [])


class MappingNotApproved(MappingError, Fatal):
    """A map presented as approved does not match its frozen content hash: approve it again."""

    code = "mapping_not_approved"


class SchemaPlanRefused(MappingError, Fatal):
    """The schema plan cannot be built as it stands: more custom tables than the licence allows, or
    clinical records whose provider has no active systemuser and no fallback owner. `problems` says
    what to change."""

    code = "schema_plan_refused"

    def __init__(self, message: str, problems: list[dict[str, object]] | None = None, **attrs: object) -> None:
        super().__init__(message, **attrs)
        self.problems = list(problems or [])


# -- Bundle (Dentrix export bundle: agent and cloud reader) -----------------------------------------


class BundleRefused(BundleError, Fatal):
    """The bundle as a whole is refused: nothing of it may be loaded. Carries `file`, and where known
    `line` and `field`; the message names the exact problem and says to re-run the agent."""

    code = "bundle_refused"

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, **attrs: object) -> None:
        super().__init__(message, file=file, line=line, field=field, **attrs)
        self.file, self.line, self.field = file, line, field


class BundleManifestInvalid(BundleRefused):
    """manifest.json is missing, not JSON, or breaks the manifest contract (format, tables, columns)."""

    code = "bundle_manifest_invalid"


class BundleFileMissing(BundleRefused):
    """A part, key list or binary the manifest lists is not in the bundle."""

    code = "bundle_file_missing"


class BundleHashMismatch(BundleRefused):
    """A file's sha256 (or size) differs from the manifest: changed or damaged after extraction."""

    code = "bundle_hash_mismatch"


class BundleRowCountMismatch(BundleRefused):
    """A part holds more or fewer lines than the manifest says (e.g. truncated)."""

    code = "bundle_row_count_mismatch"


class BundleColumnMismatch(BundleRefused):
    """A row's columns or a value's JSON type differ from the columns the manifest declares, or the
    manifest's columns differ from the bundle contract."""

    code = "bundle_column_mismatch"


class BundleCorrupt(BundleRefused):
    """A part is not valid gzip, or a line is not a JSON object."""

    code = "bundle_corrupt"


class BundleUnsafePath(BundleRefused):
    """A manifest path is not one of the bundle's documented shapes (e.g. tries `../` or an absolute path)."""

    code = "bundle_unsafe_path"


class BundleCredentialRefused(BundleError, Fatal):
    """The agent was handed an account key or connection string: it accepts a SAS URL only."""

    code = "bundle_credential_refused"


class BundleUploadFailed(BundleError, Retriable):
    """A blob could not be uploaded after the retries; run the upload again (it resumes)."""

    code = "bundle_upload_failed"


# -- Bundle format 2: the file index (appended) ---------------------------------------------------


class BundleFormatUnsupported(BundleRefused):
    """The manifest's `format` is not one this code reads (e.g. a format-1 bundle after the file
    index left the manifest): the message names the bundle's format and the supported ones."""

    code = "bundle_format_unsupported"


class BundleFileNotIndexed(BundleRefused):
    """A row names a binary the file index does not list, or its size or media type differs from
    the index's line for it."""

    code = "bundle_file_not_indexed"
