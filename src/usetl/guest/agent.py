"""The guest runtime's agent: the loop that runs a function, in a USF and in a process.

In a USF it is the first Python program the guest runs (as a script): it
opens the monitor's channel (/dev/usetl) and loops: hand over the reply and
wait for the next request (one ioctl, abi.AGENT_EXCHANGE, that returns, with
the VM paused meanwhile, once the monitor has work), then run it. That ioctl
is the agent's only wait: templates are captured there, and a request that
runs no syscall of its own costs the guest one VM exit.
In the process backend the zygote imports this module and serves each
instance's socket with the same loop (usetl.sandbox): the channel is the
only difference.

The messages are usetl.abi's: first a ready message with the protocol
version, then one reply per request (abi.REQUESTS):
- exec: run Python source ("code") as __main__.
- load: serve imports from the module region (usetl.importer) and CPython's
  arenas from the vDSO's free lists (usetl.arenas), then
  import the function's module once ("source" + "filename", a guest
  "path" of a .py file or a package directory, or a "module" name;
  "sys_path" entries are prepended to sys.path) and keep its "handler", then
  import the "imports" a learned template has; the reply has import_ms and
  modules (len(sys.modules)).
A clone's first request after its fork or a rollback (HyperFork) carries an
"identity": fresh seeds and instance id, then the function's after-clone
hooks (usetl.runtime), taken before the request itself.
- freeze: the function's before-freeze hooks, just before its template freezes.
- invoke: call handler(event, context) with the "event" (or the JSON file
  named "event_file" the host put in its ETL region) and the "context"
  (handler(event) if it takes one argument; an async def handler is run
  with asyncio.run); the
  reply has the return value, which must be JSON-serialisable, and "imported":
  the modules the call imported (the platform learns templates from them).
Every reply has "error" (None, or abi.error's form) and guest_ms; the
process backend's also guest_cpu_ms (the process's CPU time; a USF's
monitor measures the vCPU's itself).
"""

import fcntl
import json
import os
import sys
import time
import types

if __name__ == "__main__":
    # /usetl/lib: where `usetl` (this runtime, usetl.etl and usetl.abi) is baked.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from usetl import abi  # noqa: E402 - after the path it is found on

_sources = {}  # filename -> source of code that has no file in the guest (for tracebacks)
_function = {"handler": None, "takes_context": True, "module": None}
# An error that answers every request instead (abi.error's form): an instance whose
# after-clone hooks failed says why, until a rollback takes it back to before them.
_refused = {"error": None}


class DeviceChannel:
    """A USF's /dev/usetl: each reply and the wait for the next request are one ioctl."""

    cpu_clock = None  # the monitor measures the vCPU's time; the process clock would exit

    def __init__(self):
        self.fd = os.open(abi.AGENT_DEVICE, os.O_RDWR)
        self.buffer = bytearray(1 << 20)  # over 1024 B: fcntl.ioctl passes it, not a copy

    def exchange(self, frame):
        """Hand over `frame` (a reply) and wait for the next request (the VM paused)."""
        buffer, header = self.buffer, abi.EXCHANGE_HEADER_SIZE
        if header + len(frame) > len(buffer):
            self.send(frame)
            frame = b""
        buffer[:header] = abi.exchange_header(len(frame), len(buffer))
        buffer[header : header + len(frame)] = frame
        n = fcntl.ioctl(self.fd, abi.AGENT_EXCHANGE, buffer)
        size = abi.body_length(buffer[: abi.FRAME_HEADER_SIZE])
        data = buffer[abi.FRAME_HEADER_SIZE : n]  # a bytearray of its own
        while len(data) < size:
            data += os.read(self.fd, size - len(data))
        return abi.decode(data)

    def finish(self, reply):
        return reply  # the monitor captures the console and measures memory itself

    def send(self, frame):
        view = memoryview(frame)
        while view:
            view = view[os.write(self.fd, view) :]


def describe(exc, kind=abi.HANDLER):
    """An exception in abi.error's form, its traceback starting at the user's code."""
    # Imported only when needed: every module imported here is start-up time.
    import linecache
    import traceback

    for filename, source in _sources.items():
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return abi.error(type(exc).__name__, str(exc), kind, text)


def run_code(request):
    filename = request.get("filename", "<usetl>")
    _sources[filename] = request["code"]
    code = compile(request["code"], filename, "exec")
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    return {}


def _import_source(request):
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
    return module


