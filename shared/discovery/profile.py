"""Profile one export bundle in a single streaming pass per table and return the discovery report.

Memory stays flat in the bundle's size apart from a few structures that grow with *keys*, never
with row content: the key sets of referenced tables (8 bytes per key, built from the bundle's key
files), one hash per patient for duplicate detection, and one per patient with documents. Distinct
counts are exact up to `distinct_cap` values per column, then reported as "at least". Id lists in
the report are capped at `id_cap`; their counts are always exact.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.dentrix.manifest import ColumnEntry, TableEntry
from shared.dentrix.reader import BundleReader, LoadedRow
from shared.dentrix.tables import TABLE_NAMES, TABLES, get_table
from shared.discovery.estimate import (
    EstimateSettings,
    WriteLoad,
    attachment_limit,
    estimate_attachment_seconds,
    estimate_load,
    fits_destination,
)
from shared.discovery.patterns import TPattern, text_patterns
from shared.discovery.report import (
    AppointmentsWithoutPatient,
    Attachments,
    ColumnProfile,
    DiscoveryReport,
    DiscoveryWarning,
    DuplicatePatients,
    IdList,
    OpenClaims,
    Orphans,
    ProblemCount,
    TableProfile,
    TargetEstimate,
    TargetObject,
    TInferredType,
)
from shared.discovery.sketch import DistinctCounter, IdSample, KeySet

if TYPE_CHECKING:
    from shared.mapping.spec import MappingSpec, TableMap
    from shared.mapping.transforms import TransformContext

DEFAULT_DISTINCT_CAP = 10_000
DEFAULT_ID_CAP = 500
_BATCH = 1000
"""Rows folded into the column profiles at a time (column-wise, so repeated values are classified once)."""

IDENTIFYING_DATES: frozenset[tuple[str, str]] = frozenset({("patient", "birth_date")})
"""Date columns whose min/max would single out a person: reported without a range."""

_KIND_TYPE: dict[str, TInferredType] = {
    "id": "string", "text": "string", "int": "integer", "money": "money", "bool": "boolean", "date": "date",
    "datetime": "datetime", "json": "object", "tooth": "string", "surface": "string", "sha256": "string",
}
_REFERENCED: frozenset[str] = frozenset(c.ref for t in TABLES for c in t.columns if c.ref is not None)


class _Column:
    """Running profile of one column."""

    __slots__ = ("entry", "kind", "nulls", "non_null", "distinct", "max_len", "patterns", "lo", "hi", "ranged",
                 "types", "scan_text")

    def __init__(self, entry: ColumnEntry, kind: str, ranged: bool, cap: int) -> None:
        self.entry, self.kind, self.ranged = entry, kind, ranged
        self.nulls = self.non_null = 0
        self.distinct = DistinctCounter(cap)
        self.max_len: int | None = None
        self.patterns: Counter[TPattern] = Counter()
        self.lo: str | None = None
        self.hi: str | None = None
        self.types: Counter[str] = Counter()
        # Keys and content hashes have known shapes; scanning them would only add noise ("tooth" for id 12).
        self.scan_text = kind not in ("id", "sha256")

    def add_many(self, values: list[Any]) -> None:
        """Fold a batch of this column's values in (column-wise: repeated values are classified once)."""
        present = [v for v in values if v is not None]
        self.nulls += len(values) - len(present)
        if not present:
            return
        self.non_null += len(present)
        if self.entry.type in ("string", "integer", "boolean"):
            self.distinct.add_hashes(map(hash, present))  # one JSON type per column: the value is its identity
        else:
            for v in present:
                self.distinct.add(v)
        counts = Counter(present) if self.entry.type not in ("object", "array") else None
        if counts is None:
            self.types["object"] += len(present)
            return
        for value, times in counts.items():
            if isinstance(value, str):
                self.types["string"] += times
                if self.scan_text:
                    for p in text_patterns(value):
                        self.patterns[p] += times
            elif isinstance(value, bool):
                self.types["boolean"] += times
            elif isinstance(value, int):
                self.types["integer"] += times
                self.patterns["money" if self.kind == "money" else "integer"] += times
            elif isinstance(value, float):
                self.types["number"] += times
            else:
                self.types["object"] += times
        texts = [v for v in counts if isinstance(v, str)]
        if texts:
            longest = max(map(len, texts))
            if self.max_len is None or longest > self.max_len:
                self.max_len = longest
            if self.ranged:
                # ISO dates and local datetimes sort as text.
                lo, hi = min(texts), max(texts)
                if self.lo is None or lo < self.lo:
                    self.lo = lo
                if self.hi is None or hi > self.hi:
                    self.hi = hi

    def inferred_type(self) -> TInferredType:
        if self.kind != "custom":
            return _KIND_TYPE[self.kind]
        if self.non_null == 0:
            return "null"
        kinds = set(self.types)
        if kinds == {"boolean"}:
            return "boolean"
        if kinds == {"integer"}:
            return "money" if self.entry.name.endswith("_cents") else "integer"
        if kinds <= {"integer", "number"}:
            return "decimal"
        if kinds == {"object"}:
            return "object"
        if kinds == {"string"}:
            for pattern, typ in (("date", "date"), ("datetime", "datetime")):
                if self.patterns[pattern] >= 0.95 * self.non_null:
                    return typ  # type: ignore[return-value]
        return "string"

    def result(self, rows: int) -> ColumnProfile:
        return ColumnProfile(
            name=self.entry.name, kind=self.kind, json_type=self.entry.type, custom=self.entry.custom,
            inferred_type=self.inferred_type(), null_count=self.nulls,
            null_rate=round(self.nulls / rows, 6) if rows else 0.0,
            distinct_count=self.distinct.count, distinct_exact=self.distinct.exact, max_length=self.max_len,
            patterns={p: round(n / self.non_null, 6) for p, n in sorted(self.patterns.items())},
            min=self.lo, max=self.hi,
        )


