"""The process sandbox's ETL regions: memory files it maps, the host region only for reading."""

from sandbox_files import write_function

from usetl.platform.backend import FunctionSpec
from usetl.platform.process_backend import ProcessBackend

FUNCTION = """
import mmap, os
from usetl import etl

def handler(event, context):
    text = etl.get(event["url"]).text()  # the first view maps the regions
    regions = {}
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:usetl-etl-"):
            name = target.split("usetl-")[1].split(" ")[0]
            try:
                mmap.mmap(fd, 4096, access=mmap.ACCESS_WRITE)[0] = 1
                regions[name] = "writable"
            except OSError as e:
                regions[name] = e.strerror
    return {"data": text, "regions": regions}
"""


def test_the_sandbox_can_write_its_guest_region_but_not_the_host_region(tmp_path, http_server):
    url = http_server.add("/data.txt", b"downloaded")
    code = write_function(tmp_path / "fn", FUNCTION)
    template = ProcessBackend().template(
        FunctionSpec("t/regions/1", code, "fn.py:handler", allow=[http_server.base + "/"]))
    try:
        out = template.fork().invoke({"url": url}, {}, 10)
        assert out.error is None, out.error
        assert out.value == {"data": "downloaded", "regions": {
            "etl-host": "Operation not permitted", "etl-guest": "writable"}}
    finally:
        template.close()