def load(request):
    started = time.perf_counter()
    from usetl import arenas, importer

    importer.install()  # the archives the monitor mounted: imported from memory
    arenas.install()  # arenas and frame-stack chunks reused without exits (in a USF)
    sys.path[:0] = request.get("sys_path", [])
    if "source" in request:
        module = _import_source(request)
    elif "module" in request:
        import importlib

        module = importlib.import_module(request["module"])
    else:
        path = request["path"].rstrip("/")
        directory, base = os.path.split(path)
        sys.path.insert(0, directory)
        module = __import__(base[:-3] if base.endswith(".py") else base)
    handler = getattr(module, request["handler"], None)
    if not callable(handler):
        raise AttributeError(f"module {module.__name__!r} has no function {request['handler']!r}")
    if request.get("imports"):
        import importlib

        for name in request["imports"]:
            try:
                importlib.import_module(name)
            except Exception as e:
                raise ImportError(f"the learned import of {name!r} failed: {e}") from e
    _function["handler"] = handler
    _function["takes_context"] = _takes_context(handler)
    _function["module"] = module
    return {"import_ms": (time.perf_counter() - started) * 1e3, "modules": len(sys.modules)}


class Context:
    """What the handler learns about its invocation: request_id, deadline, memory_mib, ...

    It also answers to the names of AWS Lambda's Python context (aws_request_id,
    function_name, get_remaining_time_in_millis(), ...), with their types (strings where
    Lambda's are), so handlers written for Lambda run unmodified.
    """

    identity = None  # Lambda's Cognito identity and mobile client context: never set here
    client_context = None

    def __init__(self, fields):
        self.__dict__.update(fields)
        self.request_id = fields.get("request_id")
        self.deadline = fields.get("deadline")
        self.memory_mib = fields.get("memory_mib")
        name, version = fields.get("function") or "", fields.get("version")
        self.aws_request_id = self.request_id
        self.function_name = name
        self.function_version = str(version) if version is not None else "$LATEST"
        self.memory_limit_in_mb = str(self.memory_mib)
        self.invoked_function_arn = (
            f"arn:usetl:lambda:local:{fields.get('tenant', '')}:function:{name}")
        self.log_group_name = f"/usetl/{name}"
        self.log_stream_name = self.request_id

    def remaining_ms(self):
        """Milliseconds left before the deadline (None if there is none)."""
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - time.time()) * 1e3)

    def get_remaining_time_in_millis(self):
        """remaining_ms() as Lambda's whole milliseconds (None if there is no deadline)."""
        left = self.remaining_ms()
        return None if left is None else int(left)


def invoke(request):
    handler = _function["handler"]
    if handler is None:
        raise RuntimeError("no function is loaded: send a load request first")
    if "event_file" in request:
        from usetl import etl

        event = json.loads(etl.stat(request["event_file"]).bytes())
    else:
        event = request.get("event")
    before = set(sys.modules)
    if _function["takes_context"]:
        value = handler(event, Context(request.get("context") or {}))
    else:
        value = handler(event)
    if isinstance(value, types.CoroutineType):  # an async def handler: run to its end
        import asyncio

        value = asyncio.run(value)
    return {"value": value, "imported": imported_since(before)}


def _takes_context(handler):
    """False for a handler that takes the event alone (SeBS's and OpenFaaS's handle(req));
    a callable this cannot read is called as Lambda calls it, with event and context."""
    function = getattr(handler, "__func__", handler)
    code = getattr(function, "__code__", None)
    if code is None or code.co_flags & 0x04:  # no code object, or *args
        return True
    bound = 1 if function is not handler else 0
    return code.co_argcount - bound != 1


def imported_since(before):
    """The modules the function's code imported since `before`, in import order.

    Only those a template can import by name again: a spec under their own name (not an
    alias), not loaded from /tmp (what an invocation wrote), an abi.MODULE_NAME.
    """
    names = []
    for name, module in list(sys.modules.items()):
        if name in before or not _module_name(name):
            continue
        try:
            spec = module.__spec__
            origin = spec.origin or ""
            if spec.name != name or origin.startswith("/tmp/"):
                continue
        except Exception:  # anything may be in sys.modules; it is only a hint
            continue
        names.append(name)
        if len(names) == abi.IMPORTED_MAX:
            break
    return names


def _module_name(name):
    return (isinstance(name, str) and name.isascii() and len(name) <= abi.MODULE_NAME_MAX
            and all(part.isidentifier() for part in name.split(".")))


def take_identity(identity):
    """Before a clone's first request: nothing it inherited may repeat another clone's."""
    os.environ["USETL_INSTANCE_ID"] = identity["instance"]
    seed = bytes.fromhex(identity["seed"])
    random = sys.modules.get("random")
    if random is not None:
        random.seed(seed)
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None  # its Random is re-made only when the pid changes
    from usetl import runtime  # in sys.modules since serve(): no import work here

    try:
        runtime.run_after_clone()
    except BaseException as e:  # noqa: B036 - the hook's failure refuses this instance
        error = describe(e)
        error["message"] = f"an after-clone hook failed: {error['message']}"
        _refused["error"] = error
        raise AfterCloneFailed() from None


class AfterCloneFailed(Exception):
    """An after-clone hook raised: the instance refuses work (_refused says why)."""


def before_freeze(request):
    """The template freezes next: the function's hooks close what cannot be shared."""
    from usetl import runtime

    runtime.run_before_freeze()
    return {}


HANDLERS = {
    abi.EXEC: run_code, abi.LOAD: load, abi.INVOKE: invoke, abi.FREEZE: before_freeze,
}


