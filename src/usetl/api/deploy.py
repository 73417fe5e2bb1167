"""The deploy route: code as JSON (base64 files) or as a streamed archive, with progress.

An archive body (tar, tar.gz or zip: platform/code_archive.py) is spooled to
a file in the server's state directory as it arrives, never held in memory;
its settings (the JSON fields but `files`) come in the X-Usetl-Deploy header.
With `Accept: application/x-ndjson` the answer is a stream of JSON lines:
{"progress": phase, "done", "total"} while requirements resolve, sdists
build, wheels install and the template is made, then {"result": version} or
{"error": {"code", "message", "status"}}.

No `from __future__ import annotations` here: FastAPI reads the route's annotations, and
`caller` (app.py's dependency) is a parameter, not a name of this module.
"""

import json
import logging
import queue
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from usetl.platform import code_archive
from usetl.platform.service import DeployRequest, Platform, ServiceError

log = logging.getLogger(__name__)
SETTINGS_HEADER = "x-usetl-deploy"
NDJSON = "application/x-ndjson"


def add_deploy_route(app: FastAPI, platform: Platform, caller: Any, model: type[BaseModel],
                     blocking: Any) -> None:
    """`model` is app.py's Deploy (the JSON body's schema), `blocking` its thread runner."""
    uploads = platform.state_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    body_doc = {"requestBody": {
        "description": "The deploy as JSON (files in base64), or the code as a tar, tar.gz or "
                       "zip archive with the settings as JSON in the X-Usetl-Deploy header.",
        "content": {"application/json": {"schema": model.model_json_schema()},
                    **{kind: {} for kind in code_archive.TAR_TYPES + code_archive.ZIP_TYPES}},
    }}

    @app.put("/v1/functions/{name}", tags=["functions"], status_code=201,
             openapi_extra=body_doc)
    async def deploy(name: str, request: Request, who: caller) -> Response:
        """Deploy a new version: the version, with its warm-up run's output."""
        content_type = request.headers.get("content-type", "")
        archive = None
        if code_archive.is_archive(content_type):
            body = _parse(model, request.headers.get(SETTINGS_HEADER, "{}"), "the X-Usetl-"
                          "Deploy header")
            archive = (await _spool(request, uploads), content_type)
        else:
            body = _parse(model, await request.body(), "the body")
        deploy_request = DeployRequest(**body.model_dump())
        if NDJSON in request.headers.get("accept", ""):
            lines = _with_progress(platform, who, name, deploy_request, archive)
            return StreamingResponse(lines, media_type=NDJSON, status_code=201)
        try:
            deployment = await blocking(platform.deploy, who, name, deploy_request, archive)
        finally:
            if archive is not None:
                archive[0].unlink(missing_ok=True)
        return JSONResponse(deployment.public(), status_code=201)


def _parse(model: type[BaseModel], raw: bytes | str, where: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0] if e.errors() else {}
        place = ".".join(str(p) for p in first.get("loc", ()))
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_request"
        raise ServiceError(400, code, f"{where}: {place} {first.get('msg', 'invalid')}"
                           .replace(":  ", ": ")) from None


async def _spool(request: Request, uploads: Path) -> Path:
    """The request's body in a file of its own (BodyLimit bounds its size)."""
    path = uploads / f"{uuid.uuid4().hex}.upload"
    try:
        with open(path, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _with_progress(platform: Platform, who: Any, name: str, deploy_request: DeployRequest,
                   archive: tuple[Path, str] | None):
    """Deploy on a thread; yield its progress and outcome as JSON lines."""
    events: queue.Queue = queue.Queue()

    def progress(phase: str, done: int, total: int) -> None:
        events.put({"progress": phase, "done": done, "total": total})

    def work() -> None:
        try:
            deployment = platform.deploy(who, name, deploy_request, archive, progress)
            events.put({"result": deployment.public()})
        except ServiceError as e:
            events.put({"error": {"code": e.code, "message": str(e), "status": e.status,
                                  "cause": e.cause.as_dict() if e.cause else None}})
        except Exception as e:  # noqa: BLE001 - the stream is the only way to say it now
            log.exception("deploy of %s failed", name)
            events.put({"error": {"code": "internal", "status": 500,
                                  "message": f"the server failed: {type(e).__name__}: {e}"}})
        finally:
            if archive is not None:
                archive[0].unlink(missing_ok=True)
            events.put(None)

    threading.Thread(target=work, name="usetl-deploy", daemon=True).start()

    async def lines():
        while (event := await anyio.to_thread.run_sync(events.get)) is not None:
            yield json.dumps(event) + "\n"

    return lines()

