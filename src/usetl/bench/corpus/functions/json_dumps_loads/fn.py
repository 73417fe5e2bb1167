"""FunctionBench json_dumps_loads: a JSON document parsed and serialised repeatedly."""

import hashlib
import json
import random


def document(rng, depth):
    if depth == 0:
        return rng.choice([rng.random(), rng.randint(-10 ** 9, 10 ** 9), "text ünïcode", None,
                           True])
    return {f"k{i}": document(rng, depth - 1) if i % 2 else [document(rng, depth - 1)] * 2
            for i in range(4)}


def handler(event, context):
    text = json.dumps(document(random.Random(event["seed"]), event["depth"]))
    for _ in range(event["rounds"]):
        text = json.dumps(json.loads(text), sort_keys=True, indent=1)
    return {"bytes": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