def answer(request, cpu_clock=None):
    """Run one request; the reply has its error (None if it succeeded) and times
    (guest_cpu_ms too, by `cpu_clock`, where there is one)."""
    started = time.perf_counter()
    cpu_started = cpu_clock() if cpu_clock is not None else 0.0
    error = None
    reply = {}
    _forked.clear()  # forks before this request made this process (the zygote's instances)
    try:
        abi.check_request(request)
        if abi.IDENTITY in request:
            take_identity(request[abi.IDENTITY])
        if _refused["error"] is not None:
            raise AfterCloneFailed()
        reply = HANDLERS[request["kind"]](request)
    except AfterCloneFailed:
        error = _refused["error"]
    except abi.ProtocolError as e:
        error = abi.error(abi.PROTOCOL_ERROR, str(e))
    except SystemExit as e:
        _end_if_forked(e)
        if e.code not in (None, 0):
            error = describe(e)
    except BaseException as e:  # noqa: B036 - the function's failure is the request's result
        _end_if_forked(e)
        error = describe(e)
    else:
        _end_if_forked(None)
    _flush()
    reply["error"] = error
    reply["guest_ms"] = (time.perf_counter() - started) * 1e3
    if cpu_clock is not None:
        reply["guest_cpu_ms"] = (cpu_clock() - cpu_started) * 1e3
    return reply


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a stream the function broke must not lose the reply
            pass


_forked = []  # set in a child the request's code forked: it has no request to answer
os.register_at_fork(after_in_child=lambda: _forked.append(True))


def _end_if_forked(exc):
    """A child the function forked came back here: it ends as a Python program's process
    does at its end, with SystemExit's status (or a traceback and 1), atexit run."""
    if not _forked:
        return
    status = 0
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    elif exc is not None:
        sys.stderr.write(describe(exc)["traceback"])
        status = 1
    import atexit

    atexit._run_exitfuncs()
    _flush()
    os._exit(status & 0xFF)


def encode_reply(reply):
    """The reply's frame; a value JSON cannot carry becomes the invocation's error."""
    try:
        return abi.encode(reply)
    except (TypeError, ValueError) as e:
        value = reply.pop("value", None)
        reply["error"] = abi.error(
            "TypeError",
            f"the handler's return value ({type(value).__name__}) is not JSON-serialisable: {e}",
            abi.HANDLER,
        )
        return abi.encode(reply)


def serve(channel, refused=None):
    """Announce the protocol, then answer requests until the channel ends.

    `refused` (an error in abi.error's form) answers every request instead: an instance
    whose after-clone hooks failed says why, rather than dying without a word.
    """
    _refused["error"] = refused
    # Before the first wait, where templates are captured, so that no clone's rollback
    # takes them back again: the runtime (an identity's hooks would import it, a dozen
    # exits, after every rollback) and the compiler's AST types (built on its first use:
    # about 2 ms in a USF). The importer and the arenas (ctypes) too, which every load
    # installs: imported there, they cost a started USF's first request 40-150 ms.
    from usetl import arenas, importer, runtime  # noqa: F401 - for their place in sys.modules

    compile("pass", "<usetl>", "exec")
    frame = abi.encode({"kind": abi.READY, "protocol": abi.PROTOCOL_VERSION})
    while (request := channel.exchange(frame)) is not None:
        reply = answer(request, channel.cpu_clock)
        frame = encode_reply(channel.finish(reply))


WARM_UPS = 16  # CPython 3.11 quickens a function after 8 calls, then specialises its bytecode
# glibc's malloc serves a block over its mmap threshold (128 KiB at start) by mmap and frees it
# by munmap, raising the threshold to the largest such block freed (up to 32 MiB): a process
# that has run a while serves those from its heap. Freed once before capture, so that a
# rolled-back clone's requests do not pay two syscalls again for their first large block.
MALLOC_WARM_UP_BYTES = 16 << 20
WARM_UP_IDENTITY = {"instance": "0" * 32, "seed": "00" * 32}


def warm_up():
    """Answer no-op requests with an identity here in the guest, with no exit, before a USF's
    template is captured: a rollback takes a clone back to that state, so each recycled request
    would otherwise run the agent's code unquickened again and pay the first calls of what an
    identity runs (bytes.fromhex, putenv, the import statement's machinery), and malloc's
    first large block (MALLOC_WARM_UP_BYTES). The dummy instance id is taken out of the
    environment again; every clone's first request brings its own."""
    request = abi.encode({"kind": abi.EXEC, "code": "pass", abi.IDENTITY: WARM_UP_IDENTITY})
    for _ in range(WARM_UPS):
        encode_reply(answer(abi.decode(request[abi.FRAME_HEADER_SIZE :])))
    del os.environ["USETL_INSTANCE_ID"]
    _sources.clear()
    bytes(MALLOC_WARM_UP_BYTES)  # calloc'd (bytearray would memset it), so freed untouched


if __name__ == "__main__":
    warm_up()
    serve(DeviceChannel())
