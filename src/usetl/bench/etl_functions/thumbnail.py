"""A thumbnail of a JPEG fetched from a URL: event {"url": ..., "size": 128}."""

import io

from fetch import fetch
from PIL import Image


def handler(event, context):
    image = Image.open(io.BytesIO(fetch(event["url"])))  # imports Pillow's plugins lazily
    image.thumbnail((event.get("size", 128),) * 2)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return {"width": image.width, "height": image.height, "bytes": out.tell()}
