"""The customer-facing HTTP API (JSON under /api). Every route reads the caller's tenant first; another
tenant's migration does not exist for it (404).

    POST /migrations                          create; returns the migration and a write-only upload SAS
    POST /migrations/{id}/upload-sas          a fresh upload SAS (the old one expires within 24 h)
    POST /migrations/{id}/start               name the uploaded bundle and start the orchestration
    GET  /migrations/{id}                     the migration, its orchestration status and progress
    GET  /migrations/{id}/discovery           the discovery report (JSON, or the summary as text/markdown)
    GET  /migrations/{id}/mapping             the proposal and the draft field map
    PUT  /migrations/{id}/mapping             replace the draft (refused with field-level errors)
    POST /migrations/{id}/mapping/approve     freeze the draft; the orchestration goes on
    GET  /migrations/{id}/schema-plan         the schema plan and its report
    POST /migrations/{id}/schema-plan/approve approve it (optionally choosing a fallback owner first)
    GET  /migrations/{id}/report              the final report (JSON, or markdown)
"""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from functions import names
from functions.http import api_route, json_response, problem, read_model
from shared.errors import Fatal
from shared.identity import Caller, caller_from_headers
from shared.pipeline import bundle, finish, mapping, schema
from shared.runtime import runtime
from shared.state.migrations import Migration, StageProgress, Target
from shared.state.upload_sas import UploadGrant, grant_upload

bp = df.Blueprint()


class NotPermitted(Fatal):
    """The caller's role does not allow this action."""

    code = "not_permitted"


class WrongStage(Fatal):
    """The migration is not at the stage this action belongs to."""

    code = "wrong_stage"


class CreateMigrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="migration", min_length=1, max_length=120)
    """A label for people (for example the practice's site name); not patient data."""
    target: Target
    approval_timeout_hours: float = Field(default=168.0, gt=0, le=24 * 30)


class CreatedMigration(BaseModel):
    migration: Migration
    upload: UploadGrant


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SchemaApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fallback_owner: str | None = Field(default=None, max_length=64)
    """Choose (or change) the fallback owner: the plan is made again and waits for another approval."""


class MigrationView(BaseModel):
    migration: Migration
    runtime_status: str | None
    custom_status: object | None
    progress: list[StageProgress]


def _operator(caller: Caller) -> Caller:
    if "operator" not in caller.roles:
        raise NotPermitted("this action needs the operator role")
    return caller


def _load(req: func.HttpRequest) -> tuple[Caller, Migration]:
    caller = caller_from_headers(req.headers)
    return caller, runtime().migrations.get(caller.tenant_id, req.route_params["migration_id"])


def _wants_text(req: func.HttpRequest) -> bool:
    return req.params.get("format") == "markdown" or "text/markdown" in (req.headers.get("accept") or "")