def _name_key(first: Any, last: Any, birth: Any) -> int | None:
    """Hash of the normalised name and birth date: accents, case, spacing and punctuation ignored."""
    if not (isinstance(first, str) and isinstance(last, str) and isinstance(birth, str)):
        return None

    def norm(text: str) -> str:
        plain = unicodedata.normalize("NFKD", text)
        return "".join(ch for ch in plain.casefold() if ch.isalnum())

    f, la = norm(first), norm(last)
    if not f or not la:
        return None
    return hash((f, la, birth))


class _Findings:
    """Cross-table findings gathered while the tables stream past."""

    def __init__(self, id_cap: int) -> None:
        self.id_cap = id_cap
        self.orphans: dict[tuple[str, str, str], IdSample] = {}
        self.first_by_name: dict[int, str] = {}
        self.dup_groups: dict[int, list[str]] = {}
        self.no_patient = IdSample(id_cap)
        self.no_patient_id = 0
        self.missing_patient = 0
        self.open_claims = IdSample(id_cap)
        self.open_billed = 0
        self.open_predeterminations = 0
        self.documents = 0
        self.over_limit = IdSample(id_cap)
        self.doc_patients: set[int] = set()
        self.map_records: Counter[str] = Counter()
        self.closing_writes = 0


def profile_bundle(
    reader: BundleReader,
    *,
    settings: EstimateSettings,
    mapping: MappingSpec | None = None,
    distinct_cap: int = DEFAULT_DISTINCT_CAP,
    id_cap: int = DEFAULT_ID_CAP,
) -> DiscoveryReport:
    """Profile every table of `reader`'s bundle; estimate the target with `mapping` (default: the default map).

    Reads each table once (plus the key files of referenced tables). Raises the reader's
    `BundleRefused` subclasses when a file does not match the manifest; quarantined rows are counted,
    not raised.
    """
    if mapping is None:
        from shared.mapping.spec import default_mapping

        mapping = default_mapping()
    manifest = reader.manifest
    present = [e for e in manifest.tables if e.name in TABLE_NAMES]
    keysets = {e.name: _keyset(reader, e) for e in present if e.name in _REFERENCED}
    maps = [t for t in mapping.enabled_tables()]
    ctx = _close_context(reader, mapping, maps, manifest.practice_timezone)
    found = _Findings(id_cap)

    tables = [_profile_table(reader, e, keysets, maps, ctx, settings, found, distinct_cap)
              for e in present]

    custom = {e.name: [c.name for c in e.columns if c.custom] for e in present if any(c.custom for c in e.columns)}
    orphans = [Orphans(table=t, column=c, parent_table=p, count=s.count, ids=s.ids, truncated=s.truncated)
               for (t, c, p), s in found.orphans.items() if s.count]
    groups = [g for g in found.dup_groups.values()]
    duplicates = DuplicatePatients(groups=len(groups), patients=sum(len(g) for g in groups),
                                   id_groups=[list(g) for g in groups[:id_cap]], truncated=len(groups) > id_cap)
    no_patient = AppointmentsWithoutPatient(count=found.no_patient.count, no_patient_id=found.no_patient_id,
                                            missing_patient=found.missing_patient, ids=found.no_patient.ids,
                                            truncated=found.no_patient.truncated)
    open_claims = OpenClaims(count=found.open_claims.count, billed_cents=found.open_billed, ids=found.open_claims.ids,
                             truncated=found.open_claims.truncated,
                             open_predeterminations=found.open_predeterminations)
    estimate = _estimate(maps, found, manifest.file_index.count, manifest.file_index.bytes, settings)
    report = DiscoveryReport(
        bundle_id=manifest.bundle_id, bundle_kind=manifest.kind, source_product=manifest.source.product,
        source_version=manifest.source.version, practice_timezone=manifest.practice_timezone,
        distinct_cap=distinct_cap, id_cap=id_cap, tables=tables, custom_columns=custom, orphans=orphans,
        duplicate_patients=duplicates, appointments_without_patient=no_patient, open_claims=open_claims,
        estimate=estimate, warnings=[],
    )
    return report.model_copy(update={"warnings": _warnings(report, manifest.warnings)})


