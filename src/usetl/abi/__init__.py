"""The contract between the host and the code it runs: one versioned definition.

Solo5's hvt_abi.h is the model: the monitor and the guest include the same
definition, so nothing of the contract is written down twice. This package
is standard library only; the image bakes it as ``usetl.abi`` next to the
guest runtime, the process backend's sandbox imports the same copy, and the
monitor and the platform import it here.

- Framing: a message is an 8-byte little-endian length, then that many bytes
  of JSON (an object). On a socket, raw bytes may follow a message: their
  length is the message's "payload".
- The agent (the guest runtime's loop) announces itself with a ready message
  carrying PROTOCOL_VERSION, then answers requests (REQUESTS: their kinds and
  fields) with replies (REPLY_FIELDS). In a USF a reply and the wait for the
  next request are one ioctl on AGENT_DEVICE (AGENT_EXCHANGE): one VM exit.
- An error crosses every boundary in one form (`error()`): type, message,
  traceback and kind (HANDLER: raised by the function's code; SANDBOX: the
  sandbox ended or broke; PLATFORM: the host refused or failed).
- The ETL device's layout, operations and error kinds are in usetl.abi.etl.
"""

import json
import json.encoder
import json.scanner

# Bump on any change below that an older guest or monitor would misread.
# 2: load takes "imports", an invoke reply has "imported"; 3: ETL "pass"; 4: AGENT_EXCHANGE,
# a request's "identity" (no identity request), no guest_cpu_ms from a USF's agent
PROTOCOL_VERSION = 4

# -- framing -------------------------------------------------------------------

# A u64, little-endian: the length of the JSON body that follows. (No struct module: in
# the guest every extension module imported costs start-up time.)
FRAME_HEADER_SIZE = 8
MAX_MESSAGE = 64 << 20
PAYLOAD = "payload"  # on a socket: how many raw bytes follow the message


class ProtocolError(Exception):
    """A message that breaks the framing or the schema."""


def encode(message: dict) -> bytes:
    """The frame of a message: header and JSON (TypeError/ValueError if not JSON)."""
    body = dumps(message).encode()
    return frame_header(len(body)) + body


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(message: object) -> str:
    """json.dumps(message), by its C encoder alone: json.dumps's Python layers (an encoder's
    methods, a closure per call) were half its time, and a request and its reply pay them
    with every cache cold (after a VM exit or entry)."""
    encoder = json.encoder.c_make_encoder({}, _not_json, json.encoder.encode_basestring_ascii,
                                          None, ": ", ", ", False, False, True)
    return "".join(encoder(message, 0))


def frame_header(length: int) -> bytes:
    return length.to_bytes(FRAME_HEADER_SIZE, "little")


def body_length(header: bytes) -> int:
    """The body length a frame header announces."""
    if len(header) != FRAME_HEADER_SIZE:
        raise ProtocolError(f"a frame header is {FRAME_HEADER_SIZE} bytes, not {len(header)}")
    length = int.from_bytes(header, "little")
    if length > MAX_MESSAGE:
        raise ProtocolError(f"a message of {length} B is over the {MAX_MESSAGE} B limit")
    return length


_scan = json.scanner.make_scanner(json.JSONDecoder())


def decode(body: bytes) -> dict:
    """A message from its JSON body (as json.loads reads it)."""
    try:
        # UTF-8 with nothing around the value, as encode() writes it, by the C scanner alone
        # (json.loads's Python layers and regular expressions were over half its time).
        text = str(body, "utf-8")
        message, end = _scan(text, 0)
        if end != len(text):
            raise ValueError("more after the value")
    except (TypeError, ValueError, StopIteration):
        try:  # json.loads's own answer: whitespace around it, another encoding, or its error
            message = json.loads(body)
        except ValueError as e:
            raise ProtocolError(f"a message is not JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(message).__name__}")
    return message


