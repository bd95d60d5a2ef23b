"""Which rows belong to a migration's sample: the stratified patients, the contacts they point at, and the
one predicate (`in_sample`) that the sample load, its second pass, its attachments and the diff all use.

`select_sample` picks patients round-robin across strata: insurance (none / primary / dual),
appointment history (none, past, future, broken), treatment-plan statuses and ledger activity.
`build_scope` closes that set over the map's lookups to patient contacts (a guarantor, a guardian,
an insurance subscriber who is another patient): those contacts are loaded too (their own row only,
not their appointments or ledger), so no sampled record binds to a contact that is not there.
Rows with no `patient_id` (carriers, fee schedules) are reference rows: the sample loads them whole.

The scope is chosen once per sample run and kept as the artifact `sample/scope.json`; activities
read it from there, so Durable inputs carry a mode flag, never the patient list.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from shared.dentrix.reader import BundleReader, LoadedRow
from shared.dentrix.tables import get_table
from shared.mapping.contract import parse_path
from shared.mapping.spec import MappingSpec, TableMap
from shared.runtime import Runtime
from shared.state.migrations import Migration

SCOPE = "sample/scope.json"
DEFAULT_PATIENTS = 150
MIN_PATIENTS = 100
MAX_PATIENTS = 300
"""The sample's size as the API accepts it: 0 (no sample stage) or 100-300 patients."""
SEED = 7
PATIENT_TABLE = "patient"


class SampleScope(BaseModel):
    """The sampled patients and every contact the sample loads (ids as in the bundle, no values)."""

    patients: list[str]
    """The stratified patients: their own rows of every table are in the sample."""
    contacts: list[str]
    """`patients` plus the patients their rows point at (guarantor, guardian, subscriber): only their
    contact row is loaded."""
    size: int = DEFAULT_PATIENTS
    seed: int = SEED
    chosen_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @cached_property
    def patient_set(self) -> frozenset[str]:
        return frozenset(self.patients)

    @cached_property
    def contact_set(self) -> frozenset[str]:
        return frozenset(self.contacts)


def in_sample(source_table: str, row: dict[str, Any], scope: SampleScope) -> bool:
    """Whether a bundle row is part of the sample: a sampled patient's own rows, the contact row of a
    patient the sample points at, and every reference row (one with no `patient_id`)."""
    if "patient_id" not in row:
        return True
    patient = str(row.get("patient_id"))
    if source_table == PATIENT_TABLE:
        return patient in scope.contact_set
    return patient in scope.patient_set


# -- choosing the patients -------------------------------------------------------------------------------


def rows_of(reader: BundleReader, table: str) -> Iterator[dict[str, Any]]:
    """Every valid row of a bundle table as a dict, streamed (none when the bundle lacks the table): a
    large practice's table is never held whole."""
    if table not in {entry.name for entry in reader.manifest.tables}:
        return
    for item in reader.iter_table(table):
        if isinstance(item, LoadedRow):
            yield item.row.model_dump()


_VISITS = ("broken", "future", "past")
"""A patient's appointment history, most telling first: the stratum names the first the patient has."""


def strata(reader: BundleReader) -> dict[str, str]:
    """patient id -> `insurance|appointments|treatment plans|ledger` stratum.

    Ranks and visit kinds are kept as bit masks per patient, not sets: at 36,000 patients the host held 71,375
    sets (17.7 MiB) while the sample was chosen, and 2,167 (1.1 MiB) with these and `build_scope`'s tuples
    (bench/README.md, "The sample's strata")."""
    today = datetime.now(UTC)
    ranks: dict[str, int] = {}
    for row in rows_of(reader, "patient_insurance"):
        pid = str(row["patient_id"])
        ranks[pid] = ranks.get(pid, 0) | 1 << int(row.get("rank") or 1)
    visits: dict[str, int] = {}
    for row in rows_of(reader, "appointment"):
        start = row.get("start_at")
        kind = "broken" if row.get("broken") else (
            "future" if isinstance(start, datetime) and start.replace(tzinfo=start.tzinfo or UTC) > today else "past")
        pid = str(row.get("patient_id"))
        visits[pid] = visits.get(pid, 0) | 1 << _VISITS.index(kind)
    plans: dict[str, set[str]] = {}
    for row in rows_of(reader, "tx_case"):
        plans.setdefault(str(row.get("patient_id")), set()).add(str(row.get("status_id")))
    ledger = {str(row.get("patient_id")) for row in rows_of(reader, "proc_log")}
    out: dict[str, str] = {}
    for row in rows_of(reader, PATIENT_TABLE):
        pid = str(row["patient_id"])
        held = ranks.get(pid, 0).bit_count()
        insurance = "dual" if held >= 2 else ("primary" if held else "none")
        seen = visits.get(pid, 0)
        history = next((kind for bit, kind in enumerate(_VISITS) if seen >> bit & 1), "none")
        plan = ",".join(sorted(plans.get(pid, ()))) or "none"
        # Interned: strata are few, so the patients of one share its string.
        out[pid] = sys.intern(f"{insurance}|{history}|{plan}|{'ledger' if pid in ledger else 'no_ledger'}")
    return out


