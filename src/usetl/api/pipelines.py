"""The HTTP API's pipeline routes (platform/pipeline.py).

No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and
`caller` (app.py's dependency) is a parameter, not a name of this module.
"""

import json
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from usetl.platform.pipeline import Pipelines
from usetl.platform.service import Platform


class PipelineDeploy(BaseModel):
    stages: list[Any] = Field(description="in order: a function name, or {\"function\", "
                              "\"retries\" (default 0), \"fan_out\" (default false)}")


def add_pipeline_routes(app: FastAPI, platform: Platform, caller: Any, body: Any,
                        blocking: Any, event_body: dict) -> None:
    """`caller`, `body`, `blocking` and `event_body` are app.py's, shared by every route."""
    pipelines = Pipelines(platform)
    app.state.pipelines = pipelines

    @app.put("/v1/pipelines/{name}", tags=["pipelines"], status_code=201)
    async def deploy_pipeline(name: str, spec: PipelineDeploy, who: caller) -> dict:
        """Create or replace a pipeline; every stage must name a deployed function."""
        return await blocking(pipelines.deploy, who, name, spec.stages)

    @app.get("/v1/pipelines", tags=["pipelines"])
    def list_pipelines(who: caller) -> dict:
        return {"pipelines": pipelines.list(who)}

    @app.get("/v1/pipelines/{name}", tags=["pipelines"])
    def show_pipeline(name: str, who: caller) -> dict:
        return pipelines.get(who, name)

    @app.delete("/v1/pipelines/{name}", tags=["pipelines"])
    def delete_pipeline(name: str, who: caller) -> dict:
        pipelines.delete(who, name)
        return {"deleted": name}

    @app.post("/v1/pipelines/{name}/runs", tags=["pipelines"], openapi_extra=event_body)
    async def run_pipeline(name: str, request: Request, who: caller,
                           wait: Annotated[bool, Query(description="false: 202 with the "
                                                       "run's id once it is stored")] = True
                           ) -> Response:
        """Run the pipeline on the body as the first stage's event: the run's record (its
        result or the failed stage's error, and every stage's record)."""
        event = platform.parse_event(await body(request, platform))
        if not wait:
            run_id = await blocking(pipelines.run_async, who, name, event)
            return Response(json.dumps({"id": run_id, "status": "queued"}), status_code=202,
                            media_type="application/json")
        record = await blocking(pipelines.run, who, name, event)
        return Response(json.dumps(record), media_type="application/json")

    @app.get("/v1/pipelines/{name}/runs", tags=["pipelines"])
    def list_runs(name: str, who: caller,
                  limit: Annotated[int, Query(description="at most this many")] = 20,
                  status: Annotated[str | None, Query(
                      description="only runs in this state: queued, running, succeeded, "
                      "failed or interrupted")] = None) -> dict:
        """The pipeline's runs, the latest first, each with its stages' records."""
        return {"runs": pipelines.runs(who, name, limit, status)}

    @app.get("/v1/pipeline-runs/{run_id}", tags=["pipelines"])
    def get_run(run_id: str, who: caller) -> dict:
        return pipelines.run_record(who, run_id)
