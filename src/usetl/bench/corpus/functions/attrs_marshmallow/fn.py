"""Request validation and serialization, as API handlers do it without pydantic: attrs
classes with validators and converters, cattrs structuring nested JSON (and its grouped
errors), and marshmallow schemas loading, validating and dumping the same payloads."""

import datetime

import attrs
import cattrs
from marshmallow import Schema, ValidationError, fields, post_load, validate


@attrs.define
class Line:
    sku: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Z]+-\d+"))
    qty: int = attrs.field(converter=int, validator=attrs.validators.gt(0))
    price: float = 0.0


@attrs.define
class Order:
    id: int
    placed: datetime.date
    lines: list[Line] = attrs.Factory(list)
    note: str | None = None

    @property
    def total(self):
        return round(sum(line.qty * line.price for line in self.lines), 2)


def converter():
    c = cattrs.Converter(forbid_extra_keys=True)
    c.register_structure_hook(datetime.date, lambda v, _: datetime.date.fromisoformat(v))
    c.register_unstructure_hook(datetime.date, lambda d: d.isoformat())
    return c


class LineSchema(Schema):
    sku = fields.Str(required=True, validate=validate.Regexp(r"[A-Z]+-\d+"))
    qty = fields.Int(required=True, validate=validate.Range(min=1))
    price = fields.Float(load_default=0.0)


class OrderSchema(Schema):
    id = fields.Int(required=True)
    placed = fields.Date(required=True)
    lines = fields.List(fields.Nested(LineSchema), validate=validate.Length(min=1))
    note = fields.Str(allow_none=True, load_default=None)

    @post_load
    def make(self, data, **kwargs):
        data["lines"] = [Line(**line) for line in data["lines"]]
        return Order(**data)


def errors_of(exc):
    if isinstance(exc, cattrs.BaseValidationError):
        return sorted(cattrs.transform_error(exc))
    return [str(exc)]


def handler(event, context):
    c = converter()
    out = {"attrs": [], "marshmallow": []}
    for payload in event["payloads"]:
        try:
            order = c.structure(payload, Order)
            out["attrs"].append({"total": order.total, "back": c.unstructure(order)})
        except Exception as e:
            out["attrs"].append({"error": type(e).__name__, "details": errors_of(e)})
        try:
            order = OrderSchema().load(payload)
            out["marshmallow"].append({"total": order.total,
                                       "dump": OrderSchema().dump(attrs.asdict(order))})
        except ValidationError as e:
            out["marshmallow"].append({"error": e.normalized_messages()})
    out["evolve"] = attrs.asdict(attrs.evolve(Line("AB-1", "3", 2.5), qty=5))
    return out