def _recv_exact(sock, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the socket")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send(sock, message: dict, payload: bytes = b"") -> None:
    """Send a message on a socket, then `payload` raw bytes."""
    if payload:
        message = dict(message, **{PAYLOAD: len(payload)})
    sock.sendall(encode(message))
    if payload:
        sock.sendall(payload)


def recv(sock) -> tuple[dict, bytes]:
    """The next message on a socket and its payload (EOFError when the peer closed it)."""
    message = decode(_recv_exact(sock, body_length(_recv_exact(sock, FRAME_HEADER_SIZE))))
    size = message.get(PAYLOAD, 0)
    if not isinstance(size, int) or not 0 <= size <= MAX_MESSAGE:
        raise ProtocolError(f"bad payload length {size!r}")
    return message, _recv_exact(sock, size) if size else b""


# -- the agent's requests and replies --------------------------------------------

AGENT_DEVICE = "/dev/usetl"  # the agent's channel in a USF

# The agent's one syscall per request in a USF: ioctl(AGENT_DEVICE, AGENT_EXCHANGE, buffer).
# The buffer starts with a header (u64 length of the reply frame that follows it, u64
# capacity of the whole buffer, little-endian). The monitor takes the reply, waits for the
# next request, writes its first bytes (its frame, from the frame header on) over the buffer
# and returns how many it wrote; the agent reads the rest of a larger one with read(). A
# reply too large for the buffer is written first, and the exchange then carries none.
AGENT_EXCHANGE = 0xC0105546  # _IOWR('U', 0x46, 16): the header is 16 bytes, the rest variable
EXCHANGE_HEADER_SIZE = 16


def exchange_header(length: int, capacity: int) -> bytes:
    return length.to_bytes(8, "little") + capacity.to_bytes(8, "little")


def unpack_exchange_header(header: bytes) -> tuple[int, int]:
    """(reply length, buffer capacity) from the first EXCHANGE_HEADER_SIZE bytes."""
    return int.from_bytes(header[0:8], "little"), int.from_bytes(header[8:16], "little")


READY = "ready"  # the agent's first message: {"kind": READY, "protocol": PROTOCOL_VERSION}
EXEC = "exec"  # run Python source as __main__
LOAD = "load"  # import the function's module once and keep its handler (and learned imports)
INVOKE = "invoke"  # call handler(event, context)
# A clone's first request after its fork or a rollback carries IDENTITY, {"instance": id,
# "seed": hex}: the agent takes it (fresh seeds and instance id, the after-clone hooks) before
# the request itself, so a fresh identity costs no run of the guest of its own.
IDENTITY = "identity"
FREEZE = "freeze"  # the template is about to be frozen: the function's before-freeze hooks
ETL = "etl"  # on a socket: an ETL request from the guest (see usetl.abi.etl)
REPLY = "reply"  # on a socket: the agent's reply to a request

# kind -> {field: (types, required)}. load takes one of source (+ filename), path or module;
# every kind may carry IDENTITY (checked by check_request).
_STR, _LIST, _OBJ = (str,), (list,), (dict,)
REQUESTS = {
    EXEC: {"code": (_STR, True), "filename": (_STR, False)},
    LOAD: {"handler": (_STR, True), "source": (_STR, False), "filename": (_STR, False),
           "path": (_STR, False), "module": (_STR, False), "sys_path": (_LIST, False),
           "imports": (_LIST, False)},
    INVOKE: {"event": (None, False), "event_file": (_STR, False),
             "context": (_OBJ + (type(None),), False)},
    FREEZE: {},
}
IDENTITY_FIELDS = {"instance": (_STR, True), "seed": (_STR, True)}

# Every reply has error and guest_ms; invoke adds value and imported, load import_ms and
# modules; the process sandbox adds guest_cpu_ms, stdout, stderr and peak_memory_bytes (a
# USF's monitor measures CPU time and memory and captures the console itself: reading the
# process CPU clock would cost the guest an exit).
REPLY_FIELDS = frozenset({
    "error", "guest_ms", "guest_cpu_ms", "value", "imported", "import_ms", "modules",
    "stdout", "stderr", "peak_memory_bytes",
})

# An invoke reply's "imported": the modules the handler's call put in sys.modules, in import
# order, at most IMPORTED_MAX names of the form MODULE_NAME (ASCII dotted identifiers of at
# most MODULE_NAME_MAX characters). The host takes it as a hint only (it chooses what a
# learned template imports, in that function's own template), and a load request's
# "imports" are such names, imported after the function's module.
IMPORTED_MAX = 512
MODULE_NAME_MAX = 200
MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


def check_request(message: dict) -> None:
    """Raise ProtocolError unless message is a request REQUESTS describes."""
    kind = message.get("kind")
    fields = REQUESTS.get(kind)
    if fields is None:
        raise ProtocolError(f"unknown request kind {kind!r}")
    if IDENTITY in message:
        identity = message[IDENTITY]
        if not isinstance(identity, dict):
            raise ProtocolError(f"{IDENTITY!r} of a {kind} request is not an object")
        _check_fields(identity, IDENTITY_FIELDS, f"the identity of a {kind} request")
    _check_fields(message, fields, f"a {kind} request", {"kind", IDENTITY})


def _check_fields(message: dict, fields: dict, what: str, also: frozenset | set = frozenset()
                  ) -> None:
    for name, (types, required) in fields.items():
        if name not in message:
            if required:
                raise ProtocolError(f"{what} needs {name!r}")
        elif types is not None and not isinstance(message[name], types):
            raise ProtocolError(f"{name!r} of {what} has the wrong type")
    unknown = set(message) - set(fields) - also
    if unknown:
        raise ProtocolError(f"unknown fields in {what}: {sorted(unknown)}")


def canonical_handler(handler: str) -> str:
    """A handler as "file.py:function", also given as AWS Lambda's "module.function"
    ("lambda_function.lambda_handler", "src/app.handler", "pkg.mod.handler"); other text
    is returned as it is (for the caller's check to refuse)."""
    if ":" in handler or "." not in handler:
        return handler
    module, _, function = handler.rpartition(".")
    return f"{module.replace('.', '/')}.py:{function}"


def split_handler(handler: str) -> tuple[str, str]:
    """"pkg/mod.py:func" -> ("pkg.mod", "func"): the module to import and the function."""
    path, sep, function = handler.partition(":")
    if not sep or not path.endswith(".py") or not function:
        raise ValueError(f"a handler is 'file.py:function', not {handler!r}")
    module = path[: -len(".py")].replace("/", ".")
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    return module, function


# -- errors ----------------------------------------------------------------------

HANDLER = "handler"  # the function's code raised it: type is the exception's class name
SANDBOX = "sandbox"  # the sandbox ended or broke while it ran
PLATFORM = "platform"  # the host refused or failed the invocation
ERROR_KINDS = frozenset({HANDLER, SANDBOX, PLATFORM})

# The error types the monitor and the platform produce, and their kinds.
TIMEOUT = "Timeout"  # the invocation ran past its deadline
GUEST_FAULT = "GuestFault"  # a CPU exception in the guest (page fault, invalid opcode...)
GUEST_CRASH = "GuestCrash"  # the VM stopped in a way the monitor could not handle
GUEST_EXIT = "GuestExit"  # the guest's Python exited or was killed
AGENT_ERROR = "AgentError"  # the agent broke the protocol (no reply, a bad reply)
MONITOR_ERROR = "MonitorError"  # a bug in the monitor while it served a syscall
INSTANCE_DIED = "InstanceDied"  # the sandbox process died
SANDBOX_ERROR = "SandboxError"  # the sandbox could not run the invocation
PLATFORM_ERROR = "PlatformError"
RESULT_TOO_LARGE = "ResultTooLarge"
FUNCTION_DELETED = "FunctionDeleted"
INTERRUPTED = "Interrupted"  # the server stopped while the invocation was accepted
PROTOCOL_ERROR = "ProtocolError"  # a message broke the framing or the schema
ERROR_TYPES = {
    TIMEOUT: SANDBOX, GUEST_FAULT: SANDBOX, GUEST_CRASH: SANDBOX, GUEST_EXIT: SANDBOX,
    AGENT_ERROR: SANDBOX, MONITOR_ERROR: SANDBOX, INSTANCE_DIED: SANDBOX, SANDBOX_ERROR: SANDBOX,
    PLATFORM_ERROR: PLATFORM, RESULT_TOO_LARGE: PLATFORM, FUNCTION_DELETED: PLATFORM,
    INTERRUPTED: PLATFORM, PROTOCOL_ERROR: PLATFORM,
}
# After these the guest is gone: its instance cannot serve another invocation.
GUEST_ENDED = frozenset({TIMEOUT, GUEST_FAULT, GUEST_CRASH, GUEST_EXIT, AGENT_ERROR,
                         MONITOR_ERROR})


def error(type_name: str, message: str, kind: str | None = None, traceback: str = "") -> dict:
    """An error in its wire form; kind defaults to the one ERROR_TYPES gives type_name."""
    kind = kind or ERROR_TYPES.get(type_name)
    if kind not in ERROR_KINDS:
        raise ValueError(f"an error of type {type_name!r} needs a kind: {sorted(ERROR_KINDS)}")
    return {"type": type_name, "message": message, "traceback": traceback, "kind": kind}