def _keyset(reader: BundleReader, entry: TableEntry) -> KeySet:
    """Every key of a referenced table: from its key files when the bundle has them, else from its rows."""
    if entry.keys:
        return KeySet(k for k, _ in reader.iter_keys(entry.name))
    return KeySet(item.key for item in reader.iter_table(entry.name) if item.key)


def _close_context(reader: BundleReader, mapping: MappingSpec, maps: list[TableMap],
                   timezone: str) -> TransformContext | None:
    """A transform context holding the (small) reference tables the appointment close rules read."""
    from shared.mapping.contract import parse_path
    from shared.mapping.rows import make_context

    wanted: set[str] = set()
    for t in maps:
        if t.close:
            for path in [*t.close.completed_when, *t.close.canceled_when]:
                wanted.update(h.table for h in parse_path(path)[1])
    if not any(t.close for t in maps):
        return None
    refs: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name in sorted(wanted):
        try:
            reader.table(name)
        except KeyError:
            continue
        refs[name] = {item.key: _values(item) for item in reader.iter_table(name) if isinstance(item, LoadedRow)}
    return make_context(mapping, timezone, references=refs)


def _values(item: LoadedRow) -> dict[str, Any]:
    row = item.row
    values = dict(row.__dict__)
    if row.__pydantic_extra__:
        values.update(row.__pydantic_extra__)
    return values


