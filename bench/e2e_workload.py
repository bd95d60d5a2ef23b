"""The migration's records as the load writes them, and the CPU the product's transforms spend on them.

Runs, in the benchmark's own process, exactly what `shared.pipeline.load.load_batch` runs before it writes:
the load's transform context (`load._context`), each part of each loaded map read from Blob, rows selected,
child rows gathered, `transform_row`, `split_deferred`, `final_state`. CPU time (process_time) is measured
per step, so the benchmark can say whether the transform could ever be the bottleneck. The resulting
`Workload` (the same records, per map in dependency-wave order) feeds the naive and SDK loaders.
Nothing is written anywhere.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pydantic import BaseModel

from shared.dataverse.client import DataverseClient
from shared.dataverse.writer import TableTarget, WriteRow
from shared.dentrix.reader import LoadedRow
from shared.mapping.graph import plan_loads
from shared.mapping.rows import create_only_columns, final_state, record_key, split_deferred, transform_row
from shared.pipeline import load
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.runtime import Runtime
from shared.state.migrations import Migration


@dataclasses.dataclass
class TableWrites:
    """One loaded map's records: first-pass payloads, the activities to close, the second-pass lookups."""

    map_name: str
    action: str
    target: TableTarget
    rows: list[WriteRow]
    closing: dict[str, dict[str, int]]
    deferred: dict[str, dict[str, Any]]


@dataclasses.dataclass
class Workload:
    waves: list[list[TableWrites]]

    @property
    def tables(self) -> list[TableWrites]:
        return [t for wave in self.waves for t in wave]

    @property
    def records(self) -> int:
        return sum(len(t.rows) for t in self.tables)


class TransformCost(BaseModel):
    """CPU seconds (this process) per step over the whole bundle, and the records they produced."""

    records: int
    source_rows: int
    context_cpu: float
    """Building the load's context: reference tables, parent ids, owners (once per worker process)."""
    read_cpu: float
    """Reading and validating the parts (gzip JSON Lines -> typed rows) and selecting the map's rows."""
    children_cpu: float
    """Gathering child rows per part (treatment-plan lines of a part's plans)."""
    transform_cpu: float
    """`record_key` + `transform_row` + `split_deferred` + `final_state`: the transform itself."""
    wall_seconds: float
    closing: int = 0
    """Records the load closes after writing them (completed/canceled activities): one PATCH each today."""
    deferred: int = 0
    """Records with a second-pass lookup (a dependency cycle): one PATCH each today."""

    def per_1000(self, cpu: float) -> float:
        return cpu * 1000 / max(self.records, 1)


async def transform_workload(rt: Runtime, migration: Migration, client: DataverseClient,
                             collect: bool = True) -> tuple[Workload, TransformCost]:
    """Transform every loaded map's rows as the load does; `collect=False` keeps no records (memory)."""
    started = time.monotonic()
    spec = approved_mapping(rt, migration).spec
    reader = open_bundle(rt, migration)
    cpu = time.process_time()
    context = await load._context(rt, migration, client, reader, spec)
    context_cpu = time.process_time() - cpu
    plan = plan_loads(spec)
    deferred_navs: dict[str, set[str]] = {}
    for d in plan.deferred:
        deferred_navs.setdefault(d.table, set()).add(d.nav)
    create_only = create_only_columns()
    read_cpu = children_cpu = transform_cpu = 0.0
    records = source_rows = closing = deferred = 0
    waves: list[list[TableWrites]] = []
    for wave in plan.waves:
        out: list[TableWrites] = []
        for name in wave:
            table_map = spec.table(name)
            if table_map.action not in ("upsert", "update"):
                continue
            target = load._target(spec, table_map, context, {})
            writes = TableWrites(name, table_map.action, target, [], {}, {})
            navs = deferred_navs.get(name, set())
            for part in range(reader.part_count(table_map.source_table)):
                cpu = time.process_time()
                items = list(reader.iter_part(table_map.source_table, part))
                selected = [(item.key, row) for item in items if isinstance(item, LoadedRow)
                            for row in (item.row.model_dump(),) if table_map.selects(row)]
                read_cpu += time.process_time() - cpu
                source_rows += len(items)
                part_context = context
                cpu = time.process_time()
                if load.child_tables_of(table_map):
                    own = {key for key, _ in selected}
                    part_context = dataclasses.replace(
                        context, children=load._children_for(reader, table_map, own), cache={})
                children_cpu += time.process_time() - cpu
                cpu = time.process_time()
                for key, row in selected:
                    sid = record_key(table_map, row, part_context) or key
                    payload, errors = transform_row(table_map, row, part_context)
                    if any(e.fatal for e in errors):
                        continue
                    payload, later = split_deferred(payload, navs)
                    payload.pop(spec.source_id_column, None)
                    state = final_state(table_map, row, part_context)
                    records += 1
                    closing += state is not None
                    deferred += bool(later)
                    if not collect:
                        continue
                    if table_map.action == "update":
                        for column in create_only:
                            payload.pop(column, None)
                    writes.rows.append(WriteRow(source_key=sid, values=payload))
                    if state is not None:
                        writes.closing[sid] = state
                    if later:
                        writes.deferred[sid] = later
                transform_cpu += time.process_time() - cpu
            out.append(writes)
        waves.append(out)
    cost = TransformCost(records=records, source_rows=source_rows, context_cpu=context_cpu, read_cpu=read_cpu,
                         children_cpu=children_cpu, transform_cpu=transform_cpu,
                         wall_seconds=time.monotonic() - started, closing=closing, deferred=deferred)
    return Workload(waves), cost
