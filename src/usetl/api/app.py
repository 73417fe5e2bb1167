"""The HTTP API (OpenAPI at /openapi.json, docs at /docs).

Every call under /v1 carries `Authorization: Bearer <token>`; a token reaches
only its tenant's functions, invocations and logs (another tenant's objects
are 404, as if they did not exist). Errors are JSON:
``{"error": {"code": "<stable code>", "message": "<one clear line>"}}``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from usetl.platform import code_archive
from usetl.platform.registry import Tenant
from usetl.platform.service import Platform, ServiceError

from .deploy import add_deploy_route
from .hot_path import Blocking, InvokePath, bearer_token, error_document, event_body
from .pipelines import add_pipeline_routes

log = logging.getLogger(__name__)
THREADS = 256  # blocking invocations in flight (the pool queues beyond a function's limit)
# The worker threads of the API's blocking calls; threads start as calls need them.
BLOCKING = Blocking(THREADS)
MAX_BODY_BYTES = 80 << 20  # a deploy: 50 MiB of code in base64, and the JSON around it
# A deploy's code archive: 250 MiB unpacked (Limits.max_unpacked_bytes), with tar's headers.
MAX_ARCHIVE_BYTES = 260 << 20
# The dashboard: static files that read the JSON API with the bearer token the user gives
# them (kept in sessionStorage, sent as the Authorization header: no cookie, so no CSRF).
UI_DIR = Path(__file__).parent / "static"

EVENT_BODY = {
    "requestBody": {
        "description": "The event: any JSON value (empty body: null).",
        "content": {"application/json": {"schema": {}}},
    }
}
# POST /v1/functions/{name}/invoke is answered by hot_path.InvokePath, in front of the app:
# its entry in the OpenAPI document, as FastAPI would write it.
INVOKE_DOC = {
    "tags": ["invocations"],
    "summary": "Invoke",
    "description": "Run the function and wait for its result (the invocation record).",
    "operationId": "invoke_v1_functions__name__invoke_post",
    "parameters": [
        {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "title": "Name"}},
        {"name": "authorization", "in": "header", "required": False,
         "schema": {"type": "string", "title": "Authorization"}},
    ],
    **EVENT_BODY,
    "responses": {"200": {"description": "The invocation record",
                          "content": {"application/json": {"schema": {}}}}},
}


class Deploy(BaseModel):
    handler: str = Field(description="'file.py:function' or 'pkg/mod.py:function'")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> base64 "
                                  "of the file's bytes (none with an archive body)")
    executables: list[str] = Field(default_factory=list, description="paths among `files` that "
                                   "are programs the function runs (mode 0555; others 0444); "
                                   "an archive keeps its members' own mode bits")
    requirements: list[str] = Field(default_factory=list, description="pip requirement lines")
    memory_mib: int | None = None
    timeout_s: float | None = None
    concurrency: int | None = Field(None, description="invocations at once")
    queue: int | None = Field(None, description="invocations that may wait beyond `concurrency`; "
                              "more get 429 (0: refuse at once)")
    allow: list[str] | None = Field(None, description="URL prefixes the function may reach")
    env: dict[str, str] | None = None
    warmup: Any = Field(None, description="an event the handler runs on once at deploy; the "
                        "template is frozen after that run (lazy imports and caches included)")
    reuse: str | None = Field(None, description="'rollback' (default: every call starts from "
                              "the template) or 'warm' (an instance keeps globals and /tmp "
                              "between calls of this function, as on Lambda)")
    retries: int | None = Field(None, description="retries of a failed async invocation "
                                "(handler errors and sandbox failures; default 0)")
    retry_backoff_s: float | None = Field(None, description="seconds before the first retry, "
                                          "doubled before each next one (default 1)")
    secrets: list[str] | None = Field(None, description="names of the tenant's secrets each "
                                      "invocation gets in context.secrets")


class NewTenant(BaseModel):
    name: str


class NewSchedule(BaseModel):
    function: str
    cron: str = Field(description="UTC; 5 fields (minute hour day month weekday), 6 with "
                      "seconds first, or @hourly, @daily, ...")
    event: Any = Field(None, description="the event each tick invokes the function with")


class SecretValue(BaseModel):
    value: str


async def _caller(request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> Tenant:
    """The caller's tenant: on the event loop for a token seen before (a sync dependency
    would cost every request a hop to a worker thread), else in a thread (a registry read)."""
    token = bearer_token(authorization)
    platform = request.app.state.platform
    return platform.known_tenant(token) or await _blocking(platform.authenticate, token)


Caller = Annotated[Tenant, Depends(_caller)]


def error_response(status: int, code: str, message: str,
                   cause: dict | None = None) -> JSONResponse:
    return JSONResponse(error_document(code, message, cause), status_code=status)


def create_app(platform: Platform, close_on_shutdown: bool = True) -> InvokePath:
    """The API as an ASGI app: the FastAPI app behind the invocation's hot path. The
    platform is closed when the server shuts down unless the caller closes it (run_api on a
    loop the platform owns: it would stop that loop under it)."""
    app = FastAPI(
        title="usetl",
        version="1",
        description="Serverless Python functions for ETL, each invocation in its own sandbox.",
    )
    app.state.platform = platform
    _add_body_limit(app)
    _add_lifecycle(app, platform, close_on_shutdown)
    _add_error_handlers(app)
    _add_operation_routes(app, platform)
    _add_tenant_routes(app, platform)
    _add_function_routes(app, platform)
    _add_invocation_routes(app, platform)
    _add_schedule_routes(app, platform)
    _add_secret_routes(app, platform)
    add_pipeline_routes(app, platform, Caller, _body, _blocking, EVENT_BODY)
    _add_pool_route(app, platform)  # last, so /docs lists the paths in the order they always had
    _add_dashboard(app, platform)
    _document_invoke(app)
    return InvokePath(app, platform, BLOCKING)


def _document_invoke(app: FastAPI) -> None:
    """The hot path's route in /openapi.json (and /docs), where the app's own routes of
    invocations begin."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            paths = list(schema["paths"].items())
            at = [path for path, _ in paths].index("/v1/functions/{name}/invocations")
            paths.insert(at, ("/v1/functions/{name}/invoke", {"post": INVOKE_DOC}))
            schema["paths"] = dict(paths)
        return app.openapi_schema

    app.openapi = openapi  # FastAPI's way to extend its document