def _profile_table(reader: BundleReader, entry: TableEntry, keysets: dict[str, KeySet], maps: list[TableMap],
                   ctx: TransformContext | None, settings: EstimateSettings,
                   found: _Findings, cap: int) -> TableProfile:
    spec = get_table(entry.name)
    known = {c.name: c.kind for c in spec.columns}
    columns = [_Column(c, known.get(c.name, "custom") if not c.custom else "custom",
                       known.get(c.name) in ("date", "datetime") and not c.custom
                       and (entry.name, c.name) not in IDENTIFYING_DATES, cap)
               for c in entry.columns]
    refs = [(c.name, c.ref) for c in spec.columns if c.ref is not None and c.ref in keysets]
    for name, parent in refs:
        found.orphans.setdefault((entry.name, name, parent), IdSample(found.id_cap))
    table_maps = [t for t in maps if t.source_table == entry.name]
    quarantined = IdSample(found.id_cap)
    problems: Counter[tuple[str, str]] = Counter()
    loaded = 0
    hooks = _HOOKS.get(entry.name)
    batch: list[dict[str, Any]] = []
    for item in reader.iter_table(entry.name):
        if not isinstance(item, LoadedRow):
            quarantined.add(item.key or f"{item.file}:{item.line}")
            for p in item.problems:
                problems[(p.field, p.code)] += 1
            continue
        loaded += 1
        values = _values(item)
        batch.append(values)
        if len(batch) >= _BATCH:
            _fold(columns, batch)
        for name, parent in refs:
            value = values.get(name)
            if value is not None and value not in keysets[parent]:
                found.orphans[(entry.name, name, parent)].add(item.key)
        for t in table_maps:
            if t.selects(values):
                found.map_records[t.name] += 1
                if t.close is not None and ctx is not None and _closes(t, values, ctx):
                    found.closing_writes += 1
        if hooks is not None:
            hooks(item.key, values, keysets, found, settings)
    _fold(columns, batch)
    return TableProfile(
        name=entry.name, rows=entry.rows, loaded=loaded, quarantined=quarantined.count,
        quarantined_ids=IdList(count=quarantined.count, ids=quarantined.ids, truncated=quarantined.truncated),
        problems=[ProblemCount(field=f, code=c, count=n) for (f, c), n in sorted(problems.items())],
        columns=[c.result(loaded) for c in columns],
        custom_columns=[c.name for c in entry.columns if c.custom],
    )


def _fold(columns: list[_Column], batch: list[dict[str, Any]]) -> None:
    for col in columns:
        name = col.entry.name
        col.add_many([row.get(name) for row in batch])
    batch.clear()


def _closes(t: TableMap, values: dict[str, Any], ctx: TransformContext) -> bool:
    from shared.mapping.rows import final_state

    return final_state(t, values, ctx) is not None


# -- table-specific findings -------------------------------------------------------------------


def _patient(key: str, v: dict[str, Any], keysets: dict[str, KeySet], f: _Findings, *_: Any) -> None:
    name = _name_key(v.get("first_name"), v.get("last_name"), v.get("birth_date"))
    if name is None:
        return
    first = f.first_by_name.setdefault(name, key)
    if first != key:
        f.dup_groups.setdefault(name, [first]).append(key)


def _appointment(key: str, v: dict[str, Any], keysets: dict[str, KeySet], f: _Findings, *_: Any) -> None:
    pid = v.get("patient_id")
    if pid is None:
        f.no_patient_id += 1
        f.no_patient.add(key)
    elif "patient" not in keysets or pid not in keysets["patient"]:
        f.missing_patient += 1
        f.no_patient.add(key)


def _claim(key: str, v: dict[str, Any], keysets: dict[str, KeySet], f: _Findings, *_: Any) -> None:
    if v.get("date_received") is not None:
        return
    if v.get("claim_type") == 1:
        f.open_predeterminations += 1
        return
    f.open_claims.add(key)
    f.open_billed += v.get("total_billed_cents") or 0


def _document(key: str, v: dict[str, Any], keysets: dict[str, KeySet], f: _Findings,
              settings: EstimateSettings) -> None:
    sha = v.get("file_sha256")
    if sha is None:
        return
    f.documents += 1
    size = v.get("file_bytes") or 0  # the row carries its file's size (checked against the index by verify())
    if not fits_destination(size, settings):
        f.over_limit.add(key)
    pid = v.get("patient_id")
    if pid is not None:
        f.doc_patients.add(hash(pid))


_HOOKS: dict[str, Any] = {"patient": _patient, "appointment": _appointment, "claim": _claim, "document": _document}


# -- estimate and warnings ---------------------------------------------------------------------


