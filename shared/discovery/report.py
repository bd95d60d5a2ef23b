"""The discovery report: what profiling one bundle found, as a JSON-serialisable contract of counts and ids only.

No row value ever enters this model: only table, column and pattern names, counts, shares, ids
(Dentrix keys are not PHI), and the min/max of date columns that do not identify a person (never
birth dates). `facts_for_proposer` turns it into the mapping proposer's input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.discovery.estimate import EstimateSettings, LoadEstimate, TAttachmentDestination
from shared.discovery.patterns import TPattern

if TYPE_CHECKING:
    from shared.mapping.proposer import DiscoveryFacts

REPORT_FORMAT = "bridgework.discovery/1"

TInferredType = Literal["string", "integer", "decimal", "boolean", "date", "datetime", "money", "object", "null"]
"""Same names as the proposer's `InferredType`."""
TSeverity = Literal["info", "review", "cutover"]
"""info: worth knowing; review: the practice should look before approving; cutover: must be settled before go-live."""

_MODEL = ConfigDict(frozen=True, extra="forbid")


class IdList(BaseModel):
    """An exact count and the first ids found (the list is capped; `truncated` says when ids were left off)."""

    model_config = _MODEL

    count: int = 0
    ids: list[str] = Field(default_factory=list)
    truncated: bool = False


class ColumnProfile(BaseModel):
    """One column of one table, over the rows that passed validation."""

    model_config = _MODEL

    name: str
    kind: str
    """The registry's column kind (id, text, date ...), or "custom" for a practice column."""
    json_type: str
    """The JSON type the manifest declares."""
    custom: bool = False
    inferred_type: TInferredType
    null_count: int
    null_rate: float
    distinct_count: int
    distinct_exact: bool
    """False: the column has *at least* `distinct_count` distinct values (the counter's cap was reached)."""
    max_length: int | None = None
    """Longest text value in characters (text columns only)."""
    patterns: dict[TPattern, float] = Field(default_factory=dict)
    """Share (0..1) of the non-null values matching each pattern; patterns never seen are left out."""
    min: str | None = None
    """Earliest value of a date / datetime column (absent for columns that identify a person, e.g. birth dates)."""
    max: str | None = None


class ProblemCount(BaseModel):
    model_config = _MODEL

    field: str
    code: str
    count: int


class TableProfile(BaseModel):
    """One bundle table."""

    model_config = _MODEL

    name: str
    rows: int
    """Rows the manifest lists."""
    loaded: int
    """Rows that passed validation (the column profile is over these)."""
    quarantined: int
    quarantined_ids: IdList = Field(default_factory=IdList)
    """Keys of the quarantined rows ("<file>:<line>" for a row without a usable key)."""
    problems: list[ProblemCount] = Field(default_factory=list)
    """Why rows were quarantined, by field and code."""
    columns: list[ColumnProfile] = Field(default_factory=list)
    custom_columns: list[str] = Field(default_factory=list)


class Orphans(BaseModel):
    """Rows whose reference names a parent row the bundle does not hold."""

    model_config = _MODEL

    table: str
    column: str
    parent_table: str
    count: int
    ids: list[str]
    """Keys of the child rows (capped)."""
    truncated: bool = False


class DuplicatePatients(BaseModel):
    """Patients sharing a normalised first name, last name and birth date (likely entered twice)."""

    model_config = _MODEL

    groups: int = 0
    patients: int = 0
    """Patients in those groups (each group counts all its members)."""
    id_groups: list[list[str]] = Field(default_factory=list)
    """Patient ids per group (capped in number of groups)."""
    truncated: bool = False


class AppointmentsWithoutPatient(BaseModel):
    model_config = _MODEL

    count: int = 0
    no_patient_id: int = 0
    """New-patient appointments (Dentrix patid 0): no patient record was ever linked."""
    missing_patient: int = 0
    """The patient id names a patient the bundle does not hold."""
    ids: list[str] = Field(default_factory=list)
    truncated: bool = False


