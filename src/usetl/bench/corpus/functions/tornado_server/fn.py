"""Tornado's HTTP server and AsyncHTTPClient in one handler (a local API as tests and
sidecar handlers run one): JSON handlers with path arguments, a POST body, a websocket
echo, and a coroutine that times out with gen.with_timeout."""

import asyncio
import json
from datetime import timedelta

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado import gen


class Item(tornado.web.RequestHandler):
    def get(self, key):
        self.write({"key": key, "len": len(key)})

    def post(self, key):
        self.write({"key": key, "sum": sum(json.loads(self.request.body))})


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message[::-1])


async def main(n):
    app = tornado.web.Application([(r"/item/(\w+)", Item), (r"/ws", Echo)])
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sock.getsockname()[1]
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    client = tornado.httpclient.AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}"
    got = await asyncio.gather(*(client.fetch(f"{base}/item/k{i}") for i in range(n)))
    posted = await client.fetch(f"{base}/item/sum", method="POST", body=json.dumps([1, 2, 3]))
    try:
        await client.fetch(f"{base}/nowhere")
        missing = None
    except tornado.httpclient.HTTPClientError as e:
        missing = e.code
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    echoes = []
    for word in ("tornado", "socket"):
        await ws.write_message(word)
        echoes.append(await ws.read_message())
    ws.close()
    try:
        await gen.with_timeout(timedelta(seconds=0.05), asyncio.sleep(5))
        timed_out = False
    except gen.TimeoutError:
        timed_out = True
    server.stop()
    await server.close_all_connections()
    return {"items": [json.loads(r.body) for r in got], "posted": json.loads(posted.body),
            "missing": missing, "echoes": echoes, "timed_out": timed_out}


def handler(event, context):
    return asyncio.run(main(event["requests"]))