def _estimate(maps: list[TableMap], f: _Findings, files: int, total_bytes: int,
              settings: EstimateSettings) -> TargetEstimate:
    """`files`/`total_bytes`: the file index's totals from the manifest (verify() checks them
    against the index's lines), so the estimate needs no pass over the index."""
    objects = [TargetObject(map=t.name, object=t.object, source_table=t.source_table, target_table=t.target_table,
                            action=t.action, records=f.map_records.get(t.name, 0)) for t in maps]
    by_target: Counter[str] = Counter()
    loads: list[WriteLoad] = []
    for o in objects:
        if o.action == "upsert":
            by_target[o.target_table] += o.records
        if o.action in ("upsert", "update"):
            loads.append(WriteLoad(name=o.map, records=o.records))
    if f.closing_writes:
        loads.append(WriteLoad(name="appointment_close", records=f.closing_writes))
    folders = len(f.doc_patients)
    if settings.attachment_destination == "sharepoint":
        # One sharepointdocumentlocation per patient folder is a Dataverse write; the files go to Graph.
        loads.append(WriteLoad(name="document_location", records=folders))
    else:
        loads.append(WriteLoad(name="note_attachment", records=f.documents))
    attachments = Attachments(
        documents=f.documents, files=files, bytes=total_bytes, destination=settings.attachment_destination,
        limit_bytes=attachment_limit(settings),
        over_limit=IdList(count=f.over_limit.count, ids=f.over_limit.ids, truncated=f.over_limit.truncated),
        patient_folders=folders, upload_seconds=estimate_attachment_seconds(files, total_bytes, settings),
    )
    return TargetEstimate(objects=objects, records_by_target=dict(sorted(by_target.items())),
                          closing_writes=f.closing_writes, attachments=attachments,
                          load=estimate_load(loads, settings), settings=settings)


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _warnings(report: DiscoveryReport, bundle_warnings: list[Any]) -> list[DiscoveryWarning]:
    out: list[DiscoveryWarning] = []
    oc = report.open_claims
    if oc.count:
        out.append(DiscoveryWarning(
            code="open_claims", severity="cutover", table="claim", count=oc.count,
            message=f"{oc.count} insurance claims are sent but unpaid: let them clear in Dentrix before cutover"))
    for t in report.tables:
        if t.quarantined:
            out.append(DiscoveryWarning(
                code="quarantined_rows", severity="review", table=t.name, count=t.quarantined,
                message=f"{t.name}: {t.quarantined} row{_s(t.quarantined)} quarantined (breaking the bundle rules), "
                        f"not to be loaded"))
    for o in report.orphans:
        out.append(DiscoveryWarning(
            code="orphans", severity="review", table=o.table, column=o.column, count=o.count,
            message=f"{o.table}: {o.count} row{_s(o.count)} name{'s' if o.count == 1 else ''} a {o.parent_table} (column {o.column}) the bundle "
                    f"does not hold"))
    d = report.duplicate_patients
    if d.groups:
        out.append(DiscoveryWarning(
            code="duplicate_patients", severity="review", table="patient", count=d.patients,
            message=f"{d.patients} patients in {d.groups} group{_s(d.groups)} share a name and birth date (likely entered twice)"))
    a = report.appointments_without_patient
    if a.count:
        out.append(DiscoveryWarning(
            code="appointments_without_patient", severity="review", table="appointment", count=a.count,
            message=f"{a.count} appointments have no patient record ({a.no_patient_id} new-patient bookings, "
                    f"{a.missing_patient} naming a missing patient)"))
    att = report.estimate.attachments
    if att.over_limit.count:
        out.append(DiscoveryWarning(
            code="attachments_over_limit", severity="review", table="document", count=att.over_limit.count,
            message=f"{att.over_limit.count} files are over the {att.destination} limit of {att.limit_bytes:,} bytes: "
                    f"they are listed and will not be uploaded"))
    for table, cols in report.custom_columns.items():
        out.append(DiscoveryWarning(
            code="custom_columns", severity="info", table=table, count=len(cols),
            message=f"{len(cols)} practice custom column{_s(len(cols))} on {table}: the proposed map "
                    f"suggests where {'they go' if len(cols) != 1 else 'it goes'}"))
    seen = {(w.code, w.table) for w in out}
    for w in bundle_warnings:
        code = w.code.replace("appointment_without_patient", "appointments_without_patient")
        if (code, w.table) not in seen:
            out.append(DiscoveryWarning(code=f"bundle_{w.code}", severity="info", table=w.table, count=w.count,
                                        message=w.message))
    return out
