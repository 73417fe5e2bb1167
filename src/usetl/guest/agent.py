"""The guest agent: the first Python program a USF runs.

It opens the monitor's channel (/dev/usetl) and loops: read a request (a
read that blocks, with the VM paused, until the monitor has work), run it,
write the reply. A message is an 8-byte little-endian length and JSON.
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


def receive():
    n = os.readv(_fd, [_buffer])
    size = int.from_bytes(_buffer[:HEADER], "little")
    data = bytearray(_buffer[HEADER:n])
    while len(data) < size:
        data += os.read(_fd, size - len(data))
    return json.loads(data)


def send(message):
    payload = json.dumps(message, default=repr).encode()
    view = memoryview(len(payload).to_bytes(HEADER, "little") + payload)
    while view:
        view = view[os.write(_fd, view) :]


def describe(exc, request):
    # Imported only when needed: every module imported here is start-up time.
    import linecache
    import traceback

    if "code" in request:
        # Tracebacks show the lines of code that has no file of its own.
        filename = request.get("filename", "<usetl>")
        source = request["code"]
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
    code = compile(request["code"], request.get("filename", "<usetl>"), "exec")
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


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


HANDLERS = {"exec": run_code, "identity": refresh_identity}


def serve():
    while True:
        request = receive()
        started = time.perf_counter()
        error = None
        try:
            HANDLERS[request["kind"]](request)
        except SystemExit as e:
            if e.code not in (None, 0):
                error = describe(e, request)
        except BaseException as e:
            error = describe(e, request)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        send({"error": error, "guest_ms": (time.perf_counter() - started) * 1e3})


serve()