class OpenClaims(BaseModel):
    """Insurance claims sent and not yet paid: in-flight claims must clear in Dentrix before cutover."""

    model_config = _MODEL

    count: int = 0
    billed_cents: int = 0
    """Total billed on the open claims (a practice-level sum)."""
    ids: list[str] = Field(default_factory=list)
    truncated: bool = False
    open_predeterminations: int = 0
    """Predeterminations without a reply: no payment rides on them, listed for completeness."""


class TargetObject(BaseModel):
    """Records one table map of the field map writes to Dataverse."""

    model_config = _MODEL

    map: str
    object: str
    """One of the 13 Dentrix objects."""
    source_table: str
    target_table: str
    action: str
    """upsert (creates or updates records), update (fills columns of records another map writes),
    resolve (matched to existing users, no write), attachment (moved by the attachment step)."""
    records: int


class Attachments(BaseModel):
    model_config = _MODEL

    documents: int = 0
    """Document rows that carry a file."""
    files: int = 0
    """Distinct files (content-addressed: a file shared by several documents is stored once)."""
    bytes: int = 0
    destination: TAttachmentDestination = "sharepoint"
    limit_bytes: int = 0
    over_limit: IdList = Field(default_factory=IdList)
    """Document ids whose file is over the destination's limit: listed, never silently dropped."""
    patient_folders: int = 0
    """Patients with at least one document (one SharePoint folder and document location each)."""
    upload_seconds: float = 0.0


class TargetEstimate(BaseModel):
    model_config = _MODEL

    objects: list[TargetObject] = Field(default_factory=list)
    records_by_target: dict[str, int] = Field(default_factory=dict)
    """Dataverse table -> records created there (upsert maps only)."""
    closing_writes: int = 0
    """Appointments closed (completed / canceled) as their last write."""
    attachments: Attachments = Field(default_factory=Attachments)
    load: LoadEstimate
    settings: EstimateSettings


class DiscoveryWarning(BaseModel):
    """Something the practice should know before approving, by code and count (never values)."""

    model_config = _MODEL

    code: str
    severity: TSeverity
    table: str | None = None
    column: str | None = None
    count: int
    message: str


class DiscoveryReport(BaseModel):
    """Everything discovery learned about one bundle."""

    model_config = _MODEL

    format: Literal["bridgework.discovery/1"] = REPORT_FORMAT
    bundle_id: str
    bundle_kind: str
    source_product: str
    source_version: str | None = None
    practice_timezone: str
    distinct_cap: int
    id_cap: int
    tables: list[TableProfile]
    custom_columns: dict[str, list[str]] = Field(default_factory=dict)
    """table -> practice custom columns (from the manifest)."""
    orphans: list[Orphans] = Field(default_factory=list)
    duplicate_patients: DuplicatePatients = Field(default_factory=DuplicatePatients)
    appointments_without_patient: AppointmentsWithoutPatient = Field(default_factory=AppointmentsWithoutPatient)
    open_claims: OpenClaims = Field(default_factory=OpenClaims)
    estimate: TargetEstimate
    warnings: list[DiscoveryWarning] = Field(default_factory=list)

    def table(self, name: str) -> TableProfile:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"discovery report has no table {name!r}")


def facts_for_proposer(report: DiscoveryReport) -> DiscoveryFacts:
    """The mapping proposer's input (`shared.mapping.proposer.DiscoveryFacts`) from a discovery report."""
    from shared.mapping.proposer import ColumnFacts, DiscoveryFacts, TableFacts

    return DiscoveryFacts(tables=[
        TableFacts(name=t.name, row_count=t.rows, columns=[
            ColumnFacts(name=c.name, inferred_type=c.inferred_type, null_rate=c.null_rate,
                        distinct_count=c.distinct_count, max_length=c.max_length, patterns=dict(c.patterns),
                        custom=c.custom)
            for c in t.columns
        ])
        for t in report.tables
    ])
