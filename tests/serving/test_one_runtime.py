"""One guest runtime: the same ETL function and input give the same result on both backends."""

import json

import pytest
from sandbox_files import write_function

from usetl.platform.backend import FunctionSpec
from usetl.platform.backends import choose_backend

pytestmark = pytest.mark.kvm

FUNCTION = """
import json
import pathlib
from usetl import etl

def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    rows = etl.get(event["csv"]).text().splitlines()
    index = etl.get(event["root"]).bytes().decode()
    with etl.open("summary.json", "w") as f:
        f.write(json.dumps({"rows": len(rows), "index": index}))
    answer = etl.post(event["sink"], etl.stat("summary.json"), content_type="application/json")
    with etl.open("data.csv", "r+b") as f:
        f.write(b"A,B")
    tmp = pathlib.Path("/tmp/rows.txt")
    tmp.write_text("\\n".join(rows))
    from_tmp = etl.post(event["sink"] + "-tmp", tmp, name="tmp-answer").json()["size"]
    kinds = {}
    for name, url in event["failing"].items():
        try:
            etl.get(url)
            kinds[name] = None
        except etl.EtlError as e:
            kinds[name] = [e.kind, e.status]
    return {"rows": len(rows), "posted": answer.json(), "status": answer.status,
            "kinds": kinds, "files": [(f.name, f.region, f.size) for f in etl.ls()],
            "copy": [etl.open("data.csv", "rb").read().decode(), etl.get(event["csv"]).text()],
            "from_tmp": from_tmp,
            "all": sorted(etl.__all__)}
"""


def run_on(backend_name: str, code, allow: list[str], events: list[bytes]) -> list[dict]:
    backend = choose_backend(backend_name, hide=[])
    spec = FunctionSpec(f"t/same-{backend_name}/1", code, "fn.py:handler", allow=allow,
                        etl_timeout_s=1.0)
    template = backend.template(spec)
    try:
        outcomes = []
        for data in events:
            out = template.fork().invoke(json.loads(data), {}, 30)
            outcomes.append({"value": out.value, "error": out.error})  # error: an ErrorInfo
        return outcomes
    finally:
        template.close()
        backend.close()


def test_the_same_etl_function_behaves_the_same_on_both_backends(tmp_path, http_server,
                                                                 closed_port, stalling_port):
    closed, stall = closed_port, stalling_port
    http_server.add("/data.csv", b"a,b\n1,2\n3,4\n")
    http_server.add("/", b"root")
    allow = [http_server.base + "/", f"http://127.0.0.1:{closed}/", f"http://127.0.0.1:{stall}/"]
    event = json.dumps({
        "csv": http_server.base + "/data.csv", "root": http_server.base + "/",
        "sink": http_server.base + "/sink",
        "failing": {"404": http_server.base + "/missing",
                    "refused": f"http://127.0.0.1:{closed}/x",
                    "timeout": f"http://127.0.0.1:{stall}/x",
                    "denied": "http://127.0.0.2/x"},
    }).encode()
    failing = json.dumps({"fail": True}).encode()
    code = write_function(tmp_path / "fn", FUNCTION)
    kvm = run_on("kvm", code, allow, [event, failing])
    process = run_on("process", code, allow, [event, failing])

    summary = json.dumps({"rows": 3, "index": "root"}).encode()
    assert kvm[0]["error"] is None, kvm[0]["error"]
    assert kvm[0] == process[0]
    value = kvm[0]["value"]
    assert value["kinds"] == {"404": ["http_status", 404], "refused": ["refused", None],
                              "timeout": ["timeout", None], "denied": ["denied", None]}
    answer = len(json.dumps(value["posted"]))
    assert value["files"] == [["data.csv", "host", 12], ["index", "host", 4],
                              ["sink", "host", answer], ["tmp-answer", "host", answer],
                              ["data.csv", "guest", 12], ["summary.json", "guest", len(summary)]]
    assert value["status"] == 200 and value["posted"]["size"] == len(summary)
    assert value["copy"] == ["A,B\n1,2\n3,4\n", "a,b\n1,2\n3,4\n"]
    assert value["from_tmp"] == len("a,b\n1,2\n3,4")
    assert value["all"] == ["EtlError", "EtlFile", "Response", "get", "ls", "open", "post", "stat"]

    kvm_error, process_error = kvm[1]["error"], process[1]["error"]
    assert (kvm_error.type, kvm_error.kind, kvm_error.message) == (
        process_error.type, process_error.kind, process_error.message) == (
        "ValueError", "handler", "asked to fail")
    for error in (kvm_error, process_error):
        assert 'fn.py", line 8, in handler' in error.traceback