@bp.route(route="migrations", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api_route
async def create_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller = _operator(caller_from_headers(req.headers))
    request = read_model(req, CreateMigrationRequest)
    rt = runtime()
    migration = rt.migrations.create(caller.tenant_id, request.name, request.target)
    migration.approval_timeout_hours = request.approval_timeout_hours
    rt.migrations.save(migration)
    grant = grant_upload(rt.blobs, rt.settings.table_prefix, migration.migration_id, rt.settings.upload_sas_hours)
    return json_response(CreatedMigration(migration=migration, upload=grant), status=201)


@bp.route(route="migrations/{migration_id}/upload-sas", methods=["POST"])
@api_route
async def renew_upload_sas(req: func.HttpRequest) -> func.HttpResponse:
    caller, migration = _load(req)
    _operator(caller)
    rt = runtime()
    return json_response(grant_upload(rt.blobs, rt.settings.table_prefix, migration.migration_id,
                                      rt.settings.upload_sas_hours))


@bp.route(route="migrations/{migration_id}/start", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api_route
async def start_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = _load(req)
    _operator(caller)
    request = read_model(req, StartRequest)
    rt = runtime()
    if migration.instance_id is not None:
        status = await client.get_status(migration.instance_id)
        if status and status.runtime_status and status.runtime_status.value in ("Running", "Pending"):
            raise WrongStage(f"migration {migration.migration_id} is already running")
    if not bundle.bundle_uploaded(rt, migration.migration_id, request.bundle_id):
        raise WrongStage(f"bundle {request.bundle_id} has no manifest in the migration's container yet: "
                         f"run the agent's upload (the manifest goes last) and start again")
    migration.bundle_id = request.bundle_id
    migration.instance_id = await client.start_new(
        names.MIGRATION_ORCHESTRATOR, instance_id=migration.migration_id,
        client_input={"migration_id": migration.migration_id, "tenant_id": caller.tenant_id,
                      "approval_timeout_hours": migration.approval_timeout_hours},
    )
    migration.stage = "started"
    rt.migrations.save(migration)
    return json_response(migration, status=202)


@bp.route(route="migrations/{migration_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api_route
async def get_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    _, migration = _load(req)
    status = await client.get_status(migration.instance_id) if migration.instance_id else None
    view = MigrationView(
        migration=migration,
        runtime_status=status.runtime_status.value if status and status.runtime_status else None,
        custom_status=status.custom_status if status else None,
        progress=runtime().migrations.progress(migration.migration_id),
    )
    return json_response(view)


@bp.route(route="migrations/{migration_id}/discovery", methods=["GET"])
@api_route
async def get_discovery(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = _load(req)
    artifacts = runtime().artifacts
    if _wants_text(req):
        text = artifacts.get_bytes(migration.migration_id, "discovery/summary.md")
        return func.HttpResponse(text, mimetype="text/markdown", charset="utf-8")
    return func.HttpResponse(artifacts.get_bytes(migration.migration_id, "discovery/report.json"),
                             mimetype="application/json")


@bp.route(route="migrations/{migration_id}/mapping", methods=["GET"])
@api_route
async def get_mapping(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = _load(req)
    rt = runtime()
    return json_response({
        "approved_version": migration.mapping_version,
        "proposal": rt.artifacts.get_json(migration.migration_id, mapping.PROPOSAL),
        "draft": mapping.draft(rt, migration),
    })


@bp.route(route="migrations/{migration_id}/mapping", methods=["PUT"])
@api_route
async def put_mapping(req: func.HttpRequest) -> func.HttpResponse:
    caller, migration = _load(req)
    _operator(caller)
    if migration.mapping_version is not None:
        raise WrongStage("the field map is already approved and frozen for this migration")
    try:
        data = json.loads(req.get_body() or b"{}")
    except ValueError:
        return problem(400, "invalid_request", "The request body is not JSON", "send the field map as JSON")
    if not isinstance(data, dict):
        return problem(400, "invalid_request", "The field map must be a JSON object", "send the map object")
    from shared.errors import MappingInvalid

    try:
        spec = mapping.save_draft(runtime(), migration, data)
    except MappingInvalid as exc:
        return problem(422, "mapping_invalid", "The field map is invalid", exc.message,
                       errors=exc.attrs.get("errors"))
    return json_response({"version": spec.version, "content_hash": spec.content_hash()})


@bp.route(route="migrations/{migration_id}/mapping/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api_route
async def approve_mapping(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = _load(req)
    _operator(caller)
    if migration.instance_id is None:
        raise WrongStage("start the migration before approving its field map")
    if migration.mapping_version is not None:
        raise WrongStage("the field map is already approved")
    approval = mapping.approve_draft(runtime(), migration, approved_by=caller.user_id)
    await client.raise_event(migration.instance_id, names.MAPPING_APPROVED_EVENT, approval.model_dump())
    return json_response(approval)


@bp.route(route="migrations/{migration_id}/schema-plan", methods=["GET"])
@api_route
async def get_schema_plan(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = _load(req)
    return func.HttpResponse(runtime().artifacts.get_bytes(migration.migration_id, schema.PLAN),
                             mimetype="application/json")


@bp.route(route="migrations/{migration_id}/schema-plan/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api_route
async def approve_schema_plan(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = _load(req)
    _operator(caller)
    request = read_model(req, SchemaApproval)
    rt = runtime()
    if migration.instance_id is None or not rt.artifacts.exists(migration.migration_id, schema.PLAN):
        raise WrongStage("there is no schema plan to approve yet")
    if request.fallback_owner is not None and request.fallback_owner != migration.target.fallback_owner:
        migration.target.fallback_owner = request.fallback_owner
        rt.migrations.save(migration)
        await client.raise_event(migration.instance_id, names.SCHEMA_APPROVED_EVENT, {"replan": True})
        return json_response({"replanning": True}, status=202)
    schema.stored_plan(rt, migration).require_approvable()
    migration.schema_approved_by = caller.user_id
    rt.migrations.save(migration)
    await client.raise_event(migration.instance_id, names.SCHEMA_APPROVED_EVENT, {"approved": True})
    return json_response({"approved": True})


@bp.route(route="migrations/{migration_id}/report", methods=["GET"])
@api_route
async def get_report(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = _load(req)
    artifacts = runtime().artifacts
    if _wants_text(req):
        return func.HttpResponse(artifacts.get_bytes(migration.migration_id, finish.REPORT_TEXT),
                                 mimetype="text/markdown", charset="utf-8")
    return func.HttpResponse(artifacts.get_bytes(migration.migration_id, finish.REPORT_JSON),
                             mimetype="application/json")
