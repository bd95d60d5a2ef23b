"""Plan the Dataverse schema from the approved map (checked against the licence, owners resolved),
then build it idempotently in the target environment, journaling every component the build creates.

The schema journal (`schema/created.json`) is append-only: a component goes in just before its
create is sent (so a create whose answer was lost still counts), and a re-run that finds it existing
neither adds nor drops anything. It is what rollback's `remove_schema` deletes, and nothing else: a
standard table, or a column someone else made, never appears in it."""

from __future__ import annotations

from pydantic import BaseModel

from shared.dataverse.schema import SchemaBuilder
from shared.dentrix.reader import LoadedRow
from shared.mapping.schema_plan import SchemaPlan, SystemUserRef, plan_schema, providers_from_rows
from shared.pipeline.bundle import open_bundle
from shared.pipeline.mapping import approved_mapping
from shared.pipeline.target import dataverse_client
from shared.runtime import Runtime
from shared.state.migrations import Migration

PLAN = "schema/plan.json"
BUILD = "schema/build.json"
CREATED = "schema/created.json"


class SchemaPlanInfo(BaseModel):
    mapping_version: int
    custom_tables: int
    custom_table_limit: int | None
    unresolved_providers: int
    approvable: bool
    problems: list[str]
    already_approved: bool = False
    """An approvable plan of a migration whose schema was approved before (a re-run): go on."""


class SchemaBuildInfo(BaseModel):
    writes: int
    published: bool


async def plan(rt: Runtime, migration: Migration) -> SchemaPlanInfo:
    """Plan from the approved map, the bundle's providers and the environment's systemusers."""
    mapping = approved_mapping(rt, migration)
    reader = open_bundle(rt, migration)
    provider_table = next((t.source_table for t in mapping.spec.enabled_tables() if t.action == "resolve"), "provider")
    rows = [item.row.model_dump() for item in reader.iter_table(provider_table) if isinstance(item, LoadedRow)]
    async with dataverse_client(rt, migration) as client:
        users = [SystemUserRef.model_validate(u) for u in await client.list_systemusers()]
    schema_plan = plan_schema(mapping, licence=migration.target.licence,
                              providers=providers_from_rows(mapping.spec, rows), systemusers=users,
                              fallback_owner=migration.target.fallback_owner)
    rt.artifacts.put_json(migration.migration_id, PLAN, schema_plan.model_dump(mode="json", by_alias=True))
    report = schema_plan.report
    return SchemaPlanInfo(mapping_version=schema_plan.mapping_version, custom_tables=report.custom_table_count,
                          custom_table_limit=report.custom_table_limit,
                          unresolved_providers=len(report.unresolved_providers),
                          approvable=schema_plan.approvable, problems=[p.code for p in report.problems],
                          already_approved=schema_plan.approvable and migration.schema_approved_by is not None)


def created_components(rt: Runtime, migration_id: str) -> list[str]:
    """The schema journal: `kind:name` of every component a build of this migration created, in order."""
    if not rt.artifacts.exists(migration_id, CREATED):
        return []
    return list(rt.artifacts.get_json(migration_id, CREATED).get("components", []))


def stored_plan(rt: Runtime, migration: Migration) -> SchemaPlan:
    return SchemaPlan.model_validate(rt.artifacts.get_json(migration.migration_id, PLAN))


async def build(rt: Runtime, migration: Migration) -> SchemaBuildInfo:
    """Build the approved plan (refused before any write if it is not approvable); safe to run twice."""
    schema_plan = stored_plan(rt, migration)
    schema_plan.require_approvable()
    journal = created_components(rt, migration.migration_id)

    def note(component: str) -> None:
        if component not in journal:
            journal.append(component)
            rt.artifacts.put_json(migration.migration_id, CREATED, {"components": journal})

    async with dataverse_client(rt, migration) as client:
        info = await SchemaBuilder(client, schema_plan.schema_spec, before_create=note).build()
    rt.artifacts.put_json(migration.migration_id, BUILD, info)
    return SchemaBuildInfo(writes=info.writes, published=info.published)