def select_sample(reader: BundleReader, size: int = DEFAULT_PATIENTS, seed: int = SEED) -> list[str]:
    """Patient ids, round-robin over the strata (each stratum shuffled by `seed`) until `size`."""
    groups: dict[str, list[str]] = {}
    for pid, stratum in sorted(strata(reader).items()):
        groups.setdefault(stratum, []).append(pid)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)
    chosen: list[str] = []
    while len(chosen) < size and any(groups.values()):
        for stratum in sorted(groups):
            if groups[stratum] and len(chosen) < size:
                chosen.append(groups[stratum].pop())
    return sorted(chosen)


# -- closing the set over lookups to patients --------------------------------------------------------------


def _patient_links(spec: MappingSpec) -> list[tuple[TableMap, list[str]]]:
    """Loaded maps with the source paths of their lookups (and parties) whose parent is a patient contact."""
    def is_patient(parent: str) -> bool:
        table = spec.table(parent)
        return table.source_table == PATIENT_TABLE and table.action in ("upsert", "update")

    out: list[tuple[TableMap, list[str]]] = []
    for table_map in spec.enabled_tables():
        if table_map.action not in ("upsert", "update"):
            continue
        paths = [lk.source for lk in table_map.lookups if is_patient(lk.parent)]
        paths += [p.source for p in table_map.parties if is_patient(p.parent)]
        if paths:
            out.append((table_map, paths))
    return out


def _resolve(path: str, row: dict[str, Any], references: dict[str, dict[str, dict[str, Any]]]) -> str | None:
    first, hops = parse_path(path)
    value = row.get(first)
    for hop in hops:
        if value is None:
            return None
        ref = references.get(hop.table, {}).get(str(value))
        value = ref.get(hop.column) if ref else None
    text = str(value).strip() if value is not None else ""
    return text or None


def build_scope(reader: BundleReader, spec: MappingSpec, patients: Iterable[str], *, size: int = DEFAULT_PATIENTS,
                seed: int = SEED) -> SampleScope:
    """The sample's scope: `patients` plus, to a fixed point, every patient contact a sampled row binds to."""
    patients = sorted(set(patients))
    links = _patient_links(spec)
    hop_tables = sorted({hop.table for _, paths in links for path in paths for hop in parse_path(path)[1]})
    references: dict[str, dict[str, dict[str, Any]]] = {}
    for table in hop_tables:
        key = get_table(table).key
        # Only the columns a hop reads: the table's rows are referenced, not kept.
        columns = {hop.column for _, paths in links for path in paths for hop in parse_path(path)[1]
                   if hop.table == table}
        references[table] = {str(row[key]): {c: row.get(c) for c in columns} for row in rows_of(reader, table)}
    scope = SampleScope(patients=patients, contacts=list(patients), size=size, seed=seed)
    found = set(scope.contacts)
    # Rows of other tables are in the sample by their patient, which never changes: one streamed pass.
    for table_map, paths in links:
        if table_map.source_table != PATIENT_TABLE:
            for row in rows_of(reader, table_map.source_table):
                if table_map.selects(row) and in_sample(table_map.source_table, row, scope):
                    found.update(v for v in (_resolve(p, row, references) for p in paths) if v is not None)
    # A contact row joins the sample when its contact does, and then binds to further contacts: what each
    # patient row binds to does not depend on the scope, so it is resolved once and kept as ids (the whole
    # patient table, kept as rows for the fixed point, held 123 MB for the 1M-record bench's 38,018 patients).
    # Tuples, not sets: one per patient with a link (a set is four times a tuple's size for one or two ids).
    binds: dict[str, tuple[str, ...]] = {}
    contact_links = [(table_map, paths) for table_map, paths in links if table_map.source_table == PATIENT_TABLE]
    for row in rows_of(reader, PATIENT_TABLE) if contact_links else ():
        for table_map, paths in contact_links:
            if table_map.selects(row):
                targets = tuple(v for v in (_resolve(p, row, references) for p in paths) if v is not None)
                if targets:
                    pid = str(row.get("patient_id"))
                    binds[pid] = (*binds.get(pid, ()), *targets)
    frontier = [contact for contact in found if contact in binds]
    while frontier:
        for target in binds[frontier.pop()]:
            if target not in found:
                found.add(target)
                if target in binds:
                    frontier.append(target)
    return SampleScope(patients=patients, contacts=sorted(found), size=size, seed=seed)


# -- the stored scope ----------------------------------------------------------------------------------------


def choose_scope(rt: Runtime, migration: Migration, reader: BundleReader, spec: MappingSpec,
                 size: int) -> SampleScope:
    """Pick the stratified patients, close the set, and keep it as the run's `sample/scope.json`."""
    scope = build_scope(reader, spec, select_sample(reader, size), size=size)
    rt.artifacts.put_json(migration.migration_id, SCOPE, scope.model_dump(mode="json"))
    return scope


def stored_scope(rt: Runtime, migration: Migration) -> SampleScope:
    """The scope the current sample run chose (NotFound-like errors propagate: no sample was chosen)."""
    return SampleScope.model_validate(rt.artifacts.get_json(migration.migration_id, SCOPE))