def _add_body_limit(app: FastAPI) -> None:
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, archive_limit=MAX_ARCHIVE_BYTES)


class BodyLimit:
    """Refuse a request body over `limit` bytes (`archive_limit` for a code archive, which
    is spooled to a file) before it is buffered: by its Content-Length up front, and by
    counting while it streams (a chunked body declares no length)."""

    def __init__(self, app: Any, limit: int, archive_limit: int):
        self.app = app
        self.default_limit = limit
        self.archive_limit = archive_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        archive = code_archive.is_archive(headers.get(b"content-type", b"").decode("latin-1"))
        limit = self.archive_limit if archive else self.default_limit
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise StarletteHTTPException(413, f"the request body is over {limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any, limit: int) -> None:
        response = error_response(413, "payload_too_large",
                                  f"the request body is over {limit} bytes")
        await response(scope, receive, send)


def _add_lifecycle(app: FastAPI, platform: Platform, close_on_shutdown: bool) -> None:
    @app.on_event("startup")
    async def more_threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS

    if close_on_shutdown:
        @app.on_event("shutdown")
        async def close_platform() -> None:
            # Here, not after uvicorn returns: it re-raises SIGTERM once it has shut down.
            await anyio.to_thread.run_sync(platform.close)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        cause = exc.cause.as_dict() if exc.cause is not None else None
        response = error_response(exc.status, exc.code, str(exc), cause)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", f"the server failed: {type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                              str(exc.detail))


async def _blocking(fn, *args) -> Any:
    """Run a call that may block (a deploy, an invocation) off the event loop."""
    return await BLOCKING.run(fn, *args)


def _add_operation_routes(app: FastAPI, platform: Platform) -> None:
    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        return {"status": "ok", "backend": platform.backend.name}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics(caller: Caller) -> PlainTextResponse:
        if not caller.admin:
            raise ServiceError(403, "forbidden", "metrics are for the admin tenant")
        return PlainTextResponse(platform.metrics.render(),
                                 media_type="text/plain; version=0.0.4")


def _add_tenant_routes(app: FastAPI, platform: Platform) -> None:
    @app.post("/v1/tenants", tags=["tenants"], status_code=201)
    async def add_tenant(body: NewTenant, caller: Caller) -> dict:
        added, token = await _blocking(platform.add_tenant, caller, body.name)
        return {"name": added.name, "token": token}

    @app.get("/v1/whoami", tags=["tenants"])
    def whoami(caller: Caller) -> dict:
        return {"tenant": caller.name, "admin": caller.admin}


def _add_function_routes(app: FastAPI, platform: Platform) -> None:
    add_deploy_route(app, platform, Caller, Deploy, _blocking)

    @app.get("/v1/functions", tags=["functions"])
    def list_functions(caller: Caller) -> dict:
        return {"functions": [v.public() for v in platform.functions(caller)]}

    @app.get("/v1/functions/{name}", tags=["functions"])
    def show_function(name: str, caller: Caller) -> dict:
        live, versions = platform.function(caller, name)
        return {**live.public(), "versions": [v.version for v in versions]}

    @app.delete("/v1/functions/{name}", tags=["functions"])
    async def delete_function(name: str, caller: Caller) -> dict:
        versions = await _blocking(platform.delete, caller, name)
        return {"deleted": name, "versions": [v.version for v in versions]}


def _add_invocation_routes(app: FastAPI, platform: Platform) -> None:
    @app.post("/v1/functions/{name}/invocations", tags=["invocations"], status_code=202,
              openapi_extra=EVENT_BODY)
    async def invoke_async(name: str, request: Request, caller: Caller,
                           x_callback_url: Annotated[str | None, Header(
                               description="POSTed the invocation record once it is done "
                               "(OpenFaaS's header)")] = None) -> dict:
        """Accept an invocation (persisted before this answer); fetch it by id later."""
        event = platform.parse_event(await _body(request, platform))
        invocation_id = await _blocking(platform.invoke_async, caller, name, event,
                                        x_callback_url)
        return {"id": invocation_id, "status": "queued"}

    @app.get("/v1/invocations", tags=["invocations"])
    def recent_invocations(caller: Caller,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
        """The latest finished invocations of all the tenant's functions, the latest first."""
        return {"invocations": platform.recent_invocations(caller, limit)}

    @app.get("/v1/invocations/failed", tags=["invocations"])
    def failed_invocations(caller: Caller, function: str | None = None,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
        """The dead letters: async invocations that failed for good (their retries spent, or
        an error that is not retried), the latest first."""
        return {"invocations": platform.failed_invocations(caller, function, limit)}

    @app.get("/v1/invocations/{invocation_id}", tags=["invocations"])
    def get_invocation(invocation_id: str, caller: Caller) -> dict:
        return platform.invocation(caller, invocation_id)

    @app.get("/v1/functions/{name}/logs", tags=["invocations"])
    def logs(name: str, caller: Caller,
             limit: Annotated[int, Query(ge=1, le=1000)] = 20,
             before: Annotated[float | None, Query(description="only invocations created "
                                                   "before this Unix time (the next page)")]
             = None,
             after: Annotated[float | None, Query(description="instead: the invocations that "
                                                  "finished after this Unix time, in the order "
                                                  "they finished (to follow a function)")]
             = None) -> dict:
        now = time.time()  # before the query: what finishes later is in the next one
        return {"invocations": platform.logs(caller, name, limit, before, after), "now": now}

    @app.get("/v1/usage", tags=["invocations"])
    def usage(caller: Caller, since: Annotated[float, Query(ge=0)] = 0.0) -> dict:
        """What the tenant's invocations used, per function, since a Unix time: invocations,
        failures, duration, guest CPU, and the host CPU, requests and bytes of their I/O."""
        return {"since": since, "functions": platform.usage(caller, since)}


def _add_schedule_routes(app: FastAPI, platform: Platform) -> None:
    @app.post("/v1/schedules", tags=["schedules"], status_code=201)
    def add_schedule(body: NewSchedule, caller: Caller) -> dict:
        """Invoke a function on every tick of a cron expression (each tick once, whatever the
        number of servers; of ticks missed while no server ran, the latest fires once)."""
        return platform.add_schedule(caller, body.function, body.cron, body.event).public()

    @app.get("/v1/schedules", tags=["schedules"])
    def list_schedules(caller: Caller) -> dict:
        return {"schedules": [s.public() for s in platform.schedules(caller)]}

    @app.delete("/v1/schedules/{schedule_id}", tags=["schedules"])
    def delete_schedule(schedule_id: str, caller: Caller) -> dict:
        platform.delete_schedule(caller, schedule_id)
        return {"deleted": schedule_id}


def _add_secret_routes(app: FastAPI, platform: Platform) -> None:
    @app.put("/v1/secrets/{name}", tags=["secrets"])
    def set_secret(name: str, body: SecretValue, caller: Caller) -> dict:
        """Store a secret, encrypted; functions deployed with --secret NAME get it."""
        return {"name": name, "created": platform.set_secret(caller, name, body.value)}

    @app.get("/v1/secrets", tags=["secrets"])
    def list_secrets(caller: Caller) -> dict:
        """Names and times: values are never answered."""
        return {"secrets": platform.secrets(caller)}

    @app.delete("/v1/secrets/{name}", tags=["secrets"])
    def delete_secret(name: str, caller: Caller) -> dict:
        platform.delete_secret(caller, name)
        return {"deleted": name}


def _add_pool_route(app: FastAPI, platform: Platform) -> None:
    @app.get("/v1/pool", tags=["operations"])
    def pool(caller: Caller) -> dict:
        return platform.pool_report(caller)


async def _body(request: Request, platform: Platform) -> bytes:
    """The request body, refused as soon as it passes the payload limit."""
    return await event_body(request.headers.get("content-length"), request.stream(),
                            platform.limits.max_payload_bytes)


def _add_dashboard(app: FastAPI, platform: Platform) -> None:
    @app.get("/v1/activity", tags=["operations"])
    def activity(caller: Caller, window: Annotated[int, Query(ge=1, le=3600)] = 60) -> dict:
        """The tenant's invocations finished in the last `window` seconds: a count per second
        and a latency histogram (per bucket, not cumulative; `duration_ms` of each record)."""
        return platform.activity(caller, window)

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
