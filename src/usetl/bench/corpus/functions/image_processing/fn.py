"""FunctionBench image_processing: flips, rotations, filters, grey and resize with Pillow,
each result saved to /tmp."""

import hashlib
import os

from PIL import Image, ImageFilter

TMP = "/tmp/image-processing"


def operations(image):
    yield "flip_lr", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    yield "flip_tb", image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    for angle in (90, 180, 270):
        yield f"rotate_{angle}", image.rotate(angle)
    for name in ("BLUR", "CONTOUR", "SHARPEN"):
        yield f"filter_{name}", image.filter(getattr(ImageFilter, name))
    yield "gray", image.convert("L")
    yield "resize", image.resize((image.width // 2, image.height // 2))


def handler(event, context):
    os.makedirs(TMP, exist_ok=True)
    size = event["size"]
    image = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), Image.linear_gradient("L").resize(
        (size, size)), image.getchannel(2).point(lambda v: 255 - v)))
    digests = {}
    for name, result in operations(image):
        path = os.path.join(TMP, name + ".png")
        result.save(path)
        with open(path, "rb") as f:
            digests[name] = hashlib.sha256(f.read()).hexdigest()[:16]
    return digests
