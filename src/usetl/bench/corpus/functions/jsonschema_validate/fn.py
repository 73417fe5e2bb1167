"""jsonschema: events validated against a schema (referencing and rpds-py underneath), with
the errors a bad event produces."""

from jsonschema import Draft202012Validator

SCHEMA = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {"item": {"type": "object", "required": ["sku"],
                       "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+-\\d+$"}}}},
}


def handler(event, context):
    validator = Draft202012Validator(SCHEMA)
    good = list(validator.iter_errors(event["good"]))
    bad = sorted(e.json_path for e in validator.iter_errors(event["bad"]))
    return {"good_errors": len(good), "bad_paths": bad}
