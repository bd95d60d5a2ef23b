"""The customer-facing HTTP API: create a migration, read it with its orchestration status."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from functions import names
from functions.http import api_route, json_response, read_model
from shared.identity import caller_from_headers
from shared.state.migrations import Migration, StageProgress, migration_repository

bp = df.Blueprint()


class CreateMigrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="migration", min_length=1, max_length=120)
    """A label for people (for example the practice's site name); not patient data."""


class MigrationView(BaseModel):
    migration: Migration
    runtime_status: str | None
    custom_status: object | None
    progress: list[StageProgress]


@bp.route(route="migrations", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api_route
async def create_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller = caller_from_headers(req.headers)
    request = read_model(req, CreateMigrationRequest)
    repository = runtime().migrations
    migration = repository.create(caller.tenant_id, request.name)
    # The migration id doubles as the orchestration's instance id: one orchestration per migration.
    migration.instance_id = await client.start_new(
        names.MIGRATION_ORCHESTRATOR, instance_id=migration.migration_id,
        client_input={"migration_id": migration.migration_id, "tenant_id": caller.tenant_id},
    )
    migration.stage = "started"
    repository.save(migration)
    return json_response(migration, status=201)


@bp.route(route="migrations/{migration_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api_route
async def get_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller = caller_from_headers(req.headers)
    repository = runtime().migrations
    migration = repository.get(caller.tenant_id, req.route_params["migration_id"])
    status = await client.get_status(migration.instance_id) if migration.instance_id else None
    view = MigrationView(
        migration=migration,
        runtime_status=status.runtime_status.value if status and status.runtime_status else None,
        custom_status=status.custom_status if status else None,
        progress=repository.progress(migration.migration_id),
    )
    return json_response(view)
