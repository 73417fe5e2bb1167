"""orjson and PyYAML: configuration in YAML (the C loader where built), records as JSON."""

import dataclasses
import datetime
import hashlib

import orjson
import yaml

CONFIG = """
pipeline:
  name: nightly
  stages:
    - {name: extract, retries: 3}
    - {name: transform, retries: 1, options: {dedupe: true}}
  schedule: "0 3 * * *"
  started: 2024-01-02 03:04:05
"""


@dataclasses.dataclass
class Record:
    id: int
    when: datetime.datetime
    values: list


def handler(event, context):
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    config = yaml.load(CONFIG, Loader=loader)
    records = [Record(i, datetime.datetime(2024, 1, 1, i % 24), [i, i / 2])
               for i in range(event["records"])]
    blob = orjson.dumps(records, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SORT_KEYS)
    back = orjson.loads(blob)
    dumped = yaml.safe_dump(config, sort_keys=True)
    return {"stages": [s["name"] for s in config["pipeline"]["stages"]],
            "started": config["pipeline"]["started"].isoformat(),
            "c_loader": loader is not yaml.SafeLoader, "json_sha256":
            hashlib.sha256(blob).hexdigest(), "first": back[0],
            "yaml_round_trip": yaml.safe_load(dumped) == config}
