"""The guest agent: the first Python program a USF runs.

It opens the monitor's channel (/dev/usetl) and loops: read a request (a
read that blocks, with the VM paused, until the monitor has work), run it,
write the reply. A message is an 8-byte little-endian length and JSON.
That read is the agent's only wait: templates are captured there.

Requests ("kind"):
- exec: run Python source ("code") as __main__.
- load: import the function's module once ("source" + "filename", or a
  guest "path" of a .py file or a package directory; "sys_path" entries are
  prepended to sys.path) and keep its "handler"; the reply has import_ms
  and modules (len(sys.modules)).
- identity: a clone's first request (HyperFork): fresh seeds and instance id.
- invoke: call handler(event, context) with the "event" (or the JSON file
  named "event_file" the host put in its ETL region) and the "context"; the
  reply has the return value, which must be JSON-serialisable.
Every reply has "error" (None, or type, message and traceback), guest_ms
and guest_cpu_ms (the monitor process's CPU time, which is the vCPU's plus
the host's work for the guest's syscalls).
"""

import json
import os
import sys
import time

CHANNEL = "/dev/usetl"
HEADER = 8

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_fd = os.open(CHANNEL, os.O_RDWR)
_buffer = bytearray(1 << 20)
_sources = {}  # filename -> source of code that has no file in the guest (for tracebacks)
_function = {"handler": None, "module": None}


def receive():
    n = os.readv(_fd, [_buffer])
    size = int.from_bytes(_buffer[:HEADER], "little")
    data = bytearray(_buffer[HEADER:n])
    while len(data) < size:
        data += os.read(_fd, size - len(data))
    return json.loads(data)


def send(payload):
    view = memoryview(len(payload).to_bytes(HEADER, "little") + payload)
    while view:
        view = view[os.write(_fd, view) :]


def describe(exc):
    # Imported only when needed: every module imported here is start-up time.
    import linecache
    import traceback

    for filename, source in _sources.items():
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tb = exc.__traceback__
    # Start the traceback at the user's code, not in this agent.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    }


def run_code(request):
    filename = request.get("filename", "<usetl>")
    _sources[filename] = request["code"]
    code = compile(request["code"], filename, "exec")
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    return {}


def load(request):
    started = time.perf_counter()
    sys.path[:0] = request.get("sys_path", [])
    if "source" in request:
        filename = request["filename"]
        name = os.path.splitext(os.path.basename(filename))[0]
        if name in sys.modules and sys.modules[name] is not _function.get("module"):
            raise ImportError(f"{filename} would replace the module {name!r}: rename the file")
        _sources[filename] = request["source"]
        module = type(sys)(name)
        module.__file__ = filename
        sys.modules[name] = module
        try:
            exec(compile(request["source"], filename, "exec"), module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
    else:
        path = request["path"].rstrip("/")
        directory, base = os.path.split(path)
        sys.path.insert(0, directory)
        module = __import__(base[:-3] if base.endswith(".py") else base)
    handler = getattr(module, request["handler"], None)
    if not callable(handler):
        raise AttributeError(f"module {module.__name__!r} has no function {request['handler']!r}")
    _function["handler"] = handler
    _function["module"] = module
    return {"import_ms": (time.perf_counter() - started) * 1e3, "modules": len(sys.modules)}


class Context:
    """What the handler learns about its invocation: request_id, deadline, memory_mib, ..."""

    def __init__(self, fields):
        self.__dict__.update(fields)
        self.request_id = fields.get("request_id")
        self.deadline = fields.get("deadline")
        self.memory_mib = fields.get("memory_mib")

    def remaining_ms(self):
        """Milliseconds left before the deadline (None if there is none)."""
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - time.time()) * 1e3)


def invoke(request):
    handler = _function["handler"]
    if handler is None:
        raise RuntimeError("no function is loaded: send a load request first")
    if "event_file" in request:
        from usetl import etl

        event = json.loads(etl.stat(request["event_file"]).bytes())
    else:
        event = request.get("event")
    return {"value": handler(event, Context(request.get("context") or {}))}


def refresh_identity(request):
    """A clone's first request: nothing it inherited may repeat another clone's values."""
    os.environ["USETL_INSTANCE_ID"] = request["instance"]
    seed = bytes.fromhex(request["seed"])
    random = sys.modules.get("random")
    if random is not None:
        random.seed(seed)
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None  # its Random is re-made only when the pid changes
    return {}


HANDLERS = {
    "exec": run_code, "load": load, "invoke": invoke, "identity": refresh_identity,
}


def serve():
    while True:
        request = receive()
        started = time.perf_counter()
        cpu_started = time.process_time()
        error = None
        reply = {}
        try:
            reply = HANDLERS[request["kind"]](request)
        except SystemExit as e:
            if e.code not in (None, 0):
                error = describe(e)
        except BaseException as e:
            error = describe(e)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        reply["error"] = error
        reply["guest_ms"] = (time.perf_counter() - started) * 1e3
        reply["guest_cpu_ms"] = (time.process_time() - cpu_started) * 1e3
        try:
            payload = json.dumps(reply).encode()
        except (TypeError, ValueError) as e:
            value = reply.pop("value", None)
            reply["error"] = {
                "type": "TypeError",
                "message": f"the handler's return value ({type(value).__name__}) is not "
                f"JSON-serialisable: {e}",
                "traceback": "",
            }
            payload = json.dumps(reply).encode()
        send(payload)


serve()
