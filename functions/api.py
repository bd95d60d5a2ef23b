"""The customer-facing HTTP API (JSON under /api). Every route reads the caller's tenant first; another
tenant's migration does not exist for it (404). Every route declares its contract with `documented`
(functions/openapi.py), served as OpenAPI 3.1 at `GET /api/openapi.json`.

    GET  /openapi.json                        the OpenAPI 3.1 document of this API
    GET  /migrations                          the tenant's migrations, filtered and paged
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
    POST /migrations/{id}/sample/approve      approve the sample run's diff; the full run goes on
    POST /migrations/{id}/sample/reject       reject it; the run ends `sample_rejected`
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions import logging_policy, names
from functions.http import InvalidRequest, api_route, json_response, problem, read_model, stored_report
from functions.openapi import MIGRATION_ID_PATTERN, documented, openapi_document
from functions.views import (
    ListQuery,
    MigrationList,
    OperatorView,
    list_migrations,
    management_links,
    operator_view,
)
from shared.errors import Fatal
from shared.identity import Caller, caller_from_request
from shared.pipeline import bundle, finish, mapping, schema
from shared.runtime import runtime
from shared.state.idempotency import KEY_PATTERN, IdempotencyStore, StoredResponse, fingerprint
from shared.state.migrations import Migration, Target
from shared.state.upload_sas import UploadGrant, grant_upload, seal_bundle

bp = df.Blueprint()
logging_policy.apply()  # the function app imports this module first: no request URL reaches the logs


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
    sample_patients: int = Field(default=150, ge=0, le=300)
    """Patients in the sample run before the full run: 100-300, or 0 for no sample stage."""

    @field_validator("sample_patients")
    @classmethod
    def _sample_size(cls, value: int) -> int:
        if value != 0 and value < 100:
            raise ValueError("the sample takes 100-300 patients (0: no sample stage)")
        return value


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


class SchemaApprovalResult(BaseModel):
    approved: bool = False
    replanning: bool = False
    """True when a new fallback owner was chosen: the plan is made again and needs another approval."""


class MappingView(BaseModel):
    approved_version: int | None
    proposal: dict[str, Any]
    draft: dict[str, Any]


class SavedMapping(BaseModel):
    version: int
    content_hash: str


def _caller(req: func.HttpRequest) -> Caller:
    return caller_from_request(req.headers, req.params, runtime().settings.automation_keys)


def _operator(caller: Caller) -> Caller:
    if "operator" not in caller.roles:
        raise NotPermitted("this action needs the operator role")
    return caller


async def _load(req: func.HttpRequest, role: str = "viewer") -> tuple[Caller, Migration]:
    """The caller and its migration: 404 for another tenant's (it does not exist for this caller), then the
    role check, so a viewer learns nothing more about other tenants than an operator does. The storage read
    runs off the event loop, which every async function of the worker shares."""
    return await asyncio.to_thread(_load_now, req, role)


def _load_now(req: func.HttpRequest, role: str) -> tuple[Caller, Migration]:
    caller = _caller(req)
    migration_id = req.route_params.get("migration_id", "")
    if not re.fullmatch(MIGRATION_ID_PATTERN, migration_id):
        raise InvalidRequest("the migration id is malformed: expected m- and 16 hexadecimal digits")
    migration = runtime().migrations.get(caller.tenant_id, migration_id)
    if role == "operator":
        _operator(caller)
    return caller, migration


_idempotency: IdempotencyStore | None = None


async def _once(req: func.HttpRequest, caller: Caller,
                work: Callable[[], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    """Run `work` once per `Idempotency-Key`: a retry with the same key answers the stored response."""
    global _idempotency
    key = req.headers.get("idempotency-key")
    if key is None:
        return await work()
    if not re.fullmatch(KEY_PATTERN, key):
        raise InvalidRequest("the Idempotency-Key header must be 1-128 letters, digits or . _ : -")
    if _idempotency is None:
        rt = runtime()
        _idempotency = IdempotencyStore(rt.tables, rt.settings.table_prefix)
    request = fingerprint(req.method, urlsplit(req.url).path, req.get_body() or b"")
    reservation = _idempotency.reserve(caller.tenant_id, key, request)
    if reservation.replay is not None:
        stored = reservation.replay
        return func.HttpResponse(stored.body, status_code=stored.status, mimetype=stored.mimetype,
                                 headers={"Idempotent-Replayed": "true"})
    try:
        response = await work()
    except BaseException:
        _idempotency.release(caller.tenant_id, reservation.row_key)
        raise
    if response.status_code >= 400:
        _idempotency.release(caller.tenant_id, reservation.row_key)
    else:
        _idempotency.complete(caller.tenant_id, reservation.row_key, StoredResponse(
            response.status_code, (response.get_body() or b"").decode(), response.mimetype or "application/json"))
    return response


def _wants_text(req: func.HttpRequest) -> bool:
    return req.params.get("format") == "markdown" or "text/markdown" in (req.headers.get("accept") or "")


def idempotent(handler: Callable[..., Awaitable[func.HttpResponse]]) -> Callable[..., Awaitable[func.HttpResponse]]:
    """Honour `Idempotency-Key` on a route that starts work (goes under `@api_route`)."""

    @functools.wraps(handler)
    async def wrapper(req: func.HttpRequest, *args: Any, **kwargs: Any) -> func.HttpResponse:
        return await _once(req, _caller(req), lambda: handler(req, *args, **kwargs))

    return wrapper


@bp.route(route="openapi.json", methods=["GET"])
@documented("GET", "openapi.json", "The OpenAPI 3.1 document of this API", role="none",
            responses={200: "object"})
@api_route
async def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(openapi_document())


@bp.route(route="migrations", methods=["GET"])
@documented("GET", "migrations", "The tenant's migrations, filtered and paged by migration id", role="viewer",
            query=ListQuery, responses={200: MigrationList})
@api_route
async def list_tenant_migrations(req: func.HttpRequest) -> func.HttpResponse:
    caller = _caller(req)
    # `code` is the function key in the query string (the host's, or an automation key): not a filter.
    query = ListQuery.model_validate({k: v for k, v in req.params.items() if k != "code"})
    return json_response(list_migrations(runtime(), caller.tenant_id, query))


@bp.route(route="migrations", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations", "Create a migration; returns it and the agent's upload SAS", role="operator",
            request=CreateMigrationRequest, responses={201: CreatedMigration}, idempotent=True)
@api_route
async def create_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller = _operator(_caller(req))
    request = read_model(req, CreateMigrationRequest)

    async def work() -> func.HttpResponse:
        rt = runtime()
        migration = rt.migrations.create(caller.tenant_id, request.name, request.target)
        migration.approval_timeout_hours = request.approval_timeout_hours
        migration.sample_patients = request.sample_patients
        rt.migrations.save(migration)
        grant = grant_upload(rt.blobs, rt.settings.table_prefix, migration.migration_id,
                             rt.settings.upload_sas_hours)
        return json_response(CreatedMigration(migration=migration, upload=grant), status=201)

    return await _once(req, caller, work)


@bp.route(route="migrations/{migration_id}/upload-sas", methods=["POST"])
@documented("POST", "migrations/{migration_id}/upload-sas", "A fresh create/write-only upload SAS (<= 24 h)",
            role="operator", responses={200: UploadGrant})
@api_route
async def renew_upload_sas(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
    rt = runtime()
    return json_response(grant_upload(rt.blobs, rt.settings.table_prefix, migration.migration_id,
                                      rt.settings.upload_sas_hours))


@bp.route(route="migrations/{migration_id}/start", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/start", "Name the uploaded bundle and start the migration",
            role="operator", request=StartRequest, responses={202: Migration}, idempotent=True, errors=(409,))
@api_route
async def start_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = await _load(req, "operator")
    request = read_model(req, StartRequest)
    return await _once(req, caller, lambda: _start(client, caller, migration, request))


async def _start(client: df.DurableOrchestrationClient, caller: Caller, migration: Migration,
                 request: StartRequest) -> func.HttpResponse:
    rt = runtime()
    if migration.instance_id is not None:
        status = await client.get_status(migration.instance_id)
        if status and status.runtime_status and status.runtime_status.value in ("Running", "Pending"):
            raise WrongStage(f"migration {migration.migration_id} is already running")
    if not bundle.bundle_uploaded(rt, migration.migration_id, request.bundle_id):
        raise WrongStage(f"bundle {request.bundle_id} has no manifest in the migration's container yet: "
                         f"run the agent's upload (the manifest goes last) and start again")
    # From here on the manifest is the applied one: no SAS may overwrite or delete it.
    seal_bundle(rt.blobs, rt.settings.table_prefix, migration.migration_id, request.bundle_id)
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
@documented("GET", "migrations/{migration_id}", "Operator view: stage, per-table progress, errors by code, "
            "timings and the Durable management links", role="viewer", responses={200: OperatorView})
@api_route
async def get_migration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    _, migration = await _load(req)
    status = await client.get_status(migration.instance_id) if migration.instance_id else None
    links = management_links(client.create_http_management_payload(migration.instance_id)) \
        if migration.instance_id else None
    return json_response(await asyncio.to_thread(operator_view, runtime(), migration, status, links))


@bp.route(route="migrations/{migration_id}/discovery", methods=["GET"])
@documented("GET", "migrations/{migration_id}/discovery", "The discovery report", role="viewer",
            responses={200: "object"}, text_alternative=True)
@api_route
async def get_discovery(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    artifacts = runtime().artifacts
    if _wants_text(req):
        text = artifacts.get_bytes(migration.migration_id, "discovery/summary.md")
        return func.HttpResponse(text, mimetype="text/markdown", charset="utf-8")
    return func.HttpResponse(artifacts.get_bytes(migration.migration_id, "discovery/report.json"),
                             mimetype="application/json")


@bp.route(route="migrations/{migration_id}/mapping", methods=["GET"])
@documented("GET", "migrations/{migration_id}/mapping", "The proposal and the draft field map", role="viewer",
            responses={200: MappingView})
@api_route
async def get_mapping(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    rt = runtime()
    return json_response(MappingView(
        approved_version=migration.mapping_version,
        proposal=rt.artifacts.get_json(migration.migration_id, mapping.PROPOSAL),
        draft=mapping.draft(rt, migration),
    ))


@bp.route(route="migrations/{migration_id}/mapping", methods=["PUT"])
@documented("PUT", "migrations/{migration_id}/mapping", "Replace the draft field map (validated field by field)",
            role="operator", request="object", responses={200: SavedMapping}, errors=(409, 422))
@api_route
async def put_mapping(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req, "operator")
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
                       errors=exc.errors)
    return json_response(SavedMapping(version=spec.version, content_hash=spec.content_hash()))


@bp.route(route="migrations/{migration_id}/mapping/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/mapping/approve", "Freeze the draft field map; the migration goes on",
            role="operator", responses={200: mapping.ApprovalInfo}, idempotent=True, errors=(409, 422))
@api_route
async def approve_mapping(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = await _load(req, "operator")
    if req.get_body() not in (b"", b"{}"):
        raise InvalidRequest("this route takes no body (or an empty JSON object)")

    async def work() -> func.HttpResponse:
        if migration.instance_id is None:
            raise WrongStage("start the migration before approving its field map")
        if migration.mapping_version is not None:
            raise WrongStage("the field map is already approved")
        approval = mapping.approve_draft(runtime(), migration, approved_by=caller.user_id)
        await client.raise_event(migration.instance_id, names.MAPPING_APPROVED_EVENT, approval.model_dump())
        return json_response(approval)

    return await _once(req, caller, work)


@bp.route(route="migrations/{migration_id}/schema-plan", methods=["GET"])
@documented("GET", "migrations/{migration_id}/schema-plan", "The schema plan and its report", role="viewer",
            responses={200: "object"})
@api_route
async def get_schema_plan(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    return func.HttpResponse(runtime().artifacts.get_bytes(migration.migration_id, schema.PLAN),
                             mimetype="application/json")


@bp.route(route="migrations/{migration_id}/schema-plan/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/schema-plan/approve", "Approve the schema plan (or choose a "
            "fallback owner, which plans again)", role="operator", request=SchemaApproval,
            responses={200: SchemaApprovalResult, 202: SchemaApprovalResult}, idempotent=True, errors=(409, 422))
@api_route
async def approve_schema_plan(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = await _load(req, "operator")
    request = read_model(req, SchemaApproval)
    return await _once(req, caller, lambda: _approve_schema(client, caller, migration, request))


async def _approve_schema(client: df.DurableOrchestrationClient, caller: Caller, migration: Migration,
                          request: SchemaApproval) -> func.HttpResponse:
    rt = runtime()
    if migration.instance_id is None or not rt.artifacts.exists(migration.migration_id, schema.PLAN):
        raise WrongStage("there is no schema plan to approve yet")
    if request.fallback_owner is not None and request.fallback_owner != migration.target.fallback_owner:
        migration.target.fallback_owner = request.fallback_owner
        rt.migrations.save(migration)
        await client.raise_event(migration.instance_id, names.SCHEMA_APPROVED_EVENT, {"replan": True})
        return json_response(SchemaApprovalResult(replanning=True), status=202)
    schema.stored_plan(rt, migration).require_approvable()
    migration.schema_approved_by = caller.user_id
    rt.migrations.save(migration)
    await client.raise_event(migration.instance_id, names.SCHEMA_APPROVED_EVENT, {"approved": True})
    return json_response(SchemaApprovalResult(approved=True))


@bp.route(route="migrations/{migration_id}/report", methods=["GET"])
@documented("GET", "migrations/{migration_id}/report", "The final report", role="viewer",
            responses={200: "object"}, text_alternative=True)
@api_route
async def get_report(req: func.HttpRequest) -> func.HttpResponse:
    _, migration = await _load(req)
    artifacts = runtime().artifacts
    if _wants_text(req):
        return func.HttpResponse(artifacts.get_bytes(migration.migration_id, finish.REPORT_TEXT),
                                 mimetype="text/markdown", charset="utf-8")
    return func.HttpResponse(artifacts.get_bytes(migration.migration_id, finish.REPORT_JSON),
                             mimetype="application/json")


# -- audit log and rollback (issue 6) -------------------------------------------------------------------
#    GET  /migrations/{id}/audit               the journal as CSV (filters: ?table=<map>&action=<action>)
#    POST /migrations/{id}/rollback            start the compensating rollback
#                                              ({"override_edited": false, "remove_schema": false})
#    GET  /migrations/{id}/rollback            the rollback's status and, once verified, its report


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override_edited: bool = False
    """Also undo records someone changed after the migration wrote them (default: keep and list them)."""
    remove_schema: bool = False
    """Then delete the tables, columns, keys, relationships and choices the migration created (only those,
    and not while they hold someone's data)."""


def _rollback_instance(migration: Migration) -> str:
    return f"{migration.migration_id}:rollback"


@bp.route(route="migrations/{migration_id}/audit", methods=["GET"])
@documented("GET", "migrations/{migration_id}/audit", "The journal as CSV (filters: table, action)", role="viewer",
            responses={200: "csv"})
@api_route
async def get_audit(req: func.HttpRequest) -> func.HttpResponse:
    from typing import get_args

    from shared.pipeline.audit import audit_lines
    from shared.state.journal import TAction

    _, migration = await _load(req)
    action = req.params.get("action") or None
    if action is not None and action not in get_args(TAction):
        return problem(400, "invalid_request", "Unknown action filter",
                       f"action must be one of {', '.join(get_args(TAction))}")
    # The journal is read lazily row by row; the host hands the body over in one piece.
    body = "".join(audit_lines(runtime(), migration.migration_id, table=req.params.get("table") or None,
                               action=action))
    return func.HttpResponse(body, mimetype="text/csv", charset="utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{migration.migration_id}-audit.csv"'})


@bp.route(route="migrations/{migration_id}/rollback", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/rollback", "Start rolling the migration back", role="operator",
            request=RollbackRequest, responses={202: "object"}, idempotent=True, errors=(409, 422))
@api_route
@idempotent
async def start_rollback(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = await _load(req)
    _operator(caller)
    request = read_model(req, RollbackRequest)
    if migration.instance_id is None or migration.mapping_version is None:
        raise WrongStage("the migration has written nothing yet: there is nothing to roll back")
    for instance in (migration.instance_id, _rollback_instance(migration)):
        status = await client.get_status(instance)
        if status and status.runtime_status and status.runtime_status.value in ("Running", "Pending"):
            raise WrongStage(f"instance {instance} is still running: wait for it (or terminate it) first")
    instance_id = await client.start_new(
        names.ROLLBACK_ORCHESTRATOR, instance_id=_rollback_instance(migration),
        client_input={"migration_id": migration.migration_id, "tenant_id": caller.tenant_id,
                      "policy": request.model_dump()})
    return json_response({"instance_id": instance_id, "policy": request.model_dump()}, status=202)


@bp.route(route="migrations/{migration_id}/rollback", methods=["GET"])
@bp.durable_client_input(client_name="client")
@documented("GET", "migrations/{migration_id}/rollback", "The rollback's status and report (JSON, or ?format=html)",
            role="viewer", responses={200: "object"}, alternatives=("text/html",), errors=(409,))
@api_route
async def get_rollback(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from shared.pipeline.rollback import REPORT, RollbackReport
    from shared.pipeline.rollback_html import render_html

    _, migration = await _load(req)
    wanted = req.params.get("format") or ""
    if wanted not in ("", "json", "html"):
        return problem(400, "invalid_request", "Unknown format", "format must be json or html")
    artifacts = runtime().artifacts
    report = (artifacts.get_json(migration.migration_id, REPORT)
              if artifacts.exists(migration.migration_id, REPORT) else None)
    if wanted == "html":
        if report is None:
            raise WrongStage("the rollback has not written its report yet: it is still running, or never ran")
        return func.HttpResponse(render_html(RollbackReport.model_validate(report)), mimetype="text/html",
                                 charset="utf-8")
    status = await client.get_status(_rollback_instance(migration))
    return json_response({
        "runtime_status": status.runtime_status.value if status and status.runtime_status else None,
        "custom_status": status.custom_status if status else None,
        "report": report,
    })


# -- sample field-level diff (issue 6) ------------------------------------------------------------------
#    POST /migrations/{id}/sample/diff         diff a stratified sample of patients ({"patients": 150})
#    GET  /migrations/{id}/sample/diff         the diff: JSON, or ?format=csv|html (or by Accept)


class SampleDiffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patients: int = Field(default=150, ge=1, le=5000)
    """How many patients the stratified sample takes (every related row of each comes along)."""


@bp.route(route="migrations/{migration_id}/sample/diff", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/sample/diff", "Diff a stratified sample of patients",
            role="operator", request=SampleDiffRequest, responses={202: "object"}, idempotent=True, errors=(409, 422))
@api_route
@idempotent
async def start_sample_diff(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller, migration = await _load(req)
    _operator(caller)
    request = read_model(req, SampleDiffRequest)
    if migration.mapping_version is None:
        raise WrongStage("the field map is not approved yet: there is nothing to compare")
    instance = f"{migration.migration_id}:sample-diff"
    status = await client.get_status(instance)
    if status and status.runtime_status and status.runtime_status.value in ("Running", "Pending"):
        raise WrongStage("a sample diff of this migration is already running")
    await client.start_new(names.SAMPLE_DIFF_ORCHESTRATOR, instance_id=instance,
                           client_input={"migration_id": migration.migration_id, "tenant_id": caller.tenant_id,
                                         "size": request.patients})
    return json_response({"instance_id": instance, "patients": request.patients}, status=202)


@bp.route(route="migrations/{migration_id}/sample/diff", methods=["GET"])
@documented("GET", "migrations/{migration_id}/sample/diff", "The sample diff (JSON, CSV or HTML)", role="viewer",
            responses={200: "object"}, alternatives=("text/csv", "text/html"))
@api_route
async def get_sample_diff(req: func.HttpRequest) -> func.HttpResponse:
    from shared.pipeline import sample

    _, migration = await _load(req)
    return stored_report(req, migration.migration_id,
                         {"json": sample.DIFF_JSON, "csv": sample.DIFF_CSV, "html": sample.DIFF_HTML})


# -- the sample run's decision (issue 6) ------------------------------------------------------------------
#    POST /migrations/{id}/sample/approve      the orchestration waits at awaiting_sample_approval: go on
#    POST /migrations/{id}/sample/reject       end the run with stage sample_rejected (the next start
#                                              re-opens the map for review, then samples again)


class SampleDecision(BaseModel):
    approved: bool
    decided_by: str
    """The signed-in user (object id) who decided."""
    decided_at: datetime
    sample: dict[str, Any] = Field(default_factory=dict)
    """The diff summary the decision was made on (counts and match rate)."""


async def _awaiting_sample(client: df.DurableOrchestrationClient, migration: Migration) -> dict[str, Any]:
    """The summary the orchestration waits with; WrongStage (409) unless it waits for this decision now."""
    status = await client.get_status(migration.instance_id) if migration.instance_id else None
    custom = status.custom_status if status else None
    running = bool(status and status.runtime_status and status.runtime_status.value == "Running")
    if not running or not isinstance(custom, dict) or custom.get("stage") != "awaiting_sample_approval":
        stage = custom.get("stage") if isinstance(custom, dict) else None
        raise WrongStage(f"migration {migration.migration_id} is not waiting for a sample decision"
                         + (f" (stage {stage})" if stage else ""))
    if migration.sample_approved_by is not None or migration.sample_rejected_by is not None:
        raise WrongStage(f"the sample of migration {migration.migration_id} is already decided")
    return dict(custom.get("sample") or {})


async def _decide_sample(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                         approved: bool) -> func.HttpResponse:
    from shared.pipeline.sample_run import record_decision

    caller, migration = await _load(req, "operator")
    if req.get_body() not in (b"", b"{}"):
        raise InvalidRequest("this route takes no body (or an empty JSON object)")

    async def work() -> func.HttpResponse:
        summary = await _awaiting_sample(client, migration)
        before = migration.model_copy()
        decided = record_decision(runtime(), migration, approved, caller.user_id)
        event = names.SAMPLE_APPROVED_EVENT if approved else names.SAMPLE_REJECTED_EVENT
        try:
            await client.raise_event(migration.instance_id, event, {"by": caller.user_id})
        except BaseException:
            runtime().migrations.save(before)  # the orchestration did not hear it: the decision is not made
            raise
        at = decided.sample_approved_at if approved else decided.sample_rejected_at
        return json_response(SampleDecision(approved=approved, decided_by=caller.user_id, decided_at=at,
                                            sample=summary))

    return await _once(req, caller, work)


@bp.route(route="migrations/{migration_id}/sample/approve", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/sample/approve", "Approve the sample run's diff; the full run "
            "goes on (409 unless the migration waits at awaiting_sample_approval)", role="operator",
            responses={200: SampleDecision}, idempotent=True, errors=(409,))
@api_route
async def approve_sample(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide_sample(req, client, approved=True)


@bp.route(route="migrations/{migration_id}/sample/reject", methods=["POST"])
@bp.durable_client_input(client_name="client")
@documented("POST", "migrations/{migration_id}/sample/reject", "Reject the sample: the run ends with stage "
            "sample_rejected; the next start re-opens the field map for review", role="operator",
            responses={200: SampleDecision}, idempotent=True, errors=(409,))
@api_route
async def reject_sample(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide_sample(req, client, approved=False)
