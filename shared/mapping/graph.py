"""Load order from the map's lookups: waves of table maps, and the lookups a cycle defers to a second pass.

A table map depends on the maps its lookups, parties and update key point at (its parents must exist
before a bind to them works). Maps of one wave have no dependency between them and may load in
parallel. A cycle (a self-reference such as the patient's guarantor, or two maps pointing at each
other) is broken by writing the rows first without the lookups inside the cycle and binding those
in a second pass after all waves. Resolve maps (providers -> existing systemusers) are settled by
the schema plan and attachment maps by the attachment step, so neither is a wave member.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.mapping.spec import MappingSpec, TableMap


class DeferredLookup(BaseModel):
    """A lookup written in the second pass: `table`'s `nav` pointing at `parent`."""

    model_config = ConfigDict(frozen=True)

    table: str
    nav: str
    parent: str


class LoadPlan(BaseModel):
    """Ordered waves of table-map names plus the second-pass lookups."""

    model_config = ConfigDict(frozen=True)

    waves: list[list[str]]
    deferred: list[DeferredLookup]
    edges: list[tuple[str, str]]
    """(child, parent) pairs the order honours (deferred ones excluded)."""

    def deferred_navs(self, table: str) -> set[str]:
        """Navigation properties of `table` to strip from the first pass (see `rows.split_deferred`)."""
        return {d.nav for d in self.deferred if d.table == table}

    def wave_of(self, table: str) -> int:
        for i, wave in enumerate(self.waves):
            if table in wave:
                return i
        raise KeyError(table)


def _dependencies(t: TableMap, loadable: set[str]) -> list[tuple[str, str | None]]:
    """(parent map, nav or None for non-deferrable dependencies) for one map."""
    out: list[tuple[str, str | None]] = []
    for lk in t.lookups:
        if lk.parent in loadable:
            out.append((lk.parent, lk.nav))
    for p in t.parties:
        if p.parent in loadable:
            out.append((p.parent, None))
    if t.action == "update" and t.key.parent in loadable:
        out.append((t.key.parent, None))  # the record it updates must exist first
    return out


def _sccs(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative, deterministic for sorted input)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))
    return out


def plan_loads(spec: MappingSpec) -> LoadPlan:
    """Waves and second-pass lookups for the enabled upsert/update maps of `spec`.

    Within a cycle every lookup between its members is deferred (simple to explain, and a second
    pass costs one PATCH per row that has such a value). A cycle that only non-deferrable
    dependencies form (an update key or an activity party) cannot be broken; it would mean a map
    that updates records of a table that depends on it, which `check_mapping` never produces, and
    raises `ValueError` naming the maps.
    """
    maps = [t for t in spec.enabled_tables() if t.action in ("upsert", "update")]
    loadable = {t.name for t in maps}
    names = [t.name for t in maps]
    deps = {t.name: _dependencies(t, loadable) for t in maps}
    edges: dict[str, set[str]] = {n: {p for p, _ in deps[n]} for n in names}
    comp_of: dict[str, int] = {}
    for i, comp in enumerate(_sccs(names, edges)):
        for n in comp:
            comp_of[n] = i
    deferred: list[DeferredLookup] = []
    kept: dict[str, set[str]] = {n: set() for n in names}
    for n in names:
        for parent, nav in deps[n]:
            if comp_of[parent] == comp_of[n]:
                if nav is None:
                    raise ValueError(f"maps {n} and {parent} depend on each other through an update or party")
                d = DeferredLookup(table=n, nav=nav, parent=parent)
                if d not in deferred:
                    deferred.append(d)
            else:
                kept[n].add(parent)
    # Longest-path layering: a map goes one wave after its latest parent.
    level: dict[str, int] = {}

    def depth(n: str) -> int:
        if n in level:
            return level[n]
        level[n] = 1 + max((depth(p) for p in kept[n]), default=-1)
        return level[n]

    for n in names:
        depth(n)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for n in names:  # map order inside a wave follows the map file
        waves[level[n]].append(n)
    return LoadPlan(
        waves=waves,
        deferred=deferred,
        edges=sorted((n, p) for n in names for p in kept[n]),
    )


__all__ = ["DeferredLookup", "LoadPlan", "plan_loads"]
