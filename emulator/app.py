"""The aiohttp application: authentication, fault injection, service protection, simulated time and latency
around the synchronous dispatchers, plus the admin endpoints under /_emulator/ and persistence."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from emulator import dataapi, graph, metadata
from emulator.config import EmulatorConfig
from emulator.errors import ApiError
from emulator.messages import ApiRequest, ApiResponse
from emulator.odata import parse_segment, split_outside
from emulator.store import Store
from emulator.throttle import Governor, request_cost
from emulator.tokens import read_claims

log = logging.getLogger("emulator")

API_PREFIX = "/api/data/v9.2/"
GRAPH_PREFIX = "/v1.0/"
UPLOAD_PREFIX = "/_upload/"
ADMIN_PREFIX = "/_emulator/"
MAX_CLIENT_BODY = 400 * 1024 * 1024


class Emulator:
    """One emulated environment: config, state, governor and the fault counters."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(config)
        self.governor = Governor(config)
        self.fault_hits: dict[int, int] = {}
        self.fault_fired: dict[int, int] = {}
        self.customization_busy = False
        self.next_server = -1
        self.publish_busy = False
        if config.state_file and Path(config.state_file).exists():
            self.store.load_json(Path(config.state_file).read_text(encoding="utf-8"))
            self.store.dirty = False

    def apply_config(self, patch: dict[str, Any]) -> None:
        merged = _deep_merge(self.config.model_dump(), patch)
        new = EmulatorConfig.model_validate(merged)
        if new.time_scale != self.config.time_scale:
            raise ValueError("time_scale cannot change while running")
        if new.max_upload_file_size != self.config.max_upload_file_size:
            for org in self.store.rows("organization").values():
                org["maxuploadfilesize"] = new.max_upload_file_size
        self.config = new
        self.store.config = new
        self.governor.config = new
        self.fault_hits, self.fault_fired = {}, {}

    def save(self) -> None:
        if not self.config.state_file:
            return
        path = Path(self.config.state_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.store.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        self.store.dirty = False

    # ---------- web servers ----------
    def server_cookie(self, server: int) -> str:
        return hashlib.sha256(f"bridgework-emulator-server-{server}".encode()).hexdigest()

    def pick_server(self, cookie: str | None) -> int:
        """The affinity cookie's server if it names one, else the next server round-robin."""
        n = self.config.web_servers
        for server in range(n):
            if cookie == self.server_cookie(server):
                return server
        self.next_server = (self.next_server + 1) % n
        return self.next_server

    # ---------- faults ----------
    def pick_fault(self, method: str, path: str) -> Any:
        for i, f in enumerate(self.config.faults):
            if method not in f.methods or not path.startswith(f.path_prefix):
                continue
            self.fault_hits[i] = self.fault_hits.get(i, 0) + 1
            if self.fault_hits[i] % f.every != 0:
                continue
            if f.times is not None and self.fault_fired.get(i, 0) >= f.times:
                continue
            self.fault_fired[i] = self.fault_fired.get(i, 0) + 1
            return f
        return None


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _to_web(resp: ApiResponse, extra: dict[str, str] | None = None) -> web.Response:
    headers = dict(resp.headers)
    headers.update(extra or {})
    ctype = headers.pop("Content-Type", None)
    r = web.Response(status=resp.status, body=resp.body if resp.status not in (204, 304) else None,
                     headers=headers)
    if ctype and resp.status not in (204, 304):
        r.headers["Content-Type"] = ctype
    return r


def _auth(emu: Emulator, request: web.Request, audience_ok: Any, graph_api: bool) -> str:
    """The calling application user's app id, or an ApiError 401 like the real services."""
    header = request.headers.get("Authorization", "")

    def fail(name: str, why: str) -> ApiError:
        if graph_api:
            return ApiError(401, "InvalidAuthenticationToken", why, graph=True)
        return ApiError(401, "", f"{name}: {why}", {
            "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/'
                                'authorize", resource_id="' + f"{request.scheme}://{request.host}" + '"'})

    if not header.lower().startswith("bearer "):
        raise fail("MissingCrmAuthenticationToken", "The request has no Authorization: Bearer header.")
    claims = read_claims(header[7:].strip())
    if claims is None:
        raise fail("InvalidAuthTicket", "The bearer token is not a JWT.")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= time.time():
        raise fail("ExpiredAuthTicket", "The bearer token has expired.")
    if not audience_ok(str(claims.get("aud", "")).rstrip("/")):
        raise fail("InvalidAuthTicket", "The bearer token was issued for another audience.")
    app_id = claims.get("appid") or claims.get("azp")
    if not any(u.app_id == app_id for u in emu.config.app_users):
        raise fail("BadAuthTicket", "The application is not an application user of this environment.")
    return str(app_id)


def _is_metadata_write(method: str, path: str) -> str | None:
    head = parse_segment(split_outside(path.strip("/"), "/")[0])[0]
    if head in ("PublishXml", "PublishAllXml"):
        return "publish"
    if method != "GET" and (head in metadata.ROOTS or head in metadata.WRITE_ACTIONS):
        return "customize"
    return None


def build_app(emu: Emulator) -> web.Application:
    app = web.Application(client_max_size=MAX_CLIENT_BODY)

    async def dataverse(request: web.Request) -> web.StreamResponse:
        cfg = emu.config
        path = request.path[len(API_PREFIX):]
        origin = f"{request.scheme}://{request.host}"
        fault = emu.pick_fault(request.method, request.path)
        if fault is not None and fault.kind == "drop_before":
            return _drop(request)
        if fault is not None and fault.kind in ("status", "customization_lock"):
            return _fault_response(fault, graph_api=False)
        try:
            app_id = _auth(emu, request, lambda aud: aud in (origin, origin.replace("http://", "https://")),
                           False)
        except ApiError as err:
            return _to_web(ApiResponse.of_error(err))
        user = next(u for u in cfg.app_users if u.app_id == app_id)
        clock = emu.store.clock
        stats = emu.governor.user(app_id)
        if "ARRAffinity" in request.cookies:
            stats.counters["affinity_cookie_requests"] += 1
        server = emu.pick_server(request.cookies.get("ARRAffinity"))
        try:
            emu.governor.admit(app_id, clock.now(), server)
        except ApiError as err:
            return _with_cookie(emu, _to_web(ApiResponse.of_error(err), emu.governor.headers(app_id, clock.now(),
                                                                                             server)), server)
        records, cost, admitted = 0, request_cost(cfg, 0), time.monotonic()
        lock_kind = None
        try:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            req = ApiRequest(request.method, path, {k: v for k, v in request.rel_url.query.items()}, headers,
                             body, caller=user.systemuserid, base_url=origin + API_PREFIX)
            if len(body) > cfg.max_body_bytes:
                resp = ApiResponse.of_error(ApiError(413, "0x8005f103", "Request Entity Too Large: the request "
                                                     f"body exceeds {cfg.max_body_bytes} bytes."))
            else:
                lock_kind = _is_metadata_write(request.method, path)
                resp = _locked(emu, lock_kind) or dataapi.dispatch(emu.store, req)
            records = resp.records
            cost = request_cost(cfg, records)
            if lock_kind == "customize" and resp.status < 400:
                cost += cfg.costs.metadata_write_seconds
            elif lock_kind == "publish" and resp.status < 400:
                cost += cfg.costs.publish_seconds
            # The emulator's own processing time is part of the simulated server time, not added to it.
            await asyncio.sleep(max(0.0, cfg.real_seconds(cost) - (time.monotonic() - admitted)))
        finally:
            if lock_kind == "customize":
                emu.customization_busy = False
            elif lock_kind == "publish":
                emu.publish_busy = False
            emu.governor.release(app_id, clock.now(), cost, records, server)
        if resp.status >= 400:
            stats.counters["errors"] += 1
        if cfg.costs.network_latency_seconds:
            await asyncio.sleep(cfg.real_seconds(cfg.costs.network_latency_seconds))
        if fault is not None and fault.kind == "drop_after":
            return _drop(request)
        extra = emu.governor.headers(app_id, clock.now(), server)
        extra.update({"OData-Version": "4.0", "x-ms-service-request-id": str(uuid.uuid4()),
                      "REQ_ID": str(uuid.uuid4())})
        return _with_cookie(emu, _to_web(resp, extra), server)

    async def graph_handler(request: web.Request) -> web.StreamResponse:
        fault = emu.pick_fault(request.method, request.path)
        if fault is not None and fault.kind == "drop_before":
            return _drop(request)
        if fault is not None and fault.kind == "status":
            return _fault_response(fault, graph_api=True)
        upload = request.path.startswith(UPLOAD_PREFIX)
        if not upload:
            graph_aud = emu.config.token_audience_graph.rstrip("/")
            try:
                _auth(emu, request, lambda aud: aud in (graph_aud, "00000003-0000-0000-c000-000000000000"), True)
            except ApiError as err:
                return _to_web(ApiResponse.of_error(err))
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        origin = f"{request.scheme}://{request.host}"
        prefix = UPLOAD_PREFIX if upload else GRAPH_PREFIX
        req = ApiRequest(request.method, request.path[len(prefix):],
                         {k: v for k, v in request.rel_url.query.items()}, headers, body, base_url=origin)
        resp = graph.dispatch(emu.store, req, upload=upload)
        if emu.config.costs.network_latency_seconds:
            await asyncio.sleep(emu.config.real_seconds(emu.config.costs.network_latency_seconds))
        if fault is not None and fault.kind == "drop_after":
            return _drop(request)
        return _to_web(resp)

    async def admin(request: web.Request) -> web.StreamResponse:
        action = request.path[len(ADMIN_PREFIX):].strip("/")
        store = emu.store
        payload: Any = await request.json() if request.can_read_body else {}
        if action == "health":
            return web.json_response({"ok": True})
        if action == "reset" and request.method == "POST":
            store.reset()
            emu.governor.reset()
            return web.json_response({"ok": True})
        if action == "snapshot" and request.method == "POST":
            return web.json_response({"id": store.snapshot()})
        if action == "restore" and request.method == "POST":
            if not store.restore(str(payload.get("id"))):
                return web.json_response({"error": "unknown snapshot"}, status=404)
            return web.json_response({"ok": True})
        if action == "dump":
            return web.Response(text=json.dumps(store.dump(), sort_keys=True), content_type="application/json")
        if action == "counters" and request.method == "GET":
            user = request.rel_url.query.get("app_user")
            return web.json_response(emu.governor.counters(user))
        if action == "counters/reset" and request.method == "POST":
            emu.governor.reset_counters()
            return web.json_response({"ok": True})
        if action == "config":
            if request.method in ("PATCH", "POST"):
                try:
                    emu.apply_config(payload)
                except ValueError as exc:
                    return web.json_response({"error": str(exc)[:500]}, status=400)
            return web.json_response(emu.config.model_dump())
        if action == "save" and request.method == "POST":
            emu.save()
            return web.json_response({"ok": True, "file": emu.config.state_file})
        return web.json_response({"error": "unknown admin action"}, status=404)

    async def root(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX):
            return await dataverse(request)
        if request.path.startswith((GRAPH_PREFIX, UPLOAD_PREFIX)):
            return await graph_handler(request)
        if request.path.startswith(ADMIN_PREFIX):
            return await admin(request)
        return web.json_response({"error": {"code": "0x80060888", "message": "Resource not found."}}, status=404)

    app.router.add_route("*", "/{tail:.*}", root)

    async def saver(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(0.5)
                if emu.store.dirty and emu.config.state_file:
                    emu.save()
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if emu.config.state_file:
            emu.save()

    app.cleanup_ctx.append(saver)
    return app


def _locked(emu: Emulator, kind: str | None) -> ApiResponse | None:
    """CustomizationLockException when another metadata write (or publish) is running."""
    if kind is None or not emu.config.customization_lock:
        return None
    busy = emu.customization_busy if kind == "customize" else emu.publish_busy
    if busy:
        what = "EntityCustomization" if kind == "customize" else "Publish"
        return ApiResponse.of_error(ApiError(
            400, "0x80071151", f"Cannot start another [{what}] because there is a previous [{what}] running at "
                               "this moment. Use Solution History to view the running operations."))
    if kind == "customize":
        emu.customization_busy = True
    else:
        emu.publish_busy = True
    return None


def _with_cookie(emu: Emulator, resp: web.Response, server: int) -> web.Response:
    if emu.config.affinity_cookie:
        resp.set_cookie("ARRAffinity", emu.server_cookie(server), httponly=True)
    return resp


def _drop(request: web.Request) -> web.StreamResponse:
    """Cut the connection without an answer (a reset as the client sees it)."""
    transport = request.transport
    if transport is not None:
        transport.abort() if hasattr(transport, "abort") else transport.close()
    raise asyncio.CancelledError


def _fault_response(fault: Any, graph_api: bool) -> web.Response:
    headers = {}
    if fault.retry_after_seconds is not None:
        headers["Retry-After"] = str(max(0, int(fault.retry_after_seconds + 0.999)))
    if fault.kind == "customization_lock":
        status, code = 400, "0x80071151"
        message = ("Cannot start another [EntityCustomization] because there is a previous [EntityCustomization] "
                   "running at this moment. Use Solution History to view the running operations.")
    else:
        status = fault.status
        code = fault.code if fault.code is not None else (
            {429: "TooManyRequests", 503: "serviceNotAvailable"}.get(status, "generalException") if graph_api
            else "0x80040216" if status == 400 else "")
        message = fault.message or f"Injected fault: HTTP {status}."
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
