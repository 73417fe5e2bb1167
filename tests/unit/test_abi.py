"""usetl.abi: the one host/guest contract, and the copies of it that both sides load."""

import json
import socket

import pytest

from usetl import abi
from usetl.abi import etl as wire
from usetl.image import guest_lib
from usetl.image.inputs import guest_sources
from usetl.invocation import ErrorInfo
from usetl.libos.devices import AgentChannel
from usetl.usf import UsfError
from usetl.usf.builder import check_ready


def test_a_message_and_its_payload_cross_a_socket_in_the_framing():
    a, b = socket.socketpair()
    with a, b:
        abi.send(a, {"kind": abi.ETL, "op": wire.LS}, b"raw bytes")
        abi.send(a, {"kind": abi.REPLY})
        assert abi.recv(b) == ({"kind": abi.ETL, "op": wire.LS, "payload": 9}, b"raw bytes")
        assert abi.recv(b) == ({"kind": abi.REPLY}, b"")
        a.sendall(abi.frame_header(abi.MAX_MESSAGE + 1))
        with pytest.raises(abi.ProtocolError, match="over the"):
            abi.recv(b)
        a.sendall(abi.frame_header(2) + b"[]")
        with pytest.raises(abi.ProtocolError, match="not list"):
            abi.recv(b)
        a.close()
        with pytest.raises(EOFError):
            abi.recv(b)


MESSAGES = [{"kind": abi.EXEC, "code": "pass"}, {},
            {"a": [1.5, float("inf"), None, True, "\u00e9\ud800"], "b": {"c": -0.0}}]


@pytest.mark.parametrize("message", MESSAGES)
def test_messages_are_written_and_read_as_json_writes_and_reads_them(message):
    body = abi.encode(message)[abi.FRAME_HEADER_SIZE :]
    assert body == json.dumps(message).encode()
    for form in (body, bytearray(body), b" " + body + b"\n", body.decode(),
                 body.decode().encode("utf-16")):
        assert json.dumps(abi.decode(form)) == json.dumps(message)


def test_what_json_refuses_to_write_or_read_is_refused_alike():
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        abi.encode({"value": circular})
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        abi.encode({"value": object()})
    for body in (b"", b"{", b'{"a": 1} x', b"\xff"):
        with pytest.raises(abi.ProtocolError, match="not JSON"):
            abi.decode(body)


@pytest.mark.parametrize(("request_", "problem"), [
    ({"kind": "fork"}, "unknown request kind"),
    ({"kind": abi.EXEC}, "needs 'code'"),
    ({"kind": abi.EXEC, "code": 1}, "wrong type"),
    ({"kind": abi.EXEC, "code": "", "extra": 1}, "unknown fields"),
    ({"kind": abi.EXEC, "code": "", "identity": "i"}, "not an object"),
    ({"kind": abi.EXEC, "code": "", "identity": {"instance": "i"}}, "needs 'seed'"),
    ({"kind": abi.EXEC, "code": "", "identity": {"instance": "i", "seed": "00", "kind": 1}},
     "unknown fields in the identity"),
])
def test_requests_outside_the_schema_are_protocol_errors(request_, problem):
    with pytest.raises(abi.ProtocolError, match=problem):
        abi.check_request(request_)


def test_valid_requests_pass_the_schema():
    abi.check_request({"kind": abi.INVOKE, "event": [1, 2], "context": None})
    abi.check_request({"kind": abi.LOAD, "handler": "handler", "module": "pkg.mod"})
    abi.check_request({"kind": abi.EXEC, "code": "", "identity": {"instance": "i", "seed": "00"}})


def test_handlers_name_a_module_and_a_function():
    assert abi.split_handler("fn.py:handler") == ("fn", "handler")
    assert abi.split_handler("pkg/__init__.py:main") == ("pkg", "main")
    assert abi.split_handler("pkg/sub/mod.py:run") == ("pkg.sub.mod", "run")
    for bad in ("fn.py", "fn:handler", "fn.py:"):
        with pytest.raises(ValueError, match="file.py:function"):
            abi.split_handler(bad)


def test_lambdas_module_function_handlers_are_given_as_file_and_function():
    assert abi.canonical_handler("lambda_function.lambda_handler") == (
        "lambda_function.py:lambda_handler")
    assert abi.canonical_handler("src/app.handler") == "src/app.py:handler"
    assert abi.canonical_handler("pkg.sub.mod.run") == "pkg/sub/mod.py:run"
    for kept in ("fn.py:handler", "handler", ""):
        assert abi.canonical_handler(kept) == kept


def test_errors_have_one_form_and_a_known_kind():
    assert abi.error(abi.TIMEOUT, "too slow") == {
        "type": "Timeout", "message": "too slow", "traceback": "", "kind": abi.SANDBOX}
    assert abi.error("KeyError", "'x'", abi.HANDLER, "Traceback...")["kind"] == "handler"
    with pytest.raises(ValueError, match="needs a kind"):
        abi.error("KeyError", "'x'")
    assert abi.GUEST_ENDED <= abi.ERROR_TYPES.keys()


def test_downloads_are_named_after_the_url_path():
    assert wire.name_from_url("https://example.com") == "index"
    assert wire.name_from_url("https://example.com/") == "index"
    assert wire.name_from_url("http://h/a/data.csv?x=1#frag") == "data.csv"


def test_the_image_and_the_process_sandbox_carry_the_monitors_own_contract(image, tmp_path):
    sources = guest_sources()
    assert {"agent.py", "etl.py", "sandbox.py", "abi/__init__.py", "abi/etl.py"} <= set(sources)
    lib = guest_lib(tmp_path) / "usetl"
    for relative, source in sources.items():
        data = source.read_bytes()
        assert (lib / relative).read_bytes() == data, relative
        entry = image.lookup(f"/usetl/lib/usetl/{relative}")
        assert entry is not None and bytes(image.read(entry, 0, entry.size)) == data, relative
    assert guest_lib(tmp_path) == lib.parent  # written once, found again by its contents


def test_the_host_error_type_carries_the_contracts_kind():
    assert ErrorInfo(abi.TIMEOUT, "too slow").kind == abi.SANDBOX
    assert ErrorInfo("HyperForkError", "no clone").kind == abi.PLATFORM  # made by the host
    assert ErrorInfo(**abi.error("KeyError", "'x'", abi.HANDLER)).kind == abi.HANDLER
    assert ErrorInfo(**abi.error(abi.RESULT_TOO_LARGE, "big")).as_dict() == abi.error(
        abi.RESULT_TOO_LARGE, "big")
    with pytest.raises(ValueError, match="unknown error kind"):
        ErrorInfo("KeyError", "'x'", kind="mine")


def test_an_agent_of_another_protocol_version_is_a_clear_error():
    channel = AgentChannel()
    channel.outbox += abi.encode({"kind": abi.READY, "protocol": abi.PROTOCOL_VERSION})
    check_ready(channel)
    channel.outbox += abi.encode({"kind": abi.READY, "protocol": abi.PROTOCOL_VERSION + 1})
    with pytest.raises(UsfError, match=f"speaks protocol {abi.PROTOCOL_VERSION + 1}"):
        check_ready(channel)
    channel.outbox += abi.encode({"kind": abi.REPLY})
    with pytest.raises(UsfError, match="without announcing itself"):
        check_ready(channel)
