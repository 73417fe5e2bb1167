"""SeBS 210.thumbnailer: resize an image with Pillow, keeping its aspect ratio."""

import hashlib
import io

from PIL import Image, ImageDraw


def source_image(width, height):
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for i in range(0, width, 16):
        draw.line([(i, 0), (width - i, height)], fill=(i % 256, (3 * i) % 256, 128), width=5)
    draw.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(250, 20, 40))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def resize_image(data, w, h):
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((w, h))
        out = io.BytesIO()
        image.save(out, format="jpeg")
        return image.size, out.getvalue()


def handler(event, context):
    original = source_image(event["width"], event["height"])
    with open("/tmp/thumbnailer-in.jpg", "wb") as f:
        f.write(original)
    with open("/tmp/thumbnailer-in.jpg", "rb") as f:
        size, thumb = resize_image(f.read(), event["max_width"], event["max_height"])
    return {"size": list(size), "sha256": hashlib.sha256(thumb).hexdigest()}
