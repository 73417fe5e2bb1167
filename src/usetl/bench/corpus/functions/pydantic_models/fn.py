"""pydantic v2: an event validated into models, errors reported, JSON out."""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError, field_validator


class Kind(StrEnum):
    CREATED = "created"
    DELETED = "deleted"


class Item(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d+$")
    quantity: int = Field(gt=0)
    price: float


class Order(BaseModel):
    id: int
    kind: Kind
    at: datetime
    items: list[Item]
    tags: set[str] = set()

    @field_validator("items")
    @classmethod
    def not_empty(cls, items):
        if not items:
            raise ValueError("an order needs items")
        return items


def handler(event, context):
    good = Order.model_validate(event["order"])
    errors = []
    for bad in event["bad"]:
        try:
            Order.model_validate(bad)
        except ValidationError as e:
            errors.append(sorted(".".join(map(str, err["loc"])) for err in e.errors()))
    return {"total": round(sum(i.quantity * i.price for i in good.items), 2),
            "json": good.model_dump_json(exclude={"tags"}), "errors": errors,
            "schema_keys": sorted(Order.model_json_schema()["properties"])}
