"""A Python client for the HTTP API (the CLI's client commands use it).

    from usetl.api.client import Client
    c = Client("http://127.0.0.1:8080", token)
    c.deploy("hello", Path("hello.py"))
    c.invoke("hello", {"name": "x"})["result"]
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from usetl.errors import UsetlError

CONFIG_ENV = "USETL_CONFIG"
TOKEN_ENV = "USETL_TOKEN"
URL_ENV = "USETL_URL"
DEFAULT_URL = "http://127.0.0.1:8080"
SKIPPED = {"__pycache__", ".git", ".venv"}
NDJSON = "application/x-ndjson"
UPLOAD_CHUNK = 1 << 20


class ApiError(UsetlError):
    """The server refused a request: HTTP status, stable code, and the guest's error (type,
    message, traceback) where one caused it."""

    def __init__(self, status: int, code: str, message: str, cause: dict | None = None):
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.cause = cause


def config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path.home() / ".config" / "usetl" / "config.json"


def load_config() -> dict:
    try:
        return json.loads(config_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    return path


def code_archive(path: Path, target: BinaryIO) -> None:
    """A file, or a directory's files (recursively, but caches and dot files), as tar.gz."""
    if not path.exists():
        raise UsetlError(f"{path}: no such file or directory")
    files = [(path, path.name)] if path.is_file() else [
        (file, file.relative_to(path).as_posix()) for file in sorted(path.rglob("*"))
        if file.is_file() and not any(p in SKIPPED or p.startswith(".")
                                      for p in file.relative_to(path).parts)]
    with tarfile.open(fileobj=target, mode="w:gz", compresslevel=1) as tar:
        for file, name in files:
            tar.add(file, arcname=name, recursive=False)


