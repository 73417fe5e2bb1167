"""XML-RPC as legacy integrations still speak it: a SimpleXMLRPCServer in a thread with
functions, an instance's methods, introspection and multicall, called through ServerProxy
with None, dates, binary data and a Fault raised by the server."""

import datetime
import threading
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCServer


class Inventory:
    def __init__(self):
        self.items = {}

    def stock_add(self, sku, qty):
        self.items[sku] = self.items.get(sku, 0) + qty
        return self.items[sku]

    def stock_get(self, sku):
        if sku not in self.items:
            raise ValueError(f"unknown sku {sku}")
        return self.items[sku]


def handler(event, context):
    server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True,
                                use_builtin_types=True)
    server.register_introspection_functions()
    server.register_multicall_functions()
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda d: (d + datetime.timedelta(days=1)).isoformat(), "tomorrow")
    server.register_function(lambda blob: blob[::-1], "reverse")
    server.register_function(lambda: None, "nothing")
    server.register_instance(Inventory(), allow_dotted_names=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    out = {}
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/RPC2"
        with xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True) as proxy:
            out["add"] = proxy.add(2, 40)
            out["tomorrow"] = proxy.tomorrow(datetime.datetime(2024, 2, 28, 12, 0))
            out["reverse"] = proxy.reverse(b"\x00\x01binary").hex()
            out["nothing"] = proxy.nothing()
            for sku, qty in event["stock"]:
                proxy.stock_add(sku, qty)
            out["stock"] = [proxy.stock_get(sku) for sku, _ in event["stock"]]
            out["methods"] = [m for m in proxy.system.listMethods() if not m.startswith("system.")]
            try:
                proxy.stock_get("missing")
            except xmlrpc.client.Fault as fault:
                out["fault"] = [fault.faultCode, "unknown sku" in fault.faultString]
            multi = xmlrpc.client.MultiCall(proxy)
            multi.add(1, 2)
            multi.add(3, 4)
            multi.tomorrow(datetime.datetime(2024, 12, 31))
            out["multicall"] = list(multi())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)
    return out
