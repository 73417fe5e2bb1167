"""gRPC: a server in the function on 127.0.0.1 with a thread pool and generic handlers,
unary and streaming calls, metadata, and a deadline that expires."""

import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("served-by", "corpus"),))
    return request[::-1]


def stream(request, context):
    for i in range(int(request)):
        yield str(i * i).encode()


def slow(request, context):
    time.sleep(2)
    return request


def handler(event, context):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("corpus.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            call = channel.unary_unary("/corpus.Echo/Unary")
            reply, info = call.with_call(b"olleh", timeout=30)
            trailing = dict(info.trailing_metadata())
            streamed = [int(m) for m in channel.unary_stream("/corpus.Echo/Stream")(
                str(event["stream"]).encode(), timeout=30)]
            try:
                channel.unary_unary("/corpus.Echo/Slow")(b"x", timeout=0.2)
                code = None
            except grpc.RpcError as e:
                code = e.code().name
    finally:
        server.stop(0).wait(30)
    return {"reply": reply.decode(), "trailing": trailing, "streamed": streamed[-3:],
            "deadline": code}