def read_requirements(path: Path) -> list[str]:
    """A pip requirements file's requirement lines: comments and line continuations as pip
    reads them, `-r FILE` included (relative to the file); other options are refused."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UsetlError(f"cannot read {path}: {e.strerror}") from e
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        option, _, rest = line.partition(" ")
        if option in ("-r", "--requirement"):
            found += read_requirements(path.parent / rest.strip())
        elif line.startswith("-"):
            raise UsetlError(f"{path}: {option} is not supported (requirement lines, their "
                             "--hash options and -r FILE are)")
        else:
            found.append(" ".join(line.split()))
    return found


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 960.0):
        config = load_config()
        self.url = (url or os.environ.get(URL_ENV) or config.get("url") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV) or config.get("token")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise UsetlError(f"cannot reach the usetl server at {self.url}: {e}") from e
        if response.status_code >= 400:
            raise _api_error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def deploy(self, name: str, path: Path, handler: str | None = None,
               requirements: list[str] | None = None,
               progress: Callable[[str, int, int], None] | None = None,
               **options: Any) -> dict:
        """Upload the code as a streamed tar.gz; `progress(phase, done, total)` hears of the
        upload ("upload", bytes) and of the server's phases (resolve, build, install,
        template)."""
        if handler is None:
            handler = f"{path.name}:handler" if path.is_file() else "main.py:handler"
        if requirements is None and path.is_dir() and (path / "requirements.txt").is_file():
            requirements = read_requirements(path / "requirements.txt")
        settings = {"handler": handler, "requirements": requirements or []}
        settings.update({k: v for k, v in options.items() if v is not None})
        with tempfile.TemporaryFile() as archive:
            code_archive(path, archive)
            size = archive.tell()
            archive.seek(0)
            return self._stream_deploy(name, settings, _chunks(archive, size, progress),
                                       progress or (lambda phase, done, total: None))

    def _stream_deploy(self, name: str, settings: dict, body: Iterator[bytes],
                       progress: Callable[[str, int, int], None]) -> dict:
        headers = {"Content-Type": "application/gzip", "Accept": NDJSON,
                   "X-Usetl-Deploy": json.dumps(settings)}
        try:
            with self.http.stream("PUT", f"/v1/functions/{name}", content=body,
                                  headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                for line in response.iter_lines():
                    event = json.loads(line)
                    if "progress" in event:
                        progress(event["progress"], event["done"], event["total"])
                    elif "error" in event:
                        e = event["error"]
                        raise ApiError(e["status"], e["code"], e["message"], e.get("cause"))
                    else:
                        return event["result"]
        except httpx.HTTPError as e:
            raise UsetlError(f"cannot reach the usetl server at {self.url}: {e}") from e
        raise UsetlError("the server ended the deploy without an answer")

    def invoke(self, name: str, event: Any = None) -> dict:
        return self.request("POST", f"/v1/functions/{name}/invoke", content=json.dumps(event),
                            headers={"Content-Type": "application/json"})

    def invoke_async(self, name: str, event: Any = None, callback_url: str | None = None) -> str:
        """Queue an invocation; a callback URL is POSTed its record once it is done."""
        headers = {"Content-Type": "application/json"}
        if callback_url is not None:
            headers["X-Callback-Url"] = callback_url
        return self.request("POST", f"/v1/functions/{name}/invocations",
                            content=json.dumps(event), headers=headers)["id"]

    def failed_invocations(self, function: str | None = None, limit: int = 100) -> list[dict]:
        """The dead letters: async invocations that failed for good, the latest first."""
        params: dict[str, Any] = {"limit": limit}
        if function is not None:
            params["function"] = function
        return self.request("GET", "/v1/invocations/failed", params=params)["invocations"]

    def invocation(self, invocation_id: str) -> dict:
        return self.request("GET", f"/v1/invocations/{invocation_id}")

    def functions(self) -> list[dict]:
        return self.request("GET", "/v1/functions")["functions"]

    def function(self, name: str) -> dict:
        return self.request("GET", f"/v1/functions/{name}")

    def delete(self, name: str) -> dict:
        return self.request("DELETE", f"/v1/functions/{name}")

    def logs(self, name: str, limit: int = 20, before: float | None = None) -> list[dict]:
        return self.logs_page(name, limit, before=before)["invocations"]

    def logs_page(self, name: str, limit: int = 20, before: float | None = None,
                  after: float | None = None) -> dict:
        """The logs answer: "invocations" and the server's time "now" when it was read."""
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("before", before), ("after", after)):
            if value is not None:
                params[key] = value
        return self.request("GET", f"/v1/functions/{name}/logs", params=params)

    def add_schedule(self, function: str, cron: str, event: Any = None) -> dict:
        return self.request("POST", "/v1/schedules",
                            json={"function": function, "cron": cron, "event": event})

    def schedules(self) -> list[dict]:
        return self.request("GET", "/v1/schedules")["schedules"]

    def delete_schedule(self, schedule_id: str) -> dict:
        return self.request("DELETE", f"/v1/schedules/{schedule_id}")

    def set_secret(self, name: str, value: str) -> dict:
        return self.request("PUT", f"/v1/secrets/{name}", json={"value": value})

    def secrets(self) -> list[dict]:
        return self.request("GET", "/v1/secrets")["secrets"]

    def delete_secret(self, name: str) -> dict:
        return self.request("DELETE", f"/v1/secrets/{name}")

    def usage(self, since: float = 0.0) -> list[dict]:
        return self.request("GET", "/v1/usage", params={"since": since})["functions"]

    def deploy_pipeline(self, name: str, stages: list) -> dict:
        return self.request("PUT", f"/v1/pipelines/{name}", json={"stages": stages})

    def run_pipeline(self, name: str, event: Any = None, wait: bool = True) -> dict:
        """The run's record, or with wait=False {"id", "status": "queued"}."""
        return self.request("POST", f"/v1/pipelines/{name}/runs", content=json.dumps(event),
                            params={"wait": "true" if wait else "false"},
                            headers={"Content-Type": "application/json"})

    def pipeline_run(self, run_id: str) -> dict:
        return self.request("GET", f"/v1/pipeline-runs/{run_id}")

    def pipeline_runs(self, name: str, limit: int = 20, status: str | None = None
                      ) -> list[dict]:
        """The pipeline's runs, the latest first."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        return self.request("GET", f"/v1/pipelines/{name}/runs", params=params)["runs"]

    def pipelines(self) -> list[dict]:
        return self.request("GET", "/v1/pipelines")["pipelines"]

    def delete_pipeline(self, name: str) -> dict:
        return self.request("DELETE", f"/v1/pipelines/{name}")

    def add_tenant(self, name: str) -> dict:
        return self.request("POST", "/v1/tenants", json={"name": name})

    def pool(self) -> dict:
        return self.request("GET", "/v1/pool")

    def metrics(self) -> str:
        return self.request("GET", "/metrics")


def _api_error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        code, message, cause = error["code"], error["message"], error.get("cause")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, cause = "http_error", response.text[:200], None
    return ApiError(response.status_code, code, message, cause)


def _chunks(source: BinaryIO, size: int,
            progress: Callable[[str, int, int], None] | None) -> Iterator[bytes]:
    sent = 0
    if progress is not None:
        progress("upload", 0, size)
    while chunk := source.read(UPLOAD_CHUNK):
        sent += len(chunk)
        if progress is not None:
            progress("upload", sent, size)
        yield chunk
