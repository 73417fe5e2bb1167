"""The fast hashes and JSON libraries of ingestion code: xxhash (XXH32, XXH64, XXH3) and
MurmurHash3 (mmh3) for sharding and dedupe, streaming digests, ujson and simplejson with
Decimal, NaN handling, sorted keys and big integers, checked against the stdlib's json."""

import decimal
import json
import random

import mmh3
import simplejson
import ujson
import xxhash


def records(n, seed):
    rng = random.Random(seed)
    return [{"id": i, "user": f"u{rng.randrange(1000)}", "score": rng.random(),
             "tags": rng.sample(["a", "b", "c", "d"], 2), "big": 2 ** 62 + i,
             "name": rng.choice(["Zoë", "Łukasz", "李", "ada"])} for i in range(n)]


def hashing(rows, shards):
    keys = [r["user"].encode() for r in rows]
    stream = xxhash.xxh64(seed=7)
    for k in keys:
        stream.update(k)
    by_shard = [0] * shards
    for k in keys:
        by_shard[mmh3.hash(k, 42, signed=False) % shards] += 1
    return {"xxh32": xxhash.xxh32_hexdigest(b"serverless"),
            "xxh64": xxhash.xxh64_intdigest(b"serverless", seed=1),
            "xxh3_128": xxhash.xxh3_128_hexdigest(b"serverless"), "stream": stream.hexdigest(),
            "mmh3": mmh3.hash(b"serverless"), "mmh3_128": mmh3.hash128(b"serverless", 1),
            "mmh3_bytes": mmh3.hash_bytes(b"serverless").hex(), "shards": by_shard}


def jsons(rows):
    std = json.dumps(rows, sort_keys=True, ensure_ascii=False)
    u = ujson.dumps(rows, sort_keys=True, ensure_ascii=False, escape_forward_slashes=False)
    s = simplejson.dumps(rows, sort_keys=True, ensure_ascii=False)
    money = simplejson.dumps({"amount": decimal.Decimal("19.99")}, use_decimal=True)
    back = simplejson.loads(money, use_decimal=True)["amount"]
    try:
        ujson.dumps(float("nan"))
        nan = "allowed"
    except OverflowError:
        nan = "OverflowError"
    return {"loads_equal": ujson.loads(u) == json.loads(std) == simplejson.loads(s),
            "simplejson_same": s == std, "money": [money, str(back), type(back).__name__],
            "nan": nan, "simple_nan": simplejson.dumps(float("nan"), ignore_nan=True),
            "indent": ujson.dumps({"b": 1, "a": [1, 2]}, indent=2, sort_keys=True),
            "size": [len(std), len(u), len(s)]}


def handler(event, context):
    rows = records(event["rows"], event["seed"])
    return {"hashes": hashing(rows, event["shards"]), "json": jsons(rows)}
