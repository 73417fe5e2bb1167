"""Binary wire formats between services: msgpack with extension types and a streaming
Unpacker fed in pieces, and protobuf messages built from a descriptor at run time (no
protoc), serialized, parsed, merged, converted to JSON and dicts, with well-known types."""

import datetime

import msgpack
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.timestamp_pb2 import Timestamp


def encode_ext(obj):
    if isinstance(obj, datetime.datetime):
        return msgpack.ExtType(1, obj.isoformat().encode())
    if isinstance(obj, set):
        return msgpack.ExtType(2, msgpack.packb(sorted(obj)))
    raise TypeError(type(obj))


def decode_ext(code, data):
    if code == 1:
        return {"datetime": data.decode()}
    if code == 2:
        return {"set": msgpack.unpackb(data)}
    return msgpack.ExtType(code, data)


def msgpack_round(n):
    items = [{"id": i, "at": datetime.datetime(2024, 6, 1, 12, i % 60), "tags": {"b", "a"},
              "blob": bytes([i % 256]) * 3, "score": i / 7} for i in range(n)]
    packer = msgpack.Packer(default=encode_ext)
    stream = b"".join(packer.pack(item) for item in items)
    unpacker = msgpack.Unpacker(ext_hook=decode_ext, raw=False)
    got = []
    for start in range(0, len(stream), 37):  # as chunks arrive from a socket
        unpacker.feed(stream[start:start + 37])
        got.extend(unpacker)
    ts = msgpack.unpackb(msgpack.packb(msgpack.Timestamp(1717243200, 500)))
    return {"bytes": len(stream), "count": len(got), "first": [got[0]["at"], got[0]["tags"],
                                                               got[0]["blob"].hex()],
            "last_score": round(got[-1]["score"], 6), "timestamp": [ts.seconds, ts.nanoseconds]}


def order_class():
    fdp = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop",
                                             syntax="proto3")
    fdp.dependency.append("google/protobuf/timestamp.proto")
    line = fdp.message_type.add(name="Line")
    line.field.add(name="sku", number=1, type=9, label=1)
    line.field.add(name="qty", number=2, type=5, label=1)
    order = fdp.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=3, label=1)
    order.field.add(name="lines", number=2, type=11, label=3, type_name=".shop.Line")
    order.field.add(name="placed", number=3, type=11, label=1,
                    type_name=".google.protobuf.Timestamp")
    order.field.add(name="labels", number=4, type=9, label=3)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(Timestamp.DESCRIPTOR.file.serialized_pb)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def protobuf_round(n):
    Order = order_class()
    msg = Order(id=42, labels=["gift"])
    for i in range(n):
        msg.lines.add(sku=f"SKU-{i}", qty=i + 1)
    msg.placed.FromDatetime(datetime.datetime(2024, 6, 1, 12, 0, 0))
    wire = msg.SerializeToString(deterministic=True)
    back = Order.FromString(wire)
    extra = Order(labels=["express"])
    back.MergeFrom(extra)
    as_json = json_format.MessageToJson(back, sort_keys=True, indent=None)
    parsed = json_format.Parse(as_json, Order())
    return {"wire": len(wire), "hex": wire[:16].hex(), "labels": list(back.labels),
            "json": as_json[:120], "dict_lines": len(json_format.MessageToDict(parsed)["lines"]),
            "equal": parsed == back, "total": sum(line.qty for line in back.lines)}


def handler(event, context):
    return {"msgpack": msgpack_round(event["items"]), "protobuf": protobuf_round(event["lines"])}
